"""Procedural frames for the sample datasets: a textured background and a drawn hand skeleton.

The wrist is marked by a pure-green disc so tests can find it in stored crops independently of the
labels (an honest check of the crop geometry).
"""

from __future__ import annotations

import cv2
import numpy as np

WRIST_MARK = (0, 255, 0)
# Finger directions (degrees in the palm plane) and bone lengths in metres, FreiHAND order.
_FINGERS = [(-60.0, [0.035, 0.03, 0.025, 0.02]), (-20.0, [0.08, 0.04, 0.025, 0.02]),
            (0.0, [0.08, 0.045, 0.028, 0.022]), (20.0, [0.075, 0.04, 0.026, 0.02]),
            (40.0, [0.07, 0.03, 0.02, 0.018])]
BONES = [(0, 1 + 4 * f) for f in range(5)] + [(1 + 4 * f + j, 2 + 4 * f + j) for f in range(5) for j in range(3)]


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth coloured noise: non-trivial for JPEG, different per seed."""
    small = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    stripes = (np.sin(np.arange(width) / (3 + rng.random() * 5)) * 20).astype(np.int16)
    img = np.clip(img.astype(np.int16) + stripes[None, :, None], 0, 255).astype(np.uint8)
    img[..., 1] = np.minimum(img[..., 1], 190)  # keep pure green for the wrist mark only
    return img


def hand_skeleton(t: float, phase: float = 0.0) -> np.ndarray:
    """21x3 joints (FreiHAND order) of a right hand in its own frame, fingers flexing smoothly with t."""
    joints = np.zeros((21, 3))
    flex = 0.35 + 0.25 * np.sin(2 * np.pi * (0.05 * t + phase))
    for f, (angle, lengths) in enumerate(_FINGERS):
        a = np.deg2rad(angle)
        direction = np.array([np.sin(a), -np.cos(a), 0.0])
        pos = np.zeros(3)
        bend = 0.0
        for j, length in enumerate(lengths):
            d = direction * np.cos(bend) + np.array([0.0, 0.0, -np.sin(bend)])
            pos = pos + d * length
            joints[1 + 4 * f + j] = pos
            bend += flex
    return joints


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def draw_hand(img: np.ndarray, uv: np.ndarray, box: tuple[float, float, float, float] | None = None) -> None:
    """Skin-coloured hand region at the box (if given), bones and joints at uv, green wrist mark."""
    if box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.ellipse(img, ((x1 + x2) // 2, (y1 + y2) // 2), (max(1, (x2 - x1) // 2), max(1, (y2 - y1) // 2)),
                    0, 0, 360, (224, 172, 150), -1)
    pts = np.round(uv).astype(int)
    for a, b in BONES:
        cv2.line(img, tuple(pts[a]), tuple(pts[b]), (150, 60, 40), 3)
    for p in pts[1:]:
        cv2.circle(img, tuple(p), 2, (250, 230, 90), -1)
    radius = max(3, int(0.06 * np.ptp(uv, axis=0).max()))  # stays visible after the crop's downscale
    cv2.circle(img, tuple(pts[0]), radius, WRIST_MARK, -1)


def find_mark(img: np.ndarray) -> np.ndarray | None:
    """Centroid (x, y) of the pure-green wrist mark in an RGB image, None when absent."""
    mask = (img[..., 1] > 200) & (img[..., 0] < 80) & (img[..., 2] < 80)
    if mask.sum() < 3:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])
