"""Typed training config: YAML recipe + `--set section.key=value` overrides, every field checked against its
annotation at load (pipeline/typedconfig.py), saved with every run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml

from pipeline.errors import ConfigError
from pipeline.stream.config import DatasetSpec, StreamConfig, preset_augment
from pipeline.typedconfig import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    apply_override,
    coerce,
    hints,
    load,
    ranged,
    read_yaml,
    to_data,
)


@dataclass
class LoaderConfig:
    """How each rank's StreamLoader runs (pipeline/stream/loader.py)."""

    num_workers: NonNegativeInt = 4
    prefetch_factor: PositiveInt = 2
    reuse_buffers: bool = True  # workers recycle batch buffers; sized for the micro-batches a step holds
    timeout: NonNegativeFloat = 0.0  # seconds a worker may take for one batch before the run fails (0: no limit)


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    hidden: PositiveInt = 512
    out: PositiveInt = 128
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    frozen_norm: bool = False


@dataclass
class FinetuneConfig:
    """Fine-tuning a hand reconstructor (task: finetune). Defaults: TempCLR's MANO head (finetune_eval.md §9)."""

    head: Literal["mano", "2p5d"] = "mano"
    init: str = "random"  # random | imagenet (timm's weights) | PATH of a pre-training run's encoder.safetensors
    mano_model: str = "mano/MANO_RIGHT.pkl"  # the official right-hand file (never shipped), or sample-data's
    tips: Literal["freihand", "manopth", "ho3d"] = "freihand"  # fingertip vertex ids of the 21 joints
    stages: PositiveInt = 3  # iterative regressor stages; the last is penalised
    hidden: tuple[PositiveInt, ...] = (1024, 1024)
    refine: bool = False  # 2.5D: root-depth refinement MLP
    weights: dict[Literal["joints2d", "joints3d", "pose", "betas", "uv", "z_rel", "z_root"],
                  NonNegativeFloat] = field(default_factory=dict)  # loss weights over the defaults
    # Temporal losses (pipeline/objectives/temporal.py; S²HAND(V): motion 0.05, shape 0.01): a key missing is off.
    # Any key (even with weight 0) switches the stream to finetune_sequence: data.sequence_length frames at
    # data.sequence_interval of one clip per item, one geometric draw per item. motion and shape need the MANO head.
    temporal: dict[Literal["motion", "shape", "accel"], NonNegativeFloat] = field(default_factory=dict)
    val_every_steps: PositiveInt = 500  # validation on data.split=val, best checkpoint by PA-MPJPE
    val_items: PositiveInt = 512  # validation frames (at most)


@dataclass
class ObjectiveConfig:
    name: Literal["tempclr", "peclr", "simclr"] = "tempclr"
    temperature: PositiveFloat = 0.5
    batch_negatives: bool = False  # tempclr: also every other frame of the global batch outside the window
    positive_in_denominator: bool = True  # False: TempCLR's Eq. 2 literally


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 4.5e-3
    lr_scaling: Literal["none", "sqrt"] = "none"  # sqrt: lr x sqrt(effective batch) (PeCLR: 1e-4 x sqrt(2048))
    weight_decay: NonNegativeFloat = 0.0
    momentum: ranged(float, ge=0, lt=1) = 0.9
    lars: bool = False
    lars_eta: PositiveFloat = 1e-3  # trust coefficient
    lars_clip: bool = False  # LARC: per-tensor multiplier min(trust lr / lr, 1) (Lightning Bolts, PeCLR's code)
    lars_exclude: bool = True  # biases and norm parameters skip the trust ratio (False: every tensor, as Bolts)
    grad_clip: PositiveFloat | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_nonfinite: PositiveInt = 5  # consecutive skipped steps before the run aborts


@dataclass
class ScheduleConfig:
    epochs: PositiveInt = 50
    warmup_epochs: NonNegativeFloat = 10.0
    max_steps: PositiveInt | None = None  # stop after this many optimiser steps (smoke runs, benchmarks)


@dataclass
class DistributedConfig:
    effective_batch: PositiveInt = 2048  # items: anchors (tempclr) or images (peclr/simclr), over all devices
    micro_batch: PositiveInt = 128  # items per device per forward
    mode: Literal["gradient_cache", "plain"] = "gradient_cache"  # plain: each micro-batch its own loss


@dataclass
class CheckpointConfig:
    dir: str = "runs/pretrain"
    every_steps: PositiveInt = 1000
    keep_last: PositiveInt = 3


@dataclass
class LoggingConfig:
    report_to: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    every_steps: PositiveInt = 10
    progress: bool = True


@dataclass
class ProbeConfig:
    """Pre-training's linear probe (pipeline/train/components/probe.py): ridge regression from the frozen encoder's
    features to 3D joints and 2D keypoints, and k-NN temporal retrieval, on fixed labelled frames. Off without
    datasets. Cost: one no-grad forward of `items` frames and a few small solves on rank 0; at every_steps 500 that
    stayed below 1.5 % of training time even with a 32-item step (CPU, resnet18, 224 px)."""

    datasets: tuple[DatasetSpec, ...] = ()  # labelled shard sets (FreiHAND, HanCo, HO-3D, ...); empty: no probe
    every_steps: PositiveInt = 500
    items: PositiveInt = 1024  # probe frames, shared evenly by the datasets (uint8 crops kept in memory)
    ridge: tuple[PositiveFloat, ...] = (0.1, 1.0, 10.0, 100.0)  # lambdas on standardised features; several: the
    # best by a held-out share of the train part's sequences
    holdout: ranged(float, gt=0, lt=1) = 0.25  # share of each dataset's sequences held out for the errors
    k: PositiveInt = 5  # retrieval neighbours
    window: PositiveInt = 2  # retrieval: a neighbour counts if of the same clip within +-window positions


@dataclass
class TrainConfig:
    """`data` is the stream config itself, except `mode` (= objective.name) and `batch_size` (= micro_batch),
    which the loader fills in; `data.augment` defaults to the objective's preset."""

    data: StreamConfig
    task: Literal["pretrain", "finetune"] = "pretrain"
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def stream_mode(self) -> str:
        return stream_mode(self.task, self.objective, self.finetune)

    def __post_init__(self) -> None:
        if self.data.mode != self.stream_mode or self.data.batch_size != self.distributed.micro_batch:
            raise ConfigError(f"data.mode {self.data.mode!r} / data.batch_size {self.data.batch_size} must equal "
                              f"the task's stream mode {self.stream_mode!r} / distributed.micro_batch "
                              f"{self.distributed.micro_batch} (load_config fills them in)")
        if self.distributed.micro_batch > self.distributed.effective_batch:
            raise ConfigError(f"distributed.micro_batch {self.distributed.micro_batch} exceeds effective_batch "
                              f"{self.distributed.effective_batch}")

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimiser step on each device: E / (micro x world), which must be an integer."""
        e, m = self.distributed.effective_batch, self.distributed.micro_batch
        if e % (m * world_size):
            raise ConfigError(f"effective_batch {e} is not a multiple of micro_batch {m} x world size {world_size}"
                              f" = {m * world_size}; change one of them")
        return e // (m * world_size)

    def to_dict(self) -> dict:
        data = to_data(self)
        for derived in DERIVED:
            data["data"].pop(derived)
        return data

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def stream_mode(task: str, objective: ObjectiveConfig, finetune: FinetuneConfig) -> str:
    """The stream's mode: the objective's for pre-training; fine-tuning batches are sequences with temporal losses."""
    if task == "finetune":
        return "finetune_sequence" if finetune.temporal else "finetune"
    return objective.name


DERIVED = ("mode", "batch_size")  # data fields the trainer sets from objective.name and distributed.micro_batch


def from_dict(data: dict, where: str = "config") -> TrainConfig:
    """Every section typed (pipeline/typedconfig.py); the data section becomes the StreamConfig."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    sections = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; known: {sorted(sections)}")
    built = {name: load(sections[name].default_factory, data.get(name), f"{where}.{name}")
             for name in sections if name not in ("data", "task")}
    built["task"] = coerce(hints(TrainConfig)["task"], data.get("task", "pretrain"), f"{where}.task")
    raw = data.get("data") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.data: expected a mapping, got {type(raw).__name__}")
    for derived, source in zip(DERIVED, ("objective.name / task", "distributed.micro_batch"), strict=True):
        if derived in raw:
            raise ConfigError(f"{where}.data.{derived}: set by {source}, not in the data section")
    mode = stream_mode(built["task"], built["objective"], built["finetune"])
    raw = {**raw, "augment": merged(to_data(preset_augment(mode)), raw.get("augment"))}
    fixed = {"mode": mode, "batch_size": built["distributed"].micro_batch}
    return TrainConfig(data=load(StreamConfig, raw, f"{where}.data", **fixed), **built)


def merged(base: dict, given):
    """`given` laid over `base` key by key (nested mappings merged), so `data.augment` only changes what it names
    of the objective's preset."""
    if not isinstance(given, dict):
        return base if given is None else given
    return {**base, **{k: merged(base[k], v) if isinstance(base.get(k), dict) else v for k, v in given.items()}}


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    data = read_yaml(path) if path is not None else {}
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(data, str(path or "config"))
