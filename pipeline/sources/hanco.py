"""HanCo: clip = one (sequence, camera); 224x224 hand crops kept as they are.

Layout: `<images>/{sid:04d}/cam{cid}/{fid:08d}.jpg` with `<images>` one of rgb, rgb_merged, rgb_homo, ...;
`meta.json` per-frame flags; `xyz/{sid:04d}/{fid:08d}.json` (21x3 world), `calib/...` (K and world->camera
M per camera) and `shape/...` (MANO, flat_hand_mean=False) when downloaded.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.errors import LayoutError, SkipCounter, SkipError
from pipeline.geometry import project, rotate_global_orient
from pipeline.sources.base import Clip, Frame, Labels, Source, utf8_names
from pipeline.sources.files import ANNOTATION, LAYOUT_JSON, entry_exists, layout_bytes, read_bytes
from pipeline.sources.options import HancoFlag, HanCoOptions

# [0-9], not \d: \d also matches other scripts' digits, which int() accepts ('٣' is 3).
_FRAME = re.compile(r"^([0-9]{8})\.jpg$")
_CAM = re.compile(r"^cam([0-9]{1,3})$")
_SEQ = re.compile(r"^([0-9]{4})$")
META_FLAGS = typing.get_args(HancoFlag)
FRAME_SIZE = (224, 224)  # HanCo images are 224x224 hand crops, stored as they are


def _read_json(path) -> Any:
    data = read_bytes(path, ANNOTATION)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SkipError("annotation_malformed", f"{path}: not valid JSON ({exc})") from exc


class HanCo(Source):
    """Options: images (default "rgb"), labels (default True), cameras (list, default all),
    filters ({flag: value} over meta.json flags, a frame is kept when all match), fps (default None:
    HanCo publishes no frame rate)."""

    Options = HanCoOptions

    dataset = "hanco"

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        images = self.options.images
        self.require("HanCo", images, "meta.json")
        try:
            meta = json.loads(layout_bytes(self.root / "meta.json", LAYOUT_JSON, self.dataset))
        except (ValueError, RecursionError) as exc:
            raise LayoutError(f"hanco: {self.root / 'meta.json'} is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or "is_train" not in meta:
            raise LayoutError(f"hanco: {self.root / 'meta.json'} lacks the per-sequence flag lists "
                              f"({', '.join(META_FLAGS)})")
        filters = self.options.filters  # keys are META_FLAGS (typed options)
        cameras = self.options.cameras
        with_labels = self.options.labels and (self.root / "xyz").is_dir() \
            and (self.root / "calib").is_dir()
        fps = self.options.fps
        base = self.root / images
        for seq_name in utf8_names(base, counter):
            if not _SEQ.match(seq_name) or not (base / seq_name).is_dir():
                continue
            sid = int(seq_name)
            for cam_name in utf8_names(base / seq_name, counter):
                m = _CAM.match(cam_name)
                if not m or (cameras is not None and int(m.group(1)) not in cameras):
                    continue
                cid = int(m.group(1))
                frames = []
                for name in utf8_names(base / seq_name / cam_name, counter):
                    fm = _FRAME.match(name)
                    if not fm:
                        counter.skip("unexpected_file", str(base / seq_name / cam_name / name), frames=1)
                        continue
                    fid = int(fm.group(1))
                    flags = self._flags(meta, sid, fid)
                    if any(flags.get(k) != v for k, v in filters.items()):
                        counter.skip("filtered", f"{base / seq_name / cam_name / name} {filters}", frames=1)
                        continue
                    frames.append(Frame(
                        source_id=f"{images}/{seq_name}/{cam_name}/{name}", index=fid,
                        image=str(base / seq_name / cam_name / name), flags=flags,
                        annotation=f"{seq_name}/{fid:08d}.json" if with_labels else None))
                if frames:
                    yield Clip(self.dataset, seq_name, cid, "right", fps, frames, passthrough=True,
                               passthrough_size=FRAME_SIZE, flags={"images": images},
                               mano_flat_hand_mean=False if with_labels else None)

    @staticmethod
    def _flags(meta: dict, sid: int, fid: int) -> dict:
        flags = {}
        for key in META_FLAGS:
            try:
                flags[key] = meta[key][sid][fid]
            except (KeyError, IndexError, TypeError):
                flags[key] = None
        return flags

    def annotate(self, clip: Clip, frame: Frame) -> None:
        if frame.annotation is None:
            return
        xyz = _read_json(self.root / "xyz" / frame.annotation)
        calib = _read_json(self.root / "calib" / frame.annotation)
        try:
            K = np.asarray(calib["K"][clip.view], dtype=np.float64).reshape(3, 3)
            M = np.asarray(calib["M"][clip.view], dtype=np.float64).reshape(4, 4)
            xyz = np.asarray(xyz, dtype=np.float64).reshape(21, 3)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:
            raise SkipError("annotation_malformed",
                            f"{self.root / 'calib' / frame.annotation}: bad K/M or xyz ({exc!r})") from exc
        cam = xyz @ M[:3, :3].T + M[:3, 3]
        labels = Labels(K=K, kp3d=cam, kp2d=project(K, cam))
        shape_path = self.root / "shape" / frame.annotation
        if entry_exists(shape_path):  # MANO fits are optional; a fit that is there but unusable is a skip
            shape = _read_json(shape_path)
            try:
                pose = np.asarray(shape["poses"], dtype=np.float64).reshape(48)
                labels.mano_shape = np.asarray(shape["shapes"], dtype=np.float64).reshape(10)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise SkipError("annotation_malformed", f"{shape_path}: bad MANO fit ({exc!r})") from exc
            labels.mano_pose = rotate_global_orient(pose, M[:3, :3])
        frame.labels = labels
