"""Pure samplers over a seeded numpy Generator: which frames of a clip form one training item.

Positions are indices into a clip sample's stored frames (consecutive stored frames; a dropped corrupt
frame does not open a gap in positions). Distance d = |j - a| from the anchor a.

TempCLR (window half-width k, P positives, N negatives):
    window  T(a) = {j : 1 <= d <= k, 0 <= j < n}          (truncated at clip ends, never shifted)
    outside O(a) = {j : d > k, 0 <= j < n}
    eligible anchors: |T(a)| >= P and |O(a)| >= N; the anchor is uniform over them. A clip with no
    eligible anchor yields no item (the stream counts it as `too_short_for_negatives`).
    positives: P draws from T(a) without replacement, successive sampling with weights w_pos(d):
        linear       w = (k + 1 - d) / k
        exponential  w = exp(-3 d / k)
        tanh         w = 1 - tanh(2 d / k)
        uniform      w = 1
    negatives: N draws from O(a) without replacement, successive sampling with weights
        distance     w = d            (TempCLR: "directly proportional to the distance")
        uniform      w = 1
Successive sampling: the first draw picks j with probability w_j / Σ w; each further draw renormalises
over the frames not yet drawn. It is implemented exactly as Gumbel-top-m (argsort of log w + Gumbel noise).

PeCLR / SimCLR: m distinct frames, uniform without replacement; each becomes an item with two views.
Sequence (S2HAND(V)-style): n frames at a fixed interval Δ, start s uniform over [0, len - (n-1)Δ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIVE_LAWS = ("linear", "exponential", "tanh", "uniform")
NEGATIVE_LAWS = ("distance", "uniform")


def positive_weights(d: np.ndarray, k: int, law: str) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if law == "linear":
        return (k + 1 - d) / k
    if law == "exponential":
        return np.exp(-3.0 * d / k)
    if law == "tanh":
        return 1.0 - np.tanh(2.0 * d / k)
    if law == "uniform":
        return np.ones_like(d)
    raise ValueError(f"unknown positive law {law!r}; choose one of {POSITIVE_LAWS}")


def negative_weights(d: np.ndarray, law: str) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if law == "distance":
        return d.copy()
    if law == "uniform":
        return np.ones_like(d)
    raise ValueError(f"unknown negative law {law!r}; choose one of {NEGATIVE_LAWS}")


def successive_sample(rng: np.random.Generator, candidates: np.ndarray, weights: np.ndarray, m: int) -> np.ndarray:
    """m distinct candidates by successive sampling ∝ weights (Gumbel-top-m), in draw order."""
    keys = np.log(weights) + rng.gumbel(size=len(candidates))
    return candidates[np.argsort(-keys, kind="stable")[:m]]


def window_counts(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """|T(a)| and |O(a)| for every anchor a of an n-frame clip."""
    a = np.arange(n)
    inside = np.minimum(a, k) + np.minimum(n - 1 - a, k)
    return inside, n - 1 - inside


def eligible_anchors(n: int, k: int, positives: int, negatives: int) -> np.ndarray:
    inside, outside = window_counts(n, k)
    return np.flatnonzero((inside >= positives) & (outside >= negatives))


@dataclass(frozen=True)
class TempclrDraw:
    anchor: int
    positives: np.ndarray
    negatives: np.ndarray


def tempclr_draw(rng: np.random.Generator, n: int, k: int, positives: int, negatives: int,
                 positive_law: str = "linear", negative_law: str = "distance",
                 anchors: np.ndarray | None = None) -> TempclrDraw | None:
    """One (anchor, positives, negatives) item, or None when the clip has no eligible anchor."""
    if anchors is None:
        anchors = eligible_anchors(n, k, positives, negatives)
    if len(anchors) == 0:
        return None
    a = int(anchors[rng.integers(len(anchors))])
    j = np.arange(n)
    d = np.abs(j - a)
    window, outside = j[(d >= 1) & (d <= k)], j[d > k]
    pos = successive_sample(rng, window, positive_weights(np.abs(window - a), k, positive_law), positives)
    neg = successive_sample(rng, outside, negative_weights(np.abs(outside - a), negative_law), negatives)
    return TempclrDraw(a, pos, neg)


def frames_draw(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """min(m, n) distinct positions, uniform without replacement (PeCLR / SimCLR items)."""
    return rng.permutation(n)[:min(m, n)]


def sequence_draw(rng: np.random.Generator, n: int, length: int, interval: int) -> np.ndarray | None:
    """Positions s, s+Δ, ..., s+(length-1)Δ with s uniform; None when the clip is too short."""
    span = (length - 1) * interval
    if n <= span:
        return None
    return int(rng.integers(n - span)) + interval * np.arange(length)
