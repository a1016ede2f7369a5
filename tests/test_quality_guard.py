"""Quality regression guard: a tiny seismic model, trained for seconds, beats its own first guess on held-out cubes.

The generator diffuses the residual over a POCS first guess, and a network that learned nothing returns that
first guess (zero-initialised output layer; the second test checks the baseline is exactly that). So "model SNR >
first-guess SNR" only holds if training, the conditioning and the guided sampler all work: a broken loss, an unseen
condition, a lost offset, a wrong amplitude scale or window blending leave the model at, or below, its first guess.
Tiny preset and margin chosen by measurement; figures: docs/measurements.md#seismic-quality-guard
"""

from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from medsci.evaluation.metrics import snr_db
from medsci.tasks.seismic.conditioning import denormalise, first_guess, normalise, reinsert_observed, robust_scale
from medsci.tasks.seismic.config import SeismicConfig
from medsci.tasks.seismic.demo import make_seismic_cube
from medsci.tasks.seismic.evaluation import cube_metrics
from medsci.tasks.seismic.masks import regular_decimation

SHAPE = (16, 16, 32)
N_TRAIN, N_HELDOUT = 6, 8
MARGIN_DB = 0.15  # pooled SNR gain over the first guess that the model must exceed: half the smallest gain measured

GUARD = {
    "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                       "num_head_channels": 8},
              "schedule": {"beta_end": 0.2}, "patch": [8, 8, 32], "guess_bank": 8,
              "mask_weights": {"decimate": 1.0}},  # domain haar, condition pocs, residual: the defaults
    "train": {"steps": 300, "batch_size": 4, "lr": 1e-3, "warmup_steps": 20, "ema_decay": 0.99,
              "checkpoint_every": 1000, "seed": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 5, "n_samples": 2, "seed": 0},
    "inference": {"sw_batch_size": 16, "overlap": 0.5},
}


def _cube(i: int) -> np.ndarray:
    return make_seismic_cube(SHAPE, np.random.default_rng([7, i]))


def _own_first_guess(loaded, observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The first guess exactly as ``reconstruct`` makes its condition and offset, back in amplitudes."""
    scale = robust_scale(observed[mask], loaded.scale_percentile, loaded.scale_value)
    guess = first_guess(normalise(np.where(mask[..., None], observed, 0.0), scale), mask, loaded.condition)
    return reinsert_observed(denormalise(guess, scale), observed, mask)


@contextmanager
def _one_thread():
    """One torch thread (what ``train.threads`` sets for the process; put back after): on shared 2-core machines
    two threads of this tiny network run several times slower, and one thread is one summation order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.pipeline import load_model, reconstruct, train_seismic

    root = tmp_path_factory.mktemp("quality_guard")
    with _one_thread():
        paths = [write_cube(root / f"train_{i}.npy", _cube(i)) for i in range(N_TRAIN)]
        loaded = load_model(train_seismic(SeismicConfig.from_dict(GUARD), paths, root / "model", "cpu",
                                          progress=False), "cpu")
        cases = []
        for i in range(N_TRAIN, N_TRAIN + N_HELDOUT):
            truth = _cube(i)
            mask = regular_decimation(SHAPE, 2, axis=0)  # every 2nd inline missing
            observed = np.where(mask[..., None], truth, 0.0).astype(np.float32)
            cases.append({"truth": truth, "mask": mask, "observed": observed,
                          "guess": _own_first_guess(loaded, observed, mask),
                          "model": reconstruct(loaded, observed, mask).data})
    return loaded, cases


def _pooled_snr(cases, method: str) -> float:
    missing = [np.broadcast_to(~c["mask"][..., None], SHAPE) for c in cases]
    return snr_db(np.concatenate([c[method][m] for c, m in zip(cases, missing)]),
                  np.concatenate([c["truth"][m] for c, m in zip(cases, missing)]))


def test_trained_model_beats_its_own_first_guess_on_heldout_cubes(guard):
    _, cases = guard
    guess_snr, model_snr = _pooled_snr(cases, "guess"), _pooled_snr(cases, "model")
    per_cube = [cube_metrics(c["model"], c["truth"], c["mask"])["snr_missing"]
                - cube_metrics(c["guess"], c["truth"], c["mask"])["snr_missing"] for c in cases]
    guess_ssim = np.mean([cube_metrics(c["guess"], c["truth"], c["mask"])["ssim_inline"] for c in cases])
    model_ssim = np.mean([cube_metrics(c["model"], c["truth"], c["mask"])["ssim_inline"] for c in cases])
    digest = hashlib.sha256(b"".join(c["model"].tobytes() for c in cases)).hexdigest()[:16]
    print(f"first guess {guess_snr:.3f} dB / SSIM {guess_ssim:.4f}; model {model_snr:.3f} dB / SSIM "
          f"{model_ssim:.4f}; per cube {np.round(per_cube, 2).tolist()}; digest {digest}")
    for c in cases:
        assert np.array_equal(c["model"][c["mask"]], c["truth"][c["mask"]])  # observed traces kept bit-exact
        assert np.isfinite(c["model"]).all()
    assert model_snr > guess_snr + MARGIN_DB
    assert float(np.mean(per_cube)) > MARGIN_DB / 2 and sum(d > 0 for d in per_cube) >= N_HELDOUT // 2


def test_the_first_guess_compared_against_is_what_an_untrained_network_returns(guard):
    """A network with a zeroed output layer (what training starts from) reproduces the test's first guess, so
    the comparison above is against the model's own starting point, not some other baseline."""
    from medsci.tasks.seismic.pipeline import reconstruct

    loaded, cases = guard
    untrained = copy.copy(loaded)
    untrained.model = copy.deepcopy(loaded.model)
    out_conv = untrained.model.unet.out[-1]
    with torch.no_grad():
        for p in out_conv.parameters():
            p.zero_()
    c = cases[0]
    with _one_thread():
        rec = reconstruct(untrained, c["observed"], c["mask"]).data
    np.testing.assert_allclose(rec, c["guess"], rtol=0, atol=1e-5 * float(np.abs(c["truth"]).max()))
    assert not np.allclose(c["model"], c["guess"], atol=1e-3)  # and the trained one did move away from it
