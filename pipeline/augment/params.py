"""Augmentation specs and their parameter draws: pure functions of a seeded numpy Generator.

All ranges are closed intervals drawn uniformly. Geometry is a vector (GEOMETRY_SIZE = 4):
angle in radians, scale (magnification: > 1 zooms in), translation x and y as fractions of the output size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.augment.colour import identity_appearance
from pipeline.typedconfig import NonNegativeFloat, PositiveFloat, Probability, ranged

GEOMETRY_SIZE = 4


@dataclass(frozen=True)
class GeometrySpec:
    """Defaults are TempCLR's: rotation ±45°, scale [0.6, 2.0], translation ±0.3 of the image size."""

    rotation_deg: ranged(float, ge=0, le=180) = 45.0
    scale: tuple[PositiveFloat, PositiveFloat] = (0.6, 2.0)
    translation: NonNegativeFloat = 0.3
    margin: PositiveFloat = 1.5  # output side = margin x the hand box's longer side at scale 1

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, 4] independent draws (angle, scale, tx, ty)."""
        r = math.radians(self.rotation_deg)
        t = self.translation
        return np.stack([rng.uniform(-r, r, n), rng.uniform(*self.scale, size=n), rng.uniform(-t, t, n),
                         rng.uniform(-t, t, n)], axis=1)

    @staticmethod
    def identity() -> np.ndarray:
        return np.array([0.0, 1.0, 0.0, 0.0])


@dataclass(frozen=True)
class AppearanceSpec:
    """Per-frame appearance ops; an op with probability 0 (or a degenerate range) is off.

    TempCLR: channel noise [0.6, 1.4], Sobel, colour drop. PeCLR: hue and saturation factor in [0.01, 1],
    brightness a v + b with a in [0.5, 1], b in [5, 20]. The hue factor h is read as a fraction of a full
    turn of the chroma plane (angle 2πh), the only reading that keeps hue a linear colour op.
    """

    noise: tuple[NonNegativeFloat, NonNegativeFloat] = (0.6, 1.4)
    noise_p: Probability = 1.0
    sobel_p: Probability = 0.1
    drop_p: Probability = 0.2
    hue: tuple[float, float] = (0.01, 1.0)
    saturation: tuple[NonNegativeFloat, NonNegativeFloat] = (0.01, 1.0)
    jitter_p: Probability = 0.0
    brightness_a: tuple[NonNegativeFloat, NonNegativeFloat] = (0.5, 1.0)
    brightness_b: tuple[float, float] = (5.0, 20.0)
    brightness_p: Probability = 0.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, 9] vectors, one per frame. Always consumes the same draws whatever the probabilities, so a change
        to one op does not shift the random stream of the others."""
        u = rng.random((n, 5))
        noise = rng.uniform(*self.noise, size=(n, 3))
        hue, sat = rng.uniform(*self.hue, size=n), rng.uniform(*self.saturation, size=n)
        a, b = rng.uniform(*self.brightness_a, size=n), rng.uniform(*self.brightness_b, size=n)
        p = np.tile(identity_appearance(), (n, 1))
        on = u[:, 0] < self.noise_p
        p[on, 0:3] = noise[on]
        p[:, 3] = u[:, 1] < self.sobel_p
        p[:, 4] = u[:, 2] < self.drop_p
        on = u[:, 3] < self.jitter_p
        p[on, 5], p[on, 6] = 2 * math.pi * hue[on], sat[on]
        on = u[:, 4] < self.brightness_p
        p[on, 7], p[on, 8] = a[on], b[on]
        return p


@dataclass(frozen=True)
class AugmentSpec:
    geometry: GeometrySpec = field(default_factory=GeometrySpec)
    appearance: AppearanceSpec = field(default_factory=AppearanceSpec)
    enabled: bool = True  # False: identity geometry and appearance (evaluation, inspection of raw crops)


TEMPCLR = AugmentSpec()
PECLR = AugmentSpec(GeometrySpec(45.0, (0.6, 2.0), 15.0 / 128.0),
                    AppearanceSpec(noise_p=0.0, sobel_p=0.0, drop_p=0.0, jitter_p=1.0, brightness_p=1.0))
# Supervised fine-tuning (TempCLR App. §6, PeCLR's ranges): geometry only, rotation ±90°, scale [0.7, 1.3],
# translation ±0.4 of the image size; every appearance op off (the labels follow the geometry exactly).
FINETUNE = AugmentSpec(GeometrySpec(90.0, (0.7, 1.3), 0.4),
                       AppearanceSpec(noise_p=0.0, sobel_p=0.0, drop_p=0.0, jitter_p=0.0, brightness_p=0.0))
