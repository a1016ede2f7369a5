"""What the longitudinal model sees: context frames with relative times, the last frame, the time step.

For a target session at time ``t`` and the earlier sessions available:

- ``context`` (raw, encoded by the network's FrameSequenceEncoder): the latest ``max_frames`` earlier frames,
  flattened, each followed by its time relative to the target in years (negative) and a presence flag; slots
  beyond the available frames are padding (flag 0);
- ``condition`` channels: the last available frame (model space = normalised intensity x 2), so the network
  learns the change, not the anatomy; and the change between the two latest frames scaled to the target's gap
  (``CHANGE_SCALE * (last - previous) * gap / previous gap``, zero with one frame): the voxel-level trend that
  the transformer's coarse patch tokens cannot carry;
- ``vector``: sinusoidal features of the gap between the last frame and the target (years), plus the gap itself;
- the diffused quantity: ``CHANGE_SCALE * (target - last frame)``, the change since the last session. Changes
  between sessions are a few hundredths of the normalised range; scaled up they span about the unit range the
  noise schedule is made for, instead of being drowned at every step but the last few.

Training draws a subject, a target session ``k >= 1``, keeps session ``k - 1`` and drops each earlier session
with probability ``context_dropout`` (missing sessions), with a random left-right mirror of every frame.
"""

from __future__ import annotations

import numpy as np
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.context import time_features
from medsci.diffusion.training import TrainingBatch

MODEL_SCALE = 2.0  # frames as conditions and context
CHANGE_SCALE = 10.0  # the diffused change (and the trend channel)
CONDITION_CHANNELS = 2
YEAR = 365.25
VECTOR_DIM = 9  # 8 sinusoidal features of the gap + the gap in years


def gap_features(gap_years) -> torch.Tensor:
    g = torch.as_tensor(np.asarray(gap_years, dtype=np.float32)).reshape(-1)
    return torch.cat([time_features(g, VECTOR_DIM - 1, max_period=20.0), g[:, None]], 1)


def context_tensor(frames: np.ndarray, times_days: np.ndarray, target_days: float, max_frames: int) -> torch.Tensor:
    """(F, V + 2) raw context of the latest ``max_frames`` of ``frames`` (S, X, Y, Z) at ``times_days``."""
    frames = np.asarray(frames, np.float32)[-max_frames:]
    times = np.asarray(times_days, np.float64)[-max_frames:]
    v = int(np.prod(frames.shape[1:]))
    out = torch.zeros(max_frames, v + 2)
    n = frames.shape[0]
    out[:n, :v] = torch.from_numpy(frames.reshape(n, v)) * MODEL_SCALE
    out[:n, v] = torch.from_numpy(((times - target_days) / YEAR).astype(np.float32))
    out[:n, v + 1] = 1.0
    return out


def model_inputs(frames: np.ndarray, times_days: np.ndarray, target_days: float, max_frames: int
                 ) -> tuple[Conditions, torch.Tensor]:
    """Conditions and offset (the last frame in the diffused quantity's space) for one prediction; batch of one."""
    last = torch.from_numpy(np.asarray(frames[-1], np.float32))[None, None]
    gap = (target_days - float(times_days[-1])) / YEAR
    trend = torch.zeros_like(last)
    if len(frames) >= 2:
        previous_gap = (float(times_days[-1]) - float(times_days[-2])) / YEAR
        previous = torch.from_numpy(np.asarray(frames[-2], np.float32))[None, None]
        trend = (last - previous) * (CHANGE_SCALE * gap / previous_gap)
    ctx = context_tensor(frames, times_days, target_days, max_frames)[None]
    condition = torch.cat([last * MODEL_SCALE, trend], 1)
    return Conditions(condition=condition, vector=gap_features([gap]), context=ctx), last * CHANGE_SCALE


class LongitudinalTrainingTask:
    def __init__(self, subjects: list[dict], model_cfg):
        self.subjects = [(np.asarray(s["frames"], np.float32), np.asarray(s["times"], np.float64)) for s in subjects
                         if len(s["times"]) >= 2]
        if not self.subjects:
            raise ValueError("no training subject with two or more sessions")
        self.cfg = model_cfg

    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        conds, offsets, targets = [], [], []
        for _ in range(batch_size):
            i = int(torch.randint(0, len(self.subjects), (1,), generator=generator))
            frames, times = self.subjects[i]
            k = int(torch.randint(1, len(times), (1,), generator=generator))
            keep = (torch.rand(k, generator=generator) >= self.cfg.context_dropout).numpy()
            keep[k - 1] = True  # the last frame before the target is always there
            idx = np.flatnonzero(keep)
            context, ctx_times, target = frames[idx], times[idx], frames[k]
            if bool(torch.rand(1, generator=generator) < 0.5):  # left-right mirror (x axis)
                context, target = context[:, ::-1], target[::-1]
            c, off = model_inputs(np.ascontiguousarray(context), ctx_times, float(times[k]), self.cfg.max_frames)
            conds.append(c)
            offsets.append(off)
            targets.append(torch.from_numpy(np.ascontiguousarray(target))[None, None] * CHANGE_SCALE)
        offset = torch.cat(offsets)
        conditions = Conditions(condition=torch.cat([c.condition for c in conds]),
                                vector=torch.cat([c.vector for c in conds]),
                                context=torch.cat([c.context for c in conds]))
        return TrainingBatch(x0=(torch.cat(targets) - offset).contiguous(), conditions=conditions)
