"""Fixed-shape batches (docs/design.md §3) filled in place: each picked frame is decoded straight into its
preallocated slot (no per-frame arrays to stack), optionally warped there by the cv2 executor."""

from __future__ import annotations

import math

import cv2
import numpy as np
import simplejpeg
import torch

from pipeline.augment.colour import APPEARANCE_SIZE
from pipeline.augment.cv2_exec import warp_frame
from pipeline.augment.labels import transform_labels
from pipeline.augment.params import GEOMETRY_SIZE
from pipeline.errors import SkipError
from pipeline.sharding.clipjob import LABEL_FIELDS
from pipeline.stream.config import FINETUNE_MODES, StreamConfig
from pipeline.stream.items import Item

ALIGN = 64  # field alignment inside the batch buffer
# Finetune-mode label fields and their per-view shapes (docs/design.md §3); a field a shard lacks is NaN.
FINETUNE_LABELS = {name: LABEL_FIELDS[name] for name in ("kp2d", "kp3d", "K", "mano_pose", "mano_shape", "verts")}


def decode_into(data: memoryview, size: tuple[int, int], dst: np.ndarray, offset: tuple[int, int], fill: int,
                decoder: str = "simplejpeg") -> None:
    """Decode one JPEG into dst [S, S, C] (C = 3 RGB or 4 RGBX) with its top-left pixel at `offset`; the rest
    of the slot gets `fill`. Raises SkipError for undecodable data or a size other than the metadata's."""
    h, w = size
    channels = dst.shape[2]
    full = (h, w) == dst.shape[:2]
    try:
        header = simplejpeg.decode_jpeg_header(data)[:2]
        if header != (h, w):  # checked before decoding: a forged header must not allocate its claimed size
            raise SkipError("undecodable_frame", f"JPEG header says {header}, the metadata {(h, w)}")
        if decoder == "simplejpeg":
            img = simplejpeg.decode_jpeg(data, "RGB" if channels == 3 else "RGBX", buffer=dst if full else None)
        else:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
            if img is not None and channels == 4:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
    except (ValueError, cv2.error) as exc:
        raise SkipError("undecodable_frame", str(exc)) from exc
    if img is None or img.shape[:2] != (h, w):
        got = None if img is None else img.shape[:2]
        raise SkipError("undecodable_frame", f"decoded size {got} differs from the recorded {(h, w)}")
    if full and img.ctypes.data == dst.ctypes.data:
        return
    if not full:
        dst[...] = fill
    dst[offset[1]:offset[1] + h, offset[0]:offset[0] + w] = img


class BatchBuilder:
    """Allocates batches. With `ring` > 0 it cycles through that many preallocated batches instead of
    allocating each one: fresh shared memory costs about as much as the JPEG decode itself (tmpfs page
    allocation, ~0.15 ms per 256² frame), reused memory costs nothing. The price is a validity window, which
    StreamLoader(reuse_buffers=True) sizes and documents."""

    def __init__(self, cfg: StreamConfig, shared: bool, ring: int = 0) -> None:
        self.cfg, self.shared, self.ring = cfg, shared, ring
        self.warp = cfg.executor == "cv2"
        self.pixels = cfg.out_size if self.warp else cfg.slot_size
        self.rgbx = np.empty((cfg.slot_size, cfg.slot_size, 4), np.uint8) if self.warp else None
        self._pool: list[dict] = []
        self._next = 0

    def new(self) -> dict:
        if not self.ring:
            return self._allocate()
        if len(self._pool) < self.ring:
            self._pool.append(self._allocate())
        batch = self._pool[self._next % self.ring]
        self._next += 1
        return dict(batch)

    def layout(self) -> tuple[tuple[str, int, tuple[int, ...], torch.dtype], ...]:
        """(name, byte offset, shape, dtype) of every field inside the batch's single byte buffer."""
        b, v, p = self.cfg.batch_size, self.cfg.views, self.pixels
        fields = [
            ("frames", (b, v, p, p, 3), torch.uint8), ("affine", (b, v, 2, 3), torch.float32),
            ("geometry", (b, v, GEOMETRY_SIZE), torch.float32), ("appearance", (b, v, APPEARANCE_SIZE), torch.float32),
            ("fill", (b,), torch.uint8), ("dataset", (b,), torch.int64), ("clip", (b,), torch.int64),
            ("frame", (b, v), torch.int64), ("position", (b, v), torch.int64), ("offset", (b, v), torch.int64),
            ("time", (b, v), torch.float64), ("role", (b, v), torch.int8), ("window", (b,), torch.int64),
        ]
        if self.cfg.mode in FINETUNE_MODES:
            fields += [("labelled", (b, v), torch.bool), ("flat_hand_mean", (b,), torch.int8)]
            fields += [(name, (b, v, *shape), torch.float32) for name, shape in FINETUNE_LABELS.items()]
        elif self.cfg.labels:
            fields += [("labelled", (b, v), torch.bool), ("kp2d", (b, v, 21, 2), torch.float32),
                       ("kp3d", (b, v, 21, 3), torch.float32), ("K", (b, v, 3, 3), torch.float32)]
        out, offset = [], 0
        for name, shape, dtype in fields:
            out.append((name, offset, shape, dtype))
            nbytes = math.prod(shape) * dtype.itemsize
            offset += -(-nbytes // ALIGN) * ALIGN
        return tuple(out)

    def _allocate(self) -> dict:
        """One byte buffer per batch, every field a typed view of it: a worker hands the main process a single
        shared-memory segment (one file descriptor) instead of one per field."""
        layout = self.layout()
        name, offset, shape, dtype = layout[-1]
        buffer = torch.empty(offset + math.prod(shape) * dtype.itemsize, dtype=torch.uint8)
        if self.shared:
            buffer.share_memory_()
        return {"buffer": buffer, "layout": layout, "warped": self.warp}


    def put(self, arrays: dict[str, np.ndarray], b: int, item: Item, dataset_index: int) -> None:
        """Fill row b of a batch, given as NumPy views of its tensors, with the item's frames and ids.
        Raises SkipError (the caller counts it)."""
        clip, frames = item.clip, arrays["frames"]
        for v, p in enumerate(item.positions.tolist()):
            size = (int(clip.sizes[p, 0]), int(clip.sizes[p, 1]))
            offset = item.slot_xy[v].tolist()
            try:
                if self.warp:
                    decode_into(clip.jpeg(p), size, self.rgbx, offset, clip.fill, self.cfg.decoder)
                    warp_frame(self.rgbx, item.affine[v], item.appearance[v], frames[b, v], clip.fill)
                else:
                    decode_into(clip.jpeg(p), size, frames[b, v], offset, clip.fill, self.cfg.decoder)
            except SkipError as exc:
                raise SkipError(exc.reason, f"{clip.url}: sample {clip.key} frame {int(clip.index[p])}: {exc}") from exc
        arrays["affine"][b] = item.affine
        arrays["geometry"][b] = item.geometry
        arrays["appearance"][b] = item.appearance
        arrays["fill"][b] = clip.fill
        arrays["dataset"][b] = dataset_index
        arrays["clip"][b] = clip.clip_id
        arrays["frame"][b] = clip.index[item.positions]
        arrays["position"][b] = item.positions
        arrays["offset"][b] = item.offsets
        arrays["time"][b] = clip.time[item.positions]
        arrays["role"][b] = item.roles
        arrays["window"][b] = item.window
        if self.cfg.mode in FINETUNE_MODES:
            self._finetune_labels(arrays, b, item)
        elif self.cfg.labels:
            self._labels(arrays, b, item)

    def _labels(self, arrays: dict[str, np.ndarray], b: int, item: Item) -> None:
        """Labels in slot pixels (2D and K shifted by the slot offset); NaN and labelled=False where absent."""
        labels = item.clip.labels
        for name in ("kp2d", "kp3d", "K"):
            arrays[name][b] = np.nan
        arrays["labelled"][b] = False
        if labels is None:
            return
        for v, p in enumerate(item.positions):
            arrays["labelled"][b, v] = labels["labelled"][p]
            for name, value in slot_labels(labels, p, item.slot_xy[v], ("kp2d", "kp3d", "K")).items():
                arrays[name][b, v] = value

    def _finetune_labels(self, arrays: dict[str, np.ndarray], b: int, item: Item) -> None:
        """Row b's labels in slot pixels, NaN where the shards lack a field (`finish` applies the augmentation).
        finetune items come from labelled frames only; a finetune_sequence's unlabelled frames stay, labelled
        False with NaN labels (as stored, or as the label fraction leaves them)."""
        labels = item.clip.labels
        arrays["flat_hand_mean"][b] = item.clip.flat_hand_mean
        for v, p in enumerate(item.positions):
            arrays["labelled"][b, v] = labels["labelled"][p]
            view = slot_labels(labels, p, item.slot_xy[v], FINETUNE_LABELS)
            for name in FINETUNE_LABELS:
                arrays[name][b, v] = view.get(name, np.nan)

    def finish(self, arrays: dict[str, np.ndarray]) -> None:
        """Once a batch is full: in finetune mode, move every view's labels through its geometric augmentation
        (pipeline/augment/labels.py) in one batched call, from the batch's own float32 affine and angle, i.e. the
        numbers the device-side warp reads."""
        if self.cfg.mode not in FINETUNE_MODES:
            return
        views = transform_labels({name: arrays[name] for name in FINETUNE_LABELS}, arrays["affine"],
                                 arrays["geometry"][..., 0])
        for name, value in views.items():
            arrays[name][...] = value


def slot_labels(labels: dict[str, np.ndarray], p: int, slot_xy: np.ndarray, names) -> dict[str, np.ndarray]:
    """Frame p's stored label fields among `names` with 2D and K moved from stored-crop to slot pixels (the crop
    sits at slot_xy in its slot). Only fields of LABEL_FIELDS, whose shapes parsing checked, are read."""
    ox, oy = slot_xy
    shift = {"kp2d": lambda x: x + np.array([ox, oy]),
             "K": lambda x: np.array([[1.0, 0.0, ox], [0.0, 1.0, oy], [0.0, 0.0, 1.0]]) @ x}
    return {name: shift.get(name, lambda x: x)(labels[name][p])
            for name in names if name in labels and name in LABEL_FIELDS}


def unpack(batch: dict) -> dict:
    """Wire form (buffer + layout) -> the batch of named tensors (zero-copy views of the buffer)."""
    buffer = batch.pop("buffer")
    for name, offset, shape, dtype in batch.pop("layout"):
        batch[name] = buffer[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
    return batch
