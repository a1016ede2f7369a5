"""One real survey as data: the split into training and held-out blocks, dead traces kept out of training,
and the seismic-real preset as a workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsci.cli import main
from medsci.errors import InputError
from medsci.io.segy import create_segy, read_cube
from medsci.tasks.seismic.config import SeismicConfig
from medsci.tasks.seismic.data import SeismicTrainingTask, TrainingCube
from medsci.tasks.seismic.demo import make_seismic_cube
from medsci.tasks.seismic.survey import split_survey

REPO = Path(__file__).resolve().parents[1]
F3 = REPO.parent / "shared" / "data" / "f3_dev.segy"


def _survey(tmp_path, shape=(6, 40, 32), dead=()):
    data = 2.0 * make_seismic_cube(shape, np.random.default_rng(3))
    for il, xl in dead:
        data[il, xl] = 0.0
    path = tmp_path / "survey.segy"
    create_segy(path, data, 2.0, ilines=np.arange(101, 101 + shape[0]), xlines=np.arange(501, 501 + shape[1]))
    return path, data


def test_split_keeps_line_numbers_gap_and_counts_dead_traces(tmp_path):
    path, data = _survey(tmp_path, dead=[(1, 3), (2, 38)])
    record = split_survey(read_cube(path), tmp_path / "split", heldout_fraction=0.25, gap=2, patch=(4, 8, 16))
    train, held = read_cube(tmp_path / "split" / "train.segy"), read_cube(tmp_path / "split" / "heldout.segy")
    assert train.shape == (6, 28, 32) and held.shape == (6, 10, 32)  # 40 = 28 + 2 (gap) + 10
    np.testing.assert_array_equal(train.xlines, np.arange(501, 529))
    np.testing.assert_array_equal(held.xlines, np.arange(531, 541))
    np.testing.assert_array_equal(held.ilines, np.arange(101, 107))
    np.testing.assert_array_equal(held.data, data[:, 30:].astype(np.float32))
    assert record["parts"]["train"]["dead_traces"] == 1 and record["parts"]["heldout"]["dead_traces"] == 1
    assert json.loads((tmp_path / "split" / "split.json").read_text(encoding="utf-8"))["axis"] == "crossline"


def test_a_survey_too_thin_for_the_patch_is_refused_with_what_would_fit(tmp_path):
    path, _ = _survey(tmp_path)
    with pytest.raises(InputError, match=r"6 inlines x 28 crosslines, too thin for the patch 8 x 16: a patch of "
                                         r"at most 6 x 28"):
        split_survey(read_cube(path), tmp_path / "o", heldout_fraction=0.25, patch=(8, 16, 16))
    with pytest.raises(InputError, match="32 time samples, fewer than the patch's 64"):
        split_survey(read_cube(path), tmp_path / "o", heldout_fraction=0.25, patch=(4, 8, 64))
    code = main(["split-survey", str(path), "--out", str(tmp_path / "o")])  # default patch 16 x 16
    assert code == 2


def test_dead_traces_are_always_missing_in_training_and_never_in_the_loss():
    cfg = SeismicConfig.from_dict({"model": {"unet": {"channels": [8, 16], "attention_levels": [False, False],
                                                      "norm_num_groups": 8, "num_head_channels": 8},
                                             "patch": [8, 8, 16], "condition": "linear"}}).model
    cube = 2.0 * make_seismic_cube((10, 12, 24), np.random.default_rng(1))
    live = np.ones((10, 12), dtype=bool)
    live[:, 5] = False  # a dead crossline
    cube[~live] = 0.0
    task = SeismicTrainingTask([TrainingCube("a", cube.astype(np.float32), 1.0, live)], cfg)
    for region, mask, _, region_live in task.bank:
        assert not (mask & ~region_live.numpy()).any()
    batch = task.batch(torch.Generator().manual_seed(0), 16)
    observed = batch.conditions.condition[:, 1, :, :, 0].bool()
    weight = batch.loss_weight[:, 0, :, :, 0]
    dead = (batch.x0[:, 0] + batch.conditions.condition[:, 2] == 0).all(dim=-1)  # all-zero traces of the crops
    assert dead.any()
    assert not observed[dead].any() and (weight[dead] == 0).all()
    assert (weight[~dead & ~observed] == 1).all()


@pytest.mark.skipif(not F3.is_file(), reason=f"{F3} (the real development survey) is not on this machine")
def test_the_real_survey_preset_plans_split_training_evaluation_and_fill(tmp_path):
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "configs/seismic-real.yaml",
                          "--config", f"results={tmp_path}", f"seismic={{'data': {{'survey': '{F3}'}}}}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for rule in ("seismic_split_survey", "seismic_train", "seismic_reconstruct_1", "seismic_evaluate",
                 "seismic_fill_survey"):
        assert f"rule {rule}:" in out
    assert "synthesis_train" not in out
