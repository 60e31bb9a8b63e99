"""What surrounds the synthetic hand: a scene that stays put under a slowly panning and zooming camera, lighting
that drifts, skin tones, occluding objects in front of the hand, and sensor effects.

A scene is larger than the frame (`SCENE_MARGIN`) so the camera can pan without running out of it; the pan and
zoom move only the background (the hand and its labels live in the camera frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.sampledata.motion import smooth_track

SCENE_MARGIN = 1.6  # scene side / frame side
# Skin albedos (RGB), light to dark; palms are lighter than backs (PALM_LIFT).
SKIN_TONES = np.array([[236, 200, 178], [225, 180, 150], [198, 150, 118], [160, 112, 82], [112, 76, 56],
                       [84, 56, 42]], np.float64)
PALM_LIFT = 1.12
# Everything but the mark keeps its green channel within GREEN_EXCESS of its red or blue one, so the label-check
# mark (pure green) stays unambiguous after exposure tints (+-8 %) and video compression's chroma blur: a pixel
# with G - max(R, B) > MARK_EXCESS is the mark's.
GREEN_EXCESS, MARK_EXCESS = 30, 80


def no_green(img: np.ndarray) -> np.ndarray:
    """`img` (uint8 RGB, in place) with G <= max(R, B) + GREEN_EXCESS."""
    img[..., 1] = np.minimum(img[..., 1], np.maximum(img[..., 0], img[..., 2]).astype(np.int16) + GREEN_EXCESS)
    return img


def find_green_mark(img: np.ndarray, min_pixels: int = 6) -> np.ndarray | None:
    """Centroid (x, y) of the label-check mark's pixels, None when fewer than `min_pixels` show."""
    rgb = img.astype(np.int16)
    ys, xs = np.nonzero(rgb[..., 1] - np.maximum(rgb[..., 0], rgb[..., 2]) > MARK_EXCESS)
    return np.array([xs.mean(), ys.mean()]) if len(xs) >= min_pixels else None


@dataclass(frozen=True)
class Lighting:
    """Per-frame lighting: colour gain [frames, 3] applied to the whole frame, light direction [frames, 3]
    (towards the light, camera frame) and the ambient share."""

    gain: np.ndarray
    light: np.ndarray
    ambient: float


def scene_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static scene: smooth coloured noise, a few flat-coloured furniture shapes and edges, slightly blurred.
    Green stays reserved for the label-check mark (`no_green`)."""
    h, w = int(height * SCENE_MARGIN), int(width * SCENE_MARGIN)
    small = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(3, 9)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.6:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(20, w // 2)), y + int(rng.integers(20, h // 2))),
                          colour, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour,
                     int(rng.integers(2, 12)))
    return no_green(mute(cv2.GaussianBlur(img, (0, 0), 1.2), float(rng.uniform(0.2, 0.5)), 0.75))


def mute(img: np.ndarray, saturation: float, contrast: float) -> np.ndarray:
    """Colours pulled towards their grey by `saturation` and greys towards mid-grey by `contrast`: rooms are
    mostly muted walls and furniture, not the saturated noise the scene starts from."""
    x = img.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + saturation * (x - grey)
    return np.clip(128 + contrast * (x - 128), 0, 255).astype(np.uint8)


def camera_views(rng: np.random.Generator, scene: np.ndarray, times: np.ndarray, height: int,
                 width: int) -> list[np.ndarray]:
    """The scene as seen by a camera that pans (up to the scene margin) and zooms (+-8 %) smoothly."""
    h, w = scene.shape[:2]
    zoom = smooth_track(rng, times, 2.0, 0.92, 1.08)[:, 0]
    free = np.array([w - width * 1.08, h - height * 1.08]) / 2
    pan = smooth_track(rng, times, 2.0, -free, free)
    views = []
    for i in range(len(times)):
        cx, cy = w / 2 + pan[i, 0], h / 2 + pan[i, 1]
        s = zoom[i]
        # frame pixel (u, v) shows scene pixel (cx + (u - width/2) / s, cy + (v - height/2) / s)
        M = np.array([[s, 0, width / 2 - s * cx], [0, s, height / 2 - s * cy]])
        views.append(cv2.warpAffine(scene, M, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT))
    return views


def lighting(rng: np.random.Generator, times: np.ndarray) -> Lighting:
    """Brightness drifting within +-15 %, a per-clip colour temperature, a light that swings around the camera."""
    tint = rng.uniform(-0.08, 0.08)
    brightness = smooth_track(rng, times, 1.5, 0.85, 1.15)
    gain = brightness * np.array([1 + tint, 1.0, 1 - tint])
    swing = smooth_track(rng, times, 1.5, [-0.8, -0.8], [0.8, 0.8])
    light = np.concatenate([swing, -np.ones((len(times), 1))], axis=1)
    return Lighting(gain, light / np.linalg.norm(light, axis=1, keepdims=True), float(rng.uniform(0.3, 0.5)))


def skin(rng: np.random.Generator) -> np.ndarray:
    """One hand's albedo (RGB): a tone between two neighbouring SKIN_TONES."""
    i = rng.integers(0, len(SKIN_TONES) - 1)
    return SKIN_TONES[i] + rng.random() * (SKIN_TONES[i + 1] - SKIN_TONES[i])


@dataclass(frozen=True)
class Occluder:
    """A flat-coloured ellipse crossing the frame in front of the hand."""

    colour: tuple[int, int, int]
    axes: tuple[int, int]
    start: np.ndarray
    end: np.ndarray
    angle: float

    def draw(self, img: np.ndarray, s: float) -> None:
        cx, cy = self.start + s * (self.end - self.start)
        cv2.ellipse(img, (int(cx), int(cy)), self.axes, self.angle, 0, 360, self.colour, -1, cv2.LINE_AA)


def occluder(rng: np.random.Generator, height: int, width: int) -> Occluder:
    """An object about a third of the frame's height that sweeps across the frame's centre during the clip."""
    side = min(height, width)
    y = rng.uniform(0.3, 0.7, 2) * height
    xs = rng.permutation([-0.1 * width, 1.1 * width])
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    colour = (colour[0], min(colour[1], max(colour[0], colour[2]) + GREEN_EXCESS), colour[2])
    return Occluder(colour, (int(side * rng.uniform(0.08, 0.16)), int(side * rng.uniform(0.12, 0.22))),
                    np.array([xs[0], y[0]]), np.array([xs[1], y[1]]), float(rng.uniform(0, 180)))


def sensor(img: np.ndarray, gain: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 frame after exposure (gain per channel) and Gaussian read noise of `noise` grey levels."""
    out = img.astype(np.float32) * gain.astype(np.float32)
    if noise > 0:
        out += rng.normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
