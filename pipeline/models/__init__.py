"""Encoders: a timm backbone plus the contrastive projection head; export for fine-tuning."""

from pipeline.models.encoder import ContrastiveModel, ProjectionHead, build_model, export_encoder, freeze_norm
from pipeline.models.heads import (
    KeypointHead25D,
    MANORegressor,
    normalised_to_pixels,
    pixels_to_normalised,
    weak_perspective,
)
from pipeline.models.keypoints25d import reconstruct_3d, root_depth, to_25d
from pipeline.models.mano import build_mano_layer, load_mano, mano_joints21

__all__ = ["ContrastiveModel", "ProjectionHead", "build_model", "export_encoder", "freeze_norm"]
__all__ += ["KeypointHead25D", "MANORegressor", "normalised_to_pixels", "pixels_to_normalised", "reconstruct_3d",
            "root_depth", "to_25d", "weak_perspective"]
__all__ += ["build_mano_layer", "load_mano", "mano_joints21"]
