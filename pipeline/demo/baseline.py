"""The floor of the demo's table: the mean hand, predicted for every test frame whatever the image.

The training sequences' mean articulation and shape, posed once (no global rotation: Procrustes alignment
supplies it); its PA-MPJPE / PA-MPVPE on the held-out sequences is what a model scores that learned nothing from
the pixels about the fingers. A fine-tuned model near it learned nothing; far below it, the world is learnable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.evaluate.metrics import auc_pck, mpjpe, mpvpe
from pipeline.geometry import MANO_TO_FREIHAND, OPENGL_TO_OPENCV
from pipeline.models.mano import load_mano
from pipeline.sampledata.posing import HandModel
from pipeline.sources.ho3d import mano_vertices
from pipeline.sources.safe_pickle import load_restricted

BASELINE_FILE = "baseline.json"


def _metas(root: Path) -> list[dict]:
    return [load_restricted(p) for p in sorted(root.glob("train/*/meta/*.pkl"))]


def mean_hand_baseline(world: Path) -> dict[str, float]:
    """PA-MPJPE, PA-MPVPE (mm) and AUC of PA-PCK 0-50 mm of the training mean hand on the test sequences."""
    mano = world / "mano" / "MANO_RIGHT.pkl"
    train = _metas(world / "ho3d")
    pose = np.mean([np.asarray(m["handPose"], np.float64) for m in train], axis=0)
    pose[:3] = 0.0
    shape = np.mean([np.asarray(m["handBeta"], np.float64) for m in train], axis=0)
    joints, verts = HandModel(load_mano(mano)).forward(pose[None], shape[None], flat_hand_mean=True, tips="ho3d")
    test = _metas(world / "ho3d_test")
    gt_joints = np.stack([np.asarray(m["handJoints3D"], np.float64)[MANO_TO_FREIHAND] @ OPENGL_TO_OPENCV
                          for m in test])
    gt_verts = np.stack([mano_vertices(str(mano), m["handPose"], m["handBeta"], m["handTrans"]) @ OPENGL_TO_OPENCV
                         for m in test])
    n = len(test)
    joint_errors = mpjpe(np.repeat(joints, n, axis=0), gt_joints, "pa")
    return {"pa_mpjpe": joint_errors.mean, "pa_mpvpe": mpvpe(np.repeat(verts, n, axis=0), gt_verts, "pa").mean,
            "auc_pa_mpjpe_0_50": auc_pck(joint_errors.points), "frames": n}
