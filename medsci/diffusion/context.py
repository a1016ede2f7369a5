"""Context encoders of the engine: turn a raw ``context`` condition into the tokens the UNet cross-attends to.

``FrameSequenceEncoder`` — a sequence-aware transformer over earlier frames (SADM's conditioning module, with
real timestamps instead of slot positions). The raw context of one item is ``(F, V + 2)``: F frames, each the
flattened volume on the model grid (``V`` voxels, ``frame_shape``), then its time relative to the target
(years; negative = before) and a presence flag (1 = acquired, 0 = missing / padding). Each frame is cut into
3D patches (a strided convolution), every patch token gets a learned position embedding and a sinusoidal
embedding of the frame's relative time; tokens of missing frames are masked out of attention. The encoder's
output tokens are the UNet's cross-attention context; an item with no frame present gets the learned null
token only (as when guidance drops the context).
"""

from __future__ import annotations

import math

import torch


def time_features(t: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """Sinusoidal features of times ``t`` (any shape, years) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs * (2 * math.pi)
    return torch.cat([torch.sin(args), torch.cos(args)], -1)


class FrameSequenceEncoder(torch.nn.Module):
    def __init__(self, frame_shape: tuple[int, int, int], patch: int = 8, dim: int = 64, layers: int = 2,
                 heads: int = 4, channels: int = 1):
        super().__init__()
        if any(s % patch for s in frame_shape):
            raise ValueError(f"frame shape {tuple(frame_shape)} must be divisible by the patch size {patch}")
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.channels = int(channels)
        self.voxels = self.channels * math.prod(self.frame_shape)
        self.dim = int(dim)
        self.embed = torch.nn.Conv3d(self.channels, dim, kernel_size=patch, stride=patch)
        n_patches = math.prod(s // patch for s in self.frame_shape)
        self.position = torch.nn.Parameter(torch.zeros(1, 1, n_patches, dim))
        self.time = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.SiLU(), torch.nn.Linear(dim, dim))
        layer = torch.nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True,
                                                 norm_first=True)
        self.transformer = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(dim)

    @property
    def raw_dim(self) -> int:
        return self.voxels + 2

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, V + 2) -> tokens (B, F * P, dim) and their presence mask (B, F * P) (True = attend)."""
        b, f, d = raw.shape
        if d != self.raw_dim:
            raise ValueError(f"context has {d} features per frame, the encoder expects {self.raw_dim}")
        frames = raw[..., : self.voxels].reshape(b * f, self.channels, *self.frame_shape)
        times, present = raw[..., -2], raw[..., -1] > 0.5
        tokens = self.embed(frames.to(self.embed.weight.dtype)).flatten(2).transpose(1, 2)  # (B*F, P, dim)
        tokens = tokens.reshape(b, f, -1, self.dim) + self.position
        tokens = tokens + self.time(time_features(times, self.dim).to(tokens.dtype))[:, :, None, :]
        p = tokens.shape[2]
        tokens = tokens.reshape(b, f * p, self.dim)
        mask = present[:, :, None].expand(b, f, p).reshape(b, f * p)
        # Items without any frame: let attention see one (masked-out) token so softmax stays finite; their
        # output is replaced by the null token by the caller.
        safe = mask.clone()
        safe[~mask.any(1), 0] = True
        out = self.transformer(tokens, src_key_padding_mask=~safe)
        return self.norm(out), mask
