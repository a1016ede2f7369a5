"""Data-parallel training (torchrun, gloo on CPU) takes the same steps as one process with the same global batch;
the train rules launch torchrun when a job has more than one GPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medsci.diffusion.distributed import Ranks
from medsci.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "ddp_train.py"


def _run(args, tmp_path, ok=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    res = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    if ok:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def _initial_weights():
    spec = importlib.util.spec_from_file_location("ddp_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, model = module.network()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_gloo_processes_reach_the_weights_of_one_process(tmp_path):
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one"), "4"], tmp_path)
    res = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
                str(tmp_path / "two"), "4"], tmp_path)
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    start = _initial_weights()
    assert one.keys() == two.keys()
    moved = 0.0
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
        moved = max(moved, float((one[k] - start[k]).abs().max()))
    assert moved > 1e-3  # training changed the weights, so the equality above is about the steps taken
    ema_one, ema_two = load_file(tmp_path / "one" / "ema.safetensors"), load_file(tmp_path / "two" / "ema.safetensors")
    for k in ema_one:
        torch.testing.assert_close(ema_two[k], ema_one[k], rtol=1e-4, atol=1e-5)
    # Rank 0 alone logged: one row per step, and the global loss (mean over ranks) equals the one-process loss.
    rows_one = (tmp_path / "one" / "loss.csv").read_text(encoding="utf-8").splitlines()[1:]
    rows_two = (tmp_path / "two" / "loss.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [r.split(",")[0] for r in rows_two] == ["1", "2", "3", "4"]
    for a, b in zip(rows_one, rows_two):
        assert float(b.split(",")[1]) == pytest.approx(float(a.split(",")[1]), rel=1e-4)
    assert "Traceback" not in res.stderr


def test_data_parallel_training_killed_midway_resumes_exactly(tmp_path):
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one"), "4"], tmp_path)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           str(tmp_path / "two"), "4"]
    killed = _run(run + ["3"], tmp_path, ok=False)  # rank 0 dies after step 3; the last checkpoint is step 2
    assert killed.returncode != 0
    # in-progress checkpoints live in two/resume; two itself only gets the finished model
    assert (tmp_path / "two" / "resume" / "loss.csv").read_text(encoding="utf-8").splitlines()[-1].startswith("2,")
    assert not (tmp_path / "two" / "config.json").exists()
    _run(run, tmp_path)  # the rerun resumes from step 2
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)


def test_a_batch_that_does_not_split_evenly_is_refused():
    assert Ranks(1, 2).share(4) == slice(2, 4) and Ranks(0, 3).share(6) == slice(0, 2)
    with pytest.raises(ConfigError, match="divisible by the number of processes"):
        Ranks(0, 3).share(4)


def test_train_rules_launch_torchrun_for_several_gpus(tmp_path):
    def dry_run(*config):
        res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--configfile",
                              str(ROOT / "configs" / "test.yaml"), "--config", f"results={tmp_path}", *config],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout

    several = dry_run("device=cuda", "train_gpus=2")
    for task in ("synthesis", "seismic", "rotation", "longitudinal"):
        assert f"torchrun --standalone --nproc_per_node 2 -m medsci train {task}" in several
    assert "gpu=2" in several.replace(" ", "")
    single = dry_run("device=cpu", "train_gpus=2")
    assert "torchrun" not in single and "medsci train synthesis" in single
