"""Hand-computed cases for the pure helpers: boxes, tracks, chunks, crop maps, mirroring, scaled decode."""

from __future__ import annotations

import numpy as np
import simplejpeg

from pipeline.geometry import crop_transform, mirror_camera, mirror_mano_pose
from pipeline.sharding.clipjob import chunk_bounds
from pipeline.sharding.frames import crop_hand, decode_scale
from pipeline.sources.boxes import (
    Detection,
    LinkParams,
    box_from_keypoints,
    box_problem,
    interpolate_boxes,
    link_tracks,
    track_side,
)
from pipeline.sources.doh100 import subsample


def test_box_from_keypoints_expands_clips_and_squares():
    uv = np.array([[100.0, 200.0], [140.0, 260.0]])  # 40 x 60 -> 60 x 90 about (120, 230)
    assert box_from_keypoints(uv, 640, 480) == (75.0, 185.0, 165.0, 275.0)
    # centre (20, 30), half 30: clipped to (0, 0, 50, 60) first, then squared to side 60 about (25, 30)
    edge = box_from_keypoints(np.array([[0.0, 10.0], [40.0, 50.0]]), 640, 480)
    assert edge == (-5.0, 0.0, 55.0, 60.0)


def test_box_problems():
    assert box_problem((10, 10, 10.5, 40), 100, 100) == "box_degenerate"
    assert box_problem((120, 10, 150, 40), 100, 100) == "box_outside_image"
    assert box_problem((90, 10, 150, 40), 100, 100) is None


def test_interpolate_boxes_linear_inside_hold_at_ends():
    out = interpolate_boxes([0, 1, 3, 4, 6], [None, (0, 0, 10, 10), None, (30, 0, 40, 10), None])
    assert out == [(0, 0, 10, 10), (0, 0, 10, 10), (20.0, 0.0, 30.0, 10.0), (30, 0, 40, 10), (30.0, 0.0, 40.0, 10.0)]
    assert interpolate_boxes([0, 1], [None, None]) == [None, None]


def test_link_tracks_by_overlap_side_and_gap():
    dets = [Detection(0, (0, 0, 10, 10), "right", 1), Detection(0, (50, 0, 60, 10), "left", 1),
            Detection(1, (1, 0, 11, 10), "right", 1), Detection(1, (51, 0, 61, 10), "right", 1),
            Detection(4, (2, 0, 12, 10), "right", 1), Detection(10, (3, 0, 13, 10), "right", 1)]
    tracks = link_tracks(dets, LinkParams(iou_min=0.3, max_gap=2))
    frames = [[d.frame for d in t] for t in tracks]
    # right hand: 0,1 then gap of 2 -> 4 continues; gap of 5 -> new track at 10. Handedness is a soft cost, not
    # a split: the box at x=51 labelled right continues the left track it overlaps.
    assert frames == [[0, 1, 4], [0, 1], [10]]
    assert [track_side(t) for t in tracks] == ["right", "left", "right"]


def test_subsample_to_target_fps():
    assert subsample(0, 10, 30.0, 15.0) == [0, 2, 4, 6, 8, 10]
    assert subsample(3, 9, 30.0, 10.0) == [3, 6, 9]
    assert subsample(5, 7, 30.0, None) == [5, 6, 7]


def test_chunk_bounds_are_balanced():
    assert chunk_bounds(300, 128) == [(0, 100), (100, 200), (200, 300)]
    assert chunk_bounds(130, 128) == [(0, 65), (65, 130)]
    assert chunk_bounds(5, 128) == [(0, 5)]


def test_crop_transform_matches_resize_pixel_centres():
    # A 100-px square starting at (10, 20) resized to 50 px: source pixel centre 10.5 (between pixels 10
    # and 11, the first output pixel's footprint) maps to output pixel 0.
    T = crop_transform(10, 20, 100, 50)
    np.testing.assert_allclose(T @ [10.5, 20.5, 1], [0, 0, 1])
    np.testing.assert_allclose(T @ [108.5, 118.5, 1], [49, 49, 1])


def test_crop_hand_fills_outside_and_records_fraction():
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_hand(img, (-20, -20, 20, 20), context=1.0, size=40, fill_value=7)
    assert crop.crop_box == [-20.0, -20.0, 20.0, 20.0]
    assert crop.fill == 0.75
    assert crop.pixels[0, 0, 0] == 7 and crop.pixels[39, 39, 0] == 200


def test_mirrored_camera_projects_mirrored_points():
    K = np.array([[500.0, 2.0, 100.0], [0.0, 480.0, 90.0], [0.0, 0.0, 1.0]])
    X = np.array([[0.05, -0.02, 0.5], [-0.1, 0.04, 0.7]])
    K2, X2 = mirror_camera(K, X, 256)
    uv = (X @ K.T)[:, :2] / X[:, 2:]
    uv2 = (X2 @ K2.T)[:, :2] / X2[:, 2:]
    np.testing.assert_allclose(uv2[:, 0], 255 - uv[:, 0])
    np.testing.assert_allclose(uv2[:, 1], uv[:, 1])
    np.testing.assert_allclose(mirror_mano_pose(np.arange(6.0)), [0, -1, -2, 3, -4, -5])


def test_decode_scale_and_dct_scaled_geometry():
    assert [decode_scale(s, 256) for s in (200, 511, 512, 1100, 5000)] == [1, 1, 2, 4, 8]
    img = np.zeros((480, 640, 3), np.uint8)
    img[200:208, 300:308] = 255  # an 8x8 block: centre at (303.5, 203.5)
    half = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(img, quality=100), min_height=240, min_width=320)
    assert half.shape == (240, 320, 3)
    ys, xs = np.nonzero(half[..., 0] > 128)
    # pixel-centre map u -> (u + 0.5) / 2 - 0.5
    np.testing.assert_allclose([xs.mean(), ys.mean()], [(303.5 + 0.5) / 2 - 0.5, (203.5 + 0.5) / 2 - 0.5], atol=0.01)
