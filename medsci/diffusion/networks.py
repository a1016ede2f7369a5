"""The engine's network: MONAI's ``DiffusionModelUNet`` behind the conditioning API, optionally in the Haar domain.

``ConditionalUNet(x_t, t, conditions)`` concatenates the condition channels to ``x_t``, runs the UNet (on the
Haar subbands of that input when ``haar`` is set, 2D or 3D; ``haar_levels`` > 1 repeats the transform on every
subband, so a 2D image of side ``n`` reaches the UNet as ``4**levels`` bands of side ``n / 2**levels``), and
injects labels and vectors through the time embedding and context through cross-attention. Dropped kinds (classifier-free guidance) are replaced
by their nulls here, so training and sampling share one definition of "unconditional".

Everything that rebuilds the network is in one ``spec`` dict stored in the checkpoint's ``config.json``.
"""

from __future__ import annotations

import itertools
import warnings

import torch
from monai.networks.nets import DiffusionModelUNet

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import UNetConfig
from medsci.errors import ConfigError

SPEC_FORMAT = 2  # checkpoints of format 1 (medsci 0.1) stored a bare UNet


def network_spec(unet: UNetConfig, spatial_dims: int, channels: int, *, condition_channels: int = 0,
                 num_classes: int | None = None, vector_dim: int | None = None, context_dim: int | None = None,
                 haar: bool = False, dropout_kinds: tuple[str, ...] = (), context_encoder: dict | None = None,
                 haar_levels: int = 1) -> dict:
    """Everything that defines the network, as plain JSON. ``dropout_kinds``: kinds trained with a null.

    ``haar_levels``: how many times the Haar transform is applied (to every subband: a wavelet packet); the UNet's
    grid shrinks by ``2**haar_levels`` per axis, so a larger image costs about the same per step.

    ``context_encoder``: keyword arguments of :class:`medsci.diffusion.context.FrameSequenceEncoder`; the raw
    ``context`` is then a frame sequence, encoded into ``context_encoder["dim"]``-wide tokens.
    """
    if context_encoder is not None:
        context_dim = int(context_encoder.get("dim", 64))
    spec = {
        "format": SPEC_FORMAT,
        "unet": unet.to_dict(),
        "spatial_dims": spatial_dims,
        "channels": channels,  # channels of the diffused sample (in and out)
        "condition_channels": condition_channels,
        "num_classes": num_classes,
        "vector_dim": vector_dim,
        "context_dim": context_dim,
        "haar": haar,
        "null_kinds": sorted(dropout_kinds),
    }
    if context_encoder is not None:  # absent otherwise: checkpoints of other generators keep their spec
        spec["context_encoder"] = dict(context_encoder)
    if haar and int(haar_levels) > 1:  # absent at one level: earlier checkpoints keep their spec
        spec["haar_levels"] = int(haar_levels)
    return spec


def haar_bands(spec: dict) -> int:
    """Subbands per channel the UNet sees: 1 in the image domain, ``(2**dims)**levels`` in the Haar domain."""
    if not spec.get("haar"):
        return 1
    return (2 ** int(spec["spatial_dims"])) ** int(spec.get("haar_levels", 1))


class _TimeEmbeddingExtras(torch.nn.Module):
    """Takes the place of MONAI's ``class_embedding``: the sum of a label embedding and a vector embedding,
    each replaced by its learned null where dropped. MONAI adds the result to the time embedding."""

    def __init__(self, labels: torch.nn.Embedding | None, vector_dim: int | None, dim: int, null_label: int | None):
        super().__init__()
        self.labels = labels
        self.null_label = null_label
        self.vector = None
        if vector_dim:
            self.vector = torch.nn.Sequential(torch.nn.Linear(vector_dim, dim), torch.nn.SiLU(),
                                              torch.nn.Linear(dim, dim))
            self.null_vector = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, packed: Conditions) -> torch.Tensor:
        total = 0
        if self.labels is not None:
            labels = packed.labels
            if "labels" in packed.dropped:
                labels = torch.where(packed.dropped["labels"], torch.full_like(labels, self.null_label), labels)
            total = total + self.labels(labels)
        if self.vector is not None:
            emb = self.vector(packed.vector.to(self.null_vector.dtype))
            if "vector" in packed.dropped:
                emb = torch.where(packed.dropped["vector"][:, None], self.null_vector.to(emb.dtype), emb)
            total = total + emb
        return total


class ConditionalUNet(torch.nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        dims = int(spec["spatial_dims"])
        self.bands = haar_bands(spec)
        self.haar_levels = int(spec.get("haar_levels", 1)) if spec.get("haar") else 0
        self.channels = int(spec["channels"])
        self.condition_channels = int(spec.get("condition_channels") or 0)
        self.null_kinds = tuple(spec.get("null_kinds", ()))
        cfg = UNetConfig.from_dict(spec["unet"], "model.unet")
        self.variance_head = bool(cfg.variance_head)  # outputs 2 x channels: prediction, log-variance
        num_classes = spec.get("num_classes")
        null_label = num_classes if (num_classes and "labels" in self.null_kinds) else None
        class_embeds = None if not num_classes else num_classes + (1 if null_label is not None else 0)
        context_dim = spec.get("context_dim")
        self.unet = DiffusionModelUNet(
            spatial_dims=dims,
            in_channels=(self.channels + self.condition_channels) * self.bands,
            out_channels=self.channels * self.bands * (2 if self.variance_head else 1),
            channels=tuple(cfg.channels),
            attention_levels=tuple(cfg.attention_levels),
            num_res_blocks=cfg.num_res_blocks,
            norm_num_groups=cfg.norm_num_groups,
            # MONAI's middle block always has self-attention; heads must divide each level's width.
            num_head_channels=[min(c, cfg.num_head_channels) for c in cfg.channels],
            resblock_updown=cfg.resblock_updown,
            num_class_embeds=class_embeds,
            with_conditioning=bool(context_dim),
            cross_attention_dim=context_dim or None,
        )
        self.uses_embedding = bool(num_classes or spec.get("vector_dim"))
        if self.uses_embedding:
            dim = cfg.channels[0] * 4  # MONAI's time-embedding width
            labels = self.unet.class_embedding if num_classes else None
            self.unet.class_embedding = _TimeEmbeddingExtras(labels, spec.get("vector_dim"), dim, null_label)
            self.unet.num_class_embeds = class_embeds or 0  # MONAI calls class_embedding when this is not None
        self.null_context = torch.nn.Parameter(torch.zeros(1, 1, context_dim)) if context_dim else None
        self.context_encoder = None
        if spec.get("context_encoder"):
            from medsci.diffusion.context import FrameSequenceEncoder

            self.context_encoder = FrameSequenceEncoder(**spec["context_encoder"])
        self._haar = None
        if self.bands > 1:
            from medsci.wavelets import haar_dwt2d, haar_dwt3d, haar_idwt2d, haar_idwt3d

            self._haar = (haar_dwt3d, haar_idwt3d) if dims == 3 else (haar_dwt2d, haar_idwt2d)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions | None = None):
        cond = conditions or Conditions()
        inp = x
        if self.condition_channels:
            c = cond.condition
            if c is None:
                raise ValueError("this network needs condition channels")
            if "condition" in cond.dropped:
                c = c * (~cond.dropped["condition"]).to(c.dtype).view(-1, *([1] * (c.ndim - 1)))
            inp = torch.cat([x, c.to(x.dtype)], 1)
        context = cond.context
        if self.context_encoder is not None and context is not None:
            # Tokens of missing frames become the null token, so cross-attention only sees what was acquired.
            tokens, present = self.context_encoder(context)
            null = self.null_context.to(tokens.dtype).expand_as(tokens)
            context = torch.where(present[..., None], tokens, null)
        if self.null_context is not None:
            if context is None:
                context = self.null_context.expand(x.shape[0], 1, -1)
            elif "context" in cond.dropped:
                null = self.null_context.to(context.dtype).expand_as(context)
                context = torch.where(cond.dropped["context"][:, None, None], null, context)
        for _ in range(self.haar_levels):
            inp = self._haar[0](inp)
        out = self.unet(inp, timesteps, context=context, class_labels=cond if self.uses_embedding else None)
        for _ in range(self.haar_levels):
            out = self._haar[1](out)
        return out


def build_network(spec: dict) -> ConditionalUNet:
    if spec.get("format") != SPEC_FORMAT:
        raise ConfigError(f"checkpoint network format {spec.get('format', 1)} is from an older medsci; retrain it "
                          f"with this version (format {SPEC_FORMAT})")
    return ConditionalUNet(spec)


class NetworkWrapper(torch.nn.Module):
    """A network around ``model`` that the sampler treats like it: the kinds guidance may drop and whether a
    variance head is in the output are the inner network's."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.null_kinds = tuple(getattr(model, "null_kinds", ()))
        self.variance_head = bool(getattr(model, "variance_head", False))


class FlipAveraged(NetworkWrapper):
    """The network's output averaged over every combination of flips along ``axes`` (spatial axes, 0-based):
    2 ** len(axes) calls per evaluation.

    For data without a preferred direction along those axes (seismic inlines and crosslines, which training
    flips at random), the mirrored predictions are an ensemble of the same network: their average has a lower
    error than any one of them. The condition channels are flipped with the sample; a variance head's
    log-variance is averaged like the prediction.
    """

    def __init__(self, model: torch.nn.Module, axes: tuple[int, ...]):
        super().__init__(model)
        self.flips = [tuple(2 + a for a in combo) for n in range(len(axes) + 1)
                      for combo in itertools.combinations(sorted(axes), n)]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions | None = None):
        if self.flips[-1] and self.flips[-1][-1] >= x.ndim:
            raise ValueError(f"flip axes {[d - 2 for d in self.flips[-1]]} exceed the {x.ndim - 2} spatial axes")
        total = None
        for dims in self.flips:
            if not dims:
                out = self.model(x, timesteps, conditions)
            else:
                cond = conditions
                if cond is not None and cond.condition is not None:
                    cond = cond.windowed(cond.condition.flip(dims))
                out = self.model(x.flip(dims), timesteps, cond).flip(dims)
            total = out if total is None else total + out
        return total / len(self.flips)


class WindowedNetwork(NetworkWrapper):
    """Runs a network on overlapping windows of its input, blended by MONAI's ``SlidingWindowInferer``.

    For networks trained on patches: GroupNorm statistics of a whole volume (much more background) differ
    from those of a training patch, so calling the network window by window at the training patch size keeps
    inference in the conditions it was trained in. The condition channels are cut into the same windows as the
    noisy sample; labels, vectors and context of an item go with each of its windows.
    """

    def __init__(self, model: torch.nn.Module, roi_size: tuple[int, ...], overlap: float = 0.5,
                 sw_batch_size: int = 8):
        super().__init__(model)
        from monai.inferers import SlidingWindowInferer

        self.inferer = SlidingWindowInferer(roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap,
                                            mode="gaussian")

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions | None = None):
        cond = conditions or Conditions()
        outputs = []
        for i in range(x.shape[0]):  # items may differ in labels / vectors: one item at a time
            item = cond.index(slice(i, i + 1))
            spatial = item.condition
            inp = x[i:i + 1] if spatial is None else torch.cat([x[i:i + 1], spatial.to(x.dtype)], 1)
            n_x = x.shape[1]

            def predictor(windows: torch.Tensor, item=item, i=i) -> torch.Tensor:
                n = windows.shape[0]
                per_window = item.repeat(n).windowed(windows[:, n_x:] if spatial is not None else None)
                return self.model(windows[:, :n_x], timesteps[i:i + 1].expand(n), per_window)

            with warnings.catch_warnings():
                # MONAI 1.5 indexes with lists of slices, which torch >= 2.8 flags as deprecated on every window.
                warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
                outputs.append(self.inferer(inp, predictor))
        return torch.cat(outputs)
