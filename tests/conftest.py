"""Fixtures shared across test modules."""

from __future__ import annotations

import os

# One OpenBLAS thread per test process, set before numpy loads: on a 2-core machine shared with the workflow's
# own jobs, OpenBLAS's spinning threads made a 0.1 s least-squares fit take 20-30 s. torch keeps its own setting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import REPO, run_snakemake, tree_checksums  # noqa: E402


@dataclass(frozen=True)
class TinyRun:
    results: Path   # the --config results= folder; the run itself is results / "test"
    seconds: float  # wall time of `snakemake --cores 2` on the tiny preset
    configs_untouched: bool


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory) -> TinyRun:
    """The tiny preset (configs/test.yaml) run once locally with `snakemake --cores 2`. The end-to-end workflow
    test checks its outputs and the SLURM test compares its own run with it, so the ~2 min run is paid once."""
    results = tmp_path_factory.mktemp("tiny") / "results"
    configs = tree_checksums(REPO / "configs")  # the workflow's only inputs (it makes its own demo data)
    started = time.monotonic()
    res = run_snakemake(["--cores", "2", "--configfile", "configs/test.yaml", "--config", f"results={results}",
                         "--quiet", "rules"])
    seconds = time.monotonic() - started
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return TinyRun(results, seconds, tree_checksums(REPO / "configs") == configs)
