"""`handclr evaluate` / launch/evaluate.py: a fine-tuned model (a run's best or last weights) on a labelled shard
set, every labelled frame once with no augmentation; writes results.json, report.md (next to the papers'
numbers) and the plots into the output directory."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from pipeline.atomic import atomic_write_text
from pipeline.errors import ConfigError
from pipeline.evaluate.ho3d_submission import write_submission
from pipeline.evaluate.metrics import accel_metrics, pck_curve, split_sequences
from pipeline.evaluate.plots import plot_error_vs_time, plot_pck, plot_per_joint
from pipeline.evaluate.predict import metrics_of, predict
from pipeline.evaluate.report import markdown_report, write_results
from pipeline.stream import DatasetSpec
from pipeline.train.config import TrainConfig, load_config
from pipeline.train.tasks.finetune import BEST, LAST, FinetuneTask

PUBLISHED_DATASETS = ("freihand", "ho3d")
HO3D_EVALUATION = "evaluation_"  # the HO-3D reader's sequence prefix for the evaluation split


def load_run(run_dir: Path, weights: str) -> tuple[TrainConfig, FinetuneTask, torch.nn.Module, Path]:
    """The run's saved config, its task and model with `weights`: best | last | a .safetensors path."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml (not a fine-tuning run directory)")
    cfg = load_config(config)
    if cfg.task != "finetune":
        raise ConfigError(f"{config}: task is {cfg.task!r}, evaluation needs a fine-tuning run")
    path = {"best": run_dir / BEST, "last": run_dir / LAST}.get(weights, Path(weights))
    if not path.is_file():
        raise ConfigError(f"{path}: no such weights file (the run writes {BEST} at its first validation and "
                          f"{LAST} at its end)")
    cfg = replace(cfg, finetune=replace(cfg.finetune, init="random"))
    task = FinetuneTask(cfg)
    model = task.build_model()
    missing, unexpected = model.load_state_dict(safetensors.torch.load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path} does not fit the run's model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return cfg, task, model, path


def _per_joint_mm(pred: dict, gt: dict) -> np.ndarray:
    """Root-aligned error per joint (mm), the plot's bars."""
    p = pred["joints"] - pred["joints"][:, :1]
    g = gt["joints"] - gt["joints"][:, :1]
    return np.nanmean(np.linalg.norm(p - g, axis=-1), axis=0) * 1000.0


def _plots(pred: dict, gt: dict, out: Path) -> list[Path]:
    keep = np.isfinite(gt["joints"]).all(axis=(1, 2))  # frames with 3D labels (HO-3D evaluation frames have none)
    pred, gt = {k: v[keep] for k, v in pred.items()}, {k: v[keep] for k, v in gt.items()}
    errors = np.linalg.norm((pred["joints"] - pred["joints"][:, :1]) - (gt["joints"] - gt["joints"][:, :1]),
                            axis=-1) * 1000.0
    curve = pck_curve(errors[np.isfinite(errors)])
    per_frame = np.nanmean(errors, axis=1)
    names = np.array([s or str(c) for s, c in zip(gt["sequence"], gt["clip"], strict=True)])
    sequences = {}
    for name in np.unique(names):
        rows = np.flatnonzero(names == name)
        rows = rows[np.argsort(gt["frame"][rows])]
        if len(rows) > 1:
            sequences[str(name)] = (gt["frame"][rows], per_frame[rows])
    paths = [plot_pck({"RA-MPJPE": curve}, out / "pck.png"), plot_per_joint(_per_joint_mm(pred, gt),
                                                                            out / "per_joint.png")]
    if sequences:
        paths.append(plot_error_vs_time(sequences, out / "error_vs_time.png"))
    return paths


def per_sequence(pred: dict, gt: dict) -> dict[str, dict]:
    """ACC and ACC-ERR (mm per frame², metrics.accel_metrics) of each source sequence with a clip of >= 3 frames,
    so a change in smoothness shows per sequence (TempCLR Table 3, S²HAND Table 5): each clip sample (a camera, a
    chunk) is differenced on its own in frame order, as in the pooled metric, then pooled per sequence name."""
    names = np.array([s or str(c) for s, c in zip(gt["sequence"], gt["clip"], strict=True)])
    out = {}
    for name in np.unique(names):
        rows = np.flatnonzero(names == name)
        rows = rows[np.lexsort((gt["frame"][rows], gt["clip"][rows]))]
        clips = gt["clip"][rows]
        acc = accel_metrics(split_sequences(pred["joints"][rows], clips), split_sequences(gt["joints"][rows], clips))
        if acc["n_sequences"]:
            out[str(name)] = {"frames": len(rows), **acc}
    return out


def _sequence_table(sequences: dict[str, dict], metrics: dict) -> str:
    """report.md's per-sequence smoothness lines, pooled row last ("–" where ground truth is missing)."""
    def cell(v) -> str:
        return f"{v:.2f}" if v is not None and math.isfinite(v) else "–"
    lines = ["## Temporal smoothness per sequence", "",
             "ACC / ACC-ERR in mm per frame² (wrist-centred, second differences within each clip; TempCLR Table 3 "
             "and S²HAND Table 5 print \"mm/s²\", finetune_eval.md §2.6). Lower is smoother.", "",
             "| Sequence | Frames | ACC ↓ | ACC-ERR ↓ |", "|---|---|---|---|"]
    rows = [(name, s["frames"], s["accel_mm_per_frame2"], s["accel_error_mm_per_frame2"])
            for name, s in sequences.items()]
    rows.append(("**all (pooled)**", metrics.get("n_samples"), metrics.get("accel_mm_per_frame2"),
                 metrics.get("accel_error_mm_per_frame2")))
    lines += [f"| {name} | {n} | {cell(acc)} | {cell(err)} |" for name, n, acc, err in rows]
    return "\n".join(lines) + "\n"


def _add_per_sequence(path: Path, sequences: dict[str, dict]) -> None:
    """results.json gains `per_sequence` (NaN as null, like every metric there)."""
    doc = json.loads(path.read_text())
    doc["per_sequence"] = {name: {k: None if isinstance(v, float) and not math.isfinite(v) else v
                                  for k, v in s.items()} for name, s in sequences.items()}
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def write_ho3d(out: Path, pred: dict, gt: dict, order: str) -> Path:
    """The HO-3D challenge files from the predictions on HO-3D's evaluation sequences (camera-frame joints and
    vertices: the 2.5D head's reconstruction, or the MANO head's mesh placed by its weak-perspective camera)."""
    rows = np.flatnonzero([str(s).startswith(HO3D_EVALUATION) for s in gt["sequence"]])
    ids = [f"{str(gt['sequence'][i]).removeprefix(HO3D_EVALUATION)}/{int(gt['frame'][i]):04d}" for i in rows]
    if "verts_camera" not in pred:
        raise ConfigError("the HO-3D challenge needs vertices: fine-tune the MANO head")
    return write_submission(out, ids, pred["joints_camera"][rows], pred["verts_camera"][rows], order)


def evaluate_run(run_dir: str | Path, data: str, dataset: str, out: str | Path, weights: str = "best",
                 split: str = "all", max_items: int | None = None, device: str | None = None,
                 ho3d_order: str | None = None) -> dict:
    """Evaluate a fine-tuning run on shard set `data` (its samples of `dataset`); returns the metrics (empty when
    the frames carry no 3D labels). `ho3d_order`: HO-3D's evaluation.txt, to also write the challenge files."""
    run_dir, out = Path(run_dir), Path(out)
    cfg, task, model, path = load_run(run_dir, weights)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    task.to(dev)
    stream = replace(cfg.data, datasets=(DatasetSpec(dataset, data),), split=split,
                     augment=replace(cfg.data.augment, enabled=False))
    pred, gt = predict(model, task, stream, dev, max_items)
    out.mkdir(parents=True, exist_ok=True)
    if ho3d_order is not None:
        write_ho3d(out, pred, gt, ho3d_order)
    if not np.isfinite(gt["joints"]).any():  # HO-3D's evaluation split: labels hidden, the server scores it
        return {}
    metrics = metrics_of(pred, gt, task.absolute)
    context = {"dataset": dataset, "split": split, "crops": "ground-truth boxes (the shards' crops)",
               "gt_root": not task.absolute, "gt_scale": task.absolute, "weights": str(path), "data": data,
               "head": cfg.finetune.head, "backbone": cfg.model.backbone, "frames": int(len(gt["joints"]))}
    sequences = per_sequence(pred, gt)
    _add_per_sequence(write_results(out / "results.json", metrics, context), sequences)
    if dataset in PUBLISHED_DATASETS:  # the papers publish FreiHAND and HO-3D numbers only
        report = markdown_report(metrics, dataset, cfg.finetune.head, context)
        atomic_write_text(out / "report.md", report + ("\n" + _sequence_table(sequences, metrics) if sequences else ""))
    _plots(pred, gt, out)
    return metrics
