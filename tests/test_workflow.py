"""The Snakemake workflow: lint-clean, config validated, and the tiny preset runs end to end."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import run_snakemake as _run, tree_checksums
from medsci.config import load_config
from medsci.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_lint_is_clean():
    res = _run(["--lint"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations" in res.stdout + res.stderr


@pytest.mark.parametrize("name", ["demo.yaml", "test.yaml", "brats.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.synthesis.preprocess.shape[0] % 8 == 0


def test_unknown_or_wrong_keys_are_refused_with_the_file_named(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "test.yaml").read_text(encoding="utf-8"))
    data["defaults"] = str(REPO / "configs" / data["defaults"])
    data["synthesis"]["train"]["stepz"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml.*stepz"):
        load_config(bad)
    data["synthesis"]["train"].pop("stepz")
    data["synthesis"]["preprocess"]["shape"] = [30, 32, 32]  # not divisible by Haar x UNet levels
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="divisible"):
        load_config(bad)


def _check_seismic_outputs(folder):
    """Tables with every method for every pattern, finite figures, reconstructions as SEG-Y with the input's headers."""
    import numpy as np

    from medsci.io.segy import read_cube

    summary = json.loads((folder / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["metrics"]) == {"random", "block", "decimate"}
    for pattern, methods in summary["metrics"].items():
        assert set(methods) == {"model", "model_unguided", "linear", "pocs", "mssa"}, pattern
        for method, values in methods.items():
            assert np.isfinite(values["snr_missing"]["mean"]) and 0 < values["ssim_inline"]["mean"] <= 1, method
    assert summary["cubes"] == ["cube_002"] and summary["training_cubes"] == ["cube_000", "cube_001"]
    assert [r["steps"] for r in summary["benchmark"]] == [2, 2] and summary["sampling"]["model"]["windows_per_cube"] > 0
    text = (folder / "evaluation" / "summary.md").read_text(encoding="utf-8")
    assert "| random | model |" in text and "| decimate | pocs |" in text and "Sampling benchmark" in text
    truth = read_cube(folder / "demo_data" / "cube_002.segy")
    for pattern in ("random", "block", "decimate"):
        out = folder / "reconstructions" / "cube_002" / f"cube_002-{pattern}-model.segy"
        rec = read_cube(out)
        npy = np.load(folder / "reconstructions" / "cube_002" / f"cube_002-{pattern}-model.npy")
        assert rec.shape == truth.shape and np.array_equal(rec.data, npy)
        # Headers come from the input: the same 3600-byte textual + binary header.
        assert out.read_bytes()[:3600] == (folder / "demo_data" / "cube_002.segy").read_bytes()[:3600]
        mask = np.load(folder / "masks" / f"cube_002-{pattern}.npy")
        assert np.array_equal(rec.data[mask], truth.data[mask])  # observed traces kept exactly
    assert (folder / "evaluation" / "benchmark.png").is_file() and any((folder / "evaluation" / "sections").iterdir())


def _check_rotation_outputs(folder):
    """Every method scored for every axis, the remapped inputs and the guidance variants; figures written."""
    summary = json.loads((folder / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert summary["cts"] == ["ct_002"]
    assert set(summary["by_axis_magnitude"]) == {"x10", "y10", "z10", "xyz"}
    for key, methods in summary["by_axis_magnitude"].items():
        assert set(methods) == {"identity", "warp", "model", "model_full_guidance", "model_no_guidance"}, key
        assert all(0 < m["ssim"] <= 1 for m in methods.values())
    assert set(summary["remaps"]) == {"none", "gamma0.6"}
    # 2 DDIM steps with guidance: 4 evaluations at most (fewer when adaptive guidance stops early), 2 without.
    nfe = summary["network_evaluations"]
    assert nfe["model_full_guidance"] == 4 and nfe["model_no_guidance"] == 2 and 2 < nfe["model"] <= 4
    assert (folder / "evaluation" / "figures" / "ct_002_grid.png").is_file()
    assert (folder / "evaluation" / "figures" / "ct_002_sweep.gif").is_file()
    assert (folder / "model" / "ema.safetensors").is_file()


def _check_longitudinal_outputs(folder):
    """Every method scored on the held-out subject's predicted sessions, with forecasts, tables and figures."""
    import csv

    import numpy as np

    summary = json.loads((folder / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert summary["subjects"] == ["sub-002"] and summary["predictions"] >= 1
    assert set(summary["metrics"]) == {"model", "copy_last", "linear", "deformation"}
    for method, values in summary["metrics"].items():
        assert 0 < values["brain_ssim"]["mean"] <= 1 and np.isfinite(values["brain_psnr"]["mean"]), method
    # The model's samples spread: a forecast std per predicted session and for the session after the last.
    forecasts = summary["forecast_uncertainty"]["sub-002"]
    assert len(forecasts) == 1 + 1 and all(f["mean_std"] > 0 and f["horizon_days"] > 0 for f in forecasts)
    assert summary["network_evaluations"] and summary["quality_bar"]["model_changed_ssim"] is not None
    rows = list(csv.DictReader((folder / "evaluation" / "metrics.csv").open(encoding="utf-8")))
    assert {r["method"] for r in rows} == set(summary["metrics"]) and {r["subject"] for r in rows} == {"sub-002"}
    text = (folder / "evaluation" / "summary.md").read_text(encoding="utf-8")
    assert "| copy_last |" in text and "## Forecast uncertainty" in text
    assert (folder / "evaluation" / "figures" / "sub-002.png").stat().st_size > 1000
    assert (folder / "model" / "ema.safetensors").is_file()


def _check_batch(results, run, tmp_path):
    """synthesis.batch: new cases through the workflow with the model it trained, one job per case."""
    import csv

    demo = run / "synthesis" / "demo_data"
    batch = tmp_path / "batch"
    cases = sorted(p.name for p in demo.iterdir() if p.is_dir())[-2:]
    for case, keep in zip(cases, (("t1n", "t1c", "t2w"), ("t1n",))):
        (batch / case).mkdir(parents=True)
        for mod in keep:
            shutil.copy(demo / case / f"{case}-{mod}.nii.gz", batch / case)
    extra = tmp_path / "batch.yaml"
    extra.write_text(yaml.safe_dump({"synthesis": {"batch": {"input": str(batch)}}}), encoding="utf-8")
    inputs = tree_checksums(batch)
    res = _run(["--cores", "2", "--configfile", "configs/test.yaml", str(extra), "--config", f"results={results}",
                "--quiet", "rules"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = {r["case_id"]: r for r in csv.DictReader((run / "synthesis" / "batch" / "summary.csv").open(encoding="utf-8"))}
    assert rows[cases[0]]["status"] == "done" and rows[cases[0]]["target"] == "t2f"
    assert rows[cases[1]]["status"] == "refused" and "one missing contrast at a time" in rows[cases[1]]["reason"]
    assert (run / "synthesis" / "batch" / cases[0] / f"{cases[0]}_t2f_SYNTHETIC.nii.gz").is_file()
    assert sorted(p.name for p in batch.rglob("*")) == sorted(
        [*cases, *(f"{c}-{m}.nii.gz" for c, ms in zip(cases, (("t1n", "t1c", "t2w"), ("t1n",))) for m in ms)])
    assert tree_checksums(batch) == inputs


def test_tiny_preset_runs_end_to_end(tiny_workflow, tmp_path):
    results = tiny_workflow.results
    assert tiny_workflow.configs_untouched
    configs = tree_checksums(REPO / "configs")
    run = results / "test"
    summary = json.loads((run / "synthesis" / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    # The model's own first guess (quadratic regression) is scored as an ablation beside the baselines.
    # ... and the cubic regression, the strongest classical method measured on the demo.
    assert set(summary["metrics"]["all"]) == {"model", "first_guess", "cubic", "regression", "mean"}
    brain = {m: summary["metrics"]["all"][m]["brain"]["mse"]["mean"] for m in ("first_guess", "cubic", "regression")}
    assert len(set(brain.values())) == 3  # three different fits, not one copied
    assert summary["sampling"]["network_evaluations_per_volume"] == 3 * 2  # 3 DDIM steps x 2 samples
    assert len(summary["steps_curve"]) == 2 + 1  # two step counts + the configured default
    assert [r["sampler"] for r in summary["steps_curve"]] == ["ddim", "ddpm", "ddim x2 (default)"]
    comparison = summary["default_vs_reference_sampler"]
    assert comparison["reference_network_evaluations"] == 20 and comparison["default_network_evaluations"] == 6
    assert comparison["reference_sampler"] == "ddpm"
    # The curve's 2-step point is the best one at <= 2 network evaluations.
    assert comparison["best_at_most_2_evaluations"] == summary["steps_curve"][0]["brain_ssim"]
    assert "20-step DDPM reference" in (run / "synthesis" / "evaluation" / "summary.md").read_text(encoding="utf-8")
    # BraSyn's downstream test: a segmenter trained on the training cases, Dice per method and region.
    assert set(summary["segmentation"]["metrics"]["all"]) == {"real", "model", "first_guess", "cubic", "regression",
                                                              "mean", "zeros"}
    assert "## Downstream segmentation (BraSyn)" in (run / "synthesis" / "evaluation" / "summary.md").read_text(
        encoding="utf-8")
    assert (run / "synthesis" / "segmenter" / "model.safetensors").is_file()
    assert (run / "synthesis" / "evaluation" / "steps_curve.png").is_file()
    assert json.loads((run / "synthesis" / "preprocessed" / "summary.json").read_text(encoding="utf-8"))
    assert (run / "config.yaml").is_file()
    _check_seismic_outputs(run / "seismic")
    _check_rotation_outputs(run / "rotation")
    _check_longitudinal_outputs(run / "longitudinal")
    # Nothing left to do on a second run.
    res = _run(["--cores", "2", "--configfile", "configs/test.yaml", "--config", f"results={results}", "-n"])
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
    _check_batch(results, run, tmp_path)
    # The HTML report bundles the tables and figures, the SSIM-vs-steps curve among them.
    html = tmp_path / "report.html"
    res = _run(["--configfile", "configs/test.yaml", "--config", f"results={results}", "--report", str(html)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = html.read_text(encoding="utf-8", errors="replace")
    # A report item, not just a rule output listed: its caption (workflows/report/steps_curve.rst) is there.
    assert "steps_curve.png" in text and "longest point over all training timesteps" in text
    assert tree_checksums(REPO / "configs") == configs
