"""Worker-side executor (CPU-bound runs): warpAffine on 4-channel RGBX (cv2's fast SIMD path) and one
fused colour matrix through `cv2.transform`, written straight into the batch's output slot."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.augment.colour import LUMA, SOBEL_SCALE, colour_matrix


def single_threaded() -> None:
    """One process = one core (a loader worker, a sharder worker): cv2's own thread pool would oversubscribe.
    Called where such processes start (a spawned sharder worker; the loader's process before it forks its
    workers, which inherit the setting), never at import."""
    cv2.setNumThreads(1)


def warp_frame(rgbx: np.ndarray, affine: np.ndarray, appearance: np.ndarray, out: np.ndarray,
               fill: int = 0) -> None:
    """rgbx uint8 [S, S, 4] slot -> out uint8 [O, O, 3] augmented (same spec as the torch executor)."""
    o = out.shape[0]
    warped = cv2.warpAffine(rgbx, affine.astype(np.float64), (o, o),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(fill, fill, fill, fill))
    m = colour_matrix(appearance)
    m5 = np.zeros((3, 5))
    m5[:, :3], m5[:, 4] = m[:, :3], m[:, 3]
    if appearance[3] < 0.5:
        cv2.transform(warped, m5, dst=out)
        return
    luma = cv2.transform(warped.astype(np.float32), (LUMA @ m5)[None])
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    mag = cv2.magnitude(gx, gy) * SOBEL_SCALE
    out[...] = np.clip(np.rint(mag), 0, 255).astype(np.uint8)[..., None]
