"""Labels of augmented views: the same geometry as its pixels, applied to 2D keypoints, intrinsics, 3D joints,
vertices and the MANO global orientation (fine-tuning). Batched over any leading dims (the stream transforms a
whole batch at once: per view, the small torch ops would cost more than decoding the frame); NumPy in,
float64 out, NaN stays NaN.

Convention (HMR / ExPose): the view's in-plane rotation by angle θ (`geometry[0]`, the R(θ) of
pipeline/augment/affine.py) is the rotation of the camera-frame scene about the camera's z-axis by the same θ,
Rz = `rotation_z(θ)` (OpenCV camera: x right, y down, z forward). 3D joints and vertices become Rz X; the MANO
global orientation (axis-angle, object -> camera) becomes Rz R_orient; articulation (pose[3:]) and shape are
unchanged (also under flat_hand_mean, whose mean pose offsets the articulation only). Scale and translation
of the crop change pixels and intrinsics only, never the metric 3D labels.
The shards store no MANO translation; one would become Rz (J0 + t) - J0 (MANO rotates about its root joint J0).

Intrinsics. Let T be the 3x3 map slot pixel -> output pixel (the inverse of the view's affine A): its linear
part is (1/k) R(θ), k the stored pixels per output pixel. A slot pixel is x ~ K X, so T x ~ T K X =
(T K Rzᵀ)(Rz X): K' = T K Rzᵀ projects the rotated points exactly onto the transformed 2D keypoints, whatever
K is. With fx = fy = f and no skew, R(θ) f I R(θ)ᵀ = f I and K' = [[f/k, 0, cx'], [0, f/k, cy'], [0, 0, 1]],
(cx', cy') = T (cx, cy): a pinhole matrix again (focal over k, principal point moved like any pixel). With
fx ≠ fy a rotated anisotropic pixel grid is no pinhole: K' still projects exactly, but its upper-left block is
R diag(fx, fy) Rᵀ / k, with off-diagonal (fx - fy) sin θ cos θ / k, so reading focal lengths off its diagonal
(fx cos²θ + fy sin²θ) / k is an approximation (relative error at most |fx - fy| / min(fx, fy)).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.models.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    rotate_orient_z,
    rotate_points_z,
    rotation_z,
)


def _angle(angle: np.ndarray | float) -> torch.Tensor:
    return torch.as_tensor(np.asarray(angle, dtype=np.float64))


def slot_to_output(affine: np.ndarray) -> np.ndarray:
    """[..., 3, 3] maps from slot pixel centres to output pixel centres: the inverses of the views' affines
    [..., 2, 3]."""
    affine = np.asarray(affine, dtype=np.float64)
    bottom = np.broadcast_to([0.0, 0.0, 1.0], (*affine.shape[:-2], 1, 3))
    return np.linalg.inv(np.concatenate([affine, bottom], axis=-2))


def transform_kp2d(kp2d: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[..., J, 2] slot pixels -> output pixels: exactly where the warp by `affine` [..., 2, 3] puts them."""
    T = slot_to_output(affine)
    return np.einsum("...ij,...kj->...ki", T[..., :2, :2], np.asarray(kp2d, dtype=np.float64)) + T[..., None, :2, 2]


def transform_intrinsics(K: np.ndarray, affine: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Slot-pixel K [..., 3, 3] -> K' = T K Rzᵀ of the output crop (module docstring: exact projection of the
    rotated 3D points; a pinhole matrix with focal f / k when fx = fy)."""
    Rz = rotation_z(_angle(angle)).numpy()
    return slot_to_output(affine) @ np.asarray(K, dtype=np.float64) @ np.swapaxes(Rz, -1, -2)


def rotate_points(points: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Camera-frame points [..., J, 3] rotated about the camera z-axis by angle [...]."""
    return rotate_points_z(torch.from_numpy(np.asarray(points, dtype=np.float64)), _angle(angle)).numpy()


def rotate_mano_pose(pose: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """MANO poses [..., 48] (axis-angle, global orientation first) with the global orientation left-multiplied
    by Rz(angle); the 15 articulation rotations are relative to their parents and do not change."""
    out = np.array(pose, dtype=np.float64)
    orient = axis_angle_to_matrix(torch.from_numpy(out[..., :3]))
    rotated = matrix_to_axis_angle(rotate_orient_z(orient, _angle(angle))).numpy()
    out[..., :3] = np.where(np.isfinite(out[..., :3]), rotated, np.nan)
    return out


def transform_labels(labels: dict[str, np.ndarray], affine: np.ndarray, angle: np.ndarray) -> dict[str, np.ndarray]:
    """Labels of views (2D and K in slot pixels, 3D in metres; leading dims [...] shared with affine [..., 2, 3]
    and angle [...]) -> the views' labels (2D and K in output pixels, 3D rotated with the image). Fields it does
    not know are left out, never passed through untransformed (a new 3D field would need its own rule)."""
    rules = {"kp2d": lambda x: transform_kp2d(x, affine), "K": lambda x: transform_intrinsics(x, affine, angle),
             "kp3d": lambda x: rotate_points(x, angle), "verts": lambda x: rotate_points(x, angle),
             "mano_pose": lambda x: rotate_mano_pose(x, angle), "mano_shape": lambda x: np.asarray(x, np.float64)}
    return {name: rules[name](value) for name, value in labels.items() if name in rules}
