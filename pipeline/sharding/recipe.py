"""Sharding recipes: YAML files listing sources (dataset type, path relative to --root, options) and the
sharding options, with per-source overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.errors import HandclrError
from pipeline.sharding.options import ShardOptions
from pipeline.sources import SOURCES, Source


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


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Parse and validate a recipe; `overrides` (e.g. {"strict": True}) replace global sharding options."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise HandclrError(f"recipe {path}: cannot read ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise HandclrError(f"recipe {path}: expected a mapping with a non-empty `sources` list")
    try:
        base = ShardOptions.from_dict({**(data.get("sharding") or {}), **(overrides or {})}, f"recipe {path}")
        specs = []
        for i, src in enumerate(data["sources"]):
            where = f"recipe {path}: sources[{i}]"
            if not isinstance(src, dict) or src.get("type") not in SOURCES or not src.get("path"):
                raise HandclrError(f"{where}: needs `type` (one of {sorted(SOURCES)}) and `path`")
            extra = set(src) - {"type", "path", "options", "sharding"}
            if extra:
                raise HandclrError(f"{where}: unknown key(s) {sorted(extra)}")
            local = ShardOptions.from_dict({**dataclasses.asdict(base), **(src.get("sharding") or {}),
                                            **(overrides or {})}, where)
            specs.append(SourceSpec(src["type"], str(src["path"]), dict(src.get("options") or {}), local))
    except (TypeError, ValueError) as exc:
        raise HandclrError(str(exc)) from exc
    canonical = {"sharding": dataclasses.asdict(base),
                 "sources": [{**dataclasses.asdict(s), "sharding": dataclasses.asdict(s.sharding)} for s in specs]}
    for entry in canonical["sources"] + [canonical]:
        entry["sharding"].pop("strict")
    return Recipe(str(data.get("name", path.stem)), base, specs, json.dumps(canonical, sort_keys=True))
