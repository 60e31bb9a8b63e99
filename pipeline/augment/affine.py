"""The one function that maps output-crop pixels to stored-crop pixels for a view.

Pixel centres sit at integer coordinates (docs/design.md §6); hand boxes are edge coordinates
(pixel j spans [j, j+1]). The forward map (stored -> output) is

    out = (1 / k) R(angle) (x - c) + o + t * O,    k = side / (O * scale),  o = (O - 1) / 2,

with c the hand-box centre, side = margin * max(box width, box height), O the output size and t the
translation as a fraction of O. R(a) = [[cos a, -sin a], [sin a, cos a]] acts on (x, y) image coordinates
(y down). The returned matrix is its inverse, x = c + k R(-angle) (out - o - t * O), which is what
`grid_sample` and `cv2.warpAffine(..., WARP_INVERSE_MAP)` consume.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def view_affine(hand_box: Sequence[float], offset: tuple[float, float], out_size: int, margin: float,
                angle: float = 0.0, scale: float = 1.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """2x3 float64 map from output pixel centres to slot pixel centres.

    `offset` is where the stored crop's (0, 0) pixel lies in the fixed-size slot (non-zero when a stored
    crop smaller than the slot, e.g. HanCo's 224² originals, is centred in a 256² slot).
    """
    x0, y0, x1, y1 = (float(v) for v in hand_box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"degenerate hand box {tuple(hand_box)}")
    cx = (x0 + x1) / 2 - 0.5 + offset[0]
    cy = (y0 + y1) / 2 - 0.5 + offset[1]
    k = margin * max(x1 - x0, y1 - y0) / (out_size * scale)
    c, s = math.cos(angle), math.sin(angle)
    A = k * np.array([[c, s], [-s, c]])
    o = (out_size - 1) / 2
    b = np.array([cx, cy]) - A @ np.array([o + tx * out_size, o + ty * out_size])
    return np.hstack([A, b[:, None]])


def view_affines(hand_boxes: np.ndarray, offsets: np.ndarray, out_size: int, margin: float,
                 geometry: np.ndarray) -> np.ndarray:
    """`view_affine` for V views at once: boxes [V, 4], slot offsets [V, 2], geometry [V, 4] -> [V, 2, 3]."""
    boxes = np.asarray(hand_boxes, dtype=np.float64)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not ((w > 0) & (h > 0)).all():
        raise ValueError(f"degenerate hand box in {boxes.tolist()}")
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - 0.5 + offsets
    angle, scale, t = geometry[:, 0], geometry[:, 1], geometry[:, 2:4]
    k = margin * np.maximum(w, h) / (out_size * scale)
    c, s = k * np.cos(angle), k * np.sin(angle)
    A = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1)
    b = centre - np.einsum("vij,vj->vi", A, (out_size - 1) / 2 + t * out_size)
    return np.concatenate([A, b[:, :, None]], axis=2)
