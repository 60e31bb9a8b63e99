"""The HO-3D challenge submission (CodaLab, v2 and v3 alike): `pred.zip` holding one `pred.json`.

Format (shreyashampali/ho3d: README "Evaluate on the dataset", pred.py `dump`, eval.py `main`): a JSON list of two
lists, [joints, vertices], one entry per evaluation frame in the order of `evaluation.txt` (the server indexes them
by position only), each frame 21 x 3 joints and 778 x 3 MANO vertices in metres, in HO-3D's OpenGL camera frame
(hand on -z) and HO-3D's joint order (MANO's 16 joints, then the tips thumb, index, middle, ring, pinky). The zip is
`zip -j pred.zip pred.json`: the file at the archive's top level.

Our joints are OpenCV-framed in FreiHAND order: `to_ho3d` undoes exactly what the HO-3D reader
(pipeline.sources.ho3d) does to the labels, with the same constants, so a submission and our training labels can
never disagree on a convention.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_write
from pipeline.geometry import MANO_TO_FREIHAND, OPENGL_TO_OPENCV

# The reader maps HO-3D joints h to ours as (h @ OPENGL_TO_OPENCV.T)[MANO_TO_FREIHAND]; these two undo it.
FREIHAND_TO_MANO = np.argsort(MANO_TO_FREIHAND)
OPENCV_TO_OPENGL = np.linalg.inv(OPENGL_TO_OPENCV)
N_JOINTS, N_VERTS = 21, 778
# Metres are written with 6 decimals (1 um): 100x below the 0.1 mm the server reports, and about half the size of
# full float reprs (v3: 20,137 frames x 799 points).
DECIMALS = 6


def _points(x, k: int, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (k, 3):
        raise ValueError(f"{name} must be [N, {k}, 3], got {list(x.shape)}")
    return x


def to_ho3d(joints, verts) -> tuple[np.ndarray, np.ndarray]:
    """Ours (OpenCV frame, FreiHAND joint order) to HO-3D's (OpenGL frame, HO-3D joint order), metres, float64.
    joints [N, 21, 3] -> [N, 21, 3]; verts [N, 778, 3] -> [N, 778, 3] (MANO vertex order is shared: no reorder).
    The exact inverse of the HO-3D reader's label conversion (FREIHAND_TO_MANO, OPENCV_TO_OPENGL)."""
    joints, verts = _points(joints, N_JOINTS, "joints"), _points(verts, N_VERTS, "verts")
    return (joints @ OPENCV_TO_OPENGL.T)[:, FREIHAND_TO_MANO], verts @ OPENCV_TO_OPENGL.T


def read_evaluation_order(path: str | os.PathLike) -> list[str]:
    """The frame ids `SEQ/NNNN` of HO-3D's `evaluation.txt`, in file order (the order pred.json must follow)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def frame_id(source_id: str) -> str:
    """A shard's per-frame source id (`evaluation/SEQ/rgb/NNNN.jpg`, written by the HO-3D reader) as the
    `SEQ/NNNN` id of evaluation.txt."""
    parts = source_id.split("/")
    if len(parts) != 4 or parts[2] != "rgb":
        raise ValueError(f"{source_id!r} is not an HO-3D source id <split>/<SEQ>/rgb/<NNNN>.<ext>")
    return f"{parts[1]}/{Path(parts[3]).stem}"


def _examples(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (f" ... ({len(ids)} in all)" if len(ids) > 5 else "")


def submission_rows(frame_ids: Sequence[str], order: Sequence[str]) -> np.ndarray:
    """Row of frame_ids for each entry of order: every evaluation frame must be predicted exactly once and nothing
    else predicted, because the server matches predictions to ground truth by position alone."""
    ids = [str(f) for f in frame_ids]
    for name, listed in (("frame_ids", ids), ("the evaluation order", list(order))):
        twice = sorted(f for f, n in Counter(listed).items() if n > 1)
        if twice:
            raise ValueError(f"{name} lists frames more than once: {_examples(twice)}")
    row = {f: i for i, f in enumerate(ids)}
    problems = []
    missing = [f for f in order if f not in row]
    if missing:
        problems.append(f"missing {_examples(missing)}")
    extra = sorted(set(ids) - set(order))
    if extra:
        problems.append(f"not in the evaluation order {_examples(extra)}")
    if problems:
        raise ValueError(f"predictions must cover the {len(order)} evaluation frames exactly: " + "; ".join(problems))
    return np.array([row[f] for f in order], dtype=np.int64)


def _check_opengl(joints: np.ndarray, verts: np.ndarray, order: Sequence[str]) -> None:
    """pred.py's guard: a frame entirely at z > 0 in HO-3D's frame was not in front of our camera (OpenCV z > 0),
    most likely converted twice. Non-finite values would be written as NaN, which is not JSON."""
    bad = ~(np.isfinite(joints).all(axis=(1, 2)) & np.isfinite(verts).all(axis=(1, 2)))
    if bad.any():
        raise ValueError(f"non-finite predictions for {_examples([order[i] for i in np.flatnonzero(bad)])}")
    behind = (joints[..., 2] > 0).all(axis=1) | (verts[..., 2] > 0).all(axis=1)
    if behind.any():
        raise ValueError("predictions behind the camera after conversion (pass ours: OpenCV frame, z > 0): "
                         + _examples([order[i] for i in np.flatnonzero(behind)]))


def _write_json(f, joints: np.ndarray, verts: np.ndarray) -> None:
    """[[joints per frame], [verts per frame]], streamed frame by frame (a v3 file is a few hundred MB)."""
    f.write(b"[")
    for k, points in enumerate((joints, verts)):
        f.write(b",[" if k else b"[")
        for i, frame in enumerate(np.round(points, DECIMALS)):
            f.write((b"," if i else b"") + json.dumps(frame.tolist(), separators=(",", ":")).encode())
        f.write(b"]")
    f.write(b"]")


def write_submission(path: str | os.PathLike, frame_ids: Sequence[str], joints, verts,
                     order: Sequence[str] | str | os.PathLike) -> Path:
    """Write `path/pred.json` and `path/pred.zip` (pred.json at its top level) for the HO-3D challenge; returns the
    zip's path. frame_ids [N] (`SEQ/NNNN`, see frame_id) name the rows of our joints [N, 21, 3] and verts
    [N, 778, 3] (metres, OpenCV frame, FreiHAND order); order is evaluation.txt's list of ids, or its path."""
    if isinstance(order, (str, os.PathLike)):
        order = read_evaluation_order(order)
    joints, verts = _points(joints, N_JOINTS, "joints"), _points(verts, N_VERTS, "verts")
    if not len(frame_ids) == len(joints) == len(verts):
        raise ValueError(f"{len(frame_ids)} frame ids for {len(joints)} joint and {len(verts)} vertex predictions")
    rows = submission_rows(frame_ids, order)
    joints, verts = to_ho3d(joints[rows], verts[rows])
    _check_opengl(joints, verts, order)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "pred.json", lambda f: _write_json(f, joints, verts))

    def zip_json(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(out / "pred.json", arcname="pred.json")

    atomic_write(out / "pred.zip", zip_json)
    return out / "pred.zip"
