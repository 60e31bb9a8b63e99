"""Evaluation metrics for fine-tuned hand reconstructors (finetune_eval.md §2): alignments (RA, STA, PA), MPJPE /
MPVPE, PCK AUC, F-score, 2D EPE and within-sequence acceleration, as pure NumPy functions."""

from pipeline.evaluate.align import (
    ALIGNMENTS,
    Similarity,
    align,
    align_procrustes,
    align_root,
    align_scale_translation,
    labelled,
)
from pipeline.evaluate.metrics import (
    Errors,
    FScore,
    accel_metrics,
    acceleration,
    auc_pck,
    epe_2d,
    evaluate_predictions,
    f_score,
    mpjpe,
    mpvpe,
    pck_curve,
    split_sequences,
)

__all__ = ["ALIGNMENTS", "Errors", "FScore", "Similarity", "accel_metrics", "acceleration", "align",
           "align_procrustes", "align_root", "align_scale_translation", "auc_pck", "epe_2d", "evaluate_predictions",
           "f_score", "labelled", "mpjpe", "mpvpe", "pck_curve", "split_sequences"]
