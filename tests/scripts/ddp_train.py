"""Train a tiny conditional network for a few steps with medsci's trainer; run as one process or under torchrun.

    python tests/scripts/ddp_train.py OUT [STEPS [DIE_AFTER]]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/scripts/ddp_train.py OUT [STEPS [DIE_AFTER]]

Used by tests/test_distributed.py: both must reach the same weights (one global batch, split across ranks).
DIE_AFTER: rank 0 exits abruptly (as if killed) after that step, before any later checkpoint.
"""

import os
import sys

import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import ScheduleConfig, TrainConfig, UNetConfig
from medsci.diffusion.networks import build_network, network_spec
from medsci.diffusion.training import TrainingBatch, train


class BarsTask:
    """16x16 images of a bright bar at a random height; the height is the condition channel's bar too."""

    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        rows = torch.randint(2, 14, (batch_size,), generator=generator)
        x0 = torch.full((batch_size, 1, 16, 16), -1.0)
        for i, r in enumerate(rows):
            x0[i, 0, r - 1:r + 2] = 1.0
        cond = x0.roll(1, dims=-1) + 0.1 * torch.randn(x0.shape, generator=generator)
        return TrainingBatch(x0=x0, conditions=Conditions(condition=cond, vector=rows[:, None].float() / 16))


def network():
    torch.manual_seed(0)
    spec = network_spec(UNetConfig(channels=(8, 16), attention_levels=(False, False), norm_num_groups=4), 2, 1,
                        condition_channels=1, vector_dim=1, dropout_kinds=("vector",))
    return spec, build_network(spec)


def main(out: str, steps: int = 4, die_after: int | None = None) -> None:
    torch.set_num_threads(1)
    spec, model = network()
    cfg = TrainConfig(steps=steps, batch_size=4, lr=2e-3, warmup_steps=1, checkpoint_every=2, seed=3,
                      condition_dropout={"vector": 0.5})

    def die(step, loss):
        if step == die_after:
            os._exit(9)

    train(model, BarsTask(), ScheduleConfig(num_train_timesteps=50), cfg, out, {"model": spec}, "cpu",
          progress=False, on_step=die)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4, int(sys.argv[3]) if len(sys.argv) > 3 else None)
