"""A shard sample parsed into what the sampler and decoder need, with every malformation named.

Whatever bytes a sample holds, parsing either returns a clip that the sampler, the affine maths and the batch
builder can use without raising, or raises SkipError with the counter's reason: `unsupported_schema`,
`corrupt_sample` (members, metadata, ids, boxes, fill value, frame byte ranges), `frame_exceeds_slot`,
`corrupt_labels` and `labels_too_large` (labels decompress to at most LABEL_BYTES_BASE + LABEL_BYTES_PER_FRAME
per frame: every field of the shard format in its dtype, about 9.8 KiB per frame with the mesh vertices).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np
import zstandard

from pipeline.errors import SkipError
from pipeline.sharding.clipjob import LABEL_DTYPE, LABEL_FIELDS, SCHEMA_VERSION, stable_hash63

LABEL_BYTES_BASE = 64 << 10  # npy headers and the zip directory, whatever the frame count
# All LABEL_FIELDS plus the `labelled` flag: derived from the format, so a new field raises the bound with it.
LABEL_BYTES_PER_FRAME = 1 + np.dtype(LABEL_DTYPE).itemsize * sum(math.prod(s) for s in LABEL_FIELDS.values())
SEED_LIMIT = 2**63  # aug_seed is a 63-bit integer
MAX_FPS = 1e6  # beyond any camera; larger rates overflow the default window round(fps / 2) in NumPy


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
    labels: dict[str, np.ndarray] | None = None  # set by load_labels()
    sequence: str | None = None  # source sequence id (the splits hash it); None when the metadata has none
    flat_hand_mean: int = -1  # MANO pose convention of the labels (`mano_flat_hand_mean`): 1, 0, -1 unknown

    @property
    def n(self) -> int:
        return len(self.offsets)

    def jpeg(self, i: int) -> memoryview:
        o = int(self.offsets[i])
        return memoryview(self.jpgs)[o:o + int(self.lengths[i])]

    def load_labels(self) -> None:
        """Read and check the labels member now, so that a bad one skips the sample before any item is drawn."""
        if self.labels_blob is not None:
            self.labels = read_labels(self.labels_blob, self.n, f"{self.url}: sample {self.key}: labels")


def parse_sample(sample: dict, url: str, slot_size: int) -> ClipSample:
    key = sample.get("__key__", "?")
    where = f"{url}: sample {key}"
    if "json" not in sample or "jpgs" not in sample:
        raise SkipError("corrupt_sample", f"{where}: missing member(s) {sorted({'json', 'jpgs'} - set(sample))}")
    clip = _clip(_metadata(sample["json"], where), sample, key, url, where)
    _check_ids(clip, where)
    _check_frames(clip, slot_size, where)
    return clip


def _metadata(data: bytes, where: str) -> dict:
    """The json member as a dict of the schema version this stream reads (checked first: another version may
    lay out everything else differently)."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SkipError("corrupt_sample", f"{where}: unreadable metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise SkipError("corrupt_sample", f"{where}: metadata is a {type(meta).__name__}, not an object")
    schema = meta.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise SkipError("unsupported_schema", f"{where}: schema version {schema!r}; this stream reads version "
                                              f"{SCHEMA_VERSION}")
    return meta


def _clip(meta: dict, sample: dict, key: str, url: str, where: str) -> ClipSample:
    try:
        fr = meta["frames"]
        fps = meta.get("fps")
        return ClipSample(
            key, url, str(meta["dataset"]), int(meta["view"]), int(meta["chunk"]), int(meta["aug_seed"]),
            None if fps is None else float(fps), int(meta.get("fill_value", 0)), bool(meta.get("passthrough", False)),
            sample["jpgs"], np.asarray(fr["offset"], dtype=np.int64), np.asarray(fr["length"], dtype=np.int64),
            np.asarray(fr["size"], dtype=np.int64).reshape(-1, 2),
            np.asarray(fr["hand_box"], dtype=np.float64).reshape(-1, 4), np.asarray(fr["index"], dtype=np.int64),
            np.asarray([np.nan if t is None else t for t in fr["time"]], dtype=np.float64),
            sample.get("labels"), clip_id(key),
            sequence=None if meta.get("sequence") is None else str(meta["sequence"]),
            flat_hand_mean=int(meta["mano_flat_hand_mean"]) if isinstance(meta.get("mano_flat_hand_mean"), bool)
            else -1)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise SkipError("corrupt_sample", f"{where}: unreadable metadata ({type(exc).__name__}: {exc})") from exc


def _check_ids(clip: ClipSample, where: str) -> None:
    """Values that seed generators or fill uint8 pixels: out of range, they would raise far from here."""
    problems = []
    if clip.view < 0 or clip.chunk < 0:
        problems.append(f"negative view {clip.view} or chunk {clip.chunk}")
    if not 0 <= clip.aug_seed < SEED_LIMIT:
        problems.append(f"aug_seed {clip.aug_seed} is not a 63-bit seed")
    if not 0 <= clip.fill <= 255:
        problems.append(f"fill_value {clip.fill} outside 0..255")
    if clip.fps is not None and not 0 < clip.fps <= MAX_FPS:
        problems.append(f"fps {clip.fps} outside (0, {MAX_FPS:g}]")
    if problems:
        raise SkipError("corrupt_sample", f"{where}: {'; '.join(problems)}")


def _check_frames(clip: ClipSample, slot_size: int, where: str) -> None:
    n, nbytes = clip.n, len(clip.jpgs)
    if n == 0 or not (len(clip.lengths) == len(clip.sizes) == len(clip.hand_boxes) == len(clip.index)
                      == len(clip.time) == n):
        raise SkipError("corrupt_sample", f"{where}: per-frame metadata lists disagree in length or are empty")
    if (clip.offsets < 0).any() or (clip.lengths <= 0).any() or int((clip.offsets + clip.lengths).max()) > nbytes:
        raise SkipError("corrupt_sample", f"{where}: frame offsets/lengths exceed the jpgs member ({nbytes} bytes)")
    if (clip.sizes < 1).any():
        raise SkipError("corrupt_sample", f"{where}: a stored frame size is not positive")
    if (clip.sizes > slot_size).any():
        h, w = clip.sizes[(clip.sizes > slot_size).any(axis=1)][0]
        raise SkipError("frame_exceeds_slot", f"{where}: a {w}x{h} frame is larger than slot_size {slot_size}; "
                                              f"set slot_size >= the shard set's store_size")
    _check_boxes(clip.hand_boxes, slot_size, where)


def _check_boxes(boxes: np.ndarray, slot_size: int, where: str) -> None:
    """Finite boxes with positive extent, within a slot's width of the slot: the affine maths divides by the
    extent and must stay finite."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        bad |= (np.abs(boxes - slot_size / 2) > 1.5 * slot_size).any(axis=1)
    if bad.any():
        raise SkipError("corrupt_sample", f"{where}: hand box {boxes[bad][0].tolist()} of frame "
                                          f"{int(np.flatnonzero(bad)[0])} is not finite, empty or far outside")


def read_labels(blob: bytes, n: int, where: str) -> dict[str, np.ndarray]:
    """The labels member (zstd-compressed npz) of an n-frame sample, decompressed under a bound and checked
    against the shapes the batch builder writes."""
    limit = LABEL_BYTES_BASE + LABEL_BYTES_PER_FRAME * n
    labels = _load_npz(_decompress(blob, limit, where), limit, where)
    _check_labels(labels, n, where)
    return labels


def _decompress(blob: bytes, limit: int, where: str) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(blob) as reader:
            raw = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise SkipError("corrupt_labels", f"{where}: {exc}") from exc
    if len(raw) > limit:
        raise SkipError("labels_too_large", f"{where}: decompress to more than {limit} bytes "
                                            f"({len(blob)} compressed)")
    return raw


def _load_npz(raw: bytes, limit: int, where: str) -> dict[str, np.ndarray]:
    try:
        npz = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # numpy and zipfile raise many types on bad bytes
        raise SkipError("corrupt_labels", f"{where}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SkipError("corrupt_labels", f"{where}: not an npz archive")
    with npz:
        stored = sum(info.file_size for info in npz.zip.infolist())
        if stored > limit:  # members of the archive may be compressed themselves
            raise SkipError("labels_too_large", f"{where}: archive members hold {stored} bytes > {limit}")
        try:
            return {k: npz[k] for k in npz.files}
        except Exception as exc:
            raise SkipError("corrupt_labels", f"{where}: {type(exc).__name__}: {exc}") from exc


def _check_labels(labels: dict[str, np.ndarray], n: int, where: str) -> None:
    labelled = labels.get("labelled")
    if labelled is None or labelled.dtype != np.bool_ or labelled.shape != (n,):
        raise SkipError("corrupt_labels", f"{where}: `labelled` must be {n} booleans")
    for name, shape in LABEL_FIELDS.items():
        arr = labels.get(name)
        if arr is not None and (arr.dtype.kind != "f" or arr.shape != (n, *shape)):
            raise SkipError("corrupt_labels", f"{where}: {name} is {arr.dtype} {arr.shape}, expected float "
                                              f"{(n, *shape)}")
