"""A shard sample parsed into what the sampler and decoder need, with every malformation named."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pipeline.sharding.clipjob import stable_hash63, unpack_labels


class CorruptSample(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def clip_id(key: str) -> int:
    """Stable 63-bit id of a sample key (the `clip` id in batches; masks in the objectives use it)."""
    return stable_hash63(key)


@dataclass
class ClipSample:
    key: str
    url: str
    dataset: str
    view: int
    chunk: int
    aug_seed: int
    fps: float | None
    fill: int
    passthrough: bool
    jpgs: bytes
    offsets: np.ndarray
    lengths: np.ndarray
    sizes: np.ndarray  # [n, 2] stored height, width
    hand_boxes: np.ndarray  # [n, 4] edge coordinates in the stored crop
    index: np.ndarray  # source frame index
    time: np.ndarray  # seconds, NaN when the fps is unknown
    labels_blob: bytes | None
    clip_id: int
    _labels: dict | None = None

    @property
    def n(self) -> int:
        return len(self.offsets)

    def jpeg(self, i: int) -> memoryview:
        o = int(self.offsets[i])
        return memoryview(self.jpgs)[o:o + int(self.lengths[i])]

    def labels(self) -> dict[str, np.ndarray] | None:
        if self.labels_blob is None:
            return None
        if self._labels is None:
            try:
                self._labels = unpack_labels(self.labels_blob)
            except Exception as exc:
                raise CorruptSample("corrupt_labels", f"{self.url}: sample {self.key}: labels: {exc}") from exc
        return self._labels


def parse_sample(sample: dict, url: str) -> ClipSample:
    key = sample.get("__key__", "?")
    where = f"{url}: sample {key}"
    if "json" not in sample or "jpgs" not in sample:
        raise CorruptSample("corrupt_sample", f"{where}: missing member(s) {sorted({'json', 'jpgs'} - set(sample))}")
    try:
        meta = json.loads(sample["json"])
        fr = meta["frames"]
        offsets = np.asarray(fr["offset"], dtype=np.int64)
        lengths = np.asarray(fr["length"], dtype=np.int64)
        sizes = np.asarray(fr["size"], dtype=np.int64).reshape(-1, 2)
        boxes = np.asarray(fr["hand_box"], dtype=np.float64).reshape(-1, 4)
        index = np.asarray(fr["index"], dtype=np.int64)
        time = np.asarray([np.nan if t is None else t for t in fr["time"]], dtype=np.float64)
        parsed = ClipSample(key, url, str(meta["dataset"]), int(meta["view"]), int(meta["chunk"]),
                            int(meta["aug_seed"]), meta.get("fps"), int(meta.get("fill_value", 0)),
                            bool(meta.get("passthrough", False)), sample["jpgs"], offsets, lengths, sizes, boxes,
                            index, time, sample.get("labels"), clip_id(key))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptSample("corrupt_sample", f"{where}: unreadable metadata ({type(exc).__name__}: {exc})") from exc
    n = len(offsets)
    if n == 0 or not (len(lengths) == len(sizes) == len(boxes) == len(index) == len(time) == n):
        raise CorruptSample("corrupt_sample", f"{where}: per-frame metadata lists disagree in length or are empty")
    if (offsets < 0).any() or (lengths <= 0).any() or int((offsets + lengths).max()) > len(sample["jpgs"]):
        raise CorruptSample("corrupt_sample", f"{where}: frame offsets/lengths exceed the jpgs member "
                                              f"({len(sample['jpgs'])} bytes)")
    return parsed
