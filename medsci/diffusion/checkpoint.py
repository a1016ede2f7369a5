"""Checkpoint folders: safetensors weights + a JSON that rebuilds everything, never a pickle.

Layout of a checkpoint folder::

    config.json          task name, network/schedule settings, task settings (preprocessing), step, version
    model.safetensors    raw weights
    ema.safetensors      EMA weights (what sampling uses by default)
    training_state.pt    optimizer / LR-schedule / RNG state, read with torch.load(weights_only=True)

A checkpoint is committed as a whole, so a job killed at any instant leaves the previous checkpoint or the new
one, never a mix (a resumed run must continue from weights, optimizer state and step of one and the same
step): every file is written into a staging folder, which is renamed to ``.commit`` once complete; its files are
then moved into place, ``config.json`` last. A ``.commit`` folder found later (the job died while moving) is
finished by :func:`recover_checkpoint`; a staging folder is a killed writer's and is removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medsci import __version__
from medsci.errors import ConfigError
from medsci.io.atomic import disk_full_error, is_disk_full, output_mode, remove_stale_temps, temp_prefix

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "training_state.pt"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


COMMIT_DIR = ".commit"
STAGING_NAME = "checkpoint"  # staging folders are temp_prefix(STAGING_NAME) + a random part


def save_checkpoint(folder: str | Path, config: dict[str, Any], model: torch.nn.Module,
                    ema: torch.nn.Module | None = None, training_state: dict | None = None,
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a checkpoint into ``folder`` as one unit (see the module docstring); ``extra_files`` (e.g. the loss
    log) are committed with it."""
    import tempfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(folder)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(STAGING_NAME), dir=folder))
        save_file(_contiguous(model.state_dict()), str(staging / MODEL_FILE))
        if ema is not None:
            save_file(_contiguous(ema.state_dict()), str(staging / EMA_FILE))
        if training_state is not None:
            torch.save(training_state, staging / STATE_FILE)
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        text = json.dumps({**config, "medsci_version": __version__}, indent=2, sort_keys=True) + "\n"
        (staging / CONFIG_FILE).write_text(text, encoding="utf-8")
        mode = output_mode()
        for path in staging.iterdir():
            os.chmod(path, mode)
        os.replace(staging, folder / COMMIT_DIR)
    except BaseException as err:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_error(folder) from None
        raise
    _finish_commit(folder)
    return folder


def _finish_commit(folder: Path) -> None:
    commit = folder / COMMIT_DIR
    names = sorted(p.name for p in commit.iterdir() if p.name != CONFIG_FILE)
    for name in names + [CONFIG_FILE]:  # config.json last: its step says which checkpoint the folder holds
        if (commit / name).exists():
            os.replace(commit / name, folder / name)
    commit.rmdir()


def recover_checkpoint(folder: str | Path) -> None:
    """Finish a commit a killed job left half-done and remove killed jobs' staging folders. Only a writer of the
    folder (the training job, rank 0) calls this; readers never write."""
    folder = Path(folder)
    if (folder / COMMIT_DIR).is_dir():
        _finish_commit(folder)
    remove_stale_temps(folder, STAGING_NAME)


def read_checkpoint_config(folder: str | Path, task: str | None = None) -> dict[str, Any]:
    """The checkpoint's config.json; with ``task``, refuse a checkpoint trained for another generator."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"not a medsci checkpoint folder (no {CONFIG_FILE})", folder)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"unreadable checkpoint config: {err.msg if hasattr(err, 'msg') else err}", path) from None
    if not isinstance(config, dict):
        raise ConfigError(f"checkpoint config is not a JSON object (got {type(config).__name__})", path)
    if task is not None and config.get("task") != task:
        raise ConfigError(f"checkpoint is for task {config.get('task')!r}, not {task!r}", folder)
    return config


def load_weights(folder: str | Path, model: torch.nn.Module, use_ema: bool = True) -> torch.nn.Module:
    """Load EMA (default) or raw weights into ``model``; a missing, corrupted or mismatching file is a ConfigError."""
    folder = Path(folder)
    path = folder / (EMA_FILE if use_ema else MODEL_FILE)
    if use_ema and not path.is_file():
        path = folder / MODEL_FILE
    if not path.is_file():
        raise ConfigError("checkpoint has no weights file", path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ConfigError(f"not a valid safetensors file ({str(err).splitlines()[0][:120]})", path) from None
    _check_fits(state, model, path)
    _check_finite(state, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ConfigError(f"weights do not fit the network in config.json ({first[:160]})", path) from None
    return model


def _check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """Name the first tensor that is missing, extra or of another shape than config.json's network has."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shaped = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if shaped:
        k = shaped[0]
        raise ConfigError(f"weights do not fit the network in config.json: {k} has shape {tuple(state[k].shape)} "
                          f"in the file, {tuple(want[k].shape)} in the network ({len(shaped)} tensor(s) differ)",
                          path)
    if missing or extra:
        names = ", ".join((missing + extra)[:3])
        raise ConfigError(f"weights do not fit the network in config.json: {len(missing)} tensor(s) missing, "
                          f"{len(extra)} unexpected (e.g. {names})", path)


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse NaN/Inf weights (a diverged run, a corrupt file): they would give NaN outputs, not an error."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items() if v.is_floating_point() or v.is_complex()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        first = next(iter(bad))
        raise ConfigError(f"weights hold {sum(bad.values()):,} NaN/Inf values in {len(bad)} tensor(s) (e.g. {first}): "
                          "the training diverged or the file is corrupt; use an earlier checkpoint", path)


def load_training_state(folder: str | Path) -> dict | None:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling refusal or corruption is the same problem for the user
        raise ConfigError(f"unreadable training state ({type(err).__name__})", path) from None


def load_for_inference(folder: str | Path, task: str, build, parse, device: str | None = "auto",
                       use_ema: bool = True):
    """What every generator's ``load_model`` does: read ``config.json`` (refusing another task's checkpoint),
    rebuild the network with ``build(config["model"])``, read the task's own entries with ``parse(config)``
    (a missing or mangled entry is one ConfigError), load the weights and move the network to the device.

    Returns ``(network in eval mode, config, parse's result, device)``.
    """
    from medsci.diffusion.device import default_device

    config = read_checkpoint_config(folder, task)
    try:
        model = build(config["model"])
        parsed = parse(config)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"checkpoint config lacks or mangles {err}", folder) from None
    dev = default_device(device)
    load_weights(folder, model, use_ema=use_ema)
    return model.to(dev).eval(), config, parsed, dev
