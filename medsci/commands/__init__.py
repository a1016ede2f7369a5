"""CLI sub-commands: one module each, each with ``register(subparsers)`` setting ``handler``."""
