"""Samplers against their written formulas: hard constraints over many random clips, and chi-square
goodness of fit of 100k draws per law (p > 0.001 with fixed seeds)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from pipeline.stream.sampling import eligible_anchors, frames_draw, sequence_draw, successive_sample, tempclr_draw

DRAWS = 100_000
# the written formulas, re-stated independently of the module
POSITIVE = {
    "linear": lambda d, k: (k + 1 - d) / k,
    "exponential": lambda d, k: math.exp(-3 * d / k),
    "tanh": lambda d, k: 1 - math.tanh(2 * d / k),
    "uniform": lambda d, k: 1.0,
}
NEGATIVE = {"distance": lambda d: float(d), "uniform": lambda d: 1.0}


def chi_square_p(observed: Counter, expected_p: dict) -> float:
    """p-value of Pearson's chi-square test (chi2 survival = regularised upper incomplete gamma)."""
    n = sum(observed.values())
    assert set(observed) <= set(expected_p), set(observed) - set(expected_p)
    stat = sum((observed.get(c, 0) - n * p) ** 2 / (n * p) for c, p in expected_p.items())
    df = len(expected_p) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def normalised(weights: dict) -> dict:
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


def test_chi_square_helper_rejects_a_wrong_law():
    rng = np.random.default_rng(0)
    draws = Counter(rng.integers(0, 10, DRAWS).tolist())
    assert chi_square_p(draws, {c: 0.1 for c in range(10)}) > 0.001
    skewed = {c: (0.08 if c < 5 else 0.12) for c in range(10)}
    assert chi_square_p(draws, skewed) < 1e-6


def test_window_constraints_hold_everywhere():
    rng = np.random.default_rng(1)
    for _ in range(3000):
        n, k = int(rng.integers(2, 60)), int(rng.integers(1, 20))
        P, N = int(rng.integers(1, 4)), int(rng.integers(0, 4))
        law_p = ("linear", "exponential", "tanh", "uniform")[int(rng.integers(4))]
        d = tempclr_draw(rng, n, k, P, N, law_p, ("distance", "uniform")[int(rng.integers(2))])
        if d is None:
            # no anchor can have P positives and N negatives
            assert all(min(a, k) + min(n - 1 - a, k) < P or n - 1 - min(a, k) - min(n - 1 - a, k) < N
                       for a in range(n))
            continue
        a = d.anchor
        assert 0 <= a < n and len(d.positives) == P and len(d.negatives) == N
        assert all(1 <= abs(int(j) - a) <= k and 0 <= j < n for j in d.positives)
        assert all(abs(int(j) - a) > k and 0 <= j < n for j in d.negatives)
        assert len(set(d.positives.tolist())) == P and len(set(d.negatives.tolist())) == N


@pytest.mark.parametrize("law", list(POSITIVE))
def test_positive_law_first_draw(law):
    rng = np.random.default_rng(2)
    n, k, a = 101, 15, 50
    obs = Counter(int(tempclr_draw(rng, n, k, 1, 1, law, "uniform", np.array([a])).positives[0]) - a
                  for _ in range(DRAWS))
    expected = normalised({o: POSITIVE[law](abs(o), k) for o in range(-k, k + 1) if o != 0})
    assert chi_square_p(obs, expected) > 0.001


@pytest.mark.parametrize("law", list(POSITIVE))
def test_positive_law_at_clip_end_and_without_replacement(law):
    """Anchor at frame 1 of the clip (window truncated on the left); P = 2 ordered pairs follow successive
    sampling: P(i, j) = w_i / W * w_j / (W - w_i)."""
    rng = np.random.default_rng(3)
    n, k, a = 40, 5, 1
    window = [j for j in range(n) if 1 <= abs(j - a) <= k]
    w = {j: POSITIVE[law](abs(j - a), k) for j in window}
    W = sum(w.values())
    expected = {(i, j): w[i] / W * w[j] / (W - w[i]) for i in window for j in window if i != j}
    obs = Counter(tuple(int(v) for v in tempclr_draw(rng, n, k, 2, 1, law, "distance", np.array([a])).positives)
                  for _ in range(DRAWS))
    assert chi_square_p(obs, expected) > 0.001


@pytest.mark.parametrize("law", list(NEGATIVE))
def test_negative_law(law):
    rng = np.random.default_rng(4)
    n, k, a = 61, 5, 20
    outside = [j for j in range(n) if abs(j - a) > k]
    expected = normalised({j: NEGATIVE[law](abs(j - a)) for j in outside})
    obs = Counter(int(tempclr_draw(rng, n, k, 1, 1, "linear", law, np.array([a])).negatives[0])
                  for _ in range(DRAWS))
    assert chi_square_p(obs, expected) > 0.001


def test_anchor_is_uniform_over_eligible_anchors():
    rng = np.random.default_rng(5)
    n, k, P, N = 30, 5, 3, 20
    eligible = [a for a in range(n)
                if min(a, k) + min(n - 1 - a, k) >= P and n - 1 - min(a, k) - min(n - 1 - a, k) >= N]
    assert eligible_anchors(n, k, P, N).tolist() == eligible
    assert 0 < len(eligible) < n  # anchors near the middle lack N negatives outside their window
    obs = Counter(tempclr_draw(rng, n, k, P, N).anchor for _ in range(DRAWS // 5))
    assert chi_square_p(obs, {a: 1 / len(eligible) for a in eligible}) > 0.001


def test_short_clip_has_no_anchor():
    assert tempclr_draw(np.random.default_rng(0), 10, 15, 1, 1) is None  # every frame is inside every window
    assert tempclr_draw(np.random.default_rng(0), 17, 15, 1, 1) is not None  # frames 0 and 16 are 16 apart


def test_successive_sample_matches_plackett_luce():
    rng = np.random.default_rng(6)
    cands, w = np.arange(4), np.array([1.0, 2.0, 3.0, 4.0])
    obs = Counter(tuple(successive_sample(rng, cands, w, 2).tolist()) for _ in range(DRAWS))
    expected = {(i, j): w[i] / 10 * w[j] / (10 - w[i]) for i in range(4) for j in range(4) if i != j}
    assert chi_square_p(obs, expected) > 0.001


def test_sequence_draw():
    rng = np.random.default_rng(7)
    n, length, interval = 20, 3, 3
    starts = Counter()
    for _ in range(DRAWS // 5):
        pos = sequence_draw(rng, n, length, interval)
        assert np.array_equal(np.diff(pos), [interval] * (length - 1)) and pos[-1] < n
        starts[int(pos[0])] += 1
    span = (length - 1) * interval
    assert chi_square_p(starts, {s: 1 / (n - span) for s in range(n - span)}) > 0.001
    assert sequence_draw(rng, 6, 3, 3) is None and sequence_draw(rng, 7, 3, 3) is not None


def test_frames_draw_distinct_and_uniform():
    rng = np.random.default_rng(8)
    firsts = Counter()
    for _ in range(DRAWS // 5):
        f = frames_draw(rng, 12, 3)
        assert len(set(f.tolist())) == 3
        firsts[int(f[0])] += 1
    assert chi_square_p(firsts, {i: 1 / 12 for i in range(12)}) > 0.001
    assert len(frames_draw(rng, 2, 5)) == 2
