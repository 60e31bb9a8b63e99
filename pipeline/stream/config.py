"""Stream configuration: which shards, how items are sampled, how frames are decoded and augmented."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.augment.params import FINETUNE, PECLR, TEMPCLR, AugmentSpec
from pipeline.errors import ConfigError
from pipeline.stream.sampling import NEGATIVE_LAWS, POSITIVE_LAWS
from pipeline.typedconfig import NonNegativeInt, PositiveInt, Probability, check, ranged

# finetune: one labelled frame per item (V = 1), geometric augmentation applied to image and labels alike.
# finetune_sequence: the same labels for `sequence_length` frames at `sequence_interval` of one clip (at least one
# of them labelled) under one geometric draw: the temporal fine-tuning losses' batches (finetune_eval.md §4.4).
MODES = ("tempclr", "peclr", "simclr", "sequence", "finetune", "finetune_sequence")
FINETUNE_MODES = ("finetune", "finetune_sequence")  # labelled batches in the fine-tuning format (design.md §3)
# TempCLR: "about half the frame rate" — 15 frames for HO-3D and 100DOH, 5 for HanCo.
DEFAULT_WINDOWS = {"hanco": 5, "ho3d": 15, "doh100": 15}
Weight = ranged(float, gt=0, le=1e6)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset stream. `shards`: a shard-set directory (its manifest restricts the shards to those
    holding this dataset), or shard URLs: local paths, globs, brace lists, `pipe:` commands, fsspec URLs
    (s3://, gs://, ...), as one string (`::`-separated) or a list."""

    name: str
    shards: str | tuple[str, ...]
    weight: Weight = 1.0  # relative; bounded so that no sum of weights overflows
    window: PositiveInt | None = None  # TempCLR half-width k; default DEFAULT_WINDOWS or round(fps / 2) or 15
    dataset: str | None = None  # sample `dataset` field to keep; default `name`

    def __post_init__(self) -> None:
        if isinstance(self.shards, list):
            object.__setattr__(self, "shards", tuple(self.shards))
        check(self, f"dataset {self.name!r}")

    @property
    def select(self) -> str:
        return self.dataset or self.name


@dataclass(frozen=True)
class StreamConfig:
    """Every field is checked against its annotation on construction (pipeline/typedconfig.py)."""

    datasets: tuple[DatasetSpec, ...]
    mode: Literal[MODES] = "tempclr"
    batch_size: PositiveInt = 32  # items per batch on one rank
    seed: NonNegativeInt = 0
    out_size: PositiveInt = 224
    slot_size: PositiveInt = 256  # stored crops are placed in an S x S slot (HanCo's 224² centred)
    positives: PositiveInt = 1
    negatives: NonNegativeInt = 2
    positive_law: Literal[POSITIVE_LAWS] = "linear"
    negative_law: Literal[NEGATIVE_LAWS] = "distance"
    items_per_sample: PositiveInt = 1  # per clip sample: anchors (tempclr), frames (peclr/simclr, labelled ones for
    # finetune, at most all of them) or sequences
    sequence_length: PositiveInt = 3
    sequence_interval: PositiveInt = 3
    augment: AugmentSpec = field(default_factory=lambda: TEMPCLR)
    executor: Literal["none", "cv2"] = "none"  # "none": decode only (the trainer augments on the device)
    decoder: Literal["simplejpeg", "cv2"] = "simplejpeg"
    interleave: PositiveInt = 4  # shards read concurrently per dataset stream (decorrelates consecutive items)
    items_per_epoch: PositiveInt | None = None  # all ranks together; default: what the manifests imply
    labels: bool = False  # always True in finetune mode
    read_timeout: ranged(float, ge=0) = 0.0  # s a shard read may wait for data, else the shard is skipped (0: none)
    # Held-out validation and semi-supervised label subsets (pipeline/stream/splits.py): whole sequences go to
    # "val" by a stable hash; label_fraction keeps that share of each sequence's frames labelled.
    split: Literal["all", "train", "val"] = "all"
    val_fraction: Probability = 0.1
    label_fraction: ranged(float, gt=0, le=1) = 1.0
    split_seed: NonNegativeInt = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
        check(self, "stream config")
        if not self.datasets:
            raise ConfigError("stream config: no datasets")
        if len({d.name for d in self.datasets}) != len(self.datasets):
            raise ConfigError(f"stream config: dataset names must be unique, got {[d.name for d in self.datasets]}")
        if (self.split == "val" and self.val_fraction == 0) or (self.split == "train" and self.val_fraction == 1):
            raise ConfigError(f"stream config: split {self.split!r} is empty with val_fraction {self.val_fraction}")
        if self.mode in FINETUNE_MODES:
            object.__setattr__(self, "labels", True)  # items are drawn from labelled frames only

    @property
    def views(self) -> int:
        if self.mode == "tempclr":
            return 1 + self.positives + self.negatives
        if self.mode in ("sequence", "finetune_sequence"):
            return self.sequence_length
        return 1 if self.mode == "finetune" else 2

    @property
    def time_coherent(self) -> bool:
        """One geometric draw per item (TempCLR, sequences) rather than one per view (PeCLR, SimCLR)."""
        return self.mode in ("tempclr", "sequence", "finetune_sequence")

    @property
    def weights(self) -> list[float]:
        total = sum(d.weight for d in self.datasets)
        return [d.weight / total for d in self.datasets]

    def window(self, spec: DatasetSpec, fps: float | None) -> int:
        if spec.window is not None:
            return spec.window
        if spec.select in DEFAULT_WINDOWS:
            return DEFAULT_WINDOWS[spec.select]
        return max(1, round(fps / 2)) if fps else 15


def preset_augment(mode: str) -> AugmentSpec:
    if mode in FINETUNE_MODES:
        return FINETUNE
    return PECLR if mode in ("peclr", "simclr") else TEMPCLR
