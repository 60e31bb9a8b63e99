"""Shard -> read back (through webdataset) -> compare with independent references."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import decord
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.sampledata.render import find_mark
from pipeline.sharding import writer
from pipeline.sharding.tables import load_manifest, load_shards
from tests.conftest import accounting, read_shard_set, run

CONTEXT, SIZE = 2.5, 256


def _project(K, X):
    p = np.asarray(X, np.float64) @ np.asarray(K, np.float64).T
    return p[:, :2] / p[:, 2:]


@pytest.fixture(scope="module")
def stored(sample_shards):
    return read_shard_set(sample_shards)


def test_summary_accounts_for_every_frame(sample, sample_shards):
    import json

    _, truth = sample
    summary = json.loads((sample_shards / "summary.json").read_text())
    assert summary["frames_in"] == summary["frames_written"]
    listed_hanco = truth["hanco"]["frames"]
    assert sum(r["n_frames"] for r in load_manifest(sample_shards) if r["dataset"] == "hanco") == listed_hanco
    assert all("." not in k for k in read_shard_set(sample_shards))


def test_hanco_frames_keep_their_original_bytes(sample, stored):
    root, _ = sample
    s = stored["hanco-0001-5-0"]
    for source_id, jpeg in zip(s["meta"]["frames"]["source_id"], s["jpegs"], strict=True):
        assert jpeg == (root / "hanco" / source_id).read_bytes()
    assert s["meta"]["frames"]["size"][0] == [224, 224]


def test_stored_labels_are_consistent_with_pixels(sample, stored):
    """Projected stored 3D with the stored crop K gives the stored 2D (<= 0.5 px), and the stored 2D wrist
    lands on the wrist mark found in the stored pixels."""
    _, truth = sample
    errors = []
    for key, s in stored.items():
        lab = s["labels"]
        if lab is None or "kp3d" not in lab:
            continue
        for i in np.flatnonzero(lab["labelled"]):
            if np.isnan(lab["kp3d"][i]).any():
                continue
            uv = _project(lab["K"][i], lab["kp3d"][i])
            assert np.abs(uv - lab["kp2d"][i]).max() <= 0.5, key
            mark = find_mark(s["frames"][i])
            assert mark is not None, (key, i)
            errors.append(mark - lab["kp2d"][i][0])
    errors = np.array(errors)
    # The mark's centroid after JPEG and downscaling is noisy per frame, but unbiased: a geometry error
    # (half-pixel convention, decode scale, mirror) shows up as a mean offset.
    assert len(errors) > 200
    assert np.abs(errors.mean(axis=0)).max() < 0.25
    assert np.linalg.norm(errors, axis=1).max() < 3.5
    ho = stored["ho3d-train_ABF10-0-0"]
    np.testing.assert_allclose(ho["labels"]["kp3d"][7], truth["ho3d"]["kp3d"][("train_ABF10", 7)], atol=1e-6)


def test_sample_json_records_the_mano_convention(stored):
    """`mano_flat_hand_mean` per clip as its reader set it: HanCo and FreiHAND fits without the mean pose, HO-3D
    train with it, nothing where there is no MANO label; vertices only where the dataset has them (FreiHAND)."""
    want = {"hanco": False, "freihand": False, "ho3d-train": True, "ho3d-evaluation": None, "doh100": None}
    for key, s in stored.items():
        meta = s["meta"]
        name = meta["dataset"] if meta["dataset"] != "ho3d" else f"ho3d-{meta['flags']['split']}"
        assert meta["mano_flat_hand_mean"] is want[name], key
        has_verts = s["labels"] is not None and "verts" in s["labels"]
        assert has_verts == (meta["dataset"] == "freihand"), key


def test_ho3d_crop_geometry_and_unlabelled_frame(sample, stored):
    _, truth = sample
    s = stored["ho3d-train_MC1-0-0"]
    fr = s["meta"]["frames"]
    assert fr["labelled"].count(False) == 1 and fr["index"][5] == 5 and not fr["labelled"][5]
    box = truth["ho3d"]["boxes"][("train_MC1", 3)]
    side = CONTEXT * max(box[2] - box[0], box[3] - box[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    # Square of side context x box, centred on the box, up to the integer grid of the JPEG decode scale
    # (crops this large are decoded at 1/2 or less in the DCT domain).
    x0, y0, x1, y1 = fr["crop_box"][3]
    assert x1 - x0 == y1 - y0 and abs((x1 - x0) - side) <= 8
    np.testing.assert_allclose([(x0 + x1) / 2, (y0 + y1) / 2], [cx, cy], atol=8)
    assert s["frames"][3].shape == (SIZE, SIZE, 3)
    # The unlabelled frame's box is interpolated from its neighbours: its crop lies between theirs.
    c4, c5, c6 = (np.array(fr["crop_box"][i]) for i in (4, 5, 6))
    assert np.all(np.minimum(c4, c6) - 1 <= c5) and np.all(c5 <= np.maximum(c4, c6) + 1)


def test_video_frames_are_the_decoded_frames_cropped(sample, stored):
    """Sequential decoding gives the same frames as decord's own batch access, cropped at the metadata box."""
    root, truth = sample
    key = next(k for k in stored if k.startswith("doh100-boardgame") and "track0" in k)
    s = stored[key]
    fr = s["meta"]["frames"]
    video = decord.VideoReader(str(next((root / "doh100" / "raw_videos").glob("*.mp4"))))
    for i in (0, 7, len(fr["index"]) - 1):
        src = video.get_batch([fr["index"][i]]).asnumpy()[0]
        x0, y0, x1, y1 = (int(v) for v in fr["crop_box"][i])
        h, w = src.shape[:2]
        pad = cv2.copyMakeBorder(src, max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w),
                                 cv2.BORDER_CONSTANT, value=(0, 0, 0))
        region = pad[y0 + max(0, -y0):y1 + max(0, -y0), x0 + max(0, -x0):x1 + max(0, -x0)]
        want = cv2.resize(region, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        if s["meta"]["mirrored"]:
            want = want[:, ::-1]
        assert np.abs(want.astype(int) - s["frames"][i]).mean() < 4.0


def test_left_hands_are_mirrored(sample, stored):
    _, truth = sample
    lefts = [s for s in stored.values() if s["meta"]["side"] == "left"]
    assert lefts and all(s["meta"]["mirrored"] for s in lefts)
    video_left = next(s for s in lefts if s["meta"]["sequence"].endswith("track1"))
    fr = video_left["meta"]["frames"]
    i, idx = 0, fr["index"][0]
    box = np.array(truth["doh100"]["video_boxes"]["left"][idx])
    x0, y0, x1, _ = fr["crop_box"][i]
    s = SIZE / (x1 - x0)
    u1, u2 = (box[0] - x0 + 0.5) * s - 0.5, (box[2] - x0 + 0.5) * s - 0.5
    # The stored box is the smoothed track box, grown to contain the detection: it holds the mirrored detection
    # and stays within a few stored pixels of its edges.
    assert SIZE - 1 - u2 - 4 <= fr["hand_box"][i][0] <= SIZE - 1 - u2 + 0.05
    assert SIZE - 1 - u1 - 0.05 <= fr["hand_box"][i][2] <= SIZE - 1 - u1 + 4


def test_aug_seed_is_a_stable_hash_of_the_sequence(sample, tmp_path):
    root, _ = sample
    fwd = [{"type": "hanco", "path": "hanco"}, {"type": "freihand", "path": "freihand", "options": {"versions": [0]}}]
    _, a = run(tmp_path, root, fwd, "fwd", min_frames=1)
    _, b = run(tmp_path, root, fwd[::-1], "rev", workers=2, min_frames=1, shard_bytes=200_000)
    seeds_a = {(r["dataset"], r["sequence"], r["view"]): r["aug_seed"] for r in load_manifest(a)}
    seeds_b = {(r["dataset"], r["sequence"], r["view"]): r["aug_seed"] for r in load_manifest(b)}
    assert seeds_a == seeds_b
    want = int.from_bytes(hashlib.blake2b(b"0\x00hanco\x000001", digest_size=8).digest(), "little") & (2**63 - 1)
    assert {seeds_a[("hanco", "0001", v)] for v in range(8)} == {want}
    assert len({v for k, v in seeds_a.items() if k[0] == "freihand"}) == 5


def _rows(out: Path) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "shard"} for r in load_manifest(out)), key=lambda r: r["key"])


def test_workers_and_parts_give_the_same_manifest(sample, tmp_path):
    root, _ = sample
    sources = [{"type": "ho3d", "path": "ho3d", "options": {"fps": 30}}, {"type": "hanco", "path": "hanco"}]
    _, one = run(tmp_path, root, sources, "one", shard_bytes=1_000_000)
    _, two = run(tmp_path, root, sources, "two", workers=2, shard_bytes=1_000_000)
    assert load_shards(one) == load_shards(two)  # byte-identical shards, whatever the worker count
    for i in range(3):
        run(tmp_path, root, sources, "parts", part=(i, 3), shard_bytes=1_000_000)
    assert main(["shard", "--merge", "--out", str(tmp_path / "parts")]) == 0
    assert _rows(tmp_path / "parts") == _rows(one)
    assert main(["verify", str(tmp_path / "parts"), "--deep"]) == 0


def test_resume_after_a_crash_gives_the_uninterrupted_result(sample, tmp_path, monkeypatch):
    root, _ = sample
    sources = [{"type": "hanco", "path": "hanco"}]
    _, clean = run(tmp_path, root, sources, "clean", shard_bytes=300_000)
    real_add, calls = writer.ShardSink.add, {"n": 0}

    def crashing_add(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt("simulated crash")
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(writer.ShardSink, "add", crashing_add)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, root, sources, "crashed", shard_bytes=300_000)
    out = tmp_path / "crashed"
    complete = sorted(p.name for p in out.glob("shard-*.tar"))
    assert complete and not list(out.glob("*.tmp")) and not (out / "manifest.parquet").exists()
    monkeypatch.setattr(writer.ShardSink, "add", real_add)
    summary, _ = run(tmp_path, root, sources, "crashed", shard_bytes=300_000)
    assert load_shards(out) == load_shards(clean)
    assert load_manifest(out) == load_manifest(clean)
    assert accounting(summary)[0] == accounting(summary)[1] == summary["frames_written"]


def test_verify_detects_a_flipped_byte_and_a_missing_shard(sample, tmp_path, capsys):
    root, _ = sample
    _, out = run(tmp_path, root, [{"type": "hanco", "path": "hanco"}], shard_bytes=300_000)
    assert main(["verify", str(out), "--deep"]) == 0
    shards = sorted(out.glob("shard-*.tar"))
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 3] ^= 0x01
    shards[0].write_bytes(bytes(data))
    shards[-1].unlink()
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    report = capsys.readouterr().out
    assert f"{shards[0]}: sha256 differs" in report
    assert f"{shards[-1]}: missing" in report


def test_inspect_prints_the_summary(sample_shards, capsys):
    assert main(["inspect", str(sample_shards)]) == 0
    text = capsys.readouterr().out
    for name in ("hanco", "ho3d", "doh100", "freihand", "first keys: hanco-0000-0-0"):
        assert name in text
