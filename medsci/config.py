"""One typed configuration object: YAML -> JSON-schema (configs/schema.yaml) -> dataclasses.

``load_config(path)`` is what every command and the workflow use; unknown keys and wrong types are
refused with a one-line ConfigError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medsci.config_section import ConfigSection
from medsci.errors import ConfigError

# The schema sits in the source tree's configs/ folder; the Snakefile validates against the same file.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "configs" / "schema.yaml"


def _synthesis_factory():
    from medsci.tasks.synthesis.config import SynthesisConfig

    return SynthesisConfig()


@dataclass
class Config(ConfigSection):
    name: str = "demo"
    results: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    synthesis: Any = field(default_factory=_synthesis_factory)
    seismic: Any = None

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "") -> "Config":
        from medsci.tasks.synthesis.config import SynthesisConfig

        data = dict(data or {})
        synthesis = SynthesisConfig.from_dict(data.pop("synthesis", None), "synthesis")
        seismic_data = data.pop("seismic", None)
        seismic = None
        try:
            from medsci.tasks.seismic.config import SeismicConfig
        except ImportError:  # seismic generator not installed in this build
            SeismicConfig = None
        if SeismicConfig is not None:
            seismic = SeismicConfig.from_dict(seismic_data, "seismic")
        base = super().from_dict(data, where)
        base.synthesis = synthesis
        base.seismic = seismic
        return base

    @property
    def result_dir(self) -> Path:
        return Path(self.results) / self.name


def validate_schema(data: dict, source: str | Path = "config") -> None:
    if not SCHEMA_PATH.is_file():
        return  # installed without the source tree: the dataclasses still check every key and type
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(data, schema)
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
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})", path) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("config must be a mapping", path)
    return config_from_dict(data or {}, path)


def dump_config(config: Config) -> str:
    out = config.to_dict()
    out["synthesis"] = config.synthesis.to_dict()
    if config.seismic is not None:
        out["seismic"] = config.seismic.to_dict()
    return yaml.safe_dump(out, sort_keys=False)


def write_config(config: Config, path: str | Path) -> None:
    from medsci.io.atomic import write_text_atomic

    write_text_atomic(path, dump_config(config))
