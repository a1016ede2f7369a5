"""The conditioning API of the engine: what a batch may carry besides the noisy sample.

Four kinds, any subset per task:

``condition``  (B, Cc, *spatial)  channels concatenated to the noisy input (observed contrasts, a masked cube)
``labels``     (B,) long          a class (e.g. which contrast to synthesise), embedded and added to the time
                                  embedding (MONAI's class embedding)
``vector``     (B, D) float       continuous features (Euler angles as sin/cos, a time interval), embedded by
                                  a small MLP and added to the time embedding, so every residual block sees it
``context``    (B, S, Dc) float   a token sequence for cross-attention (MONAI ``with_conditioning``)

Classifier-free guidance drops kinds per item: ``dropped[kind]`` is a (B,) bool mask, and the network replaces a
dropped kind by its *null*: zeros for ``condition`` channels, a learned extra class for ``labels``, a learned
embedding for ``vector`` and a learned token for ``context`` (see ``medsci.diffusion.networks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from medsci.diffusion.config import KINDS


@dataclass
class Conditions:
    condition: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    vector: torch.Tensor | None = None
    context: torch.Tensor | None = None
    dropped: dict[str, torch.Tensor] = field(default_factory=dict)  # kind -> (B,) bool, True = use the null

    def present(self) -> tuple[str, ...]:
        return tuple(k for k in KINDS if getattr(self, k) is not None)

    def batch_size(self) -> int | None:
        for k in KINDS:
            value = getattr(self, k)
            if value is not None:
                return value.shape[0]
        return None

    def _map(self, fn) -> "Conditions":
        values = {f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name)))
                  for f in fields(self) if f.name != "dropped"}
        return Conditions(**values, dropped={k: fn(v) for k, v in self.dropped.items()})

    def to(self, device, dtype: torch.dtype | None = None) -> "Conditions":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype) if dtype is not None and t.is_floating_point() else t.to(device)

        return self._map(move)

    def index(self, items) -> "Conditions":
        """The conditions of batch items ``items`` (a slice, index tensor or list)."""
        return self._map(lambda t: t[items])

    def repeat(self, n: int) -> "Conditions":
        """Every item ``n`` times in a row (item 0 n times, then item 1, ...), e.g. for windows of one volume."""
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def drop(self, kinds, mask: torch.Tensor | None = None) -> "Conditions":
        """Mark ``kinds`` as dropped for the items where ``mask`` is True (all items if None)."""
        b = self.batch_size()
        out = replace(self, dropped=dict(self.dropped))
        for kind in kinds:
            if getattr(self, kind) is None:
                continue
            m = torch.ones(b, dtype=torch.bool) if mask is None else mask.to(torch.bool)
            ref = getattr(self, kind)
            m = m.to(ref.device)
            out.dropped[kind] = m if kind not in out.dropped else (out.dropped[kind] | m)
        return out

    def windowed(self, spatial_window: torch.Tensor | None) -> "Conditions":
        """The same conditions with the ``condition`` channels replaced by one window of them."""
        return replace(self, condition=spatial_window)


def drop_masks(kinds_p: dict[str, float], present: tuple[str, ...], batch: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Independent (B,) drop masks for classifier-free-guidance training, one per configured kind.

    Random numbers are drawn for every configured kind in ``KINDS`` order whether or not it is present, so the
    stream of a training step does not depend on which kinds a batch happens to carry.
    """
    masks = {}
    for kind in KINDS:
        p = float(kinds_p.get(kind, 0.0))
        if p <= 0:
            continue
        m = torch.rand(batch, generator=generator) < p
        if kind in present:
            masks[kind] = m
    return masks
