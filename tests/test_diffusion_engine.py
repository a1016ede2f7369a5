"""The shared diffusion engine: samplers, guidance, input guidance, training, resume, checkpoints."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from medsci.diffusion.checkpoint import load_training_state, load_weights, read_checkpoint_config
from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig
from medsci.diffusion.schedulers import build_scheduler, set_inference_steps
from medsci.diffusion.networks import FlipAveraged, WindowedNetwork, build_network, network_spec
from medsci.diffusion.sampling import sample, to_x0
from medsci.diffusion.training import TrainingBatch, lr_factor, train
from medsci.errors import ConfigError

SCHEDULE = ScheduleConfig()


class Oracle(torch.nn.Module):
    """Knows the clean sample; answers in the requested prediction type (and counts its calls)."""

    null_kinds = ("condition",)

    def __init__(self, x0, prediction_type="sample", schedule=SCHEDULE, bias_uncond=0.0):
        super().__init__()
        self.x0, self.kind, self.calls, self.bias_uncond = x0, prediction_type, 0, bias_uncond
        self.alphas = build_scheduler(schedule, "train").alphas_cumprod

    def forward(self, x_t, t, conditions=None):
        self.calls += 1
        dropped = conditions is not None and bool(conditions.dropped.get("condition", torch.zeros(1)).all())
        x0 = self.x0 + (self.bias_uncond if dropped else 0.0)
        a = self.alphas[t].view(-1, *[1] * (x_t.ndim - 1))
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        if self.kind == "sample":
            return x0
        if self.kind == "epsilon":
            return eps
        return a.sqrt() * eps - (1 - a).sqrt() * x0


@pytest.mark.parametrize("kind", ["sample", "epsilon", "v_prediction"])
def test_ddim_with_exact_predictor_returns_the_clean_sample(kind):
    x0 = torch.linspace(-2.5, 2.5, 2 * 2 * 4 * 4).view(2, 2, 4, 4)  # beyond [-1, 1]: no clipping allowed
    schedule = dataclasses.replace(SCHEDULE, prediction_type=kind)
    oracle = Oracle(x0, kind, schedule)
    res = sample(oracle, schedule, SamplerConfig(steps=10), None, tuple(x0.shape),
                 generator=torch.Generator().manual_seed(0))
    assert res.network_evaluations == 10 == oracle.calls
    torch.testing.assert_close(res.sample, x0, atol=2e-4, rtol=0)


def test_trailing_timesteps_start_from_pure_noise():
    sched = build_scheduler(SCHEDULE, "ddim")
    set_inference_steps(sched, 10)
    assert sched.timesteps.tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    set_inference_steps(sched, 1000)
    assert sched.timesteps[0] == 999 and sched.timesteps[-1] == 0


def test_to_x0_matches_monai_conversions():
    sched = build_scheduler(SCHEDULE, "train")
    x0, noise = torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    t = torch.tensor([5, 500, 990])
    x_t = sched.add_noise(x0, noise, t)
    a = sched.alphas_cumprod[t].view(-1, 1, 1)
    torch.testing.assert_close(to_x0(noise, x_t, a, "epsilon"), x0, atol=1e-3, rtol=1e-3)
    v = sched.get_velocity(x0, noise, t)
    torch.testing.assert_close(to_x0(v, x_t, a, "v_prediction"), x0, atol=1e-4, rtol=1e-4)


def test_ddpm_reference_runs_all_steps_and_is_seeded():
    x0 = torch.randn(1, 1, 4, 4)
    cfg = SamplerConfig(sampler="ddpm", steps=1000)
    a = sample(Oracle(x0), SCHEDULE, cfg, None, (1, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    b = sample(Oracle(x0), SCHEDULE, cfg, None, (1, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    assert a.network_evaluations == 1000
    assert torch.equal(a.sample, b.sample)
    torch.testing.assert_close(a.sample, x0, atol=1e-3, rtol=0)


def test_classifier_free_guidance_extrapolates_and_adaptive_guidance_saves_calls():
    x0 = torch.ones(1, 1, 4, 4)
    cond = Conditions(condition=torch.ones(1, 1, 4, 4))
    oracle = Oracle(x0, bias_uncond=-1.0)  # unconditional answer is x0 - 1
    cfg = SamplerConfig(steps=8, guidance_scale=2.0)
    res = sample(oracle, SCHEDULE, cfg, cond, (1, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert res.network_evaluations == 16 and res.guided_steps == 8
    # guided x0 = uncond + 2 (cond - uncond) = x0 + 1
    torch.testing.assert_close(res.sample, x0 + 1, atol=1e-3, rtol=0)

    agreeing = Oracle(x0, bias_uncond=0.0)
    cfg = SamplerConfig(steps=8, guidance_scale=2.0, adaptive_guidance=0.99)
    res = sample(agreeing, SCHEDULE, cfg, cond, (1, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert res.guided_steps == 1 and res.network_evaluations == 9


def test_input_guidance_keeps_known_entries_bit_exact_without_a_final_overwrite():
    truth = torch.randn(1, 1, 6, 6)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., ::2] = 1
    wrong = Oracle(torch.zeros_like(truth))  # a model that knows nothing
    res = sample(wrong, SCHEDULE, SamplerConfig(steps=5), None, tuple(truth.shape),
                 generator=torch.Generator().manual_seed(0), known=truth, known_mask=mask, resample_jumps=2,
                 overwrite_known=False)
    # The loop's last replacement is at noise level 0: known entries come out exact by themselves.
    assert torch.equal(res.sample[mask.bool()], truth[mask.bool()])
    assert res.network_evaluations == 15  # 5 steps x (1 + 2 jumps)


class Smoother(torch.nn.Module):
    """x0 estimate = the mean of x_t over the image: unknown entries can only learn the known ones through
    the sampling loop (in-loop input guidance), never from the network alone."""

    def forward(self, x_t, t, conditions=None):
        return x_t.mean(dim=(2, 3), keepdim=True).expand_as(x_t)


def test_in_loop_input_guidance_carries_the_known_data_into_the_unknown_entries():
    known = torch.full((1, 1, 8, 8), 0.8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., ::2, :] = 1
    kw = dict(generator=torch.Generator().manual_seed(0), overwrite_known=False)
    guided = sample(Smoother(), SCHEDULE, SamplerConfig(steps=20), None, (1, 1, 8, 8), known=known,
                    known_mask=mask, **kw).sample
    unknown = ~mask.bool()
    # The missing rows follow the observed level (0.8); without guidance they stay near the noise mean (0).
    assert abs(float(guided[unknown].mean()) - 0.8) < 0.1
    plain = sample(Smoother(), SCHEDULE, SamplerConfig(steps=20), None, (1, 1, 8, 8),
                   generator=torch.Generator().manual_seed(0)).sample
    assert abs(float(plain[unknown].mean())) < 0.4
    # Guidance applied only at the end (the final overwrite) would leave the unknown entries unguided.
    assert not torch.allclose(guided[unknown], plain[unknown], atol=0.2)


class ToyTask:
    """x0 = a smooth 2D bump whose sign is given by the condition."""

    def batch(self, generator, batch_size):
        sign = torch.randint(0, 2, (batch_size,), generator=generator).float() * 2 - 1
        grid = torch.linspace(-1, 1, 8)
        bump = torch.exp(-(grid[:, None] ** 2 + grid[None] ** 2) * 2)
        x0 = sign.view(-1, 1, 1, 1) * bump
        return TrainingBatch(x0=x0, conditions=Conditions(condition=sign.view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()))


def _tiny_spec(channels=(8, 8)):
    return network_spec(UNetConfig(channels=channels, attention_levels=(False, False), norm_num_groups=4), 2, 1,
                        condition_channels=1)


def _tiny_unet():
    torch.manual_seed(0)
    return build_network(_tiny_spec())


def test_training_learns_and_resume_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=3, seed=1)
    full = train(_tiny_unet(), ToyTask(), SCHEDULE, cfg, tmp_path / "full", {"model": "toy"}, progress=False)

    # Interrupted after 3 steps, then resumed from the checkpoint in the same folder.
    part = tmp_path / "part"
    train(_tiny_unet(), ToyTask(), SCHEDULE, dataclasses.replace(cfg, steps=6, max_minutes=1e-9), part,
          {"model": "toy"}, progress=False)
    assert read_checkpoint_config(part)["step"] == 1
    train(_tiny_unet(), ToyTask(), SCHEDULE, cfg, part, {"model": "toy"}, progress=False)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(full / name), load_file(part / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows = (part / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,seconds" and [r.split(",")[0] for r in rows[1:]] == list("123456")
    state = load_training_state(full)
    assert state["step"] == 6 and "optimizer" in state


def test_training_reduces_loss(tmp_path):
    cfg = TrainConfig(steps=120, batch_size=8, lr=3e-3, warmup_steps=5, checkpoint_every=1000, seed=0)
    losses = []
    train(_tiny_unet(), ToyTask(), SCHEDULE, cfg, tmp_path, {"model": "toy"}, progress=False,
          on_step=lambda s, loss: losses.append(loss))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.1)


def test_corrupted_or_mismatched_checkpoint_is_a_config_error(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=2, checkpoint_every=1)
    folder = train(_tiny_unet(), ToyTask(), SCHEDULE, cfg, tmp_path / "ck", {"model": "toy"}, progress=False)
    other = build_network(_tiny_spec((16, 16)))
    with pytest.raises(ConfigError, match="do not fit"):
        load_weights(folder, other)
    (folder / "ema.safetensors").write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    with pytest.raises(ConfigError, match="safetensors"):
        load_weights(folder, _tiny_unet())
    (folder / "training_state.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="training state"):
        load_training_state(folder)


class PerVoxel(torch.nn.Module):
    """A pointwise network (its output at a voxel depends only on that voxel, its condition, t and the label)."""

    def forward(self, x, t, conditions=None):
        lab = 0.0 if conditions.labels is None else conditions.labels.view(-1, 1, 1, 1, 1).float()
        return x * 2 + conditions.condition + t.view(-1, 1, 1, 1, 1) / 1000 + lab


def test_windowed_network_blends_windows_back_into_the_whole_volume():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 12, 10, 8)
    cond = Conditions(condition=torch.randn(3, 1, 12, 10, 8), labels=torch.tensor([1, 1, 3]))
    t = torch.full((3,), 500)
    net = PerVoxel()
    full = net(x, t, cond)
    windowed = WindowedNetwork(net, (4, 4, 4), overlap=0.5, sw_batch_size=5)(x, t, cond)
    assert windowed.shape == full.shape
    assert torch.allclose(windowed, full, atol=1e-5)
    # A network that sees context (GroupNorm over the window) gives a different answer window by window.
    norm = torch.nn.GroupNorm(1, 1)
    ctx = lambda inp, tt, c=None: norm(inp)  # noqa: E731
    assert not torch.allclose(WindowedNetwork(ctx, (4, 4, 4))(x, t, Conditions()), ctx(x, t), atol=1e-3)


class Weighted(torch.nn.Module):
    """x * w + condition * v for fixed maps w, v with no symmetry: mirrored calls give different answers."""

    def __init__(self, shape):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w, self.v = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        self.calls = 0

    def forward(self, x, t, conditions=None):
        self.calls += 1
        return x * self.w + conditions.condition * self.v


def test_flip_averaged_network_is_the_mean_of_the_mirrored_calls():
    torch.manual_seed(0)
    x, c = torch.randn(2, 1, 6, 5, 4), torch.randn(2, 1, 6, 5, 4)
    net = Weighted((6, 5, 4))
    out = FlipAveraged(net, (0, 1))(x, torch.full((2,), 10), Conditions(condition=c))
    assert net.calls == 4
    # flip(f(flip(x), flip(c))) = x * flip(w) + c * flip(v): the average symmetrises both maps over the axes.
    sym = lambda m: (m + m.flip(0) + m.flip(1) + m.flip(0, 1)) / 4  # noqa: E731
    assert torch.allclose(out, x * sym(net.w) + c * sym(net.v), atol=1e-6)
    assert not torch.allclose(out, net(x, None, Conditions(condition=c)), atol=1e-3)
    with pytest.raises(ValueError, match="exceed"):
        FlipAveraged(net, (3,))(x, torch.full((2,), 10), Conditions(condition=c))


def test_generate_counts_every_mirrored_call_as_a_network_evaluation():
    from medsci.diffusion.config import InferenceConfig
    from medsci.diffusion.inference import generate

    c = torch.randn(1, 1, 6, 6, 4)
    sampler = SamplerConfig(steps=2, uncertainty="none")
    plain = generate(Weighted((6, 6, 4)), SCHEDULE, sampler, InferenceConfig(), Conditions(condition=c),
                     (1, 1, 6, 6, 4))
    flipped = generate(Weighted((6, 6, 4)), SCHEDULE, sampler, InferenceConfig(flip_axes=(0, 1)),
                       Conditions(condition=c), (1, 1, 6, 6, 4))
    assert flipped.network_evaluations == 4 * plain.network_evaluations == 8
    assert not torch.allclose(flipped.mean, plain.mean, atol=1e-4)
    with pytest.raises(ConfigError, match="flip_axes"):
        InferenceConfig(flip_axes=(0, 0))


def _unet(**kw):
    torch.manual_seed(0)
    return build_network(network_spec(UNetConfig(channels=(8, 8), attention_levels=(False, False),
                                                 norm_num_groups=4), kw.pop("dims", 2), 1, **kw))


@pytest.mark.parametrize("dims", [2, 3])
def test_haar_network_runs_the_unet_on_subbands_of_half_size(dims):
    net = _unet(dims=dims, condition_channels=2, haar=True)
    assert net.unet.conv_in.conv.in_channels == 3 * 2 ** dims and net.unet.out[2].conv.out_channels == 2 ** dims
    seen = {}
    net.unet.conv_in.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(i[0].shape)))
    size = (8,) * dims
    out = net(torch.randn(2, 1, *size), torch.full((2,), 10), Conditions(condition=torch.randn(2, 2, *size)))
    assert out.shape == (2, 1, *size) and seen["shape"] == (2, 3 * 2 ** dims, *(4,) * dims)


def test_two_haar_levels_run_the_unet_on_a_quarter_size_wavelet_packet():
    """Level 2: every level-1 subband transformed again, so 16 bands per 2D channel on a grid 4x smaller, and the
    output is mapped back through both inverses (a UNet that returns the sample's bands gives back the sample)."""
    from medsci.wavelets import haar_dwt2d

    net = _unet(condition_channels=2, haar=True, haar_levels=2)
    assert net.spec["haar_levels"] == 2 and "haar_levels" not in _unet(haar=True).spec
    assert net.unet.conv_in.conv.in_channels == 3 * 16 and net.unet.out[2].conv.out_channels == 16
    seen = {}

    def identity_unet(inp, *args, **kwargs):
        seen["inp"] = inp
        return inp[:, :16]

    net.unet.forward = identity_unet
    x, c = torch.randn(2, 1, 16, 16), torch.randn(2, 2, 16, 16)
    out = net(x, torch.full((2,), 10), Conditions(condition=c))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["inp"], haar_dwt2d(haar_dwt2d(torch.cat([x, c], 1))))
    assert seen["inp"].shape == (2, 48, 4, 4)


def test_each_condition_kind_changes_the_output_and_its_null_is_used_when_dropped():
    net = _unet(condition_channels=1, num_classes=3, vector_dim=2, context_dim=4,
                dropout_kinds=("condition", "labels", "vector", "context")).eval()
    for p in net.parameters():  # nulls start at zero; make every one distinct so each kind is visible
        torch.nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(p.numel()))
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 300)
    base = Conditions(condition=torch.randn(2, 1, 8, 8), labels=torch.tensor([0, 2]), vector=torch.randn(2, 2),
                      context=torch.randn(2, 3, 4))
    ref = net(x, t, base)
    other = {"condition": torch.randn(2, 1, 8, 8), "labels": torch.tensor([1, 1]), "vector": torch.randn(2, 2),
             "context": torch.randn(2, 3, 4)}
    for kind, value in other.items():
        changed = net(x, t, dataclasses.replace(base, **{kind: value}))
        assert not torch.allclose(changed, ref, atol=1e-4), kind
        # Dropped: the value no longer matters (the null stands in), and only the dropped item changes.
        mask = torch.tensor([True, False])
        a = net(x, t, base.drop((kind,), mask))
        b = net(x, t, dataclasses.replace(base, **{kind: value}).drop((kind,), mask))
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[1], ref[1])
        assert not torch.allclose(a[0], ref[0], atol=1e-4), kind


def test_guidance_over_a_kind_never_dropped_in_training_is_refused():
    net = _unet(condition_channels=1)
    with pytest.raises(ConfigError, match="condition dropout"):
        sample(net, SCHEDULE, SamplerConfig(steps=2, guidance_scale=2.0), Conditions(condition=torch.zeros(1, 1, 8, 8)),
               (1, 1, 8, 8), generator=torch.Generator().manual_seed(0))


def test_older_checkpoint_format_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="older medsci"):
        build_network({"unet": {}, "spatial_dims": 2, "in_channels": 2, "out_channels": 1})


def test_windowed_network_keeps_the_kinds_guidance_may_drop():
    net = _unet(condition_channels=1, dropout_kinds=("condition",))
    assert WindowedNetwork(net, (4, 4)).null_kinds == ("condition",)


class PerItemGuidance(torch.nn.Module):
    """x0 = 1 everywhere; its unconditional answer adds the item's ``condition`` map, so an item whose map is
    0 settles at once under adaptive guidance and one whose map is noise never does."""

    null_kinds = ("condition",)

    def forward(self, x_t, t, conditions=None):
        dropped = conditions.dropped.get("condition")
        bias = conditions.condition if dropped is not None and bool(dropped.all()) else 0.0
        return torch.ones_like(x_t) + bias


def test_adaptive_guidance_decides_per_item_of_a_batch():
    # Issue 27: one view that did not settle kept the whole batch at full guidance (20 evaluations per view).
    bias = torch.zeros(3, 1, 4, 4)
    bias[1] = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(0)) * 3  # item 1 never settles
    cfg = SamplerConfig(steps=8, guidance_scale=2.0, adaptive_guidance=0.99)
    res = sample(PerItemGuidance(), SCHEDULE, cfg, Conditions(condition=bias), (3, 1, 4, 4),
                 generator=torch.Generator().manual_seed(0))
    assert res.item_evaluations.tolist() == [9, 16, 9]  # 8 conditional calls + 1 or 8 unconditional ones
    assert res.network_evaluations == 16 and res.guided_steps == 8
    torch.testing.assert_close(res.sample[[0, 2]], torch.ones(2, 1, 4, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(res.sample[1], 1 - bias[1], atol=1e-3, rtol=0)  # guided: u + 2 (c - u) = 1 - b
