"""One real survey as data: the split into training and held-out blocks, dead traces kept out of training,
and the seismic-real preset as a workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medsci.cli import main
from medsci.errors import ConfigError, InputError
from medsci.io.segy import create_segy, read_cube
from medsci.tasks.seismic.config import SeismicConfig
from medsci.tasks.seismic.data import SeismicTrainingTask, TrainingCube
from medsci.tasks.seismic.demo import make_seismic_cube
from medsci.tasks.seismic.survey import split_survey

REPO = Path(__file__).resolve().parents[1]
F3 = REPO.parent / "shared" / "data" / "f3_dev.segy"


def _survey(tmp_path, shape=(6, 40, 32), dead=(), name="survey.segy"):
    data = 2.0 * make_seismic_cube(shape, np.random.default_rng(3))
    for il, xl in dead:
        data[il, xl] = 0.0
    path = tmp_path / name
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
    with pytest.raises(InputError, match=r"survey of 6 inlines x 40 crosslines x 32 samples is too small to hold out "
                                         r"25% of its crosslines, 2 lines apart, with the training patch 8 x 16 x 16: "
                                         r"the train block \(crosslines 0..27\) is 6 inlines x 28 crosslines, too thin "
                                         r"for the patch 8 x 16; the smallest survey that works is 8 inlines x 62 "
                                         r"crosslines x 16 samples"):
        split_survey(read_cube(path), tmp_path / "o", heldout_fraction=0.25, patch=(8, 16, 16))
    with pytest.raises(InputError, match="32 time samples, fewer than the patch's 64; the smallest survey that works "
                                         "is 4 inlines x 30 crosslines x 64 samples"):
        split_survey(read_cube(path), tmp_path / "o", heldout_fraction=0.25, patch=(4, 8, 64))
    code = main(["split-survey", str(path), "--out", str(tmp_path / "o")])  # default patch 16 x 16
    assert code == 2
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_a_survey_too_small_to_hold_out_a_block_names_its_size_and_the_smallest_that_works(tmp_path, capsys):
    """Issue 25, bad input: the CLI (as the workflow's split rule runs it) refuses in one line naming the file, its
    size and the smallest survey that works; that survey splits, and one line fewer along the cut does not."""
    config = tmp_path / "cfg.yaml"
    config.write_text("seismic:\n  data: {survey_heldout: 0.3, survey_gap: 2}\n  model: {patch: [8, 16, 64]}\n",
                      encoding="utf-8")
    path, _ = _survey(tmp_path, shape=(10, 20, 100))
    code = main(["split-survey", str(path), "--config", str(config), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and "10 inlines x 20 crosslines x 100 samples" in err
    assert "the smallest survey that works is 8 inlines x 52 crosslines x 64 samples" in err
    assert not (tmp_path / "o").exists()
    for n_xl, ok in ((52, True), (51, False)):  # 52 = 34 training + 2 gap + 16 held out (round(0.3 x 52))
        small, _ = _survey(tmp_path, shape=(8, n_xl, 64), name=f"s{n_xl}.segy")
        code = main(["split-survey", str(small), "--config", str(config), "--out", str(tmp_path / f"o{n_xl}")])
        assert (code == 0) == ok, capsys.readouterr().err
    # Cut along inlines; 5 crosslines hold the 8 x 16 patch in neither orientation, so the smallest survey has the
    # smaller patch size across the cut and the blocks hold the patch transposed.
    thin, _ = _survey(tmp_path, shape=(30, 5, 64), name="thin.segy")
    with pytest.raises(InputError, match="too small to hold out 50% of its inlines, 2 lines apart.* the smallest "
                                         "survey that works is 36 inlines x 8 crosslines x 64 samples"):
        split_survey(read_cube(thin), tmp_path / "o", heldout_fraction=0.5, axis="inline", gap=2, patch=(8, 16, 64))
    ok, _ = _survey(tmp_path, shape=(36, 8, 64), name="ok.segy")
    record = split_survey(read_cube(ok), tmp_path / "o36", 0.5, "inline", 2, patch=(8, 16, 64))
    assert record["parts"]["train"]["shape"] == [16, 8, 64] and record["parts"]["heldout"]["shape"] == [18, 8, 64]


def test_demo_cubes_smaller_than_the_patch_are_refused_with_the_smallest_that_works():
    with pytest.raises(ConfigError, match=r"seismic.data.demo.shape 16 x 16 x 32 cannot hold the training patch "
                                          r"16 x 16 x 64 \(seismic.model.patch\): the smallest demo cube that works is "
                                          r"16 inlines x 16 crosslines x 64 samples"):
        SeismicConfig.from_dict({"data": {"demo": {"shape": [16, 16, 32]}}})
    SeismicConfig.from_dict({"data": {"demo": {"shape": [16, 64, 64]}, "survey": None},
                             "model": {"patch": [32, 16, 64]}})  # transposed patches fit
    SeismicConfig.from_dict({"data": {"demo": {"shape": [16, 16, 32]}, "survey": "real.segy"}})  # no demo cubes


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


def test_a_dead_zone_wider_than_a_training_region_gets_regions_with_observed_traces():
    """A first guess has nothing to work from in a region of dead traces only: such regions are drawn again (it
    was an InputError "mask is all-missing" from every first guess before), and an all-missing window's guess is
    zeros, never an error or NaN."""
    cfg = SeismicConfig.from_dict({"model": {"unet": {"channels": [8, 16], "attention_levels": [False, False],
                                                      "norm_num_groups": 8, "num_head_channels": 8},
                                             "patch": [8, 8, 16], "condition": "mssa+linear", "guess_bank": 12}}).model
    cube = 2.0 * make_seismic_cube((10, 40, 24), np.random.default_rng(1))
    live = np.ones((10, 40), dtype=bool)
    live[:, :20] = False  # half the survey dead: regions are at most 16 crosslines wide
    cube[~live] = 0.0
    task = SeismicTrainingTask([TrainingCube("a", cube.astype(np.float32), 1.0, live)], cfg)
    assert all(mask.any() and torch.isfinite(guess).all() for _, mask, guess, _ in task.bank)
    assert task.warnings == []  # 10 x 16 regions: full rank 40 > MSSA rank 16
    thin = SeismicTrainingTask([TrainingCube("thin", cube[:6, 20:26].astype(np.float32), 1.0)],
                               replace(cfg, patch=(4, 4, 16), guess_bank=1))
    assert thin.warnings == ["thin: training regions of 6 x 6 traces: MSSA rank 16 is not below the full rank 9 of "
                             "the block Hankel matrix of a 6 x 6 trace window: the rank is clamped to it, the rank "
                             "reduction does nothing and MSSA returns its start (linear interpolation, band-limited)"]
    from medsci.tasks.seismic.conditioning import first_guess

    nothing = np.zeros((4, 4), dtype=bool)
    for method in ("linear", "pocs", "mssa"):
        assert not first_guess(np.ones((4, 4, 8), np.float32), nothing, method).any()


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
