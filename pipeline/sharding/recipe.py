"""Sharding recipes: YAML files listing sources (dataset type, path relative to --root, options) and the
sharding options, with per-source overrides; all typed and checked at load (pipeline/typedconfig.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.errors import ConfigError
from pipeline.sharding.options import ShardOptions
from pipeline.sources import SOURCES, Source
from pipeline.typedconfig import load, read_yaml, to_data


@dataclass
class SourceSpec:
    type: str
    path: str
    options: dict
    sharding: ShardOptions

    def build(self, root: Path) -> Source:
        return SOURCES[self.type](root / self.path, **self.options)


@dataclass
class Recipe:
    name: str
    sharding: ShardOptions
    sources: list[SourceSpec]
    text: str  # canonical JSON of the recipe, stored with the output to detect a changed plan

    def fingerprint(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceEntry:
    type: Literal[tuple(SOURCES)]
    path: str
    options: dict = field(default_factory=dict)
    sharding: dict = field(default_factory=dict)


def _source(entry: dict, base: ShardOptions, overrides: dict, where: str) -> SourceSpec:
    src = load(SourceEntry, entry, where)
    options = load(SOURCES[src.type].Options, src.options, f"{where}.options")
    given = {k: getattr(options, k) for k in src.options}  # the reader applies its own defaults
    local = load(ShardOptions, {**to_data(base), **src.sharding, **overrides}, f"{where}.sharding")
    return SourceSpec(src.type, src.path, given, local)


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Parse and type-check a recipe (every sharding option and every source option against its annotation);
    `overrides` (e.g. {"strict": True}) replace global sharding options."""
    path = Path(path)
    where = f"recipe {path}"
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise ConfigError(f"{where}: expected a mapping with a non-empty `sources` list")
    unknown = sorted(set(data) - {"name", "sharding", "sources"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: ['name', 'sharding', 'sources']")
    overrides = overrides or {}
    base = load(ShardOptions, {**(data.get("sharding") or {}), **overrides}, f"{where}: sharding")
    specs = [_source(src, base, overrides, f"{where}: sources[{i}]") for i, src in enumerate(data["sources"])]
    canonical = {"sharding": dataclasses.asdict(base),
                 "sources": [{**dataclasses.asdict(s), "sharding": dataclasses.asdict(s.sharding)} for s in specs]}
    for entry in canonical["sources"] + [canonical]:
        entry["sharding"].pop("strict")
    return Recipe(str(data.get("name", path.stem)), base, specs, json.dumps(to_data(canonical), sort_keys=True))
