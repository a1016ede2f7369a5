"""One typed configuration object: YAML -> JSON schema -> dataclasses.

The schema ships inside the package: ``medsci/config_schema.yaml`` holds the top level and the engine's shared
definitions, and every registered generator adds its own section's fragment (see ``medsci.registry``). The CLI
and the Snakefile both go through :func:`config_from_dict`, so an installed wheel validates exactly as the
source tree does. ``load_config(path)`` refuses unknown keys and wrong types with a one-line ConfigError
naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from medsci import registry
from medsci.config_section import ConfigSection
from medsci.errors import ConfigError
from medsci.io.paths import regular_file

SCHEMA_PATH = Path(__file__).resolve().parent / "config_schema.yaml"


@dataclass
class Config(ConfigSection):
    """Top-level settings plus one section per registered generator (``config.<task name>``)."""

    name: str = "demo"
    results: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    train_gpus: int = 1  # GPUs per training job on CUDA; above 1 the train rules launch torchrun (DDP)
    sample_jobs: int = 0  # held-out sampling of each generator split into this many jobs; 0: one job per case
    container: str = ""  # image every rule runs in under Snakemake with apptainer (workflows/envs/Dockerfile)
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "") -> "Config":
        data = dict(data or {})
        sections = {}
        for name, task in registry.tasks().items():
            # A preset runs exactly the generators it names: a section that is absent is disabled.
            section = data.pop(name, None)
            sections[name] = task.config.from_dict({"enabled": False} if section is None else section, name)
            _check_sampler_fits(sections[name], name)
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


@lru_cache(maxsize=4)
def _validator(generators: tuple):
    # Checking the schema itself took most of a config load (0.5 s); do it once per set of registered generators.
    import jsonschema

    full = schema()
    cls = jsonschema.validators.validator_for(full)
    cls.check_schema(full)
    return cls(full)


def validate_schema(data: dict, source: str | Path = "config") -> None:
    import jsonschema

    validator = _validator(tuple((name, id(task)) for name, task in registry.tasks().items()))
    err = jsonschema.exceptions.best_match(validator.iter_errors(data))  # what jsonschema.validate raises
    if err is not None:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{where}: {err.message}", source)


def _check_sampler_fits(section: Any, name: str) -> None:
    """A section's sampler must be one its training objective can be sampled with (euler for rflow, ddim/ddpm
    for ddpm): refused when the preset is read, not after the training it would waste."""
    from medsci.diffusion.config import resolve_sampler

    model, sample = getattr(section, "model", None), getattr(section, "sample", None)
    schedule = getattr(model, "schedule", None)
    if not getattr(section, "enabled", False) or schedule is None or sample is None:
        return
    unet = getattr(model, "unet", None)
    try:
        resolve_sampler(sample, schedule, bool(getattr(unet, "variance_head", False)))
    except ConfigError as err:
        raise ConfigError(f"{name}: {err.reason}") from None


def config_from_dict(data: dict, source: str | Path = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of settings, not a {type(data).__name__}", source)
    _check_plain_values(data, source)
    _check_generators(data, source)
    validate_schema(data, source)
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(err.reason, source) from None


# A config is a few kilobytes; these limits refuse hostile files (nested-alias "billion laughs", deep nesting)
# before anything is built from them: a 356-byte file of nested anchors would otherwise expand to gigabytes.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # scalars + collections, aliases counted at their expanded size
MAX_CONFIG_DEPTH = 32
# yaml.safe_load raises more than YAMLError when a tagged scalar is not its type: ValueError (!!float 'x'), KeyError
# (!!bool 'x'), AttributeError (!!timestamp 'x'), IndexError (!!int ''), each found by fuzzing. It builds only plain
# values and runs no code of the file's, so whatever it raises is the file's fault: one clean error.
YAML_VALUE_ERRORS = (Exception,)


def load_config(path: str | Path) -> Config:
    return config_from_dict(read_preset(path), path)


# A preset may build on another one, and says so: `defaults: demo.yaml` (a path relative to the preset's folder)
# merges that file underneath. Nothing else is ever merged under a preset.
DEFAULTS_KEY = "defaults"


def read_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A preset's settings, with the chain of files its ``defaults:`` names merged underneath (nearest wins)."""
    data = read_config_yaml(path)
    base = data.pop(DEFAULTS_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{DEFAULTS_KEY}: must name one preset file (a path relative to this file)", path)
    try:
        base_path = (Path(path).parent / base).resolve()
        found = base_path.is_file()
    except (OSError, ValueError) as err:  # a NUL byte, a name too long
        raise ConfigError(f"{DEFAULTS_KEY}: {base!r} is not a usable file name ({err})", path) from None
    seen = (*_seen, Path(path).resolve())
    if base_path in seen:
        raise ConfigError(f"{DEFAULTS_KEY}: {base} leads back to itself "
                          f"({' -> '.join(p.name for p in (*seen, base_path))})", path)
    if not found:
        raise ConfigError(f"{DEFAULTS_KEY}: {base} not found ({base_path})", path)
    return merge_settings(read_preset(base_path, seen), data)


def merge_settings(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge key by key, anything else (numbers, lists) is replaced whole."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def workflow_settings(presets: list[str | Path], overrides: dict | None) -> dict:
    """What a Snakemake run works from: its ``--configfile`` presets in order (each with its ``defaults:`` chain),
    then its ``--config`` overrides, coerced to the schema's types (Snakemake passes nested values as text)."""
    data: dict = {}
    for preset in presets:
        data = merge_settings(data, read_preset(preset))
    return merge_settings(data, coerce_to_schema(_plain(overrides or {})))


def _plain(value: Any) -> Any:
    """Snakemake's frozen mappings as plain dicts (the schema check and the merge take dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def require_path(path: str | Path, key: str, folder: bool = True) -> Path:
    """A path a setting names (``synthesis.data.raw_dir``), refused in one line naming the key when it is not there."""
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        what = "folder" if folder else "file"
        state = f"is not a {what}" if path.exists() else "does not exist"
        raise ConfigError(f"{key}: {what} {path} {state}")
    return path


@lru_cache(maxsize=1)
def _top_level_keys() -> frozenset:
    """The engine's own top-level settings (parsed once, not on every config load)."""
    return frozenset(yaml.safe_load(_base_schema_text())["properties"]) | {DEFAULTS_KEY}


def _check_generators(data: dict, source: str | Path) -> None:
    """A top-level key that is neither a setting nor an installed generator: say which generators there are."""
    known = _top_level_keys()
    installed = registry.tasks()
    unknown = sorted(k for k in data if k not in known and k not in installed)
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not a setting and not an installed generator "
                          f"(installed: {', '.join(installed) or 'none'})", source)


def coerce_to_schema(data: Any, node: dict | None = None, defs: dict | None = None) -> Any:
    """Text values turned into the type the schema asks for where they spell one ("10" -> 10 for an integer,
    "false" -> False for a boolean, "null" where null is allowed). Text that spells no allowed type stays text,
    so validation still refuses it with the schema's message ("'abc' is not of type 'integer'")."""
    if node is None:
        node = schema()
        defs = node.get("$defs", {})
    nodes = _schema_alternatives(node, defs or {})
    if isinstance(data, dict):
        props: dict = {}
        for alt in nodes:
            for key, sub in alt.get("properties", {}).items():
                props.setdefault(key, sub)
        return {k: coerce_to_schema(v, props.get(k, {}), defs) for k, v in data.items()}
    if isinstance(data, list):
        items = next((alt["items"] for alt in nodes if isinstance(alt.get("items"), dict)), {})
        return [coerce_to_schema(v, items, defs) for v in data]
    if not isinstance(data, str):
        return data
    allowed = _schema_types(nodes)
    if "null" in allowed and data in ("null", "~"):
        return None
    if not allowed or "string" in allowed:
        return data
    try:
        value = yaml.safe_load(data) if len(data) < 10_000 else data
    except YAML_VALUE_ERRORS:
        return data
    if isinstance(value, str) and "number" in allowed:
        try:
            value = float(data)  # "1e-3": YAML 1.1 reads a float only with a dot in it
        except ValueError:
            return data
    if _json_type(value) in allowed or (_json_type(value) == "integer" and "number" in allowed):
        return coerce_to_schema(value, node, defs) if isinstance(value, (dict, list)) else value
    return data


def _schema_alternatives(node: dict, defs: dict, depth: int = 0) -> list[dict]:
    """The node and every branch it may take ($ref, oneOf, anyOf, allOf), resolved."""
    if not isinstance(node, dict) or depth > 16:
        return []
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        node = {**defs.get(ref.rsplit("/", 1)[1], {}), **{k: v for k, v in node.items() if k != "$ref"}}
    out = [node]
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            out.extend(_schema_alternatives(branch, defs, depth + 1))
    return out


def _schema_types(nodes: list[dict]) -> set[str]:
    types: set[str] = set()
    for alt in nodes:
        kind = alt.get("type")
        types.update([kind] if isinstance(kind, str) else kind or [])
        for value in alt.get("enum", []) + ([alt["const"]] if "const" in alt else []):
            types.add(_json_type(value))
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__


def read_config_yaml(path: str | Path) -> dict:
    """The mapping of a YAML config file: size-, depth- and alias-limited, safe-loaded, plain JSON types only."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError("is a folder, not a config file", path)
        if path.exists():
            regular_file(path)  # a named pipe would block the read
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file is larger than {MAX_CONFIG_BYTES // 1024} KiB; is it a config?", path)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file ({err.strerror or err})", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    try:
        check_yaml_structure(text, path)
        data = yaml.safe_load(text)
    except ConfigError:
        raise
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})", path) from None
    except YAML_VALUE_ERRORS as err:
        raise ConfigError(f"not valid YAML (cannot build a value: {type(err).__name__}: {err})", path) from None
    if data is None:
        raise ConfigError("config file is empty (no settings); start from configs/demo.yaml", path)
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of settings, not a {type(data).__name__}", path)
    return data


def check_yaml_structure(text: str, path: str | Path) -> None:
    """Walk the parser's events (no objects built) counting nodes at their expanded size and nesting depth; every
    YAML file medsci reads goes through this before ``yaml.safe_load`` (whose composer recurses: deep nesting
    would be a RecursionError)."""
    anchored: dict[str, int] = {}  # anchor -> expanded node count
    open_nodes: list[list] = []  # [anchor, node count so far] of the collections being read
    total = 0

    def add(count: int) -> None:
        nonlocal total
        if open_nodes:
            open_nodes[-1][1] += count
            count = open_nodes[-1][1]
        else:
            total += count
            count = total
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"YAML expands to more than {MAX_CONFIG_NODES} values (nested aliases?); "
                              "refused", path)

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_nodes.append([event.anchor, 1])
            if len(open_nodes) > MAX_CONFIG_DEPTH:
                raise ConfigError(f"YAML is nested more than {MAX_CONFIG_DEPTH} levels deep; refused", path)
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_nodes.pop()
            if anchor is not None:
                anchored[anchor] = count
            add(count)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchored[event.anchor] = 1
            add(1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchored:  # undefined, or a collection referring to itself
                raise ConfigError(f"alias *{event.anchor} refers to an undefined or enclosing anchor", path)
            add(anchored[event.anchor])


def _check_plain_values(data: dict, source: str | Path) -> None:
    """Only what JSON has (string keys; finite numbers): YAML dates, sets, binary, NaN and inf are refused. Values
    are visited as expanded, at most MAX_CONFIG_NODES of them, so a dict built with shared references (a YAML file
    of aliases read by another loader, e.g. Snakemake's) is refused in bounded time too."""
    visited = 0
    todo = [(data, "")]
    while todo:
        node, where = todo.pop()
        visited += 1
        if visited > MAX_CONFIG_NODES:
            raise ConfigError(f"config holds more than {MAX_CONFIG_NODES} values (nested aliases?); refused", source)
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise ConfigError(f"{where or '(top level)'}: key {key!r} is not a name", source)
                todo.append((value, f"{where}.{key}" if where else key))
        elif isinstance(node, (list, tuple)):
            todo.extend((value, f"{where}[{i}]") for i, value in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ConfigError(f"{where}: {node} is not a finite number", source)
        elif node is not None and not isinstance(node, (str, int, bool)):
            raise ConfigError(f"{where}: a {type(node).__name__} value is not allowed (quote it for a string)",
                              source)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def write_config(config: Config, path: str | Path) -> None:
    from medsci.io.atomic import write_text_atomic

    write_text_atomic(path, dump_config(config))
