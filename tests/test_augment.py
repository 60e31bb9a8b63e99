"""Affine map and both executors against hand-computed cases and independent NumPy re-derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.augment.affine import view_affine as view_affine_batch
from pipeline.augment.colour import colour_matrix, identity_appearance
from pipeline.augment.cv2_exec import warp_frame
from pipeline.augment.params import PECLR, TEMPCLR
from pipeline.augment.torch_exec import augment_pixels, model_input, normalise

LUMA = np.array([0.299, 0.587, 0.114])


def view_affine(box, offset, out, margin, angle=0.0, scale=1.0, tx=0.0, ty=0.0) -> np.ndarray:
    """One view through the batched function."""
    return view_affine_batch(np.array([box]), np.array([offset]), out, margin, np.array([[angle, scale, tx, ty]]))[0]


def apply(A, x, y):
    return A @ np.array([x, y, 1.0])


def test_affine_identity_hand_case():
    # box edges x 10..110, y 20..80: side 100 at margin 1 -> one stored pixel per output pixel
    A = view_affine((10, 20, 110, 80), (0, 0), 100, 1.0)
    np.testing.assert_allclose(A, [[1, 0, 10], [0, 1, 0]], atol=1e-12)
    A16 = view_affine((10, 20, 110, 80), (16, 16), 100, 1.0)
    np.testing.assert_allclose(A16[:, 2], [26, 16], atol=1e-12)


def test_affine_rotation_scale_translation_hand_case():
    # k = 100 / (100 * 2) = 0.5; stored c + (10, 0) -> out = 2 R(90°)(10, 0) + 49.5 + (10, 0) = (59.5, 69.5)
    A = view_affine((0, 0, 100, 100), (0, 0), 100, 1.0, math.pi / 2, 2.0, 0.1, 0.0)
    np.testing.assert_allclose(apply(A, 59.5, 69.5), [59.5, 49.5], atol=1e-9)
    # margin 2 halves the magnification: the same stored offset lands half as far from the centre
    A2 = view_affine((0, 0, 100, 100), (0, 0), 100, 2.0, 0.0, 1.0)
    np.testing.assert_allclose(apply(A2, 49.5 + 5, 49.5), [49.5 + 10, 49.5], atol=1e-9)


def smooth_frames(rng, b, v, s):
    yy, xx = np.mgrid[0:s, 0:s]
    out = np.zeros((b, v, s, s, 3), np.uint8)
    for i in range(b):
        for j in range(v):
            ph = rng.uniform(0, 6, 3)
            img = np.stack([127 + 100 * np.sin(xx / 11 + ph[c]) * np.cos(yy / 13 + c) for c in range(3)], -1)
            out[i, j] = np.clip(np.rint(img), 0, 255)
    return out


def numpy_bilinear(img: np.ndarray, A: np.ndarray, o: int, fill: float) -> np.ndarray:
    """Reference warp: out[v, u] = bilinear(img) at A (u, v, 1), with `fill` outside the image."""
    s = img.shape[0]
    pad = np.full((s + 2, s + 2, 3), fill, np.float64)
    pad[1:-1, 1:-1] = img
    u, v = np.meshgrid(np.arange(o), np.arange(o))
    x = A[0, 0] * u + A[0, 1] * v + A[0, 2] + 1
    y = A[1, 0] * u + A[1, 1] * v + A[1, 2] + 1
    x, y = np.clip(x, 0, s + 1 - 1e-9), np.clip(y, 0, s + 1 - 1e-9)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = np.minimum(x0 + 1, s + 1), np.minimum(y0 + 1, s + 1)
    return ((1 - fy) * ((1 - fx) * pad[y0, x0] + fx * pad[y0, x1]) + fy * ((1 - fx) * pad[y1, x0] + fx * pad[y1, x1]))


def test_torch_warp_matches_numpy_bilinear():
    rng = np.random.default_rng(0)
    frames = smooth_frames(rng, 2, 2, 64)
    aff = np.stack([[view_affine((10, 12, 50, 44), (0, 0), 48, 1.5, *g) for g in TEMPCLR.geometry.draw(rng, 2)]
                    for _ in range(2)])
    app = np.tile(identity_appearance(), (2, 2, 1))
    out = augment_pixels(torch.from_numpy(frames), torch.from_numpy(aff), torch.from_numpy(app), 48,
                         torch.tensor([0.0, 40.0])).numpy()
    for b in range(2):
        for v in range(2):
            ref = numpy_bilinear(frames[b, v].astype(np.float64), aff[b, v], 48, [0.0, 40.0][b])
            np.testing.assert_allclose(out[b * 2 + v].transpose(1, 2, 0), ref, atol=2e-3)


@pytest.mark.parametrize("spec", [TEMPCLR, PECLR], ids=["tempclr", "peclr"])
def test_executors_agree_within_one_grey_level(spec):
    rng = np.random.default_rng(1)
    b, v, s, o = 3, 4, 128, 96
    frames = smooth_frames(rng, b, v, s)
    aff = np.stack([[view_affine((30, 34, 90, 100), (0, 0), o, 1.5, *spec.geometry.draw(rng, 1)[0]) for _ in range(v)]
                    for _ in range(b)])
    app = np.stack([spec.appearance.draw(rng, v) for _ in range(b)])
    app[0, 0, 3] = 1.0  # at least one Sobel frame
    app[1, 1, 4] = 1.0  # and one colour drop
    fills = [0, 17, 255]
    ref = augment_pixels(torch.from_numpy(frames), torch.from_numpy(aff), torch.from_numpy(app), o,
                         torch.tensor(fills, dtype=torch.float32)).numpy()
    for i in range(b):
        for j in range(v):
            rgbx = np.concatenate([frames[i, j], np.zeros((s, s, 1), np.uint8)], -1)
            out = np.zeros((o, o, 3), np.uint8)
            warp_frame(rgbx, aff[i, j], app[i, j], out, fills[i])
            diff = np.abs(out.astype(np.float64) - np.rint(ref[i * v + j].transpose(1, 2, 0)))[2:-2, 2:-2]
            assert diff.max() <= 1.0, (i, j, app[i, j])


def test_colour_matrix_properties():
    rng = np.random.default_rng(2)
    v = rng.uniform(0, 255, (50, 3))
    grey = np.full(3, 80.0)
    p = identity_appearance()
    np.testing.assert_allclose(colour_matrix(p), np.hstack([np.eye(3), np.zeros((3, 1))]), atol=1e-12)
    p = identity_appearance()
    p[5] = 1.3  # hue rotation keeps greys and luma
    M = colour_matrix(p)
    np.testing.assert_allclose(M[:, :3] @ grey, grey, atol=1e-2)
    np.testing.assert_allclose(LUMA @ (M[:, :3] @ v.T), LUMA @ v.T, atol=1e-2)
    p[5] = 2 * math.pi
    np.testing.assert_allclose(colour_matrix(p)[:, :3], np.eye(3), atol=1e-9)
    p = identity_appearance()
    p[6] = 0.0  # no saturation: every channel is the luma
    out = colour_matrix(p)[:, :3] @ v.T
    np.testing.assert_allclose(out, np.tile(LUMA @ v.T, (3, 1)), atol=1e-9)
    p = identity_appearance()
    p[7], p[8] = 0.5, 10.0
    M = colour_matrix(p)
    np.testing.assert_allclose(M[:, :3] @ np.full(3, 200.0) + M[:, 3], np.full(3, 110.0), atol=1e-9)
    p = identity_appearance()
    p[0:3], p[4] = (0.5, 1.0, 1.5), 1.0  # channel gains, then colour drop: luma of the scaled colour
    out = colour_matrix(p)[:, :3] @ v.T
    np.testing.assert_allclose(out, np.tile(LUMA @ (v * [0.5, 1.0, 1.5]).T, (3, 1)), atol=1e-9)


def test_sobel_of_a_ramp_hand_case():
    # I = 3x + 20: Sobel-x = 8 * 3 = 24, Sobel-y = 0, magnitude / 4 = 6 everywhere away from the border
    s = 40
    img = np.repeat((3 * np.arange(s) + 20)[None, :, None], s, 0).repeat(3, 2).astype(np.uint8)
    A = view_affine((0, 0, s, s), (0, 0), s, 1.0)
    p = identity_appearance()
    p[3] = 1.0
    t = augment_pixels(torch.from_numpy(img[None, None]), torch.from_numpy(A[None, None]),
                       torch.from_numpy(p[None, None]), s).numpy()[0]
    np.testing.assert_allclose(t[:, 2:-2, 2:-2], 6.0, atol=1e-4)
    out = np.zeros((s, s, 3), np.uint8)
    warp_frame(np.concatenate([img, np.zeros((s, s, 1), np.uint8)], -1), A, p, out)
    assert (out[2:-2, 2:-2] == 6).all()


def test_normalise_and_model_input_of_a_warped_batch():
    px = torch.full((2, 3, 4, 4), 255.0)
    out = normalise(px, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [2.0, 1.0, 0.5], atol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last)
    batch = {"frames": torch.full((1, 2, 4, 4, 3), 255, dtype=torch.uint8), "warped": True}
    x = model_input(batch, 4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert x.shape == (2, 3, 4, 4) and torch.allclose(x, torch.ones_like(x))


def test_parameter_draws_stay_in_range():
    rng = np.random.default_rng(3)
    g = TEMPCLR.geometry.draw(rng, 2000)
    assert np.abs(g[:, 0]).max() <= math.radians(45) and g[:, 1].min() >= 0.6 and g[:, 1].max() <= 2.0
    assert np.abs(g[:, 2:]).max() <= 0.3
    g = PECLR.geometry.draw(rng, 2000)
    assert np.abs(g[:, 2:]).max() <= 15 / 128 + 1e-12
    a = TEMPCLR.appearance.draw(rng, 4000)
    assert a[:, 0:3].min() >= 0.6 and a[:, 0:3].max() <= 1.4
    assert abs(a[:, 3].mean() - 0.1) < 0.03 and abs(a[:, 4].mean() - 0.2) < 0.04
    a = PECLR.appearance.draw(rng, 2000)
    assert a[:, 6].min() >= 0.01 and a[:, 6].max() <= 1.0
    assert a[:, 7].min() >= 0.5 and a[:, 8].min() >= 5 and a[:, 8].max() <= 20


def test_affines_invert_the_documented_forward_map():
    """out = (1/k) R(a) (x - c) + o + t O with k = margin * side / (O * scale): re-derived here, per view."""
    rng = np.random.default_rng(4)
    x0y0 = rng.uniform(0, 150, (6, 2))
    boxes = np.hstack([x0y0, x0y0 + rng.uniform(5, 100, (6, 2))])
    offsets = rng.integers(0, 20, (6, 2)).astype(float)
    geometry = TEMPCLR.geometry.draw(rng, 6)
    affines = view_affine_batch(boxes, offsets, 224, 1.5, geometry)
    for i in range(6):
        a, sc, tx, ty = geometry[i]
        c = (boxes[i, :2] + boxes[i, 2:]) / 2 - 0.5 + offsets[i]
        k = 1.5 * max(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) / (224 * sc)
        R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        x = rng.uniform(0, 256, 2)
        out = R @ (x - c) / k + 111.5 + np.array([tx, ty]) * 224
        np.testing.assert_allclose(apply(affines[i], *out), x, atol=1e-9)
