"""HO-3D v2 (png) / v3 (jpg): clip = one sequence of one split, 640x480 frames.

Labels come from `meta/<id>.pkl` (restricted unpickler), are flipped from OpenGL to OpenCV camera axes and
reordered to the FreiHAND joint order. Frames not listed in `<split>.txt` are kept as unlabelled video
frames: their hand box is interpolated from labelled neighbours by the sharder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import LayoutError, SkipCounter, SkipError
from pipeline.geometry import MANO_TO_FREIHAND, OPENGL_TO_OPENCV, project, rotate_global_orient
from pipeline.sources.base import Clip, Frame, Labels, Source, ascii_number, utf8_names
from pipeline.sources.boxes import box_from_keypoints
from pipeline.sources.files import LIST, layout_text
from pipeline.sources.options import HO3DOptions
from pipeline.sources.safe_pickle import load_restricted

if TYPE_CHECKING:
    import smplx

SPLITS = ("train", "evaluation")


def _sorted_entries(directory: Path) -> list[Path]:
    """Entries of a directory, none when it cannot be listed (listing counts that skip later)."""
    try:
        return sorted(directory / name for name in os.listdir(directory))
    except OSError:
        return []


@lru_cache(maxsize=2)
def _mano_layer(path: str) -> smplx.MANO:
    """HO-3D's MANO (flat_hand_mean=True), built once per sharder worker."""
    from pipeline.models.mano import build_mano_layer

    return build_mano_layer(path, flat_hand_mean=True).double()


def mano_vertices(path: str, pose: np.ndarray, beta: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """[778, 3] vertices of one HO-3D fit in its own (OpenGL) camera frame."""
    import torch

    t = [torch.as_tensor(np.asarray(a, np.float64).reshape(1, -1)) for a in (pose, beta, trans)]
    with torch.no_grad():
        out = _mano_layer(path)(global_orient=t[0][:, :3], hand_pose=t[0][:, 3:], betas=t[1], transl=t[2])
    return out.vertices[0].numpy()


def detect_version(root, split_dirs) -> int:
    """3 when sequences hold .jpg frames, 2 when they hold .png frames."""
    for split_dir in split_dirs:
        for seq in (p for p in _sorted_entries(split_dir) if (p / "rgb").is_dir()):
            for f in _sorted_entries(seq / "rgb"):
                if f.suffix == ".jpg":
                    return 3
                if f.suffix == ".png":
                    return 2
    raise LayoutError(f"ho3d: no rgb/<id>.png (v2) or rgb/<id>.jpg (v3) frame under {root}/<split>/<SEQ>/")


class HO3D(Source):
    """Options: splits (default both present), fps (per-dataset setting; HO-3D publishes none),
    image_size (default [640, 480], used to clip boxes derived from joints), mano_model (a MANO file: training
    frames also carry the vertices of their MANO fit)."""

    Options = HO3DOptions

    dataset = "ho3d"

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        splits = self.options.splits or [s for s in SPLITS if (self.root / s).is_dir()]
        if not splits:
            self.require("HO-3D", "train")
        bad = set(splits) - set(SPLITS)
        if bad:
            raise LayoutError(f"ho3d: unknown split(s) {sorted(bad)}; known: {SPLITS}")
        self.require("HO-3D", *[p for s in splits for p in (s, f"{s}.txt")])
        version = detect_version(self.root, [self.root / s for s in splits])
        ext = ".jpg" if version == 3 else ".png"
        fps = self.options.fps
        for split in splits:
            listed = set(layout_text(self.root / f"{split}.txt", LIST, self.dataset).split())
            split_dir = self.root / split
            for seq in utf8_names(split_dir, counter):
                rgb = split_dir / seq / "rgb"
                if not rgb.is_dir():
                    continue
                frames = []
                for name in utf8_names(rgb, counter, (ext,)):
                    stem = name[: -len(ext)]
                    index = ascii_number(stem)
                    if index is None:
                        counter.skip("unexpected_file", str(rgb / name), frames=1)
                        continue
                    labelled = f"{seq}/{stem}" in listed
                    frames.append(Frame(
                        source_id=f"{split}/{seq}/rgb/{name}", index=index, image=str(rgb / name),
                        annotation=str(split_dir / seq / "meta" / f"{stem}.pkl") if labelled else None,
                        flags={"labelled": labelled}))
                if frames:  # evaluation meta holds no MANO fit: no convention to record
                    yield Clip(self.dataset, f"{split}_{seq}", 0, "right", fps, frames,
                               flags={"split": split, "version": version},
                               mano_flat_hand_mean=True if split == "train" else None)

    def annotate(self, clip: Clip, frame: Frame) -> None:
        if frame.annotation is None:
            return
        meta = load_restricted(frame.annotation)
        if not isinstance(meta, dict):
            raise SkipError("annotation_malformed", f"{frame.annotation}: not a dict")
        try:
            K = np.asarray(meta["camMat"], dtype=np.float64).reshape(3, 3)
            if clip.flags["split"] == "evaluation":
                frame.box = tuple(float(v) for v in np.asarray(meta["handBoundingBox"], dtype=np.float64)
                                  .reshape(4))
                frame.labels = Labels(K=K)
                return
            joints = np.asarray(meta["handJoints3D"], dtype=np.float64).reshape(21, 3)
            kp3d = (joints @ OPENGL_TO_OPENCV.T)[MANO_TO_FREIHAND]
            pose = np.asarray(meta["handPose"], dtype=np.float64).reshape(48)
            beta = np.asarray(meta["handBeta"], dtype=np.float64).reshape(10)
            trans = np.asarray(meta["handTrans"], dtype=np.float64).reshape(3) if self.options.mano_model else None
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SkipError("annotation_malformed", f"{frame.annotation}: bad or missing field ({exc!r})") from exc
        uv = project(K, kp3d)
        width, height = self.options.image_size
        frame.box = box_from_keypoints(uv, width, height)
        verts = None
        if trans is not None:
            verts = mano_vertices(str(self.root / self.options.mano_model), pose, beta, trans) @ OPENGL_TO_OPENCV.T
        frame.labels = Labels(K=K, kp3d=kp3d, kp2d=uv, mano_pose=rotate_global_orient(pose, OPENGL_TO_OPENCV),
                              mano_shape=beta, verts=verts)
