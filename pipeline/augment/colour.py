"""Appearance parameters as a fixed-length vector, and the fused colour matrix both executors apply.

Vector layout (APPEARANCE_SIZE = 9):
    0-2 channel gains (R, G, B)      TempCLR "channel noise", factor per channel
    3   Sobel flag (0/1)             gradient magnitude of the luma, kernel 3, applied last
    4   colour-drop flag (0/1)       luma replicated to R, G, B
    5   hue rotation (radians)       rotation of the chroma plane (YIQ) about the grey axis
    6   saturation factor            chroma scaled by this factor (luma kept)
    7   brightness gain a            v -> a v + b
    8   brightness offset b          in grey levels (0..255)

Every op except Sobel is affine in RGB, so they fuse into one 3x4 matrix:
    M = D · diag(gains) · a · S · H,   offset = D · diag(gains) · b · 1
(H hue rotation, S saturation, D colour drop or identity), applied as out = M[:, :3] v + M[:, 3], then
clipped to [0, 255]. With the Sobel flag the image becomes |∇ luma| / 4 (clipped), luma taken from the
unclipped colour-transformed pixels, borders reflected (cv2 BORDER_REFLECT_101).
"""

from __future__ import annotations

import math

import numpy as np

APPEARANCE_SIZE = 9
LUMA = np.array([0.299, 0.587, 0.114])
SOBEL_SCALE = 0.25  # |∇| of a 0..255 step reaches 4 * 255: bring it back to the grey-level range
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)


def identity_appearance() -> np.ndarray:
    return np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])


def colour_matrix(p: np.ndarray) -> np.ndarray:
    """3x4 affine colour map of an appearance vector (the Sobel flag is not part of it)."""
    c, s = math.cos(p[5]), math.sin(p[5])
    hue = _YIQ_INV @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) @ _YIQ
    sat = p[6] * np.eye(3) + (1.0 - p[6]) * np.outer(np.ones(3), LUMA)
    drop = np.outer(np.ones(3), LUMA) if p[4] >= 0.5 else np.eye(3)
    pre = drop @ np.diag(p[0:3])
    return np.hstack([pre @ (p[7] * sat @ hue), (pre @ np.full(3, p[8]))[:, None]])
