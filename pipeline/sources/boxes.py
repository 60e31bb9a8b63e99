"""Pure hand-box helpers: validity, boxes from keypoints, gap interpolation, track linking, filtering, smoothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.signal import savgol_filter

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


@dataclass(frozen=True)
class LinkParams:
    """Gates and costs of `link_tracks`; a box's size is the geometric mean of its width and height."""

    iou_min: float = 0.3  # a pair overlapping this much may link whatever its centre distance
    max_gap: int = 8  # native frames a track may miss
    max_shift: float = 0.5  # else: centre distance per elapsed frame, relative to the box size, at most this
    max_scale: float = 2.0  # a box may not grow or shrink by more than this factor between linked detections
    side_cost: float = 0.3  # added cost when the handedness label disagrees with the track's vote


def _size(box: Box) -> float:
    return float(np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


def _centre(box: Box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def track_side(track: list[Detection]) -> str:
    """Handedness of a track: the score-weighted majority of its detections' labels (ties: the first's)."""
    votes: dict[str, float] = {}
    for d in track:
        votes[d.side] = votes.get(d.side, 0.0) + d.score
    return max(votes, key=lambda s: (votes[s], s == track[0].side))


def link_cost(track: list[Detection], det: Detection, p: LinkParams) -> float:
    """Cost of appending `det` to `track` (inf when a gate refuses): 1 - IoU plus the centre distance per
    elapsed frame relative to the smaller box's size, plus `side_cost` when the label disagrees with the track's vote.
    Handedness is only a soft cue: detectors flip it on grasping or back-facing hands."""
    last = track[-1]
    ratio = _size(det.box) / _size(last.box)
    if not 1.0 / p.max_scale <= ratio <= p.max_scale:
        return np.inf
    overlap = iou(last.box, det.box)
    shift = np.linalg.norm(_centre(det.box) - _centre(last.box)) / (det.frame - last.frame) / min(
        _size(det.box), _size(last.box))
    if overlap < p.iou_min and shift > p.max_shift:
        return np.inf
    return 1.0 - overlap + shift + (p.side_cost if det.side != track_side(track) else 0.0)


def link_tracks(detections: list[Detection], p: LinkParams) -> list[list[Detection]]:
    """Link detections into tracks, frame by frame, with a one-to-one assignment (Hungarian, on `link_cost`)
    between the tracks seen within `max_gap` frames and the frame's detections; an unassigned detection starts
    a track. A greedy best-overlap match lets one noisy box steal another hand's track; the assignment does not.
    Tracks come out ordered by first frame."""
    by_frame: dict[int, list[Detection]] = {}
    for det in detections:
        by_frame.setdefault(det.frame, []).append(det)
    active: list[list[Detection]] = []
    done: list[list[Detection]] = []
    for frame in sorted(by_frame):
        still = []
        for track in active:
            (still if frame - track[-1].frame - 1 <= p.max_gap else done).append(track)
        active, dets = still, by_frame[frame]
        used: set[int] = set()
        if active:
            cost = np.array([[link_cost(t, d, p) for d in dets] for t in active])
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
            for ti, di in zip(rows, cols, strict=True):
                if np.isfinite(cost[ti, di]):
                    active[ti].append(dets[di])
                    used.add(int(di))
        active.extend([d] for di, d in enumerate(dets) if di not in used)
    done.extend(active)
    return sorted(done, key=lambda t: (t[0].frame, t[0].box))


def static_tracks(tracks: list[list[Detection]], fps: float, static_motion: float, static_s: float) -> set[int]:
    """Indices of tracks on background structures (a chair back): tracks at the same place (median boxes
    overlapping by IoU >= 0.3) are pooled, and the pool is static when its box centres spread (norm of the std,
    relative to the median box size) less than `static_motion` over at least `static_s` seconds of detections.
    Pooling matters: the detector fires on a still object in bursts, each short track of which looks like a
    hand. A hand held still in one spot for `static_s` seconds is dropped too: the price of this cue."""
    medians = [tuple(np.median([d.box for d in t], axis=0)) for t in tracks]
    out = set()
    for i, m in enumerate(medians):
        pool = [d for j, t in enumerate(tracks) if iou(m, medians[j]) >= 0.3 for d in t]
        centres = np.array([_centre(d.box) for d in pool])
        spread = float(np.linalg.norm(centres.std(axis=0))) / float(np.median([_size(d.box) for d in pool]))
        if spread < static_motion and len(pool) >= static_s * fps:
            out.add(i)
    return out


def _moving_max(values: np.ndarray, half: int) -> np.ndarray:
    padded = np.pad(values, half, mode="edge")
    return np.max(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def _moving_mean(values: np.ndarray, half: int) -> np.ndarray:
    padded = np.pad(values, half, mode="edge")
    return np.mean(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def _line_smooth(values: np.ndarray, half: int) -> np.ndarray:
    """Mean over +-half samples; within half of an end, the line fitted to the first / last window (so a steady
    motion is not lagged there). Savitzky-Golay of order 1, the window cut to the series when shorter."""
    window = min(2 * half + 1, len(values) - 1 + len(values) % 2)
    return savgol_filter(values, window, 1, mode="interp") if window >= 3 else values.copy()


def smooth_track(frames: list[int], boxes: list[Box], half: int) -> list[Box]:
    """Boxes of one track at consecutive native frames, smoothed over time so the crop does not shake.

    Centre and log width/height get a centred moving average over 2 * half + 1 frames (a line fit near the ends):
    detector jitter would otherwise become camera motion that time-coherent augmentation cannot undo. Each box
    is then grown about its (smooth) centre until it contains the raw box; the growth factor is a 3-frame mean
    of a 3-frame max of the factor needed per frame, so it covers every frame and changes smoothly while the box
    stays tight (a growth window as long as the smoothing one loosens the hand box and loses true-hand overlap).
    """
    if half <= 0 or len(boxes) < 2:
        return list(boxes)
    if np.any(np.diff(frames) != 1):
        raise ValueError("smooth_track needs boxes at consecutive frames")
    b = np.asarray(boxes, dtype=np.float64)
    c = (b[:, :2] + b[:, 2:]) / 2.0
    logwh = np.log(np.maximum(b[:, 2:] - b[:, :2], 1e-6))
    sc = np.stack([_line_smooth(c[:, k], half) for k in range(2)], axis=1)
    shalf = np.exp(np.stack([_line_smooth(logwh[:, k], half) for k in range(2)], axis=1)) / 2.0
    need = np.maximum(np.abs(b[:, :2] - sc), np.abs(b[:, 2:] - sc)) / shalf  # per axis, to contain the raw box
    grow = _moving_mean(_moving_max(np.maximum(need.max(axis=1), 1.0), 1), 1)[:, None]
    out = np.concatenate([sc - shalf * grow, sc + shalf * grow], axis=1)
    return [tuple(float(v) for v in row) for row in out]
