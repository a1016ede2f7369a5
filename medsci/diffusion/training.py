"""Training loop shared by every generator.

A task supplies ``batch(generator, batch_size) -> TrainingBatch`` (target x0 and its
:class:`~medsci.diffusion.conditioning.Conditions`). Every random number of step ``s`` — the batch, the noise, the
timesteps, the condition dropout — comes from a generator seeded with ``(seed, s)``, so a run resumed from a
checkpoint at step ``s`` continues exactly as an uninterrupted one would.

Under ``torchrun`` (see :mod:`medsci.diffusion.distributed`) every process draws the same global batch and trains
on its share; rank 0 alone writes the checkpoint and the loss log.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from tqdm.auto import tqdm

from medsci.diffusion.checkpoint import (
    load_training_state,
    load_weights,
    read_checkpoint_config,
    recover_checkpoint,
    save_checkpoint,
)
from medsci.diffusion import distributed
from medsci.diffusion.conditioning import Conditions, drop_masks
from medsci.diffusion.config import ScheduleConfig, TrainConfig
from medsci.diffusion.sampling import split_variance
from medsci.diffusion.schedulers import build_scheduler, training_target, training_timesteps

LOSS_LOG = "loss.csv"
# Checkpoints of a run in progress live in out_dir/resume; the finished model is written to out_dir itself, and
# the resume folder removed. A workflow engine deletes a failed job's declared outputs (config.json, weights in
# out_dir) before it reruns the job: were the checkpoints there, a preempted training job would start over.
RESUME_DIR = "resume"


@dataclass
class TrainingBatch:
    x0: torch.Tensor  # (B, C, *spatial): the clean target in the model's domain
    conditions: Conditions = field(default_factory=Conditions)
    loss_weight: torch.Tensor | None = None  # broadcastable to x0; e.g. to ignore padding


class TrainingTask(Protocol):
    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch: ...


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    # Warm-up of the decay keeps early EMA weights from being dominated by the random init.
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        ema_p = list(ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1 - d)
        for b_ema, b in zip(ema.buffers(), model.buffers()):
            b_ema.copy_(b)


def diffusion_loss(model, scheduler, schedule: ScheduleConfig, batch: TrainingBatch, generator: torch.Generator,
                   condition_dropout: dict[str, float], device: torch.device, share: slice | None = None,
                   variance_weight: float = 0.1) -> torch.Tensor:
    """The loss of one batch; ``share``: the items this process trains on (data-parallel), after every random
    number of the whole batch was drawn, so the shares together are exactly the single-process batch.

    A network with a variance head adds ``variance_weight`` x the Gaussian negative log-likelihood of the
    target under its log-variance, the prediction's error detached: the head learns the size of the error
    without pulling the prediction towards easy voxels.
    """
    x0 = batch.x0
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator)
    t = training_timesteps(schedule, b, generator)
    cond = batch.conditions
    masks = drop_masks(condition_dropout, cond.present(), b, generator)
    for kind, mask in masks.items():
        cond = cond.drop((kind,), mask)
    loss_weight = batch.loss_weight
    if share is not None:
        x0, noise, t, cond = x0[share], noise[share], t[share], cond.index(share)
        if loss_weight is not None and loss_weight.shape[0] == b:
            loss_weight = loss_weight[share]
    x0, noise, t = x0.to(device), noise.to(device), t.to(device)
    x_t = scheduler.add_noise(x0, noise, t)
    out, log_var = split_variance(model(x_t, t, cond.to(device)).float(), x0.shape[1])
    target = training_target(schedule, scheduler, x0, noise, t)
    err = (out - target) ** 2
    if log_var is not None:
        err = err + variance_weight * 0.5 * (log_var + err.detach() * torch.exp(-log_var))
    if loss_weight is not None:
        w = loss_weight.to(device).expand_as(err)
        return (err * w).sum() / w.sum().clamp_min(1.0)
    return err.mean()


def train(
    model: torch.nn.Module,
    task: TrainingTask,
    schedule: ScheduleConfig,
    cfg: TrainConfig,
    out_dir: str | Path,
    checkpoint_config: dict[str, Any],
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train ``model`` on ``task``; checkpoints go to ``out_dir`` (resumed from there if one exists).

    ``checkpoint_config`` is stored in ``config.json`` (it must rebuild the model for sampling).
    Returns the checkpoint folder.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    if cfg.threads:  # for this call only: callers (tests, notebooks) keep their own setting
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            return train(model, task, schedule, replace(cfg, threads=None), out_dir, checkpoint_config, device,
                         progress, on_step)
        finally:
            torch.set_num_threads(previous_threads)
    ranks, device = distributed.setup(device)
    share = ranks.share(cfg.batch_size) if ranks.active else None
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    net = distributed.wrap(model, ranks, device)
    scheduler = build_scheduler(schedule, "train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    start = 0
    log_rows: list[str] = []
    resume_dir = out_dir / RESUME_DIR
    if ranks.main:  # a job killed while checkpointing: finish or drop its commit
        for folder in (out_dir, resume_dir):
            if folder.is_dir():
                recover_checkpoint(folder)
        if (resume_dir / "config.json").is_file() and not _same_run(read_checkpoint_config(resume_dir),
                                                                    checkpoint_config):
            # Another run's interrupted checkpoints (the settings changed since): not ours to continue.
            print(f"train: {resume_dir} holds an interrupted run with other settings; starting afresh",
                  file=sys.stderr, flush=True)
            shutil.rmtree(resume_dir)
    distributed.barrier(ranks)
    source = resume_dir if (resume_dir / "config.json").is_file() else out_dir
    state = load_training_state(source) if (source / "config.json").is_file() else None
    if state is not None:
        prev = read_checkpoint_config(source)
        if prev.get("model") != checkpoint_config.get("model"):
            from medsci.errors import ConfigError

            raise ConfigError("existing checkpoint was trained with another network; use a new folder", source)
        load_weights(source, model, use_ema=False)
        load_weights(source, ema, use_ema=True)
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        start = int(state["step"])
        if "torch_rng" in state:  # anything drawing from the global generator continues where it was
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        log_path = source / LOSS_LOG
        if log_path.is_file():
            # Keep the header and the rows of steps already done; later rows are redone.
            rows = log_path.read_text(encoding="utf-8").splitlines()[1:]
            log_rows = [r for r in rows if int(r.split(",")[0]) <= start]
        if ranks.main and source == resume_dir:
            print(f"train: resuming from step {start} ({resume_dir})", file=sys.stderr, flush=True)

    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.bf16)
    started = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not (progress and ranks.main), unit="step",
               dynamic_ncols=True)
    step = start

    def checkpoint(step: int, folder: Path) -> None:
        if not ranks.main:  # the other ranks hold the same weights; they wait for rank 0's files
            distributed.barrier(ranks)
            return
        state = {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(), "step": step,
                 "torch_rng": torch.get_rng_state()}
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        log = "step,loss,lr,seconds\n" + "".join(r + "\n" for r in log_rows)
        save_checkpoint(folder, {**checkpoint_config, "step": step, "total_steps": cfg.steps}, model, ema, state,
                        extra_files={LOSS_LOG: log.encode("utf-8")})
        if folder == out_dir and resume_dir.is_dir():  # finished: the in-progress checkpoints are done with
            shutil.rmtree(resume_dir)
        distributed.barrier(ranks)

    log_every = max(1, cfg.steps // 20)
    model.train()
    while step < cfg.steps:
        gen = step_generator(cfg.seed, step)
        batch = task.batch(gen, cfg.batch_size)
        with autocast:
            loss = diffusion_loss(net, scheduler, schedule, batch, gen, cfg.condition_dropout, device, share,
                                  cfg.variance_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        lr_sched.step()
        _ema_update(ema, model, step, cfg.ema_decay)
        step += 1
        value = float(distributed.mean(loss.detach(), ranks))
        log_rows.append(f"{step},{value:.6g},{optimizer.param_groups[0]['lr']:.6g},{time.monotonic() - started:.2f}")
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if on_step is not None and ranks.main:
            on_step(step, value)
        if not progress and ranks.main and (step % log_every == 0 or step == cfg.steps):
            # Without a progress bar (batch jobs, SLURM logs) say where training is, 20 times per run.
            elapsed = time.monotonic() - started
            eta = elapsed / max(1, step - start) * (cfg.steps - step)
            print(f"train: step {step}/{cfg.steps} loss {value:.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                  f"elapsed {elapsed:.0f}s eta {eta:.0f}s", file=sys.stderr, flush=True)
        out_of_time = distributed.any_rank(
            cfg.max_minutes is not None and (time.monotonic() - started) > 60 * cfg.max_minutes, ranks, device)
        if step % cfg.checkpoint_every == 0 and step < cfg.steps and not out_of_time:
            checkpoint(step, resume_dir)
        if out_of_time:
            bar.write(f"train: stopped at step {step}/{cfg.steps} after {cfg.max_minutes} min (max_minutes)")
            break
    bar.close()
    if step > start or source != out_dir or not (out_dir / "config.json").is_file():
        checkpoint(step, out_dir)  # the finished model (or what max_minutes allowed)
    distributed.barrier(ranks)
    return out_dir


def _same_run(stored: dict[str, Any], checkpoint_config: dict[str, Any]) -> bool:
    """Whether interrupted checkpoints belong to a run with these settings (step counts aside)."""

    def settings(config):
        skip = ("step", "total_steps", "medsci_version")
        return json.loads(json.dumps({k: v for k, v in config.items() if k not in skip}, sort_keys=True,
                                     default=str))

    return settings(stored) == settings(checkpoint_config)
