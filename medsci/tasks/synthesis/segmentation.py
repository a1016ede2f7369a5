"""BraSyn's downstream test: a tumour segmenter scores a synthesis by the segmentation it allows.

BraSyn (BraTS 2024 synthesis) runs a tumour segmenter on each case with the synthesised contrast in place of the
real one and compares the Dice per region with what the real contrast gives. Here a MONAI ``SegResNet`` (3D,
4 input contrasts in :data:`MODALITIES` order, 3 sigmoid outputs) is trained on the training cases' preprocessed
volumes (all four real contrasts), BraTS region-based: the outputs are the overlapping regions

* WT (whole tumour) = labels {1, 2, 3}, TC (tumour core) = {1, 3}, ET (enhancing tumour) = {3},

with BraTS 2023 labels 1 = necrotic core (NCR), 2 = oedema (ED), 3 = enhancing tumour (ET) (the demo data's
``SEG_OF_TISSUE`` writes the same). Loss: Dice (sigmoid, over the batch) + binary cross-entropy per region.

A segmenter folder holds ``model.safetensors`` (weights, read with safetensors only) and ``config.json``
(``task``, the network's arguments, the training patch, the training cases, the settings it was trained with);
a user's own segmenter in that format is used as is (``synthesis.segmentation.weights``).

Torch and MONAI are imported inside the functions: the config section below is imported by ``medsci --help``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsci.config_section import ConfigSection
from medsci.errors import ConfigError, InputError
from medsci.mri.cases import MODALITIES  # the network's input order

TASK = "mri-synthesis-segmenter"
REGIONS = ("WT", "TC", "ET")
REGION_LABELS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}  # BraTS 2023 labels per region
DIVISOR = 8  # SegResNet downsamples three times: whole-volume inputs are padded to a multiple of 8
TUMOUR_CENTRED = 0.5  # share of training patches centred on a tumour voxel (the rest: on a brain voxel)
INTENSITY_SCALE = 0.1  # per-channel intensity factor 1 + U(-0.1, 0.1) ...
INTENSITY_SHIFT = 0.1  # ... and offset U(-0.1, 0.1), inside the brain (images are in [0, 1])
BCE_WEIGHT = 1.0  # loss = Dice + BCE_WEIGHT x binary cross-entropy, per region
SEGMENTATION_METHODS = ("real", "model", "first_guess", "cubic", "regression", "mean", "zeros")
EMPTY_CONVENTION = ("empty truth and empty prediction = 1.0; empty truth and a non-empty prediction = 0.0 "
                    "(BraTS convention; MONAI compute_dice with ignore_empty=False)")


@dataclass
class SegmentationConfig(ConfigSection):
    """``synthesis.segmentation``: the segmenter of the downstream (BraSyn) test."""

    enabled: bool = True
    # A folder with config.json + model.safetensors in this module's format: used instead of training one.
    weights: str | None = None
    channels: int = 8  # SegResNet init_filters
    steps: int = 600
    batch_size: int = 2
    lr: float = 0.003
    # Training patches (voxels; multiples of 8) centred on tumour or brain voxels, and sliding windows of that
    # size at inference; null = whole volumes.
    patch: tuple[int, int, int] | None = (32, 32, 32)
    seed: int = 0

    def __post_init__(self):
        if self.channels < 1 or self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError("synthesis.segmentation: channels, steps and batch_size must be >= 1 and lr > 0")
        if self.patch is not None and (len(self.patch) != 3 or any(p < DIVISOR or p % DIVISOR for p in self.patch)):
            raise ConfigError(f"synthesis.segmentation.patch {self.patch} must be 3 multiples of {DIVISOR} (or null)")


# ---------------------------------------------------------------------------------------------- labels, Dice
def region_masks(seg: np.ndarray) -> np.ndarray:
    """BraTS labels (X, Y, Z) -> bool (3, X, Y, Z): WT, TC, ET."""
    seg = np.asarray(seg)
    return np.stack([np.isin(seg, REGION_LABELS[r]) for r in REGIONS])


def dice_regions(pred: np.ndarray, truth_seg: np.ndarray) -> dict[str, float]:
    """Dice per region of ``pred`` (bool (3, X, Y, Z): WT, TC, ET) against the BraTS labels ``truth_seg``.

    Convention (BraTS): a region absent from the truth scores 1.0 when the prediction is empty too and 0.0
    otherwise, so every case counts in every region's mean.
    """
    import torch
    from monai.metrics import compute_dice

    pred = np.asarray(pred, dtype=bool)
    truth = region_masks(truth_seg)
    if pred.shape != truth.shape:
        raise InputError(f"prediction {pred.shape} does not match the labels {truth.shape}")
    values = compute_dice(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]), include_background=True,
                          ignore_empty=False)[0]
    return {r: float(v) for r, v in zip(REGIONS, values.tolist())}


# ---------------------------------------------------------------------------------------------- network
def architecture(cfg: SegmentationConfig) -> dict[str, Any]:
    """Arguments of ``monai.networks.nets.SegResNet`` (stored in config.json)."""
    return {"name": "SegResNet", "spatial_dims": 3, "in_channels": len(MODALITIES), "out_channels": len(REGIONS),
            "init_filters": cfg.channels, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1],
            "norm": ["GROUP", {"num_groups": math.gcd(8, cfg.channels)}], "dropout_prob": None}


def build_network(arch: dict[str, Any]):
    from monai.networks.nets import SegResNet

    arch = dict(arch)
    if arch.pop("name", "SegResNet") != "SegResNet":
        raise ConfigError("only SegResNet segmenters are supported")
    if arch.get("in_channels") != len(MODALITIES) or arch.get("out_channels") != len(REGIONS):
        raise ConfigError(f"a segmenter takes {len(MODALITIES)} contrasts and gives {len(REGIONS)} regions")
    norm = arch.pop("norm", None)
    if norm is not None:
        arch["norm"] = (norm[0], dict(norm[1])) if isinstance(norm, (list, tuple)) else norm
    for key in ("blocks_down", "blocks_up"):
        if key in arch:
            arch[key] = tuple(arch[key])
    return SegResNet(**arch)


@dataclass
class Segmenter:
    network: Any  # torch.nn.Module in eval mode
    config: dict
    device: Any
    window: tuple[int, int, int] | None  # sliding-window size at inference; None = whole volume


def load_segmenter(folder: str | Path, device: str | None = "cpu") -> Segmenter:
    """A segmenter folder (config.json + model.safetensors); weights are read with safetensors only."""
    from medsci.diffusion.checkpoint import load_weights, read_checkpoint_config
    from medsci.diffusion.device import default_device

    config = read_checkpoint_config(folder, TASK)
    try:
        network = build_network(config["model"])
        window = tuple(int(p) for p in config["patch"]) if config.get("patch") else None
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"segmenter config lacks or mangles {err}", folder) from None
    load_weights(folder, network, use_ema=False)
    dev = default_device(device)
    return Segmenter(network.to(dev).eval(), config, dev, window)


def _logits(segmenter: Segmenter, x):
    """Network logits for a (1, 4, X, Y, Z) tensor: sliding windows of the training patch, or the whole volume
    padded to a multiple of 8."""
    import warnings

    import torch.nn.functional as F

    if segmenter.window is not None:
        from monai.inferers import sliding_window_inference

        with warnings.catch_warnings():  # MONAI's own indexing, deprecated by torch: nothing the user can do
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            return sliding_window_inference(x, segmenter.window, sw_batch_size=4, predictor=segmenter.network,
                                            overlap=0.25, mode="gaussian")
    shape = x.shape[2:]
    pad = [(-s) % DIVISOR for s in shape]
    x = F.pad(x, [v for p in reversed(pad) for v in (0, p)])
    out = segmenter.network(x)
    return out[(slice(None), slice(None), *(slice(0, s) for s in shape))].contiguous() if any(pad) else out


def segment(model: Segmenter, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Regions WT, TC, ET (bool (3, X, Y, Z)) of a case ``image`` (4, X, Y, Z) in [0, 1], MODALITIES order:
    sigmoid > 0.5 inside the brain ``mask`` (default: voxels where any contrast is non-zero). A patch-trained
    segmenter runs on Gaussian-blended sliding windows (its training patch size, overlap 0.25) over the brain's
    bounding box; a whole-volume one on the whole volume, padded to a multiple of 8."""
    import torch

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise InputError(f"a segmenter needs (4, X, Y, Z) images, got {image.shape}")
    mask = image.any(axis=0) if mask is None else np.asarray(mask, dtype=bool)
    regions = np.zeros((len(REGIONS), *image.shape[1:]), dtype=bool)
    if not mask.any():
        return regions
    box = (slice(None),)
    if model.window is not None:
        # Windows tile the brain's bounding box only: a window of mostly background normalises (GroupNorm) unlike
        # the brain-centred training patches and fires at random. Demo: held-out WT Dice 0.47 -> 0.92.
        nz = np.argwhere(mask)
        box = (slice(None), *(slice(int(a), int(b) + 1) for a, b in zip(nz.min(0), nz.max(0))))
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image[box]))[None].to(model.device)
        regions[box] = (_logits(model, x)[0] > 0).cpu().numpy()  # sigmoid > 0.5 <=> logit > 0
    return regions & mask[None]


# ---------------------------------------------------------------------------------------------- training
class SegmentationTrainingData:
    """Batches of (images (B, 4, ...), regions (B, 3, ...)) from the training cases' real contrasts.

    Every random draw comes from the step's generator: patches centred on a tumour voxel (share
    :data:`TUMOUR_CENTRED`) or a brain voxel, flips along each axis with p = 0.5, and a per-channel intensity
    scale and shift inside the brain. Cases stay in memory as loaded (4 float32 contrasts, uint8 labels, mask).
    """

    def __init__(self, cases, patch: tuple[int, int, int] | None):
        import torch

        shape = tuple(int(s) for s in cases[0].image.shape[1:])
        if any(tuple(c.image.shape[1:]) != shape for c in cases):
            raise InputError("training cases differ in shape")
        if any(c.seg is None for c in cases):
            raise InputError(f"training case without labels: {[c.case_id for c in cases if c.seg is None]}")
        need = np.maximum(shape, patch) if patch else np.array(shape)
        need = need + (-need) % DIVISOR  # whole volumes: SegResNet needs multiples of 8
        pad = [(0, int(n - s)) for n, s in zip(need, shape)]

        def padded(a, *lead):
            return torch.from_numpy(np.pad(a, [*lead, *pad]) if any(p for _, p in pad) else a)

        self.images = [padded(c.image.astype(np.float32), (0, 0)) for c in cases]
        self.segs = [padded(c.seg.astype(np.uint8)) for c in cases]
        self.masks = [padded(c.mask.astype(bool)) for c in cases]
        self.patch = tuple(patch) if patch else None
        self.tumour = [torch.from_numpy(np.argwhere(c.seg > 0)) for c in cases]
        self.brain = [torch.from_numpy(np.argwhere(c.mask)) for c in cases]

    def _window(self, i: int, generator) -> tuple:
        import torch

        shape = self.segs[i].shape
        if self.patch is None:
            return tuple(slice(None) for _ in shape)
        tumour = len(self.tumour[i]) > 0 and float(torch.rand(1, generator=generator)) < TUMOUR_CENTRED
        voxels = self.tumour[i] if tumour else self.brain[i]
        if len(voxels) == 0:
            voxels = torch.tensor([[s // 2 for s in shape]])
        centre = voxels[torch.randint(0, len(voxels), (1,), generator=generator)][0]
        size = torch.tensor(self.patch)
        start = torch.minimum(torch.clamp(centre - size // 2, min=0), torch.tensor(shape) - size)
        return tuple(slice(int(a), int(a + b)) for a, b in zip(start, size))

    def batch(self, generator, batch_size: int):
        import torch

        idx = torch.randint(0, len(self.images), (batch_size,), generator=generator).tolist()
        images, regions = [], []
        for i in idx:
            window = self._window(i, generator)
            seg = self.segs[i][window]
            # 4 contrasts, 3 regions, the brain mask: flipped together.
            item = torch.cat([self.images[i][(slice(None), *window)],
                              torch.stack([torch.isin(seg, torch.tensor(REGION_LABELS[r], dtype=seg.dtype))
                                           for r in REGIONS]).float(),
                              self.masks[i][window][None].float()])
            for axis in range(3):
                if float(torch.rand(1, generator=generator)) < 0.5:
                    item = item.flip(axis + 1)
            n = len(MODALITIES)
            scale = 1 + INTENSITY_SCALE * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
            shift = INTENSITY_SHIFT * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
            images.append((item[:n] * scale + shift) * item[-1:])
            regions.append(item[n: n + len(REGIONS)])
        return torch.stack(images), torch.stack(regions)


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, min(50, steps // 10))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Torch's CPU threads for this call only (callers keep their own setting)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(cfg: SegmentationConfig, data_dir, case_ids, dev, progress: bool):
    import torch
    from monai.losses import DiceLoss

    from medsci.diffusion.training import step_generator
    from medsci.tasks.synthesis.data import load_training_cases

    data = SegmentationTrainingData(load_training_cases(data_dir, list(case_ids)), cfg.patch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        network = build_network(architecture(cfg))
    network.to(dev).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg.steps))
    dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    bce = torch.nn.BCEWithLogitsLoss()
    log = ["step,loss,lr,seconds"]
    started = time.monotonic()
    report_every = max(1, cfg.steps // 20)
    for step in range(cfg.steps):
        images, target = data.batch(step_generator(cfg.seed, step), cfg.batch_size)
        images, target = images.to(dev), target.to(dev)
        logits = network(images)
        loss = dice(logits, target) + BCE_WEIGHT * bce(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        elapsed = time.monotonic() - started
        log.append(f"{step + 1},{value:.6g},{optimizer.param_groups[0]['lr']:.6g},{elapsed:.2f}")
        if progress and ((step + 1) % report_every == 0 or step + 1 == cfg.steps):
            print(f"train-segmenter: step {step + 1}/{cfg.steps} loss {value:.4f} elapsed {elapsed:.0f}s "
                  f"eta {elapsed / (step + 1) * (cfg.steps - step - 1):.0f}s", file=sys.stderr, flush=True)
    return network.eval(), log, time.monotonic() - started


def fit_segmenter(cfg: SegmentationConfig, data_dir: str | Path, case_ids: list[str], device: str | None = "cpu",
                  threads: int | None = None, progress: bool = False):
    """The trained network (in eval mode), nothing written."""
    from medsci.diffusion.device import default_device

    with _torch_threads(threads):
        return _fit(cfg, data_dir, case_ids, default_device(device), progress)[0]


def train_segmenter(cfg: SegmentationConfig, data_dir: str | Path, case_ids: list[str], out: str | Path,
                    device: str | None = "cpu", threads: int | None = None, progress: bool = True) -> Path:
    """Train a SegResNet on the preprocessed training cases; writes ``out/model.safetensors``, ``loss.csv`` and
    (last, atomically) ``out/config.json``. The same seed gives the same weights on CPU."""
    import torch

    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.device import default_device
    from medsci.io.atomic import write_text_atomic

    out = Path(out)
    dev = default_device(device)
    with _torch_threads(threads):
        network, log, seconds = _fit(cfg, data_dir, case_ids, dev, progress)
        used_threads = torch.get_num_threads()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").unlink(missing_ok=True)  # the folder is complete once config.json is back
    write_text_atomic(out / "loss.csv", "\n".join(log) + "\n")
    config = {
        "task": TASK,
        "model": architecture(cfg),
        "patch": list(cfg.patch) if cfg.patch else None,
        "regions": {r: list(REGION_LABELS[r]) for r in REGIONS},
        "modalities": list(MODALITIES),
        "input": "preprocessed contrasts in [0, 1] (medsci preprocess synthesis), MODALITIES order, zero outside "
                 "the brain; outputs: sigmoid per region, > 0.5 = inside",
        "training_cases": list(case_ids),
        "spec": cfg.to_dict(),
        "steps": cfg.steps,
        "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / cfg.steps, 4),
        "device": str(dev),
        "threads": used_threads,
    }
    return save_checkpoint(out, config, network)


# ---------------------------------------------------------------------------------------------- evaluation
def real_contrasts_dice(segmenter: Segmenter, case) -> dict[str, float]:
    """Dice per region of the segmentation from the case's four real contrasts (the upper reference)."""
    return dice_regions(segment(segmenter, case.image, case.mask), case.seg)


def case_dice_rows(segmenter: Segmenter, case, target: str, predictions: dict[str, np.ndarray],
                   real: dict[str, float] | None = None) -> list[dict]:
    """Dice rows (case, target, method, region, dice) of one held-out case and target: each prediction of the
    target contrast put in place of the real one, the missing channel left at zero ("zeros"), and the four real
    contrasts ("real", computed once per case when ``real`` is given)."""
    index = MODALITIES.index(target)
    scores = {"real": real if real is not None else real_contrasts_dice(segmenter, case)}
    for method, pred in {**predictions, "zeros": np.zeros_like(case.image[index])}.items():
        image = case.image.copy()
        image[index] = pred
        scores[method] = dice_regions(segment(segmenter, image, case.mask), case.seg)
    return [{"case": case.case_id, "target": target, "method": method, "region": region, "dice": values[region]}
            for method, values in scores.items() for region in REGIONS]


def summarize_dice(rows: list[dict]) -> dict:
    """``{target | "all": {method: {region: {mean, std, n}}}}``."""
    from collections import defaultdict

    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        for target in (r["target"], "all"):
            groups[(target, r["method"], r["region"])].append(r["dice"])
    out: dict = {}
    for (target, method, region), values in sorted(groups.items()):
        v = np.asarray(values, dtype=np.float64)
        out.setdefault(target, {}).setdefault(method, {})[region] = {
            "mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
    return out


def dice_markdown(summary: dict, targets: list[str], cases: int) -> str:
    """The "Downstream segmentation (BraSyn)" section of summary.md."""
    methods = [m for m in SEGMENTATION_METHODS if m in summary.get("all", {})]
    methods += sorted(set(summary.get("all", {})) - set(methods))
    lines = ["\n## Downstream segmentation (BraSyn)\n",
             f"Dice of a SegResNet tumour segmentation against the ground-truth labels, with the missing contrast "
             f"replaced by each method's prediction; `real` = the four real contrasts (upper reference), `zeros` = "
             f"the missing channel left at zero. Mean ± std over {cases} held-out case(s) x {len(targets)} "
             f"target(s); WT = labels 1+2+3, TC = 1+3, ET = 3; {EMPTY_CONVENTION}.\n",
             "| method | Dice WT | Dice TC | Dice ET |", "|---|---|---|---|"]
    for m in methods:
        e = summary["all"][m]
        lines.append(f"| {m} | " + " | ".join(f"{e[r]['mean']:.4f} ± {e[r]['std']:.4f}" for r in REGIONS) + " |")
    lines += ["", "Per missing contrast (Dice WT / TC / ET):", "",
              "| method | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for m in methods:
        cells = []
        for t in targets:
            e = summary.get(t, {}).get(m)
            cells.append(" / ".join(f"{e[r]['mean']:.3f}" for r in REGIONS) if e else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- CLI
def register_segmentation_commands(subparsers) -> None:
    """Top-level command ``medsci train-segmenter`` (hooked into the synthesis generator's register_commands)."""
    from medsci.commands.args import add_command

    p = add_command(subparsers, "train-segmenter", run_train_segmenter, common=True)
    p.add_argument("--data", required=True, help="folder of preprocessed cases (<case>.npz + .json)")
    p.add_argument("--cases", nargs="+", required=True, help="training case ids")
    p.add_argument("--out", required=True, help="segmenter folder")


def run_train_segmenter(args) -> int:
    """train the tumour segmenter of the downstream (BraSyn) test of MRI synthesis

    A MONAI SegResNet (4 real contrasts -> WT/TC/ET sigmoid regions) trained on preprocessed cases, settings from
    synthesis.segmentation; writes model.safetensors + config.json.
    """
    from medsci.commands.args import check_outputs
    from medsci.config import load_config

    check_outputs(args.out, [args.data, args.config])
    config = load_config(args.config)
    # Progress is a line every 5% of the steps (on stderr), with or without --no-progress.
    out = train_segmenter(config.synthesis.segmentation, args.data, args.cases, args.out,
                          device=args.device or config.device, threads=args.threads)
    print(f"segmenter: {out}")
    return 0
