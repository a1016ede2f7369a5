"""Base class for typed configuration sections.

A section is a frozen-free dataclass built from a YAML mapping: unknown keys are refused (a typo is an error,
not a silent default), lists become tuples where the field is a tuple, nested sections are built recursively.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any, TypeVar

from medsci.errors import ConfigError

T = TypeVar("T", bound="ConfigSection")


def preset(section: type, **values):
    """A field defaulting to ``section(**values)``: a generator's own defaults of a shared section."""
    return dataclasses.field(default_factory=lambda: section(**values))


@dataclasses.dataclass
class ConfigSection:
    def __init_subclass__(cls, **kwargs):
        # A field typed as a section and given no default defaults to that section's defaults, so a generator's
        # config lists its sections as `data: SeismicDataConfig` (runs before @dataclass reads the fields).
        super().__init_subclass__(**kwargs)
        names = vars(sys.modules[cls.__module__])
        for name, hint in vars(cls).get("__annotations__", {}).items():
            if name in vars(cls):
                continue
            try:
                kind = eval(hint, names) if isinstance(hint, str) else hint
            except Exception:  # a hint this module cannot resolve yet: not a section
                continue
            if isinstance(kind, type) and issubclass(kind, ConfigSection):
                setattr(cls, name, dataclasses.field(default_factory=kind))

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in section {where or cls.__name__}")
        kwargs = {}
        for name, value in data.items():
            kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"section {where or cls.__name__}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ConfigSection):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = {k: (v.to_dict() if isinstance(v, ConfigSection) else v) for k, v in value.items()}
            out[f.name] = value
        return out


def _coerce(hint, value, where):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        return None
    if isinstance(hint, type) and issubclass(hint, ConfigSection):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return hint.from_dict(value, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            if typing.get_origin(arg) is tuple and isinstance(value, (list, tuple)):
                return tuple(value)
            if isinstance(arg, type) and issubclass(arg, ConfigSection) and isinstance(value, dict):
                return arg.from_dict(value, where)
    if hint is float and isinstance(value, int):
        return float(value)
    return value
