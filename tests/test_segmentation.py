"""BraSyn's downstream test: region Dice, the SegResNet segmenter (training, checkpoint, determinism, that it
learns the BraTS regions) and the segmentation table of the held-out evaluation."""

import argparse
import csv
import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medsci.preprocessing.store import SIDECAR_VERSION
from medsci.tasks.synthesis.evaluation import evaluate_heldout
from medsci.tasks.synthesis.segmentation import (
    REGIONS,
    SegmentationConfig,
    dice_regions,
    fit_segmenter,
    load_segmenter,
    register_segmentation_commands,
    segment,
    train_segmenter,
)

SHAPE = (24, 24, 24)


def test_dice_regions_known_values_and_the_empty_region_convention():
    seg = np.zeros((6, 6, 6), np.uint8)
    seg[0, 0, :4] = 2  # oedema: WT only
    seg[1, 0, :2] = 1  # necrotic core: WT and TC
    seg[2, 0, :2] = 3  # enhancing: WT, TC and ET
    pred = np.zeros((3, 6, 6, 6), bool)
    pred[0] = seg > 0  # WT exact: 1.0
    pred[1, 1, 0, :2] = True  # TC: 2 of the 4 true voxels + 2 false ones: 2*2 / (4 + 4) = 0.5
    pred[1, 5, 5, :2] = True
    # ET: nothing predicted although the truth has 2 voxels: 0.0
    assert dice_regions(pred, seg) == pytest.approx({"WT": 1.0, "TC": 0.5, "ET": 0.0})
    pred[2, 2, 0, :1] = True  # ET: 1 of 2 -> 2*1 / (1 + 2)
    assert dice_regions(pred, seg)["ET"] == pytest.approx(2 / 3)
    # A region the truth lacks: 1.0 when the prediction lacks it too, 0.0 otherwise (BraTS).
    no_tumour = np.zeros_like(seg)
    assert dice_regions(np.zeros_like(pred), no_tumour) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    one = np.zeros_like(pred)
    one[2, 3, 3, 3] = True
    assert dice_regions(one, no_tumour) == {"WT": 1.0, "TC": 1.0, "ET": 0.0}
    oedema_only = np.where(seg == 2, 2, 0).astype(np.uint8)
    assert dice_regions(pred, oedema_only)["TC"] == 0.0 and dice_regions(pred, oedema_only)["WT"] == pytest.approx(
        2 * 4 / (4 + 8))


def _blob_case(rng):
    """A tumour of three nested balls (ET inside TC inside WT) that the contrasts show plainly: t1c bright in ET
    and dark in the necrotic core, t2w bright in TC, t2f bright in WT, t1n dark in WT. Returns images, mask,
    labels, and the regions built from the geometry (not from the labels)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    mask = (((grid - 11.5) / 10.5) ** 2).sum(0) <= 1
    centre = rng.uniform(9, 14, 3)
    r = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    r_wt = rng.uniform(6.0, 8.0)
    wt, tc, et = r <= r_wt, r <= r_wt - 1.5, r <= r_wt - 3
    seg = np.zeros(SHAPE, np.uint8)
    seg[wt] = 2
    seg[tc] = 1
    seg[et] = 3
    image = 0.45 + 0.05 * rng.standard_normal((4, *SHAPE))
    image[0][wt] -= 0.25
    image[1][et] += 0.4
    image[1][tc & ~et] -= 0.3  # necrosis: dark on t1c
    image[2][tc] += 0.35
    image[3][wt] += 0.4
    image = np.clip(image, 0, 1) * mask
    return image.astype(np.float32), mask, seg, np.stack([wt, tc, et]) & mask


def _write_cases(folder, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids, geometry = [], {}
    for i in range(n):
        cid = f"BLOB-{seed}-{i:03d}"
        image, mask, seg, regions = _blob_case(rng)
        np.savez(folder / f"{cid}.npz", image=image, mask=mask.astype(np.uint8), seg=seg)
        (folder / f"{cid}.json").write_text(json.dumps({"version": SIDECAR_VERSION,
                                                        "available": ["t1n", "t1c", "t2w", "t2f"]}), encoding="utf-8")
        ids.append(cid)
        geometry[cid] = regions
    return ids, geometry


TINY = SegmentationConfig(channels=4, steps=3, batch_size=2, lr=1e-3, patch=(16, 16, 16), seed=3)


def test_training_writes_safetensors_and_json_reloads_identically_and_is_deterministic(tmp_path):
    data = tmp_path / "prep"
    ids, _ = _write_cases(data, 3, seed=0)
    a = train_segmenter(TINY, data, ids, tmp_path / "a", device="cpu", threads=1)
    assert sorted(p.name for p in a.iterdir()) == ["config.json", "loss.csv", "model.safetensors"]
    config = json.loads((a / "config.json").read_text(encoding="utf-8"))
    assert config["task"] == "mri-synthesis-segmenter" and config["training_cases"] == ids
    assert config["model"]["init_filters"] == 4 and config["model"]["out_channels"] == 3
    assert config["patch"] == [16, 16, 16] and config["spec"]["steps"] == 3
    assert config["regions"] == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    # Same seed twice: the same weights.
    b = train_segmenter(TINY, data, ids, tmp_path / "b", device="cpu", threads=1)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    other = load_file(str(train_segmenter(SegmentationConfig(**{**TINY.to_dict(), "seed": 4, "patch": (16, 16, 16)}),
                                          data, ids, tmp_path / "c", device="cpu", threads=1) / "model.safetensors"))
    assert any(not torch.equal(wa[k], other[k]) for k in wa)
    # The reloaded segmenter gives what the network gave in memory at the end of training.
    network = fit_segmenter(TINY, data, ids, device="cpu", threads=1)
    loaded = load_segmenter(a)
    x = torch.from_numpy(np.load(data / f"{ids[0]}.npz")["image"])[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), network.eval()(x), rtol=0, atol=0)
    image = x[0].numpy()
    assert np.array_equal(segment(loaded, image), segment(load_segmenter(a), image))
    assert segment(loaded, image).shape == (3, *SHAPE) and segment(loaded, image).dtype == bool


def test_cli_trains_a_segmenter(tmp_path):
    import yaml

    data = tmp_path / "prep"
    ids, _ = _write_cases(data, 2, seed=5)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"device": "cpu", "synthesis": {"segmentation": {**TINY.to_dict(), "steps": 2}}}), encoding="utf-8")
    parser = argparse.ArgumentParser()
    register_segmentation_commands(parser.add_subparsers())
    args = parser.parse_args(["train-segmenter", "--config", str(cfg), "--data", str(data), "--cases", *ids,
                              "--out", str(tmp_path / "seg"), "--threads", "1"])
    assert args.handler(args) == 0
    assert json.loads((tmp_path / "seg" / "config.json").read_text(encoding="utf-8"))["steps"] == 2


@pytest.fixture(scope="module")
def blob_segmenter(tmp_path_factory):
    """A segmenter trained for a few CPU seconds on easy cases (bright nested balls)."""
    root = tmp_path_factory.mktemp("blobs")
    train_ids, _ = _write_cases(root / "prep", 6, seed=1)
    # ~10 s on one thread; Dice on held-out balls > 0.95 (100 steps at batch 4: ET 0.44, still learning).
    cfg = SegmentationConfig(channels=4, steps=300, batch_size=2, lr=1e-2, patch=(16, 16, 16), seed=0)
    folder = train_segmenter(cfg, root / "prep", train_ids, root / "segmenter", device="cpu", threads=1,
                             progress=False)
    return root, train_ids, folder


def _geometric_dice(pred, truth):
    return {r: 2 * (p & t).sum() / (p.sum() + t.sum()) for r, p, t in zip(REGIONS, pred, truth)}


def test_a_briefly_trained_segmenter_finds_the_three_regions(blob_segmenter):
    root, _, folder = blob_segmenter
    held_ids, geometry = _write_cases(root / "held", 3, seed=2)
    segmenter = load_segmenter(folder)
    scores = []
    for cid in held_ids:
        with np.load(root / "held" / f"{cid}.npz") as z:
            image, mask = z["image"], z["mask"].astype(bool)
        pred = segment(segmenter, image, mask)
        # Against regions drawn from the geometry: a wrong label -> region mapping would fail here.
        scores.append(_geometric_dice(pred, geometry[cid]))
    mean = {r: float(np.mean([s[r] for s in scores])) for r in REGIONS}
    assert min(mean.values()) > 0.8, mean


def test_evaluation_adds_the_downstream_segmentation_table(blob_segmenter, tmp_path):
    root, train_ids, folder = blob_segmenter
    held_ids, _ = _write_cases(root / "prep", 1, seed=7)  # beside the training cases
    held = held_ids[0]
    with np.load(root / "prep" / f"{held}.npz") as z:
        image = z["image"]
    samples = tmp_path / "samples" / held
    samples.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for target, index in (("t2f", 3), ("t1c", 1)):
        np.savez(samples / f"{held}-{target}.npz", mean=np.clip(image[index] + 0.02 * rng.standard_normal(SHAPE),
                                                                  0, 1).astype(np.float32))
    out = tmp_path / "eval"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_heldout(root / "prep", train_ids, [held], tmp_path / "samples", out, targets=["t2f", "t1c"],
                         segmenter=folder)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    seg = summary["segmentation"]["metrics"]
    assert set(seg) == {"all", "t2f", "t1c"}
    assert set(seg["all"]) == {"real", "model", "cubic", "regression", "mean", "zeros"}
    assert set(summary["metrics"]["all"]) == {"model", "cubic", "regression", "mean"}  # the image tables are unchanged
    real, zeros = seg["all"]["real"], seg["all"]["zeros"]
    assert real["WT"]["mean"] > 0.8 and real["WT"]["n"] == 2  # one case x two targets
    assert all(real[r]["mean"] >= zeros[r]["mean"] for r in REGIONS)
    # Without t2f (the channel that shows the oedema) the whole tumour is lost; a near-exact synthesis keeps it.
    assert seg["t2f"]["zeros"]["WT"]["mean"] < seg["t2f"]["real"]["WT"]["mean"]
    assert seg["t2f"]["model"]["WT"]["mean"] > seg["t2f"]["zeros"]["WT"]["mean"]
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    dice = [r for r in rows if r["dice"] != ""]
    # targets x (real, model, cubic, regression, mean, zeros) x regions
    assert {r["region"] for r in dice} == set(REGIONS) and len(dice) == 2 * 6 * 3
    assert {r["region"] for r in rows if r["dice"] == ""} == {"volume", "brain", "tumour"}
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Downstream segmentation (BraSyn)" in text and "| real |" in text and "| zeros |" in text
    assert text.index("## Missing t1c") < text.index("## Downstream segmentation")
