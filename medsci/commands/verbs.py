"""``medsci <verb> <task>``: generic verbs whose sub-commands come from the registered generators."""

from __future__ import annotations

from medsci import registry


def register_verb(subparsers, verb: str, help_text: str) -> None:
    """Add ``verb`` with one sub-command per generator that implements it (nothing if none does)."""
    hooks = [(task, task.verb_hook(verb)) for task in registry.tasks().values()]
    hooks = [(task, hook) for task, hook in hooks if hook is not None]
    if not hooks:
        return
    names = ", ".join(task.name for task, _ in hooks)
    parser = subparsers.add_parser(verb, help=f"{help_text} ({names})", description=help_text)
    tasks = parser.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for _, hook in hooks:
        hook(tasks)
