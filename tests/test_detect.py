"""`handclr detect`: the main-process side with a fake worker speaking the JSON-lines protocol, and the real
MediaPipe worker on real footage when `.venv-detect` has been built (`make detect-env`; CI skips those)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.detect.run import detect, landmarks_path

REPO = Path(__file__).resolve().parents[1]
DETECT_ENV = REPO / ".venv-detect"
REAL = Path("/work/shared/realdata")
needs_env = pytest.mark.skipif(not (DETECT_ENV / "bin" / "python").is_file() or not REAL.is_dir(),
                               reason="needs .venv-detect (make detect-env) and the shared real data")

# A stand-in for worker.py: the "video" is a JSON spec of what the detector would see.
FAKE_WORKER = '''
import json, sys
path = sys.argv[2]
with open(sys.argv[1], "a") as log:
    log.write(path + "\\n")
try:
    spec = json.load(open(path))
except ValueError:
    print(json.dumps({"type": "error", "reason": "video_unreadable", "message": path + ": cannot open"}))
    sys.exit(0)
print(json.dumps({"type": "open", "protocol": 1, "frames": spec["frames"]}))
n = 0
for i in range(spec["frames"]):
    if i == spec.get("crash_at"):
        sys.exit(1)
    if i == spec.get("fail_at"):
        print(json.dumps({"type": "frame_error", "frame": i, "message": path + ": frame undecodable"}))
        break
    hands = [{"label": label, "handedness": 0.9, "landmarks": [[x0 + j, y0 + j, 0.0] for j in range(21)]}
             for label, x0, y0 in spec.get("hands", {}).get(str(i), [])]
    print(json.dumps({"type": "frame", "frame": i, "width": 100, "height": 80, "hands": hands}))
    n += 1
print(json.dumps({"type": "end", "frames_decoded": n}))
'''


@pytest.fixture
def fake(tmp_path) -> tuple[Path, list[str], Path]:
    """(videos dir, fake worker command, log of the videos it was run on)."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    log = tmp_path / "calls.log"
    videos = tmp_path / "videos"
    videos.mkdir()
    return videos, [sys.executable, str(script), str(log)], log


def _video(videos: Path, name: str, spec) -> None:
    (videos / name).write_text(spec if isinstance(spec, str) else json.dumps(spec))


def _calls(log: Path) -> list[str]:
    return [Path(p).stem for p in log.read_text().split()] if log.exists() else []


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(videos: Path, out: Path, command: list[str], workers: int = 1) -> dict:
    return detect(videos, out, workers=workers, command=command, progress=False)


def test_rows_swap_handedness_and_landmarks_follow(fake, tmp_path):
    videos, command, _ = fake
    _video(videos, "b_two.mp4", {"frames": 3, "hands": {"0": [["Left", 10, 5]], "2": [["Right", 50, 40],
                                                                                       ["Left", 90, 70]]}})
    _video(videos, "a_one.mkv", {"frames": 2, "hands": {"1": [["Right", 0, 0]]}})
    out = tmp_path / "tracks" / "boxes.csv"
    _run(videos, out, command)
    rows = _rows(out)
    assert list(rows[0]) == ["video_id", "frame", "x1", "y1", "x2", "y2", "side", "score"]
    got = [(r["video_id"], int(r["frame"]), r["side"]) for r in rows]
    assert got == [("a_one", 1, "L"), ("b_two", 0, "R"), ("b_two", 2, "L"), ("b_two", 2, "R")]  # Left -> R
    # min/max of the landmarks, clipped to the 100 x 80 image
    assert [float(rows[1][k]) for k in ("x1", "y1", "x2", "y2")] == [10.0, 5.0, 30.0, 25.0]
    assert [float(rows[3][k]) for k in ("x1", "y1", "x2", "y2")] == [90.0, 70.0, 100.0, 80.0]
    table = pq.read_table(landmarks_path(out))
    assert table.column("video_id").to_pylist() == [r["video_id"] for r in rows]
    assert table.column("mediapipe_label").to_pylist() == ["Right", "Left", "Right", "Left"]
    lm = np.asarray(table.column("landmarks").to_pylist()[1]).reshape(21, 2)
    assert lm[0].tolist() == [10.0, 5.0] and lm[20].tolist() == [30.0, 25.0]
    assert b"not a detection confidence" in table.schema.metadata[b"handclr.detect"]


def test_every_video_is_in_the_report(fake, tmp_path):
    videos, command, _ = fake
    _video(videos, "hands.mp4", {"frames": 2, "hands": {"0": [["Left", 1, 1]]}})
    _video(videos, "nohands.mp4", {"frames": 4})
    _video(videos, "garbage.avi", "not a video")
    (videos / "empty.mov").write_bytes(b"")
    _video(videos, "crash.webm", {"frames": 5, "crash_at": 3})
    _video(videos, "truncated.mp4", {"frames": 5, "fail_at": 3, "hands": {"2": [["Right", 1, 1]]}})
    _video(videos, "notes.txt", "ignored: not a video name")
    out = tmp_path / "boxes.csv"
    report = _run(videos, out, command)
    entries = {e["video_id"]: e for e in report["per_video"]}
    assert set(entries) == {"hands", "nohands", "garbage", "empty", "crash", "truncated"}
    hands = entries["hands"]
    assert (hands["status"], hands["boxes"], hands["frames_with_hands"]) == ("ok", 1, 1)
    assert (entries["nohands"]["status"], entries["nohands"]["reason"], entries["nohands"]["frames"]) == \
        ("ok", "no_hands", 4)
    assert (entries["garbage"]["status"], entries["garbage"]["reason"]) == ("failed", "video_unreadable")
    assert (entries["empty"]["status"], entries["empty"]["reason"]) == ("failed", "video_empty")
    assert entries["crash"]["status"] == "failed" and entries["crash"]["reason"] == "worker_failed"
    assert entries["crash"]["frames_decoded"] == 3 and "status 1" in entries["crash"]["message"]
    cut = entries["truncated"]
    assert (cut["status"], cut["reason"], cut["frames_decoded"], cut["frames_failed"]) == \
        ("partial", "frame_undecodable", 3, 2)
    assert report["reasons"] == {"frame_undecodable": 1, "no_hands": 1, "video_empty": 1, "video_unreadable": 1,
                                 "worker_failed": 1}
    assert json.loads((tmp_path / "detect_report.json").read_text())["videos"] == 6
    assert [(r["video_id"], r["frame"]) for r in _rows(out)] == [("hands", "0"), ("truncated", "2")]


def test_resume_skips_finished_videos_and_reruns_interrupted_ones(fake, tmp_path):
    videos, command, log = fake
    _video(videos, "done.mp4", {"frames": 3, "hands": {"1": [["Right", 1, 1]]}})
    _video(videos, "cut.mp4", {"frames": 3, "hands": {"0": [["Left", 1, 1]]}, "crash_at": 2})
    out = tmp_path / "boxes.csv"
    _run(videos, out, command, workers=2)
    assert sorted(_calls(log)) == ["cut", "done"]
    assert [r["video_id"] for r in _rows(out)] == ["done"]
    _video(videos, "cut.mp4", {"frames": 3, "hands": {"0": [["Left", 1, 1]]}})  # the interruption is over
    log.unlink()
    report = _run(videos, out, command, workers=2)
    assert _calls(log) == ["cut"]
    assert {e["video_id"]: e["resumed"] for e in report["per_video"]} == {"cut": False, "done": True}
    assert [(r["video_id"], r["side"]) for r in _rows(out)] == [("cut", "R"), ("done", "L")]
    _video(videos, "done.mp4", {"frames": 3})  # a changed file is detected again
    log.unlink()
    _run(videos, out, command)
    assert _calls(log) == ["done"] and [r["video_id"] for r in _rows(out)] == ["cut"]


def test_missing_detector_env_names_the_make_target(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    code = main(["detect", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "b.csv"),
                 "--env", str(tmp_path / "no-env")])
    err = capsys.readouterr().err
    assert code == 2 and "make detect-env" in err and str(tmp_path / "no-env") in err
    assert len(err.strip().splitlines()) == 1


def _image_video(image: Path, out: Path, frames: int = 2) -> None:
    """A short MJPEG AVI repeating one still image (decord cannot open a JPEG)."""
    import cv2

    bgr = cv2.imread(str(image))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, (bgr.shape[1], bgr.shape[0]))
    for _ in range(frames):
        writer.write(bgr)
    writer.release()


@needs_env
def test_real_detector_calls_a_freihand_right_hand_right(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for stem in ("00000355", "00017620"):
        _image_video(REAL / "freihand" / "training" / "rgb" / f"{stem}.jpg", videos / f"freihand_{stem}.avi")
    report = detect(videos, tmp_path / "boxes.csv", workers=2, env=DETECT_ENV, progress=False)
    assert all(e["status"] == "ok" and e["boxes"] >= 1 for e in report["per_video"]), report["per_video"]
    rows = _rows(tmp_path / "boxes.csv")
    assert rows and {r["side"] for r in rows} == {"R"}
    assert set(pq.read_table(landmarks_path(tmp_path / "boxes.csv")).column("mediapipe_label").to_pylist()) == \
        {"Left"}


@needs_env
def test_real_detector_on_real_video_uses_decords_frame_indices(tmp_path):
    import decord

    video = REAL / "videos" / "mmaction2_test_makeup.avi"
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / video.name).symlink_to(video)
    _video(videos, "broken.mp4", "not a video")
    report = detect(videos, tmp_path / "boxes.csv", env=DETECT_ENV, progress=False)
    entries = {e["video_id"]: e for e in report["per_video"]}
    assert (entries["broken"]["status"], entries["broken"]["reason"]) == ("failed", "video_unreadable")
    e = entries["mmaction2_test_makeup"]
    assert e["frames"] == e["frames_decoded"] == len(decord.VideoReader(str(video))) == 164
    rows = _rows(tmp_path / "boxes.csv")
    frames = [int(r["frame"]) for r in rows]
    assert len(set(frames)) >= 150 and max(frames) < 164
    assert sum(r["side"] == "R" for r in rows) >= 0.9 * len(rows)
