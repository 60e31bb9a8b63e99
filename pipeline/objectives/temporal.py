"""Temporal fine-tuning losses on the predictions for one clip of T frames (finetune_eval.md §4.1, §4.4).

Each takes predictions shaped [B, T, ...] (B clips, frames in temporal order at the stream's
`sequence_interval`) and returns a scalar averaged over clips. They are self-supervised: they compare
predictions with predictions, never with labels, so they need no label mask and train on every frame of a clip,
labelled or not (the supervised terms mask the unlabelled ones).

- `quaternion_motion_loss`: S²HAND(V)'s E_quat (eq. 17): every joint must rotate along one geodesic between the
  clip's first and last frame, at any speed. With γ the geodesic angle (triangle inequality on SO(3)),
  Σ_i γ(H_i, H_{i+1}) - γ(H_1, H_T) >= 0, equal to 0 for monotone motion about a fixed axis; always 0 for T < 3.
- `shape_consistency_loss`: the shape half of S²HAND(V)'s T&S consistency (eq. 21): one hand, one β per clip
  (the texture half needs a texture head, which handclr does not have).
- `acceleration_loss`: a smoothness penalty, the training counterpart of the ACC metric
  (pipeline/evaluate/metrics.py `acceleration`): second differences of root-relative joints within the clip.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pipeline.models.rotations import matrix_to_quaternion

# S²HAND(V) §4.3: w_quat = 0.05, w_ts = 0.01 relative to w_3d = 1 (finetune_eval.md §4.1). They were tuned for a
# self-supervised loss scale and are starting points under full 3D supervision (§4.4: re-tune by its overfit-and-
# equalise method). accel (ours): the loss is about the predictions' ACC (a few mm per frame² = ~0.005 m near
# convergence), the size of the per-coordinate 3D L1 term, so 0.1 makes it a regulariser an order below it.
TEMPORAL_WEIGHTS = {"motion": 0.05, "shape": 0.01, "accel": 0.1}
_TINY = 1e-12  # squared sine below which the relative rotation counts as the identity (angle and gradient 0)


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖ over the last dim with a zero (not NaN) gradient at x = 0, where a constant prediction sits."""
    sq = (x * x).sum(-1)
    small = sq < _TINY
    return torch.where(small, 0.0, torch.sqrt(torch.where(small, 1.0, sq)))


def quaternion_angle(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """Geodesic angle [...] in [0, π] between unit quaternions [..., 4] (w, x, y, z): γ = 2·atan2(‖vec r‖,
    |scalar r|), r = q_b q_a⁻¹ (finetune_eval.md §4.4: the stable form of 2·arccos|q_a·q_b|; the absolute value
    makes q and -q, the same rotation, give the same angle)."""
    wa, va = qa[..., 0], qa[..., 1:]
    wb, vb = qb[..., 0], qb[..., 1:]
    scalar = wa * wb + (va * vb).sum(-1)
    vector = wa[..., None] * vb - wb[..., None] * va - torch.linalg.cross(vb, va, dim=-1)
    return 2 * torch.atan2(_safe_norm(vector), scalar.abs())


def quaternion_motion_loss(rotmat: torch.Tensor) -> torch.Tensor:
    """S²HAND(V)'s quaternion motion loss on rotmat [B, T, J, 3, 3] (MANO: J = 16, global orientation first, as the
    head predicts them): mean over clips and joints of Σ_i γ_j(H_i, H_{i+1}) - γ_j(H_1, H_T) in radians
    (finetune_eval.md §4.4: L1 over joints, mean rather than sum so the weight does not depend on J).
    The time-coherent augmentation rotates every frame's global orientation by the same Rz, which leaves every
    relative angle, and so the loss, unchanged."""
    q = matrix_to_quaternion(rotmat)
    steps = quaternion_angle(q[:, :-1], q[:, 1:]).sum(1)
    return (steps - quaternion_angle(q[:, 0], q[:, -1])).mean()


def shape_consistency_loss(betas: torch.Tensor) -> torch.Tensor:
    """Shape half of S²HAND(V)'s T&S consistency on betas [B, T, 10]: mean over clips and frames of
    ‖β_i - mean_clip(β)‖₁ (finetune_eval.md §4.4: L1 summed over the 10 coefficients)."""
    return (betas - betas.mean(1, keepdim=True)).abs().sum(-1).mean()


def acceleration_loss(joints: torch.Tensor, root: int = 0) -> torch.Tensor:
    """Mean Euclidean norm of the acceleration of joints [B, T, K, 3] centred on the root joint (global motion
    removed, as the ACC metric does): a_t = X_{t-1} - 2 X_t + X_{t+1}, t = 1 .. T-2 within each clip, over every
    joint but the root (identically zero), in the joints' unit per (sampled) frame². Zero for constant velocity;
    0 with a graph for T < 3. Euclidean rather than squared: the ACC metric itself, and robust to a bad frame."""
    x = joints - joints[:, :, root:root + 1]
    keep = torch.arange(x.shape[2], device=x.device) != root
    a = (x[:, :-2] - 2 * x[:, 1:-1] + x[:, 2:])[:, :, keep]
    return _safe_norm(a).mean() if a.shape[1] else joints.sum() * 0.0


def temporal_loss(weights: Mapping[str, float], rotmat: torch.Tensor | None = None,
                  betas: torch.Tensor | None = None, joints: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The terms with a non-zero weight, unweighted, as {motion, shape, accel}, and `total` (their weighted sum).
    weights: keys of TEMPORAL_WEIGHTS, a missing key is off. rotmat/betas (MANO head only) and joints are the
    [B, T, ...] inputs of the functions above; a term without its input is skipped (at least one is given)."""
    inputs = {"motion": (quaternion_motion_loss, rotmat), "shape": (shape_consistency_loss, betas),
              "accel": (acceleration_loss, joints)}
    unknown = set(weights) - inputs.keys()
    if unknown:
        raise ValueError(f"unknown temporal loss(es) {sorted(unknown)}; known: {sorted(inputs)}")
    zero = next(x for _, x in inputs.values() if x is not None).new_zeros(())
    terms = {name: fn(x) for name, (fn, x) in inputs.items() if weights.get(name, 0.0) and x is not None}
    return {**terms, "total": sum((weights[k] * v for k, v in terms.items()), zero)}
