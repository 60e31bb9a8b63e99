"""The sample data's labelled hands: the synthetic MANO model (`pipeline.models.mano_synthetic`) posed with smplx.

Every FreiHAND and HO-3D sample hand is one forward pass, so its joints, vertices and MANO parameters agree as in
the real datasets, and tests can re-pose the written parameters on their own. Computed in float64: what the
generator writes is the ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from pipeline.models.mano import build_mano_layer, mano_joints21

FINGER_SIGMA = 0.2  # rad, per finger axis-angle component: small, so hands stay plausible
SHAPE_SIGMA = 0.5  # beta ~ N(0, 0.5)
TURN_SIGMA = 0.3  # rad, per component of the rotation a clip's hand turns through


@dataclass
class Hands:
    """N posed hands in the camera frame (OpenCV axes), joints in FreiHAND order."""

    pose: np.ndarray  # [N, 48] axis-angle: global orientation, then the 15 finger joints
    shape: np.ndarray  # [N, 10]
    trans: np.ndarray  # [N, 3] added to the MANO output (smplx `transl`)
    joints: np.ndarray  # [N, 21, 3] metres
    verts: np.ndarray  # [N, 778, 3] metres


class HandModel:
    """A MANO model posed in batches; one smplx layer per flat_hand_mean convention, built when first used."""

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        self.arrays = arrays
        self._layers: dict[bool, Any] = {}

    def _layer(self, flat_hand_mean: bool):
        if flat_hand_mean not in self._layers:
            self._layers[flat_hand_mean] = build_mano_layer(self.arrays, flat_hand_mean=flat_hand_mean).double()
        return self._layers[flat_hand_mean]

    def forward(self, pose: np.ndarray, shape: np.ndarray, *, flat_hand_mean: bool,
                tips: str) -> tuple[np.ndarray, np.ndarray]:
        """Joints [N, 21, 3] (FreiHAND order, `tips` convention) and vertices [N, 778, 3] at zero translation."""
        pose, shape = torch.as_tensor(pose, dtype=torch.float64), torch.as_tensor(shape, dtype=torch.float64)
        with torch.no_grad():
            out = self._layer(flat_hand_mean)(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=shape,
                                              transl=torch.zeros(len(pose), 3, dtype=torch.float64))
        return mano_joints21(out, tips).numpy(), out.vertices.numpy()

    def place(self, pose: np.ndarray, shape: np.ndarray, centres: np.ndarray, *, flat_hand_mean: bool,
              tips: str) -> Hands:
        """Hands translated so that their joints' centroid lies at a centre's x, y and the wrist at its depth z:
        centred in the image, at a chosen distance."""
        joints, verts = self.forward(pose, shape, flat_hand_mean=flat_hand_mean, tips=tips)
        trans = np.concatenate([centres[:, :2] - joints.mean(axis=1)[:, :2], centres[:, 2:] - joints[:, 0, 2:]], 1)
        return Hands(np.asarray(pose, np.float64), np.asarray(shape, np.float64), trans,
                     joints + trans[:, None], verts + trans[:, None])


def random_params(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pose [n, 48] (uniformly random global orientation, small finger rotations) and shape [n, 10]."""
    orient = Rotation.from_quat(rng.normal(size=(n, 4))).as_rotvec()  # normalised: uniform on the sphere
    fingers = rng.normal(0.0, FINGER_SIGMA, (n, 45))
    return np.concatenate([orient, fingers], axis=1), rng.normal(0.0, SHAPE_SIGMA, (n, 10))


def clip_params(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth clip of one hand: the fingers blend from one random pose to another while the hand turns
    steadily about a random axis; the shape stays."""
    (start, end), shape = random_params(rng, 2)
    s = np.linspace(0.0, 1.0, frames)[:, None]
    turn = Rotation.from_rotvec(s * rng.normal(0.0, TURN_SIGMA, 3))
    orient = (Rotation.from_rotvec(start[:3]) * turn).as_rotvec()
    fingers = (1 - s) * start[3:] + s * end[3:]
    return np.concatenate([orient, fingers], axis=1), np.repeat(shape[:1], frames, axis=0)
