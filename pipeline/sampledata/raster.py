"""A CPU rasteriser for one closed-ish triangle mesh: back faces culled, the rest painted far to near.

Painter's order by face centroid depth is approximate (a large face can sort wrongly against a small one in
front of it) but right for a hand's small faces at these sizes, and costs one OpenCV polygon fill per front face
(~1 ms for MANO's 1538 faces), so a clip renders at video rates on one core with no GPU and no
renderer dependency. Faces are flat-shaded (Lambert + ambient), which makes self-occlusion and the hand's
orientation visible in the pixels. Camera: OpenCV axes (x right, y down, z forward), at the origin.
"""

from __future__ import annotations

import cv2
import numpy as np

SUBPIXEL_BITS = 4  # cv2 fill with fractional vertex positions (1/16 px)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F, 3] unit normals, outward for a mesh whose faces wind counter-clockwise seen from outside."""
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    n = np.cross(v1 - v0, v2 - v0)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def front_facing(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F] bool: the face's outward normal points towards the camera at the origin."""
    normals = face_normals(verts, faces)
    return np.einsum("ij,ij->i", normals, verts[faces[:, 0]]) < 0


def project_points(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[N, 2] pixel coordinates of camera-frame points (z > 0)."""
    p = points @ K.T
    return p[:, :2] / p[:, 2:3]


def shade(normals: np.ndarray, albedo: np.ndarray, light: np.ndarray, ambient: float) -> np.ndarray:
    """[F, 3] colours in 0..255: albedo x (ambient + (1 - ambient) max(0, n . l)), `light` pointing from the
    surface towards the light."""
    lam = np.clip(normals @ (light / np.linalg.norm(light)), 0.0, None)
    return np.clip(albedo * (ambient + (1.0 - ambient) * lam)[:, None], 0, 255)


def paint_mesh(image: np.ndarray, verts: np.ndarray, faces: np.ndarray, K: np.ndarray,
               colours: np.ndarray) -> np.ndarray:
    """Paint the front faces of `verts` (camera frame) into `image` (H x W x C, in place), far to near, face f in
    colours[f]. Returns the [F] bool mask of faces painted."""
    front = front_facing(verts, faces) & (verts[faces][..., 2] > 0).all(axis=1)
    order = np.flatnonzero(front)
    depth = verts[faces[order]][..., 2].mean(axis=1)
    order = order[np.argsort(-depth, kind="stable")]
    uv = project_points(K, verts)
    pts = np.round(uv[faces[order]] * (1 << SUBPIXEL_BITS)).astype(np.int32)
    fill = colours[order].tolist()
    for poly, colour in zip(pts, fill, strict=True):
        cv2.fillConvexPoly(image, poly, colour, cv2.LINE_8, SUBPIXEL_BITS)
    return front
