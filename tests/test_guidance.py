"""Classifier-free guidance on a trained toy model (CPU, seeded, one thread, ~30 s of CPU time).

16x16 bars whose angle a is a ``vector`` condition (sin 2a, cos 2a), dropped with p = 0.2 in training; each
training bar is jittered by 0.3 rad, so guidance has something to sharpen (without jitter it only overshoots).
The fit is the MSE between a sample and the bar at exactly angle a. Checked: the null is learned, guidance fits
the condition better, adaptive guidance saves evaluations at equal fit, sampling is seeded, untrained kinds refused.
Figures (per setting and training seed, the null, runtime): docs/measurements.md#classifier-free-guidance-toy
"""

from __future__ import annotations

import math

import pytest
import torch

from medsci.diffusion.checkpoint import load_weights, read_checkpoint_config
from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig
from medsci.diffusion.networks import build_network, network_spec
from medsci.diffusion.sampling import guided_kinds, sample
from medsci.diffusion.training import TrainingBatch, train
from medsci.errors import ConfigError

SIZE = 16
JITTER = 0.3  # rad: the bar of a training image lies within ~17 degrees of the angle its condition names
N_EVAL = 32  # conditions sampled per setting
STEPS = 20  # DDIM steps
SCALE = 3.0
ADAPTIVE = 0.95
SCHEDULE = ScheduleConfig(prediction_type="sample")
UNET = UNetConfig(channels=(16, 32), attention_levels=(False, False), norm_num_groups=8, num_head_channels=32)
TRAIN = TrainConfig(steps=300, batch_size=16, lr=2e-3, warmup_steps=20, ema_decay=0.99,
                    condition_dropout={"vector": 0.2}, checkpoint_every=10**6, seed=0)

_c = (SIZE - 1) / 2
_YY, _XX = torch.meshgrid(torch.arange(SIZE) - _c, torch.arange(SIZE) - _c, indexing="ij")


def bars(angle: torch.Tensor) -> torch.Tensor:
    """(B, 1, SIZE, SIZE) bars through the centre at ``angle`` (rad), +1 on the bar, -1 around it."""
    dist = (-torch.sin(angle)[:, None, None] * _XX + torch.cos(angle)[:, None, None] * _YY).abs()
    disc = ((_XX**2 + _YY**2).sqrt() < 0.45 * SIZE).float()
    return (2 * torch.exp(-dist**2) * disc - 1)[:, None]


def condition_of(angle: torch.Tensor) -> Conditions:
    return Conditions(vector=torch.stack([torch.sin(2 * angle), torch.cos(2 * angle)], 1))  # a and a + pi alike


class JitteredBars:
    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        angle = torch.rand(batch_size, generator=generator) * math.pi
        x0 = bars(angle + JITTER * torch.randn(batch_size, generator=generator))
        return TrainingBatch(x0=x0, conditions=condition_of(angle))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(EMA network loaded back from its checkpoint, spec, checkpoint folder), trained once per module.

    The module runs on one torch thread (restored afterwards): the convolutions are tiny, and on a loaded 2-core
    machine two threads made the whole module 15 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = network_spec(UNET, 2, 1, vector_dim=2, dropout_kinds=TRAIN.dropout_kinds)
        out = tmp_path_factory.mktemp("guidance_toy")
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the initial weights
            model = build_network(spec)
        train(model, JitteredBars(), SCHEDULE, TRAIN, out, {"model": spec}, progress=False)
        net = load_weights(out, build_network(read_checkpoint_config(out)["model"]), use_ema=True).eval()
        yield net, spec, out
    finally:
        torch.set_num_threads(threads)


def draw(net, scale: float, adaptive: float | None = None):
    """Samples for the N_EVAL evaluation angles (fixed seeds): (angles, SampleResult)."""
    angle = torch.rand(N_EVAL, generator=torch.Generator().manual_seed(123)) * math.pi
    sampler = SamplerConfig(steps=STEPS, guidance_scale=scale, adaptive_guidance=adaptive)
    return angle, sample(net, SCHEDULE, sampler, condition_of(angle), (N_EVAL, 1, SIZE, SIZE),
                         generator=torch.Generator().manual_seed(7), x0_transform=lambda x: x.clamp(-1, 1))


@pytest.fixture(scope="module")
def evaluate(toy):
    """``evaluate(scale, adaptive)`` -> (per-sample MSE to the dictated bar, SampleResult), cached per setting."""
    cache = {}

    def run(scale: float, adaptive: float | None = None):
        if (scale, adaptive) not in cache:
            angle, res = draw(toy[0], scale, adaptive)
            mse = ((res.sample.clamp(-1, 1) - bars(angle)) ** 2).mean(dim=(1, 2, 3))
            cache[scale, adaptive] = (mse, res)
        return cache[scale, adaptive]

    return run


def test_the_null_is_learned_unconditional_prediction_forgets_the_angle(toy):
    """From pure noise the conditional x0 estimate is the dictated bar, the dropped one the average of all bars."""
    net = toy[0]
    angle = torch.arange(8) * math.pi / 8
    cond = condition_of(angle)
    x_t = torch.randn(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    t = torch.full((8,), SCHEDULE.num_train_timesteps - 1)
    with torch.no_grad():
        x0_c = net(x_t, t, cond)
        x0_u = net(x_t, t, cond.drop(("vector",)))
    target = bars(angle)
    err_c = ((x0_c - target) ** 2).mean().item()
    err_u = ((x0_u - target) ** 2).mean().item()
    assert err_c < 0.7 * err_u, (err_c, err_u)
    # The unconditional estimate hardly depends on which angle the (dropped) condition named.
    spread_u = x0_u.std(0).mean().item()
    spread_c = x0_c.std(0).mean().item()
    assert spread_u < 0.5 * spread_c, (spread_u, spread_c)


def test_guidance_scale_above_one_fits_the_condition_better(evaluate):
    mse1, res1 = evaluate(1.0)
    mse2, res2 = evaluate(2.0)
    mse3, res3 = evaluate(SCALE)
    assert res1.network_evaluations == STEPS and res1.guided_steps == 0
    assert res3.network_evaluations == 2 * STEPS and res3.guided_steps == STEPS
    # Measured 0.112 -> 0.065 (scale 2) -> 0.060 (scale 3); 29-47 % less over training seeds 0-2.
    assert mse2.mean() < 0.8 * mse1.mean(), (mse1.mean(), mse2.mean())
    assert mse3.mean() < 0.8 * mse1.mean(), (mse1.mean(), mse3.mean())
    # Not a few lucky samples: most conditions come out closer to their bar.
    assert (mse3 < mse1).float().mean() > 0.5, (mse3 < mse1).float().mean()


def test_adaptive_guidance_saves_evaluations_at_equal_fit(evaluate):
    mse1, _ = evaluate(1.0)
    mse_full, full = evaluate(SCALE)
    mse_ad, ad = evaluate(SCALE, ADAPTIVE)
    # Measured 35 of 40 evaluations (15 guided steps of 20); MSE 0.060 vs 0.060 with full guidance (ratio up to
    # 1.11 over training seeds 0-2), 0.112 without guidance.
    assert STEPS < ad.network_evaluations < full.network_evaluations
    assert ad.network_evaluations == STEPS + ad.guided_steps
    assert 0 < ad.guided_steps < STEPS
    assert mse_ad.mean() < 1.2 * mse_full.mean(), (mse_ad.mean(), mse_full.mean())
    # ... and keeps most of what guidance gained over scale 1 (measured 87-108 %).
    assert mse1.mean() - mse_ad.mean() > 0.7 * (mse1.mean() - mse_full.mean()), (mse1.mean(), mse_ad.mean())


def test_guidance_is_seeded(evaluate, toy):
    _, res = evaluate(SCALE, ADAPTIVE)
    _, again = draw(toy[0], SCALE, ADAPTIVE)
    assert torch.equal(again.sample, res.sample)
    assert again.network_evaluations == res.network_evaluations


def test_guidance_needs_a_kind_the_model_was_trained_to_drop(toy):
    net, spec, _ = toy
    cond = condition_of(torch.zeros(2))
    shape = (2, 1, SIZE, SIZE)
    assert guided_kinds(net, SamplerConfig(guidance_scale=2.0), cond) == ("vector",)
    assert guided_kinds(net, SamplerConfig(guidance_scale=1.0, guidance=("labels",)), cond) == ()  # no guidance
    # Labels: not trained with a null (and not even present).
    with pytest.raises(ConfigError, match="condition dropout"):
        sample(net, SCHEDULE, SamplerConfig(steps=2, guidance_scale=2.0, guidance=("labels",)), cond, shape,
               generator=torch.Generator().manual_seed(0))
    # A model trained without condition dropout has no null to guide with.
    plain = build_network({**spec, "null_kinds": []}).eval()
    with pytest.raises(ConfigError, match="condition dropout"):
        sample(plain, SCHEDULE, SamplerConfig(steps=2, guidance_scale=2.0), cond, shape,
               generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="vector"):
        guided_kinds(plain, SamplerConfig(guidance_scale=2.0, guidance=("vector",)), cond)
