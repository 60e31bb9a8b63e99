"""PeCLR's 2.5D keypoint representation, root-depth recovery and 3D reconstruction (docs: finetune_eval.md §6).

Joint order is FreiHAND's (0 wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20). The PeCLR
thesis (Fig. 3.1, eq. 3.4) numbers the palm 0 and the index MCP 2; here the root is the wrist (0) and the scale
bone is wrist -> index MCP (0 -> 5), finetune_eval.md §9 #8. Cameras are OpenCV pinholes (x right, y down,
z forward) in metres; uv are pixels of the image K belongs to (pixel centres at integers, pipeline/geometry.py).

2.5D of a hand: uv_i = projection of p_i; z̃_i = (z_i - z_root) / s with s = ‖p_5 - p_0‖ (scale-free, so the
same 2.5D describes the hand at any size and proportionally scaled distance).
"""

from __future__ import annotations

import torch

ROOT, SCALE_BONE = 0, (0, 5)


def camera_rays(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Normalised camera coordinates K⁻¹ (u, v, 1)ᵀ: uv [B, J, 2] px, K [B, 3, 3] -> [B, J, 3] (z = 1)."""
    homog = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    return homog @ torch.linalg.inv(K).transpose(-1, -2)


def to_25d(kp3d: torch.Tensor, K: torch.Tensor, bone: tuple[int, int] = SCALE_BONE,
           root: int = ROOT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kp3d [B, J, 3] camera frame (metres), K [B, 3, 3] -> uv [B, J, 2] px, z_rel [B, J] = (z - z_root) / s,
    s [B] = the bone's length (metres)."""
    p = kp3d @ K.transpose(-1, -2)
    uv = p[..., :2] / p[..., 2:]
    s = torch.linalg.vector_norm(kp3d[:, bone[1]] - kp3d[:, bone[0]], dim=-1)
    z_rel = (kp3d[..., 2] - kp3d[:, root, 2:3]) / s[:, None]
    return uv, z_rel, s


def root_depth(uv: torch.Tensor, z_rel: torch.Tensor, K: torch.Tensor, bone: tuple[int, int] = SCALE_BONE,
               bone_length: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Depth [B] of the reference of z_rel (the wrist, whose z_rel is 0) from 2.5D, in the unit of bone_length
    (1.0: in bone lengths; the GT bone in metres: metres).

    Iqbal et al.'s quadratic a Z² + b Z + c = 0 from ‖P_n - P_m‖ = 1 with P_i = (Z + z̃_i) x̄_i, written with
    the two corrections of finetune_eval.md §6: x̄_i = K⁻¹ (u_i, v_i, 1)ᵀ (normalised camera coordinates, not
    pixels) and c = (x̄_n z̃_n - x̄_m z̃_m)² + (ȳ_n z̃_n - ȳ_m z̃_m)² + (z̃_n - z̃_m)² - 1 (+, not the thesis' -).
    The larger (+sqrt) root is returned, as in the thesis; it is evaluated in the cancellation-free form.

    Limits: the + root is the true depth iff (x̄_n - x̄_m)·(P_n - P_m) >= 0; it fails only for a scale bone
    pointing nearly along the viewing ray of an off-axis hand, where both roots fit the 2.5D exactly (the
    ambiguity is inherent). A negative discriminant (noisy predictions) is clamped to 0; a -> 0 (bone along
    the ray) gives huge or non-finite depths: callers feeding predictions must sanitise (KeypointHead25D does).
    """
    m, n = bone
    ray = camera_rays(uv[:, [m, n]], K)
    xm, ym, xn, yn = ray[:, 0, 0], ray[:, 0, 1], ray[:, 1, 0], ray[:, 1, 1]
    zm, zn = z_rel[:, m], z_rel[:, n]
    a = (xn - xm) ** 2 + (yn - ym) ** 2
    b = 2 * (zn * (xn * xn + yn * yn - xn * xm - yn * ym) + zm * (xm * xm + ym * ym - xn * xm - yn * ym))
    c = (xn * zn - xm * zm) ** 2 + (yn * zn - ym * zm) ** 2 + (zn - zm) ** 2 - 1
    sq = torch.sqrt(torch.clamp(b * b - 4 * a * c, min=0))
    # (-b + sq) / 2a, rewritten as 2c / (-b - sq) when b >= 0 to avoid subtracting nearly equal numbers
    z = torch.where(b >= 0, 2 * c / (-b - sq), (-b + sq) / (2 * a))
    return z * bone_length


def reconstruct_3d(uv: torch.Tensor, z_rel: torch.Tensor, z_root: torch.Tensor, K: torch.Tensor,
                   scale: float | torch.Tensor) -> torch.Tensor:
    """Metric camera-frame joints [B, J, 3]: z_i = z_root + s·z̃_i, p_i = z_i K⁻¹ (u_i, v_i, 1)ᵀ (PeCLR eq. 6).
    z_root [B] and scale (float or [B]) in metres."""
    scale = torch.as_tensor(scale, dtype=z_rel.dtype, device=z_rel.device)
    z = z_root[:, None] + scale.reshape(-1, 1) * z_rel
    return z[..., None] * camera_rays(uv, K)
