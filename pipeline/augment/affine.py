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

import numpy as np


def view_affine(hand_boxes: np.ndarray, offsets: np.ndarray, out_size: int, margin: float,
                geometry: np.ndarray) -> np.ndarray:
    """[V, 2, 3] float64 maps from output pixel centres to slot pixel centres, one per view.

    hand_boxes [V, 4] edge coordinates in the stored crop; offsets [V, 2] where each stored crop's (0, 0)
    pixel lies in the fixed-size slot (non-zero when a crop smaller than the slot, e.g. HanCo's 224²
    originals, is centred in a 256² slot); geometry [V, 4] = (angle, scale, tx, ty).
    """
    boxes = np.asarray(hand_boxes, dtype=np.float64)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not ((w > 0) & (h > 0)).all():
        raise ValueError(f"degenerate hand box in {boxes.tolist()}")
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - 0.5 + np.asarray(offsets, dtype=np.float64)
    geometry = np.asarray(geometry, dtype=np.float64)
    angle, scale, t = geometry[:, 0], geometry[:, 1], geometry[:, 2:4]
    k = margin * np.maximum(w, h) / (out_size * scale)
    c, s = k * np.cos(angle), k * np.sin(angle)
    A = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1)
    b = centre - np.einsum("vij,vj->vi", A, (out_size - 1) / 2 + t * out_size)
    return np.concatenate([A, b[:, :, None]], axis=2)
