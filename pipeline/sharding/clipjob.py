"""Turn one clip into shard samples: annotate, fill boxes, decode, crop, encode, chunk, pack members.

Runs inside a worker process; everything it needs travels in the (picklable) source, clip and options.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import zstandard

from pipeline.errors import SkipCounter, SkipError
from pipeline.geometry import apply_box, apply_points, mirror_camera, mirror_mano_pose, mirror_transform
from pipeline.sharding.frames import (
    Crop,
    crop_hand,
    decode_image,
    decode_scale,
    encode_jpeg,
    image_size,
    is_jpeg,
    read_file,
    scale_transform,
    square_crop_region,
)
from pipeline.sharding.options import ShardOptions
from pipeline.sources.base import N_VERTS, Clip, Frame, Source
from pipeline.sources.boxes import box_problem, interpolate_boxes
from pipeline.sources.doh100 import safe_id

SCHEMA_VERSION = 1
MAX_CROP_RATIO = 4  # crop side at most this many times the image's longer side (a billion-pixel box is a skip)
# Per-frame label arrays of the `labels` member (stored as LABEL_DTYPE, NaN where a frame lacks the field).
LABEL_FIELDS = {"kp2d": (21, 2), "kp3d": (21, 3), "K": (3, 3), "mano_pose": (48,), "mano_shape": (10,),
                "verts": (N_VERTS, 3)}
LABEL_DTYPE = np.float32
_MIRROR_X = np.array([-1.0, 1.0, 1.0])


def stable_hash63(text: str) -> int:
    """First 8 bytes of blake2b(text), little-endian, masked to 63 bits: stable across runs and machines."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def aug_seed(seed: int, dataset: str, sequence: str) -> int:
    """63-bit per-sequence seed from a stable hash: independent of shard order, workers and parts."""
    return stable_hash63(f"{seed}\x00{dataset}\x00{sequence}")


def sample_digest(members: dict[str, bytes]) -> str:
    """sha256 over a sample's members in name order (name, length, bytes): the manifest checksum."""
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(f"{name}\x00{len(members[name])}\x00".encode())
        h.update(members[name])
    return h.hexdigest()


def sample_key(dataset: str, sequence: str, view: int, chunk: int) -> str:
    return f"{dataset}-{safe_id(sequence)}-{view}-{chunk}"


@dataclass
class StoredFrame:
    frame: Frame
    jpeg: bytes
    size: tuple[int, int]  # stored height, width
    crop_box: list[float]
    hand_box: list[float]
    fill: float
    labels: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Sample:
    key: str
    members: dict[str, bytes]
    row: dict  # manifest row without the shard name


@dataclass
class ClipResult:
    samples: list[Sample]
    counter: SkipCounter
    frames_in: int


def _annotate(source: Source, clip: Clip, counter: SkipCounter) -> list[Frame]:
    kept = []
    for frame in clip.frames:
        try:
            source.annotate(clip, frame)
        except SkipError as exc:
            counter.skip(exc.reason, str(exc), frames=1)
            continue
        if frame.box is not None and not frame.box_normalized:
            problem = box_problem(frame.box, 1 << 30, 1 << 30)
            if problem:
                counter.skip(problem, f"{frame.image or clip.video}#{frame.index}: box {frame.box}", frames=1)
                continue
        kept.append(frame)
    return kept


def _fill_boxes(clip: Clip, frames: list[Frame], counter: SkipCounter) -> list[Frame]:
    if clip.passthrough:
        return frames
    boxes = interpolate_boxes([f.index for f in frames], [f.box for f in frames])
    if frames and boxes[0] is None:
        counter.skip("no_hand_box", f"{clip.dataset}/{clip.sequence}: no frame has a hand box",
                     frames=len(frames), clips=1)
        return []
    for f, b in zip(frames, boxes, strict=True):
        f.box = b
    return frames


def _pixels(clip: Clip, frames: list[Frame], counter: SkipCounter) -> Iterator[tuple[Frame, bytes | None,
                                                                                    np.ndarray | None]]:
    """(frame, file bytes, None) for image files (decoded later, once the crop scale is known) or
    (frame, None, pixels) for video frames, decoded sequentially; in clip order."""
    if clip.video is None:
        for frame in frames:
            try:
                yield frame, read_file(frame.image), None
            except SkipError as exc:
                counter.skip(exc.reason, str(exc), frames=1)
        return
    from pipeline.sources.video import SequentialVideo

    try:
        video = SequentialVideo(clip.video)
    except SkipError as exc:
        counter.skip(exc.reason, str(exc), frames=len(frames), clips=1)
        return
    for frame in frames:
        try:
            yield frame, None, video.read(frame.video_index)
        except SkipError as exc:
            counter.skip(exc.reason, str(exc), frames=1)


def _store(clip: Clip, frame: Frame, data: bytes | None, img: np.ndarray | None, opts: ShardOptions,
           counter: SkipCounter) -> StoredFrame | None:
    where = f"{frame.image or clip.video}#{frame.index}"
    try:
        return _store_frame(clip, frame, data, img, opts, where)
    except SkipError as exc:
        counter.skip(exc.reason, str(exc), frames=1)
        return None


def _check_passthrough_size(clip: Clip, h: int, w: int, where: str) -> None:
    """A passthrough frame is stored as it is, so it must have the size its dataset promises: a larger one
    would not fit the stream's slots."""
    if clip.passthrough_size is not None and (h, w) != tuple(clip.passthrough_size):
        want_h, want_w = clip.passthrough_size
        raise SkipError("passthrough_wrong_size", f"{where}: {w}x{h} image, {clip.dataset} frames are "
                                                  f"{want_w}x{want_h} crops stored as they are")


def _check_box(box: tuple, w: int, h: int, context: float, where: str) -> None:
    """Refuse a box the crop cannot use, before any pixel is decoded or allocated."""
    problem = box_problem(box, w, h)
    if problem:
        raise SkipError(problem, f"{where}: box {tuple(round(v, 1) for v in box)} on a {w}x{h} image")
    side = square_crop_region(box, context)[2]
    if side > MAX_CROP_RATIO * max(w, h):
        raise SkipError("box_too_large", f"{where}: box {tuple(round(v, 1) for v in box)} asks for a {side}-pixel "
                                         f"crop of a {w}x{h} image (at most {MAX_CROP_RATIO}x its longer side)")


def _passthrough_frame(clip: Clip, frame: Frame, data: bytes, where: str) -> StoredFrame:
    h, w = decode_image(data, where).shape[:2]  # full decode: a corrupt frame must not pass through
    _check_passthrough_size(clip, h, w, where)
    full = [0.0, 0.0, float(w), float(h)]
    return StoredFrame(frame, data, (h, w), full, list(full), 0.0)


def _store_frame(clip: Clip, frame: Frame, data: bytes | None, img: np.ndarray | None, opts: ShardOptions,
                 where: str) -> StoredFrame:
    mirror = clip.side == "left"
    if clip.passthrough and not mirror and data is not None and is_jpeg(data):
        stored = _passthrough_frame(clip, frame, data, where)
        T0 = T = np.eye(3)
    else:
        if img is None and not is_jpeg(data):
            img = decode_image(data, where)
        h, w = img.shape[:2] if img is not None else image_size(data, where)
        if clip.passthrough:
            _check_passthrough_size(clip, h, w, where)
        box = frame.box if not clip.passthrough else (0.0, 0.0, float(w), float(h))
        if frame.box_normalized:
            box = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
        context, out_size = (1.0, w) if clip.passthrough else (opts.context, opts.store_size)
        _check_box(box, w, h, context, where)
        factor = 1.0
        if img is None:
            img = decode_image(data, where, decode_scale(square_crop_region(box, context)[2], out_size), (h, w))
            factor = 8.0 / round(8.0 * img.shape[1] / w)  # libjpeg-turbo scales by M/8
        S = scale_transform(factor)  # pixel centres, for points; box edges simply scale by 1 / factor
        crop: Crop = crop_hand(img, tuple(v / factor for v in box), context, out_size, opts.fill_value)
        T0 = crop.transform @ S
        T = mirror_transform(out_size) @ T0 if mirror else T0
        pixels = np.ascontiguousarray(crop.pixels[:, ::-1]) if mirror else crop.pixels
        stored = StoredFrame(frame, encode_jpeg(pixels, opts.quality), (int(pixels.shape[0]), int(pixels.shape[1])),
                             [v * factor for v in crop.crop_box], apply_box(T, box), crop.fill)
    if frame.labels is not None and not frame.labels.empty():
        stored.labels = _transform_labels(frame, T0, T, mirror, stored.size[1])
    return stored


def _transform_labels(frame: Frame, T0: np.ndarray, T: np.ndarray, mirror: bool,
                      width: int) -> dict[str, np.ndarray]:
    """Labels in stored-crop terms: 2D by the crop map T, K' = T0 K (then the mirrored camera for left
    hands, with 3D points, vertices and MANO pose mirrored to match)."""
    lab = frame.labels
    out: dict[str, np.ndarray] = {}
    if lab.K is not None:
        out["K"] = mirror_camera(T0 @ lab.K, None, width)[0] if mirror else T0 @ lab.K
    for name in ("kp3d", "verts"):  # camera-frame points: the mirrored camera negates x
        points = getattr(lab, name)
        if points is not None:
            out[name] = points * _MIRROR_X if mirror else np.asarray(points)
    if lab.kp2d is not None:
        out["kp2d"] = apply_points(T, lab.kp2d)
    if lab.mano_pose is not None:
        out["mano_pose"] = mirror_mano_pose(lab.mano_pose) if mirror else np.asarray(lab.mano_pose)
    if lab.mano_shape is not None:
        out["mano_shape"] = np.asarray(lab.mano_shape)
    return out


def chunk_bounds(n: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Split n frames into ceil(n / chunk_frames) chunks of balanced length (no short tail chunk)."""
    parts = max(1, math.ceil(n / chunk_frames))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def pack_labels(frames: list[StoredFrame]) -> bytes | None:
    """zstd-compressed .npz of per-frame label arrays (NaN where a frame lacks the field)."""
    present = sorted({k for f in frames for k in f.labels})
    if not present:
        return None
    arrays = {"labelled": np.array([bool(f.labels) for f in frames])}
    for name in present:
        arr = np.full((len(frames),) + LABEL_FIELDS[name], np.nan, dtype=LABEL_DTYPE)
        for i, f in enumerate(frames):
            if name in f.labels:
                arr[i] = f.labels[name]
        arrays[name] = arr
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return zstandard.ZstdCompressor(level=3).compress(buf.getvalue())


def unpack_labels(data: bytes) -> dict[str, np.ndarray]:
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _sample(clip: Clip, frames: list[StoredFrame], chunk: int, n_chunks: int, opts: ShardOptions,
            source_root: str) -> Sample:
    key = sample_key(clip.dataset, clip.sequence, clip.view, chunk)
    offsets, pos = [], 0
    for f in frames:
        offsets.append(pos)
        pos += len(f.jpeg)
    seed = aug_seed(opts.seed, clip.dataset, clip.sequence)
    meta = {
        "schema": SCHEMA_VERSION, "key": key, "dataset": clip.dataset, "sequence": clip.sequence,
        "view": clip.view, "chunk": chunk, "n_chunks": n_chunks, "side": clip.side,
        "mirrored": clip.side == "left", "fps": clip.fps, "aug_seed": seed, "store_size": opts.store_size,
        "passthrough": clip.passthrough, "fill_value": opts.fill_value, "source_root": source_root,
        "mano_flat_hand_mean": clip.mano_flat_hand_mean, "flags": clip.flags,
        "frames": {
            "source_id": [f.frame.source_id for f in frames],
            "index": [f.frame.index for f in frames],
            "time": [f.frame.index / clip.fps if clip.fps else None for f in frames],
            "offset": offsets, "length": [len(f.jpeg) for f in frames],
            "size": [list(f.size) for f in frames],
            "crop_box": [[round(v, 3) for v in f.crop_box] for f in frames],
            "hand_box": [[round(v, 3) for v in f.hand_box] for f in frames],
            "fill": [round(f.fill, 6) for f in frames],
            "labelled": [bool(f.labels) for f in frames],
            "flags": [f.frame.flags for f in frames],
        },
    }
    members = {"json": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
               "jpgs": b"".join(f.jpeg for f in frames)}
    labels = pack_labels(frames)
    if labels is not None:
        members["labels"] = labels
    row = {"key": key, "dataset": clip.dataset, "sequence": clip.sequence, "view": clip.view, "chunk": chunk,
           "n_frames": len(frames), "labelled_frames": sum(bool(f.labels) for f in frames), "fps": clip.fps,
           "side": clip.side, "bytes": sum(len(v) for v in members.values()), "sha256": sample_digest(members),
           "aug_seed": seed, "source_root": source_root}
    return Sample(key, members, row)


def process_clip(source: Source, clip: Clip, opts: ShardOptions, min_frames: int) -> ClipResult:
    """All samples of one clip plus the counted skips of its frames; frames in = written + skipped."""
    counter = SkipCounter(strict=opts.strict)
    frames = _fill_boxes(clip, _annotate(source, clip, counter), counter)
    stored: list[StoredFrame] = []
    for frame, data, img in _pixels(clip, frames, counter):
        kept = _store(clip, frame, data, img, opts, counter)
        if kept is not None:
            stored.append(kept)
    if not stored:
        if not sum(counter.clips.values()):
            counter.skip("no_usable_frame", f"{clip.dataset}/{clip.sequence}/{clip.view}", clips=1)
        return ClipResult([], counter, len(clip.frames))
    if len(stored) < min_frames:
        counter.skip("too_short", f"{clip.dataset}/{clip.sequence}/{clip.view}: {len(stored)} usable frames "
                     f"< min_frames {min_frames}", frames=len(stored), clips=1)
        return ClipResult([], counter, len(clip.frames))
    bounds = chunk_bounds(len(stored), opts.chunk_frames)
    root = str(source.root)
    samples = [_sample(clip, stored[a:b], c, len(bounds), opts, root) for c, (a, b) in enumerate(bounds)]
    return ClipResult(samples, counter, len(clip.frames))
