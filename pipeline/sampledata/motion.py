"""Smooth random hand motion for the synthetic world: finger curls, global rotation and translation.

Everything is a keyframed trajectory (a keyframe every `period_s` seconds, monotone cubic in between), so
frames a few apart hold similar poses and frames seconds apart differ: the property TempCLR's positives and
negatives rely on. Finger curls bend each finger's three joints about the axis perpendicular to the finger and
the palm normal. The axes and views assume the synthetic MANO model's rest frame (`mano_synthetic`: palm
towards -z, fingers along +y); the licensed model lies otherwise in its frame (fingers along -x), so a world of
licensed hands would first need its rest frame rotated into this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.spatial.transform import Rotation, RotationSpline

# MANO's finger chains (joint ids 1..15 in pose order), the thumb last.
CHAINS = ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12), (13, 14, 15))
CURL_SHARE = np.array([0.9, 1.1, 0.8])  # how a finger's curl splits over its joints (MCP, PIP, DIP)
PALM_NORMAL = np.array([0.0, 0.0, 1.0])  # back of the hand, rest pose


@dataclass(frozen=True)
class MotionOptions:
    """Ranges of the random motion (radians, metres, seconds)."""

    period_s: float = 0.8  # time between keyframes
    curl: tuple[float, float] = (-0.15, 1.25)  # per joint, scaled by CURL_SHARE
    thumb_curl: tuple[float, float] = (-0.2, 0.7)
    spread: float = 0.25  # abduction at the knuckles, +-
    tilt_sigma: float = 0.5  # rad, per axis: keyframe orientations scatter this much around the clip's view
    roll: float = 0.8  # rad, +-: in-plane swing around the clip's roll
    roll_range: float = 1.75  # rad, +-: the clip's roll around fingers-up (hands seldom hang upside down in view)
    back_share: float = 0.5  # clips that show the back of the hand rather than the palm
    depth: tuple[float, float] = (0.42, 0.6)  # wrist distance from the camera
    lateral: tuple[float, float] = (0.2, 0.12)  # |x| / z and |y| / z bounds of the hand's centre


def keyframe_times(duration: float, period_s: float) -> np.ndarray:
    """Keyframe times in seconds covering [0, duration], one before and after so the ends are not clamped."""
    return np.arange(-1, int(np.ceil(duration / period_s)) + 2) * period_s


def exposure_times(frames: int, fps: float, samples: int) -> np.ndarray:
    """[frames, samples] instants of each frame's exposure (one frame period long), centred on the frame's time
    i / fps: the average of renders at these instants is the motion-blurred frame whose label is at i / fps."""
    offsets = ((np.arange(samples) + 0.5) / samples - 0.5) / fps
    return np.arange(frames)[:, None] / fps + offsets


def smooth_track(rng: np.random.Generator, times: np.ndarray, period_s: float, lo, hi) -> np.ndarray:
    """[len(times), D] values uniform in [lo, hi] at keyframes, monotone cubic in between (never overshoots);
    `times` (seconds) lie within one period of [0, times.max()]."""
    lo, hi = np.atleast_1d(np.asarray(lo, np.float64)), np.atleast_1d(np.asarray(hi, np.float64))
    knots = keyframe_times(float(times.max()), period_s)
    values = rng.uniform(lo, hi, (len(knots), len(lo)))
    return PchipInterpolator(knots, values, axis=0)(times)


def rotation_track(rng: np.random.Generator, times: np.ndarray, opts: MotionOptions) -> Rotation:
    """Orientations as a camera filming a hand sees them: the palm or the back towards the camera (the rest pose
    shows the palm), an in-plane roll within +-roll_range of fingers-up swinging by +-roll, and a tilt out of the
    image plane scattered by N(0, tilt_sigma) per axis at each keyframe; a C2 spline in between. Stationary,
    unlike a random walk: over a clip the hand turns back and forth instead of drifting through every
    orientation (uniformly random orientations, the hand seen end-on along its fingers as often as face-on, are
    not what hand video shows)."""
    knots = keyframe_times(float(times.max()), opts.period_s)
    view = Rotation.from_euler("y", np.pi if rng.random() < opts.back_share else 0.0)
    roll = np.pi + rng.uniform(-opts.roll_range, opts.roll_range) + rng.uniform(-opts.roll, opts.roll, len(knots))
    tilt = Rotation.from_rotvec(rng.normal(0.0, opts.tilt_sigma, (len(knots), 3)))
    keys = Rotation.from_euler("z", roll[:, None]) * view * tilt
    return RotationSpline(knots, keys)(times)


def curl_axes(rest_joints: np.ndarray) -> np.ndarray:
    """[5, 3] per finger chain: the unit axis about which a positive angle bends it towards the palm (-z)."""
    axes = []
    for chain in CHAINS:
        direction = rest_joints[chain[1]] - rest_joints[chain[0]]
        axis = np.cross(PALM_NORMAL, direction)
        axes.append(axis / np.linalg.norm(axis))
    return np.array(axes)


def finger_pose(curls: np.ndarray, spreads: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """[N, 45] MANO finger axis-angles: joint j of finger f turns by CURL_SHARE[j] curls[:, f] about axes[f],
    the knuckle also by spreads[:, f] about the palm normal."""
    pose = np.zeros((len(curls), 15, 3))
    for f, chain in enumerate(CHAINS):
        for j, joint in enumerate(chain):
            pose[:, joint - 1] = CURL_SHARE[j] * curls[:, f:f + 1] * axes[f]
        pose[:, chain[0] - 1] += spreads[:, f:f + 1] * PALM_NORMAL
    return pose.reshape(len(curls), 45)


def hand_motion(rng: np.random.Generator, times: np.ndarray, rest_joints: np.ndarray,
                opts: MotionOptions) -> tuple[np.ndarray, np.ndarray]:
    """Pose [T, 48] (global orientation, fingers) and placement [T, 3] (the hand's centre x, y and its wrist
    depth z, camera frame) of one clip at `times` [T] (seconds)."""
    lo = [opts.curl[0]] * 4 + [opts.thumb_curl[0]]
    hi = [opts.curl[1]] * 4 + [opts.thumb_curl[1]]
    curls = smooth_track(rng, times, opts.period_s, lo, hi)
    spreads = smooth_track(rng, times, opts.period_s, [-opts.spread] * 5, [opts.spread] * 5)
    orient = rotation_track(rng, times, opts).as_rotvec()
    depth = smooth_track(rng, times, 2 * opts.period_s, opts.depth[0], opts.depth[1])
    bounds = np.array(opts.lateral)
    xy = smooth_track(rng, times, 2 * opts.period_s, -bounds, bounds) * depth
    pose = np.concatenate([orient, finger_pose(curls, spreads, curl_axes(rest_joints))], axis=1)
    return pose, np.concatenate([xy, depth], axis=1)
