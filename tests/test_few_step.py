"""The few-step engine (issue 24): the rectified-flow objective and Euler sampler, the variance head, and the
refusals of samplers and uncertainty methods a checkpoint cannot provide."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import (InferenceConfig, SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig,
                                     resolve_sampler)
from medsci.diffusion.inference import generate
from medsci.diffusion.networks import build_network, network_spec
from medsci.diffusion.sampling import sample
from medsci.diffusion.schedulers import build_scheduler, noise_levels, training_timesteps
from medsci.diffusion.training import TrainingBatch, train
from medsci.errors import ConfigError, MedsciError
from medsci.evaluation.uncertainty import uncertainty_scores

RFLOW = ScheduleConfig(objective="rflow")

# x0 = condition + noise whose std grows from left to right: the conditional mean is the condition, and a
# variance head that learned anything ranks the right-hand columns as the uncertain ones.
RAMP = torch.linspace(0.02, 0.5, 16).view(1, 1, 1, 16)


def _toy(generator: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.randn(b, 1, 16, 16, generator=generator).cumsum(-1) * 0.1
    return c, c + RAMP * torch.randn(b, 1, 16, 16, generator=generator)


class ToyTask:
    def batch(self, generator, batch_size):
        c, x0 = _toy(generator, batch_size)
        return TrainingBatch(x0=x0, conditions=Conditions(condition=c))


def _spec(head: bool) -> dict:
    unet = UNetConfig(channels=(16, 32), attention_levels=(False, False), norm_num_groups=8, variance_head=head)
    return network_spec(unet, 2, 1, condition_channels=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = build_network(_spec(True))
    out = tmp_path_factory.mktemp("rflow")
    cfg = TrainConfig(steps=250, batch_size=8, lr=2e-3, warmup_steps=10, checkpoint_every=1000)
    train(model, ToyTask(), RFLOW, cfg, out, {"model": _spec(True), "schedule": RFLOW.to_dict()}, progress=False)
    return model.eval(), out


def test_one_euler_step_gives_the_conditional_mean_and_a_calibrated_std(trained):
    model, _ = trained
    c, x0 = _toy(torch.Generator().manual_seed(5), 4)
    optimal = float(((c - x0) ** 2).mean())  # the error of the true conditional mean
    res = generate(model, RFLOW, SamplerConfig(steps=1, n_samples=1), InferenceConfig(), Conditions(condition=c),
                   tuple(x0.shape))
    assert res.network_evaluations == 1
    assert res.uncertainty == "variance"
    mse = float(((res.mean - x0) ** 2).mean())
    assert mse < 1.25 * optimal
    scores = uncertainty_scores(res.std.numpy(), (res.mean - x0).numpy())
    # The ramp's std spans 25x: a head that learned it ranks errors (~0.5 here) and covers ~90 %.
    assert scores["spearman"] > 0.35
    assert scores["top_decile_ratio"] > 1.6
    assert 0.8 < scores["coverage90"] < 0.97
    # Larger on the right, where the noise is.
    assert float(res.std[..., -4:].mean()) > 5 * float(res.std[..., :4].mean())


def test_checkpoint_records_the_objective_and_refuses_other_samplers(trained, tmp_path):
    from medsci.commands.args import check_steps_fit
    from medsci.errors import InputError

    _, folder = trained
    stored = json.loads((folder / "config.json").read_text())
    assert stored["schedule"]["objective"] == "rflow"
    # Only config.json: the refusal comes before any weights are read.
    bare = tmp_path / "ck"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(stored))

    class Args:
        sampler, steps, n_samples, guidance_scale, seed, uncertainty = "ddim", None, None, None, None, None

    with pytest.raises(InputError, match="ddpm objective.*trained with rflow"):
        check_steps_fit(bare, None, Args())
    Args.sampler = "euler"
    check_steps_fit(bare, None, Args())
    Args.steps = 1001
    with pytest.raises(InputError, match="1001 sampling steps exceed the 1000"):
        check_steps_fit(bare, 1001, Args())


def test_samplers_and_uncertainty_a_model_cannot_provide_are_refused():
    ddpm = ScheduleConfig()
    assert resolve_sampler(SamplerConfig(), RFLOW, False).sampler == "euler"
    assert resolve_sampler(SamplerConfig(), ddpm, False).sampler == "ddim"
    with pytest.raises(ConfigError, match="sampler euler needs a model trained with the rflow objective; this one "
                                          "was trained with ddpm"):
        resolve_sampler(SamplerConfig(sampler="euler"), ddpm, False)
    with pytest.raises(ConfigError, match="sampler ddpm needs .* ddpm objective; this one was trained with rflow"):
        resolve_sampler(SamplerConfig(sampler="ddpm"), RFLOW, False)
    with pytest.raises(ConfigError, match="variance_head: true; this one can provide: samples"):
        resolve_sampler(SamplerConfig(uncertainty="variance"), RFLOW, False)
    with pytest.raises(ConfigError, match="n_samples >= 2 \\(got 1\\)"):
        resolve_sampler(SamplerConfig(uncertainty="samples", n_samples=1), RFLOW, True)
    with pytest.raises(ConfigError, match="1001 sampling steps exceed"):
        resolve_sampler(SamplerConfig(steps=1001), RFLOW, False)
    with pytest.raises(ConfigError, match="sampling steps must be >= 1"):
        SamplerConfig(steps=0)
    with pytest.raises(ConfigError, match="not epsilon"):
        ScheduleConfig(objective="rflow", prediction_type="epsilon")
    # auto: the head when there is one, else the spread of several samples, else nothing.
    assert resolve_sampler(SamplerConfig(n_samples=1), RFLOW, True).uncertainty == "variance"
    assert resolve_sampler(SamplerConfig(n_samples=3), RFLOW, False).uncertainty == "samples"
    assert resolve_sampler(SamplerConfig(n_samples=1), RFLOW, False).uncertainty == "none"


def test_a_preset_pairing_an_objective_with_another_objectives_sampler_is_refused_when_read():
    from medsci.config import config_from_dict

    data = {"name": "x", "seismic": {"enabled": True, "model": {"schedule": {"objective": "rflow"}},
                                     "sample": {"sampler": "ddim"}}}
    with pytest.raises(MedsciError, match="seismic: sampler ddim needs a model trained with the ddpm objective"):
        config_from_dict(data)
    data["seismic"]["sample"]["sampler"] = "euler"
    assert config_from_dict(data).seismic.model.schedule.objective == "rflow"


class FixedHead(torch.nn.Module):
    """x0 = the condition, log-variance log(0.25): the std the engine reports must be exactly 0.5."""

    variance_head = True

    def forward(self, x, t, conditions):
        c = conditions.condition
        return torch.cat([c, torch.full_like(c, float(np.log(0.25)))], 1)


@pytest.mark.parametrize("n_samples", [1, 3])
def test_std_is_the_heads_plus_the_spread_of_samples(n_samples):
    c = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = generate(FixedHead(), RFLOW, SamplerConfig(steps=2, n_samples=n_samples), InferenceConfig(),
                   Conditions(condition=c), (1, 1, 8, 8))
    # A deterministic x0 = c: Euler steps land on c, no spread; the head's variance alone.
    assert torch.allclose(res.mean, c, atol=1e-5)
    assert torch.allclose(res.std, torch.full_like(c, 0.5), atol=1e-5)
    assert res.network_evaluations == 2 * n_samples
    none = generate(FixedHead(), RFLOW, SamplerConfig(steps=2, uncertainty="none"), InferenceConfig(),
                    Conditions(condition=c), (1, 1, 8, 8))
    assert none.std is None and none.uncertainty == "none"


def test_known_entries_come_out_exact_with_zero_uncertainty_under_euler_input_guidance():
    c = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    known = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., ::2] = 1
    res = sample(FixedHead(), RFLOW, SamplerConfig(steps=3), Conditions(condition=c), (1, 1, 8, 8),
                 generator=torch.Generator().manual_seed(0), known=known, known_mask=mask, resample_jumps=1,
                 overwrite_known=False)
    assert torch.equal(res.sample[mask.bool()], known[mask.bool()])  # the last step noises known to level 0
    assert float(res.variance[mask.bool()].abs().max()) == 0.0
    assert torch.allclose(res.variance[~mask.bool()], torch.tensor(0.25))
    assert res.network_evaluations == 3 * 2  # steps x (1 + jumps)


def test_training_timesteps_cover_the_pure_noise_end_for_rflow():
    g = torch.Generator().manual_seed(0)
    t = training_timesteps(RFLOW, 20000, g)
    assert int(t.min()) == 1 and int(t.max()) == 1000  # 1..T: the Euler sampler starts at t = T
    # ddpm draws exactly what it always drew (resumed and old runs stay byte-identical).
    t_ddpm = training_timesteps(ScheduleConfig(), 64, torch.Generator().manual_seed(3))
    assert torch.equal(t_ddpm, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))
    shifted = training_timesteps(ScheduleConfig(objective="rflow", timestep_sampling="logit-normal", logit_loc=1.5),
                                 20000, torch.Generator().manual_seed(0))
    assert 0.78 < float(shifted.float().median()) / 1000 < 0.85  # sigmoid(1.5) = 0.818
    signal, noise = noise_levels(build_scheduler(RFLOW, "euler"), 1000)
    assert float(signal) == 0.0 and float(noise) == 1.0
