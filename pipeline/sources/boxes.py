"""Pure hand-box helpers: validity, boxes from keypoints, gap interpolation, track linking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]


def box_problem(box: Box, width: int, height: int) -> str | None:
    """Why a box cannot be used on a width x height image (None when it can)."""
    x1, y1, x2, y2 = box
    if not np.all(np.isfinite(box)) or x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return "box_degenerate"
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return "box_outside_image"
    return None


def box_from_keypoints(uv: np.ndarray, width: int, height: int, expand: float = 1.5) -> Box:
    """HO-3D train box: min/max of projected joints, expanded about the centre, clipped, made square."""
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    centre = (lo + hi) / 2.0
    half = (hi - lo) / 2.0 * expand
    x1, y1 = np.maximum(centre - half, 0.0)
    x2, y2 = np.minimum(centre + half, [width, height])
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return (float(cx - side / 2), float(cy - side / 2), float(cx + side / 2), float(cy + side / 2))


def interpolate_boxes(indices: list[int], boxes: list[Box | None]) -> list[Box | None]:
    """Fill None boxes linearly in frame index between known neighbours; hold the nearest at the ends.

    Returns all None when no box is known.
    """
    known = [i for i, b in enumerate(boxes) if b is not None]
    if not known:
        return list(boxes)
    t = np.asarray(indices, dtype=np.float64)
    kt = t[known]
    kb = np.asarray([boxes[i] for i in known], dtype=np.float64)
    filled = np.stack([np.interp(t, kt, kb[:, c]) for c in range(4)], axis=1)
    return [b if b is not None else tuple(float(v) for v in filled[i]) for i, b in enumerate(boxes)]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Detection:
    frame: int
    box: Box
    side: str
    score: float


def link_tracks(detections: list[Detection], iou_min: float, max_gap: int) -> list[list[Detection]]:
    """Greedy frame-by-frame linking of same-side detections by box overlap.

    A track continues while a detection of the same side overlaps its last box by at least `iou_min`
    within `max_gap` missing frames; a longer gap ends it and a later detection starts a new track.
    Each detection joins at most one track, best overlap first. Tracks come out ordered by first frame.
    """
    by_frame: dict[int, list[Detection]] = {}
    for det in detections:
        by_frame.setdefault(det.frame, []).append(det)
    active: list[list[Detection]] = []
    done: list[list[Detection]] = []
    for frame in sorted(by_frame):
        still = []
        for track in active:
            (still if frame - track[-1].frame - 1 <= max_gap else done).append(track)
        active = still
        pairs = sorted(((iou(t[-1].box, d.box), ti, di) for ti, t in enumerate(active)
                        for di, d in enumerate(by_frame[frame]) if t[-1].side == d.side), reverse=True)
        used_t, used_d = set(), set()
        for overlap, ti, di in pairs:
            if overlap < iou_min or ti in used_t or di in used_d:
                continue
            active[ti].append(by_frame[frame][di])
            used_t.add(ti)
            used_d.add(di)
        for di, det in enumerate(by_frame[frame]):
            if di not in used_d:
                active.append([det])
    done.extend(active)
    return sorted(done, key=lambda t: (t[0].frame, t[0].box))
