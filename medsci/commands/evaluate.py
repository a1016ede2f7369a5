"""`medsci evaluate TASK ...`: Evaluate generated results beside the baselines."""

from medsci.commands.tasks import register_verb


def register(subparsers) -> None:
    register_verb(subparsers, "evaluate", "Evaluate generated results beside the baselines.")
