"""Typed configs: dataclasses whose fields are checked against their annotations when they are loaded.

One mechanism for training configs, stream configs and sharding recipes. A YAML mapping (plus `--set` overrides)
becomes a dataclass only if every key is a field, every value has the field's type — `bool` is only a YAML
boolean, `int` only a whole number, `float` a finite number, `Literal[...]` one of its values, `X | None`,
`list[X]`, `tuple[X, ...]`, `tuple[X, Y]` and nested dataclasses recursively — and every bound written as
`Annotated[int, Range(ge=1)]` holds. The first problem raises ConfigError naming the key path and the value,
before any work starts. YAML is read with YAML 1.2 number rules, so `1e-4` is a float, not a string.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a number field: ge/le inclusive, gt/lt exclusive."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float, where: str) -> None:
        bad = ((self.ge is not None and not value >= self.ge, f">= {self.ge}"),
               (self.gt is not None and not value > self.gt, f"> {self.gt}"),
               (self.le is not None and not value <= self.le, f"<= {self.le}"),
               (self.lt is not None and not value < self.lt, f"< {self.lt}"))
        for failed, rule in bad:
            if failed:
                raise ConfigError(f"{where}: {value!r} out of range: must be {rule}")


def ranged(kind: type, **bounds: float) -> Any:
    """`ranged(int, ge=1)` is `Annotated[int, Range(ge=1)]`."""
    return Annotated[kind, Range(**bounds)]


PositiveInt = ranged(int, ge=1)
NonNegativeInt = ranged(int, ge=0)
PositiveFloat = ranged(float, gt=0)
NonNegativeFloat = ranged(float, ge=0)
Probability = ranged(float, ge=0, le=1)
ByteValue = ranged(int, ge=0, le=255)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats: `1e-4`, `5E3` and `.5` are numbers (YAML 1.1 wants `1.0e-4`)."""


_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from exc


def read_yaml(path: str | Path) -> Any:
    """A YAML file (config or recipe) as plain data; a clear ConfigError when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    return parse_yaml(text, str(path))


def apply_override(data: dict, assignment: str) -> None:
    """`section.key=value` (value parsed as YAML 1.2) into the nested dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {k} is not a section")
    node[keys[-1]] = parse_yaml(raw, f"--set {assignment!r}")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _number(kind: type, value: Any, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {_describe(value)}")
    if kind is int:
        if isinstance(value, float):
            raise ConfigError(f"{where}: expected a whole number, got {_describe(value)}")
        return value
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _sequence(origin: Any, args: tuple, value: Any, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    items = [coerce(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _union(args: tuple, value: Any, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # `X | None`: X's own message
        return coerce(options[0], value, where)
    problems = []
    for option in options:
        try:
            return coerce(option, value, where)
        except ConfigError as exc:
            problems.append(str(exc).removeprefix(f"{where}: "))
    raise ConfigError(f"{where}: {_describe(value)} matches none of: " + "; ".join(problems))


def _scalar(annotation: Any, value: Any, where: str) -> Any:
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if annotation in (int, float):
        return _number(annotation, value, where)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        return value
    if annotation is Any:
        return value
    raise TypeError(f"{where}: annotation {annotation!r} is not supported by typed configs")


def _annotated(args: tuple, value: Any, where: str) -> Any:
    result = coerce(args[0], value, where)
    for extra in args[1:]:
        if isinstance(extra, Range):
            extra.check(result, where)
    return result


def _literal(args: tuple, value: Any, where: str) -> Any:
    if not any(value == a and type(value) is type(a) for a in args):
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    return value


def _mapping(args: tuple, value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
    key_type, value_type = args or (Any, Any)
    return {coerce(key_type, k, f"{where} key"): coerce(value_type, v, f"{where}.{k}") for k, v in value.items()}


def coerce(annotation: Any, value: Any, where: str) -> Any:
    """`value` as an instance of `annotation`, or ConfigError naming `where` and what is wrong."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _annotated(args, value, where)
    if origin is Literal:
        return _literal(args, value, where)
    if origin in (Union, types.UnionType):
        return _union(args, value, where)
    if origin in (list, tuple):
        return _sequence(origin, args, value, where)
    if origin is dict or annotation is dict:
        return _mapping(args, value, where)
    if dataclasses.is_dataclass(annotation):
        return load(annotation, value, where)
    return _scalar(annotation, value, where)


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def load(cls: type, data: Any, where: str, **fixed: Any) -> Any:
    """Build dataclass `cls` from a mapping, every field coerced; `fixed` are values set by the caller (not
    checked against the mapping's keys). Fields missing from the mapping keep their defaults."""
    if isinstance(data, cls):
        data = {f.name: getattr(data, f.name) for f in dataclasses.fields(cls)}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    annotations = hints(cls)
    types_ = {f.name: annotations[f.name] for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(data) - set(types_))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(types_)}")
    kwargs = {name: coerce(types_[name], value, f"{where}.{name}") for name, value in data.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs and f.name not in fixed
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    try:
        return cls(**kwargs, **fixed)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def check(obj: Any, where: str | None = None) -> None:
    """Check a dataclass built in code (not loaded) against its annotations: the same rules as `load`."""
    where = where or type(obj).__name__
    annotations = hints(type(obj))
    for f in dataclasses.fields(obj):
        coerce(annotations[f.name], getattr(obj, f.name), f"{where}.{f.name}")


def to_data(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML/JSON: tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj
