"""``medsci bench --items load``: does memory stay flat over a long batch?

A tiny synthesis model (configs/test.yaml, a few training steps) and a folder of ``cases`` small demo cases (ten
distinct ones, copied under new names), each missing t2f. The batch goes through ``medsci synthesize`` (one
long-lived process) and, with ``workflow``, through the Snakemake workflow's batch rules (the long-lived process is
snakemake; every case is its own job). The resident set size of the long-lived process is sampled every
``interval`` s from /proc and reported after 10 %, 50 % and 100 % of the cases; ``growth_mb`` is the RSS at the end
minus the RSS after 10 %. Linux only (/proc).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
DISTINCT_CASES = 10
# Growth over the run (after the first 10 % of the cases) below which memory counts as flat: allocator noise
# and lazily imported modules, not a leak (a leak of one 32^3 float volume per case is 0.13 MB x cases).
FLAT_MB = 30.0


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _watch(proc: subprocess.Popen, done, interval: float) -> list[tuple[float, int, int]]:
    """(seconds, cases done, RSS kB) of ``proc`` every ``interval`` s until it ends."""
    samples = []
    started = time.monotonic()
    while proc.poll() is None:
        rss = _rss_kb(proc.pid)
        if rss is not None:
            samples.append((time.monotonic() - started, done(), rss))
        time.sleep(interval)
    return samples


def _at_fractions(samples, cases: int) -> dict[str, float]:
    """Highest RSS (MB) seen up to the moment each mark of finished cases was reached."""
    out = {}
    for mark in sorted({max(1, round(cases * f)) for f in (0.1, 0.5, 1.0)}):
        upto = [rss for _, done, rss in samples if done <= mark]
        if upto:
            out[str(mark)] = round(max(upto) / 1024, 1)
    return out


def _summary(samples, cases: int, seconds: float, returncode: int) -> dict:
    at = _at_fractions(samples, cases)
    marks = list(at.values())
    growth = round(marks[-1] - marks[0], 1) if len(marks) > 1 else 0.0
    return {"returncode": returncode, "seconds": round(seconds, 1), "cases": cases,
            "rss_mb_after_cases": at, "peak_rss_mb": round(max((s[2] for s in samples), default=0) / 1024, 1),
            "samples": len(samples), "growth_mb": growth, "flat": growth < FLAT_MB}


def _prepare(root: Path, cases: int, log, checkpoint: str | None = None) -> tuple[Path, Path]:
    """A tiny trained model (or ``checkpoint``) and a folder of ``cases`` cases without t2f."""
    from medsci.cli import main
    from medsci.tasks.synthesis.demo import write_brats_dataset

    raw = root / "raw"
    write_brats_dataset(raw, cases=min(cases, DISTINCT_CASES), seed=3, shape=(36, 40, 30))
    ids = sorted(p.name for p in raw.iterdir() if p.is_dir())
    batch = _copies(raw, ids, root / "batch", cases)
    log(f"load: {cases} cases in {batch}")
    if checkpoint is not None:
        return Path(checkpoint), batch
    config = REPO / "configs" / "test.yaml"
    prep = root / "prep"
    for case in ids[:3]:
        if main(["preprocess", "synthesis", "--case-dir", str(raw / case), "--out", str(prep), "--config",
                 str(config)]) != 0:
            raise RuntimeError(f"preprocessing {case} failed")
    model = root / "model"
    if main(["train", "synthesis", "--config", str(config), "--data", str(prep), "--cases",
             *sorted(p.stem for p in prep.glob("*.npz")), "--out", str(model), "--no-progress"]) != 0:
        raise RuntimeError("training the tiny model failed")
    return model, batch


def _copies(raw: Path, ids: list[str], batch: Path, cases: int) -> Path:
    for k in range(cases):
        source = ids[k % len(ids)]
        dest = batch / f"case{k:04d}"
        dest.mkdir(parents=True)
        for mod in ("t1n", "t1c", "t2w"):
            shutil.copy(raw / source / f"{source}-{mod}.nii.gz", dest / f"case{k:04d}-{mod}.nii.gz")
    return batch


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _run_synthesize(model: Path, batch: Path, out: Path, cases: int, interval: float) -> dict:
    cmd = [sys.executable, "-m", "medsci", "synthesize", "--checkpoint", str(model), "--input", str(batch),
           "--output", str(out), "--no-progress", "--no-qc"]
    finished = {"n": 0}
    started = time.monotonic()
    with open(out.parent / "synthesize.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env())

        def count():
            for line in proc.stdout:
                if ": t2f " in line:
                    finished["n"] += 1

        reader = threading.Thread(target=count, daemon=True)
        reader.start()
        samples = _watch(proc, lambda: finished["n"], interval)
        reader.join()
    return _summary(samples, cases, time.monotonic() - started, proc.returncode)


def _run_workflow(model: Path, batch: Path, out: Path, root: Path, cases: int, interval: float, cores: int) -> dict:
    from medsci import registry

    extra = root / "load.yaml"
    others = {name: {"enabled": False} for name in registry.tasks() if name != "synthesis"}  # the batch rules only
    extra.write_text(yaml.safe_dump({
        "synthesis": {"batch": {"input": str(batch), "checkpoint": str(model), "output": str(out)}}, **others}),
        encoding="utf-8")
    cmd = [sys.executable, "-m", "snakemake", str(out / "summary.csv"), "-s", str(REPO / "Snakefile"),
           "-d", str(root / "work"), "--cores", str(cores), "--quiet", "rules", "--configfile",
           str(REPO / "configs" / "test.yaml"), str(extra), "--config", f"results={root / 'results'}"]
    started = time.monotonic()
    with open(root / "workflow.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
        samples = _watch(proc, lambda: sum(1 for _ in out.glob("*/*.json")), interval)
    return _summary(samples, cases, time.monotonic() - started, proc.returncode)


def bench_load_item(device=None, cases: int = 200, workflow: bool = True, interval: float = 0.5,
                    cores: int = 2, workdir: str | None = None, checkpoint: str | None = None, log=print) -> dict:
    """RSS of the long-lived process over a batch of ``cases`` (see the module docstring); ``checkpoint``: a
    synthesis model to use instead of training the tiny one."""
    root = Path(tempfile.mkdtemp(prefix="medsci-load-", dir=workdir))
    try:
        model, batch = _prepare(root, cases, log, checkpoint)
        result = {"cases": cases, "flat_threshold_mb": FLAT_MB,
                  "synthesize": _run_synthesize(model, batch, root / "out-synthesize", cases, interval)}
        log(f"load: synthesize {result['synthesize']}")
        if workflow:
            result["workflow"] = _run_workflow(model, batch, root / "out-workflow", root, cases, interval, cores)
            log(f"load: workflow {result['workflow']}")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
