"""Hand detector worker: runs inside `.venv-detect` (mediapipe 0.10.21 pins numpy<2 and its own OpenCV), one
video per process, and speaks JSON lines on stdout. It imports only the standard library, numpy, decord and
mediapipe, never the rest of `pipeline`, so it runs as a plain script: `.venv-detect/bin/python worker.py VIDEO`.

Protocol (one JSON object per line, in this order):
  {"type": "open", "protocol": 1, "frames": N, "detector": {...}}       N = decord's len(VideoReader)
  {"type": "frame", "frame": i, "width": W, "height": H,
   "hands": [{"label": "Left"|"Right", "handedness": p, "landmarks": [[x, y, z] x 21]}]}
      ... one per decoded frame, i = 0, 1, ... in decord's order; x, y in pixels, z MediaPipe's relative depth;
      `label` is MediaPipe's raw (mirrored-selfie) handedness, not yet swapped; `handedness` its probability.
  {"type": "frame_error", "frame": i, "message": "..."}  decoding stopped at frame i (later frames are lost too)
  {"type": "end", "frames_decoded": k}
or, when the video cannot be read at all, a single {"type": "error", "reason": "...", "message": "..."} line.
Frames are decoded exactly as the sharder does (pipeline/sources/video.py): decord, one thread, `next()` in
order, so the frame indices are the sharder's (decord repeats trailing frames of some files; so do we).
"""

from __future__ import annotations

import json
import os
import sys

PROTOCOL = 1
# The settings the reference boxes in shared/realdata were made with; the legacy API exposes no detection score.
DETECTOR = {"name": "mediapipe.solutions.hands", "static_image_mode": False, "max_num_hands": 2,
            "model_complexity": 1, "min_detection_confidence": 0.5, "min_tracking_confidence": 0.5}


def _first_line(exc: Exception) -> str:
    """decord errors carry a C++ backtrace after the first line."""
    lines = str(exc).splitlines()
    return lines[0] if lines else repr(exc)


def _open(path: str):
    """decord reader of `path`, or an error record (a FIFO would block decord forever, so regular files only)."""
    import decord

    if not os.path.isfile(path):
        return {"type": "error", "reason": "video_not_a_file", "message": f"{path}: not a regular file"}
    try:
        reader = decord.VideoReader(path, num_threads=1)
        length = len(reader)
    except Exception as exc:  # decord raises DECORDError or RuntimeError on bad containers
        return {"type": "error", "reason": "video_unreadable", "message": f"{path}: cannot open ({_first_line(exc)})"}
    if length <= 0:
        return {"type": "error", "reason": "video_empty", "message": f"{path}: video has no frames"}
    return reader


def _hands(result, width: int, height: int) -> list[dict]:
    """Landmarks in pixels with MediaPipe's raw handedness label and probability, per detected hand."""
    out = []
    for marks, handed in zip(result.multi_hand_landmarks or (), result.multi_handedness or (), strict=True):
        best = handed.classification[0]
        points = [[round(p.x * width, 2), round(p.y * height, 2), round(p.z, 5)] for p in marks.landmark]
        out.append({"label": best.label, "handedness": round(best.score, 5), "landmarks": points})
    return out


def _frames(reader, path: str, emit):
    """(index, RGB frame) in decord's order via `next()`, as the sharder reads; stops at the first failure."""
    for index in range(len(reader)):
        try:
            frame = reader.next().asnumpy()
        except Exception as exc:  # a truncated stream surfaces as a decord error mid-way
            emit({"type": "frame_error", "frame": index, "message": f"{path}: frame {index}: {_first_line(exc)}"})
            return
        frame.flags.writeable = False
        yield index, frame


def detect(path: str, emit) -> None:
    """Decode every frame of `path` in order and emit the protocol records for it."""
    reader = _open(path)
    if isinstance(reader, dict):
        emit(reader)
        return
    import mediapipe as mp

    emit({"type": "open", "protocol": PROTOCOL, "frames": len(reader),
          "detector": {**DETECTOR, "mediapipe": mp.__version__}})
    decoded = 0
    with mp.solutions.hands.Hands(**{k: v for k, v in DETECTOR.items() if k != "name"}) as hands:
        for index, frame in _frames(reader, path, emit):
            height, width = frame.shape[:2]
            emit({"type": "frame", "frame": index, "width": width, "height": height,
                  "hands": _hands(hands.process(frame), width, height)})
            decoded += 1
    emit({"type": "end", "frames_decoded": decoded})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: worker.py VIDEO", file=sys.stderr)
        return 2
    # The protocol gets its own copy of stdout; fd 1 goes to stderr so native log lines cannot corrupt it.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    detect(argv[0], lambda record: protocol.write(json.dumps(record) + "\n"))
    protocol.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
