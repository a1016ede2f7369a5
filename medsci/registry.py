"""The task registry: every generator registers itself here; the core iterates the registry.

A generator is a package that calls :func:`register` with a :class:`Task` when imported. The core
(config, CLI, bench, Snakefile) never names a generator: it asks :func:`tasks` for what is registered.
Generators are found in three places, in this order:

1. the packages under ``medsci/tasks/`` (built-in generators),
2. installed distributions that declare an entry point in the group ``medsci.tasks``,
3. modules named in the environment variable ``MEDSCI_TASKS`` (comma-separated), e.g. a generator under
   development or one a test registers.

Registration must stay cheap (``medsci --help`` imports every generator): a task package's ``__init__``
imports its config dataclasses and nothing heavy; everything else is named by dotted path and imported when used.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medsci.errors import ConfigError

ENTRY_POINT_GROUP = "medsci.tasks"
ENV_VAR = "MEDSCI_TASKS"

# Verbs a generator may implement; each becomes ``medsci <verb> <task>`` when some generator has it.
VERBS = {
    "demo-data": "Write deterministic synthetic demo data for a generator.",
    "preprocess": "Prepare a generator's raw data for its model.",
    "train": "Train a generator's diffusion model.",
    "sample": "Generate with a trained model (held-out or new cases).",
    "evaluate": "Score a generator's held-out results beside its baselines.",
}


@dataclass(frozen=True)
class Task:
    """What a generator tells the core about itself.

    name          config section, CLI name and results sub-folder (``results/<run>/<name>/``)
    title         one line for ``--help`` and reports
    config        the ConfigSection class of its config section (must have an ``enabled`` field)
    commands      dotted module path with ``register_<verb>(subparsers)`` for the verbs it implements
                  (``register_demo_data`` for ``demo-data``) and optionally ``register_commands(subparsers)``
                  for top-level commands of its own (e.g. ``interpolate``)
    rules         Snakemake rule file: absolute, or relative to the repository's ``workflows/`` folder
    schema        JSON-schema fragment of its config section: a dict, or a YAML file path (absolute, or relative
                  to the package of ``config``); None = the dataclasses alone check the section
    bench_items   ``{item name: "module:function"}`` for ``medsci bench``; the function takes ``device=``
    default_bench whether ``medsci bench`` without ``--items`` runs each item
    """

    name: str
    title: str
    config: type
    commands: str | None = None
    rules: str | None = None
    schema: dict | str | None = None
    bench_items: dict[str, str] = field(default_factory=dict)
    default_bench: tuple[str, ...] = ()

    def commands_module(self):
        return importlib.import_module(self.commands) if self.commands else None

    def verb_hook(self, verb: str) -> Callable | None:
        module = self.commands_module()
        return getattr(module, f"register_{verb.replace('-', '_')}", None) if module else None

    def schema_fragment(self) -> dict:
        if self.schema is None:
            return {"type": "object"}
        if isinstance(self.schema, dict):
            return self.schema
        import yaml

        path = Path(self.schema)
        if not path.is_absolute():
            module = importlib.import_module(self.config.__module__)
            path = Path(module.__file__).resolve().parent / path
        return yaml.safe_load(path.read_text(encoding="utf-8"))

    def rules_path(self, workflows_dir: str | Path) -> str:
        path = Path(self.rules)
        return str(path if path.is_absolute() else Path(workflows_dir) / path)


_TASKS: dict[str, Task] = {}
_discovered = False


def register(task: Task) -> Task:
    """Add a generator; registering the same name twice with another definition is an error."""
    if not task.name.isidentifier():
        raise ConfigError(f"task name {task.name!r} must be a Python identifier (it is a config section)")
    if task.name in ("name", "results", "device"):
        raise ConfigError(f"task name {task.name!r} is a reserved config key")
    previous = _TASKS.get(task.name)
    if previous is not None and previous != task:
        raise ConfigError(f"task {task.name!r} is already registered by {previous.config.__module__}")
    _TASKS[task.name] = task
    return task


def register_package(package: str, title: str, config: type, bench: dict[str, str] | None = None,
                     default_bench: tuple[str, ...] | None = None, **overrides) -> Task:
    """Register the generator of ``package`` (pass its ``__name__``) by the layout every generator follows:
    the name is the package's last part; commands in ``<package>.commands``; the rule file ``<name>.smk``
    beside the package's ``__init__.py`` if it is there (a plugin), else in the repository's ``workflows/``;
    the schema fragment ``schema.yaml`` beside its config module; ``bench`` ``{item: function name in
    <package>.bench, or "module:function" for another module of the package}``, each run by ``medsci bench`` unless ``default_bench`` names fewer. ``overrides``: other
    :class:`Task` fields."""
    import sys

    name = package.rsplit(".", 1)[-1]
    beside = Path(sys.modules[package].__file__).with_name(f"{name}.smk")
    items = {item: f"{package}.{function}" if ":" in function else f"{package}.bench:{function}"
             for item, function in (bench or {}).items()}
    fields = dict(name=name, title=title, config=config, commands=f"{package}.commands",
                  rules=str(beside) if beside.is_file() else f"{name}.smk",
                  schema="schema.yaml", bench_items=items,
                  default_bench=tuple(items) if default_bench is None else tuple(default_bench))
    return register(Task(**{**fields, **overrides}))


def unregister(name: str) -> None:
    """Remove a generator (tests)."""
    _TASKS.pop(name, None)


def _import_builtin() -> None:
    import medsci.tasks as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.ispkg:
            importlib.import_module(f"medsci.tasks.{info.name}")


def _import_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def _import_env() -> None:
    for name in filter(None, (n.strip() for n in os.environ.get(ENV_VAR, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"{ENV_VAR} names {name!r}, which cannot be imported ({err})") from None


def discover() -> None:
    """Import every generator once (built-in, entry points, ``MEDSCI_TASKS``)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    _import_builtin()
    _import_entry_points()
    _import_env()


def tasks() -> dict[str, Task]:
    """Every registered generator, by name, in registration order."""
    discover()
    return dict(_TASKS)


def get(name: str) -> Task:
    known = tasks()
    if name not in known:
        raise ConfigError(f"no generator named {name!r}; registered: {', '.join(known) or 'none'}")
    return known[name]


def resolve(path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported on demand)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
