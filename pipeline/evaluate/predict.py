"""A fine-tuned model over an evaluation sweep (every labelled frame once, no augmentation): predictions and
ground truth gathered as NumPy arrays, then the metrics of pipeline/evaluate/metrics.py."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.augment.torch_exec import model_input
from pipeline.evaluate.metrics import evaluate_predictions
from pipeline.evaluate.sweep import sweep_batches
from pipeline.stream import StreamConfig


def _gt(batch: dict) -> dict[str, np.ndarray]:
    labelled = batch["labelled"][:, 0].numpy()
    kp3d = batch["kp3d"][:, 0].double().numpy()
    kp3d[~labelled] = np.nan
    gt = {"joints": kp3d, "kp2d": batch["kp2d"][:, 0].double().numpy(), "clip": batch["clip"].numpy(),
          "frame": batch["frame"][:, 0].numpy(), "sequence": np.asarray(batch["sequence"], dtype=object)}
    if "verts" in batch:
        gt["verts"] = batch["verts"][:, 0].double().numpy()
    return gt


@torch.no_grad()
def predict(model: nn.Module, task, data: StreamConfig, device: torch.device,
            max_items: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(predictions, ground truth), each a dict of arrays over the swept frames in sweep order."""
    was_training = model.training
    model.eval()
    preds: dict[str, list] = {}
    gts: dict[str, list] = {}
    try:
        for batch in sweep_batches(data, max_items):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            x = model_input(batch, data.out_size)
            out = task.predict(model(x, **task.model_kwargs(batch)), batch)
            for k, v in out.items():
                preds.setdefault(k, []).append(v.double().cpu().numpy())
            for k, v in _gt({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}).items():
                gts.setdefault(k, []).append(v)
    finally:
        model.train(was_training)
    return ({k: np.concatenate(v) for k, v in preds.items()}, {k: np.concatenate(v) for k, v in gts.items()})


def metrics_of(pred: dict[str, np.ndarray], gt: dict[str, np.ndarray], absolute: bool) -> dict:
    """All metrics (mm, px). Without an absolute prediction (the MANO head's weak perspective) the unaligned
    errors are left out: the prediction is root-relative."""
    joints = pred["joints"] if absolute else pred["joints"] + np.nan_to_num(gt["joints"][:, :1])
    verts = None
    if "verts" in pred and "verts" in gt and np.isfinite(gt["verts"]).any():
        verts = pred["verts"] if absolute else pred["verts"] + np.nan_to_num(gt["joints"][:, :1])
    sequence = gt["clip"]
    order = np.lexsort((gt["frame"], sequence))  # time order within each clip for the acceleration metrics
    results = evaluate_predictions(joints[order], gt["joints"][order],
                                   None if verts is None else verts[order],
                                   None if verts is None else gt["verts"][order],
                                   pred["kp2d"][order], gt["kp2d"][order], sequence=sequence[order])
    if not absolute:
        results = {k: v for k, v in results.items() if not (k in ("mpjpe", "mpvpe") or k.startswith("auc_mp"))}
    return results


def evaluate_stream(model: nn.Module, task, data: StreamConfig, device: torch.device,
                    max_items: int | None = None) -> dict:
    pred, gt = predict(model, task, data, device, max_items)
    return metrics_of(pred, gt, task.absolute)
