"""Supervised fine-tuning losses with per-term label masks.

A target entry counts only when it is finite and its sample is `labelled`: a frame without MANO fits (NaN
pose/betas) still trains the keypoint terms, and an unlabelled frame trains nothing. Each term is the mean over
its valid scalar entries (nn.L1Loss / nn.MSELoss style, so a weight is per coordinate); a term with no valid
entry is an exact 0 that is still attached to the prediction's graph, with zero (never NaN) gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from pipeline.models.rotations import axis_angle_to_matrix

# TempCLR gives no λ (finetune_eval.md §1.1); §9 #1 proposes 1/1/1 as the starting point with 2D in normalised
# crop coordinates and 3D root-relative in metres. Per-coordinate means put the terms on similar scales near
# convergence (2 px at 224 ≈ 0.018; 3D ≈ 0.005-0.01 m; rotation-matrix MSE ≈ 0.01 at ~10° per joint), so none
# dominates by orders of magnitude; rebalance on the validation split and record the choice (§9 #1).
MANO_WEIGHTS = {"joints2d": 1.0, "joints3d": 1.0, "pose": 1.0, "betas": 1.0}
# PeCLR thesis eq. 4.14 (α = 5 on depth); refinement weight 1 from PeCLR issue #9 (finetune_eval.md §1.2, §9 #8).
KEYPOINT25D_WEIGHTS = {"uv": 1.0, "z_rel": 5.0, "z_root": 1.0}


def _masked_mean(err: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], pred: torch.Tensor,
                 target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    valid = torch.isfinite(target)
    if mask is not None:
        valid = valid & mask.reshape(*mask.shape, *(1,) * (target.dim() - mask.dim())).to(torch.bool)
    # NaN targets are replaced before the difference: where() alone would still back-propagate NaN × 0
    e = torch.where(valid, err(pred, torch.where(valid, target, torch.zeros_like(target))), 0.0)
    return e.sum() / valid.sum().clamp(min=1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred - target| over entries with a finite target and a true mask. mask is bool, broadcast over the
    trailing dims ([B] per sample, [B, 21] per joint, ...). No valid entry: 0 with zero gradient."""
    return _masked_mean(lambda p, t: (p - t).abs(), pred, target, mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (pred - target)² under the same masking as `masked_l1`."""
    return _masked_mean(lambda p, t: (p - t) ** 2, pred, target, mask)


def _weighted(terms: dict[str, torch.Tensor], weights: Mapping[str, float]) -> dict[str, torch.Tensor]:
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def mano_loss(stage: Mapping[str, torch.Tensor], joints2d: torch.Tensor, joints3d: torch.Tensor,
              targets: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None
              ) -> dict[str, torch.Tensor]:
    """TempCLR's λ2D·L1(2D) + λ3D·L1(3D) + λΘ·L2²({θ, β}) on one (the last) regressor stage.

    stage: a `MANORegressor` output dict (rotmat [B, 16, 3, 3], betas [B, 10]); joints2d [B, 21, 2] predicted
    joints after `weak_perspective` (normalised crop coordinates); joints3d [B, 21, 3] predicted, root-relative
    (metres). targets: joints2d [B, 21, 2] normalised crop coordinates, joints3d [B, 21, 3] metres (root-centred
    on joint 0 here, a no-op if already root-relative), pose [B, 48] or [B, 16, 3] MANO axis-angle (global
    first), betas [B, 10], labelled [B] bool; NaN marks an absent label. The pose term compares rotation
    matrices (§9 #3). weights: keys joints2d, joints3d, pose, betas (default MANO_WEIGHTS; λΘ = pose and betas).
    Returns each term and `total`.
    """
    w = {**MANO_WEIGHTS, **(weights or {})}
    lab = targets["labelled"]
    gt3d = targets["joints3d"] - targets["joints3d"][:, :1]
    gt_rot = axis_angle_to_matrix(targets["pose"].reshape(len(lab), -1, 3))
    return _weighted({
        "joints2d": masked_l1(joints2d, targets["joints2d"], lab),
        "joints3d": masked_l1(joints3d, gt3d, lab),
        "pose": masked_mse(stage["rotmat"], gt_rot, lab),
        "betas": masked_mse(stage["betas"], targets["betas"], lab),
    }, w)


def keypoint25d_loss(pred: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                     weights: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """PeCLR's L1(2D) + 5·L1(z_rel) (thesis eq. 4.14), + L1(z_root) (eq. 3.12) when both `pred` and `targets`
    carry z_root.

    pred: a `KeypointHead25D` output; targets: uv [B, 21, 2] normalised crop coordinates, z_rel [B, 21] (bone
    lengths), optional z_root [B] wrist depth in bone lengths (z_wrist / s, see `to_25d`), labelled [B] bool;
    NaN marks an absent label. weights: keys uv, z_rel, z_root (default KEYPOINT25D_WEIGHTS). Returns each term
    and `total`.
    """
    w = {**KEYPOINT25D_WEIGHTS, **(weights or {})}
    lab = targets["labelled"]
    terms = {"uv": masked_l1(pred["uv"], targets["uv"], lab), "z_rel": masked_l1(pred["z_rel"], targets["z_rel"], lab)}
    if "z_root" in pred and "z_root" in targets:
        terms["z_root"] = masked_l1(pred["z_root"], targets["z_root"], lab)
    return _weighted(terms, w)
