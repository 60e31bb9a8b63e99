"""One typed-config mechanism: annotations are the schema for training configs, stream configs and recipes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.sharding.recipe import load_recipe
from pipeline.stream import DatasetSpec, StreamConfig
from pipeline.typedconfig import PositiveInt, apply_override, load, parse_yaml, ranged


@dataclass(frozen=True)
class Inner:
    size: tuple[PositiveInt, PositiveInt] = (1, 1)
    ratio: ranged(float, gt=0, le=1) = 0.5


@dataclass
class Outer:
    name: str
    flag: bool = False
    count: int = 0
    choice: Literal[1, 2, "x"] = 1
    maybe: PositiveInt | None = None
    either: str | list[str] = "a"
    inner: Inner = field(default_factory=Inner)
    table: dict[Literal["a", "b"], int] = field(default_factory=dict)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": 3}, "outer.name: expected a string, got 3"),
    ({"name": "n", "flag": "false"}, "outer.flag: expected true or false, got 'false'"),
    ({"name": "n", "flag": 0}, "outer.flag: expected true or false, got 0"),
    ({"name": "n", "count": 2.5}, "outer.count: expected a whole number, got 2.5"),
    ({"name": "n", "count": True}, "outer.count: expected int, got True"),
    ({"name": "n", "choice": True}, r"outer.choice: True is not one of \[1, 2, 'x'\]"),
    ({"name": "n", "choice": 3}, "outer.choice: 3 is not one of"),
    ({"name": "n", "maybe": 0}, "outer.maybe: 0 out of range: must be >= 1"),
    ({"name": "n", "either": [1]}, r"outer.either: \[1\] \(list\) matches none of"),
    ({"name": "n", "inner": {"size": [1]}}, r"outer.inner.size: expected 2 values, got 1"),
    ({"name": "n", "inner": {"size": [1, 0]}}, r"outer.inner.size\[1\]: 0 out of range"),
    ({"name": "n", "inner": {"ratio": float("nan")}}, "outer.inner.ratio: expected a finite number, got nan"),
    ({"name": "n", "inner": {"ratio": 1.5}}, "outer.inner.ratio: 1.5 out of range: must be <= 1"),
    ({"name": "n", "inner": {"other": 1}}, r"outer.inner: unknown key\(s\) \['other'\]"),
    ({"name": "n", "table": {"c": 1}}, "outer.table key: 'c' is not one of"),
    ({"name": "n", "table": {"a": "1"}}, "outer.table.a: expected int"),
    ({}, r"outer: missing required key\(s\) \['name'\]"),
    ([1], "outer: expected a mapping"),
])
def test_each_wrong_value_is_named(data, message):
    with pytest.raises(ConfigError, match=message):
        load(Outer, data, "outer")


def test_good_values_are_converted_to_the_annotation():
    got = load(Outer, {"name": "n", "count": 3, "choice": "x", "either": ["p", "q"], "inner": {"size": [2, 3],
                                                                                              "ratio": 1},
                       "table": {"b": 4}}, "outer")
    assert got == Outer("n", False, 3, "x", None, ["p", "q"], Inner((2, 3), 1.0), {"b": 4})
    assert isinstance(got.inner.size, tuple) and isinstance(got.inner.ratio, float)


def test_yaml_1_2_numbers():
    """PyYAML (YAML 1.1) reads 1e-4 as a string; configs read it as the number it is."""
    assert yaml.safe_load("1e-4") == "1e-4"
    assert parse_yaml("[1e-4, 5E3, .5, -2.0e+1, .inf, 1_0, '1e-4']", "t")[:4] == [1e-4, 5e3, 0.5, -20.0]
    assert parse_yaml("'1e-4'", "t") == "1e-4"
    data: dict = {}
    apply_override(data, "optim.lr=1e-4")
    assert data == {"optim": {"lr": 1e-4}}


def test_stream_config_checks_its_fields_when_built_in_code():
    spec = DatasetSpec("a", ["x", "y"])
    assert spec.shards == ("x", "y")
    for kwargs, message in [({"weight": float("nan")}, "weight: expected a finite number"),
                            ({"weight": 1e308}, "weight: 1e\\+308 out of range"),
                            ({"window": 0}, "window: 0 out of range")]:
        with pytest.raises(ConfigError, match=message):
            DatasetSpec("a", "x", **kwargs)
    for kwargs, message in [({"items_per_epoch": 0}, "items_per_epoch: 0 out of range"),
                            ({"mode": "byol"}, "mode: 'byol' is not one of"),
                            ({"batch_size": -1}, "batch_size: -1 out of range"),
                            ({"datasets": ()}, "no datasets")]:
        with pytest.raises(ConfigError, match=message):
            StreamConfig(**{"datasets": (spec,), **kwargs})


def _recipe(tmp_path, sharding=None, options=None, **entry):
    path = tmp_path / "r.yaml"
    source = {"type": "hanco", "path": "hanco", **({"options": options} if options is not None else {}), **entry}
    path.write_text(yaml.safe_dump({"sharding": sharding or {}, "sources": [source]}))
    return path


@pytest.mark.parametrize(("sharding", "options", "message"), [
    ({"strict": "false"}, None, "sharding.strict: expected true or false, got 'false'"),
    ({"store_size": 256.9}, None, "sharding.store_size: expected a whole number, got 256.9"),
    ({"context": float("inf")}, None, "sharding.context: expected a finite number, got inf"),
    ({"fill_value": 300}, None, "sharding.fill_value: 300 out of range: must be <= 255"),
    ({"fill_value": -1}, None, "sharding.fill_value: -1 out of range: must be >= 0"),
    ({"chunk_frames": 0}, None, "sharding.chunk_frames: 0 out of range"),
    (None, {"fpss": 30}, r"sources\[0\].options: unknown key\(s\) \['fpss'\]"),
    (None, {"fps": "thirty"}, r"sources\[0\].options.fps: expected float, got 'thirty'"),
    (None, {"fps": 0}, r"sources\[0\].options.fps: 0.0 out of range"),
    (None, {"cameras": [9]}, r"sources\[0\].options.cameras\[0\]: 9 out of range"),
    (None, {"filters": {"is_trian": True}}, r"sources\[0\].options.filters key: 'is_trian' is not one of"),
])
def test_recipe_values_are_typed(tmp_path, sharding, options, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(_recipe(tmp_path, sharding, options))


def test_recipe_entry_keys_and_types(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\[0\].type: 'hank' is not one of"):
        load_recipe(_recipe(tmp_path, type="hank"))
    with pytest.raises(ConfigError, match=r"sources\[0\]: unknown key\(s\) \['option'\]"):
        load_recipe(_recipe(tmp_path, option={}))
    recipe = load_recipe(_recipe(tmp_path, {"strict": True}, {"fps": 30, "cameras": [0, 1]}))
    assert recipe.sharding.strict is True
    assert recipe.sources[0].options == {"fps": 30.0, "cameras": [0, 1]}
