"""MRI modality synthesis: conditioning, baselines, training batches, and the CLI end to end on tiny data."""

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsci.cli import main
from medsci.tasks.synthesis.demo import write_brats_dataset
from medsci.mri.cases import MODALITIES
from medsci.tasks.synthesis.baselines import LinearRegressionBaseline, mean_of_available
from medsci.tasks.synthesis.conditioning import condition_channels, to_image_space, to_model_space
from medsci.tasks.synthesis.data import PreparedCase, SynthesisTrainingTask

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "configs" / "test.yaml"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_space_round_trip_and_zero_filled_slots():
    img = torch.rand(2, 4, 8, 6, 4)
    torch.testing.assert_close(to_image_space(to_model_space(img)), img, atol=1e-6, rtol=0)
    avail = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.float32)
    cond = condition_channels(img, avail)
    assert cond.shape == (2, 4, 8, 6, 4)
    assert not cond[0, 2].any() and cond[0, 3].abs().sum() > 0
    assert not cond[1, 0].any()
    torch.testing.assert_close(cond[0, 0], img[0, 0] * 2 - 1)
    prior = torch.rand(2, 1, 8, 6, 4)
    torch.testing.assert_close(condition_channels(img, avail, prior)[:, 4:], prior * 2 - 1)


def _case(image, mask, cid="c"):
    return PreparedCase(cid, image.astype(np.float32), mask, None, MODALITIES, {})


def test_regression_baseline_recovers_a_linear_relation_and_mean_baseline():
    rng = np.random.default_rng(0)
    cases = []
    for i in range(3):
        img = rng.uniform(0, 1, (4, 6, 6, 6))
        img[3] = 0.2 * img[0] + 0.3 * img[1] + 0.4 * img[2] + 0.05  # t2f from t1n, t1c, t2w
        cases.append(_case(img, np.ones((6, 6, 6), bool)))
    reg = LinearRegressionBaseline.fit(cases, targets=("t2f",))
    np.testing.assert_allclose(reg.coef["t2f"], [0.2, 0.3, 0.4, 0.05], atol=1e-9)
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    pred = reg.predict(cases[0].image, "t2f", mask)
    np.testing.assert_allclose(pred[mask], cases[0].image[3][mask], atol=1e-6)
    assert not pred[~mask].any()
    mean = mean_of_available(cases[0].image, ("t1n", "t1c", "t2w"), mask)
    np.testing.assert_allclose(mean[mask], cases[0].image[:3].mean(0)[mask], atol=1e-6)


def test_quadratic_prior_recovers_a_nonlinear_relation_the_linear_baseline_misses():
    rng = np.random.default_rng(3)
    cases = []
    for i in range(2):
        img = rng.uniform(0, 1, (4, 6, 6, 6))
        img[3] = 0.8 * img[0] * img[2] - 0.3 * img[1] ** 2 + 0.1 * img[1] + 0.2  # FLAIR-like non-linearity
        cases.append(_case(img, np.ones((6, 6, 6), bool), f"c{i}"))
    mask = np.ones((6, 6, 6), bool)
    quad = LinearRegressionBaseline.fit(cases, targets=("t2f",), degree=2)
    lin = LinearRegressionBaseline.fit(cases, targets=("t2f",))
    truth = cases[0].image[3]
    np.testing.assert_allclose(quad.predict(cases[0].image, "t2f", mask), truth, atol=1e-6)
    assert np.abs(lin.predict(cases[0].image, "t2f", mask) - truth).max() > 0.05
    # The checkpoint form round-trips, degree included; old linear entries (no degree) still load.
    again = LinearRegressionBaseline.from_dict(quad.to_dict())
    assert again.degree == 2 and again.coef == quad.coef
    assert LinearRegressionBaseline.from_dict({"coef": lin.coef}).degree == 1


@pytest.mark.parametrize("degree", [1, 2])
def test_torch_regression_prior_matches_the_numpy_baseline(degree):
    rng = np.random.default_rng(2)
    cases = [_case(rng.uniform(0, 1, (4, 6, 6, 6)), np.ones((6, 6, 6), bool), f"c{i}") for i in range(2)]
    reg = LinearRegressionBaseline.fit(cases, degree=degree)
    img = rng.uniform(0, 1, (4, 6, 6, 6)).astype(np.float32)
    mask = np.zeros((6, 6, 6), bool)
    mask[:, 2:] = True
    batch = torch.from_numpy(np.stack([img, img]))
    prior = reg.predict_torch(batch, torch.tensor([3, 1]), torch.from_numpy(mask)[None, None])
    np.testing.assert_allclose(prior[0, 0].numpy(), reg.predict(img, "t2f", mask), atol=1e-5)
    np.testing.assert_allclose(prior[1, 0].numpy(), reg.predict(img, "t1c", mask), atol=1e-5)
    # The target's own slot is never read: changing it leaves the prior unchanged.
    batch[0, 3] = 0
    assert torch.equal(reg.predict_torch(batch, torch.tensor([3, 1]), torch.from_numpy(mask)[None, None])[0],
                       prior[0])


def test_training_batches_zero_the_target_slot_and_are_seeded():
    rng = np.random.default_rng(1)
    cases = [_case(rng.uniform(0, 1, (4, 8, 8, 8)), np.ones((8, 8, 8), bool), f"c{i}") for i in range(3)]
    task = SynthesisTrainingTask(cases, MODALITIES)
    a = task.batch(torch.Generator().manual_seed(5), 6)
    b = task.batch(torch.Generator().manual_seed(5), 6)
    ca, cb = a.conditions.condition, b.conditions.condition
    assert torch.equal(a.x0, b.x0) and torch.equal(ca, cb)
    assert a.x0.shape == (6, 1, 8, 8, 8) and ca.shape == (6, 4, 8, 8, 8)  # no prior here
    for i, t in enumerate(a.conditions.labels.tolist()):
        assert not ca[i, t].any()
        others = [k for k in range(4) if k != t]
        assert all(ca[i, k].abs().sum() > 0 for k in others)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four tiny demo cases, preprocessed, and a model trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("syn")
    raw = root / "raw"
    write_brats_dataset(raw, cases=4, seed=3, shape=(36, 40, 30))
    prep = root / "prep"
    for case in sorted(p.name for p in raw.iterdir() if p.is_dir()):
        assert main(["preprocess", "synthesis", "--case-dir", str(raw / case), "--out", str(prep),
                     "--config", str(TEST_CONFIG)]) == 0
    ids = sorted(p.stem for p in prep.glob("*.npz"))
    model = root / "model"
    assert main(["train", "synthesis", "--config", str(TEST_CONFIG), "--data", str(prep), "--cases", *ids[:3],
                 "--out", str(model), "--no-progress"]) == 0
    return {"root": root, "raw": raw, "prep": prep, "ids": ids, "model": model}


def test_checkpoint_folder_is_safetensors_plus_json(trained):
    import json

    files = sorted(p.name for p in trained["model"].iterdir())
    assert {"config.json", "model.safetensors", "ema.safetensors", "training_state.pt", "loss.csv"} <= set(files)
    cfg = json.loads((trained["model"] / "config.json").read_text(encoding="utf-8"))
    assert cfg["task"] == "mri-synthesis" and cfg["model"]["condition_channels"] == 5  # 4 contrasts + prior
    assert cfg["model"]["haar"] and cfg["model"]["num_classes"] == 4
    assert set(cfg["prior"]["coef"]) == set(MODALITIES)
    assert cfg["preprocess"]["shape"] == [32, 32, 32] and cfg["step"] == 6
    assert cfg["training_cases"] == trained["ids"][:3]


def test_sample_and_evaluate_heldout_case(trained, capsys):
    out = trained["root"] / "samples"
    held = trained["ids"][3]
    args = ["sample", "synthesis", "--config", str(TEST_CONFIG), "--checkpoint", str(trained["model"]),
            "--data", str(trained["prep"]), "--case", held, "--targets", "t2f", "t1c", "--out", str(out)]
    assert main(args) == 0
    nifti = out / held / f"{held}-t2f.nii.gz"
    ref = nib.load(trained["raw"] / held / f"{held}-t1n.nii.gz")
    img = nib.load(nifti)
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    data = img.get_fdata()
    assert data.min() >= 0 and data.max() <= 1 and data.max() > 0
    assert not data[ref.get_fdata() == 0].any()  # nothing outside the brain
    assert (out / held / f"{held}-t2f-std.nii.gz").is_file()  # n_samples = 2 in the test config
    first = _digest(out / held / f"{held}-t2f.npz")
    assert main(args) == 0  # same seed, same config -> same bytes
    assert _digest(out / held / f"{held}-t2f.npz") == first

    ev = trained["root"] / "eval"
    assert main(["evaluate", "synthesis", "--data", str(trained["prep"]), "--train-cases", *trained["ids"][:3],
                 "--cases", held, "--samples", str(out), "--targets", "t2f", "t1c", "--out", str(ev)]) == 0
    import csv
    import json

    rows = list(csv.DictReader((ev / "metrics.csv").open(encoding="utf-8")))
    assert {r["method"] for r in rows} == {"model", "cubic", "regression", "mean"}
    brain_mse = {r["method"]: r["mse"] for r in rows if r["region"] == "brain" and r["target"] == "t2f"}
    assert brain_mse["cubic"] != brain_mse["regression"]  # a fit of its own, not the linear one copied
    assert {r["region"] for r in rows} == {"volume", "brain", "tumour"}
    summary = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
    reg = summary["metrics"]["t2f"]["regression"]["brain"]["ssim"]["mean"]
    assert 0 < reg < 1
    assert (ev / "montages" / f"{held}-t2f.png").stat().st_size > 1000
    # n_samples = 2 and no variance head: the spread over samples, stored with the map and scored per volume.
    with np.load(out / held / f"{held}-t2f.npz", allow_pickle=False) as z:
        assert str(z["uncertainty"]) == "samples"
    unc = summary["uncertainty"]
    assert unc["method"] == "samples" and unc["volumes"] == 2 and set(unc["targets"]) == {"t2f", "t1c"}
    assert -1 <= unc["spearman"] <= 1 and 0 <= unc["coverage90"] <= 1
    scored = [r for r in rows if r["unc_spearman"] != ""]
    assert {(r["method"], r["region"]) for r in scored} == {("model", "brain")} and len(scored) == 2
    assert {r["uncertainty"] for r in scored} == {"samples"}
    assert list(rows[0])[:8] == ["case", "target", "method", "region", "ssim", "psnr", "mse", "mae"]
    md = (ev / "summary.md").read_text(encoding="utf-8")
    assert "Uncertainty of the model (the spread over samples; 2 volumes): Spearman(std, |error|)" in md


def test_heldout_uncertainty_scores_a_std_that_equals_the_error_as_perfect(trained, tmp_path):
    """Evaluation scores the saved std against synthesis - truth as they are ([0, 1] image scale, no rescaling):
    a std equal to |error| ranks the error perfectly and covers it everywhere; a mismatch of scale would not."""
    import csv
    import json

    from medsci.tasks.synthesis.data import load_case
    from medsci.tasks.synthesis.evaluation import evaluate_heldout

    held = trained["ids"][3]
    case = load_case(trained["prep"], held)
    truth = case.image[MODALITIES.index("t2f")]
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, truth.shape).astype(np.float32) * case.mask
    (tmp_path / "s" / held).mkdir(parents=True)
    np.savez(tmp_path / "s" / held / f"{held}-t2f.npz", mean=truth + noise, std=np.abs(noise),
             uncertainty=np.array("variance"))
    ev = tmp_path / "ev"
    evaluate_heldout(trained["prep"], trained["ids"][:3], [held], tmp_path / "s", ev, targets=["t2f"])
    unc = json.loads((ev / "summary.json").read_text(encoding="utf-8"))["uncertainty"]
    assert unc["method"] == "variance" and unc["volumes"] == 1
    assert unc["spearman"] > 0.999 and unc["coverage90"] == 1.0 and unc["top_decile_ratio"] > 1.8
    assert "Uncertainty of the model (the variance head; 1 volumes)" in (ev / "summary.md").read_text("utf-8")
    row = next(r for r in csv.DictReader((ev / "metrics.csv").open(encoding="utf-8"))
               if r["method"] == "model" and r["region"] == "brain")
    assert float(row["unc_spearman"]) == pytest.approx(unc["spearman"]) and row["uncertainty"] == "variance"

    # A map half the size of the error: still ranks it, but the 90 % interval no longer covers it.
    np.savez(tmp_path / "s" / held / f"{held}-t2f.npz", mean=truth + noise, std=np.abs(noise) / 2,
             uncertainty=np.array("variance"))
    evaluate_heldout(trained["prep"], trained["ids"][:3], [held], tmp_path / "s", ev, targets=["t2f"])
    unc = json.loads((ev / "summary.json").read_text(encoding="utf-8"))["uncertainty"]
    assert unc["spearman"] > 0.999 and unc["coverage90"] < 0.9

    # No std saved (one sample, no head): no scores, a "none" line, never a crash.
    np.savez(tmp_path / "s" / held / f"{held}-t2f.npz", mean=truth + noise)
    evaluate_heldout(trained["prep"], trained["ids"][:3], [held], tmp_path / "s", ev, targets=["t2f"])
    unc = json.loads((ev / "summary.json").read_text(encoding="utf-8"))["uncertainty"]
    assert unc["method"] == "none" and unc["volumes"] == 0 and unc["spearman"] is None
    md = (ev / "summary.md").read_text(encoding="utf-8")
    assert "Uncertainty of the model: none (the model gave no uncertainty map)." in md


def test_several_cases_in_one_job_give_the_bytes_of_one_job_per_case(trained):
    """Scattered sampling (workflow `sample_jobs`): one model load for several cases, outputs as if run one by one."""
    ids = trained["ids"][2:]
    common = ["sample", "synthesis", "--config", str(TEST_CONFIG), "--checkpoint", str(trained["model"]),
              "--data", str(trained["prep"]), "--targets", "t2f", "--no-progress"]
    assert main([*common, "--case", *ids, "--out", str(trained["root"] / "together")]) == 0
    for case in ids:
        assert main([*common, "--case", case, "--out", str(trained["root"] / "alone")]) == 0
        together = trained["root"] / "together" / case / f"{case}-t2f.npz"
        assert _digest(together) == _digest(trained["root"] / "alone" / case / f"{case}-t2f.npz")
    assert _digest(trained["root"] / "together" / ids[0] / f"{ids[0]}-t2f.npz") != _digest(
        trained["root"] / "together" / ids[1] / f"{ids[1]}-t2f.npz")


def test_overlapping_train_and_heldout_cases_are_refused(trained, capsys):
    code = main(["evaluate", "synthesis", "--data", str(trained["prep"]), "--train-cases", *trained["ids"][:3],
                 "--cases", trained["ids"][0], "--samples", "x", "--out", str(trained["root"] / "e2")])
    assert code == 2 and "also in training" in capsys.readouterr().err


def test_new_cases_get_the_missing_contrast_on_their_own_grid(trained, capsys):
    """The clinician path: a folder of cases, each missing one contrast; bad cases fail alone."""
    raw, held = trained["raw"], trained["ids"][3]
    drop = trained["root"] / "dropbox"
    good = drop / held
    shutil.copytree(raw / held, good)
    (good / f"{held}-t2w.nii.gz").unlink()
    (good / f"{held}-seg.nii.gz").unlink()
    two_missing = drop / "two-missing"
    two_missing.mkdir()
    for m in ("t1n", "t1c"):
        shutil.copy(raw / held / f"{held}-{m}.nii.gz", two_missing / f"two-missing-{m}.nii.gz")
    before = {p: _digest(p) for p in drop.rglob("*.nii.gz")}
    out = trained["root"] / "brasyn"
    code = main(["sample", "synthesis", "--checkpoint", str(trained["model"]), "--input", str(drop),
                 "--out", str(out), "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "two-missing" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == [f"{held}-t2w.nii.gz"]
    result, ref = nib.load(out / f"{held}-t2w.nii.gz"), nib.load(good / f"{held}-t1n.nii.gz")
    assert result.shape == ref.shape
    np.testing.assert_allclose(result.affine, ref.affine, atol=1e-5)
    assert {p: _digest(p) for p in drop.rglob("*.nii.gz")} == before  # inputs never written to


def test_checkpoint_that_does_not_fit_the_data_is_refused(trained, tmp_path, capsys):
    import json

    bad = tmp_path / "model"
    shutil.copytree(trained["model"], bad)
    cfg = json.loads((bad / "config.json").read_text(encoding="utf-8"))
    cfg["preprocess"]["shape"] = [40, 40, 40]
    (bad / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    code = main(["sample", "synthesis", "--checkpoint", str(bad), "--data", str(trained["prep"]),
                 "--case", trained["ids"][3], "--out", str(tmp_path / "o")])
    assert code == 2 and "does not match" in capsys.readouterr().err

    (bad / "ema.safetensors").write_bytes(b"not a safetensors file")
    code = main(["sample", "synthesis", "--checkpoint", str(bad), "--data", str(trained["prep"]),
                 "--case", trained["ids"][3], "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "safetensors" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.nii.gz"))


def test_inference_window_is_checked_and_stored_in_image_voxels():
    from medsci.errors import ConfigError
    from medsci.tasks.synthesis.config import SynthesisConfig
    from medsci.tasks.synthesis.pipeline import checkpoint_config

    base = {"preprocess": {"shape": [64, 72, 64]},
            "model": {"unet": {"channels": [8, 16, 16], "attention_levels": [False] * 3, "norm_num_groups": 8},
                      "train_patch": [32, 32, 32]}}
    assert checkpoint_config(SynthesisConfig.from_dict(base))["window"] is None  # default: whole volume
    base["model"]["inference_window"] = [48, 48, 48]
    assert checkpoint_config(SynthesisConfig.from_dict(base))["window"] == [48, 48, 48]
    for bad in ([20, 20, 20], [48, 80, 48]):  # not divisible by 2 x 4, larger than the grid
        base["model"]["inference_window"] = bad
        with pytest.raises(ConfigError, match="inference_window"):
            SynthesisConfig.from_dict(base)


def test_steps_curve_compares_the_default_sampler_with_the_ddpm_reference():
    from medsci.tasks.synthesis.evaluation import curve_markdown

    def row(case, sampler, steps, nfe, ssim):
        return {"case": case, "target": "t2f", "sampler": sampler, "steps": steps, "network_evaluations": nfe,
                "brain_ssim": ssim, "brain_psnr": 20.0, "seconds": 1.0}

    curve = [row("a", "ddim", 10, 10, 0.80), row("a", "ddpm", 1000, 1000, 0.86),
             row("a", "ddim x4 (default)", 5, 20, 0.85),
             row("b", "ddpm", 1000, 1000, 0.90), row("b", "ddim x4 (default)", 5, 20, 0.90)]
    table, comparison = curve_markdown(curve)
    assert table.count("\n| a |") == 3 and "| b | t2f | ddpm | 1000 | 1000 |" in table
    assert comparison["volumes"] == 2
    assert comparison["difference"] == pytest.approx(-0.005)  # (0.85 + 0.90) / 2 - (0.86 + 0.90) / 2
    assert comparison["default_network_evaluations"] == 20
    curve[2]["brain_ssim"] = 0.84  # now 0.01 below the reference on average
    assert curve_markdown(curve)[1]["target_met"] is False
    curve[2]["brain_ssim"] = 0.87
    assert curve_markdown(curve)[1]["target_met"] is True
    # Without a 1000-step DDPM row the reference is the curve's longest point (rectified flow has no DDPM sampler);
    # case b then has none.
    fallback = curve_markdown([r for r in curve if r["steps"] < 1000])[1]
    assert fallback["reference_sampler"] == "ddim" and fallback["volumes"] == 1
    assert fallback["reference_brain_ssim"] == pytest.approx(0.80)
    assert fallback["few_step_within_0.003"] is None  # no point at <= 2 evaluations
    assert curve_markdown([r for r in curve if "(default)" in r["sampler"]])[1] is None


def test_summary_tables_skip_regions_without_data():
    from medsci.evaluation.tables import metric_stats
    from medsci.tasks.synthesis.evaluation import METRICS, markdown_table

    nan = {m: float("nan") for m in METRICS}
    brain = {m: 0.5 for m in METRICS}
    summary = {"all": {"model": {"brain": metric_stats([brain], METRICS), "tumour": metric_stats([nan], METRICS)}}}
    assert "| model | 0.5000" in markdown_table(summary, "brain")
    assert "| model |" not in markdown_table(summary, "tumour")  # no tumour in any case: no row, no crash


def test_checkpoint_records_its_geometry_and_refuses_mixed_training_spacings(trained):
    import json
    import types

    from medsci.errors import ConfigError
    from medsci.mri.preprocessing.config import PreprocessConfig
    from medsci.tasks.synthesis.pipeline import load_model, training_geometry

    geometry = json.loads((trained["model"] / "config.json").read_text(encoding="utf-8"))["geometry"]
    assert geometry == {"spacing": [6.67, 6.0, 5.17], "orientation": "RAS", "shape": [32, 32, 32],
                        "field_of_view_mm": [213.44, 192.0, 165.44]}
    assert load_model(trained["model"], "cpu").preprocess.spacing == (6.67, 6.0, 5.17)

    def case(cid, spacing):
        return types.SimpleNamespace(case_id=cid, sidecar={"resampled": {"spacing": spacing}})

    prep = PreprocessConfig(shape=(32, 32, 32))  # no spacing: the cases must share one
    same = training_geometry(prep, [case("a", [1.0, 1.0, 1.2]), case("b", [1.01, 1.0, 1.2])], "data")
    assert same["spacing"] == pytest.approx([1.005, 1.0, 1.2])
    with pytest.raises(ConfigError, match="training case b has voxels of .*set synthesis.preprocess.spacing"):
        training_geometry(prep, [case("a", [1.0, 1.0, 1.0]), case("b", [1.0, 1.0, 3.0]), case("c", [1.0] * 3)],
                          "data")


def test_batch_report_says_where_each_uncertainty_map_came_from(tmp_path):
    import csv

    from medsci.tasks.synthesis.clinical import CaseRecord, write_summary

    records = [CaseRecord("a", "done", "t2f", uncertainty_mean=0.1, uncertainty_p95=0.2, uncertainty="variance"),
               CaseRecord("b", "done", "t2f", uncertainty_mean=0.3, uncertainty_p95=0.4, uncertainty="samples"),
               CaseRecord("c", "done", "t2f")]
    write_summary(tmp_path, records)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<p>Uncertainty: std over samples; std from the network's variance head (brain mean" in page
    assert "0.1000 / 0.2000<br><small>std from the network&#x27;s variance head</small>" in page
    assert "0.3000 / 0.4000<br><small>std over samples</small>" in page
    rows = list(csv.DictReader((tmp_path / "summary.csv").open(encoding="utf-8")))
    assert [r["uncertainty"] for r in rows] == ["variance", "samples", ""]
    assert list(rows[0])[:7] == ["case_id", "status", "target", "seconds", "uncertainty_mean", "uncertainty_p95",
                                 "network_evaluations"]  # the new column comes last
    write_summary(tmp_path, records[2:])
    assert "<p>Uncertainty: no case has an uncertainty map.</p>" in (tmp_path / "report.html").read_text("utf-8")
