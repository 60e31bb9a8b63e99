"""Pure camera and crop geometry shared by the readers and the sharder.

Pixel convention everywhere: pixel (row i, column j) has its centre at (x=j, y=i), as in OpenCV's resize
and warpAffine and in the datasets' projected keypoints.
"""

from __future__ import annotations

import cv2
import numpy as np

# HO-3D and MANO joint order -> FreiHAND order (wrist, thumb 1-4, index 1-4, middle, ring, pinky).
MANO_TO_FREIHAND = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
# OpenGL camera (hand on -z) -> OpenCV camera (+z forward).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def project(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pinhole projection uv = K (X / Z) of N x 3 camera points."""
    p = points @ np.asarray(K, dtype=np.float64).T
    return p[:, :2] / p[:, 2:3]


def rotate_global_orient(pose: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Left-multiply the global (first 3) axis-angle of a MANO pose by rotation R."""
    out = np.array(pose, dtype=np.float64).copy()
    glob, _ = cv2.Rodrigues(out[:3].reshape(3, 1))
    vec, _ = cv2.Rodrigues(R @ glob)
    out[:3] = vec.ravel()
    return out


def crop_transform(x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """3x3 map from source pixels to a size x size crop of the square [x0, x0+side) x [y0, y0+side).

    With pixel centres at integers, cv2.resize maps source coordinate u to (u - x0 + 0.5) * s - 0.5.
    """
    s = size / side
    return np.array([[s, 0.0, (0.5 - x0) * s - 0.5], [0.0, s, (0.5 - y0) * s - 0.5], [0.0, 0.0, 1.0]])


def mirror_transform(size: int) -> np.ndarray:
    """3x3 horizontal flip of a size-wide image: u -> size - 1 - u."""
    return np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def apply_points(T: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return uv @ T[:2, :2].T + T[:2, 2]


def apply_box(T: np.ndarray, box: tuple[float, float, float, float]) -> list[float]:
    """Axis-aligned image of a box under a scale/translation/flip transform."""
    corners = apply_points(T, np.array([[box[0], box[1]], [box[2], box[3]]], dtype=np.float64))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]


def mirror_camera(K: np.ndarray, kp3d: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Intrinsics and 3D points for the horizontally mirrored image.

    Negating X in the camera frame and flipping the image agree when K' = F K diag(-1, 1, 1), where F is
    the image flip: projecting the mirrored points with K' gives the mirrored pixels.
    """
    K2 = mirror_transform(size) @ K @ np.diag([-1.0, 1.0, 1.0])
    pts = None if kp3d is None else kp3d * np.array([-1.0, 1.0, 1.0])
    return K2, pts


def mirror_mano_pose(pose: np.ndarray) -> np.ndarray:
    """Left-hand MANO axis-angles to the right-hand convention: (x, y, z) -> (x, -y, -z) per joint."""
    return (np.asarray(pose, dtype=np.float64).reshape(-1, 3) * np.array([1.0, -1.0, -1.0])).ravel()
