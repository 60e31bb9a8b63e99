"""Training-time data problems: counted per reason, warned about at a limited rate, exposed for logging."""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("handclr.stream")

WARN_INTERVAL_S = 60.0
_last_warn: dict[str, float] = {}  # per process, across epochs: a new epoch's counters do not re-arm warnings


class StreamStats:
    """Per-worker counters. Problems (`skip`) warn at most once per reason per WARN_INTERVAL_S with the count
    since the last warning; progress counters (`add`) never warn. Both travel with every batch."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.skips: Counter = Counter()
        self._unwarned: Counter = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def skip(self, reason: str, message: str) -> None:
        self.skips[reason] += 1
        self._unwarned[reason] += 1
        now = time.monotonic()
        if now - _last_warn.get(reason, -WARN_INTERVAL_S) >= WARN_INTERVAL_S:
            log.warning("stream skipped (%s) x%d: %s", reason, self._unwarned[reason], message)
            _last_warn[reason] = now
            self._unwarned[reason] = 0

    def snapshot(self) -> dict:
        return {"counts": dict(self.counts), "skips": dict(self.skips)}

    def restore(self, snap: dict) -> None:
        self.counts = Counter(snap.get("counts", {}))
        self.skips = Counter(snap.get("skips", {}))


def merge_snapshots(snaps) -> dict:
    counts, skips = Counter(), Counter()
    for s in snaps:
        counts.update(s.get("counts", {}))
        skips.update(s.get("skips", {}))
    return {"counts": dict(sorted(counts.items())), "skips": dict(sorted(skips.items()))}
