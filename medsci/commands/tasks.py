"""Task-level commands (train, sample, evaluate) dispatch to each generator's own ``commands`` module.

A generator module exposes ``register_<verb>(subparsers)`` for the verbs it supports; a generator not
present in this build is skipped.
"""

from __future__ import annotations

import importlib

TASK_MODULES = {
    "synthesis": "medsci.tasks.synthesis.commands",
    "seismic": "medsci.tasks.seismic.commands",
}


def register_verb(subparsers, verb: str, help_text: str) -> None:
    parser = subparsers.add_parser(verb, help=help_text, description=help_text)
    tasks = parser.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for module_name in TASK_MODULES.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        hook = getattr(module, f"register_{verb}", None)
        if hook is not None:
            hook(tasks)


def add_common_args(parser, config_required: bool = True) -> None:
    parser.add_argument("--config", required=config_required, help="medsci config YAML")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's device)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def setup_torch(args, config=None):
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return args.device or (config.device if config is not None else "auto")
