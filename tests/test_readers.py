"""Reader round trips on the generated official layouts, checked against the generator's ground truth."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

from pipeline.errors import LayoutError, SkipCounter
from pipeline.sampledata import generate
from pipeline.sampledata.render import find_mark
from pipeline.sources import SOURCES
from pipeline.sources.freihand import json_numbers


def _clips(kind: str, root, **options):
    counter = SkipCounter()
    return list(SOURCES[kind](root, **options).clips(counter)), counter


def test_hanco_listing_and_labels(sample):
    root, truth = sample
    clips, counter = _clips("hanco", root / "hanco")
    assert len(clips) == truth["hanco"]["clips"] == 16
    assert sum(len(c.frames) for c in clips) == truth["hanco"]["frames"]
    assert all(c.passthrough and c.fps is None for c in clips)
    clip = next(c for c in clips if c.sequence == "0001" and c.view == 3)
    frame = clip.frames[4]
    SOURCES["hanco"](root / "hanco").annotate(clip, frame)
    np.testing.assert_allclose(frame.labels.kp3d, truth["hanco"]["kp3d"][(1, 3, 4)], atol=1e-9)
    assert frame.flags["object_id"] == 7 and frame.flags["is_train"] is False
    merged, _ = _clips("hanco", root / "hanco", images="rgb_merged")
    assert {c.sequence for c in merged} == {"0000"}
    trained, counter = _clips("hanco", root / "hanco", filters={"is_train": True})
    assert {c.sequence for c in trained} == {"0000"} and counter.frames["filtered"] == 8 * 12


@pytest.mark.parametrize("version", [2, 3])
def test_ho3d_versions_and_unlabelled_frames(tmp_path, version):
    truth = generate(tmp_path, seed=1, ho3d_version=version)["ho3d"]
    clips, _ = _clips("ho3d", tmp_path / "ho3d", fps=30)
    assert {c.sequence: len(c.frames) for c in clips} == truth["frames"]
    assert all(c.flags["version"] == version for c in clips)
    ext = ".jpg" if version == 3 else ".png"
    assert all(f.image.endswith(ext) for c in clips for f in c.frames)
    mc1 = next(c for c in clips if c.sequence == "train_MC1")
    assert [f.flags["labelled"] for f in mc1.frames].count(False) == 1 and mc1.frames[5].annotation is None
    source = SOURCES["ho3d"](tmp_path / "ho3d", fps=30)
    abf = next(c for c in clips if c.sequence == "train_ABF10")
    source.annotate(abf, abf.frames[3])
    # float32 pickles: compare at float32 precision; OpenGL flip and joint order undone by the reader.
    np.testing.assert_allclose(abf.frames[3].labels.kp3d, truth["kp3d"][("train_ABF10", 3)], atol=1e-6)
    np.testing.assert_allclose(abf.frames[3].box, truth["boxes"][("train_ABF10", 3)], atol=1e-3)
    ev = next(c for c in clips if c.sequence == "evaluation_SM1")
    source.annotate(ev, ev.frames[2])
    np.testing.assert_allclose(ev.frames[2].box, truth["boxes"][("evaluation_SM1", 2)], atol=1e-3)


def test_doh100_annotated_frames(sample):
    root, truth = sample
    clips, _ = _clips("doh100", root / "doh100", parts=["voc", "json"])
    assert len(clips) == truth["doh100"]["voc_hands"] + truth["doh100"]["json_hands"]
    assert all(len(c.frames) == 1 for c in clips)
    left = {c.sequence for c in clips if c.side == "left"}
    assert set(truth["doh100"]["left"]) <= left
    voc0 = next(c for c in clips if c.sequence.startswith("voc_") and c.sequence.endswith("13957_hand0"))
    assert voc0.frames[0].box == (100.0, 80.0, 220.0, 200.0)  # 1-based VOC pixels -> 0-based box
    assert voc0.frames[0].index == 13957


def test_doh100_video_tracks_interpolated_and_split(sample):
    root, truth = sample
    d = truth["doh100"]
    # smooth_s=0: raw boxes, so the gap frame is exactly the interpolation (smoothing: tests/test_tracks.py)
    clips, counter = _clips("doh100", root / "doh100", parts=["video"], target_fps=15, max_gap=5, smooth_s=0)
    right = [c for c in clips if c.side == "right"]
    left = sorted((c for c in clips if c.side == "left"), key=lambda c: c.frames[0].index)
    assert len(right) == 1 and len(left) == 2  # the 12-frame gap splits the left track
    rate = 30000 / 1001
    expected = sorted({round(k * rate / 15) for k in range(0, 40) if round(k * rate / 15) < d["video_frames"]})
    assert [f.index for f in right[0].frames] == expected
    assert left[0].frames[-1].index < d["left_gap"][0] and left[1].frames[0].index > d["left_gap"][-1]
    assert all(c.fps == pytest.approx(rate) for c in clips)
    # A frame inside the right hand's 3-frame detection gap gets the linear interpolation of its neighbours.
    lo, hi = d["right_gap"][0] - 1, d["right_gap"][-1] + 1
    for f in right[0].frames:
        if lo < f.index < hi:
            w = (f.index - lo) / (hi - lo)
            want = (1 - w) * np.array(d["video_boxes"]["right"][lo]) + w * np.array(d["video_boxes"]["right"][hi])
            np.testing.assert_allclose(f.box, want, atol=0.02)
            break
    else:
        pytest.fail("no subsampled frame inside the detection gap")


def test_freihand_versions_from_json_length(sample):
    root, truth = sample
    clips, _ = _clips("freihand", root / "freihand", versions=[0, 2])
    n = truth["freihand"]["n"]
    assert len(clips) == 2 * n
    c = next(c for c in clips if c.sequence == "00000003" and c.view == 2)
    assert c.frames[0].image.endswith(f"{3 + 2 * n:08d}.jpg")
    np.testing.assert_allclose(c.frames[0].labels.kp3d, truth["freihand"]["kp3d"][3])


def test_sample_frames_show_the_hand_at_the_labels(sample):
    """Generator sanity: the wrist mark sits at the projected wrist (so the crop tests below mean something)."""
    import simplejpeg

    root, truth = sample
    img = simplejpeg.decode_jpeg((root / "freihand" / "training" / "rgb" / "00000001.jpg").read_bytes())
    K = np.array(truth["freihand"]["K"][1])
    xyz = np.array(truth["freihand"]["kp3d"][1])
    uv = (K @ xyz[0])[:2] / xyz[0, 2]
    assert np.linalg.norm(find_mark(img) - uv) < 1.0


def _split_labels(root, split, **options):
    clips, _ = _clips("freihand", root, split=split, **options)
    return clips, [c.frames[0].labels for c in clips]


def test_freihand_evaluation_split_with_and_without_ground_truth(sample, tmp_path):
    """FreiHAND_pub_v2_eval's evaluation_{xyz,verts,mano}.json are read like the training files; without them the
    split is images and K only."""
    root, truth = sample
    gt = truth["freihand"]["evaluation"]
    clips, labels = _split_labels(root / "freihand", "evaluation")
    assert len(clips) == gt["n"] and all(c.view == 0 and c.mano_flat_hand_mean is False for c in clips)
    for i, lab in enumerate(labels):
        np.testing.assert_allclose(lab.kp3d, gt["kp3d"][i], atol=1e-12)
        np.testing.assert_allclose(lab.verts, gt["verts"][i], rtol=1e-6, atol=1e-7)  # parsed as float32
        np.testing.assert_allclose(lab.mano_pose, gt["pose"][i], atol=1e-12)
        np.testing.assert_allclose(lab.mano_shape, gt["shape"][i], atol=1e-12)
    bare = tmp_path / "freihand"
    shutil.copytree(root / "freihand", bare)
    for name in ("xyz", "verts", "mano"):
        (bare / f"evaluation_{name}.json").unlink()
    clips, labels = _split_labels(bare, "evaluation")
    assert len(clips) == gt["n"] and all(c.mano_flat_hand_mean is None for c in clips)
    assert all(lab.K is not None and lab.kp3d is None and lab.verts is None and lab.mano_pose is None
               for lab in labels)


def test_freihand_training_vertices_are_the_generators(sample):
    root, truth = sample
    _, labels = _split_labels(root / "freihand", "training", versions=[1])
    assert len(labels) == truth["freihand"]["n"]
    for i in range(truth["freihand"]["n"]):
        assert labels[i].verts.dtype == np.float32 and labels[i].verts.shape == (778, 3)
        np.testing.assert_allclose(labels[i].verts, truth["freihand"]["verts"][i], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_json_numbers_across_chunk_boundaries(chunk):
    data = [[[0.5, -1e-3, 12.0], [3.25e2, 0, -0.0]], [[1, 2, 3], [4.5, 5, 6]]]
    text = json.dumps(data, indent=1).encode()
    values, opened, closed = json_numbers(io.BytesIO(text), chunk)
    np.testing.assert_array_equal(values, np.array(data, np.float32).ravel())
    assert opened == closed == 1 + 2 + 4


@pytest.mark.parametrize("damage", ["a vertex short", "a string", "truncated"])
def test_malformed_verts_file_is_a_layout_error_naming_it(sample, tmp_path, damage):
    root, _ = sample
    copy = tmp_path / "freihand"
    shutil.copytree(root / "freihand", copy)
    path = copy / "training_verts.json"
    verts = json.loads(path.read_text())
    if damage == "a vertex short":
        verts[2] = verts[2][:-1]
    elif damage == "a string":
        verts[1][5][0] = "0.1"
    path.write_text(json.dumps(verts)[:-40] if damage == "truncated" else json.dumps(verts))
    with pytest.raises(LayoutError, match="training_verts.json"):
        _clips("freihand", copy)
