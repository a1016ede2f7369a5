"""`medsci train TASK ...`: Train a generator's diffusion model."""

from medsci.commands.tasks import register_verb


def register(subparsers) -> None:
    register_verb(subparsers, "train", "Train a generator's diffusion model.")
