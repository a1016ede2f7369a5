"""One typed configuration object: YAML -> JSON schema -> dataclasses.

The schema ships inside the package: ``medsci/config_schema.yaml`` holds the top level and the engine's shared
definitions, and every registered generator adds its own section's fragment (see ``medsci.registry``). The CLI
and the Snakefile both go through :func:`config_from_dict`, so an installed wheel validates exactly as the
source tree does. ``load_config(path)`` refuses unknown keys and wrong types with a one-line ConfigError
naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from medsci import registry
from medsci.config_section import ConfigSection
from medsci.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent / "config_schema.yaml"


@dataclass
class Config(ConfigSection):
    """Top-level settings plus one section per registered generator (``config.<task name>``)."""

    name: str = "demo"
    results: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    train_gpus: int = 1  # GPUs per training job on CUDA; above 1 the train rules launch torchrun (DDP)
    sample_jobs: int = 0  # held-out sampling of each generator split into this many jobs; 0: one job per case
    container: str = ""  # image every rule runs in under --sdm apptainer (workflows/envs/Dockerfile, medsci.def)
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "") -> "Config":
        data = dict(data or {})
        sections = {}
        for name, task in registry.tasks().items():
            # A generator without a section in the file runs with its defaults (as before a section existed).
            sections[name] = task.config.from_dict(data.pop(name, None), name)
        base = super().from_dict(data, where)
        base.sections = sections
        return base

    def __getattr__(self, name: str):
        # Only reached for names that are not fields: task sections.
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"config has no section {name!r}")

    def section(self, name: str):
        return self.sections.get(name)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in super().to_dict().items() if k != "sections"}
        out.update({name: section.to_dict() for name, section in self.sections.items()})
        return out

    @property
    def result_dir(self) -> Path:
        return Path(self.results) / self.name


@lru_cache(maxsize=1)
def _base_schema_text() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


def schema() -> dict:
    """The whole JSON schema: the top level and one property per registered generator."""
    full = yaml.safe_load(_base_schema_text())
    for name, task in registry.tasks().items():
        full["properties"][name] = task.schema_fragment()
    return full


def validate_schema(data: dict, source: str | Path = "config") -> None:
    import jsonschema

    try:
        jsonschema.validate(data, schema())
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{where}: {err.message}", source) from None


def config_from_dict(data: dict, source: str | Path = "config") -> Config:
    validate_schema(data, source)
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(err.reason, source) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})", path) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("config must be a mapping", path)
    return config_from_dict(data or {}, path)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def write_config(config: Config, path: str | Path) -> None:
    from medsci.io.atomic import write_text_atomic

    write_text_atomic(path, dump_config(config))
