"""What fine-tuning and evaluation read from the shards: vertices, joints and MANO labels of the sample MANO world
(FreiHAND training and evaluation, HO-3D), checked against the generator's ground truth and, independently, by
re-posing the stored MANO parameters with smplx."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
import webdataset as wds
import zstandard
from scipy.spatial.transform import Rotation

from pipeline.cli import main
from pipeline.errors import SkipCounter
from pipeline.geometry import MANO_TO_FREIHAND, OPENGL_TO_OPENCV, project
from pipeline.models.mano import build_mano_layer, mano_joints21
from pipeline.sharding.clipjob import LABEL_FIELDS, process_clip
from pipeline.sharding.options import ShardOptions
from pipeline.sharding.verify import verify
from pipeline.sources import SOURCES
from pipeline.stream.clipdata import read_labels
from tests.conftest import read_shard_set, run

F32 = 2e-7  # metres: float32 rounding of coordinates below 1 m (what the labels member stores)
FREIHAND = {"type": "freihand", "path": "freihand"}
HO3D = {"type": "ho3d", "path": "ho3d", "options": {"fps": 30}}


@pytest.fixture(scope="module")
def shard_sets(sample, tmp_path_factory) -> dict[str, dict]:
    """Samples of three shard sets, read through webdataset: FreiHAND training, FreiHAND evaluation, HO-3D (the
    FreiHAND splits share keys, so each split is a shard set of its own)."""
    root, _ = sample
    work = tmp_path_factory.mktemp("finetune")
    sets = {"training": [{**FREIHAND, "options": {"split": "training"}}],
            "evaluation": [{**FREIHAND, "options": {"split": "evaluation"}}], "ho3d": [HO3D]}
    out = {}
    for name, sources in sets.items():
        summary, path = run(work, root, sources, name)
        assert summary["frames_in"] == summary["frames_written"]
        out[name] = {"path": path, "samples": read_shard_set(path)}
    return out


def _freihand_samples(samples: dict) -> list[tuple[int, dict]]:
    return sorted(((int(s["meta"]["sequence"]), s) for s in samples.values()), key=lambda item: item[0])


def _layer(sample, flat_hand_mean: bool):
    return build_mano_layer(sample[1]["mano"], flat_hand_mean=flat_hand_mean).double()


def _repose(layer, pose, shape, tips: str, transl=None) -> tuple[np.ndarray, np.ndarray]:
    """21 joints (FreiHAND order) and vertices of MANO(pose, shape[, transl]), float64."""
    pose, shape = torch.as_tensor(np.asarray(pose, np.float64)), torch.as_tensor(np.asarray(shape, np.float64))
    kwargs = {} if transl is None else {"transl": torch.as_tensor(np.asarray(transl, np.float64))}
    with torch.no_grad():
        out = layer(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=shape, **kwargs)
    return mano_joints21(out, tips).numpy(), out.vertices.numpy()


@pytest.mark.parametrize("split", ["training", "evaluation"])
def test_freihand_shards_hold_the_generators_ground_truth(sample, shard_sets, split):
    _, truth = sample
    gt = truth["freihand"] if split == "training" else truth["freihand"]["evaluation"]
    stored = _freihand_samples(shard_sets[split]["samples"])
    assert len(stored) == gt["n"] * (4 if split == "training" else 1)
    for idx, s in stored:
        lab, meta = s["labels"], s["meta"]
        assert meta["mano_flat_hand_mean"] is False and meta["flags"]["split"] == split
        assert lab["labelled"].tolist() == [True] and lab["verts"].shape == (1, 778, 3)
        np.testing.assert_allclose(lab["verts"][0], gt["verts"][idx], rtol=0, atol=F32)
        np.testing.assert_allclose(lab["kp3d"][0], gt["kp3d"][idx], rtol=0, atol=F32)
        np.testing.assert_allclose(lab["mano_pose"][0], gt["pose"][idx], rtol=0, atol=1e-6)
        np.testing.assert_allclose(lab["mano_shape"][0], gt["shape"][idx], rtol=0, atol=1e-6)
        np.testing.assert_allclose(lab["K"][0], gt["K"][idx], rtol=1e-6)


def test_ho3d_shards_record_flat_hand_mean_and_carry_no_vertices(shard_sets):
    samples = shard_sets["ho3d"]["samples"].values()
    train = [s for s in samples if s["meta"]["sequence"].startswith("train_")]
    evaluation = [s for s in samples if s["meta"]["sequence"].startswith("evaluation_")]
    assert train and evaluation
    assert all(s["meta"]["mano_flat_hand_mean"] is True and "verts" not in s["labels"] for s in train)
    assert all(s["meta"]["mano_flat_hand_mean"] is None for s in evaluation)  # no MANO fit, no convention


@pytest.mark.parametrize("split", ["training", "evaluation"])
def test_stored_freihand_mano_reposes_to_the_stored_joints_and_vertices(sample, shard_sets, split):
    """Independent of the generator: MANO(stored pose, shape) with flat_hand_mean False and FreiHAND's tips,
    translated so that keypoint 9 lands on the stored kp3d[9] (the convention of FreiHAND's uv / scale),
    reproduces all 21 stored joints and 778 stored vertices."""
    stored = [s for _, s in _freihand_samples(shard_sets[split]["samples"])]
    lab = {k: np.concatenate([s["labels"][k] for s in stored]).astype(np.float64)
           for k in ("mano_pose", "mano_shape", "kp3d", "verts")}
    joints, verts = _repose(_layer(sample, False), lab["mano_pose"], lab["mano_shape"], "freihand")
    t = lab["kp3d"][:, 9] - joints[:, 9]
    assert np.abs(joints + t[:, None] - lab["kp3d"]).max() < 1e-5
    assert np.abs(verts + t[:, None] - lab["verts"]).max() < 1e-5
    wrong, _ = _repose(_layer(sample, True), lab["mano_pose"], lab["mano_shape"], "freihand")
    assert np.abs(wrong - wrong[:, 9:10] - (joints - joints[:, 9:10])).max() > 1e-3  # the convention matters


def test_freihand_mano_files_place_the_mesh_by_uv_and_scale(sample):
    """In the files: uv and scale of `*_mano.json` back-project (FreiHAND toolkit: uv - principal point and
    focal, over scale) to xyz[9]."""
    root, _ = sample
    for split in ("training", "evaluation"):
        mano, xyz, Ks = (np.array(json.loads((root / "freihand" / f"{split}_{n}.json").read_text()))
                         for n in ("mano", "xyz", "K"))
        uv, scale = mano[:, 0, 58:60], mano[:, 0, 60:61]
        focal = 0.5 * (Ks[:, 0, 0] + Ks[:, 1, 1])[:, None]
        root_xyz = np.concatenate([uv - Ks[:, :2, 2], focal], axis=1) / scale
        np.testing.assert_allclose(root_xyz, xyz[:, 9], rtol=0, atol=1e-9)


def test_ho3d_mano_reposes_in_its_own_convention(sample, shard_sets):
    """HO-3D files: MANO(handPose, handBeta, handTrans), flat_hand_mean True, HO-3D tips, is handJoints3D
    (OpenGL axes, HO-3D order). Shards: the stored pose (turned to OpenCV axes by the reader) re-poses to the
    stored joints once the wrist is put on the stored wrist."""
    root, truth = sample
    layer = _layer(sample, True)
    meta = pickle.loads((root / "ho3d" / "train" / "ABF10" / "meta" / "0004.pkl").read_bytes())
    joints, _ = _repose(layer, meta["handPose"][None], meta["handBeta"][None], "ho3d", meta["handTrans"][None])
    ho3d_order = np.empty_like(joints[0])
    ho3d_order[MANO_TO_FREIHAND] = joints[0]
    np.testing.assert_allclose(ho3d_order, meta["handJoints3D"], rtol=0, atol=1e-5)
    s = shard_sets["ho3d"]["samples"]["ho3d-train_ABF10-0-0"]
    lab, keep = s["labels"], s["labels"]["labelled"]
    pose, shape, kp3d = (lab[k][keep].astype(np.float64) for k in ("mano_pose", "mano_shape", "kp3d"))
    joints, _ = _repose(layer, pose, shape, "ho3d")
    assert np.abs(joints - joints[:, :1] + kp3d[:, :1] - kp3d).max() < 1e-5
    np.testing.assert_allclose(kp3d[4], (meta["handJoints3D"] @ OPENGL_TO_OPENCV)[MANO_TO_FREIHAND], atol=1e-6)
    want_pose, want_shape = truth["ho3d"]["mano"][("train_ABF10", 4)]  # the generator's, in OpenCV axes
    np.testing.assert_allclose(shape[4], want_shape, atol=1e-6)
    np.testing.assert_allclose(pose[4, 3:], want_pose[3:], atol=1e-6)
    np.testing.assert_allclose(Rotation.from_rotvec(pose[4, :3]).as_matrix(),
                               Rotation.from_rotvec(want_pose[:3]).as_matrix(), atol=1e-5)


def _labels(member: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(member))) as npz:
        return {k: npz[k] for k in npz.files}


def test_a_mirrored_clip_negates_x_of_vertices_and_joints(sample):
    root, _ = sample
    source = SOURCES["freihand"](root / "freihand", versions=[0])
    right = next(c for c in source.clips(SkipCounter()) if c.sequence == "00000002")
    left = dataclasses.replace(right, side="left")
    opts = ShardOptions()
    a, b = (_labels(process_clip(source, c, opts, 1).samples[0].members["labels"]) for c in (right, left))
    np.testing.assert_array_equal(b["verts"], a["verts"] * np.float32([-1, 1, 1]))
    np.testing.assert_array_equal(b["kp3d"], a["kp3d"] * np.float32([-1, 1, 1]))
    assert np.abs(project(b["K"][0], b["kp3d"][0].astype(np.float64)) - b["kp2d"][0]).max() < 1e-3


def test_verify_deep_passes_and_finds_mano_without_its_convention(shard_sets, tmp_path):
    for name in ("training", "evaluation", "ho3d"):
        assert main(["verify", str(shard_sets[name]["path"]), "--deep"]) == 0
    out = shutil.copytree(shard_sets["training"]["path"], tmp_path / "copy")
    path = next(out.glob("shard-*.tar"))
    samples = list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
    meta = json.loads(samples[0]["json"])
    meta["mano_flat_hand_mean"] = None
    samples[0]["json"] = json.dumps(meta).encode()
    with wds.TarWriter(str(path)) as writer:
        for s in samples:
            writer.write({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"})
    problems = verify(out, deep=True)
    assert f"{samples[0]['__key__']}: MANO poses without a recorded mano_flat_hand_mean (None)" in " ".join(problems)


def test_the_label_cap_admits_every_field_for_a_full_chunk():
    """The stream's decompression bound follows LABEL_FIELDS: incompressible float32 labels of a 128-frame chunk,
    vertices included, pass; the sharder writes nothing larger."""
    n, rng = 128, np.random.default_rng(0)
    arrays = {"labelled": np.ones(n, bool)} | {k: rng.random((n, *s), dtype=np.float32) for k, s in
                                              LABEL_FIELDS.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    labels = read_labels(zstandard.ZstdCompressor().compress(buf.getvalue()), n, "test")
    assert labels.keys() == arrays.keys() and np.array_equal(labels["verts"], arrays["verts"])
