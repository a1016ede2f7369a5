"""BraSyn submissions: a provenance manifest for the producing side, and ``medsci verify-submission``.

A BraSyn submission is one flat folder holding ``<case-id>-<missing>.nii.gz`` per input case, each on the
grid and affine of its input case. ``medsci submit`` writes the volumes and then :func:`write_manifest`,
which adds ``manifest.json``: the SHA-256 of every output, of every input file and of every checkpoint file
inference reads, the full config, the sampler, the seeds and the software/hardware environment. Files are
named, never located: no absolute path of the machine that wrote it leaves with an upload. Its
``provenance_sha256`` (a SHA-256 over everything else in it, output hashes included) makes an edit of the
seeds, the sampler or a hash after ``medsci submit`` visible to ``verify-submission``; it has no secret, so it
shows edits, not forgery.

Reproducibility contract: rerunning with the same inputs, checkpoint files, config, sampler and seeds in
the same environment (see ``manifest["environment"]``) gives **byte-identical output volumes**. The
manifest itself is not byte-identical between runs: its ``created`` key holds the wall-clock time and its
``environment`` key describes the machine it ran on. Compare outputs through ``manifest["outputs"]``.

:func:`verify_submission` checks a folder before it is uploaded; every problem is one line.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from medsci.errors import InputError
from medsci.mri.cases import MODALITIES

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "medsci-brasyn-submission"
MANIFEST_VERSION = 1
#: Checkpoint files inference reads (the weights actually used are named in ``checkpoint.weights_used``).
CHECKPOINT_FILES = ("config.json", "ema.safetensors", "model.safetensors")
AFFINE_ATOL_MM = 1e-4
#: An output correlated this much (Pearson, inside the head) with an input contrast is a copy of it, not a
#: synthesis: different MRI contrasts of one head correlate far less (about 0.5 to 0.9).
COPY_CORRELATION = 0.999
DIGEST_KEY = "provenance_sha256"

_NAME = re.compile(r"^(?P<case>.+)-(?P<mod>" + "|".join(MODALITIES) + r")\.nii\.gz$")
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def _file_record(path: Path) -> dict[str, Any]:
    from medsci.provenance import sha256_file

    if not path.is_file():
        raise InputError("file not found (cannot record it in the manifest)", path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def checkpoint_record(checkpoint_dir: str | Path, use_ema: bool = True) -> dict[str, Any]:
    """SHA-256 of every checkpoint file inference reads, and which weights file sampling loads."""
    folder = Path(checkpoint_dir)
    files = {name: _file_record(folder / name) for name in CHECKPOINT_FILES if (folder / name).is_file()}
    if "config.json" not in files:
        raise InputError("not a medsci checkpoint folder (no config.json)", folder)
    used = "ema.safetensors" if use_ema and "ema.safetensors" in files else "model.safetensors"
    # its name, not its path: the manifest is uploaded
    return {"name": folder.resolve().name, "files": files, "weights_used": used if used in files else None}


def provenance_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest without its own digest, as canonical JSON (sorted keys, no spaces)."""
    import hashlib

    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _hide_roots(value, roots: Sequence[tuple[str, str]]):
    """``value`` with every string's absolute folders ``(folder, label)`` replaced by their labels."""
    if isinstance(value, str):
        for folder, label in roots:
            value = value.replace(folder, label)
        return value
    if isinstance(value, dict):
        return {k: _hide_roots(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_hide_roots(v, roots) for v in value]
    return value


def write_manifest(out_dir: str | Path, outputs: Mapping[str, str | Path],
                   inputs: Mapping[str, Sequence[str | Path]], checkpoint_dir: str | Path, config: dict,
                   sampler: dict, seeds: dict, extra: dict | None = None,
                   roots: Mapping[str, str | Path] | None = None) -> Path:
    """Write ``<out_dir>/manifest.json`` atomically and return its path.

    ``outputs``: submission file name -> path (normally ``out_dir / name``); ``inputs``: case id -> the input
    files read for it. Every file is hashed (SHA-256, streamed). ``config`` is stored in full; ``sampler``
    and ``seeds`` as given (``sampler["use_ema"] is False`` records the raw weights as the ones used).
    The wall-clock time goes under ``created`` only; the output files do not depend on it. ``roots`` (label ->
    folder, e.g. ``{"<input>": input_dir}``) are replaced by their labels in ``extra`` (refusal reasons).
    """
    from datetime import datetime, timezone

    from medsci.io.atomic import write_json_atomic
    from medsci.provenance import environment

    out = Path(out_dir)
    hidden = sorted({(str(p), label) for label, root in (roots or {}).items()
                     for p in (Path(root).resolve(), Path(root).absolute())}, key=lambda x: -len(x[0]))
    bad = sorted(name for name in outputs if "/" in name or "\\" in name or name in ("", ".", "..", MANIFEST))
    if bad:
        raise InputError(f"output names must be plain file names in the submission folder, not {bad[0]!r}", out)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "reproducibility": "output files are byte-identical across reruns with the same inputs, checkpoint, "
                           "config, sampler and seeds in the same environment; this manifest is not "
                           "(see 'created' and 'environment')",
        "outputs": {name: _file_record(Path(path)) for name, path in sorted(outputs.items())},
        "inputs": {case: {Path(p).name: _file_record(Path(p)) for p in sorted(paths, key=lambda q: Path(q).name)}
                   for case, paths in sorted(inputs.items())},
        "checkpoint": checkpoint_record(checkpoint_dir, use_ema=(sampler or {}).get("use_ema", True) is not False),
        "config": config,
        "sampler": sampler,
        "seeds": seeds,
        "environment": environment(),
        "extra": _hide_roots(extra or {}, hidden),
        "created": {"utc": datetime.now(timezone.utc).replace(microsecond=0).isoformat()},
    }
    manifest[DIGEST_KEY] = provenance_digest(manifest)
    dest = out / MANIFEST
    write_json_atomic(dest, manifest)
    return dest


def earlier_submission(out_dir: str | Path, force: bool) -> list[Path]:
    """The files of an earlier submission in ``out_dir`` (its volumes and manifest), for ``medsci submit
    --force`` to remove before it writes; stale volumes left beside a new manifest would be uploaded too.

    Refuses a folder holding anything else (never removed, ``--force`` or not), and an earlier submission
    without ``force``.
    """
    out = Path(out_dir)
    entries = sorted(out.iterdir(), key=lambda p: p.name) if out.is_dir() else []
    owned = [p for p in entries if (p.name == MANIFEST or _parse_name(p.name)) and p.is_file() and not p.is_symlink()]
    foreign = [p.name for p in entries if p not in owned]
    if foreign:
        raise InputError(f"output folder holds files that are not part of a submission ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); choose an empty or new folder", out)
    if owned and not force:
        raise InputError(f"output folder holds an earlier submission ({len(owned)} file(s)); pass --force to "
                         "replace it, or choose an empty or new folder", out)
    return owned


# ---------------------------------------------------------------------------------------------- verify
def _parse_name(name: str) -> tuple[str, str] | None:
    m = _NAME.match(name)
    return (m.group("case"), m.group("mod")) if m else None


def _read_manifest(out: Path, problems: list[str]) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        problems.append(f"{MANIFEST}: missing (write it with the submission; `medsci submit` does)")
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{MANIFEST}: not readable JSON ({getattr(err, 'msg', None) or type(err).__name__})")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        problems.append(f"{MANIFEST}: not a medsci submission manifest (format is not {MANIFEST_FORMAT!r})")
        return None
    if not isinstance(manifest.get("outputs"), dict):
        problems.append(f"{MANIFEST}: has no 'outputs' table")
        return None
    if DIGEST_KEY not in manifest:
        problems.append(f"{MANIFEST}: has no {DIGEST_KEY} (written by hand or by an older medsci); write the "
                        "submission again with medsci submit")
    elif manifest[DIGEST_KEY] != provenance_digest(manifest):
        problems.append(f"{MANIFEST}: edited after medsci submit (its {DIGEST_KEY} does not match its "
                        "seeds, sampler, config and hashes); write the submission again")
    leaked = sorted(_absolute_paths({k: v for k, v in manifest.items() if k != "environment"}))
    if leaked:
        problems.append(f"{MANIFEST}: holds {len(leaked)} absolute path(s) of the machine that wrote it "
                        f"({leaked[0]!r}...), which would leave with the upload; write it with medsci submit")
    return manifest


def _absolute_paths(value) -> list[str]:
    if isinstance(value, str):
        return [value] if re.match(r"(/|[A-Za-z]:[\\/])\S", value) else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [p for v in items for p in _absolute_paths(v)]


def _check_hashes(kind: str, recorded: dict, actual: dict[str, Path], where: str, problems: list[str]) -> None:
    """Compare ``recorded`` (name -> {"sha256"}) with the files in ``actual`` (name -> path)."""
    from medsci.provenance import sha256_file

    for name, path in sorted(actual.items()):
        entry = recorded.get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            problems.append(f"{where}{name}: not recorded in {MANIFEST} {kind}")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"{where}{name}: sha256 {digest[:12]}... differs from the {MANIFEST} {kind} record "
                            f"{str(entry['sha256'])[:12]}... (file changed after the submission was written)")
    for name in sorted(set(recorded) - set(actual)):
        problems.append(f"{where}{name}: listed in {MANIFEST} {kind} but not found")


def _read_output(path: Path, problems: list[str]):
    from medsci.io.volume import read_volume

    try:
        return read_volume(path)
    except InputError as err:
        if "NaN" in err.reason:
            problems.append(f"{path.name}: not finite ({err.reason})")
        else:
            problems.append(f"{path.name}: unreadable ({err.reason})")
        return None


def _check_volume(name: str, vol, problems: list[str]) -> None:
    import numpy as np

    dtype = vol.meta.get("dtype", str(vol.array.dtype))
    try:
        is_float = np.issubdtype(np.dtype(dtype), np.floating)
    except TypeError:
        is_float = False
    if not is_float:
        problems.append(f"{name}: stored as {dtype}, expected a float type (float32)")
    stored = tuple(vol.header.get_data_shape()) if vol.header is not None else tuple(vol.array.shape)
    if len(stored) != 3:  # read_volume squeezes (X, Y, Z, 1): the file itself must be 3D
        problems.append(f"{name}: stored with shape {stored}, expected a 3D volume (X, Y, Z)")
    if not np.any(vol.array):
        problems.append(f"{name}: all voxels are zero")


def _check_against_input(name: str, vol, case, problems: list[str]) -> None:
    """Shape, affine and head coverage of one output against its input case's contrasts."""
    import numpy as np

    from medsci.io.volume import read_volume

    head = None
    ref = None
    same_grid = {}
    for mod in MODALITIES:
        path = case.files.get(mod)
        if path is None:
            continue
        inp = read_volume(path)  # an unreadable input is not the submission's problem: one-line InputError
        if ref is None:
            ref = inp
        if inp.array.shape == ref.array.shape:
            head = (inp.array != 0) if head is None else (head | (inp.array != 0))
            same_grid[mod] = inp
    if ref is None:
        return
    if tuple(vol.array.shape) != tuple(ref.array.shape):
        problems.append(f"{name}: shape {tuple(vol.array.shape)} differs from the input's "
                        f"{tuple(ref.array.shape)} ({ref.source.name})")
        return
    diff = float(np.abs(vol.affine - ref.affine).max())
    if diff > AFFINE_ATOL_MM:
        problems.append(f"{name}: affine differs from the input's ({ref.source.name}) by up to {diff:.4g} mm "
                        f"(tolerance {AFFINE_ATOL_MM} mm)")
    if head is not None and head.any() and np.any(vol.array) and not np.any(vol.array[head]):
        problems.append(f"{name}: empty inside the head (all zero where the input contrasts are nonzero)")
    inside = head if head is not None and head.sum() > 1 else np.ones(vol.array.shape, bool)
    for mod, inp in same_grid.items():  # an input contrast handed in as the synthesis
        a, b = vol.array[inside].astype(np.float64), inp.array[inside].astype(np.float64)
        same = np.array_equal(vol.array, inp.array)
        corr = 1.0 if same else (float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0)
        if corr >= COPY_CORRELATION:
            problems.append(f"{name}: a copy of the input {mod} ({inp.source.name}): "
                            f"{'identical voxels' if same else f'correlation {corr:.4f}'} inside the head, "
                            f"at least {COPY_CORRELATION} is not a synthesis")
            break


def verify_submission(out_dir: str | Path, input_dir: str | Path | None = None,
                      checkpoint: str | Path | None = None) -> list[str]:
    """Problems of a BraSyn submission folder, one line each (an empty list means it is fine).

    Always: every file is ``<case>-<mod>.nii.gz`` (mod in t1n, t1c, t2w, t2f), nothing else but
    ``manifest.json``, one file per case, each a readable float volume, finite and not all zero, and the
    manifest's SHA-256 of every output matches. With ``input_dir`` (BraTS layout, one contrast missing per
    case): one output per input case, of the missing contrast, on the input's grid (shape, affine within
    1e-4 mm), nonzero inside the head, and the manifest's input hashes match the files there. With
    ``checkpoint``: the manifest's checkpoint hashes match that folder.

    Raises InputError only when ``out_dir`` (or ``input_dir``) is not a folder or an input file is unreadable.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError("submission folder not found", out)
    problems: list[str] = []
    entries = sorted(out.iterdir(), key=lambda p: p.name)
    outputs: dict[str, Path] = {}
    by_case: dict[str, list[tuple[str, str]]] = {}
    for path in entries:
        name = path.name
        if name == MANIFEST:
            continue
        if path.is_dir():
            problems.append(f"{name}/: extra folder (a submission is one flat folder of volumes)")
            continue
        if name.startswith("."):
            problems.append(f"{name}: extra hidden file (a leftover of an interrupted write?)")
            continue
        parsed = _parse_name(name)
        if parsed is None:
            if re.search(r"-(" + "|".join(MODALITIES) + r")-std\.nii(\.gz)?$", name):
                problems.append(f"{name}: extra file (an uncertainty map is not part of a BraSyn submission)")
            elif _NIFTI.search(name):
                problems.append(f"{name}: wrong name (expected <case>-<mod>.nii.gz with mod one of "
                                f"{', '.join(MODALITIES)})")
            else:
                problems.append(f"{name}: extra file (not a submission volume)")
            continue
        case_id, mod = parsed
        outputs[name] = path
        by_case.setdefault(case_id, []).append((mod, name))
    if not outputs:
        problems.append("no <case>-<mod>.nii.gz volume: the submission is empty")
    for case_id, items in sorted(by_case.items()):
        if len(items) > 1:
            problems.append(f"{case_id}: {len(items)} files ({', '.join(n for _, n in items)}); expected one "
                            "per case")

    manifest = _read_manifest(out, problems)
    if manifest is not None:
        _check_hashes("outputs", manifest["outputs"], outputs, "", problems)

    volumes = {}
    for name, path in outputs.items():
        vol = _read_output(path, problems)
        if vol is not None:
            _check_volume(name, vol, problems)
            volumes[name] = vol

    if input_dir is not None:
        _verify_against_inputs(Path(input_dir), by_case, volumes, manifest, problems)
    if checkpoint is not None and manifest is not None:
        record = manifest.get("checkpoint") or {}
        folder = Path(checkpoint)
        if not (folder / "config.json").is_file():
            raise InputError("not a medsci checkpoint folder (no config.json)", folder)
        recorded = record.get("files") or {}
        # What inference read: the config and the weights file sampling loaded (other files may differ,
        # e.g. an exported folder without the raw weights).
        used = [n for n in ("config.json", record.get("weights_used")) if n]
        _check_hashes("checkpoint files", {n: recorded.get(n) for n in used},
                      {n: folder / n for n in used if (folder / n).is_file()}, "checkpoint ", problems)
    return problems


def _verify_against_inputs(root: Path, by_case: dict[str, list[tuple[str, str]]], volumes: dict,
                           manifest: dict | None, problems: list[str]) -> None:
    from medsci.mri.cases import discover_cases

    cases = {c.case_id: c for c in discover_cases(root, layout="brats")}
    if len(by_case) != len(cases):
        problems.append(f"{len(by_case)} case(s) submitted but the input has {len(cases)}")
    recorded_inputs = manifest.get("inputs") if manifest is not None else None
    if manifest is not None and not isinstance(recorded_inputs, dict):
        problems.append(f"{MANIFEST}: has no 'inputs' table to check the input files against")
        recorded_inputs = None
    for case_id, case in sorted(cases.items()):
        missing = case.missing()
        if len(missing) != 1:
            problems.append(f"input {case_id}: {len(missing)} contrasts missing ({', '.join(missing) or 'none'}); "
                            "a BraSyn input case lacks exactly one")
        submitted = by_case.get(case_id)
        if not submitted:
            expected = f"{case_id}-{missing[0]}.nii.gz" if len(missing) == 1 else f"{case_id}-<mod>.nii.gz"
            problems.append(f"{case_id}: missing case (no {expected} in the submission)")
        else:
            for mod, name in submitted:
                if len(missing) == 1 and mod != missing[0]:
                    problems.append(f"{name}: submits {mod} but the input case lacks {missing[0]}")
                if name in volumes:
                    _check_against_input(name, volumes[name], case, problems)
        if recorded_inputs is not None:
            files = {p.name: p for p in case.files.values()}
            if isinstance(recorded_inputs.get(case_id), dict):  # other recorded files of the case (e.g. seg)
                files.update({n: case.folder / n for n in recorded_inputs[case_id]
                              if n not in files and (case.folder / n).is_file()})
            recorded = recorded_inputs.get(case_id)
            if not isinstance(recorded, dict):
                problems.append(f"input {case_id}: not recorded in {MANIFEST} inputs")
            else:
                _check_hashes("inputs", recorded, files, f"input {case_id}/", problems)
    for case_id in sorted(set(by_case) - set(cases)):
        names = ", ".join(n for _, n in by_case[case_id])
        problems.append(f"{names}: unknown case {case_id} (not in the input folder)")


# ---------------------------------------------------------------------------------------------- CLI
def register_verify(subparsers) -> None:
    from medsci.commands.args import add_command

    p = add_command(subparsers, "verify-submission", run_verify)
    p.add_argument("out", type=Path, metavar="OUT", help="submission folder")
    p.add_argument("--input", type=Path, help="the input cases (BraTS layout: <root>/<case>/<case>-<mod>.nii.gz)")
    p.add_argument("--checkpoint", type=Path, help="model folder: check the manifest's checkpoint hashes too")


def run_verify(args) -> int:
    """check a BraSyn submission folder (names, grid, values, manifest hashes) before uploading it

    Check a flat folder of <case>-<mod>.nii.gz volumes: file names, one file per case, no extra files, float and
    finite values that are not all zero, and the SHA-256 recorded in its manifest.json. With --input, also that
    every input case has exactly its missing contrast submitted, on its grid and affine, nonzero inside the head,
    and that the inputs are the ones the manifest recorded. Prints one line per problem, or 'OK: N cases'; exit
    status 0 only when there is no problem.
    """
    problems = verify_submission(args.out, input_dir=args.input, checkpoint=args.checkpoint)
    for line in problems:
        print(f"medsci verify-submission: error: {args.out}: {line}", file=sys.stderr)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {args.out}", file=sys.stderr)
        return 1
    n = sum(1 for p in Path(args.out).iterdir() if _parse_name(p.name))
    print(f"OK: {n} cases")
    return 0


def register_submission_commands(subparsers) -> None:
    """``medsci verify-submission`` and ``medsci export`` (top-level commands of the synthesis generator)."""
    from medsci.tasks.synthesis.export import register_export

    register_verify(subparsers)
    register_export(subparsers)
