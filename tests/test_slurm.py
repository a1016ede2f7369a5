"""The tiny workflow on a real one-node SLURM (slurm-wlm + munge, started by tests/slurm/local_slurm.sh) through
Snakemake's SLURM executor plugin gives the same outputs as a local run with the same seeds.

Skipped, with the reason, where it cannot run: not root, no package access, the plugin not installed
(``pip install -e '.[slurm]'``), or the daemons do not come up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "slurm" / "local_slurm.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]' for the SLURM test")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=900)
    if start.returncode == 77:
        pytest.skip(start.stderr.strip().splitlines()[-1])
    assert start.returncode == 0, start.stdout + start.stderr
    conf = next(line.split("=", 1)[1] for line in start.stdout.splitlines() if line.startswith("SLURM_CONF="))
    try:
        yield conf
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=120)


def _snakemake(args, env, cwd):
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return time.monotonic() - started, res


def _content(path: Path):
    """What must be equal between two runs: arrays for NIfTI / npz (their containers carry timestamps, and the
    npz "info" entry timings), bytes for weights, SEG-Y and npy."""
    if path.name.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        img = nib.load(str(path))
        return np.asarray(img.dataobj), img.affine
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:  # "info": a JSON blob with the job's timings
            return {k: z[k] for k in z.files if k != "info"}
    return path.read_bytes()


def _equal(a, b) -> bool:
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a == b


def test_tiny_workflow_on_slurm_equals_a_local_run(slurm, tmp_path):
    env = {**os.environ, "SLURM_CONF": slurm}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # the jobs call `medsci` from this environment
    common = ["--configfile", "configs/test.yaml", "--config"]
    local_s, _ = _snakemake(["--cores", "2", *common, f"results={tmp_path / 'local'}"], env, ROOT)
    # --cores 2: the one node has 2 CPUs; group jobs stack their parallel layers in series to fit it
    slurm_s, res = _snakemake(["--workflow-profile", "configs/profiles/slurm", "--slurm-status-command", "squeue",
                               "--cores", "2", "--jobs", "4", *common, f"results={tmp_path / 'slurm'}",
                               # scattered sampling (one job for all held-out cases) must gather the same files
                               "sample_jobs=1"], env, ROOT)
    assert "sbatch" in (res.stdout + res.stderr).lower() or "slurm" in (res.stdout + res.stderr).lower()
    compared = 0
    for path in sorted((tmp_path / "local").rglob("*")):
        if not path.is_file() or not path.name.endswith((".safetensors", ".nii.gz", ".segy", ".npy", ".npz")):
            continue
        twin = tmp_path / "slurm" / path.relative_to(tmp_path / "local")
        assert twin.is_file(), f"{twin} missing in the SLURM run"
        assert _equal(_content(path), _content(twin)), f"{path.relative_to(tmp_path / 'local')} differs"
        compared += 1
    assert compared >= 30
    assert (tmp_path / "slurm" / "test" / "logs" / "synthesis" / "sample" / "part-1-of-1.log").is_file()
    print(f"local {local_s:.0f} s, slurm {slurm_s:.0f} s ({slurm_s / local_s:.2f}x), {compared} files equal")
