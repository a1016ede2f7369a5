"""The tiny workflow on a real one-node SLURM (slurm-wlm + munge, started by tests/slurm/local_slurm.sh) through
Snakemake's SLURM executor plugin gives the same outputs as a local run with the same seeds.

Skipped, with the reason, where it cannot run: not root, no package access, the plugin not installed
(``pip install -e '.[slurm]'``), or the daemons do not come up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "slurm" / "local_slurm.sh"
# Snakemake through the shipped SLURM profile on the test cluster: no accounting database (squeue for status);
# --cores 2: the one node has 2 CPUs, so group jobs stack their parallel layers in series to fit it.
PROFILE = ["--workflow-profile", "configs/profiles/slurm", "--slurm-status-command", "squeue", "--cores", "2",
           "--jobs", "4"]


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


def _slurm_env(slurm):
    """The test cluster's config, and this environment's bin first: the jobs call `medsci` from it."""
    return {**os.environ, "SLURM_CONF": slurm,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


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
        # equal_nan only for numbers: an npz also holds strings (e.g. the uncertainty method)
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return a == b


def test_tiny_workflow_on_slurm_equals_a_local_run(slurm, tiny_workflow, tmp_path):
    env = _slurm_env(slurm)
    common = ["--configfile", "configs/test.yaml", "--config"]
    local, local_s = tiny_workflow.results, tiny_workflow.seconds  # the same preset and seeds, run locally
    slurm_s, res = _snakemake([*PROFILE, *common, f"results={tmp_path / 'slurm'}",
                               # scattered sampling (one job for all held-out cases) must gather the same files
                               "sample_jobs=1"], env, ROOT)
    assert "sbatch" in (res.stdout + res.stderr).lower() or "slurm" in (res.stdout + res.stderr).lower()
    compared = 0
    for path in sorted(local.rglob("*")):
        if not path.is_file() or not path.name.endswith((".safetensors", ".nii.gz", ".segy", ".npy", ".npz")):
            continue
        if "batch" in path.relative_to(local).parts:  # the end-to-end test's extra batch run, if it went first
            continue
        twin = tmp_path / "slurm" / path.relative_to(local)
        assert twin.is_file(), f"{twin} missing in the SLURM run"
        assert _equal(_content(path), _content(twin)), f"{path.relative_to(local)} differs"
        compared += 1
    assert compared >= 30
    assert (tmp_path / "slurm" / "test" / "logs" / "synthesis" / "sample" / "part-1-of-1.log").is_file()
    print(f"local {local_s:.0f} s, slurm {slurm_s:.0f} s ({slurm_s / local_s:.2f}x), {compared} files equal")


def test_a_training_job_cancelled_by_slurm_is_resubmitted_and_resumes_from_its_checkpoint(slurm, tmp_path):
    """scancel of the running training job, as preemption or a time limit does it: the profile's retries resubmit
    it, training resumes from its last checkpoint (not from step 0), and the weights are byte-identical to an
    uninterrupted local run."""
    overlay = tmp_path / "preempt.yaml"  # seismic alone, long enough to cancel it between checkpoints; 1 thread
    overlay.write_text(yaml.safe_dump({"synthesis": {"enabled": False}, "rotation": {"enabled": False},
                                       "longitudinal": {"enabled": False},
                                       "seismic": {"train": {"steps": 60, "checkpoint_every": 5, "threads": 1}}}),
                       encoding="utf-8")
    model = Path("test") / "seismic" / "model"
    args = ["--configfile", "configs/test.yaml", str(overlay), "--config"]
    env = _slurm_env(slurm)
    _snakemake(["--cores", "1", *args, f"results={tmp_path / 'local'}", "--",
                str(tmp_path / "local" / model / "config.json")], env, ROOT)
    slurm_model = tmp_path / "slurm" / model
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *PROFILE, "--retries", "1", *args,
                             f"results={tmp_path / 'slurm'}", "--", str(slurm_model / "config.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        checkpoint = slurm_model / "resume" / "config.json"
        deadline = time.monotonic() + 600
        while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.is_file(), "the SLURM training job never wrote a checkpoint"
        jobs = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, env=env).stdout
        job = next(line.split()[0] for line in jobs.splitlines() if "rule_seismic_train" in line)
        subprocess.run(["scancel", job], check=True, env=env)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-5000:]
    assert f"SLURM-job '{job}' failed" in out  # Snakemake saw the cancellation and resubmitted
    resumed = re.search(r"train: resuming from step (\d+)",
                        (tmp_path / "slurm" / "test" / "logs" / "seismic" / "train.log").read_text(errors="replace"))
    assert resumed and 5 <= int(resumed.group(1)) < 60, "the resubmitted job did not resume from a checkpoint"
    for name in ("model.safetensors", "ema.safetensors"):
        assert (slurm_model / name).read_bytes() == (tmp_path / "local" / model / name).read_bytes(), name
    assert not (slurm_model / "resume").exists()


def _profile_run(slurm, results, *extra, timeout=900):
    env = _slurm_env(slurm)
    return subprocess.run([sys.executable, "-m", "snakemake", *PROFILE, "--retries", "0",
                           "--configfile", "configs/test.yaml", "--config", f"results={results}", *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("extra, reason", [
    # a partition the cluster lacks (sbatch's own message is lost for grouped jobs)
    (("--default-resources", "slurm_partition=nosuchpartition"),
     "SLURM partition 'nosuchpartition' does not exist on this cluster (sinfo lists: debug)"),
    # train_gpus=2 on CUDA asks SLURM for 2 GPUs per training job; the test node has none
    (("device=cuda", "train_gpus=2"),
     "asks for 2 GPU(s) (train_gpus) but no node of the default partition has more than 0"),
], ids=["missing-partition", "gpus-beyond-the-node"])
def test_an_unsubmittable_run_stops_before_the_first_job_with_the_reason(slurm, tmp_path, extra, reason):
    target = tmp_path / "test" / "seismic" / "model" / "config.json"
    res = _profile_run(slurm, tmp_path, *extra, "--", str(target))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out
    assert reason in out, out[-3000:]
    assert "sbatch" not in out and not (tmp_path / "test").exists()  # stopped before the first job


@pytest.mark.parametrize("sinfo, partitions, gpus, expected", [
    ({"debug": 0, "*": 0}, {"debug"}, 0, []),
    ({"debug": 0, "*": 0}, {"gpu"}, 0, ["SLURM partition 'gpu' does not exist on this cluster (sinfo lists: debug)"]),
    ({"cpu": 0, "*": 0, "gpu": 4}, set(), 2, ["no node of the default partition has more than 0"]),
    ({"cpu": 0, "*": 0, "gpu": 4}, {"gpu"}, 4, []),
    ({"cpu": 0, "*": 0, "gpu": 4}, {"gpu"}, 8, ["asks for 8 GPU(s) (train_gpus) but no node of 'gpu' has more than 4"]),
    (None, {"anything"}, 64, []),  # no sinfo: nothing to check here
])
def test_preflight_reasons(sinfo, partitions, gpus, expected):
    from medsci.hpc import slurm_problems

    problems = slurm_problems(partitions, gpus, sinfo=lambda: sinfo)
    assert len(problems) == len(expected)
    assert all(e in p for e, p in zip(expected, problems)), problems


def test_sinfo_gres_parsing(monkeypatch):
    from medsci import hpc

    out = "debug* (null)\ngpu gpu:a100:4(S:0-1)\ngpu gpu:2\nmixed gpu:a100:2,gpu:v100:2\n"
    monkeypatch.setattr(hpc.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, out, ""))
    assert hpc._sinfo() == {"debug": 0, "*": 0, "gpu": 4, "mixed": 4}
