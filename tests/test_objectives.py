"""Losses against independent NumPy re-implementations, hand-computed 2-item cases, and PeCLR's
equivariance property."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.objectives import (
    equivariant_nt_xent,
    info_nce,
    invert_geometry,
    nt_xent,
    time_contrastive,
    time_contrastive_masks,
)


def np_info_nce(z, queries, pos, neg, tau, with_positive):
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    for qi, q in enumerate(queries):
        s = zn[q] @ zn.T / tau
        negsum = sum(math.exp(s[n]) for n in np.flatnonzero(neg[qi]))
        for p in np.flatnonzero(pos[qi]):
            denom = negsum + (math.exp(s[p]) if with_positive else 0.0)
            losses.append(-math.log(math.exp(s[p]) / denom))
    return float(np.mean(losses))


@pytest.mark.parametrize("with_positive", [True, False])
def test_info_nce_matches_numpy(with_positive):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 8))
    queries = np.array([0, 3, 7])
    pos = rng.random((3, 12)) < 0.3
    neg = (rng.random((3, 12)) < 0.5) & ~pos
    pos[:, 0] = True
    neg[:, 11] = True
    got = info_nce(torch.from_numpy(z), torch.from_numpy(queries), torch.from_numpy(pos), torch.from_numpy(neg),
                   0.3, with_positive)
    assert float(got) == pytest.approx(np_info_nce(z, queries, pos, neg, 0.3, with_positive), rel=1e-5)


def test_nt_xent_two_items_by_hand():
    # a = a' = (1, 0), b = (0, 1), b' = (-1, 0); τ = 1. Cosines: a·a' = 1, a·b = 0, a·b' = -1, b·b' = 0.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    e = math.e
    la = -math.log(e / (e + 1 + 1 / e))  # rows a and a': positive 1, negatives b (0) and b' (-1)
    lb = -math.log(1 / (1 + 1 + e ** 0))  # row b: positive b' (0), negatives a, a' (0, 0)
    lb2 = -math.log(1 / (1 + 1 / e + 1 / e))  # row b': positive b (0), negatives a, a' (-1, -1)
    expected = (2 * la + lb + lb2) / 4
    got = nt_xent(z, torch.tensor([0, 0, 1, 1]), 1.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def np_time_contrastive(z, item, role, clip, position, window, tau, batch_negatives, with_positive):
    queries = np.flatnonzero(role == 0)
    pos = np.zeros((len(queries), len(z)), bool)
    neg = np.zeros_like(pos)
    for qi, q in enumerate(queries):
        for j in range(len(z)):
            own = item[j] == item[q]
            pos[qi, j] = own and role[j] == 1
            if own:
                neg[qi, j] = role[j] == 2
            elif batch_negatives:
                neg[qi, j] = not (clip[j] == clip[q] and abs(position[j] - position[q]) <= window[q])
    return np_info_nce(z, queries, pos, neg, tau, with_positive), pos, neg


@pytest.mark.parametrize("batch_negatives", [False, True])
@pytest.mark.parametrize("with_positive", [True, False])
def test_time_contrastive_matches_numpy(batch_negatives, with_positive):
    rng = np.random.default_rng(1)
    items, views = 6, 5  # anchor, 2 positives, 2 negatives
    item = np.repeat(np.arange(items), views)
    role = np.tile([0, 1, 1, 2, 2], items)
    clip = np.repeat(rng.integers(0, 3, items), views)  # several items share clips: windows overlap
    position = rng.integers(0, 40, items * views)
    window = np.full(items * views, 5)
    z = rng.normal(size=(items * views, 16))
    expected, pos, neg = np_time_contrastive(z, item, role, clip, position, window, 0.2, batch_negatives,
                                             with_positive)
    t = [torch.from_numpy(a) for a in (item, role, clip, position, window)]
    q, tpos, tneg = time_contrastive_masks(*t, batch_negatives)
    assert np.array_equal(tpos.numpy(), pos) and np.array_equal(tneg.numpy(), neg)
    got = time_contrastive(torch.from_numpy(z), *t, 0.2, batch_negatives, with_positive)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_time_contrastive_single_item_by_hand():
    # anchor (1,0), positive (1,0), negative (0,1); τ = 0.5: s_ap = 2, s_an = 0
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ids = [torch.tensor(v) for v in ([0, 0, 0], [0, 1, 2], [7, 7, 7], [10, 12, 30], [5, 5, 5])]
    std = time_contrastive(z, *ids, 0.5)
    eq2 = time_contrastive(z, *ids, 0.5, positive_in_denominator=False)
    assert float(std) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)
    assert float(eq2) == pytest.approx(-2.0, rel=1e-6)  # -log(e^2 / e^0): Eq. 2 can go below zero


def forward_geometry(p: np.ndarray, theta: float, scale: float, t: np.ndarray) -> np.ndarray:
    """The transform a view applies, in latent space: rotate and scale about the centroid, then shift by
    t times the rotated points' extent."""
    c = p.mean(0)
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    r = scale * (p - c) @ R.T + c
    return r + t * (r.max(0) - r.min(0))


def test_inverse_geometry_undoes_the_view_transform():
    rng = np.random.default_rng(2)
    for _ in range(20):
        p = rng.normal(size=(64, 2))
        theta, t = rng.uniform(-math.pi / 4, math.pi / 4), rng.uniform(-0.12, 0.12, 2)
        q = forward_geometry(p, theta, 1.0, t)
        back = invert_geometry(torch.from_numpy(q.reshape(1, -1)), torch.tensor([[theta, 1.0, *t]]))
        np.testing.assert_allclose(back.numpy().reshape(64, 2), p, atol=1e-9)
        s = rng.uniform(0.6, 2.0)  # scale is left in place (about the centroid): cosine similarity ignores it
        q = forward_geometry(p, theta, s, t)
        back = invert_geometry(torch.from_numpy(q.reshape(1, -1)), torch.tensor([[theta, s, *t]]))
        np.testing.assert_allclose(back.numpy().reshape(64, 2), s * (p - p.mean(0)) + p.mean(0), atol=1e-9)


def test_equivariant_loss_is_blind_to_each_views_transform():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 64, 2))
    geometry = np.stack([[rng.uniform(-0.7, 0.7), 1.0, *rng.uniform(-0.1, 0.1, 2)] for _ in range(8)])
    views = np.stack([forward_geometry(base[i // 2], geometry[i, 0], 1.0, geometry[i, 2:]) for i in range(8)])
    item = torch.arange(4).repeat_interleave(2)
    got = equivariant_nt_xent(torch.from_numpy(views.reshape(8, -1)), torch.from_numpy(geometry), item, 0.5)
    ideal = nt_xent(torch.from_numpy(np.repeat(base, 2, axis=0).reshape(8, -1)), item, 0.5)
    assert float(got) == pytest.approx(float(ideal), rel=1e-6)
    plain = nt_xent(torch.from_numpy(views.reshape(8, -1)), item, 0.5)
    assert float(plain) > float(got) + 1e-3  # without the inverse, the transforms cost similarity
