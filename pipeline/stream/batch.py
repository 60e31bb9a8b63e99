"""Fixed-shape batches (docs/design.md §3) filled in place: each picked frame is decoded straight into its
preallocated slot (no per-frame arrays to stack), optionally warped there by the cv2 executor."""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg
import torch

from pipeline.augment.colour import APPEARANCE_SIZE
from pipeline.augment.cv2_exec import warp_frame
from pipeline.augment.params import GEOMETRY_SIZE
from pipeline.stream.config import StreamConfig
from pipeline.stream.items import Item, slot_offset


class FrameDecodeError(Exception):
    pass


def decode_into(data: memoryview, size: tuple[int, int], dst: np.ndarray, offset: tuple[int, int], fill: int,
                decoder: str = "simplejpeg") -> None:
    """Decode one JPEG into dst [S, S, C] (C = 3 RGB or 4 RGBX) with its top-left pixel at `offset`; the rest
    of the slot gets `fill`. Raises FrameDecodeError for undecodable data or a size other than the metadata's."""
    h, w = size
    channels = dst.shape[2]
    full = (h, w) == dst.shape[:2]
    try:
        if decoder == "simplejpeg":
            img = simplejpeg.decode_jpeg(data, "RGB" if channels == 3 else "RGBX", buffer=dst if full else None)
        else:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
            if img is not None and channels == 4:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
    except (ValueError, cv2.error) as exc:
        raise FrameDecodeError(str(exc)) from exc
    if img is None or img.shape[:2] != (h, w):
        got = None if img is None else img.shape[:2]
        raise FrameDecodeError(f"decoded size {got} differs from the recorded {(h, w)}")
    if full and img.ctypes.data == dst.ctypes.data:
        return
    if not full:
        dst[...] = fill
    dst[offset[1]:offset[1] + h, offset[0]:offset[0] + w] = img


class BatchBuilder:
    def __init__(self, cfg: StreamConfig, shared: bool) -> None:
        self.cfg, self.shared = cfg, shared
        self.warp = cfg.executor == "cv2"
        self.pixels = cfg.out_size if self.warp else cfg.slot_size
        self.rgbx = np.empty((cfg.slot_size, cfg.slot_size, 4), np.uint8) if self.warp else None

    def new(self) -> dict:
        """Empty batch tensors; in a loader worker they live in shared memory from the start, so handing the
        batch to the main process copies nothing."""
        b, v, p = self.cfg.batch_size, self.cfg.views, self.pixels
        shapes = {
            "frames": ((b, v, p, p, 3), torch.uint8), "affine": ((b, v, 2, 3), torch.float32),
            "geometry": ((b, v, GEOMETRY_SIZE), torch.float32), "appearance": ((b, v, APPEARANCE_SIZE), torch.float32),
            "fill": ((b,), torch.uint8), "dataset": ((b,), torch.int64), "clip": ((b,), torch.int64),
            "frame": ((b, v), torch.int64), "position": ((b, v), torch.int64), "offset": ((b, v), torch.int64),
            "time": ((b, v), torch.float64), "role": ((b, v), torch.int8),
        }
        if self.cfg.labels:
            shapes.update({"labelled": ((b, v), torch.bool), "kp2d": ((b, v, 21, 2), torch.float32),
                           "kp3d": ((b, v, 21, 3), torch.float32), "K": ((b, v, 3, 3), torch.float32)})
        batch = {}
        for name, (shape, dtype) in shapes.items():
            t = torch.empty(shape, dtype=dtype)
            batch[name] = t.share_memory_() if self.shared else t
        batch["warped"] = self.warp
        return batch

    def put(self, batch: dict, b: int, item: Item, dataset_index: int) -> None:
        """Fill row b with the item's frames and ids. Raises FrameDecodeError (the caller counts it)."""
        clip, frames = item.clip, batch["frames"].numpy()
        for v, p in enumerate(item.positions):
            size = (int(clip.sizes[p][0]), int(clip.sizes[p][1]))
            offset = slot_offset(clip, p, self.cfg.slot_size)
            try:
                if self.warp:
                    decode_into(clip.jpeg(p), size, self.rgbx, offset, clip.fill, self.cfg.decoder)
                    warp_frame(self.rgbx, item.affine[v], item.appearance[v], frames[b, v], clip.fill)
                else:
                    decode_into(clip.jpeg(p), size, frames[b, v], offset, clip.fill, self.cfg.decoder)
            except FrameDecodeError as exc:
                raise FrameDecodeError(f"{clip.url}: sample {clip.key} frame {int(clip.index[p])}: {exc}") from exc
        batch["affine"][b] = torch.from_numpy(item.affine)
        batch["geometry"][b] = torch.from_numpy(item.geometry)
        batch["appearance"][b] = torch.from_numpy(item.appearance)
        batch["fill"][b] = clip.fill
        batch["dataset"][b] = dataset_index
        batch["clip"][b] = clip.clip_id
        batch["frame"][b] = torch.from_numpy(clip.index[item.positions])
        batch["position"][b] = torch.from_numpy(item.positions)
        batch["offset"][b] = torch.from_numpy(item.offsets)
        batch["time"][b] = torch.from_numpy(clip.time[item.positions])
        batch["role"][b] = torch.from_numpy(item.roles.astype(np.int8))
        if self.cfg.labels:
            self._labels(batch, b, item)

    def _labels(self, batch: dict, b: int, item: Item) -> None:
        """Labels in slot pixels (2D shifted by the slot offset); NaN and labelled=False where absent."""
        labels = item.clip.labels()
        for name in ("kp2d", "kp3d", "K"):
            batch[name][b] = float("nan")
        batch["labelled"][b] = False
        if labels is None:
            return
        for v, p in enumerate(item.positions):
            batch["labelled"][b, v] = bool(labels["labelled"][p])
            ox, oy = slot_offset(item.clip, p, self.cfg.slot_size)
            if "kp3d" in labels:
                batch["kp3d"][b, v] = torch.from_numpy(labels["kp3d"][p])
            if "K" in labels:
                shift = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy], [0.0, 0.0, 1.0]], np.float32)
                batch["K"][b, v] = torch.from_numpy(shift @ labels["K"][p])
            if "kp2d" in labels:
                batch["kp2d"][b, v] = torch.from_numpy(labels["kp2d"][p] + np.array([ox, oy], np.float32))
