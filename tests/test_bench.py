"""`medsci bench`: items come from the engine and the registry; the synthesis item times what the preset runs."""

from pathlib import Path

import pytest
import yaml

from medsci import bench
from medsci.tasks.synthesis import bench as synthesis_bench

REPO = Path(__file__).resolve().parents[1]


def test_items_are_the_engine_haar_item_plus_every_generators_items():
    items = bench.items()
    assert items["haar"] == "medsci.bench:bench_haar_item"
    assert {"preprocessing", "synthesis-demo", "synthesis-brats", "seismic"} <= set(items)
    assert "synthesis-brats" not in bench.default_items()  # a GPU node's item: only with --full
    assert items["load"] == "medsci.tasks.synthesis.bench_load:bench_load_item" and "load" not in bench.default_items()
    assert items["synthesis-fullres"] == "medsci.tasks.synthesis.bench_fullres:bench_fullres_item"
    assert "synthesis-fullres" not in bench.default_items()  # minutes on a CPU: only asked for



def test_synthesis_item_follows_the_preset_patch_batch_window_and_sampler(monkeypatch):
    from medsci.diffusion import inference

    windows = []

    class RecordingWindows(inference.WindowedNetwork):
        def __init__(self, model, roi_size, *args, **kw):
            windows.append(tuple(roi_size))
            super().__init__(model, roi_size, *args, **kw)

    monkeypatch.setattr(inference, "WindowedNetwork", RecordingWindows)
    tiny = {"preprocess": {"shape": [16, 16, 16]},
            "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8},
                      "train_patch": [8, 8, 8], "inference_window": [12, 12, 12]},
            "train": {"batch_size": 3}, "sample": {"steps": 2, "n_samples": 3}}
    out = synthesis_bench.bench_synthesis(tiny, device="cpu", steps=1)
    assert out["train_batch"] == 3 and out["train_patch"] == [8, 8, 8] and out["haar_grid"] == [8, 8, 8]
    assert out["network_evaluations_per_volume"] == 2 * 3  # steps x samples
    assert out["inference_window"] == [12, 12, 12] and out["train_step_s"] > 0 and out["sample_s_per_volume"] > 0
    assert windows == [(12, 12, 12)]  # sampled through windows in image voxels, as the pipeline does
    one = synthesis_bench.bench_synthesis(tiny, device="cpu", steps=1, sample_steps=4)
    assert one["network_evaluations_per_volume"] == 4 and one["samples_averaged"] == 1


@pytest.mark.parametrize("preset", ["demo", "brats"])
def test_bench_presets_match_the_shipped_configs(preset):
    """The bench times the configs' networks: a preset that drifted from configs/<preset>.yaml fails here."""
    shipped = yaml.safe_load((REPO / "configs" / f"{preset}.yaml").read_text(encoding="utf-8"))["synthesis"]
    base = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))["synthesis"]
    ours = synthesis_bench.PRESETS[preset]
    assert ours["preprocess"]["shape"] == shipped["preprocess"]["shape"]
    for key, value in ours["model"].items():
        expected = shipped["model"].get(key, base["model"].get(key))
        if key == "unet":
            assert all(expected[k] == v for k, v in value.items()), key
        else:
            assert expected == value, key
    assert ours["train"]["batch_size"] == shipped["train"]["batch_size"]
    for key, value in ours["sample"].items():
        assert shipped["sample"][key] == value, key


def test_unknown_preset_is_a_key_error():
    with pytest.raises(KeyError):
        synthesis_bench.bench_synthesis("nope", device="cpu")


def test_fullres_item_reads_the_shipped_brats_preset():
    """What the full-size run samples with is configs/brats.yaml's sampler and network, whatever they are now."""
    from medsci.config import read_preset
    from medsci.tasks.synthesis import bench_fullres

    shipped = read_preset(REPO / "configs" / "brats.yaml")["synthesis"]
    section = bench_fullres.preset_section()
    assert section["sample"] == shipped["sample"] and section["model"]["unet"] == shipped["model"]["unet"]
    assert bench_fullres.preset_section({"sample": {"steps": 3}})["sample"] == {**shipped["sample"], "steps": 3}
    assert bench_fullres.NATIVE_SHAPE == (240, 240, 155)


def test_fullres_item_runs_the_synthesize_command_end_to_end_on_a_small_case(tmp_path):
    """The item at 48x48x32 with a tiny network with a variance head: NIfTI in, `medsci synthesize` in a child
    process, the missing t2f out on the input's grid, and finite positive figures in its result."""
    import math

    import nibabel as nib
    import numpy as np

    from medsci.tasks.synthesis import bench_fullres
    from medsci.tasks.synthesis.demo import default_spacing

    shape = (48, 48, 32)
    tiny = {"preprocess": {"shape": list(shape), "spacing": list(default_spacing(shape)), "divisor": 8},
            "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1,
                               "norm_num_groups": 8, "num_head_channels": 8, "variance_head": True},
                      "schedule": {"objective": "rflow"}},
            "sample": {"sampler": "auto", "steps": 2, "n_samples": 1, "uncertainty": "auto"}}
    out = bench_fullres.bench_fullres("cpu", shape=shape, overrides=tiny, threads=1, workdir=str(tmp_path),
                                      keep=True, log=lambda *_: None)
    assert math.isfinite(out["seconds_per_volume"]) and out["seconds_per_volume"] > 0
    assert 0 < out["case_seconds"] <= out["seconds_per_volume"]
    assert 0 < out["peak_rss_gb"] < 64 and out["threads"] == 1 and out["device"] == "cpu"
    assert out["network_evaluations"] == 2 and out["sampler"]["sampler"] == "euler"
    assert out["uncertainty"] == "variance" and out["input_shape"] == list(shape)
    work = Path(out["workdir"])
    case = next((work / "input").iterdir())
    ref, made = nib.load(case / f"{case.name}-t1n.nii.gz"), nib.load(work / out["output"])
    assert made.shape == ref.shape and out["output_on_input_grid"]
    np.testing.assert_allclose(made.affine, ref.affine, atol=1e-5)
    assert not any(p.name.endswith(("-t2f.nii.gz", "-seg.nii.gz")) for p in case.iterdir())  # t2f is missing
    std = next(work.glob("output/*/*_SYNTHETIC_std.nii.gz"))
    assert "variance head" in nib.load(std).header["descrip"].tobytes().decode()
    assert "std from the network&#x27;s variance head" in (work / "output" / "report.html").read_text("utf-8")
