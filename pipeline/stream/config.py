"""Stream configuration: which shards, how items are sampled, how frames are decoded and augmented."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.augment.params import PECLR, TEMPCLR, AugmentSpec
from pipeline.errors import HandclrError
from pipeline.stream.sampling import NEGATIVE_LAWS, POSITIVE_LAWS

MODES = ("tempclr", "peclr", "simclr", "sequence")
# TempCLR: "about half the frame rate" — 15 frames for HO-3D and 100DOH, 5 for HanCo.
DEFAULT_WINDOWS = {"hanco": 5, "ho3d": 15, "doh100": 15}


class StreamError(HandclrError):
    """A stream that cannot run as configured (no shards, no usable item in a whole pass, bad setting)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset stream. `shards`: a shard-set directory (its manifest restricts the shards to those
    holding this dataset), or shard URLs: local paths, globs, brace lists, `pipe:` commands, fsspec URLs
    (s3://, gs://, ...), as one string (`::`-separated) or a list."""

    name: str
    shards: str | tuple[str, ...]
    weight: float = 1.0
    window: int | None = None  # TempCLR half-width k; default DEFAULT_WINDOWS or round(fps / 2) or 15
    dataset: str | None = None  # sample `dataset` field to keep; default `name`

    @property
    def select(self) -> str:
        return self.dataset or self.name


@dataclass(frozen=True)
class StreamConfig:
    datasets: tuple[DatasetSpec, ...]
    mode: str = "tempclr"
    batch_size: int = 32  # items per batch on one rank
    seed: int = 0
    out_size: int = 224
    slot_size: int = 256  # stored crops are placed in an S x S slot (HanCo's 224² centred)
    positives: int = 1
    negatives: int = 2
    positive_law: str = "linear"
    negative_law: str = "distance"
    items_per_sample: int = 1  # anchors (tempclr), frames (peclr/simclr) or sequences drawn per clip sample
    sequence_length: int = 3
    sequence_interval: int = 3
    augment: AugmentSpec = field(default_factory=lambda: TEMPCLR)
    executor: str = "none"  # "none": decode only (device-side torch executor later) | "cv2": warp in the worker
    decoder: str = "simplejpeg"  # or "cv2"
    interleave: int = 4  # shards read concurrently per dataset stream (decorrelates consecutive items)
    items_per_epoch: int | None = None  # all ranks together; default: what the manifests imply
    labels: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.datasets:
            problems.append("no datasets")
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} not in {MODES}")
        if self.positive_law not in POSITIVE_LAWS:
            problems.append(f"positive_law {self.positive_law!r} not in {POSITIVE_LAWS}")
        if self.negative_law not in NEGATIVE_LAWS:
            problems.append(f"negative_law {self.negative_law!r} not in {NEGATIVE_LAWS}")
        if self.executor not in ("none", "cv2"):
            problems.append(f"executor {self.executor!r} not in ('none', 'cv2')")
        if self.decoder not in ("simplejpeg", "cv2"):
            problems.append(f"decoder {self.decoder!r} not in ('simplejpeg', 'cv2')")
        for name in ("batch_size", "out_size", "slot_size", "items_per_sample", "interleave", "sequence_length",
                     "sequence_interval"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.positives < 1 or self.negatives < 0:
            problems.append("need positives >= 1 and negatives >= 0")
        if any(d.weight <= 0 for d in self.datasets):
            problems.append("dataset weights must be > 0")
        if len({d.name for d in self.datasets}) != len(self.datasets):
            problems.append("dataset names must be unique")
        if problems:
            raise StreamError("stream config: " + "; ".join(problems))

    @property
    def views(self) -> int:
        if self.mode == "tempclr":
            return 1 + self.positives + self.negatives
        if self.mode == "sequence":
            return self.sequence_length
        return 2

    @property
    def time_coherent(self) -> bool:
        """One geometric draw per item (TempCLR, sequences) rather than one per view (PeCLR, SimCLR)."""
        return self.mode in ("tempclr", "sequence")

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
    return PECLR if mode in ("peclr", "simclr") else TEMPCLR
