"""The synthetic hand-video world: a tiny world renders, shards and verifies, and its labels match its pixels.

The label checks find the world's label-check mark (the middle fingertip's faces painted pure green) in the
pixels: in the written frames against the meta pickles' joints projected here with NumPy, in the videos against
the box-track CSV, and in the stored crops against the shards' 2D labels.
"""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.sampledata.motion import (
    MotionOptions,
    curl_axes,
    exposure_times,
    finger_pose,
    hand_motion,
    smooth_track,
)
from pipeline.sampledata.raster import paint_mesh
from pipeline.sampledata.scene import find_green_mark as _mark
from pipeline.sampledata.world import WorldOptions, generate_world, render_clip, world_options_from
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard
from pipeline.sharding.verify import verify
from tests.conftest import read_shard_set

TINY = WorldOptions(seed=37, videos=2, video_frames=24, sequences=2, sequence_frames=16, test_sequences=1,
                    test_frames=10, marks=True, noise=0.0, motion_blur=1, occluder_share=0.0, left_share=0.5)
HO3D_MIDDLE_TIP = 18  # HO-3D joint order: 16 MANO joints, then thumb, index, middle, ring, pinky tips
FREIHAND_MIDDLE_TIP = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    summary = generate_world(root, TINY, workers=1, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def world_shards(world, tmp_path_factory):
    root, _ = world
    out = tmp_path_factory.mktemp("world_shards")
    summaries = {}
    for name in ("world", "world_test"):
        summaries[name] = shard(load_recipe(f"shards/{name}.yaml"), root, out / name, workers=1, progress=False)
    return out, summaries


def test_world_renders_shards_and_verifies(world, world_shards):
    root, summary = world
    out, summaries = world_shards
    assert summary["frames"] == 2 * 24 + 2 * 16 + 10
    assert (root / "doh100" / "raw_videos" / "world_0000_s37.mp4").is_file()
    assert len((root / "ho3d" / "train.txt").read_text().split()) == 2 * 16
    for name, s in summaries.items():
        assert s["frames_in"] == s["frames_written"], name  # nothing skipped
        assert verify(out / name, deep=True) == []
    assert summaries["world_test"]["frames_written"] == 10
    # videos at target_fps 15 from 30 fps keep every other frame
    assert summaries["world"]["frames_written"] == 2 * 12 + 2 * 16


def test_mark_in_written_frames_lands_on_the_projected_label(world):
    """The green middle fingertip, where visible, sits on the meta pickle's joint projected with camMat
    (OpenGL -> OpenCV axes by flipping y and z, done here independently)."""
    root, _ = world
    checked = 0
    for seq in ("W000", "W001"):
        for i in range(16):
            meta = pickle.loads((root / "ho3d" / "train" / seq / "meta" / f"{i:04d}.pkl").read_bytes())
            tip = np.asarray(meta["handJoints3D"], np.float64)[HO3D_MIDDLE_TIP] * np.array([1.0, -1.0, -1.0])
            uvw = np.asarray(meta["camMat"], np.float64) @ tip
            img = cv2.cvtColor(cv2.imread(str(root / "ho3d" / "train" / seq / "rgb" / f"{i:04d}.jpg")),
                               cv2.COLOR_BGR2RGB)
            found = _mark(img)
            if found is not None:
                assert np.linalg.norm(found - uvw[:2] / uvw[2]) < 3.0, (seq, i)
                checked += 1
    assert checked >= 20  # seed 37: the tip shows in all 32 rendered frames


def test_mark_in_videos_lies_in_the_box_track(world):
    """Decoded video frames (mirrored for left-hand videos) show the mark inside the CSV box of that frame."""
    root, _ = world
    rows = (root / "doh100" / "tracks" / "boxes.csv").read_text().splitlines()[1:]
    boxes = {(r.split(",")[0], int(r.split(",")[1])): (np.array(r.split(",")[2:6], float), r.split(",")[6])
             for r in rows}
    sides, checked = set(), 0
    for vid in ("world_0000_s37", "world_0001_s37"):
        cap = cv2.VideoCapture(str(root / "doh100" / "raw_videos" / f"{vid}.mp4"))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            found = _mark(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if found is not None and (vid, i) in boxes:
                box, side = boxes[(vid, i)]
                sides.add(side)
                assert box[0] - 2 <= found[0] <= box[2] + 2 and box[1] - 2 <= found[1] <= box[3] + 2, (vid, i)
                checked += 1
            i += 1
        assert i == 24
    assert checked >= 12
    assert sides == {"L", "R"}  # left_share 0.5 with seed 37: one mirrored video


def test_mark_in_stored_crops_lands_on_the_stored_2d_labels(world_shards):
    out, _ = world_shards
    checked = 0
    stored = {**read_shard_set(out / "world"), **read_shard_set(out / "world_test")}
    for key, s in stored.items():
        lab = s["labels"]
        if lab is None:  # the unlabelled videos
            continue
        for i, img in enumerate(s["frames"]):
            found = _mark(img)
            if found is not None and lab["labelled"][i]:
                assert np.linalg.norm(found - lab["kp2d"][i, FREIHAND_MIDDLE_TIP]) < 2.5, (key, i)
                checked += 1
    assert checked >= 10


def test_test_split_carries_vertices_consistent_with_its_joints(world_shards):
    """The HO-3D reader's vertices (re-posed from handPose/handBeta/handTrans) contain the five fingertip joints
    written by the generator (HO-3D's tips are mesh vertices)."""
    out, _ = world_shards
    for s in read_shard_set(out / "world_test").values():
        lab = s["labels"]
        for verts, kp3d in zip(lab["verts"], lab["kp3d"], strict=True):
            d = np.linalg.norm(verts[None] - kp3d[[4, 8, 12, 16, 20], None], axis=2).min(axis=1)
            assert d.max() < 1e-4


def test_rendering_is_deterministic_and_seeded(world):
    root, _ = world
    mano = str(root / "mano" / "MANO_RIGHT.pkl")
    a = render_clip(TINY, mano, "test", 0, 4)
    b = render_clip(TINY, mano, "test", 0, 4)
    c = render_clip(WorldOptions(**{**TINY.__dict__, "seed": 38}), mano, "test", 0, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    assert not np.array_equal(a.frames[0], c.frames[0])


def test_painter_order_and_culling_follow_depth_not_input_order():
    """Two overlapping front-facing triangles at different depths: the nearer one's colour shows in the overlap
    whatever their order; a back-facing triangle is not drawn."""
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    # counter-clockwise seen from the camera in OpenCV axes (y down) means a normal towards -z
    near = np.array([[-0.2, -0.2, 1.0], [-0.2, 0.2, 1.0], [0.2, 0.0, 1.0]])
    far = near * 2.0 + np.array([0.1, 0.0, 0.0])
    verts = np.concatenate([far, near])
    colours = np.array([[255.0, 0, 0], [0, 0, 255.0]])
    for faces in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]])):
        img = np.zeros((100, 100, 3), np.uint8)
        cols = colours if faces[0, 0] == 0 else colours[::-1]
        paint_mesh(img, verts, faces, K, cols)
        assert tuple(img[50, 50]) == (0, 0, 255)  # the near (blue) triangle covers the image centre
    img = np.zeros((100, 100, 3), np.uint8)
    painted = paint_mesh(img, near, np.array([[0, 2, 1]]), K, colours[:1])
    assert not painted.any() and img.max() == 0


def test_curls_bend_fingers_towards_the_palm(world):
    """A positive curl moves every fingertip towards -z (the palm side) in the model's rest frame."""
    from pipeline.models.mano import load_mano
    from pipeline.sampledata.posing import HandModel

    root, _ = world
    arrays = load_mano(root / "mano" / "MANO_RIGHT.pkl")
    model = HandModel(arrays)
    rest = np.asarray(arrays["J_regressor"]) @ np.asarray(arrays["v_template"])
    axes = curl_axes(rest)
    pose = np.zeros((2, 48))
    pose[1, 3:] = finger_pose(np.full((1, 5), 0.8), np.zeros((1, 5)), axes)[0]
    joints, _ = model.forward(pose, np.zeros((2, 10)), flat_hand_mean=True, tips="ho3d")
    tips = [4, 8, 12, 16, 20]  # FreiHAND order
    assert (joints[1, tips, 2] < joints[0, tips, 2] - 0.01).all()


def test_motion_is_smooth_near_and_different_far():
    """Poses a frame apart differ far less than poses a second apart (what TempCLR's windows rely on), and the
    keyframed tracks stay in their ranges (monotone cubic: no overshoot)."""
    rng = np.random.default_rng(0)
    rest = np.zeros((16, 3))
    rest[[1, 4, 7, 10, 13]] = [[-0.03, 0.09, 0], [-0.01, 0.09, 0], [0.03, 0.09, 0], [0.01, 0.09, 0], [-0.03, 0.01, 0]]
    rest[[2, 5, 8, 11, 14]] = rest[[1, 4, 7, 10, 13]] + [0, 0.03, 0]
    pose, place = hand_motion(rng, np.arange(300) / 30.0, rest, MotionOptions())
    near = np.linalg.norm(pose[1:, 3:] - pose[:-1, 3:], axis=1).mean()
    far = np.linalg.norm(pose[30:, 3:] - pose[:-30, 3:], axis=1).mean()
    assert near < far / 10
    track = smooth_track(np.random.default_rng(1), np.arange(500) / 30.0, 0.5, [-1.0, 2.0], [1.0, 3.0])
    assert track[:, 0].min() >= -1 and track[:, 0].max() <= 1 and track[:, 1].min() >= 2 and track[:, 1].max() <= 3
    assert ((place[:, 2] >= 0.42) & (place[:, 2] <= 0.6)).all()


def test_world_options_are_typed():
    assert world_options_from(5, ["videos=3", "motion.period_s=1.5"]).videos == 3
    with pytest.raises(ConfigError, match="videos"):
        world_options_from(0, ["videos=-1"])
    with pytest.raises(ConfigError, match="colour"):
        world_options_from(0, ["colour=1"])


def test_world_json_counts_the_frames_on_disk(world):
    """world.json's frame count equals the JPEGs written plus the frames decoded from the videos."""
    root, _ = world
    doc = json.loads((root / "world.json").read_text())
    jpegs = len(list(root.glob("ho3d*/train/*/rgb/*.jpg")))
    decoded = 0
    for video in (root / "doh100" / "raw_videos").glob("*.mp4"):
        cap = cv2.VideoCapture(str(video))
        while cap.read()[0]:
            decoded += 1
    assert doc["frames"] == jpegs + decoded == 2 * 24 + 2 * 16 + 10
    assert doc["frames_per_s_per_core"] > 0


def test_exposure_instants_are_centred_on_the_label_time():
    """Two renders per frame at 30 fps: at t -+ 1/120 s (a quarter frame), averaging to the frame's time."""
    t = exposure_times(3, 30.0, 2)
    q = 1 / 120
    assert np.allclose(t, [[-q, q], [1 / 30 - q, 1 / 30 + q], [2 / 30 - q, 2 / 30 + q]])
    assert np.allclose(exposure_times(2, 10.0, 1), [[0.0], [0.1]])


def test_clips_do_not_depend_on_the_worker_count(world, tmp_path):
    """Two rendering processes write byte-identical frames and the same box rows as one."""
    root, _ = world
    opts = WorldOptions(**{**TINY.__dict__, "videos": 1, "sequences": 1, "test_sequences": 0})
    generate_world(tmp_path, opts, workers=2, progress=False)
    for rel in ("ho3d/train/W000/rgb/0000.jpg", "ho3d/train/W000/rgb/0015.jpg", "ho3d/train/W000/meta/0007.pkl"):
        assert (tmp_path / rel).read_bytes() == (root / rel).read_bytes(), rel
    rows = (tmp_path / "doh100" / "tracks" / "boxes.csv").read_text().splitlines()
    assert rows == [r for r in (root / "doh100" / "tracks" / "boxes.csv").read_text().splitlines()
                    if not r.startswith("world_0001")]
