"""Errors and the skip counter: bad input is either a clear error or a counted, logged skip."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("handclr")


class HandclrError(Exception):
    """Base class of the errors this package raises on bad input."""


class LayoutError(HandclrError):
    """A dataset root is missing or is not in the expected official layout."""


class ConfigError(HandclrError):
    """A config, recipe or command-line value is missing, of the wrong type or out of range."""


class StrictModeError(HandclrError):
    """A skip happened under --strict."""


class StreamError(HandclrError):
    """A stream that cannot run as configured (no shards, no usable item in a whole pass, bad setting)."""


class TrainError(HandclrError):
    """A training run that cannot go on (non-finite steps in a row, an unusable checkpoint, a bad resume)."""


class SkipError(HandclrError):
    """One item (frame, clip, sample, annotation) cannot be used. `reason` is the counter's key
    (`image_undecodable`, `annotation_forbidden`, `corrupt_labels`, ...); the message names the file and the
    problem. Callers catch it, count it and go on; only layout-level problems are errors that stop a run."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class SkipCounter:
    """Counts skipped clips and frames by reason; logs the first occurrence of each reason.

    Every skip names the file and the problem. Under `strict` the first skip raises instead.
    """

    strict: bool = False
    clips: Counter = field(default_factory=Counter)
    frames: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, where: str, *, frames: int = 0, clips: int = 0) -> None:
        message = f"skipped ({reason}): {where}"
        if self.strict:
            raise StrictModeError(message)
        if reason not in self.examples:
            self.examples[reason] = where
            log.warning("%s (further skips of this kind are only counted)", message)
        if frames:
            self.frames[reason] += frames
        if clips:
            self.clips[reason] += clips

    def merge(self, other: SkipCounter) -> None:
        self.clips.update(other.clips)
        self.frames.update(other.frames)
        for reason, where in other.examples.items():
            self.examples.setdefault(reason, where)

    def to_dict(self) -> dict:
        return {"clips": dict(sorted(self.clips.items())), "frames": dict(sorted(self.frames.items())),
                "examples": dict(sorted(self.examples.items()))}

    @classmethod
    def from_dict(cls, data: dict, strict: bool = False) -> SkipCounter:
        return cls(strict, Counter(data.get("clips", {})), Counter(data.get("frames", {})),
                   dict(data.get("examples", {})))
