"""Pure contrastive losses on projections z [N, D]; positives and negatives are masks built from ids, so the
same functions run on a local micro-batch or on the batch gathered across ranks (docs/design.md §4)."""

from pipeline.objectives.contrastive import info_nce, nt_xent, time_contrastive, time_contrastive_masks
from pipeline.objectives.equivariant import equivariant_nt_xent, invert_geometry
from pipeline.objectives.supervised import keypoint25d_loss, mano_loss, masked_l1, masked_mse
from pipeline.objectives.temporal import (
    TEMPORAL_WEIGHTS,
    acceleration_loss,
    quaternion_angle,
    quaternion_motion_loss,
    shape_consistency_loss,
    temporal_loss,
)

__all__ = ["equivariant_nt_xent", "info_nce", "invert_geometry", "nt_xent", "time_contrastive",
           "time_contrastive_masks"]
__all__ += ["keypoint25d_loss", "mano_loss", "masked_l1", "masked_mse"]
__all__ += ["TEMPORAL_WEIGHTS", "acceleration_loss", "quaternion_angle", "quaternion_motion_loss",
            "shape_consistency_loss", "temporal_loss"]
