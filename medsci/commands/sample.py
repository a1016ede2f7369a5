"""`medsci sample TASK ...`: Generate with a trained model (held-out or new cases)."""

from medsci.commands.tasks import register_verb


def register(subparsers) -> None:
    register_verb(subparsers, "sample", "Generate with a trained model (held-out or new cases).")
