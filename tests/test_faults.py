"""Faults: jobs killed with SIGKILL (training, a batch, the workflow) resume or rerun to the bytes of an
uninterrupted run and leave no partial file; a full disk leaves no corrupt output; a volume too large for the
device's memory is refused with a message instead of an out-of-memory crash; the load benchmark runs."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from helpers import tree_checksums
from medsci.cli import main
from medsci.errors import MedsciError
from test_synthesis import trained  # noqa: F401  (the tiny trained checkpoint, built once per module)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
TRAIN_STEPS = 12
# The seismic section of configs/test.yaml with more steps and a checkpoint every 3 (kills land between them);
# one thread, so a subprocess, the in-process reference and a workflow job compute the same bytes.
SEISMIC = {
    "enabled": True,
    "data": {"raw_dir": None, "heldout": 1, "demo": {"cubes": 3, "seed": 1, "shape": [16, 16, 32]}},
    # The preset's objective and variance head spelled out: the in-process reference reads this section alone.
    "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1,
                       "norm_num_groups": 8, "num_head_channels": 8, "variance_head": True}, "patch": [8, 8, 16],
              "schedule": {"objective": "rflow", "timestep_sampling": "logit-normal", "logit_loc": 1.5},
              "condition": "pocs+mssa+linear", "residual": False, "domain": "image"},
    "train": {"steps": TRAIN_STEPS, "batch_size": 2, "lr": 0.001, "warmup_steps": 1, "checkpoint_every": 3,
              "seed": 0, "threads": 1},
    "sample": {"steps": 2, "seed": 0},
    "inference": {"sw_batch_size": 32},
}
WEIGHTS = ("model.safetensors", "ema.safetensors")


def _kill_when(argv: list[str], seen: re.Pattern, stream: str = "stderr", timeout: float = 180) -> tuple[int, str]:
    """Run ``medsci argv`` and SIGKILL it (its whole process group) as soon as a line of ``stream`` matches."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr if stream == "stderr" else proc.stdout:
            lines.append(line)
            if seen.search(line):
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.communicate()
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(lines)


def _medsci(*args) -> list[str]:
    return [sys.executable, "-m", "medsci", *map(str, args)]


def _train_args(root: Path, out: Path) -> list[str]:
    return ["train", "seismic", "--config", root / "seismic.yaml", "--data", root / "cubes", "--cubes", "cube_000",
            "cube_001", "--out", out, "--no-progress"]


def _loss_rows(folder: Path) -> list[str]:
    """loss.csv without its wall-clock column."""
    return [r.rsplit(",", 1)[0] for r in (folder / "loss.csv").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def seismic(tmp_path_factory):
    """Demo cubes as the workflow makes them, the config, and an uninterrupted training run (the reference)."""
    from medsci.tasks.seismic.demo import write_seismic_dataset

    root = tmp_path_factory.mktemp("faults")
    demo = SEISMIC["data"]["demo"]
    write_seismic_dataset(root / "cubes", cubes=demo["cubes"], seed=demo["seed"], shape=tuple(demo["shape"]))
    (root / "seismic.yaml").write_text(yaml.safe_dump({"name": "faults", "device": "cpu", "seismic": SEISMIC}),
                                       encoding="utf-8")
    assert main([*map(str, _train_args(root, root / "reference"))]) == 0
    return root


def _assert_same_training(folder: Path, reference: Path) -> None:
    for name in WEIGHTS:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    assert _loss_rows(folder) == _loss_rows(reference)
    assert json.loads((folder / "config.json").read_text())["step"] == TRAIN_STEPS
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no staging or temp leftovers
    assert not (folder / "resume").exists()  # in-progress checkpoints are removed once the model is final


def test_training_killed_at_three_steps_resumes_to_the_uninterrupted_weights(seismic):
    inputs = tree_checksums(seismic / "cubes")
    out = seismic / "killed"
    killed_at, logs = [], []
    for target in (2, 5, 8):
        code, log = _kill_when(_medsci(*_train_args(seismic, out)),
                               re.compile(rf"train: step ({'|'.join(str(s) for s in range(target, TRAIN_STEPS))})/"))
        assert code == -signal.SIGKILL, log
        killed_at.append(int(re.findall(r"train: step (\d+)/", log)[-1]))
        logs.append(log)
        # In-progress checkpoints live in out/resume; out itself only gets the finished model.
        assert not (out / "config.json").is_file()
        progress = out / "resume" / "config.json"
        resumed_from = json.loads(progress.read_text())["step"] if progress.is_file() else 0
        assert resumed_from < TRAIN_STEPS
    assert killed_at == sorted(set(killed_at)) and killed_at[0] < TRAIN_STEPS  # three different steps
    assert any(re.search(r"train: resuming from step \d+", log) for log in logs[1:])
    assert main([*map(str, _train_args(seismic, out))]) == 0
    _assert_same_training(out, seismic / "reference")
    assert tree_checksums(seismic / "cubes") == inputs


class _Killed(BaseException):
    """Stands for SIGKILL inside this process: nothing below catches it."""


def test_training_killed_while_moving_a_checkpoint_into_place_is_finished_on_resume(seismic, monkeypatch):
    from medsci.diffusion import checkpoint

    out = seismic / "half-committed"
    real_replace = os.replace

    def replace(src, dst):
        src = Path(src)
        if src.parent.name == checkpoint.COMMIT_DIR and src.name == checkpoint.MODEL_FILE and \
                json.loads((src.parent / checkpoint.CONFIG_FILE).read_text())["step"] == 6:
            raise _Killed()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        main([*map(str, _train_args(seismic, out))])
    monkeypatch.setattr(os, "replace", real_replace)
    # The folder still says step 3 (config.json moves last) while step 6's files wait in .commit.
    assert json.loads((out / "resume" / "config.json").read_text())["step"] == 3
    assert (out / "resume" / checkpoint.COMMIT_DIR / checkpoint.MODEL_FILE).is_file()
    assert main([*map(str, _train_args(seismic, out))]) == 0
    _assert_same_training(out, seismic / "reference")


def test_killed_batch_leaves_only_whole_files_and_the_rerun_gives_the_same_bytes(trained, tmp_path):  # noqa: F811
    from test_clinical import _copy_case

    drop = tmp_path / "in"
    for case in trained["ids"][:3]:
        _copy_case(trained, case, drop / case)
    inputs = tree_checksums(drop)
    args = ["synthesize", "--checkpoint", trained["model"], "--input", drop, "--no-progress", "--threads", "1"]
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert main([*map(str, args), "--output", str(clean)]) == 0

    code, log = _kill_when(_medsci(*args, "--output", out), re.compile(r" done \("), stream="stdout")
    assert code == -signal.SIGKILL, log
    products = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert products and not (out / "summary.csv").exists()  # killed after the first case, before the end
    for path in products:  # every file there is whole: the bytes a clean run writes (records hold timings)
        if path.suffix != ".json":
            assert path.read_bytes() == (clean / path.relative_to(out)).read_bytes(), path
    assert main([*map(str, args), "--output", str(out)]) == 0
    compared = [p.relative_to(clean) for p in clean.rglob("*") if p.suffix in (".gz", ".png")]
    assert len(compared) == 3 * 3  # synthesis, std map, QC figure per case
    for rel in compared:
        assert (out / rel).read_bytes() == (clean / rel).read_bytes(), rel
    assert not [p for p in out.rglob(".*")]  # the killed writer's temporary files were removed by the rerun
    assert tree_checksums(drop) == inputs


# ------------------------------------------------------------------------------------------ full disk
def _fill_disk_midway(monkeypatch):
    """Every Path.write_bytes writes half its data, then the disk is full."""
    def write_bytes(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_full_disk_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    from medsci.io.atomic import write_json_atomic

    dest = tmp_path / "report.json"
    write_json_atomic(dest, {"version": 1})
    before = dest.read_bytes()
    _fill_disk_midway(monkeypatch)
    with pytest.raises(MedsciError) as err:
        write_json_atomic(dest, {"version": 2, "payload": "x" * 10_000})
    assert str(err.value).startswith(f"{dest}: disk full") and "\n" not in str(err.value)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_full_disk_in_a_command_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    _fill_disk_midway(monkeypatch)
    code = main(["demo-data", "synthesis", str(out), "--cases", "1", "--shape", "16", "16", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "disk full" in err and ".nii.gz" in err and str(out) in err
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing half-written, no temporary file


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(seismic, monkeypatch):
    from medsci.diffusion import checkpoint

    out = seismic / "full-disk"
    shutil.copytree(seismic / "reference", out)
    before = tree_checksums(out)
    real_save = checkpoint.save_file

    def save_file(tensors, path, *a, **kw):  # safetensors' own wording of ENOSPC
        real_save(tensors, path, *a, **kw)
        raise checkpoint.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                         'message: "No space left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    from medsci.tasks.seismic.pipeline import load_model

    loaded = load_model(out, "cpu")
    with pytest.raises(MedsciError, match="disk full"):
        checkpoint.save_checkpoint(out, {"step": 99}, loaded.model, loaded.model, {"step": 99})
    assert tree_checksums(out) == before  # the step-12 checkpoint is whole; no staging folder left


# ------------------------------------------------------------------------------------------ memory
def test_a_volume_too_large_for_free_memory_is_refused_before_sampling(trained, tmp_path, monkeypatch,
                                                                      capsys):  # noqa: F811
    from medsci.diffusion import memory
    from test_clinical import _copy_case

    case = trained["ids"][0]
    drop = tmp_path / "in"
    _copy_case(trained, case, drop / case)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 20)  # 1 MiB free
    called = []
    monkeypatch.setattr("medsci.diffusion.inference._generate", lambda *a: called.append(a))
    code = main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop), "--output",
                 str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and not called
    line = next(ln for ln in err.splitlines() if "refused" in ln)
    assert re.search(rf"{case}: refused: {case}: sampling a 32x32x32 volume needs about [0-9.]+ GiB of cpu "
                     r"memory, 0\.0 GiB are free: use a windowed preset", line), line
    assert "inference_window" in line and "smaller preset" in line


def test_running_out_of_memory_while_sampling_is_a_clean_message(monkeypatch):
    from medsci.diffusion import inference
    from medsci.diffusion.config import InferenceConfig, SamplerConfig, ScheduleConfig

    def oom(*a):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB")

    monkeypatch.setattr(inference, "_generate", oom)
    with pytest.raises(MedsciError) as err:
        inference.generate(torch.nn.Identity(), ScheduleConfig(), SamplerConfig(), InferenceConfig(), None,
                           (1, 1, 8, 8, 8), source="cube_007.segy")
    assert str(err.value).startswith("cube_007.segy: ran out of cpu memory sampling a 8x8x8 volume: use a windowed")


def test_memory_estimate_matches_the_attention_of_the_lowest_level():
    """MONAI's middle block attends over every voxel of the lowest level: 64^3 input, 2 levels -> 32^3 tokens,
    16 channels / 8 per head = 2 heads, scores and softmax: 2 x 2 x 32768^2 floats (measured peak: 16.4 GiB)."""
    from medsci.diffusion.config import UNetConfig
    from medsci.diffusion.memory import estimate_bytes
    from medsci.diffusion.networks import build_network, network_spec

    spec = network_spec(UNetConfig(channels=(8, 16), attention_levels=(False, False), norm_num_groups=8,
                                   num_head_channels=8), 3, 1, condition_channels=5)
    model = build_network(spec)
    whole = estimate_bytes(model, (1, 1, 64, 64, 64), None, 8, 5)
    assert 16 * 2 ** 30 < whole < 17.5 * 2 ** 30
    windowed = estimate_bytes(model, (1, 1, 64, 64, 64), (16, 16, 16), 8, 5)
    assert windowed < whole / 100  # what the message's windowed preset buys


# ------------------------------------------------------------------------------------------ load

def test_load_item_samples_the_batch_process_memory_on_a_few_cases(trained, tmp_path):  # noqa: F811
    """The 200-case load benchmark on 3 cases (batch command only): every case done, RSS reported per mark."""
    from medsci.tasks.synthesis.bench_load import bench_load_item

    out = bench_load_item(cases=3, workflow=False, interval=0.1, workdir=str(tmp_path), log=lambda *a: None,
                          checkpoint=str(trained["model"]))
    run = out["synthesize"]
    assert out["cases"] == 3 and run["returncode"] == 0 and run["cases"] == 3
    assert list(run["rss_mb_after_cases"]) == ["1", "2", "3"]  # 10 %, 50 %, 100 % of the cases
    assert 100 < run["peak_rss_mb"] < 4000 and run["samples"] > 3
    assert run["growth_mb"] == round(run["rss_mb_after_cases"]["3"] - run["rss_mb_after_cases"]["1"], 1)
    assert run["flat"] == (run["growth_mb"] < out["flat_threshold_mb"])
    assert "workflow" not in out and not any(tmp_path.iterdir())  # its temporary folder is removed


# ------------------------------------------------------------------------------------------ workflow
def test_workflow_killed_during_training_reruns_incomplete_to_the_same_model(seismic, tmp_path):
    """SIGKILL to snakemake and its job (a node going down) during the seismic training job; the rerun with
    --rerun-incomplete (after --unlock) resumes the job from its last checkpoint and gives the uninterrupted run's
    weights."""
    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump({"synthesis": {"enabled": False}, "rotation": {"enabled": False},
                                      "longitudinal": {"enabled": False}, "seismic": SEISMIC}), encoding="utf-8")
    results = tmp_path / "results"
    model = results / "test" / "seismic" / "model"
    snakemake = [sys.executable, "-m", "snakemake", str(model / "config.json"), "-s", str(REPO / "Snakefile"),
                 "-d", str(tmp_path / "work"), "--cores", "1", "--configfile", str(REPO / "configs" / "test.yaml"),
                 str(config), "--config", f"results={results}"]
    configs = tree_checksums(REPO / "configs")
    log = results / "test" / "logs" / "seismic" / "train.log"
    proc = subprocess.Popen(snakemake, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV,
                            start_new_session=True)
    try:
        deadline = 150
        while deadline > 0 and not (log.is_file() and "train: step 4/" in log.read_text(errors="replace")):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            threading.Event().wait(0.2)
            deadline -= 0.2
        assert deadline > 0, "training never reached step 4"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    # Snakemake deletes a failed job's outputs (model/config.json, the weights); the checkpoint a rerun
    # resumes from is in model/resume, which is no declared output.
    assert not (model / "config.json").is_file()
    resumable = json.loads((model / "resume" / "config.json").read_text())["step"]
    assert 3 <= resumable < 12  # checkpoint_every 3

    res = subprocess.run(snakemake + ["--unlock"], capture_output=True, text=True, env=ENV, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    # The killed job's declared outputs were never written (the model is written once, at the end), so nothing is
    # marked incomplete; the rerun, as a user would type it after a crash, redoes the job from its checkpoint.
    assert not any(model.glob("*.safetensors"))
    res = subprocess.run(snakemake + ["--rerun-incomplete"], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"train: resuming from step {resumable}" in log.read_text(errors="replace")  # not started over
    _assert_same_training(model, seismic / "reference")
    assert tree_checksums(REPO / "configs") == configs
