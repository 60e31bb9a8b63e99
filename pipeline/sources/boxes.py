"""Pure hand-box helpers: validity, boxes from keypoints, gap interpolation, track linking and stitching,
filtering, smoothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

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


def _cover(a: Box, b: Box) -> float:
    """Intersection of two boxes over the smaller one's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])), 1e-12)


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


def split_duplicates(detections: list[Detection], overlap: float) -> tuple[list[Detection], list[Detection]]:
    """(kept, duplicates): a duplicate overlaps a higher-scored box of its frame by at least `overlap` of the
    smaller box's area. MediaPipe reports one hand twice, its tracker's box and a fresh palm detection, often
    with opposite labels; the second box would start a fragment track and steal the hand's next boxes from its
    track. Two different hands rarely hide most of one box inside the other."""
    by_frame: dict[int, list[Detection]] = {}
    for det in detections:
        by_frame.setdefault(det.frame, []).append(det)
    duplicates: list[Detection] = []
    for dets in by_frame.values():
        kept: list[Detection] = []
        for det in sorted(dets, key=lambda d: -d.score):
            (duplicates if any(_cover(det.box, k.box) >= overlap for k in kept) else kept).append(det)
    ids = {id(d) for d in duplicates}
    return [d for d in detections if id(d) not in ids], duplicates


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


@dataclass(frozen=True)
class StitchParams:
    """Gates of `stitch_tracks`, in native frames and box sizes."""

    max_gap: int = 8  # frames between any two pieces joined (as in linking: bridged by interpolation) ...
    fragment: int = 15  # ... but a piece spanning fewer frames (a fragment) ...
    fragment_gap: int = 30  # ... of the same side may be this many frames from its neighbour's nearest detection
    jump: float = 1.0  # centre distance / box size at most jump * sqrt(frames elapsed)
    max_scale: float = 2.0  # box size ratio across the join, at most
    side_cost: float = 0.3  # added cost when the two pieces' handedness votes disagree


def _step_cost(a: Detection, b: Detection, gap: int, p: StitchParams) -> float:
    """Centre distance per sqrt(elapsed frames), relative to the smaller box, from `a` to the later `b` (inf when
    a gate refuses). A hand-held camera shakes the image by up to about a box per frame, back and forth, so the
    distance grows like a random walk's, with the square root of the time, not linearly."""
    dt = b.frame - a.frame
    ratio = _size(b.box) / _size(a.box)
    if dt - 1 > gap or not 1.0 / p.max_scale <= ratio <= p.max_scale:
        return np.inf
    step = float(np.linalg.norm(_centre(b.box) - _centre(a.box))) / min(_size(a.box), _size(b.box)) / np.sqrt(dt)
    return step if step <= p.jump else np.inf


def attach_cost(host: list[Detection], piece: list[Detection], p: StitchParams) -> float:
    """Cost of putting `piece` into `host`, before, after or into a gap of it (inf when it does not fit): the
    larger `_step_cost` from the host's detection before the piece and to the one after it, plus `side_cost`
    when the handedness votes disagree. The host may have no detection within the piece's frames (a hand is not
    in two places at once). Only a fragment with the host's side may be `fragment_gap` frames away: the longer
    the gap, the less the geometry tells two hands apart, so the vote must agree."""
    first, last = piece[0].frame, piece[-1].frame
    if any(first <= d.frame <= last for d in host):
        return np.inf
    same_side = track_side(host) == track_side(piece)
    gap = p.fragment_gap if last - first + 1 < p.fragment and same_side else p.max_gap
    before = [d for d in host if d.frame < first][-1:]
    after = [d for d in host if d.frame > last][:1]
    steps = [_step_cost(b, piece[0], gap, p) for b in before] + [_step_cost(piece[-1], a, gap, p) for a in after]
    return max(steps) + (0.0 if same_side else p.side_cost)


def stitch_tracks(tracks: list[list[Detection]], p: StitchParams) -> list[list[Detection]]:
    """Join tracks that are one hand, cheapest join (`attach_cost`) first, until none fits. Frame-by-frame linking
    splits a hand where the image jumps (a shaking camera, motion blur, a missed stretch) into pieces, some too
    short to be clips; joined, their detections end up in a clip. Only a short piece (a fragment, which alone
    would be lost) may be joined across a gap longer than linking bridges: between two long tracks, two clips
    are safer than one interpolated through the gap. Tracks come out ordered by first frame."""
    pieces: list[list[Detection] | None] = [list(t) for t in tracks]
    reach = max(p.max_gap, p.fragment_gap) + 1

    def costs_with(i: int) -> dict[tuple[int, int], float]:
        """Finite costs, keyed (piece, host), of the joins of track i with the tracks within reach in time."""
        a, out = pieces[i], {}
        for j, b in enumerate(pieces):
            if j != i and b is not None and a[0].frame - reach <= b[-1].frame and b[0].frame - reach <= a[-1].frame:
                out.update({(i, j): attach_cost(b, a, p), (j, i): attach_cost(a, b, p)})
        return {k: c for k, c in out.items() if np.isfinite(c)}

    costs: dict[tuple[int, int], float] = {}
    for i in range(len(pieces)):
        costs.update(costs_with(i))
    while costs:
        piece, host = min(costs, key=lambda k: (costs[k], k))
        pieces[host] = sorted(pieces[host] + pieces[piece], key=lambda d: d.frame)
        pieces[piece] = None
        costs = {k: c for k, c in costs.items() if piece not in k and host not in k} | costs_with(host)
    return sorted((t for t in pieces if t is not None), key=lambda t: (t[0].frame, t[0].box))


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


def local_linear(values: np.ndarray, sigma: float) -> np.ndarray:
    """Local linear regression with Gaussian weights (sd `sigma` samples, cut at 3 sd): at each sample, the value
    at that sample of the line fitted to its neighbours. Inside a series that is the Gaussian-weighted mean; near
    an end the fit turns one-sided, so a steady motion is not lagged there, and the weights fade smoothly (a
    moving average's hard window edges jerk the result each time a noisy sample enters or leaves).
    Series under 3 samples (the line through them is the data) and sigma under 0.1 are returned as they are."""
    if len(values) < 3 or sigma < 0.1:
        return np.array(values, dtype=np.float64)
    k = np.arange(-int(np.ceil(3 * sigma)), int(np.ceil(3 * sigma)) + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma) ** 2)

    def sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        win = np.lib.stride_tricks.sliding_window_view(np.pad(x, len(k) // 2), len(k))  # win[t, j] = x[t + k[j]]
        return win @ w, win @ (w * k), win @ (w * k * k)

    s0, s1, s2 = sums(np.ones(len(values)))
    t0, t1, _ = sums(np.asarray(values, dtype=np.float64))
    return (s2 * t0 - s1 * t1) / (s0 * s2 - s1 * s1)


def smooth_track(frames: list[int], boxes: list[Box], sigma: float) -> list[Box]:
    """Boxes of one track at consecutive native frames, smoothed over time so the crop does not shake.

    Centre and log width/height are smoothed by `local_linear` (Gaussian sd `sigma` frames): detector jitter
    would otherwise become camera motion that time-coherent augmentation cannot undo. Each box is then grown
    about its (smooth) centre until it contains the raw box, per axis: the growth factor of an axis is a 3-frame
    mean of a 3-frame max of the factor needed per frame, so it covers every frame and changes smoothly. Growing
    both axes by the larger factor would loosen the box around a hand that lags in one direction only and lose
    its overlap with the detection.
    """
    if sigma <= 0 or len(boxes) < 2:
        return list(boxes)
    if np.any(np.diff(frames) != 1):
        raise ValueError("smooth_track needs boxes at consecutive frames")
    b = np.asarray(boxes, dtype=np.float64)
    c = (b[:, :2] + b[:, 2:]) / 2.0
    logwh = np.log(np.maximum(b[:, 2:] - b[:, :2], 1e-6))
    sc = np.stack([local_linear(c[:, k], sigma) for k in range(2)], axis=1)
    shalf = np.exp(np.stack([local_linear(logwh[:, k], sigma) for k in range(2)], axis=1)) / 2.0
    need = np.maximum(np.abs(b[:, :2] - sc), np.abs(b[:, 2:] - sc)) / shalf  # per axis, to contain the raw box
    grow = np.stack([_moving_mean(_moving_max(np.maximum(need[:, k], 1.0), 1), 1) for k in range(2)], axis=1)
    out = np.concatenate([sc - shalf * grow, sc + shalf * grow], axis=1)
    return [tuple(float(v) for v in row) for row in out]
