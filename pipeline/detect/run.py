"""`handclr detect`: per-frame hand boxes for raw videos, in the box-track CSV the 100DOH video reader reads.

The detector (MediaPipe 0.10.21, which pins numpy<2 and its own OpenCV) runs in `.venv-detect`, one worker
subprocess per video (`worker.py`, JSON lines). This side turns its landmarks into boxes, swaps MediaPipe's
mirrored-selfie handedness for normal footage, and keeps one finished part file per video under
`<out>.parts/` so an interrupted run resumes where it stopped. Outputs, in video order:
`<out>` (video_id,frame,x1,y1,x2,y2,side,score), `<out stem>.landmarks.parquet` (the same rows plus the 21
landmarks; row i is CSV row i) and `detect_report.json` beside `<out>` (every video, with its status).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.atomic import atomic_write, atomic_write_text
from pipeline.errors import HandclrError, SkipCounter, SkipError
from pipeline.sources.base import utf8_names
from pipeline.sources.doh100 import TRACK_COLUMNS, VIDEO_EXTS
from pipeline.sources.files import VIDEO, check_file

WORKER = Path(__file__).with_name("worker.py")
PART_VERSION = 1
META_KEY = b"handclr.detect"
# MediaPipe's legacy graph assumes a mirrored selfie image; raw videos are not mirrored.
SWAP_SIDE = {"Left": "R", "Right": "L"}
SCORE_MEANING = ("score is MediaPipe's handedness probability for `side` (>= 0.5), not a detection confidence: "
                 "the legacy hands API exposes none; every box already passed min_detection_confidence 0.5 and "
                 "min_tracking_confidence 0.5")
SIDE_MEANING = "side is MediaPipe's legacy handedness label swapped (Left->R, Right->L) for non-mirrored footage"
BOX_MEANING = "box = min/max of the 21 landmarks clipped to the image, no margin; boxes under 1 px are dropped"
SCHEMA = pa.schema([("video_id", pa.string()), ("frame", pa.int64()), ("x1", pa.float32()), ("y1", pa.float32()),
                    ("x2", pa.float32()), ("y2", pa.float32()), ("side", pa.string()), ("score", pa.float32()),
                    ("mediapipe_label", pa.string()), ("landmarks", pa.list_(pa.float32(), 42)),
                    ("landmarks_z", pa.list_(pa.float32(), 21))])


def worker_command(env: Path) -> list[str]:
    """The detector's command line; a clear error when its environment has not been built."""
    python = env / "bin" / "python"
    if not python.is_file():
        raise HandclrError(f"the hand detector environment {env} is missing (mediapipe 0.10.21 needs numpy<2 and "
                           f"its own OpenCV, so it lives apart from the main venv): run `make detect-env` first")
    return [str(python), str(WORKER)]


def list_videos(videos: Path) -> tuple[dict[str, Path], list[dict]]:
    """video_id -> file as the 100DOH reader picks it (sorted names, the last of equal stems wins), and report
    entries for the names it cannot use."""
    if not videos.is_dir():
        raise HandclrError(f"--videos {videos} is not a directory")
    counter = SkipCounter()
    files: dict[str, Path] = {}
    skipped = []
    for name in utf8_names(videos, counter, VIDEO_EXTS):
        stem = Path(name).stem
        if stem in files:
            skipped.append(_entry(stem, files[stem], "skipped", "video_id_duplicate",
                                  f"{files[stem]}: the sharder reads {videos / name} for video_id {stem}"))
        files[stem] = videos / name
    for reason, count in counter.frames.items():
        skipped.append(_entry(None, None, "skipped", reason, f"{count} name(s), e.g. {counter.examples[reason]}"))
    return files, skipped


def _entry(video_id: str | None, path: Path | None, status: str, reason: str | None, message: str = "") -> dict:
    return {"video_id": video_id, "file": None if path is None else str(path), "status": status, "reason": reason,
            "message": message, "frames": 0, "frames_decoded": 0, "frames_failed": 0, "frames_with_hands": 0,
            "boxes": 0, "boxes_L": 0, "boxes_R": 0, "boxes_degenerate": 0, "seconds": 0.0, "fps": 0.0}


class _Video:
    """Collects one worker's records into rows and a report entry."""

    def __init__(self, video_id: str, path: Path, on_open, on_frame) -> None:
        self.entry = _entry(video_id, path, "ok", None)
        self.rows: list[dict] = []
        self.ended = False
        self._on_open, self._on_frame = on_open, on_frame

    def feed(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "open":
            self.entry["frames"] = int(record["frames"])
            self._on_open(self.entry["frames"])
        elif kind == "frame":
            self._frame(record)
        elif kind == "frame_error":
            self.entry.update(status="partial", reason="frame_undecodable", message=record["message"])
        elif kind == "error":
            self.entry.update(status="failed", reason=record["reason"], message=record["message"])
            self.ended = True
        elif kind == "end":
            self.ended = True
        else:
            raise ValueError(f"unknown record type {kind!r}")

    def _frame(self, record: dict) -> None:
        entry = self.entry
        if record["frame"] != entry["frames_decoded"]:
            raise ValueError(f"frame {record['frame']} out of order (expected {entry['frames_decoded']})")
        entry["frames_decoded"] += 1
        rows = [r for r in (self._row(record, hand) for hand in record["hands"]) if r is not None]
        entry["frames_with_hands"] += bool(rows)
        self.rows.extend(rows)
        self._on_frame()

    def _row(self, record: dict, hand: dict) -> dict | None:
        points = np.asarray(hand["landmarks"], dtype=np.float64).reshape(21, 3)
        size = np.array([record["width"], record["height"]], dtype=np.float64)
        lo = np.clip(points[:, :2].min(axis=0), 0.0, size)
        hi = np.clip(points[:, :2].max(axis=0), 0.0, size)
        if np.any(hi - lo < 1.0):
            self.entry["boxes_degenerate"] += 1
            return None
        side = SWAP_SIDE[hand["label"]]
        self.entry["boxes"] += 1
        self.entry[f"boxes_{side}"] += 1
        return {"video_id": self.entry["video_id"], "frame": record["frame"], "x1": lo[0], "y1": lo[1], "x2": hi[0],
                "y2": hi[1], "side": side, "score": hand["handedness"], "mediapipe_label": hand["label"],
                "landmarks": points[:, :2].ravel().tolist(), "landmarks_z": points[:, 2].tolist()}

    def finish(self, returncode: int, stderr_tail: str, seconds: float) -> None:
        entry = self.entry
        if entry["status"] != "failed" and (returncode != 0 or not self.ended):
            entry.update(status="failed", reason="worker_failed",
                         message=f"detector exited with status {returncode} after {entry['frames_decoded']} frames"
                                 f": {stderr_tail or 'no message'}")
        entry["frames_failed"] = entry["frames"] - entry["frames_decoded"]
        entry["seconds"] = round(seconds, 3)
        entry["fps"] = round(entry["frames_decoded"] / seconds, 2) if seconds > 0 else 0.0
        if entry["status"] == "ok" and not self.rows:
            entry["reason"] = "no_hands" if entry["frames_decoded"] else "video_empty"


def _tail(f) -> str:
    f.seek(0)
    lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def _run_worker(command: list[str], video: _Video, path: Path) -> None:
    """Feed the worker's JSON lines for `path` into `video`; a garbled line stops the worker as failed."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*command, str(path)], stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            for line in proc.stdout:
                video.feed(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            proc.kill()
            video.entry.update(status="failed", reason="worker_protocol", message=f"{path}: bad worker output ({exc})")
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        video.finish(returncode, _tail(err), time.perf_counter() - start)


def _part_path(parts: Path, video_id: str) -> Path:
    return parts / f"{video_id}.parquet"


def _fingerprint(path: Path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_part(part: Path, path: Path) -> dict | None:
    """The report entry of a finished part made from this very file (same size and mtime), else None."""
    try:
        meta = json.loads(pq.read_schema(part).metadata[META_KEY])
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None
    if meta.get("part_version") != PART_VERSION or meta.get("source") != _fingerprint(path):
        return None
    return {**meta["entry"], "resumed": True}


def _write_part(part: Path, video: _Video, source: dict) -> None:
    meta = {"part_version": PART_VERSION, "source": source, "entry": video.entry}
    table = pa.Table.from_pylist(video.rows, schema=SCHEMA).replace_schema_metadata({META_KEY: json.dumps(meta)})
    atomic_write(part, lambda f: pq.write_table(table, f))


def _check(path: Path) -> dict | None:
    try:
        check_file(path, VIDEO)  # decord would block forever on a FIFO
    except SkipError as exc:
        return _entry(path.stem, path, "failed", exc.reason, str(exc))
    return None


class _Progress:
    """One bar over the frames of all videos; totals grow as workers report their videos' lengths."""

    def __init__(self, enabled: bool) -> None:
        self.bar = tqdm(total=0, unit="frame", desc="detect", disable=not enabled, dynamic_ncols=True)
        self.lock = threading.Lock()

    def add(self, frames: int) -> None:
        with self.lock:
            self.bar.total += frames
            self.bar.refresh()

    def frame(self) -> None:
        with self.lock:
            self.bar.update(1)

    def skip(self, frames: int) -> None:
        with self.lock:
            self.bar.total += frames
            self.bar.update(frames)


def detect_video(command: list[str], video_id: str, path: Path, parts: Path, progress: _Progress) -> dict:
    """Run the detector on one video unless a finished part for it exists; store the part when it finishes."""
    part = _part_path(parts, video_id)
    done = _load_part(part, path) if part.exists() else None
    if done is not None:
        progress.skip(done["frames"])
        return done
    bad = _check(path)
    if bad is not None:
        return bad
    source = _fingerprint(path)
    video = _Video(video_id, path, progress.add, progress.frame)
    _run_worker(command, video, path)
    if video.entry["status"] in ("ok", "partial"):
        _write_part(part, video, source)
    return {**video.entry, "resumed": False}


def _csv_line(row: dict) -> list:
    return [row["video_id"], row["frame"], *(f"{row[k]:.2f}" for k in ("x1", "y1", "x2", "y2")), row["side"],
            f"{row['score']:.4f}"]


def write_outputs(out: Path, landmarks: Path, parts: list[Path]) -> int:
    """Concatenate the parts (video order) into the CSV and the landmark Parquet; returns the row count."""
    meta = {"score": SCORE_MEANING, "side": SIDE_MEANING, "box": BOX_MEANING,
            "landmarks": "21 x (x, y) pixels, MediaPipe order; landmarks_z is MediaPipe's relative depth",
            "rows": f"row i is row i of {out.name}"}
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta)})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TRACK_COLUMNS)
    rows = 0

    def write_parquet(f) -> None:
        nonlocal rows
        with pq.ParquetWriter(f, schema) as pw:
            for part in parts:
                table = pq.read_table(part).replace_schema_metadata(schema.metadata)
                pw.write_table(table)
                writer.writerows(_csv_line(r) for r in table.select(["video_id", "frame", "x1", "y1", "x2", "y2",
                                                                       "side", "score"]).to_pylist())
                rows += table.num_rows

    atomic_write(landmarks, write_parquet)
    atomic_write_text(out, text.getvalue())
    return rows


def landmarks_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.landmarks.parquet")


def detect(videos: Path, out: Path, workers: int = 1, env: Path = Path(".venv-detect"),
           command: list[str] | None = None, progress: bool = True) -> dict:
    """Detect hands in every video under `videos`; returns the report (also written as detect_report.json).

    `command` replaces the detector's command line (tests use a fake worker); the video path is appended.
    """
    if workers < 1:
        raise HandclrError(f"--workers must be at least 1, got {workers}")
    command = command or worker_command(env)
    files, skipped = list_videos(videos)
    parts_dir = out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    bar = _Progress(progress)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        entries = list(pool.map(lambda item: detect_video(command, *item, parts_dir, bar), sorted(files.items())))
    bar.bar.close()
    seconds = time.perf_counter() - start
    finished = [_part_path(parts_dir, e["video_id"]) for e in entries if e["status"] in ("ok", "partial")]
    rows = write_outputs(out, landmarks_path(out), finished)
    report = _report(entries + skipped, rows, seconds, out)
    atomic_write_text(out.with_name("detect_report.json"), json.dumps(report, indent=1) + "\n")
    return report


def _report(entries: list[dict], rows: int, seconds: float, out: Path) -> dict:
    ran = [e for e in entries if not e.get("resumed") and e["status"] in ("ok", "partial")]
    frames = sum(e["frames_decoded"] for e in ran)
    reasons: dict[str, int] = {}
    for e in entries:
        if e["reason"]:
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    return {"csv": str(out), "landmarks": str(landmarks_path(out)), "rows": rows, "score": SCORE_MEANING,
            "side": SIDE_MEANING, "videos": len(entries),
            "status": {s: sum(e["status"] == s for e in entries) for s in ("ok", "partial", "failed", "skipped")},
            "reasons": dict(sorted(reasons.items())), "frames_detected_now": frames, "seconds": round(seconds, 3),
            "fps": round(frames / seconds, 2) if seconds > 0 else 0.0, "per_video": entries}


def print_report(report: dict, stream=sys.stdout) -> None:
    for e in report["per_video"]:
        how = "resumed" if e.get("resumed") else f"{e['fps']:.1f} frames/s"
        why = f" ({e['reason']}{': ' + e['message'] if e['message'] else ''})" if e["reason"] else ""
        print(f"  {e['video_id']}: {e['status']}{why}; frames {e['frames_decoded']}/{e['frames']}, with hands "
              f"{e['frames_with_hands']}, boxes {e['boxes']} (L {e['boxes_L']}, R {e['boxes_R']}); {how}",
              file=stream)
    print(f"detect: {report['videos']} videos {report['status']}; {report['rows']} boxes in {report['csv']}; "
          f"{report['frames_detected_now']} frames detected in {report['seconds']:.1f} s "
          f"({report['fps']:.1f} frames/s)", file=stream)
