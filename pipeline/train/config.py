"""Typed training config: YAML recipe + `--set section.key=value` overrides, validated, saved with every run."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import HandclrError


class ConfigError(HandclrError):
    pass


@dataclass
class DatasetEntry:
    name: str
    shards: str
    weight: float = 1.0
    window: int | None = None


@dataclass
class DataConfig:
    datasets: list[DatasetEntry] = field(default_factory=list)
    out_size: int = 224
    positives: int = 1
    negatives: int = 2
    positive_law: str = "linear"
    negative_law: str = "distance"
    items_per_sample: int = 16
    items_per_epoch: int | None = None
    num_workers: int = 4
    executor: str = "none"
    reuse_buffers: bool = True
    seed: int = 0


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    hidden: int = 512
    out: int = 128
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    frozen_norm: bool = False


@dataclass
class ObjectiveConfig:
    name: str = "tempclr"  # tempclr | peclr | simclr
    temperature: float = 0.5
    batch_negatives: bool = False  # tempclr: also every other frame of the global batch outside the window
    positive_in_denominator: bool = True  # False: TempCLR's Eq. 2 literally


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 4.5e-3
    lr_scaling: str = "none"  # none | sqrt: lr x sqrt(effective batch) (PeCLR: 1e-4 x sqrt(2048))
    weight_decay: float = 0.0
    momentum: float = 0.9
    lars: bool = False
    lars_eta: float = 1e-3
    grad_clip: float | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16
    max_nonfinite: int = 5  # consecutive skipped steps before the run aborts


@dataclass
class ScheduleConfig:
    epochs: int = 50
    warmup_epochs: float = 10.0
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs, benchmarks)


@dataclass
class DistributedConfig:
    effective_batch: int = 2048  # items: anchors (tempclr) or images (peclr/simclr), over all devices
    micro_batch: int = 128  # items per device per forward
    mode: str = "gradient_cache"  # gradient_cache (exact) | plain (each micro-batch its own loss)


@dataclass
class CheckpointConfig:
    dir: str = "runs/pretrain"
    every_steps: int = 1000
    keep_last: int = 3


@dataclass
class LoggingConfig:
    report_to: str = "tensorboard"  # tensorboard | wandb | none
    every_steps: int = 10
    progress: bool = True


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        problems = []
        choices = [("objective.name", self.objective.name, ("tempclr", "peclr", "simclr")),
                   ("optim.name", self.optim.name, ("adam", "adamw", "sgd")),
                   ("optim.lr_scaling", self.optim.lr_scaling, ("none", "sqrt")),
                   ("optim.precision", self.optim.precision, ("fp32", "bf16", "fp16")),
                   ("distributed.mode", self.distributed.mode, ("gradient_cache", "plain")),
                   ("logging.report_to", self.logging.report_to, ("tensorboard", "wandb", "none")),
                   ("data.executor", self.data.executor, ("none", "cv2"))]
        for name, value, allowed in choices:
            if value not in allowed:
                problems.append(f"{name}={value!r} not in {allowed}")
        if not self.data.datasets:
            problems.append("data.datasets is empty")
        for name in ("effective_batch", "micro_batch"):
            if getattr(self.distributed, name) < 1:
                problems.append(f"distributed.{name} must be >= 1")
        if self.schedule.epochs < 1 or self.schedule.warmup_epochs < 0:
            problems.append("schedule.epochs must be >= 1 and warmup_epochs >= 0")
        if problems:
            raise ConfigError("config: " + "; ".join(problems))

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimiser step on each device: E / (micro x world), which must be an integer."""
        e, m = self.distributed.effective_batch, self.distributed.micro_batch
        if e % (m * world_size):
            raise ConfigError(f"effective_batch {e} is not a multiple of micro_batch {m} x world size {world_size}"
                              f" = {m * world_size}; change one of them")
        return e // (m * world_size)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _build(cls, data: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        sub = _SECTIONS.get((cls, name))
        if sub is DatasetEntry:
            if not isinstance(value, list):
                raise ConfigError(f"{where}.{name}: expected a list of datasets")
            value = [_build(DatasetEntry, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif sub is not None:
            value = _build(sub, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_SECTIONS = {(TrainConfig, f.name): f.default_factory for f in fields(TrainConfig)}
_SECTIONS[(DataConfig, "datasets")] = DatasetEntry


def apply_override(data: dict, assignment: str) -> None:
    """`section.key=value` (value parsed as YAML) into the nested dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {k} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config {path}: cannot read ({exc})") from exc
    for assignment in overrides:
        apply_override(data, assignment)
    cfg = _build(TrainConfig, data, str(path or "config"))
    cfg.validate()
    return cfg
