"""Benchmark (not a test): held-out cases per minute on the local one-node SLURM with 1 and with 2 parallel jobs.

    python tests/slurm/throughput.py [--cases 8] [--state /tmp/slurm-bench]      # as root, like tests/test_slurm.py

A tiny synthesis model is trained locally once (configs/test.yaml with more held-out cases); then the sampling
of the held-out cases is submitted through Snakemake's SLURM executor, one case per job, with `--jobs 1` and with
`--jobs 2`, each from a fresh copy of the same trained results. Prints one JSON line: seconds and cases per minute
of each, and their ratio (issue 14 asks for at least 1.8 on two parallel jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "slurm" / "local_slurm.sh"


def _snakemake(args, env):
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    if res.returncode:
        sys.exit(f"snakemake failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return time.monotonic() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=8, help="held-out cases to sample (default 8)")
    p.add_argument("--state", type=Path, default=None, help="folder for the SLURM daemons' state (default: temp)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure each setting this many times, alternating which goes first (warm caches for "
                        "both); the fastest of each counts (default 1)")
    args = p.parse_args(argv)
    if args.cases < 2:
        p.error("--cases must be at least 2")
    work = Path(tempfile.mkdtemp(prefix="medsci-throughput-"))
    state = args.state or work / "slurm"
    state.mkdir(parents=True, exist_ok=True)
    start = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True)
    if start.returncode:
        sys.exit(f"local SLURM did not start: {(start.stderr or start.stdout).strip().splitlines()[-1]}")
    conf = next(line.split("=", 1)[1] for line in start.stdout.splitlines() if line.startswith("SLURM_CONF="))
    env = {**os.environ, "SLURM_CONF": conf,
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    try:
        more_cases = work / "more_cases.yaml"  # merged over test.yaml
        more_cases.write_text(json.dumps({"synthesis": {"data": {"heldout": args.cases,
                                                                 "demo": {"cases": args.cases + 3}}}}))
        config = ["--configfile", "configs/test.yaml", str(more_cases), "--config", "sample_jobs=0"]
        trained = work / "trained"
        run = trained / "test" / "synthesis"
        held = [f"BraTS-DEMO-{i:05d}-000" for i in range(3, args.cases + 3)]  # the last ones are held out
        prepare = [str(run / "model" / "config.json"), *(str(run / "preprocessed" / f"{c}.npz") for c in held)]
        _snakemake(["--cores", "2", *config, f"results={trained}", "--", *prepare], env)
        samples = [str(run / "samples" / c / f"{c}-timing.json") for c in held]
        seconds_by_jobs = {1: [], 2: []}
        for jobs in [j for r in range(max(1, args.rounds)) for j in ((1, 2) if r % 2 == 0 else (2, 1))]:
            copy = work / f"jobs{jobs}-{len(seconds_by_jobs[jobs])}"
            shutil.copytree(trained, copy, symlinks=True)  # keeps mtimes: only the sampling is left to do
            targets = [s.replace(str(trained), str(copy)) for s in samples]
            seconds = _snakemake(["--workflow-profile", "configs/profiles/slurm", "--slurm-status-command", "squeue",
                                  "--cores", "2", "--jobs", str(jobs), *config, f"results={copy}", "--", *targets],
                                 env)
            seconds_by_jobs[jobs].append(round(seconds, 1))
        figures = {jobs: {"seconds": min(runs), "cases_per_minute": round(60 * args.cases / min(runs), 2),
                          "all_seconds": runs} for jobs, runs in seconds_by_jobs.items()}
        ratio = figures[2]["cases_per_minute"] / figures[1]["cases_per_minute"]
        print(json.dumps({"cases": args.cases, "one_job": figures[1], "two_jobs": figures[2],
                          "ratio": round(ratio, 2), "target": 1.8}))
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, text=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
