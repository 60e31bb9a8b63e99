"""Sequential video decoding with decord: random access into H.264 costs 23-110 ms per 8 frames, so
frames are read in increasing order, skipping forward, with a seek only for long jumps."""

from __future__ import annotations

import numpy as np

from pipeline.errors import SkipError
from pipeline.sources.files import VIDEO, check_file

# Beyond this many frames, seeking to the previous key frame is cheaper than decoding through.
SEEK_DISTANCE = 250


def _first_line(exc: Exception) -> str:
    """decord errors carry a C++ backtrace after the first line."""
    lines = str(exc).splitlines()
    return lines[0] if lines else repr(exc)


class SequentialVideo:
    """Reads frames of one video in increasing index order; returns RGB uint8 arrays."""

    def __init__(self, path: str) -> None:
        import decord

        self.path = path
        check_file(path, VIDEO)  # decord would block forever on a FIFO
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
            self.length = len(self._reader)
        except Exception as exc:  # decord raises its own DECORDError or RuntimeError on bad containers
            raise SkipError("video_unreadable", f"{path}: cannot open video ({_first_line(exc)})") from exc
        if self.length <= 0:
            raise SkipError("video_unreadable", f"{path}: video has no frames")
        self._next = 0

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.length:
            raise SkipError("frame_missing", f"{self.path}: frame {index} beyond the video's {self.length} frames")
        try:
            if index < self._next or index - self._next > SEEK_DISTANCE:
                self._reader.seek_accurate(index)
            elif index > self._next:
                self._reader.skip_frames(index - self._next)
            frame = self._reader.next().asnumpy()
        except Exception as exc:  # truncated streams surface as decord errors mid-way
            self._next = self.length
            raise SkipError("frame_undecodable", f"{self.path}: frame {index}: {_first_line(exc)}") from exc
        self._next = index + 1
        return frame
