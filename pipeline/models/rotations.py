"""Pure, batched rotation conversions in torch (any leading dims, any float dtype, differentiable).

Conventions: rotation matrices act on column vectors (p' = R p); axis-angle is the rotation vector
θ·axis (radians), as in MANO poses and cv2.Rodrigues. The 6D representation (Zhou et al., CVPR 2019) is the
first two COLUMNS of R stored row-major, i.e. `R[..., :, :2].reshape(..., 6)` = (R00, R01, R10, R11, R20, R21),
as in ExPose/TempCLR's `cont_rot_repr`: the identity is (1, 0, 0, 1, 0, 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SMALL = 1e-12  # squared angle / squared sine below which the series expansions are used


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt on the two stored columns; the third is their cross product,
    so the result is orthonormal with det +1 for any input whose columns are not parallel."""
    a = x.reshape(*x.shape[:-1], 3, 2)
    b1 = F.normalize(a[..., 0], dim=-1)
    b2 = F.normalize(a[..., 1] - (b1 * a[..., 1]).sum(-1, keepdim=True) * b1, dim=-1)
    return torch.stack([b1, b2, torch.linalg.cross(b1, b2, dim=-1)], dim=-1)


def matrix_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 6]: the first two columns, row-major (the inverse of `rot6d_to_matrix` on SO(3))."""
    return R[..., :, :2].reshape(*R.shape[:-2], 6)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [..., 3, 3] with skew(v) p = v × p."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape, 3)


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: [..., 3] -> [..., 3, 3], R = I + (sin θ / θ) [v]× + ((1 - cos θ) / θ²) [v]×², with series
    expansions near θ = 0 so the value and its gradient stay finite at the identity (MANO's rest pose)."""
    t2 = (v * v).sum(-1)
    small = t2 < _SMALL
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, 2 * torch.sin(t / 2) ** 2 / (t * t))  # 1 - cos θ = 2 sin²(θ/2)
    k = _skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> unit quaternion (w, x, y, z) [..., 4] with w >= 0.

    The symmetric matrix Q = 4 q qᵀ is linear in R; its row with the largest diagonal entry (>= 1 for a
    rotation) divided by 2·sqrt(that entry) gives ±q without cancellation at any angle, including θ = π.
    """
    m = R.unbind(-1)  # m[j][..., i] = R[..., i, j]
    r00, r10, r20 = m[0].unbind(-1)
    r01, r11, r21 = m[1].unbind(-1)
    r02, r12, r22 = m[2].unbind(-1)
    q = torch.stack([
        torch.stack([1 + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01], -1),
        torch.stack([r21 - r12, 1 + r00 - r11 - r22, r10 + r01, r02 + r20], -1),
        torch.stack([r02 - r20, r10 + r01, 1 - r00 + r11 - r22, r12 + r21], -1),
        torch.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], -1),
    ], -2)
    best = torch.diagonal(q, dim1=-2, dim2=-1).argmax(-1)
    row = torch.gather(q, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = row / (2 * torch.sqrt(torch.gather(row, -1, best[..., None])))
    return torch.where(quat[..., :1] < 0, -quat, quat)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 3] with angle in [0, π] (via the quaternion; at exactly π, ±v are equivalent)."""
    quat = matrix_to_quaternion(R)
    w, xyz = quat[..., 0], quat[..., 1:]
    s2 = (xyz * xyz).sum(-1)
    small = s2 < _SMALL
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    factor = torch.where(small, 2 / w, 2 * torch.atan2(s, w) / s)  # θ / sin(θ/2); θ = 2·atan2(sin(θ/2), cos(θ/2))
    return xyz * factor[..., None]


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """[...] angles (radians) -> [..., 3, 3] rotations about the camera z-axis (OpenCV camera: x right, y down,
    z forward). With fx = fy, rotating camera-frame points by rotation_z(a) rotates their projections by
    R(a) = [[cos, -sin], [sin, cos]] about the principal point, the image rotation of pipeline/augment/affine.py."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, i = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, o, s, c, o, o, o, i], -1).reshape(*angle.shape, 3, 3)


def rotate_points_z(points: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Camera-frame points [..., K, 3] rotated about the camera z-axis by angle [...] (see `rotation_z`)."""
    return points @ rotation_z(angle.to(points.dtype)).transpose(-1, -2)


def rotate_orient_z(orient: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """A global orientation [..., 3, 3] (object -> camera) after rotating the camera-frame scene about z by
    angle [...]: rotation_z(angle) @ orient, the left-multiplication that keeps the mesh and
    `rotate_points_z` of its joints consistent."""
    return rotation_z(angle.to(orient.dtype)) @ orient
