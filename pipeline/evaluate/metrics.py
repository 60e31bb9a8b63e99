"""Evaluation metrics of the fine-tuned hand reconstructors (docs: finetune_eval.md §2), as pure NumPy functions.

Inputs are float arrays in metres: joints [N, 21, 3] in FreiHAND order (wrist 0, thumb 1-4, index 5-8, middle 9-12,
ring 13-16, pinky 17-20), MANO vertices [N, 778, 3], 2D keypoints [N, K, 2] in pixels. Outputs are in mm (px for 2D).
Missing labels are NaN in the ground truth (a whole sample or single points): such points, and samples whose
alignment is undefined, are left out of every mean and never counted as zero error. Predictions must be finite.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.evaluate.align import ALIGNMENTS, align, align_procrustes, as_points, labelled

MM = 1000.0  # metres -> millimetres


class Errors(NamedTuple):
    """mean: over all counted points of all samples (pooled); per_sample: over each sample's counted points, NaN
    when it has none [N]; points: per-point errors, NaN where not counted [N, K] (the input of pck_curve)."""

    mean: float
    per_sample: np.ndarray
    points: np.ndarray


class FScore(NamedTuple):
    """mean: over samples with labelled vertices; per_sample, precision, recall: [N], NaN without labelled vertices."""

    mean: float
    per_sample: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def _errors(points: np.ndarray) -> Errors:
    counted = ~np.isnan(points)
    n = counted.sum(axis=1)
    total = np.where(counted, points, 0.0).sum(axis=1)
    per_sample = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    mean = total.sum() / n.sum() if n.sum() else np.nan
    return Errors(float(mean), per_sample, points)


def _distances(pred: np.ndarray, gt: np.ndarray, scale: float) -> np.ndarray:
    """[N, K] Euclidean distances times scale; NaN where the label or the aligned prediction is missing."""
    counted = labelled(gt) & np.isfinite(pred).all(axis=-1)
    return np.where(counted, np.linalg.norm(pred - np.where(counted[..., None], gt, 0.0), axis=-1) * scale, np.nan)


def mpjpe(pred, gt, alignment: str = "none", root: int = 0, bone: tuple[int, int] = (0, 9)) -> Errors:
    """Mean per-joint position error in mm, E = (1 / #counted) sum_{n,k} |g_nk - a(p)_nk|, after the alignment
    a = "none" (absolute), "ra" (root), "sta" (scale and translation) or "pa" (Procrustes), fitted on these
    points (pipeline.evaluate.align). On vertices with "none" or "pa" this is MPVPE / V2V (see mpvpe)."""
    aligned, _ = align(pred, gt, alignment, root, bone)
    return _errors(_distances(aligned, np.asarray(gt, dtype=np.float64), MM))


def mpvpe(pred_verts, gt_verts, alignment: str = "none", pred_joints=None, gt_joints=None, root: int = 0,
          bone: tuple[int, int] = (0, 9)) -> Errors:
    """Mean per-vertex position error (V2V) in mm over the 778 MANO vertices. "pa" aligns the vertices on their
    own, as FreiHAND's evaluation does for MANO meshes; "ra" and "sta" need joints (vertices have no wrist) and
    apply the transform fitted on them, as RA-V2V does; "none" is absolute."""
    pred_verts, gt_verts = as_points(pred_verts, gt_verts)
    if alignment in ("ra", "sta"):
        if pred_joints is None or gt_joints is None:
            raise ValueError(f"{alignment}-MPVPE aligns with the joints: pass pred_joints and gt_joints")
        _, sim = align(pred_joints, gt_joints, alignment, root, bone)
        aligned = sim.apply(pred_verts)
    else:
        aligned, _ = align(pred_verts, gt_verts, alignment)
    return _errors(_distances(aligned, gt_verts, MM))


def pck_curve(errors_mm, lo_mm: float = 0.0, hi_mm: float = 50.0, steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """PCK curve: for each of np.linspace(lo_mm, hi_mm, steps) thresholds, the fraction of all counted points (all
    samples pooled; NaN = not counted) with error <= threshold (FreiHAND's `<=`). Returns (thresholds_mm, pck)."""
    errors = np.sort(np.asarray(errors_mm, dtype=np.float64).ravel())
    errors = errors[~np.isnan(errors)]
    thresholds = np.linspace(lo_mm, hi_mm, steps)
    if errors.size == 0:
        return thresholds, np.full(steps, np.nan)
    return thresholds, np.searchsorted(errors, thresholds, side="right") / errors.size


def auc_pck(errors_mm, lo_mm: float = 0.0, hi_mm: float = 50.0, steps: int = 100) -> float:
    """Area under the PCK curve (pck_curve) by the trapezoidal rule, divided by the range hi_mm - lo_mm so that it
    lies in [0, 1] (FreiHAND / PeCLR: 0-50 mm, 100 thresholds; TASSN's AUC20-50: lo_mm=20)."""
    thresholds, pck = pck_curve(errors_mm, lo_mm, hi_mm, steps)
    return float(np.sum(np.diff(thresholds) * (pck[1:] + pck[:-1]) / 2) / (hi_mm - lo_mm))


def _squared_nearest(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance from each point of pred [K, 3] to its nearest in gt [M, 3], and from each gt point to its
    nearest in pred: one K x M matrix |p|^2 + |q|^2 - 2 p.q, about the centroid to keep the cancellation small."""
    centre = pred.mean(axis=0)
    p, q = pred - centre, gt - centre
    d2 = p @ q.T
    d2 *= -2.0
    d2 += (p * p).sum(axis=1)[:, None]
    d2 += (q * q).sum(axis=1)[None, :]
    return d2.min(axis=1), d2.min(axis=0)


def f_score(pred, gt, thresholds_mm=(5.0, 15.0), alignment: str = "none") -> dict[float, FScore]:
    """F-score at each distance d (Knapitsch et al.; FreiHAND's evaluation): precision P = fraction of predicted
    vertices whose nearest ground-truth vertex is closer than d (strict <), recall R = fraction of ground-truth
    vertices whose nearest predicted vertex is closer than d, F = 2PR / (P + R), 0 when P + R = 0; per sample, then
    averaged. alignment "pa" first aligns the vertices on their own (the headline F@5/F@15), "none" is raw.
    Vertices correspond (MANO topology), so an unlabelled ground-truth vertex is dropped from both sets."""
    if alignment not in ("none", "pa"):
        raise ValueError(f"F-score alignment must be 'none' or 'pa', not {alignment!r}")
    pred, gt = as_points(pred, gt)
    if alignment == "pa":
        pred, _ = align_procrustes(pred, gt)
    mask = labelled(gt) & np.isfinite(pred).all(axis=-1)
    limits = (np.asarray(thresholds_mm, dtype=np.float64) / MM) ** 2
    precision = np.full((len(limits), len(pred)), np.nan)
    recall = precision.copy()
    for i in np.flatnonzero(mask.any(axis=1)):
        to_gt, to_pred = _squared_nearest(pred[i][mask[i]], gt[i][mask[i]])
        precision[:, i] = (to_gt[None] < limits[:, None]).mean(axis=1)
        recall[:, i] = (to_pred[None] < limits[:, None]).mean(axis=1)
    denom = precision + recall
    f = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1.0), np.where(denom == 0, 0.0, np.nan))
    return {float(d): FScore(float(np.nanmean(f[j])) if mask.any() else np.nan, f[j], precision[j], recall[j])
            for j, d in enumerate(thresholds_mm)}


def epe_2d(pred, gt, visible=None) -> Errors:
    """2D end-point error in pixels: mean Euclidean distance between predicted and ground-truth keypoints [N, K, 2]
    over the labelled ones (finite ground truth and, if given, visible [N, K] true)."""
    pred, gt = as_points(pred, gt, dim=2)
    points = _distances(pred, gt, 1.0)
    return _errors(points if visible is None else np.where(np.asarray(visible, dtype=bool), points, np.nan))


def acceleration(joints, root: int = 0) -> np.ndarray:
    """Acceleration of one sequence [T, K, 3] (metres, frames in temporal order) in mm per frame^2: the joints are
    centred on the root (wrist) to remove global motion, then a_t = X_{t-1} - 2 X_t + X_{t+1}, t = 1 .. T-2
    (VIBE / HMMR: no division by the frame interval, so the papers' "mm/s^2" is mm per frame^2). [T-2, K, 3]."""
    x = np.asarray(joints, dtype=np.float64)
    x = (x - x[:, root : root + 1]) * MM
    return x[:-2] - 2 * x[1:-1] + x[2:]


def split_sequences(x, sequence) -> list[np.ndarray]:
    """Group x [N, ...] by sequence id [N], sequences in order of first appearance, frames in their array order."""
    x, sequence = np.asarray(x), np.asarray(sequence)
    if len(sequence) != len(x):
        raise ValueError(f"{len(sequence)} sequence ids for {len(x)} frames")
    if len(x) == 0:
        return []
    _, first, inverse = np.unique(sequence, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))[inverse.ravel()]
    return np.split(x[np.argsort(rank, kind="stable")], np.cumsum(np.bincount(rank))[:-1])


def accel_metrics(pred_seqs, gt_seqs=None, root: int = 0) -> dict[str, float]:
    """Temporal smoothness within sequences (lists of [T, K, 3] in metres; finetune_eval.md §2.6), mm per frame^2:
    ACC = mean |a_pred| and, with ground truth, ACC-ERR = mean |a_gt - a_pred|, pooled over all frames t and joints
    of all sequences (acceleration). The root is left out (identically zero after centring). Differencing stays
    inside a sequence (VIBE's concatenation leaks across boundaries); sequences shorter than 3 frames contribute
    nothing and are counted; an acceleration touching an unlabelled ground-truth frame is left out of ACC-ERR."""
    gts = [None] * len(pred_seqs) if gt_seqs is None else gt_seqs
    acc, err, short = [], [], 0
    for pred, gt in zip(pred_seqs, gts, strict=True):
        pred = np.asarray(pred, dtype=np.float64)
        if not np.isfinite(pred).all():
            raise ValueError("pred holds non-finite values")
        if gt is not None and np.shape(gt) != pred.shape:
            raise ValueError(f"gt sequence {np.shape(gt)} does not match pred {pred.shape}")
        if len(pred) < 3:
            short += 1
            continue
        keep = np.arange(pred.shape[1]) != root
        a_pred = acceleration(pred, root)[:, keep]
        acc.append(np.linalg.norm(a_pred, axis=-1).ravel())
        if gt is not None:
            e = np.linalg.norm(acceleration(gt, root)[:, keep] - a_pred, axis=-1).ravel()
            err.append(e[np.isfinite(e)])
    out = {"accel_mm_per_frame2": _pooled(acc)}
    if gt_seqs is not None:
        out["accel_error_mm_per_frame2"] = _pooled(err)
    return out | {"n_sequences": len(pred_seqs) - short, "n_sequences_too_short": short}


def _pooled(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts) if parts else np.zeros(0)
    return float(values.mean()) if values.size else np.nan


def _named(name: str, alignment: str) -> str:
    return name if alignment == "none" else f"{alignment}_{name}"


def evaluate_predictions(pred_joints, gt_joints, pred_verts=None, gt_verts=None, pred_2d=None, gt_2d=None,
                         sequence=None, visible_2d=None, root: int = 0,
                         bone: tuple[int, int] = (0, 9)) -> dict[str, float | int]:
    """All metrics as one flat dict (for results.json); errors in mm, 2D in px, AUC and F in [0, 1], acceleration
    in mm per frame^2. Keys: mpjpe, ra_/sta_/pa_mpjpe and auc_<that>_0_50 (PCK 0-50 mm, 100 steps); with
    vertices mpvpe, ra_/sta_/pa_mpvpe, auc_<that>_0_50, f5, f15 (raw), f5_pa, f15_pa (vertices aligned on their
    own); with 2D epe_2d_px; with sequence ids [N] (frames in temporal order) accel_mm_per_frame2,
    accel_error_mm_per_frame2; plus the counts behind them (n_*). NaN when nothing could be counted."""
    out: dict[str, float | int] = {"n_samples": len(gt_joints), "n_labelled_joints": int(labelled(gt_joints).sum())}
    for a in ALIGNMENTS:
        errors = mpjpe(pred_joints, gt_joints, a, root, bone)
        out[_named("mpjpe", a)] = errors.mean
        out[f"auc_{_named('mpjpe', a)}_0_50"] = auc_pck(errors.points)
    if pred_verts is not None:
        out["n_labelled_vertices"] = int(labelled(gt_verts).sum())
        for a in ALIGNMENTS:
            errors = mpvpe(pred_verts, gt_verts, a, pred_joints, gt_joints, root, bone)
            out[_named("mpvpe", a)] = errors.mean
            out[f"auc_{_named('mpvpe', a)}_0_50"] = auc_pck(errors.points)
        for a, suffix in (("none", ""), ("pa", "_pa")):
            for d, score in f_score(pred_verts, gt_verts, (5.0, 15.0), a).items():
                out[f"f{d:g}{suffix}"] = score.mean
    if pred_2d is not None:
        errors = epe_2d(pred_2d, gt_2d, visible_2d)
        out["epe_2d_px"] = errors.mean
        out["n_labelled_2d"] = int(np.isfinite(errors.points).sum())
    if sequence is not None:
        out |= accel_metrics(split_sequences(pred_joints, sequence), split_sequences(gt_joints, sequence), root)
    return out
