"""Evaluation metrics for fine-tuned hand reconstructors (finetune_eval.md §2): alignments (RA, STA, PA), MPJPE /
MPVPE, PCK AUC, F-score, 2D EPE and within-sequence acceleration, as pure NumPy functions; and their outputs:
results.json and the Markdown comparison with the papers (report), figures (plots, matplotlib imported on use) and
the HO-3D challenge submission (ho3d_submission)."""

from pipeline.evaluate.align import (
    ALIGNMENTS,
    Similarity,
    align,
    align_procrustes,
    align_root,
    align_scale_translation,
    labelled,
)
from pipeline.evaluate.ho3d_submission import frame_id, read_evaluation_order, to_ho3d, write_submission
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
from pipeline.evaluate.plots import plot_error_vs_time, plot_pck, plot_per_joint
from pipeline.evaluate.report import PUBLISHED, markdown_report, published_table, write_results

__all__ = ["ALIGNMENTS", "PUBLISHED", "Errors", "FScore", "Similarity", "accel_metrics", "acceleration", "align",
           "align_procrustes", "align_root", "align_scale_translation", "auc_pck", "epe_2d", "evaluate_predictions",
           "f_score", "frame_id", "labelled", "markdown_report", "mpjpe", "mpvpe", "pck_curve", "plot_error_vs_time",
           "plot_pck", "plot_per_joint", "published_table", "read_evaluation_order", "split_sequences", "to_ho3d",
           "write_results", "write_submission"]
