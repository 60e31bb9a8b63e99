"""Alignments of a predicted pose onto its ground truth (docs: finetune_eval.md §2.3), batched over samples.

Points are [N, K, 3] arrays in metres. A ground-truth point is labelled when all its coordinates are finite; a
missing label (NaN) never enters a fit. Every alignment maps the prediction onto the ground truth (never the reverse)
with a similarity x -> s x R^T + t, returned alongside the aligned points so that a transform fitted on joints can be
applied to vertices (RA-/STA-V2V). A sample whose transform is undefined gets NaN in (s, R, t) and in the aligned
points, so the metrics drop it instead of scoring it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PA_MIN_POINTS = 3  # with 1 or 2 labelled points a similarity fits exactly: a PA error of 0 would mean nothing


class Similarity(NamedTuple):
    """Per-sample similarity x -> s x R^T + t: s [N], R [N, 3, 3] (det +1), t [N, 3]."""

    s: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [N, K, 3] sample by sample."""
        rotated = np.einsum("nij,nkj->nki", self.R, np.asarray(points, dtype=np.float64))
        return self.s[:, None, None] * rotated + self.t[:, None, :]


def as_points(pred, gt, dim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 [N, K, dim]; raises ValueError on a shape mismatch or a non-finite prediction (a NaN
    prediction is a model failure to report, not a missing label to mask)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or pred.shape != gt.shape or pred.shape[-1] != dim:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be [N, K, {dim}]")
    if not np.isfinite(pred).all():
        raise ValueError("pred holds non-finite values")
    return pred, gt


def labelled(gt: np.ndarray) -> np.ndarray:
    """[N, K] bool: the ground-truth point has all coordinates finite."""
    return np.isfinite(gt).all(axis=-1)


def _translation_only(t: np.ndarray, s: np.ndarray | None = None) -> Similarity:
    n = t.shape[0]
    return Similarity(np.ones(n) if s is None else s, np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), t)


def align_root(pred, gt, root: int = 0) -> tuple[np.ndarray, Similarity]:
    """Root alignment (RA): translate the prediction so its root joint (FreiHAND order: 0 = wrist) lies on the
    ground-truth root, t = gt[root] - pred[root]. Undefined (NaN) where the ground-truth root is unlabelled."""
    pred, gt = as_points(pred, gt)
    sim = _translation_only(gt[:, root] - pred[:, root])
    return sim.apply(pred), sim


def align_scale_translation(pred, gt, root: int = 0, bone: tuple[int, int] = (0, 9)) -> tuple[np.ndarray, Similarity]:
    """Scale-and-translation alignment (STA, HO-3D's `align_sc_tr`): scale the prediction about its root by
    s = |gt[b] - gt[a]| / |pred[b] - pred[a]| for the reference bone (a, b) (FreiHAND order: wrist -> middle MCP,
    0 -> 9), then translate its root onto the ground-truth root. No rotation. Undefined (NaN) where the ground-truth
    root or bone is unlabelled; a prediction with a zero-length bone is left unscaled (s = 1)."""
    pred, gt = as_points(pred, gt)
    a, b = bone
    gt_len = np.linalg.norm(gt[:, b] - gt[:, a], axis=-1)
    pred_len = np.linalg.norm(pred[:, b] - pred[:, a], axis=-1)
    s = np.where(pred_len > 0, gt_len / np.where(pred_len > 0, pred_len, 1.0), 1.0)
    sim = _translation_only(gt[:, root] - s[:, None] * pred[:, root], s)
    return sim.apply(pred), sim


def align_procrustes(pred, gt) -> tuple[np.ndarray, Similarity]:
    """Procrustes alignment (PA): the similarity (s, R, t) minimising sum_k |s R p_k + t - g_k|^2 over the labelled
    points, with R a proper rotation (det +1), in Umeyama's closed form: with centred points x, y and the SVD
    sum_k y_k x_k^T = U S V^T, R = U D V^T where D = diag(1, 1, sign det(U V^T)), s = tr(S D) / sum_k |x_k|^2,
    t = mean(g) - s R mean(p). Unlike FreiHAND's script (scipy's orthogonal_procrustes), a mirrored prediction is
    not reflected back. A prediction collapsed to one point gets s = 0 (the least-squares optimum); a sample with
    fewer than PA_MIN_POINTS labelled points is undefined (NaN)."""
    pred, gt = as_points(pred, gt)
    w = labelled(gt).astype(np.float64)
    n = w.sum(axis=1)
    g = np.where(w[..., None] > 0, gt, 0.0)
    weights = w / np.maximum(n, 1.0)[:, None]
    mu_p = np.einsum("nk,nkd->nd", weights, pred)
    mu_g = np.einsum("nk,nkd->nd", weights, g)
    x = (pred - mu_p[:, None]) * w[..., None]
    y = (g - mu_g[:, None]) * w[..., None]
    u, sv, vt = np.linalg.svd(np.einsum("nki,nkj->nij", y, x))
    d = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    u[:, :, 2] *= d[:, None]
    R = u @ vt
    var_p = np.einsum("nkd,nkd->n", x, x)
    trace = sv[:, 0] + sv[:, 1] + d * sv[:, 2]
    s = np.where(var_p > 0, trace / np.where(var_p > 0, var_p, 1.0), 0.0)
    t = mu_g - s[:, None] * np.einsum("nij,nj->ni", R, mu_p)
    ok = n >= PA_MIN_POINTS
    sim = Similarity(np.where(ok, s, np.nan), np.where(ok[:, None, None], R, np.nan), np.where(ok[:, None], t, np.nan))
    return sim.apply(pred), sim


ALIGNMENTS = ("none", "ra", "sta", "pa")


def align(pred, gt, alignment: str, root: int = 0, bone: tuple[int, int] = (0, 9)) -> tuple[np.ndarray, Similarity]:
    """Apply one of ALIGNMENTS: "none" (absolute metrics: identity), "ra", "sta" or "pa" (functions above)."""
    if alignment == "none":
        pred, gt = as_points(pred, gt)
        return pred, _translation_only(np.zeros((pred.shape[0], 3)))
    if alignment == "ra":
        return align_root(pred, gt, root)
    if alignment == "sta":
        return align_scale_translation(pred, gt, root, bone)
    if alignment == "pa":
        return align_procrustes(pred, gt)
    raise ValueError(f"alignment {alignment!r} is not one of {ALIGNMENTS}")
