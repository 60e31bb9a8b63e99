"""Hand tracks from a noisy detector: linking, implausible-track filters, smoothing; and on six real videos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks.tracks import REALDATA
from pipeline.sampledata.layouts import VIDEO_ID
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import TRACKS_REPORT, shard
from pipeline.sharding.tables import load_manifest
from pipeline.sources.boxes import Detection, LinkParams, link_tracks, smooth_track, static_tracks, track_side
from tests.conftest import write_recipe


def _box(cx: float, cy: float, side: float = 40.0):
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def test_crossing_hands_with_swapped_handedness_stay_two_tracks():
    """Two hands pass each other left-right; the detector swaps their labels for a few frames."""
    dets = []
    for f in range(20):
        a, b = 100 + 6 * f, 214 - 6 * f
        noisy = 8 <= f <= 11
        dets += [Detection(f, _box(a, 100), "L" if noisy else "R", 0.9),
                 Detection(f, _box(b, 130), "R" if noisy else "L", 0.9)]
    tracks = link_tracks(dets, LinkParams())
    assert len(tracks) == 2
    for t in tracks:
        assert [d.frame for d in t] == list(range(20))
        ys = {d.box[1] for d in t}
        assert len(ys) == 1  # each track stays on one hand
    assert sorted(track_side(t) for t in tracks) == ["L", "R"]


def test_gap_up_to_max_gap_is_bridged_and_a_longer_one_splits():
    frames = [0, 1, 2, 8, 9, 16, 17]  # gaps of 5 (bridged) and 6 (split)
    tracks = link_tracks([Detection(f, _box(100 + f, 100), "R", 0.9) for f in frames], LinkParams(max_gap=5))
    assert [[d.frame for d in t] for t in tracks] == [[0, 1, 2, 8, 9], [16, 17]]


def test_a_static_place_is_dropped_and_a_moving_hand_is_not():
    chair = [Detection(f, _box(300 + (f % 3), 100), "L", 0.9) for f in list(range(0, 30)) + list(range(60, 100))]
    hand = [Detection(f, _box(100 + 3 * f, 200 + 2 * np.sin(f)), "R", 0.9) for f in range(100)]
    tracks = link_tracks(chair + hand, LinkParams())
    static = static_tracks(tracks, fps=30.0, static_motion=0.15, static_s=2.0)
    assert {track_side(tracks[i]) for i in static} == {"L"} and len(static) == 2  # both bursts of the chair
    # The same still place detected for under static_s seconds in all is kept (a hand at rest).
    assert static_tracks(tracks, fps=30.0, static_motion=0.15, static_s=3.0) == set()


def test_smoothing_reduces_jitter_and_keeps_the_raw_box_inside():
    rng = np.random.default_rng(0)
    n = 120
    cx = 200 + 1.5 * np.arange(n) + rng.normal(0, 4, n)
    cy = 150 + rng.normal(0, 4, n)
    side = 60 * np.exp(rng.normal(0, 0.05, n))
    raw = [_box(x, y, s) for x, y, s in zip(cx, cy, side, strict=True)]
    smooth = smooth_track(list(range(n)), raw, half=3)

    def jitter(boxes):
        b = np.asarray(boxes)
        return np.percentile(np.linalg.norm(np.diff((b[:, :2] + b[:, 2:]) / 2, axis=0), axis=1), 90)

    assert jitter(smooth) < 0.5 * jitter(raw)
    s, r = np.asarray(smooth), np.asarray(raw)
    assert np.all(s[:, :2] <= r[:, :2] + 1e-9) and np.all(s[:, 2:] >= r[:, 2:] - 1e-9)


def test_shard_writes_the_tracks_report(sample_copy, tmp_path):
    """Sharding raw 100DOH videos writes tracks_report.json: every video, with or without detections."""
    videos = sample_copy / "doh100" / "raw_videos"
    shutil.copy(videos / f"{VIDEO_ID}.mp4", videos / "undetected.mp4")
    recipe = write_recipe(tmp_path / "r.yaml", [{"type": "doh100", "path": "doh100",
                                                  "options": {"parts": ["video"], "max_gap": 5}}])
    out = tmp_path / "out"
    shard(load_recipe(recipe), sample_copy, out, workers=1, progress=False)
    report = json.loads((out / TRACKS_REPORT).read_text())
    assert report["undetected"] == {"status": "no_detections", "detections": 0, "clips_written": 0,
                                    "frames_written": 0}
    row = report[VIDEO_ID]
    # Two hands, the left one split by a 12-frame gap; the low-score box is dropped before linking.
    assert row["status"] == "listed" and row["tracks"] == 3 and row["tracks_dropped"] == {}
    assert row["clips"] == row["clips_written"] == 3
    manifest = load_manifest(out)
    assert row["frames"] == row["frames_written"] == sum(r["n_frames"] for r in manifest)
    assert row["detections"] == sum(1 for line in (sample_copy / "doh100" / "tracks" / "boxes.csv").open()
                                    if line.startswith(VIDEO_ID) and not line.endswith(",0.1\n"))


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata (real hand videos) is not present")
def test_real_videos_tracks():
    """Goals on six real videos with MediaPipe boxes (numbers measured by benchmarks/tracks.py, 2026-11-21).

    True-hand detections are all boxes except the table `benchmarks.tracks.FALSE_POSITIVES` (the pancake chair
    back, the teddy's foot and paw), derived by drawing the boxes on decoded frames.
    """
    from benchmarks.tracks import BEFORE, run

    after = run()
    native, fps15 = after["native"], after["fps15"]
    assert native["fp_clips"] == 0 and fps15["fp_clips"] == 0  # no clip is a false-positive track
    assert all(v["hand_box_in_crop"] for m in after.values() for v in m["videos"].values())
    # Measured 0.870 (goal 0.90 not met: the close-up / blurred pancake hands and pillow fragments are lost).
    assert native["yield"] >= 0.86 > BEFORE["native"]["yield"]
    assert native["clips"] < BEFORE["native"]["clips"] and native["median_len"] > BEFORE["native"]["median_len"]
    # Measured p90 0.0285 vs 0.0586 before (0.49x; goal 0.5x met), median 0.0102 vs 0.0176.
    assert native["jitter_p90"] <= 0.5 * BEFORE["native"]["jitter_p90"]
    # 15 fps: measured p90 0.0495 vs 0.0880, yield 0.501 vs 0.448; 20 of the 36 kept tracks reach min_frames.
    assert fps15["jitter_p90"] <= 0.6 * BEFORE["fps15"]["jitter_p90"] and fps15["yield"] > BEFORE["fps15"]["yield"]
