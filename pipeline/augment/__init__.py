"""Augmentation: parameter draws (pure), the per-view affine, and two executors of one spec
(batched torch on the device, cv2 in the loader worker)."""

from pipeline.augment.affine import view_affine
from pipeline.augment.colour import APPEARANCE_SIZE, colour_matrix, identity_appearance
from pipeline.augment.params import GEOMETRY_SIZE, AppearanceSpec, AugmentSpec, GeometrySpec

__all__ = ["APPEARANCE_SIZE", "GEOMETRY_SIZE", "AppearanceSpec", "AugmentSpec", "GeometrySpec", "colour_matrix",
           "identity_appearance", "view_affine"]
