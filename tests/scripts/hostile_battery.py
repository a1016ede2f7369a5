"""A battery of hostile inputs for every ``medsci`` verb (issue 27's quality bar).

Each case builds its own tiny inputs in a folder of its own, runs ``python -m medsci ...`` as a subprocess
(niced, stdin closed, at most ``--jobs`` at a time, a time limit per case) and classifies what the user got:

- ``clean error``  non-zero exit (1 or 2), a message, no traceback, where a refusal was acceptable;
- ``handled``      exit 0 and the case's check of the output passed (finite, right shape, warning recorded ...);
- ``TRACEBACK``    a Python traceback reached the user (whatever the exit code);
- ``HANG``         still running at the time limit (killed with its process group);
- ``SILENT``       exit 0 where a refusal was expected, or where the check of the output failed, or an input
                   file of the case was changed;
- ``MESSY``        non-zero exit without a one-line message, or killed by a signal;
- ``REFUSED``      a clean refusal of an input that should have been handled (reported, not a hard failure).

Expectations: ``refuse`` (only a clean error is right), ``ok`` (exit 0 and the check), ``either`` (a clean
error, or exit 0 and the check: e.g. a warning recorded in the output's metadata).

Shared good inputs (demo data and 1-step checkpoints of every generator, trained through the CLI with a tiny
config built on configs/test.yaml) are built once into ``--cache`` and reused; a digest of them before and after
the run shows whether any case wrote into them.

    python tests/scripts/hostile_battery.py --out docs/hostile-battery.md --json battery.json
    python tests/scripts/hostile_battery.py --only info metrics --list
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ERROR_LINE = re.compile(r"^(medsci[^\n]*: error: |[^\n]*: refused: |[^\n]*: error: )", re.M)
TRACEBACK = "Traceback (most recent call last)"
FAILURES = ("TRACEBACK", "HANG", "SILENT", "MESSY")
OUTCOMES = ("clean error", "handled", *FAILURES, "REFUSED")
BAD_DIR = "/proc/medsci-hostile/out"  # an output folder nobody (not even root) can create

# ------------------------------------------------------------------------------------------ shared inputs
CONFIG = """\
defaults: {test_yaml}
name: battery
device: cpu
synthesis:
  preprocess: {{shape: [16, 16, 16], spacing: [15.0, 15.0, 9.6875], n4: false}}
  model: {{train_patch: [16, 16, 16]}}
  train: {{steps: 1, batch_size: 1, warmup_steps: 0, checkpoint_every: 1, threads: 1}}
  sample: {{steps: 1, n_samples: 1}}
  evaluation: {{steps_curve: [1], curve_cases: 1}}
  segmentation: {{steps: 1, batch_size: 1, patch: [16, 16, 16]}}
seismic:
  train: {{steps: 1, batch_size: 1, warmup_steps: 0, checkpoint_every: 1}}
  sample: {{steps: 1}}
rotation:
  train: {{steps: 1, batch_size: 1, warmup_steps: 0, checkpoint_every: 1}}
  sample: {{steps: 1}}
  pairs: {{per_ct: 2}}
longitudinal:
  train: {{steps: 1, batch_size: 1, warmup_steps: 0, checkpoint_every: 1}}
  sample: {{steps: 1}}
"""

SYN = ["BraTS-DEMO-00000-000", "BraTS-DEMO-00001-000", "BraTS-DEMO-00002-000"]
MODS = ("t1n", "t1c", "t2w", "t2f")


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("MEDSCI_TASKS", None)
    return env


def _medsci(args: list, cwd: Path, timeout: float = 900, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "medsci", *map(str, args)], cwd=cwd, env=env or _env(),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          preexec_fn=lambda: os.nice(10))


def build_assets(cache: Path) -> dict:
    """Demo data and 1-step checkpoints of every generator, built once (a step is redone only when its
    folder is missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    cfg = cache / "battery.yaml"
    cfg.write_text(CONFIG.format(test_yaml=ROOT / "configs" / "test.yaml"), encoding="utf-8")
    c = str(cfg)
    steps = [
        ("syn_raw", ["demo-data", "synthesis", "--cases", 3, "--shape", 16, 16, 16, "{dst}"]),
        ("syn_prep", ["preprocess", "synthesis", "--all", "--case-dir", "syn_raw", "--out", "{dst}", "--config", c]),
        ("syn_ck", ["train", "synthesis", "--config", c, "--data", "syn_prep", "--cases", SYN[0], SYN[1],
                    "--out", "{dst}", "--no-progress"]),
        ("syn_samples", ["sample", "synthesis", "--config", c, "--checkpoint", "syn_ck", "--data", "syn_prep",
                         "--case", SYN[2], "--out", "{dst}", "--no-progress"]),
        ("syn_input", None),
        ("syn_sub", ["submit", "--checkpoint", "syn_ck", "--input", "syn_input", "--output", "{dst}",
                     "--no-progress"]),
        ("seis_raw", ["demo-data", "seismic", "--cubes", 2, "--shape", 8, 8, 16, "{dst}"]),
        ("seis_ck", ["train", "seismic", "--config", c, "--data", "seis_raw", "--cubes", "cube_000", "--out",
                     "{dst}", "--no-progress"]),
        ("rot_raw", ["demo-data", "rotation", "--cts", 2, "--shape", 16, 16, 16, "{dst}"]),
        ("rot_prep", ["preprocess", "rotation", "--config", c, "--cts", "rot_raw/ct_000.nii.gz",
                      "rot_raw/ct_001.nii.gz", "--out", "{dst}", "--no-progress"]),
        ("rot_ck", ["train", "rotation", "--config", c, "--pairs", "rot_prep/ct_000.npz", "--out", "{dst}",
                    "--no-progress"]),
        ("rot_drr", ["drr", "--ct", "rot_raw/ct_001.nii.gz", "--angles", "0,0,0", "--output", "{dst}",
                     "--config", c]),
        ("long_raw", ["demo-data", "longitudinal", "--subjects", 2, "--shape", 16, 24, 16, "--spacing", 12, 12, 12,
                      "{dst}"]),
        ("long_prep", ["preprocess", "longitudinal", "--config", c, "--subjects", "long_raw/sub-000",
                       "long_raw/sub-001", "--out", "{dst}", "--no-progress"]),
        ("long_ck", ["train", "longitudinal", "--config", c, "--subjects", "long_prep/sub-000.npz", "--out",
                     "{dst}", "--no-progress"]),
    ]
    for name, argv in steps:
        dst = cache / name
        if dst.exists():
            continue
        t0 = time.time()
        print(f"[assets] {name} ...", file=sys.stderr, flush=True)
        tmp = cache / f"{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        if argv is None:  # synthesize/submit input: the third demo case without its t2f
            shutil.copytree(cache / "syn_raw" / SYN[2], tmp / SYN[2])
            (tmp / SYN[2] / f"{SYN[2]}-t2f.nii.gz").unlink()
            for seg in tmp.glob("*/*-seg.nii.gz"):
                seg.unlink()
        else:
            done = _medsci([str(tmp) if a == "{dst}" else a for a in argv], cache)
            if done.returncode != 0:
                sys.exit(f"building {name} failed:\n{done.stderr.decode(errors='replace')}")
        tmp.rename(dst)
        print(f"[assets] {name} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    a = {p.name: p for p in cache.iterdir()}
    a["config"] = cfg
    a["png"] = next((cache / "rot_drr").glob("*.png"))
    return a


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------ builders
def nii(path: Path, data, affine=None, dtype=None, patch: dict | None = None) -> Path:
    """A NIfTI-1 file; ``patch`` {byte offset: (struct format, values)} is written into its header afterwards
    (nibabel would refuse or recompute NaN affines, odd pixdims and scale factors)."""
    import nibabel as nib
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
    wide = arr.dtype if arr.dtype in (np.int64, np.uint64) else None  # nibabel wants these asked for explicitly
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine, dtype=wide), str(path))
    return patch_nii(path, patch) if patch else path


# NIfTI-1 header offsets
PIXDIM, SCL, QCODE, SCODE, SROW = 76, 112, 252, 254, 280
NAN, INF = float("nan"), float("inf")


def patch_nii(path: Path, patch: dict) -> Path:
    gz = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    for offset, (fmt, values) in patch.items():
        struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


NAN_AFFINE = {QCODE: ("<h", (0,)), SCODE: ("<h", (1,)), SROW: ("<12f", (NAN,) * 12)}


def ramp(shape=(8, 8, 8), dtype=np.float32) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(dtype)


def brain(shape=(16, 16, 16)) -> np.ndarray:
    g = np.indices(shape).astype(np.float32)
    r = sum(((g[i] - (s - 1) / 2) / (s / 2.5)) ** 2 for i, s in enumerate(shape))
    return np.where(r < 1, 100 + 50 * np.sin(g[0]) + 20 * g[1], 0).astype(np.float32)


def text(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def png(path: Path, width: int, height: int, depth: int = 16, colour: int = 0, raw: bytes | None = None) -> Path:
    """A PNG written by hand (any header, any data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    if raw is None:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour, 1)
        row_bytes = max(1, (width * channels * depth + 7) // 8)
        rng = np.random.default_rng(0)
        raw = b"".join(b"\0" + rng.integers(0, 256, row_bytes, dtype=np.uint8).tobytes() for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def npy(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr, allow_pickle=True)
    return path


def segy(path: Path, cube: np.ndarray, **kw) -> Path:
    from medsci.io.segy import create_segy
    path.parent.mkdir(parents=True, exist_ok=True)
    return create_segy(path, np.asarray(cube, dtype=np.float32), **kw)


def cube(shape=(8, 8, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return dst


def case_dir(A, w: Path, name: str = "cases", drop=("t2f",), case: str = SYN[2], rename: str | None = None,
             edit: dict | None = None) -> Path:
    """A folder of one BraTS case (the third demo case) with ``drop`` removed and ``edit`` files replaced."""
    cid = rename or case
    dst = w / name / cid
    dst.mkdir(parents=True, exist_ok=True)
    for src in (A["syn_raw"] / case).iterdir():
        mod = src.name[len(case) + 1:].split(".")[0]
        if mod in drop or mod == "seg":
            continue
        shutil.copy2(src, dst / src.name.replace(case, cid))
    for mod, fn in (edit or {}).items():
        fn(dst / f"{cid}-{mod}.nii.gz")
    return w / name


def load_nii(path: Path):
    import nibabel as nib
    return nib.load(str(path))


def edit_nii(fn: Callable):
    """A case-file editor: ``fn(data, affine) -> (data, affine)`` applied to the file in place."""
    def run(path: Path):
        import nibabel as nib
        img = nib.load(str(path))
        data, aff = fn(np.asarray(img.dataobj), img.affine.copy())
        nib.save(nib.Nifti1Image(data, aff), str(path))
    return run


def ckpt(A, w: Path, src: str = "syn_ck", config: Callable | None = None, weights: Callable | None = None,
         name: str = "ck") -> Path:
    """A copy of a checkpoint with its config.json and/or weights edited."""
    dst = copy(A[src], w / name)
    if config:
        path = dst / "config.json"
        data = json.loads(path.read_text())
        out = config(data)
        path.write_text(out if isinstance(out, str) else json.dumps(data if out is None else out))
    if weights:
        from safetensors.numpy import load_file, save_file
        for f in dst.glob("*.safetensors"):
            tensors = load_file(str(f))
            save_file({k: weights(k, v) for k, v in tensors.items()}, str(f))
    return dst


def cfg_with(A, w: Path, yaml_text: str, name: str = "c.yaml") -> Path:
    return text(w / name, f"defaults: {A['config']}\n" + yaml_text)


# ------------------------------------------------------------------------------------------ checks
def stdout_json(pred: Callable[[dict], bool] = lambda d: True, why: str = "output JSON check"):
    def check(w, res):
        try:
            data = json.loads(res.stdout)
        except ValueError as err:
            return f"stdout is not JSON ({err})"
        return None if pred(data) else why
    return check


def _finite_json(obj) -> bool:
    if isinstance(obj, float):
        return np.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_json(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_json(v) for v in obj)
    return True


def finite_files(pattern: str, n_min: int = 1):
    """At least ``n_min`` files match ``pattern`` under the case folder, and their voxels are finite."""
    def check(w, res):
        files = [p for p in w.glob(pattern) if p.is_file()]
        if len(files) < n_min:
            return f"expected >= {n_min} output(s) {pattern}, found {len(files)}"
        for p in files:
            name = p.name
            if name.endswith((".nii", ".nii.gz")):
                data = np.asarray(load_nii(p).dataobj, dtype=np.float64)
            elif name.endswith(".npy"):
                data = np.load(p)
            elif name.endswith(".safetensors"):
                from safetensors.numpy import load_file
                data = np.concatenate([v.ravel().astype(np.float64) for v in load_file(str(p)).values()])
            else:
                if p.stat().st_size == 0:
                    return f"{name} is empty"
                continue
            if not np.isfinite(data).all():
                return f"{name} holds {int((~np.isfinite(data)).sum())} NaN/Inf values"
        return None
    return check


def recorded(pattern: str, *words: str, printed: bool = True):
    """A warning chosen instead of a refusal: printed on stderr and recorded in an output file (one of
    ``words``, case-insensitive, in a file matching ``pattern``)."""
    words = words or ("warning",)

    def check(w, res):
        files = [p for p in w.glob(pattern) if p.is_file()]
        if not files:
            return f"no output {pattern}"
        if printed and "warning" not in res.stderr.lower():
            return "no warning printed"
        for p in files:
            body = p.read_bytes().decode("utf-8", "replace").lower()
            if any(word.lower() in body for word in words):
                return None
        return f"no warning ({'/'.join(words)}) recorded in {pattern}"
    return check


def both(*checks):
    def check(w, res):
        for c in checks:
            problem = c(w, res)
            if problem:
                return problem
        return None
    return check


def exists(*patterns):
    def check(w, res):
        for pat in patterns:
            if not any(w.glob(pat)):
                return f"missing output {pat}"
        return None
    return check


def absent(*patterns):
    def check(w, res):
        for pat in patterns:
            found = list(w.glob(pat))
            if found:
                return f"unexpected {found[0].relative_to(w)}"
        return None
    return check


def stdout_has(*words):
    def check(w, res):
        return None if all(x in res.stdout for x in words) else f"stdout lacks {words}"
    return check


# ------------------------------------------------------------------------------------------ the cases
@dataclass
class Case:
    verb: str
    desc: str
    expect: str                       # refuse | ok | either
    build: Callable                   # (w, A) -> argv (without "medsci")
    check: Callable | None = None     # (w, result) -> problem or None, for exit 0
    timeout: float = 60
    heavy: bool = False               # loads a model: run first, longer limit
    mutable: tuple = ()               # input files the case may legitimately change
    env: dict = field(default_factory=dict)
    ext: bool = False                 # extended set only (--extended): kept out of the timed default run
    id: str = ""


CASES: list[Case] = []


def case(verb, desc, expect, check=None, **kw):
    def register(fn):
        CASES.append(Case(verb, desc, expect, fn, check, **kw))
        return fn
    return register


def heavy(verb, desc, expect, check=None, **kw):
    kw.setdefault("timeout", 180)
    return case(verb, desc, expect, check, heavy=True, **kw)


def _register_all():  # noqa: C901 - one flat list of cases reads best
    # ---------------------------------------------------------------- top level
    case("medsci", "no command at all", "refuse")(lambda w, A: [])
    case("medsci", "unknown command `medsci segment`", "refuse")(lambda w, A: ["segment"])
    case("medsci", "`train` without a generator", "refuse")(lambda w, A: ["train"])
    case("medsci", "`train` with an unknown generator", "refuse")(lambda w, A: ["train", "ct-denoise"])
    case("medsci", "MEDSCI_TASKS names a module that does not exist", "refuse",
         env={"MEDSCI_TASKS": "no_such_module_xyz"})(lambda w, A: ["info", str(nii(w / "a.nii.gz", ramp()))])

    # ---------------------------------------------------------------- info
    ok_info = stdout_json(lambda d: _finite_json(d), "info JSON holds a NaN/Inf")
    case("info", "int64 volume with values beyond 2^53", "ok", ok_info)(
        lambda w, A: ["info", nii(w / "i64.nii.gz", ramp(dtype=np.int64) + 2**60)])
    case("info", "int8 volume with negative values", "ok", ok_info)(
        lambda w, A: ["info", nii(w / "i8.nii.gz", ramp() - 50, dtype=np.int8)])
    case("info", "uint64 volume with values near 2^64", "either", ok_info)(
        lambda w, A: ["info", nii(w / "u64.nii.gz", np.full((4, 4, 4), 2**64 - 1, dtype=np.uint64))])
    case("info", "int16 volume with scl_slope 1e38 (values overflow float32)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "slope.nii.gz", ramp(dtype=np.int16) + 1000, dtype=np.int16,
                                  patch={SCL: ("<2f", (1e38, 0.0))})])
    case("info", "scl_slope = NaN in the header", "either", ok_info)(
        lambda w, A: ["info", nii(w / "nanslope.nii", ramp(dtype=np.int16), dtype=np.int16,
                                  patch={SCL: ("<2f", (NAN, 0.0))})])
    case("info", "scl_inter = +Inf in the header", "either", ok_info)(
        lambda w, A: ["info", nii(w / "infinter.nii", ramp(dtype=np.int16), dtype=np.int16,
                                  patch={SCL: ("<2f", (1.0, INF))})])
    case("info", "voxel spacing 1e-9 mm (affine scale)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "tiny.nii.gz", ramp(), np.diag([1e-9, 1e-9, 1e-9, 1]))])
    case("info", "voxel spacing 1e9 mm (affine scale)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "hugesp.nii.gz", ramp(), np.diag([1e9, 1e9, 1e9, 1]))])
    case("info", "negative spacing on every axis (a flip, legitimate)", "ok", ok_info)(
        lambda w, A: ["info", nii(w / "flip.nii.gz", ramp(), np.diag([-1.0, -2.0, -3.0, 1]))])
    case("info", "sheared affine (non-orthogonal axes)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "shear.nii.gz", ramp(), np.array([[1, .9, 0, 0], [0, 1, 0, 0],
                                                                         [0, 0, 1, 0], [0, 0, 0, 1.]]))])
    case("info", "Inf in the affine translation", "refuse")(
        lambda w, A: ["info", nii(w / "inftr.nii.gz", ramp(), patch={QCODE: ("<h", (0,)), SROW + 12: ("<f", (INF,))})])
    case("info", "sform and qform codes both 0 (no orientation)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "nocode.nii.gz", ramp(), patch={QCODE: ("<2h", (0, 0))})])
    case("info", "pixdim with NaN and no sform/qform", "either", ok_info)(
        lambda w, A: ["info", nii(w / "nanpix.nii", ramp(), patch={QCODE: ("<2h", (0, 0)), PIXDIM: ("<8f", (1, NAN, 1, 1, 1, 1, 1, 1))})])
    case("info", "1x1x1 volume", "either", ok_info)(lambda w, A: ["info", nii(w / "one.nii.gz", np.ones((1, 1, 1), np.float32))])
    case("info", "needle volume 2x2x20000", "ok", ok_info)(lambda w, A: ["info", nii(w / "needle.nii.gz", ramp((2, 2, 20000)))])
    case("info", "4D with one volume (8,8,8,1)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "t1.nii.gz", ramp((8, 8, 8, 1)))])
    case("info", "all-zero volume", "either", ok_info)(lambda w, A: ["info", nii(w / "zero.nii.gz", np.zeros((8, 8, 8), np.float32))])
    case("info", "boolean volume", "either", ok_info)(lambda w, A: ["info", nii(w / "bool.nii.gz", ramp() > 40, dtype=np.uint8)])
    case("info", "symlink to a good volume", "ok", ok_info)(
        lambda w, A: ["info", (os.symlink(nii(w / "real.nii.gz", ramp()), w / "link.nii.gz"), w / "link.nii.gz")[1]])
    case("info", "dangling symlink", "refuse")(
        lambda w, A: ["info", (os.symlink(w / "gone.nii.gz", w / "dangling.nii.gz"), w / "dangling.nii.gz")[1]])
    case("info", "symlink loop", "refuse")(
        lambda w, A: ["info", (os.symlink(w / "b.nii.gz", w / "a.nii.gz"), os.symlink(w / "a.nii.gz", w / "b.nii.gz"),
                               w / "a.nii.gz")[2]])
    case("info", "unicode file name (Ünïcødé — 脑.nii.gz)", "ok", ok_info)(
        lambda w, A: ["info", nii(w / "Ünïcødé — 脑.nii.gz", ramp())])
    case("info", "non-UTF-8 file name (Latin-1 bytes)", "either", ok_info)(
        lambda w, A: ["info", nii(Path(os.fsdecode(bytes(w) + b"/scan\xe9\xff.nii.gz")), ramp())])
    case("info", "file name with a newline in it", "ok", ok_info)(lambda w, A: ["info", nii(w / "two\nlines.nii.gz", ramp())])
    case("info", "file name of 300 characters", "refuse")(lambda w, A: ["info", w / ("x" * 300 + ".nii.gz")])
    case("info", "empty string as the file", "refuse")(lambda w, A: ["info", ""])
    case("info", "/dev/zero (an endless character device)", "refuse", timeout=40)(lambda w, A: ["info", "/dev/zero"])
    case("info", "/dev/null", "refuse")(lambda w, A: ["info", "/dev/null"])
    case("info", "an empty folder", "refuse")(lambda w, A: ["info", (w / "empty").mkdir() or w / "empty"])
    case("info", "a MetaImage file named .nii.gz", "either", ok_info)(
        lambda w, A: ["info", _mha(w / "meta.mha", ramp()).rename(w / "meta.nii.gz") or w / "meta.nii.gz"])
    case("info", "a gzipped NIfTI named .nii (no .gz)", "either", ok_info)(
        lambda w, A: ["info", nii(w / "g.nii.gz", ramp()).rename(w / "g.nii") or w / "g.nii"])
    case("info", "upper-case suffix .NII.GZ", "either", ok_info)(lambda w, A: ["info", nii(w / "UP.nii.gz", ramp()).rename(w / "UP.NII.GZ") or w / "UP.NII.GZ"])
    case("info", ".mhd whose ElementDataFile points outside (../../etc/hostname)", "refuse")(
        lambda w, A: ["info", text(w / "sub" / "x.mhd", "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\n"
                                   "ElementType = MET_FLOAT\nElementDataFile = ../../../../../../etc/hostname\n")])
    case("info", ".mha with ElementSpacing 0 0 0", "either", ok_info)(
        lambda w, A: ["info", _mha(w / "sp0.mha", ramp(), spacing="0 0 0")])
    case("info", ".mha with negative ElementSpacing", "either", ok_info)(
        lambda w, A: ["info", _mha(w / "spneg.mha", ramp(), spacing="-1 -1 -1")])
    case("info", ".mha with NaN in TransformMatrix", "refuse")(
        lambda w, A: ["info", _mha(w / "nanm.mha", ramp(), matrix="nan 0 0 0 1 0 0 0 1")])
    case("info", ".nrrd with NaN space directions", "refuse")(lambda w, A: ["info", _nrrd(w / "nan.nrrd", "(nan,0,0) (0,1,0) (0,0,1)")])
    case("info", ".nrrd with a zero space direction", "refuse")(lambda w, A: ["info", _nrrd(w / "zero.nrrd", "(0,0,0) (0,1,0) (0,0,1)")])
    case("info", "a SEG-Y survey given to info", "refuse")(lambda w, A: ["info", A["seis_raw"] / "cube_000.segy"])
    case("info", "a PNG radiograph given to info", "refuse")(lambda w, A: ["info", A["png"]])
    case("info", "a folder of .dcm files that are text", "refuse")(
        lambda w, A: ["info", (text(w / "dcm" / "1.dcm", "hello"), text(w / "dcm" / "2.dcm", "x"), w / "dcm")[2]])

    # ---------------------------------------------------------------- metrics
    def pair(w, p, t=None, **kw):
        t = ramp() if t is None else t
        return ["metrics", "--pred", nii(w / "pred.nii.gz", p), "--target", nii(w / "target.nii.gz", t), *kw.get("extra", [])]
    ok_metrics = stdout_json(lambda d: _finite_json({k: v for k, v in d.items() if "psnr" not in k}),
                             "metrics JSON holds NaN/Inf outside PSNR")
    case("metrics", "int16 prediction vs float32 target", "ok", ok_metrics)(lambda w, A: pair(w, ramp(dtype=np.int16)))
    case("metrics", "constant target and prediction (data range 0)", "either", ok_metrics)(
        lambda w, A: pair(w, np.full((8, 8, 8), 3, np.float32), np.full((8, 8, 8), 3, np.float32)))
    case("metrics", "2x2x2 volumes (smaller than the 11-voxel SSIM window)", "either", ok_metrics)(
        lambda w, A: pair(w, ramp((2, 2, 2)), ramp((2, 2, 2)) + 1))
    case("metrics", "1x1x1 volumes", "either", ok_metrics)(lambda w, A: pair(w, np.ones((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32)))
    case("metrics", "values of 1e30 (float32 squares overflow)", "either", ok_metrics)(
        lambda w, A: pair(w, ramp() * 1e30, ramp() * 1e30 + 1e29))
    case("metrics", "prediction transposed, affine permuted to the same world grid", "either",
         stdout_json(lambda d: d.get("ssim", 0) > 0.99, "same world content but SSIM < 0.99"))(
        lambda w, A: ["metrics", "--pred", nii(w / "pred.nii.gz", ramp((8, 9, 10)).transpose(2, 1, 0),
                                               np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.]])),
                      "--target", nii(w / "target.nii.gz", ramp((8, 9, 10)))])
    case("metrics", "prediction flipped left-right with a flipped affine (same world content)", "either",
         stdout_json(lambda d: d.get("ssim", 0) > 0.99, "same world content but SSIM < 0.99"))(
        lambda w, A: ["metrics", "--pred", nii(w / "pred.nii.gz", ramp()[::-1].copy(),
                                               np.array([[-1, 0, 0, 7], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.]])),
                      "--target", nii(w / "target.nii.gz", ramp())])
    case("metrics", "all-zero mask (documented: NaN masked metrics)", "ok",
         stdout_json(lambda d: "mask_ssim" in d, "no mask_ssim"))(
        lambda w, A: pair(w, ramp() + 1, extra=["--mask", nii(w / "m.nii.gz", np.zeros((8, 8, 8), np.uint8))]))
    case("metrics", "mask with NaN voxels", "refuse")(
        lambda w, A: pair(w, ramp() + 1, extra=["--mask", nii(w / "m.nii.gz", np.where(ramp() > 50, np.nan, 1).astype(np.float32))]))
    case("metrics", "mask of another shape", "refuse")(
        lambda w, A: pair(w, ramp() + 1, extra=["--mask", nii(w / "m.nii.gz", np.ones((8, 8, 7), np.uint8))]))
    case("metrics", "a PNG as the mask", "refuse")(lambda w, A: pair(w, ramp() + 1, extra=["--mask", A["png"]]))
    case("metrics", "--data-range 1e-30 (the target spans 96)", "either",
         stdout_json(lambda d: "warning" in json.dumps(d).lower(), "PSNR of a range 1e32 times too small, no warning"))(lambda w, A: pair(w, ramp() + 1, extra=["--data-range", "1e-30"]))
    case("metrics", "--data-range inf", "refuse")(lambda w, A: pair(w, ramp() + 1, extra=["--data-range", "inf"]))
    case("metrics", "--data-range 'wide'", "refuse")(lambda w, A: pair(w, ramp() + 1, extra=["--data-range", "wide"]))
    case("metrics", "prediction is all NaN", "refuse")(lambda w, A: pair(w, np.full((8, 8, 8), np.nan, np.float32)))
    case("metrics", "prediction 4D (8,8,8,2)", "refuse")(lambda w, A: pair(w, ramp((8, 8, 8, 2))))
    case("metrics", "--pred given twice", "either", ok_metrics)(
        lambda w, A: pair(w, ramp() + 1, extra=["--pred", nii(w / "p2.nii.gz", ramp() + 2)]))
    case("metrics", "target is a folder", "refuse")(
        lambda w, A: ["metrics", "--pred", nii(w / "p.nii.gz", ramp()), "--target", (w / "d").mkdir() or w / "d"])

    # ---------------------------------------------------------------- demo-data
    ok_demo = lambda pat: finite_files(pat)  # noqa: E731
    case("demo-data", "synthesis --shape 1 1 1", "either", ok_demo("out/*/*-t1n.nii.gz"))(
        lambda w, A: ["demo-data", "synthesis", "--cases", 1, "--shape", 1, 1, 1, w / "out"])
    case("demo-data", "seismic --shape 1 1 2", "either", ok_demo("out/*.segy"))(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 1, 1, 2, w / "out"])
    case("demo-data", "rotation --spacing 1e-3 mm (a CT 16 µm across)", "either", ok_demo("out/*.nii.gz"))(
        lambda w, A: ["demo-data", "rotation", "--cts", 1, "--shape", 8, 8, 8, "--spacing", 1e-3, 1e-3, 1e-3, w / "out"])
    case("demo-data", "longitudinal --spacings with two values", "refuse")(
        lambda w, A: ["demo-data", "longitudinal", "--subjects", 1, "--shape", 8, 8, 8, "--spacings", "1,2", w / "out"])
    case("demo-data", "longitudinal --spacings nan,1,1", "refuse")(
        lambda w, A: ["demo-data", "longitudinal", "--subjects", 1, "--shape", 8, 8, 8, "--spacings", "nan,1,1", w / "out"])
    case("demo-data", "longitudinal --spacings -1,1,1", "refuse")(
        lambda w, A: ["demo-data", "longitudinal", "--subjects", 1, "--shape", 8, 8, 8, "--spacings", "-1,1,1", w / "out"])
    case("demo-data", "--seed 2^64", "refuse")(lambda w, A: ["demo-data", "synthesis", "--seed", 2**64, w / "out"])
    case("demo-data", "--shape with two values", "refuse")(lambda w, A: ["demo-data", "synthesis", "--shape", 16, 16, w / "out"])
    case("demo-data", "--shape 16.5 16 16", "refuse")(lambda w, A: ["demo-data", "synthesis", "--shape", 16.5, 16, 16, w / "out"])
    case("demo-data", "--cases 1e3 (float notation)", "refuse")(lambda w, A: ["demo-data", "synthesis", "--cases", "1e3", w / "out"])
    case("demo-data", "OUT in an uncreatable place (/proc)", "refuse")(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 4, 4, 8, BAD_DIR])
    case("demo-data", "OUT on a full disk (/dev/full/x)", "refuse")(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 4, 4, 8, "/dev/full/x"])
    case("demo-data", "OUT holds the user's own dataset.json (same name as demo output)", "refuse")(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 4, 4, 8,
                      text(w / "out" / "dataset.json", '{"mine": true}').parent])
    case("demo-data", "OUT holds a folder named like a demo file (cube_000.segy/)", "refuse")(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 4, 4, 8,
                      (w / "out" / "cube_000.segy").mkdir(parents=True) or w / "out"])
    case("demo-data", "OUT is a dangling symlink", "either", ok_demo("out/*.segy"))(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 4, 4, 8,
                      (os.symlink(w / "nowhere", w / "out"), w / "out")[1]])
    case("demo-data", "unicode OUT folder (données/脑)", "ok", ok_demo("données/脑/*/*-t1n.nii.gz"))(
        lambda w, A: ["demo-data", "synthesis", "--cases", 1, "--shape", 8, 8, 8, w / "données" / "脑"])
    case("demo-data", "--force into a folder where a user file has a demo name (cube_000.segy)", "either",
         lambda w, res: None if (w / "out" / "notes.txt").exists() else "user's other file removed")(
        lambda w, A: ["demo-data", "seismic", "--cubes", 1, "--shape", 4, 4, 8, "--force",
                      (text(w / "out" / "notes.txt", "keep me"), w / "out")[1]])

    # ---------------------------------------------------------------- preprocess
    def prep_syn(w, A, *extra, cases=None, **kw):
        src = cases or case_dir(A, w, drop=(), **kw)
        return ["preprocess", "synthesis", "--all", "--case-dir", src, "--out", w / "prep", "--config", A["config"], *extra]
    ok_prep = finite_files("prep/*.npz", 0)
    case("preprocess", "synthesis: --case-dir is an empty folder (--all)", "refuse")(
        lambda w, A: prep_syn(w, A, cases=(w / "empty").mkdir() or w / "empty"))
    case("preprocess", "synthesis: case folder holding only a segmentation", "refuse")(
        lambda w, A: prep_syn(w, A, cases=copy(A["syn_raw"] / SYN[0] / f"{SYN[0]}-seg.nii.gz", w / "c" / "x" / "x-seg.nii.gz").parents[1]))
    case("preprocess", "synthesis: --spacing 0 1 1", "refuse")(lambda w, A: prep_syn(w, A, "--spacing", 0, 1, 1))
    case("preprocess", "synthesis: --spacing -2 -2 -2", "refuse")(lambda w, A: prep_syn(w, A, "--spacing", -2, -2, -2))
    case("preprocess", "synthesis: --spacing 1e9 (one voxel per universe)", "refuse")(lambda w, A: prep_syn(w, A, "--spacing", 1e9))
    case("preprocess", "synthesis: --spacing with two values", "refuse")(lambda w, A: prep_syn(w, A, "--spacing", 1, 1))
    case("preprocess", "synthesis: --orientation XYZ", "refuse")(lambda w, A: prep_syn(w, A, "--orientation", "XYZ"))
    case("preprocess", "synthesis: --orientation RRA (an axis twice)", "refuse")(lambda w, A: prep_syn(w, A, "--orientation", "RRA"))
    case("preprocess", "synthesis: --clip 99 1 (low above high)", "refuse")(lambda w, A: prep_syn(w, A, "--clip", 99, 1))
    case("preprocess", "synthesis: --clip -5 120", "refuse")(lambda w, A: prep_syn(w, A, "--clip", -5, 120))
    case("preprocess", "synthesis: --mask-threshold nan", "refuse")(lambda w, A: prep_syn(w, A, "--mask-threshold", "nan"))
    case("preprocess", "synthesis: --shape 0 16 16", "refuse")(lambda w, A: prep_syn(w, A, "--shape", 0, 16, 16))
    case("preprocess", "synthesis: --shape 7 7 7 (not a multiple of the divisor 8)", "either", ok_prep)(
        lambda w, A: prep_syn(w, A, "--shape", 7, 7, 7))
    case("preprocess", "synthesis: --pattern with an empty glob (t1n=)", "refuse")(
        lambda w, A: prep_syn(w, A, "--layout", "generic", "--pattern", "t1n="))
    case("preprocess", "synthesis: --pattern for an unknown contrast (pd=*.nii.gz)", "refuse")(
        lambda w, A: prep_syn(w, A, "--layout", "generic", "--pattern", "pd=*.nii.gz"))
    case("preprocess", "synthesis: --pattern without '=' ", "refuse")(
        lambda w, A: prep_syn(w, A, "--layout", "generic", "--pattern", "t1n"))
    case("preprocess", "synthesis: --pattern with an unclosed bracket (t1n=*[t1n.nii.gz)", "refuse")(
        lambda w, A: prep_syn(w, A, "--layout", "generic", "--pattern", "t1n=*[t1n.nii.gz", "--pattern", "t1c=*t1c*",
                              "--pattern", "t2w=*t2w*", "--pattern", "t2f=*t2f*"))
    case("preprocess", "synthesis: --pattern t1n='*' matching every file of the case", "refuse")(
        lambda w, A: prep_syn(w, A, "--layout", "generic", "--pattern", "t1n=*", "--pattern", "t1c=*t1c*",
                              "--pattern", "t2w=*t2w*", "--pattern", "t2f=*t2f*"))
    case("preprocess", "synthesis: --layout generic without any --pattern", "either", ok_prep)(
        lambda w, A: prep_syn(w, A, "--layout", "generic"))
    case("preprocess", "synthesis: a contrast that is all zero", "either",
         recorded("prep/*.json", "zero", "empty", "warning"))(
        lambda w, A: prep_syn(w, A, edit={"t1c": edit_nii(lambda d, a: (np.zeros_like(d), a))}))
    case("preprocess", "synthesis: a contrast stored as uint8 (0..255)", "ok", ok_prep)(
        lambda w, A: prep_syn(w, A, edit={"t2w": edit_nii(lambda d, a: (np.clip(d, 0, 255).astype(np.uint8), a))}))
    case("preprocess", "synthesis: a contrast with 1e4-mm voxels on the same matrix", "refuse")(
        lambda w, A: prep_syn(w, A, edit={"t2w": edit_nii(lambda d, a: (d, np.diag([1e4, 1e4, 1e4, 1])))}))
    case("preprocess", "synthesis: t2w with axes transposed (world grid kept by the affine)", "either", ok_prep)(
        lambda w, A: prep_syn(w, A, edit={"t2w": edit_nii(lambda d, a: (np.ascontiguousarray(d.transpose(2, 1, 0)), a[:, [2, 1, 0, 3]]))}))
    case("preprocess", "synthesis: case folder and file prefix disagree (folder X, files BraTS-...)", "either", ok_prep)(
        lambda w, A: prep_syn(w, A, cases=copy(A["syn_raw"] / SYN[0], w / "c" / "X").parent))
    case("preprocess", "synthesis: two case folders whose files carry the same case id", "refuse")(
        lambda w, A: prep_syn(w, A, cases=(copy(A["syn_raw"] / SYN[0], w / "c" / "A"),
                                           copy(A["syn_raw"] / SYN[0], w / "c" / "B"))[0].parent))
    case("preprocess", "synthesis: case folder with a unicode name (Fälle_ü)", "ok", ok_prep)(
        lambda w, A: prep_syn(w, A, rename="Fälle_ü"))
    case("preprocess", "synthesis: --out on a full disk (/dev/full/x)", "refuse")(
        lambda w, A: ["preprocess", "synthesis", "--case-dir", A["syn_raw"] / SYN[0], "--out", "/dev/full/x",
                      "--config", A["config"]])
    case("preprocess", "rotation: a 2D image as the CT", "refuse")(
        lambda w, A: ["preprocess", "rotation", "--config", A["config"], "--cts", nii(w / "flat.nii.gz", ramp((16, 16, 1))),
                      "--out", w / "out", "--no-progress"])
    case("preprocess", "rotation: a CT in 0..1 (not HU)", "either", recorded("out/*", "warning", "HU"))(
        lambda w, A: ["preprocess", "rotation", "--config", A["config"], "--cts",
                      nii(w / "ct.nii.gz", ramp((16, 16, 16)) / 97, np.diag([13, 13, 13, 1.])), "--out", w / "out", "--no-progress"])
    case("preprocess", "rotation: the same CT given twice", "either", exists("out/*.npz"))(
        lambda w, A: ["preprocess", "rotation", "--config", A["config"], "--cts", A["rot_raw"] / "ct_000.nii.gz",
                      A["rot_raw"] / "ct_000.nii.gz", "--out", w / "out", "--no-progress"])
    case("preprocess", "rotation: --index -1", "refuse")(
        lambda w, A: ["preprocess", "rotation", "--config", A["config"], "--cts", A["rot_raw"] / "ct_000.nii.gz",
                      "--index", -1, "--out", w / "out", "--no-progress"])
    case("preprocess", "longitudinal: a subject folder with no sessions (empty)", "refuse")(
        lambda w, A: ["preprocess", "longitudinal", "--config", A["config"], "--subjects",
                      (w / "sub-x").mkdir() or w / "sub-x", "--out", w / "out", "--no-progress"])
    case("preprocess", "longitudinal: sessions.tsv with CRLF line endings", "ok", exists("out/*.npz"))(
        lambda w, A: ["preprocess", "longitudinal", "--config", A["config"], "--subjects",
                      _crlf(copy(A["long_raw"] / "sub-000", w / "sub-000")), "--out", w / "out", "--no-progress"])
    case("preprocess", "longitudinal: two sessions on the same day", "either", exists("out/*.npz"))(
        lambda w, A: ["preprocess", "longitudinal", "--config", A["config"], "--subjects",
                      _sessions(copy(A["long_raw"] / "sub-000", w / "sub-000"), {1: 0}), "--out", w / "out", "--no-progress"])
    case("preprocess", "longitudinal: session times negative (days before baseline)", "ok", exists("out/*.npz"))(
        lambda w, A: ["preprocess", "longitudinal", "--config", A["config"], "--subjects",
                      _sessions(copy(A["long_raw"] / "sub-000", w / "sub-000"), {0: -900, 1: -500, 2: -100, 3: -10}),
                      "--out", w / "out", "--no-progress"])
    case("preprocess", "longitudinal: the same subject twice", "either", exists("out/*.npz"))(
        lambda w, A: ["preprocess", "longitudinal", "--config", A["config"], "--subjects", A["long_raw"] / "sub-000",
                      A["long_raw"] / "sub-000", "--out", w / "out", "--no-progress"])
    case("preprocess", "longitudinal: a session volume with NaN voxels", "refuse")(
        lambda w, A: ["preprocess", "longitudinal", "--config", A["config"], "--subjects",
                      _nan_session(copy(A["long_raw"] / "sub-000", w / "sub-000")), "--out", w / "out", "--no-progress"])

    # ---------------------------------------------------------------- train
    def train_syn(w, A, cfg=None, data=None, cases=(SYN[0],), extra=(), out=None):
        return ["train", "synthesis", "--config", cfg or A["config"], "--data", data or A["syn_prep"], "--cases", *cases,
                "--out", out or w / "ck", "--no-progress", *extra]
    ok_train = finite_files("ck/*.safetensors")
    case("train", "synthesis: --cases names a case not in --data", "refuse")(lambda w, A: train_syn(w, A, cases=("nobody",)))
    case("train", "synthesis: --cases with path traversal (../../etc/passwd)", "refuse")(
        lambda w, A: train_syn(w, A, cases=("../../../../etc/passwd",)))
    case("train", "synthesis: --data is an empty folder", "refuse")(lambda w, A: train_syn(w, A, data=(w / "e").mkdir() or w / "e"))
    case("train", "synthesis: a case .npz that is random bytes", "refuse")(
        lambda w, A: train_syn(w, A, data=_prep_copy(A, w, lambda p: p.write_bytes(os.urandom(300)))))
    case("train", "synthesis: a case .npz without its 'image' array", "refuse")(
        lambda w, A: train_syn(w, A, data=_prep_copy(A, w, lambda p: np.savez(p, mask=np.ones((16, 16, 16), bool)))))
    case("train", "synthesis: a case .npz whose image holds NaN", "refuse")(
        lambda w, A: train_syn(w, A, data=_prep_copy(A, w, _npz_edit("image", lambda x: np.where(x > 0.5, np.nan, x).astype(x.dtype)))))
    case("train", "synthesis: a case .npz whose image is 2 channels instead of 4", "refuse")(
        lambda w, A: train_syn(w, A, data=_prep_copy(A, w, _npz_edit("image", lambda x: x[:2]))))
    case("train", "synthesis: a case .npz holding a pickled object array", "refuse")(
        lambda w, A: train_syn(w, A, data=_prep_copy(A, w, lambda p: np.savez(p, image=np.array([{"a": 1}], dtype=object)))))
    case("train", "synthesis: config batch_size 0", "refuse")(lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {train: {batch_size: 0}}\n")))
    case("train", "synthesis: config lr -0.1", "refuse")(lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {train: {lr: -0.1}}\n")))
    heavy("train", "synthesis: config lr 1e30 (weights blow up)", "either", ok_train)(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {train: {lr: 1.0e+30}}\n")))
    case("train", "synthesis: config channels [7, 16] with norm_num_groups 8", "refuse")(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {unet: {channels: [7, 16]}}}\n")))
    case("train", "synthesis: config channels [] (no levels)", "refuse")(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {unet: {channels: []}}}\n")))
    case("train", "synthesis: attention_levels shorter than channels", "refuse")(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {unet: {attention_levels: [false]}}}\n")))
    case("train", "synthesis: num_train_timesteps 0", "refuse")(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {schedule: {num_train_timesteps: 0}}}\n")))
    case("train", "synthesis: channels given as strings ['8', '16']", "refuse")(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {unet: {channels: ['8', '16']}}}\n")))
    case("train", "synthesis: targets [t9]", "refuse")(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {targets: [t9]}}\n")))
    case("train", "synthesis: train_patch larger than the volume (64^3 on 16^3)", "either", ok_train, heavy=True, timeout=180)(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {train_patch: [64, 64, 64]}}\n")))
    case("train", "synthesis: config `synthesis: null`", "refuse")(lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: null\n")))
    case("train", "synthesis: config device 'tpu'", "refuse")(lambda w, A: train_syn(w, A, cfg_with(A, w, "device: tpu\n")))
    case("train", "synthesis: --out is the seismic checkpoint (resume another task)", "refuse",
         mutable=("ck/",))(lambda w, A: train_syn(w, A) if copy(A["seis_ck"], w / "ck") else None)
    case("train", "synthesis: --out is a run of another network size (resume mismatch)", "refuse", mutable=("ck/",))(
        lambda w, A: train_syn(w, A, cfg_with(A, w, "synthesis: {model: {unet: {channels: [16, 16]}}}\n"))
        if copy(A["syn_ck"], w / "ck") else None)
    case("train", "synthesis: --threads 1e9", "refuse")(lambda w, A: train_syn(w, A, extra=("--threads", "1e9")))
    case("train", "synthesis: --device cuda:-1", "refuse")(lambda w, A: train_syn(w, A, extra=("--device", "cuda:-1")))
    case("train", "synthesis: --out in an uncreatable place (/proc)", "refuse")(
        lambda w, A: train_syn(w, A, out=BAD_DIR))
    case("train", "seismic: a cube smaller than the patch (4x4x8 vs 8x8x16)", "either", ok_train, heavy=True, timeout=180)(
        lambda w, A: ["train", "seismic", "--config", A["config"], "--data", npy(w / "d" / "small.npy", cube((4, 4, 8))).parent,
                      "--cubes", "small", "--out", w / "ck", "--no-progress"])
    heavy("train", "seismic: an all-zero cube (std 0)", "either", ok_train)(
        lambda w, A: ["train", "seismic", "--config", A["config"], "--data", npy(w / "d" / "zero.npy", np.zeros((8, 8, 16), np.float32)).parent,
                      "--cubes", "zero", "--out", w / "ck", "--no-progress"])
    heavy("train", "seismic: a cube with amplitudes of 1e37", "either", ok_train)(
        lambda w, A: ["train", "seismic", "--config", A["config"], "--data", npy(w / "d" / "loud.npy", cube() * 1e37).parent,
                      "--cubes", "loud", "--out", w / "ck", "--no-progress"])
    case("train", "seismic: --cubes names a cube that is not there", "refuse")(
        lambda w, A: ["train", "seismic", "--config", A["config"], "--data", A["seis_raw"], "--cubes", "cube_999",
                      "--out", w / "ck", "--no-progress"])
    case("train", "seismic: a 2D .npy cube", "refuse")(
        lambda w, A: ["train", "seismic", "--config", A["config"], "--data", npy(w / "d" / "flat.npy", cube((8, 16))).parent,
                      "--cubes", "flat", "--out", w / "ck", "--no-progress"])
    case("train", "seismic: config patch [0, 8, 16]", "refuse")(
        lambda w, A: ["train", "seismic", "--config", cfg_with(A, w, "seismic: {model: {patch: [0, 8, 16]}}\n"), "--data",
                      A["seis_raw"], "--cubes", "cube_000", "--out", w / "ck", "--no-progress"])
    case("train", "rotation: --pairs is a synthesis case .npz (wrong kind)", "refuse")(
        lambda w, A: ["train", "rotation", "--config", A["config"], "--pairs", A["syn_prep"] / f"{SYN[0]}.npz",
                      "--out", w / "ck", "--no-progress"])
    case("train", "rotation: --pairs is a truncated .npz", "refuse")(
        lambda w, A: ["train", "rotation", "--config", A["config"], "--pairs",
                      text(w / "cut.npz", (A["rot_prep"] / "ct_000.npz").read_bytes()[:500]), "--out", w / "ck", "--no-progress"])
    case("train", "longitudinal: --subjects is a rotation .npz (wrong kind)", "refuse")(
        lambda w, A: ["train", "longitudinal", "--config", A["config"], "--subjects", A["rot_prep"] / "ct_000.npz",
                      "--out", w / "ck", "--no-progress"])
    case("train", "longitudinal: --subjects is the raw subject folder (not preprocessed)", "refuse")(
        lambda w, A: ["train", "longitudinal", "--config", A["config"], "--subjects", A["long_raw"] / "sub-000",
                      "--out", w / "ck", "--no-progress"])
    case("train-segmenter", "--cases names cases not in --data", "refuse")(
        lambda w, A: ["train-segmenter", "--config", A["config"], "--data", A["syn_prep"], "--cases", "ghost", "--out", w / "seg"])
    case("train-segmenter", "config segmentation steps 0", "refuse")(
        lambda w, A: ["train-segmenter", "--config", cfg_with(A, w, "synthesis: {segmentation: {steps: 0}}\n"), "--data",
                      A["syn_prep"], "--cases", SYN[0], "--out", w / "seg"])
    heavy("train-segmenter", "segmentation patch 64^3 on 16^3 cases", "either", finite_files("seg/*.safetensors"))(
        lambda w, A: ["train-segmenter", "--config", cfg_with(A, w, "synthesis: {segmentation: {patch: [64, 64, 64]}}\n"),
                      "--data", A["syn_prep"], "--cases", SYN[0], "--out", w / "seg", "--no-progress"])
    case("train-segmenter", "--data is a file", "refuse")(
        lambda w, A: ["train-segmenter", "--config", A["config"], "--data", A["config"], "--cases", SYN[0], "--out", w / "seg"])

    # ---------------------------------------------------------------- sample
    def sample_syn(w, A, *extra, ck=None, inp=None):
        return ["sample", "synthesis", "--config", A["config"], "--checkpoint", ck or A["syn_ck"], "--out", w / "out",
                "--no-progress", *(["--input", inp] if inp is not None else []), *extra]
    ok_sample = finite_files("out/**/*.nii.gz")
    case("sample", "synthesis: --steps 0", "refuse")(lambda w, A: sample_syn(w, A, "--steps", 0, inp=A["syn_input"]))
    case("sample", "synthesis: --n-samples 1e9 (float notation)", "refuse")(lambda w, A: sample_syn(w, A, "--n-samples", "1e9", inp=A["syn_input"]))
    case("sample", "synthesis: --guidance-scale -1e12", "either", ok_sample, heavy=True, timeout=180)(
        lambda w, A: sample_syn(w, A, "--guidance-scale", "-1e12", inp=A["syn_input"]))
    case("sample", "synthesis: --input and --data together", "refuse")(
        lambda w, A: sample_syn(w, A, "--data", A["syn_prep"], "--case", SYN[2], inp=A["syn_input"]))
    case("sample", "synthesis: neither --input nor --data", "refuse")(lambda w, A: sample_syn(w, A))
    case("sample", "synthesis: --targets t9", "refuse")(lambda w, A: sample_syn(w, A, "--data", A["syn_prep"], "--case", SYN[2], "--targets", "t9"))
    case("sample", "synthesis: --case not in --data", "refuse")(lambda w, A: sample_syn(w, A, "--data", A["syn_prep"], "--case", "ghost"))
    case("sample", "synthesis: --steps-curve 0", "refuse")(lambda w, A: sample_syn(w, A, "--data", A["syn_prep"], "--case", SYN[2], "--steps-curve", 0))
    case("sample", "synthesis: --steps-curve 99999", "refuse")(lambda w, A: sample_syn(w, A, "--data", A["syn_prep"], "--case", SYN[2], "--steps-curve", 99999))
    case("sample", "synthesis: --input case missing two contrasts", "refuse")(
        lambda w, A: sample_syn(w, A, inp=case_dir(A, w, drop=("t2f", "t1c"))))
    case("sample", "synthesis: --input case missing nothing", "either", recorded("out/**/*", "nothing", "no missing", "complete", printed=False))(
        lambda w, A: sample_syn(w, A, inp=case_dir(A, w, drop=())))
    case("sample", "synthesis: --checkpoint is the seismic model", "refuse")(lambda w, A: sample_syn(w, A, ck=A["seis_ck"], inp=A["syn_input"]))
    heavy("sample", "synthesis: checkpoint whose weights are all NaN", "refuse")(
        lambda w, A: sample_syn(w, A, ck=ckpt(A, w, weights=lambda k, v: np.full_like(v, np.nan) if v.dtype.kind == "f" else v),
                                inp=A["syn_input"]))
    heavy("sample", "synthesis: checkpoint with one weight of 1e38 (overflow to Inf)", "either", ok_sample)(
        lambda w, A: sample_syn(w, A, ck=ckpt(A, w, weights=lambda k, v: (v * 0 + 1e38).astype(v.dtype) if "conv_in" in k and v.dtype.kind == "f" else v),
                                inp=A["syn_input"]))
    case("sample", "synthesis: checkpoint config.json num_train_timesteps 0", "refuse")(
        lambda w, A: sample_syn(w, A, ck=ckpt(A, w, config=_set("schedule.num_train_timesteps", 0)), inp=A["syn_input"]))
    case("sample", "synthesis: checkpoint config.json channels as a string", "refuse")(
        lambda w, A: sample_syn(w, A, ck=ckpt(A, w, config=_set("unet.channels", "8,16")), inp=A["syn_input"]))
    case("sample", "synthesis: checkpoint config.json with NaN (bare NaN token)", "refuse")(
        lambda w, A: sample_syn(w, A, ck=ckpt(A, w, config=lambda d: json.dumps(_set("schedule.beta_end", float("nan"))(d) or d)),
                                inp=A["syn_input"]))
    case("sample", "synthesis: checkpoint folder that is a symlink loop", "refuse")(
        lambda w, A: sample_syn(w, A, ck=(os.symlink(w / "ck", w / "ck"), w / "ck")[1], inp=A["syn_input"]))
    case("sample", "synthesis: --out on a full disk (/dev/full/x)", "refuse")(
        lambda w, A: [*sample_syn(w, A)[:6], "--out", "/dev/full/x", "--input", A["syn_input"]])
    case("sample", "seismic: --make-masks with ratio_missing 1.5", "refuse")(
        lambda w, A: ["sample", "seismic", "--config", cfg_with(A, w, "seismic: {evaluation: {patterns: {random: {ratio_missing: 1.5}}}}\n"),
                      "--data", A["seis_raw"], "--cubes", "cube_001", "--out", w / "m", "--make-masks"])
    case("sample", "seismic: --make-masks with decimate factor 0", "refuse")(
        lambda w, A: ["sample", "seismic", "--config", cfg_with(A, w, "seismic: {evaluation: {patterns: {decimate: {factor: 0}}}}\n"),
                      "--data", A["seis_raw"], "--cubes", "cube_001", "--out", w / "m", "--make-masks"])
    case("sample", "seismic: --make-masks with ratio_missing 0 (nothing missing)", "either", exists("m/*.npy"))(
        lambda w, A: ["sample", "seismic", "--config", cfg_with(A, w, "seismic: {evaluation: {patterns: {random: {ratio_missing: 0.0}}}}\n"),
                      "--data", A["seis_raw"], "--cubes", "cube_001", "--out", w / "m", "--make-masks"])
    case("sample", "seismic: --masks is an empty folder", "refuse")(
        lambda w, A: ["sample", "seismic", "--config", A["config"], "--data", A["seis_raw"], "--cubes", "cube_001", "--out",
                      w / "s", "--masks", (w / "e").mkdir() or w / "e", "--checkpoint", A["seis_ck"]])
    case("sample", "seismic: --checkpoint without --masks", "refuse")(
        lambda w, A: ["sample", "seismic", "--config", A["config"], "--data", A["seis_raw"], "--cubes", "cube_001", "--out",
                      w / "s", "--checkpoint", A["seis_ck"]])
    case("sample", "rotation: --pairs file does not exist", "refuse")(
        lambda w, A: ["sample", "rotation", "--config", A["config"], "--checkpoint", A["rot_ck"], "--pairs", w / "none.npz",
                      "--out", w / "out", "--no-progress"])
    case("sample", "rotation: --checkpoint is the longitudinal model", "refuse")(
        lambda w, A: ["sample", "rotation", "--config", A["config"], "--checkpoint", A["long_ck"], "--pairs",
                      A["rot_prep"] / "ct_001.npz", "--out", w / "out", "--no-progress"])
    case("sample", "longitudinal: --subjects is a synthesis case", "refuse")(
        lambda w, A: ["sample", "longitudinal", "--config", A["config"], "--checkpoint", A["long_ck"], "--subjects",
                      A["syn_prep"] / f"{SYN[0]}.npz", "--out", w / "out", "--no-progress"])
    case("sample", "longitudinal: config sample.steps 0", "refuse")(
        lambda w, A: ["sample", "longitudinal", "--config", cfg_with(A, w, "longitudinal: {sample: {steps: 0}}\n"), "--checkpoint",
                      A["long_ck"], "--subjects", A["long_prep"] / "sub-001.npz", "--out", w / "out", "--no-progress"])

    # ---------------------------------------------------------------- evaluate
    def eval_syn(w, A, samples=None, train=(SYN[0], SYN[1]), cases=(SYN[2],), extra=()):
        return ["evaluate", "synthesis", "--data", A["syn_prep"], "--train-cases", *train, "--cases", *cases,
                "--samples", samples or A["syn_samples"], "--out", w / "ev", *extra]
    case("evaluate", "synthesis: --samples is an empty folder", "refuse")(lambda w, A: eval_syn(w, A, samples=(w / "e").mkdir() or w / "e"))
    case("evaluate", "synthesis: --cases not in --samples", "refuse")(lambda w, A: eval_syn(w, A, cases=(SYN[0],)))
    case("evaluate", "synthesis: held-out case also in --train-cases (leakage)", "either",
         recorded("ev/**/*", "overlap", "leak", "also in", printed=True), heavy=True, timeout=180)(
        lambda w, A: eval_syn(w, A, train=(SYN[0], SYN[2])))
    case("evaluate", "synthesis: --targets t9", "refuse")(lambda w, A: eval_syn(w, A, extra=("--targets", "t9")))
    case("evaluate", "synthesis: a sample volume replaced by NaN", "refuse")(
        lambda w, A: eval_syn(w, A, samples=_nan_samples(copy(A["syn_samples"], w / "s"))))
    case("evaluate", "seismic: --masks is an empty folder", "refuse")(
        lambda w, A: ["evaluate", "seismic", "--config", A["config"], "--data", A["seis_raw"], "--cubes", "cube_001",
                      "--masks", (w / "e").mkdir() or w / "e", "--samples", w / "e", "--out", w / "ev"])
    case("evaluate", "seismic: --benchmark with a non-file", "refuse")(
        lambda w, A: ["evaluate", "seismic", "--config", A["config"], "--data", A["seis_raw"], "--cubes", "cube_001",
                      "--masks", (w / "e").mkdir() or w / "e", "--samples", w / "e", "--benchmark", "nothing.json", "--out", w / "ev"])
    case("evaluate", "rotation: --predictions is an empty folder", "refuse")(
        lambda w, A: ["evaluate", "rotation", "--config", A["config"], "--predictions", (w / "e").mkdir() or w / "e",
                      "--pairs", A["rot_prep"] / "ct_001.npz", "--out", w / "ev", "--no-progress"])
    case("evaluate", "longitudinal: --predictions is an empty folder", "refuse")(
        lambda w, A: ["evaluate", "longitudinal", "--config", A["config"], "--predictions", (w / "e").mkdir() or w / "e",
                      "--subjects", A["long_prep"] / "sub-001.npz", "--out", w / "ev", "--no-progress"])
    case("evaluate", "longitudinal: predictions .json that is a JSON list", "refuse")(
        lambda w, A: ["evaluate", "longitudinal", "--config", A["config"], "--predictions",
                      (copy(A["long_prep"] / "sub-001.npz", w / "p" / "sub-001.npz"), text(w / "p" / "sub-001.json", "[1, 2]"))[1].parent,
                      "--subjects", A["long_prep"] / "sub-001.npz", "--out", w / "ev", "--no-progress"])

    # ---------------------------------------------------------------- forecast
    def fc(w, A, *extra, subject=None, time_=("400",), out=None):
        return ["forecast", "--checkpoint", A["long_ck"], "--subject", subject or A["long_raw"] / "sub-001", "--time", *time_,
                "--output", out or w / "pred.nii.gz", *extra]
    ok_fc = finite_files("pred*.nii.gz")
    heavy("forecast", "--time -100000 (273 years before the first session)", "either", recorded("pred*.json", "warning", "extrapolat"))(
        lambda w, A: fc(w, A, time_=("-100000",)))
    heavy("forecast", "--time 1e11 days", "either", recorded("pred*.json", "warning", "extrapolat"))(lambda w, A: fc(w, A, time_=("1e11",)))
    heavy("forecast", "--time exactly the first session (0)", "either", ok_fc)(lambda w, A: fc(w, A, time_=("0",)))
    heavy("forecast", "--time 400 400 (the same time twice: same output name)", "either", ok_fc)(lambda w, A: fc(w, A, time_=("400", "400")))
    case("forecast", "--output with a .png suffix", "refuse")(lambda w, A: fc(w, A, out=w / "pred.png"))
    case("forecast", "--output is an existing folder", "refuse")(lambda w, A: fc(w, A, out=(w / "o").mkdir() or w / "o"))
    case("forecast", "--output in an uncreatable place (/proc)", "refuse")(lambda w, A: fc(w, A, out=BAD_DIR + "/p.nii.gz"))
    case("forecast", "--subject is a file", "refuse")(lambda w, A: fc(w, A, subject=A["long_raw"] / "sub-001" / "sessions.tsv"))
    heavy("forecast", "sessions.tsv with CRLF line endings and an extra column", "ok", ok_fc)(
        lambda w, A: fc(w, A, subject=_crlf(copy(A["long_raw"] / "sub-001", w / "sub"), extra_col=True)))
    case("forecast", "sessions.tsv with a duplicate time (two sessions on day 0)", "either", ok_fc, heavy=True, timeout=180)(
        lambda w, A: fc(w, A, subject=_sessions(copy(A["long_raw"] / "sub-001", w / "sub"), {1: 0})))
    case("forecast", "a session volume that is 2D", "refuse")(
        lambda w, A: fc(w, A, subject=_session_vol(copy(A["long_raw"] / "sub-001", w / "sub"), lambda d, a: (d[:, :, :1], a))))
    case("forecast", "a session with NaN in its affine", "refuse")(
        lambda w, A: fc(w, A, subject=_nan_affine_session(copy(A["long_raw"] / "sub-001", w / "sub"))))
    case("forecast", "sessions at 1 mm while the model works at 12 mm (no --allow-other-spacing)", "either",
         recorded("pred*.json", "spacing", "warning"), heavy=True, timeout=180)(
        lambda w, A: fc(w, A, subject=_session_vol(copy(A["long_raw"] / "sub-001", w / "sub"),
                                                  lambda d, a: (d, np.diag([1., 1, 1, 1])), every=True)))
    case("forecast", "sessions on different grids (one at half the matrix)", "either", ok_fc, heavy=True, timeout=180)(
        lambda w, A: fc(w, A, subject=_session_vol(copy(A["long_raw"] / "sub-001", w / "sub"),
                                                  lambda d, a: (np.ascontiguousarray(d[::2, ::2, ::2]), a @ np.diag([2., 2, 2, 1])))))
    case("forecast", "--uncertainty variance (the demo model has a variance head)", "ok",
         finite_files("pred*.nii.gz", 2), heavy=True, timeout=180)(lambda w, A: fc(w, A, "--uncertainty", "variance"))
    case("forecast", "--n-samples 0", "refuse")(lambda w, A: fc(w, A, "--n-samples", 0))
    case("forecast", "--time 1,000 (thousands separator)", "refuse")(lambda w, A: fc(w, A, time_=("1,000",)))
    case("forecast", "--checkpoint is the rotation model", "refuse")(lambda w, A: ["forecast", "--checkpoint", A["rot_ck"], "--subject",
                                                                                   A["long_raw"] / "sub-001", "--time", 400, "--output", w / "p.nii.gz"])

    # ---------------------------------------------------------------- rotate
    def rot(w, A, *extra, inp=None, angles=("5", "0", "0"), out=None):
        return ["rotate", "--checkpoint", A["rot_ck"], "--input", inp or A["png"], "--angles", *angles,
                "--output", out or w / "out.png", *extra]
    ok_rot = exists("out.png")
    case("rotate", "--angles with two values", "refuse")(lambda w, A: rot(w, A, angles=("5", "0")))
    case("rotate", "--angles nan 0 0", "refuse")(lambda w, A: rot(w, A, angles=("nan", "0", "0")))
    case("rotate", "--angles 1e300 0 0", "refuse")(lambda w, A: rot(w, A, angles=("1e300", "0", "0")))
    case("rotate", "--angles 90 0 0 beyond the trained 15 degrees, no --allow-extrapolation", "refuse")(
        lambda w, A: rot(w, A, angles=("90", "0", "0")))
    heavy("rotate", "--angles 360 0 0 (a full turn)", "either", both(ok_rot, recorded("out.png.json", "warning", "360")))(
        lambda w, A: rot(w, A, angles=("360", "0", "0")))
    case("rotate", "a PNG whose header declares 100000x100000 pixels", "refuse")(
        lambda w, A: rot(w, A, inp=png(w / "big.png", 100000, 100000, 8, 0, raw=b"\0" * 64)))
    heavy("rotate", "an 8-bit RGB PNG", "either", ok_rot)(lambda w, A: rot(w, A, inp=png(w / "rgb.png", 32, 32, 8, 2)))
    heavy("rotate", "a 1-bit PNG", "either", ok_rot)(lambda w, A: rot(w, A, inp=png(w / "bit.png", 32, 32, 1, 0)))
    heavy("rotate", "an all-black PNG", "either", both(ok_rot, recorded("out.png.json", "warning", "constant", "blank", "empty")))(
        lambda w, A: rot(w, A, inp=png(w / "black.png", 32, 32, 16, 0, raw=b"".join(b"\0" + b"\0" * 64 for _ in range(32)))))
    case("rotate", "a JPEG named .jpg", "refuse")(lambda w, A: rot(w, A, inp=text(w / "x.jpg", b"\xff\xd8\xff\xe0" + os.urandom(200))))
    case("rotate", "a NIfTI radiograph 16x1", "refuse")(lambda w, A: rot(w, A, inp=nii(w / "line.nii.gz", ramp((16, 1, 1))), out=w / "out.nii.gz"))
    case("rotate", "--output suffix .dcm for a PNG input", "either", exists("out.dcm", "out.png"))(
        lambda w, A: rot(w, A, out=w / "out.dcm"))
    case("rotate", "--output is an existing folder", "refuse")(lambda w, A: rot(w, A, out=(w / "o").mkdir() or w / "o"))
    case("rotate", "--output on a full disk (/dev/full/x.png)", "refuse")(lambda w, A: rot(w, A, out="/dev/full/x.png"))
    case("rotate", "--output is a symlink to the input", "refuse")(
        lambda w, A: rot(w, A, inp=copy(A["png"], w / "in.png"), out=(os.symlink(w / "in.png", w / "out.png"), w / "out.png")[1]))
    case("rotate", "--steps -3", "refuse")(lambda w, A: rot(w, A, "--steps", -3))
    case("rotate", "--checkpoint is a file", "refuse")(lambda w, A: ["rotate", "--checkpoint", A["rot_ck"] / "config.json", "--input", A["png"],
                                                                    "--angles", 5, 0, 0, "--output", w / "o.png"])

    # ---------------------------------------------------------------- drr
    def drr(w, A, *extra, ct=None):
        return ["drr", "--ct", ct or A["rot_raw"] / "ct_000.nii.gz", "--output", w / "out", "--config", A["config"], *extra]
    ok_drr = exists("out/*")
    case("drr", "--ct is 2D", "refuse")(lambda w, A: drr(w, A, ct=nii(w / "flat.nii.gz", ramp((16, 16)))))
    case("drr", "--ct with NaN voxels", "refuse")(lambda w, A: drr(w, A, ct=nii(w / "n.nii.gz", np.where(ramp((16, 16, 16)) > 90, np.nan, 0).astype(np.float32))))
    case("drr", "--ct 1x1x1", "either", ok_drr)(lambda w, A: drr(w, A, ct=nii(w / "one.nii.gz", np.zeros((1, 1, 1), np.float32))))
    case("drr", "--ct with 1e-6 mm voxels", "either", both(ok_drr, recorded("out/*", "warning", "spacing")))(
        lambda w, A: drr(w, A, ct=nii(w / "micro.nii.gz", ramp((16, 16, 16)) * 10 - 1000, np.diag([1e-6, 1e-6, 1e-6, 1]))))
    case("drr", "--ct all air (-1000 HU)", "either", both(ok_drr, recorded("out/*", "warning", "air", "empty", "blank")))(
        lambda w, A: drr(w, A, ct=nii(w / "air.nii.gz", np.full((16, 16, 16), -1000, np.float32), np.diag([13, 13, 13, 1.]))))
    case("drr", "--ct uint8 0..255 (not HU)", "either", both(ok_drr, recorded("out/*", "warning", "HU")))(
        lambda w, A: drr(w, A, ct=nii(w / "u8.nii.gz", ramp((16, 16, 16), np.uint8), np.diag([13, 13, 13, 1.]))))
    case("drr", "--angles 1,2 (two values)", "refuse")(lambda w, A: drr(w, A, "--angles", "1,2"))
    case("drr", "--angles a,b,c", "refuse")(lambda w, A: drr(w, A, "--angles", "a,b,c"))
    case("drr", "--angles nan,0,0", "refuse")(lambda w, A: drr(w, A, "--angles", "nan,0,0"))
    case("drr", "--spacing 0 1", "refuse")(lambda w, A: drr(w, A, "--spacing", 0, 1))
    case("drr", "--spacing -1 -1", "refuse")(lambda w, A: drr(w, A, "--spacing", -1, -1))
    case("drr", "--angles 0,0,0 0,0,0 (the same view twice: same file name)", "either", ok_drr)(
        lambda w, A: drr(w, A, "--angles", "0,0,0", "0,0,0"))
    case("drr", "--ct is a SEG-Y file", "refuse")(lambda w, A: drr(w, A, ct=A["seis_raw"] / "cube_000.segy"))

    # ---------------------------------------------------------------- interpolate
    def interp(w, A, *extra, inp=None, out=None, ck=None):
        if "--mask" not in extra:  # every other trace missing, so the model runs (a complete survey is copied)
            extra = (*extra, "--mask", npy(w / "half.npy", np.indices((8, 8)).sum(0) % 2 == 0))
        return ["interpolate", "--checkpoint", ck or A["seis_ck"], "--input", inp or A["seis_raw"] / "cube_001.segy",
                "--output", out or w / "out.npy", "--config", A["config"], *extra]
    ok_interp = finite_files("out.npy")
    mask = lambda w, m: npy(w / "mask.npy", m)  # noqa: E731
    case("interpolate", "--mask of another shape (4x4 for an 8x8 survey)", "refuse")(lambda w, A: interp(w, A, "--mask", mask(w, np.ones((4, 4), bool))))
    heavy("interpolate", "--mask all ones (nothing missing)", "either", ok_interp)(lambda w, A: interp(w, A, "--mask", mask(w, np.ones((8, 8), bool))))
    case("interpolate", "--mask all zeros (nothing observed)", "refuse")(lambda w, A: interp(w, A, "--mask", mask(w, np.zeros((8, 8), bool))))
    case("interpolate", "--mask with values 0.5 and 2", "refuse")(
        lambda w, A: interp(w, A, "--mask", mask(w, np.where(np.eye(8) > 0, 2.0, 0.5).astype(np.float32))))
    case("interpolate", "--mask with NaN", "refuse")(lambda w, A: interp(w, A, "--mask", mask(w, np.full((8, 8), np.nan, np.float32))))
    case("interpolate", "--mask is a 3D array", "refuse")(lambda w, A: interp(w, A, "--mask", mask(w, np.ones((8, 8, 16), bool))))
    heavy("interpolate", "int16 .npy survey", "ok", ok_interp)(lambda w, A: interp(w, A, inp=npy(w / "i16.npy", (cube() * 1000).astype(np.int16))))
    case("interpolate", "4D .npy survey", "refuse")(lambda w, A: interp(w, A, inp=npy(w / "4d.npy", cube((2, 8, 8, 16)))))
    case("interpolate", "boolean .npy survey", "refuse")(lambda w, A: interp(w, A, inp=npy(w / "b.npy", cube() > 0)))
    heavy("interpolate", "survey with amplitudes of 1e37", "either", ok_interp)(lambda w, A: interp(w, A, inp=npy(w / "loud.npy", cube() * 1e37)))
    heavy("interpolate", "an all-zero survey", "either", ok_interp)(lambda w, A: interp(w, A, inp=npy(w / "z.npy", np.zeros((8, 8, 16), np.float32))))
    heavy("interpolate", "a survey 2x2x4 (smaller than the 8x8x16 patch)", "either", ok_interp)(
        lambda w, A: interp(w, A, inp=npy(w / "small.npy", cube((2, 2, 4)))))
    case("interpolate", "--output with a .txt suffix", "refuse")(lambda w, A: interp(w, A, out=w / "out.txt"))
    case("interpolate", "--output is a symlink to the input survey", "refuse")(
        lambda w, A: interp(w, A, inp=copy(A["seis_raw"] / "cube_001.segy", w / "in.segy"),
                            out=(os.symlink(w / "in.segy", w / "out.segy"), w / "out.segy")[1]))
    case("interpolate", "--output is a hard link to the input survey", "refuse")(
        lambda w, A: interp(w, A, inp=copy(A["seis_raw"] / "cube_001.segy", w / "in.segy"),
                            out=(os.link(w / "in.segy", w / "out.segy"), w / "out.segy")[1]))
    case("interpolate", "--report on a full disk (/dev/full/r.json)", "refuse")(lambda w, A: interp(w, A, "--report", "/dev/full/r.json"))
    case("interpolate", "--report is the input survey", "refuse")(
        lambda w, A: interp(w, A, "--report", copy(A["seis_raw"] / "cube_001.segy", w / "in.segy"), inp=w / "in.segy"))
    case("interpolate", "--dead-tolerance -1", "refuse")(lambda w, A: interp(w, A, "--dead-tolerance", -1))
    case("interpolate", "--dead-tolerance nan", "refuse")(lambda w, A: interp(w, A, "--dead-tolerance", "nan"))
    case("interpolate", "--jumps -1", "refuse")(lambda w, A: interp(w, A, "--jumps", -1))
    case("interpolate", "--jumps 100000 (absurd work)", "refuse", timeout=60)(lambda w, A: interp(w, A, "--jumps", 100000))
    case("interpolate", "--batch-size 0", "refuse")(lambda w, A: interp(w, A, "--batch-size", 0))
    case("interpolate", "--iline-byte and --xline-byte the same byte", "refuse")(lambda w, A: interp(w, A, "--iline-byte", 189, "--xline-byte", 189))
    case("interpolate", "--steps 0", "refuse")(lambda w, A: interp(w, A, "--steps", 0))
    case("interpolate", "a SEG-Y survey with one trace", "refuse")(lambda w, A: interp(w, A, inp=segy(w / "one.segy", cube((1, 1, 16)))))
    heavy("interpolate", "a SEG-Y with sample interval 0 in its binary header", "either", ok_interp)(
        lambda w, A: interp(w, A, inp=_segy_patch(segy(w / "dt0.segy", cube()), 3216, ">h", 0)))
    case("interpolate", "config seismic.inference overlap 1.5", "refuse")(
        lambda w, A: interp(w, A, "--config", cfg_with(A, w, "seismic: {inference: {overlap: 1.5}}\n")))
    case("interpolate", "--checkpoint is the synthesis model", "refuse")(lambda w, A: interp(w, A, ck=A["syn_ck"]))
    heavy("interpolate", "checkpoint whose weights are all NaN", "refuse")(
        lambda w, A: interp(w, A, ck=ckpt(A, w, "seis_ck", weights=lambda k, v: np.full_like(v, np.nan) if v.dtype.kind == "f" else v)))
    case("interpolate", "--mask is a symlink to /dev/zero", "refuse", timeout=40)(
        lambda w, A: interp(w, A, "--mask", (os.symlink("/dev/zero", w / "m.npy"), w / "m.npy")[1]))

    # ---------------------------------------------------------------- split-survey
    def split(w, A, *extra, survey=None):
        return ["split-survey", survey or A["seis_raw"] / "cube_000.segy", "--out", w / "split", *extra]
    case("split-survey", "--gap -1", "refuse")(lambda w, A: split(w, A, "--gap", -1))
    case("split-survey", "--gap 1000 (larger than the survey)", "refuse")(lambda w, A: split(w, A, "--gap", 1000))
    case("split-survey", "--heldout 0.99 on 8 lines (no training lines left)", "refuse")(lambda w, A: split(w, A, "--heldout", 0.99))
    case("split-survey", "--heldout 0.01 on 8 lines (no held-out line)", "refuse")(lambda w, A: split(w, A, "--heldout", 0.01))
    case("split-survey", "--axis time", "refuse")(lambda w, A: split(w, A, "--axis", "time"))
    case("split-survey", "a .npy cube instead of SEG-Y", "either", exists("split/*"))(lambda w, A: split(w, A, survey=npy(w / "c.npy", cube())))
    case("split-survey", "a SEG-Y with a single inline", "refuse")(lambda w, A: split(w, A, survey=segy(w / "one.segy", cube((1, 8, 16)))))
    case("split-survey", "--out on a full disk (/dev/full/x)", "refuse")(lambda w, A: ["split-survey", A["seis_raw"] / "cube_000.segy", "--out", "/dev/full/x"])
    case("split-survey", "--config with seismic.data.heldout as a string", "refuse")(
        lambda w, A: split(w, A, "--config", cfg_with(A, w, "seismic: {data: {heldout: 'one'}}\n")))

    # ---------------------------------------------------------------- summarize
    case("summarize", "an empty folder", "refuse")(lambda w, A: ["summarize", (w / "e").mkdir() or w / "e", "--out", w / "s.json"])
    case("summarize", "a folder of random-byte .npz files", "refuse")(
        lambda w, A: ["summarize", text(w / "p" / "a.npz", os.urandom(100)).parent, "--out", w / "s.json"])
    case("summarize", "a folder of rotation .npz (wrong kind)", "refuse")(lambda w, A: ["summarize", A["rot_prep"], "--out", w / "s.json"])
    case("summarize", "preprocessed cases with their .json sidecars removed", "either", exists("s.json"))(
        lambda w, A: ["summarize", _rm(copy(A["syn_prep"], w / "p"), "*.json"), "--out", w / "s.json"])
    case("summarize", "--out is a symlink to /dev/full (disk full)", "refuse")(
        lambda w, A: ["summarize", A["syn_prep"], "--out", full(w / "s.json")])
    # the workflow itself writes preprocessed/summary.json: a .json beside the cases is never read back as one
    case("summarize", "--out inside the preprocessed folder", "ok")(
        lambda w, A: ["summarize", copy(A["syn_prep"], w / "p"), "--out", w / "p" / "s.json"])

    # ---------------------------------------------------------------- synthesize / submit
    def synth(w, A, *extra, inp=None, verb="synthesize", ck=None):
        return [verb, "--checkpoint", ck or A["syn_ck"], "--input", inp or A["syn_input"], "--output", w / "out",
                "--no-progress", *extra]
    ok_synth = finite_files("out/**/*SYNTHETIC.nii.gz")
    case("synthesize", "an empty input folder", "refuse")(lambda w, A: synth(w, A, inp=(w / "e").mkdir() or w / "e"))
    heavy("synthesize", "a case with all four contrasts (nothing to synthesise)", "either",
          recorded("out/summary.csv", "nothing", "no missing", "complete", "skip", printed=False))(
        lambda w, A: synth(w, A, inp=case_dir(A, w, drop=())))
    case("synthesize", "a case missing two contrasts", "refuse")(lambda w, A: synth(w, A, inp=case_dir(A, w, drop=("t2f", "t1c"))))
    heavy("synthesize", "two case folders whose files have the same case id (output names collide)", "either",
          finite_files("out/**/*SYNTHETIC.nii.gz", 2))(
        lambda w, A: synth(w, A, inp=(case_dir(A, w, "in"), shutil.copytree(w / "in" / SYN[2], w / "in" / "copy"))[0]))
    heavy("synthesize", "a case folder with a unicode name (Patiënt_脑)", "ok", ok_synth)(
        lambda w, A: synth(w, A, inp=case_dir(A, w, rename="Patiënt_脑")))
    heavy("synthesize", "a case folder name with a newline", "either", ok_synth)(
        lambda w, A: synth(w, A, inp=case_dir(A, w, rename="two\nlines")))
    case("synthesize", "--pattern t1n='*' (matches every file)", "refuse")(lambda w, A: synth(w, A, "--pattern", "t1n=*", inp=case_dir(A, w)))
    case("synthesize", "--pattern with regex syntax (t1n=.*t1n\\.nii\\.gz$)", "refuse")(
        lambda w, A: synth(w, A, "--pattern", r"t1n=.*t1n\.nii\.gz$", inp=case_dir(A, w)))
    case("synthesize", "--case names a case that is not there", "refuse")(lambda w, A: synth(w, A, "--case", "ghost"))
    case("synthesize", "a contrast with NaN in its affine", "refuse")(
        lambda w, A: synth(w, A, inp=case_dir(A, w, edit={"t1c": lambda p: patch_nii(p, NAN_AFFINE)})))
    heavy("synthesize", "a contrast stored as int8 with wrap-around", "either", ok_synth)(
        lambda w, A: synth(w, A, inp=case_dir(A, w, edit={"t2w": edit_nii(lambda d, a: (d.astype(np.int8), a))})))
    heavy("synthesize", "t2w with its axes transposed, affine permuted to the same world grid", "either", ok_synth)(
        lambda w, A: synth(w, A, inp=case_dir(A, w, edit={"t2w": edit_nii(lambda d, a: (np.ascontiguousarray(d.transpose(2, 1, 0)), a[:, [2, 1, 0, 3]]))})))
    heavy("synthesize", "t1c on a grid 1 voxel shifted (half the brain overlaps)", "either",
          both(ok_synth, recorded("out/**/*", "warning", "overlap", "shift")))(
        lambda w, A: synth(w, A, inp=case_dir(A, w, edit={"t1c": edit_nii(lambda d, a: (d, a @ _tr(8, 0, 0)))})))
    case("synthesize", "--output in an uncreatable place (/proc)", "refuse")(
        lambda w, A: [*synth(w, A)[:5], "--output", BAD_DIR, "--no-progress"])
    case("synthesize", "--dicom-mapping does not exist", "refuse")(lambda w, A: synth(w, A, "--dicom-mapping", w / "none.yaml"))
    case("synthesize", "--dicom-mapping is a YAML list", "refuse")(lambda w, A: synth(w, A, "--dicom-mapping", text(w / "m.yaml", "- a\n- b\n")))
    case("synthesize", "--config with synthesis.sample.steps 0", "refuse")(
        lambda w, A: synth(w, A, "--config", cfg_with(A, w, "synthesis: {sample: {steps: 0}}\n")))
    heavy("synthesize", "--record-refusals with a refused case", "ok", recorded("out/**/*", "refused", printed=False))(
        lambda w, A: synth(w, A, "--record-refusals", inp=case_dir(A, w, drop=("t2f", "t1c"))))
    case("synthesize", "--report-only on an output folder that does not exist yet", "either", exists("out/report.html"))(
        lambda w, A: synth(w, A, "--report-only"))
    case("synthesize", "--checkpoint holds config.json as a JSON string", "refuse")(
        lambda w, A: synth(w, A, ck=ckpt(A, w, config=lambda d: '"hello"')))
    case("submit", "an empty input folder", "refuse")(lambda w, A: synth(w, A, verb="submit", inp=(w / "e").mkdir() or w / "e"))
    case("submit", "a case missing nothing", "refuse")(lambda w, A: synth(w, A, verb="submit", inp=case_dir(A, w, drop=())))
    case("submit", "a case missing two contrasts", "refuse")(lambda w, A: synth(w, A, verb="submit", inp=case_dir(A, w, drop=("t1n", "t2f"))))
    heavy("submit", "two case folders whose files carry the same case id", "either", finite_files("out/*.nii.gz", 2))(
        lambda w, A: synth(w, A, verb="submit", inp=(case_dir(A, w, "in"), shutil.copytree(w / "in" / SYN[2], w / "in" / "copy"))[0]))
    case("submit", "--output holds a user's file", "refuse")(
        lambda w, A: [*synth(w, A, verb="submit")[:5], text(w / "out" / "notes.txt", "mine").parent, "--no-progress"])
    case("submit", "--checkpoint is the rotation model", "refuse")(lambda w, A: synth(w, A, verb="submit", ck=A["rot_ck"]))

    # ---------------------------------------------------------------- verify-submission
    def vs(w, A, edit=None, extra=()):
        sub = copy(A["syn_sub"], w / "sub")
        if edit:
            edit(sub)
        return ["verify-submission", sub, *extra]
    one = lambda sub: next(sub.glob("*.nii.gz"))  # noqa: E731
    case("verify-submission", "the good submission (control)", "ok", stdout_has("OK"))(lambda w, A: vs(w, A, extra=("--input", A["syn_input"])))
    case("verify-submission", "an empty folder", "refuse")(lambda w, A: ["verify-submission", (w / "e").mkdir() or w / "e"])
    case("verify-submission", "OUT is a file", "refuse")(lambda w, A: ["verify-submission", A["config"]])
    case("verify-submission", "an extra README.txt", "refuse")(lambda w, A: vs(w, A, lambda s: text(s / "README.txt", "hi")))
    case("verify-submission", "the volume replaced by NaN", "refuse")(
        lambda w, A: vs(w, A, lambda s: edit_nii(lambda d, a: (np.full(d.shape, np.nan, np.float32), a))(one(s))))
    case("verify-submission", "the volume replaced by zeros", "refuse")(
        lambda w, A: vs(w, A, lambda s: edit_nii(lambda d, a: (np.zeros(d.shape, np.float32), a))(one(s))))
    case("verify-submission", "the volume stored as int16", "refuse")(
        lambda w, A: vs(w, A, lambda s: edit_nii(lambda d, a: (d.astype(np.int16), a))(one(s))))
    case("verify-submission", "the volume renamed to a wrong pattern", "refuse")(lambda w, A: vs(w, A, lambda s: one(s).rename(s / "case.nii.gz")))
    case("verify-submission", "manifest.json is not JSON", "refuse")(lambda w, A: vs(w, A, lambda s: text(s / "manifest.json", "{oops")))
    case("verify-submission", "manifest.json is a JSON list", "refuse")(lambda w, A: vs(w, A, lambda s: text(s / "manifest.json", "[]")))
    case("verify-submission", "manifest.json with a wrong hash", "refuse")(lambda w, A: vs(w, A, _bad_hash))
    case("verify-submission", "a sub-folder inside the submission", "refuse")(lambda w, A: vs(w, A, lambda s: (s / "extra").mkdir()))
    case("verify-submission", "the volume is a symlink to a file outside", "refuse")(
        lambda w, A: vs(w, A, lambda s: (shutil.move(one(s), w / "outside.nii.gz"), os.symlink(w / "outside.nii.gz", s / _name(A)))))
    case("verify-submission", "the volume is 4D (x,y,z,1)", "refuse")(
        lambda w, A: vs(w, A, lambda s: edit_nii(lambda d, a: (d[..., None], a))(one(s))))
    case("verify-submission", "--input case on another grid than the submitted volume", "refuse")(
        lambda w, A: vs(w, A, extra=("--input", case_dir(A, w, "in", edit={m: edit_nii(lambda d, a: (d, a @ _tr(3, 0, 0))) for m in ("t1n", "t1c", "t2w")}))))
    case("verify-submission", "manifest.json of 20 MB", "refuse", timeout=90)(
        lambda w, A: vs(w, A, lambda s: text(s / "manifest.json", '{"files": {' + ",".join(f'"f{i}": "{i:064d}"' for i in range(250000)) + "}}")))

    # ---------------------------------------------------------------- export
    def export(w, A, *extra, run=None, out=None):
        return ["export", run or copy(A["syn_ck"], w / "run"), out or w / "exp", *extra]
    no_escape = lambda w, res: None if set(p.name for p in w.iterdir()) <= {"run", "exp"} else \
        f"files written outside OUT: {sorted(set(p.name for p in w.iterdir()) - {'run', 'exp'})}"  # noqa: E731
    case("export", "RUN is not a checkpoint folder", "refuse")(lambda w, A: export(w, A, run=(w / "run").mkdir() or w / "run"))
    case("export", "RUN is the seismic checkpoint", "refuse")(lambda w, A: export(w, A, run=copy(A["seis_ck"], w / "run")))
    case("export", "RUN whose EMA weights are NaN", "refuse")(
        lambda w, A: export(w, A, run=ckpt(A, w, weights=lambda k, v: np.full_like(v, np.nan) if v.dtype.kind == "f" else v, name="run")))
    case("export", "--name ../../evil (path characters)", "either", both(exists("exp/MODEL_CARD.md"), no_escape))(
        lambda w, A: export(w, A, "--name", "../../evil"))
    case("export", "--name with a newline and markdown (# Injected)", "either",
         lambda w, res: "injected heading in MODEL_CARD.md" if re.search(r"^# Injected", (w / "exp" / "MODEL_CARD.md").read_text(), re.M) else None)(
        lambda w, A: export(w, A, "--name", "x\n# Injected\n<script>alert(1)</script>"))
    case("export", "--name of 100000 characters", "refuse")(lambda w, A: export(w, A, "--name", "n" * 100000))
    case("export", "--evaluation is not JSON", "refuse")(lambda w, A: export(w, A, "--evaluation", text(w / "e.json", "{nope")))
    case("export", "--evaluation is a JSON list", "refuse")(lambda w, A: export(w, A, "--evaluation", text(w / "e.json", "[1]")))
    case("export", "--evaluation with NaN scores", "either", recorded("exp/*", "nan", "not a number", "missing", printed=False))(
        lambda w, A: export(w, A, "--evaluation", text(w / "e.json", '{"ssim": NaN, "psnr": Infinity}')))
    case("export", "OUT exists and is not empty, no --force", "refuse")(
        lambda w, A: export(w, A, out=text(w / "exp" / "mine.txt", "keep").parent))
    case("export", "--force with OUT the folder that holds RUN (would delete RUN)", "refuse",
         lambda w, res: None if (w / "run" / "config.json").exists() else "RUN was deleted")(
        lambda w, A: export(w, A, "--force", out=w))
    case("export", "OUT on a full disk (/dev/full/x)", "refuse")(lambda w, A: export(w, A, out="/dev/full/x"))

    # ---------------------------------------------------------------- bench
    case("bench", "--items nothing-like-this", "refuse")(lambda w, A: ["bench", "--items", "nothing-like-this"])
    case("bench", "--items with no value", "refuse")(lambda w, A: ["bench", "--items"])
    case("bench", "--device banana", "refuse")(lambda w, A: ["bench", "--device", "banana", "--list"])
    case("bench", "--out is a symlink to /dev/full", "refuse")(
        lambda w, A: ["bench", "--items", "nothing-like-this", "--out", full(w / "b.json")])
    case("bench", "--list", "ok", lambda w, res: None if res.stdout.strip() else "empty list")(lambda w, A: ["bench", "--list"])


# ---- small builders used above
def _mha(path: Path, arr, spacing: str = "1 1 1", matrix: str = "1 0 0 0 1 0 0 0 1") -> Path:
    hdr = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nTransformMatrix = {matrix}\n"
           f"Offset = 0 0 0\nElementSpacing = {spacing}\nDimSize = {' '.join(map(str, arr.shape[::-1]))}\n"
           "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hdr.encode() + np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return path


def _nrrd(path: Path, directions: str) -> Path:
    arr = ramp((4, 4, 4))
    hdr = (f"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 4 4\n"
           f"space directions: {directions}\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path.write_bytes(hdr.encode() + arr.astype("<f4").tobytes())
    return path


def full(path: Path) -> Path:
    """A symlink to /dev/full: writes fail with ENOSPC. Never /dev/full itself: an atomic write run as root
    renames its temporary file over the device node (summarize did, on 2026-12-07)."""
    os.symlink("/dev/full", path)
    return path


def _tr(x, y, z) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def _set(dotted: str, value):
    """A config.json editor: set the first nested key path ``a.b`` found anywhere under the document."""
    keys = dotted.split(".")

    def walk(d):
        if isinstance(d, dict):
            node = d
            for k in keys[:-1]:
                node = node.get(k) if isinstance(node, dict) else None
            if isinstance(node, dict) and keys[-1] in node:
                node[keys[-1]] = value
                return True
            return any(walk(v) for v in d.values())
        return False

    def edit(d):
        if not walk(d):
            raise SystemExit(f"battery: config.json has no {dotted}")
        return None
    return edit


def _crlf(subject: Path, extra_col: bool = False) -> Path:
    tsv = subject / "sessions.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    if extra_col:
        lines = [ln + ("\tscanner" if i == 0 else "\tSiemens Prisma") for i, ln in enumerate(lines)]
    tsv.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return subject


def _sessions(subject: Path, times: dict) -> Path:
    """Set the time_days of rows (0 = first data row)."""
    tsv = subject / "sessions.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    col = head.index("time_days")
    for i, t in times.items():
        cells = lines[i + 1].split("\t")
        cells[col] = str(t)
        lines[i + 1] = "\t".join(cells)
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return subject


def _session_vol(subject: Path, fn, every: bool = False) -> Path:
    vols = sorted(subject.glob("ses-*.nii.gz"))
    for v in (vols if every else vols[-1:]):
        edit_nii(fn)(v)
    return subject


def _nan_affine_session(subject: Path) -> Path:
    patch_nii(sorted(subject.glob("ses-*.nii.gz"))[-1], NAN_AFFINE)
    return subject


def _nan_session(subject: Path) -> Path:
    return _session_vol(subject, lambda d, a: (np.where(d > d.mean(), np.nan, d).astype(np.float32), a))


def _prep_copy(A, w: Path, fn) -> Path:
    dst = copy(A["syn_prep"], w / "prep")
    fn(dst / f"{SYN[0]}.npz")
    return dst


def _npz_edit(key, fn):
    def run(path: Path):
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays[key] = fn(arrays[key])
        with open(path, "wb") as f:  # np.savez would add a second .npz suffix to a str path
            np.savez(f, **arrays)
    return run


def _nan_samples(folder: Path) -> Path:
    # evaluate scores the .npz samples (the .nii.gz beside them are copies for viewing): poison what it reads
    for p in folder.rglob("*.npz"):
        _npz_edit(next(iter(np.load(p).files)), lambda x: np.full(x.shape, np.nan, np.float32))(p)
        break
    return folder


def _rm(folder: Path, pattern: str) -> Path:
    for p in folder.glob(pattern):
        p.unlink()
    return folder


def _segy_patch(path: Path, offset: int, fmt: str, value) -> Path:
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    path.write_bytes(bytes(raw))
    return path


def _bad_hash(sub: Path) -> None:
    """The recorded SHA-256 of the submitted volume (not of an input or the checkpoint) made wrong."""
    path = sub / "manifest.json"
    data = json.loads(path.read_text())
    for entry in data["outputs"].values():
        entry["sha256"] = "0" * 64
    path.write_text(json.dumps(data))


def _name(A) -> str:
    return next(A["syn_sub"].glob("*.nii.gz")).name


# Cases that each load torch and a model or data set (20-60 s apiece on a busy 2-core machine) beyond a sample of
# every kind: run with --extended. The default set finishes in about 15 minutes there, 2 at a time.
EXTENDED = set("""
prep30 prep32 prep33 prep35 prep36 prep37
trai01 trai02 trai03 trai04 trai05 trai08 trai21 trai22 trai26 trai27 trai28 trai29 trai30 trai32 trai34 trai35 trai36 trai38 trai39
samp06 samp07 samp10 samp11 samp12 samp15 samp16 samp23 samp24 samp25 samp26 samp27 samp28
eval02 eval04 eval06 eval07 eval08 eval09 eval10
fore01 fore04 fore08 fore09 fore10 fore11 fore13 fore14 fore18
rota05 rota07 rota08 rota10 rota11 rota12 rota17
drr01 drr02 drr03 drr04 drr12 drr13
inte02 inte05 inte06 inte07 inte08 inte09 inte11 inte12 inte25 inte26 inte27 inte28
synt01 synt02 synt03 synt05 synt06 synt07 synt08 synt09 synt11 synt12 synt15 synt16 synt17 synt19 synt20
subm01 subm02 subm03 subm06
""".split())


# ------------------------------------------------------------------------------------------ running
@dataclass
class Result:
    id: str
    verb: str
    desc: str
    expect: str
    argv: list
    outcome: str
    rc: int | None
    seconds: float
    first_stderr: str
    problem: str = ""
    stdout: str = ""
    stderr: str = ""


def _snapshot(w: Path) -> dict[str, str]:
    out = {}
    for p in w.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_size < 50_000_000:
                out[str(p.relative_to(w))] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            pass
    return out


def run_case(c: Case, A: dict, work: Path, cache: Path) -> Result:
    w = work / c.id
    w.mkdir(parents=True)
    try:
        argv = [a if isinstance(a, (str, bytes)) else os.fsencode(a) if isinstance(a, Path) else str(a) for a in c.build(w, A)]
    except BaseException as err:  # the battery's own bug: report it, never hide it
        return Result(c.id, c.verb, c.desc, c.expect, [], "BUILD-ERROR", None, 0, f"{type(err).__name__}: {err}")
    before = _snapshot(w)
    env = _env()
    env.update(c.env)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "medsci", *argv], cwd=w, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: os.nice(10))
    try:
        out, err = proc.communicate(timeout=c.timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    secs = time.time() - t0
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    (w.parent / f"{c.id}.log").write_text(f"$ {' '.join(map(os.fsdecode, argv))}\nexit {rc}\n--- stdout\n{stdout}"
                                          f"\n--- stderr\n{stderr}", encoding="utf-8", errors="replace")
    said = stderr if stderr.strip() else stdout  # some batch verbs print their refusals on stdout
    first = next((ln for ln in said.splitlines() if ln.strip() and "warning" not in ln.lower()[:60]),
                 next((ln for ln in said.splitlines() if ln.strip()), ""))
    tb = next((ln for ln in reversed(stderr.splitlines()) if ln and not ln.startswith(" ")), "")
    problem = ""
    if rc is None:
        outcome, problem = "HANG", f"still running after {c.timeout:.0f} s"
    elif TRACEBACK in stderr or TRACEBACK in stdout:
        outcome, first = "TRACEBACK", tb
    elif rc == 0:
        if c.expect == "refuse":
            outcome, problem = "SILENT", "exit 0, a refusal was expected"
        else:
            problem = (c.check(w, SimpleResult(rc, stdout, stderr)) if c.check else None) or ""
            outcome = "SILENT" if problem else "handled"
    elif rc in (1, 2) and (ERROR_LINE.search(stderr) or (c.verb == "verify-submission" and (stdout + stderr).strip())):
        outcome = "REFUSED" if c.expect == "ok" else "clean error"
    else:
        outcome, problem = "MESSY", f"exit {rc} without a one-line error message"
    if outcome in ("handled", "clean error", "REFUSED"):
        after = _snapshot(w)
        changed = [k for k, v in before.items() if after.get(k) != v and not k.startswith(c.mutable or ("\0",))]
        if changed:
            outcome, problem = "SILENT", f"input changed: {changed[0]}"
    return Result(c.id, c.verb, c.desc, c.expect, [os.fsdecode(a) for a in argv], outcome, rc, round(secs, 1),
                  first[:300], problem, stdout[-2000:], stderr[-4000:])


@dataclass
class SimpleResult:
    returncode: int
    stdout: str
    stderr: str


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def report(results: list[Result], cache: Path, work: Path, meta: dict) -> str:
    verbs = sorted({r.verb for r in results}, key=lambda v: [c.verb for c in CASES].index(v))
    lines = [f"Run: {meta['date']} on {meta['machine']}; {len(results)} cases, {meta['jobs']} at a time, "
             f"{meta['wall']:.0f} s wall.", ""]
    totals = {o: sum(r.outcome == o for r in results) for o in (*OUTCOMES, "BUILD-ERROR")}
    lines.append("**Totals:** " + ", ".join(f"{o}: {n}" for o, n in totals.items() if n or o in FAILURES[:3]))
    lines += ["", "| verb | cases | " + " | ".join(OUTCOMES) + " |", "|---|---:|" + "---:|" * len(OUTCOMES)]
    for v in verbs:
        rs = [r for r in results if r.verb == v]
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(str(sum(r.outcome == o for r in rs) or "") for o in OUTCOMES) + " |")
    lines.append(f"| **all** | {len(results)} | " + " | ".join(str(totals[o]) for o in OUTCOMES) + " |")
    bad = [r for r in results if r.outcome in (*FAILURES, "REFUSED", "BUILD-ERROR")]
    lines += ["", "Failing cases (and REFUSED: a clean refusal of an input that should have been handled):", "",
              "| id | verb | input | expected | outcome | first line of stderr / what the check found |",
              "|---|---|---|---|---|---|"]
    for r in sorted(bad, key=lambda r: (OUTCOMES.index(r.outcome) if r.outcome in OUTCOMES else 99, r.id)):
        detail = r.first_stderr if r.outcome in ("TRACEBACK", "REFUSED") else (r.problem + (f" — {r.first_stderr}" if r.first_stderr else ""))
        lines.append(f"| {r.id} | {r.verb} | {_md_cell(r.desc)} | {r.expect} | **{r.outcome}** | `{_md_cell(detail[:220])}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "medsci-hostile-assets",
                    help="folder of the shared demo data and checkpoints (built once)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the cases (default: a new temp folder)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="only these verbs")
    ap.add_argument("--ids", nargs="*", default=None, help="only these case ids")
    ap.add_argument("--extended", action="store_true",
                    help="also the extended cases (more of the same kinds and slow model runs: ~2x the time)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--build-only", action="store_true", help="only build every case's inputs (checks the battery)")
    ap.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every case's time limit")
    ap.add_argument("--out", type=Path, help="write the markdown table here too")
    ap.add_argument("--json", type=Path, help="write every result as JSON here")
    ap.add_argument("--merge", type=Path, help="a --json file of an earlier run: this run's cases replace theirs "
                                               "in it, and the report covers them all")
    args = ap.parse_args(argv)

    _register_all()
    counters: dict[str, int] = {}
    for c in CASES:
        key = re.sub(r"[^a-z]", "", c.verb)[:4]
        counters[key] = counters.get(key, 0) + 1
        c.id = f"{key}{counters[key]:02d}"
        c.ext = c.id in EXTENDED
    cases = [c for c in CASES if (not args.only or c.verb in args.only) and (not args.ids or c.id in args.ids)
             and (args.extended or args.ids or not c.ext)]
    if args.list:
        for c in cases:
            print(f"{c.id}\t{c.verb}\t{c.expect}\t{c.desc}")
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0
    os.nice(5)
    A = build_assets(args.cache.resolve())
    digest = tree_digest(args.cache)
    work = (args.work or Path(tempfile.mkdtemp(prefix="medsci-hostile-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        bad = 0
        for c in cases:
            try:
                c.build(work / c.id, A) if (work / c.id).mkdir(parents=True) is None else None
            except BaseException as err:  # noqa: B036 - report the battery's own bugs
                bad += 1
                print(f"{c.id} {c.verb}: {c.desc}: {type(err).__name__}: {err}")
        return 1 if bad else 0
    for c in cases:
        c.timeout *= args.timeout_scale
    order = sorted(cases, key=lambda c: (not c.heavy, -c.timeout))
    t0 = time.time()
    results: list[Result] = []
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {pool.submit(run_case, c, A, work, args.cache.resolve()): c for c in order}
        for fut in cf.as_completed(futs):
            try:
                r = fut.result()
            except Exception as err:  # the battery's own bug: keep going, report it
                c = futs[fut]
                r = Result(c.id, c.verb, c.desc, c.expect, [], "BUILD-ERROR", None, 0, f"{type(err).__name__}: {err}")
            results.append(r)
            if args.json:  # after every case, so an interrupted run still leaves its results
                args.json.write_text(json.dumps({"meta": {"wall": time.time() - t0}, "results": [x.__dict__ for x in results]},
                                                indent=1), encoding="utf-8")
            print(f"[{len(results):3d}/{len(cases)}] {r.id:8s} {r.outcome:12s} {r.seconds:5.1f}s  {r.verb}: {r.desc}",
                  file=sys.stderr, flush=True)
    if args.merge:
        earlier = json.loads(args.merge.read_text(encoding="utf-8"))
        done = {r.id for r in results}
        results += [Result(**r) for r in earlier["results"] if r["id"] not in done]
        t0 -= earlier["meta"]["wall"]
    results.sort(key=lambda r: [c.id for c in CASES].index(r.id))
    changed = [k for k, v in tree_digest(args.cache).items() if digest.get(k) != v]
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})",
            "jobs": args.jobs, "wall": time.time() - t0, "work": str(work), "cache": str(args.cache),
            "shared_inputs_changed": changed}
    md = report(results, args.cache, work, meta)
    if changed:
        md += f"\n**Shared inputs changed by the run:** {', '.join(changed[:10])}\n"
    print(md)
    if args.out:
        args.out.write_text(md, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": [r.__dict__ for r in results]}, indent=1), encoding="utf-8")
    return 1 if any(r.outcome in FAILURES for r in results) or changed else 0


if __name__ == "__main__":
    sys.exit(main())
