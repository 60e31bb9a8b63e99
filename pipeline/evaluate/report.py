"""Evaluation outputs as text: `results.json` (every metric with its unit and the setting it was measured in) and a
Markdown table of our numbers next to the papers' published ones, in the papers' units (finetune_eval.md §3).

A number means nothing without its setting (finetune_eval.md §9 #20): which data and split, how the crops were
made, and whether ground-truth root or scale entered the absolute metrics. Both outputs therefore require it.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline import __version__
from pipeline.atomic import atomic_write_text

FORMAT = "handclr-results/1"
DATASETS = ("freihand", "ho3d")
HEADS = ("mano", "2p5d")
# The setting every result must state (finetune_eval.md §9 #20), with the type each key must have.
SETTING = {"dataset": str, "split": str, "crops": str, "gt_root": bool, "gt_scale": bool}
# How pipeline.evaluate measures (finetune_eval.md §2, §9 #10-#12), written into every results.json.
CONVENTIONS = {
    "joints": "21, FreiHAND order (0 wrist; thumb, index, middle, ring, pinky: MCP, PIP, DIP, tip); metres in, mm out",
    "alignment": "always prediction onto ground truth, fitted per sample on the labelled points",
    "pa": "Procrustes similarity (scale, proper rotation, translation); vertices aligned on their own",
    "ra": "translation of the root (wrist, joint 0) onto the ground truth; ra_mpvpe applies the joints' translation",
    "sta": "scale by the wrist -> middle MCP bone (0 -> 9), then root translation (HO-3D's align_sc_tr)",
    "none": "absolute camera-frame error (no prefix)",
    "auc": "PCK over 0-50 mm, 100 linspace thresholds, error <= threshold, trapezoid / range",
    "f_score": "F at 5 / 15 mm (nearest neighbour, strict <) per sample, then averaged; f5/f15 raw vertices, "
               "f5_pa/f15_pa after vertex Procrustes",
    "acceleration": "wrist-centred joints, second differences within each sequence, mm per frame^2 (no dt)",
    "missing_labels": "NaN ground truth is left out of every mean, never counted as zero error",
}
_MM = re.compile(r"((ra|sta|pa)_)?mp[jv]pe")
_FRACTION = re.compile(r"auc_.+|f\d+(_pa)?")


def metric_unit(name: str, extra: dict[str, str] | None = None) -> str:
    """Unit of one of evaluate_predictions' keys (or of `extra`, for metrics added elsewhere)."""
    if extra and name in extra:
        return extra[name]
    if name.startswith("n_"):
        return "count"
    if _FRACTION.fullmatch(name):
        return "fraction"
    if _MM.fullmatch(name):
        return "mm"
    if name.endswith("_px"):
        return "px"
    if name.endswith("_mm_per_frame2"):
        return "mm/frame^2"
    raise ValueError(f"no unit known for metric {name!r}: pass it in context['units']")


def plain_json(x: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays as Python values, paths as strings, NaN and inf as None (JSON has
    neither; a missing metric must read as missing, not as a number)."""
    if isinstance(x, dict):
        return {str(k): plain_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [plain_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def _setting(context: dict[str, Any]) -> dict[str, Any]:
    problems = [f"{k} ({t.__name__})" for k, t in SETTING.items() if not isinstance(context.get(k), t)]
    if problems:
        raise ValueError("context must state the evaluation setting (finetune_eval.md §9 #20); missing or of the "
                         "wrong type: " + ", ".join(problems))
    return {k: context[k] for k in SETTING}


def write_results(path: str | os.PathLike, metrics: dict[str, Any], context: dict[str, Any]) -> Path:
    """Write results.json atomically; returns its path. metrics: evaluate_predictions' flat dict (mm, fractions,
    counts). context: the setting (SETTING keys: dataset, split, crops such as "gt_box", gt_root and gt_scale =
    whether ground truth entered the absolute metrics), optional `units` for metrics outside
    evaluate_predictions, and anything else about the run (model, checkpoint, head, seed ...), kept under "run"."""
    setting = _setting(context)
    extra_units = context.get("units")
    run = {k: v for k, v in context.items() if k not in SETTING and k != "units"}
    doc = {
        "format": FORMAT,
        "handclr_version": __version__,
        "setting": setting | {"conventions": CONVENTIONS},
        "run": run,
        "metrics": metrics,
        "units": {name: metric_unit(name, extra_units) for name in metrics},
    }
    path = Path(path)
    atomic_write_text(path, json.dumps(plain_json(doc), indent=2, allow_nan=False) + "\n")
    return path


class PaperMetric(NamedTuple):
    """A published column: our key in evaluate_predictions' dict and the factor from our unit to the paper's."""

    label: str  # column header, as the paper names it, with its unit
    ours: str
    factor: float  # paper value = ours * factor (mm -> cm: 0.1)
    decimals: int  # for our value: one more than the paper prints
    lower_is_better: bool
    absolute: bool = False  # unaligned: ground-truth root or scale, when used, enter it (marked with *)


# Keys of the papers' metric names. F@5/F@15 are the F-scores of the vertices Procrustes-aligned on their own:
# both servers' eval.py print raw and aligned F, and only the aligned ones have the published magnitudes
# (finetune_eval.md §2.5, §9 #11). EPE/AUC are on the 21 joints, V2V on the 778 MANO vertices.
PAPER_METRICS = {
    "PA-V2V": PaperMetric("PA-V2V (mm)", "pa_mpvpe", 1.0, 2, True),
    "PA-EPE": PaperMetric("PA-EPE (mm)", "pa_mpjpe", 1.0, 2, True),
    "RA-V2V": PaperMetric("RA-V2V (mm)", "ra_mpvpe", 1.0, 2, True),
    "F@5": PaperMetric("F@5 mm", "f5_pa", 1.0, 3, False),
    "F@15": PaperMetric("F@15 mm", "f15_pa", 1.0, 3, False),
    "3D PA-EPE": PaperMetric("3D PA-EPE (cm)", "pa_mpjpe", 0.1, 3, True),
    "PA-AUC": PaperMetric("PA-AUC (0-5 cm)", "auc_pa_mpjpe_0_50", 1.0, 3, False),
    "3D EPE": PaperMetric("3D EPE (cm)", "mpjpe", 0.1, 3, True, absolute=True),
    "AUC": PaperMetric("AUC (0-5 cm)", "auc_mpjpe_0_50", 1.0, 3, False, absolute=True),
}


class PublishedRow(NamedTuple):
    """One published result; values as printed in the paper (None where it prints "–")."""

    dataset: str
    head: str
    source: str
    method: str
    values: dict[str, str | None]

    def number(self, column: str) -> float | None:
        value = self.values[column]
        return None if value is None else float(value)


def _table(dataset: str, head: str, source: str, columns: tuple[str, ...], *rows: tuple[str, ...]):
    return tuple(PublishedRow(dataset, head, source, method,
                              dict(zip(columns, (None if v == "–" else v for v in values), strict=True)))
                 for method, *values in rows)


_TEMPCLR_1 = "TempCLR Table 1 (000_010889e321443213.txt; finetune_eval.md §3.1)"
_TEMPCLR_2 = "TempCLR Table 2 (000_010889e321443213.txt; finetune_eval.md §3.1)"
_PECLR_2 = "PeCLR Table 2 (001_26cf55d6787b4922.txt; finetune_eval.md §3.2)"
_PECLR_S4 = "PeCLR Supp. Table 4 (001_26cf55d6787b4922.txt; finetune_eval.md §3.2)"
# The published numbers, copied as printed from finetune_eval.md §3.
PUBLISHED = (
    *_table("ho3d", "mano", _TEMPCLR_1, ("PA-V2V", "PA-EPE", "F@5", "F@15"),
            ("Baseline [8] (ExPose)", "12.6", "12.7", "0.389", "0.905"),
            ("Hasson et al. [15]", "11.4", "11.4", "0.428", "0.932"),
            ("Hasson et al. [16]", "11.2", "11.1", "0.464", "0.939"),
            ("PeCLR [35]", "10.8", "10.8", "0.47", "0.936"),
            ("TempCLR", "10.6", "10.6", "0.481", "0.937"),
            ("PeCLR† [35]", "11.0", "11.0", "0.46", "0.934"),
            ("TempCLR†", "10.0", "10.1", "0.505", "0.947"),
            ("Liu et al. [26] (weakly sup.)", "9.5", "9.9", "0.526", "0.955")),
    *_table("freihand", "mano", _TEMPCLR_2, ("PA-V2V", "RA-V2V", "F@5", "F@15"),
            ("Hasson et al. [16]", "13.2", "–", "0.436", "0.908"),
            ("Baseline-18 [8]", "11.8", "35.96", "0.484", "0.918"),
            ("TempCLR-18", "10.9", "25.05", "0.513", "0.930"),
            ("Baseline-50 [8]", "10.8", "31.15", "0.518", "0.934"),
            ("MANO CNN [48]", "10.7", "–", "0.529", "0.935"),
            ("HanCo Augm. [46]", "10.9", "–", "0.521", "0.934"),
            ("HanCo Temporal [46]", "10.4", "–", "0.538", "0.939"),
            ("PeCLR-50 [35]", "10.6", "26.73", "0.533", "0.940"),
            ("TempCLR-50", "10.2", "21.68", "0.541", "0.941"),
            ("HanCo Multi-view [46]", "10.2", "–", "0.548", "0.943")),
    *_table("freihand", "2p5d", _PECLR_2, ("3D PA-EPE", "PA-AUC"),
            ("Spurr et al. [33]", "0.90", "0.82"),
            ("Kulon et al. [24]", "0.84", "0.83"),
            ("Li et al. [25]", "0.80", "0.84"),
            ("Pose2Mesh [9]", "0.77", "–"),
            ("I2L-MeshNet [26]", "0.74", "–"),
            ("RN50", "0.83", "0.84"),
            ("RN50 + PeCLR", "0.71", "0.86"),
            ("RN152", "0.74", "0.85"),
            ("RN152 + PeCLR", "0.66", "0.87")),
    *_table("ho3d", "2p5d", _PECLR_S4, ("3D PA-EPE", "PA-AUC", "3D EPE", "AUC"),
            ("Hasson et al. [17]", "3.18", "0.46", "3.27", "0.44"),
            ("Hampali et al. [15]", "3.04", "0.49", "8.42", "0.27"),
            ("Supervised", "1.33", "0.74", "2.85", "0.50"),
            ("PeCLR", "1.09", "0.78", "2.26", "0.58")),
)
# How the papers measured, per (dataset, head): the line our setting is compared against.
PAPER_SETTINGS = {
    ("ho3d", "mano"): "HO-3D v2 evaluation split (hidden ground truth) on the official online server; ResNet18; "
                      "† = 100DOH frames added to pre-training",
    ("freihand", "mano"): "FreiHAND test set (official evaluation); HanCo pre-training; -18 / -50 = ResNet18 / 50; "
                          "HanCo Multi-view is a multi-view method, not directly comparable",
    ("freihand", "2p5d"): "FreiHAND test set (official evaluation), 224x224 input, pre-trained on FreiHAND + YT3D",
    ("ho3d", "2p5d"): "HO-3D online server; RN50, pre-trained on YT3D + FreiHAND, fine-tuned on HO-3D per the text, "
                      "on FreiHAND per the caption (finetune_eval.md §8 #2)",
}


def _choice(dataset: str, head: str) -> None:
    if dataset not in DATASETS or head not in HEADS:
        raise ValueError(f"dataset must be one of {DATASETS} and head one of {HEADS}, not {dataset!r}, {head!r}")


def published_table(dataset: str, head: str) -> list[PublishedRow]:
    """The published rows comparable with our (dataset, head) run, in the papers' row order."""
    _choice(dataset, head)
    return [row for row in PUBLISHED if (row.dataset, row.head) == (dataset, head)]


def _ours(metrics: dict[str, Any], column: str, gt_used: bool) -> str:
    spec = PAPER_METRICS[column]
    value = metrics.get(spec.ours)
    if value is None or not math.isfinite(float(value)):
        return "–"
    return f"{float(value) * spec.factor:.{spec.decimals}f}" + (" *" if gt_used and spec.absolute else "")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown_report(metrics: dict[str, Any], dataset: str, head: str, context: dict[str, Any]) -> str:
    """Our numbers (evaluate_predictions' dict) in the papers' units above the published rows for (dataset, head),
    with the setting of each side and the metric mapping. Missing or NaN metrics show "–". context: as for
    write_results; `model` names our row, `data` (e.g. "sample data") describes what we evaluated on."""
    setting = _setting(context)
    rows = published_table(dataset, head)
    columns = list(rows[0].values)
    lines = [f"## {dataset} — {head} head: ours vs published", ""]
    n = metrics.get("n_samples")
    ours = (f"{context.get('data', setting['dataset'])}, {setting['split']} split"
            + (f", {n} frames" if n is not None else "")
            + f", crops: {setting['crops']}, ground-truth root / scale in absolute metrics: "
            f"{_yes(setting['gt_root'])} / {_yes(setting['gt_scale'])}, scored locally by pipeline.evaluate")
    lines += [f"**Setting.** Ours: {ours}. Papers: {PAPER_SETTINGS[dataset, head]}.", ""]
    lines.append("| Method | Source | " + " | ".join(
        PAPER_METRICS[c].label + (" ↓" if PAPER_METRICS[c].lower_is_better else " ↑") for c in columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    lines.append(f"| **ours** ({context.get('model', 'this run')}) | this run | "
                 + " | ".join(_ours(metrics, c, setting["gt_root"] or setting["gt_scale"]) for c in columns) + " |")
    for row in rows:
        lines.append(f"| {row.method} | {row.source.split(' (')[0]} | "
                     + " | ".join(row.values[c] or "–" for c in columns) + " |")
    mapping = ", ".join(f"{c} = {PAPER_METRICS[c].ours}" + (" / 10 (mm -> cm)" if PAPER_METRICS[c].factor != 1 else "")
                        for c in columns)
    lines += ["", f"**Metric mapping** (paper = ours): {mapping}."]
    if any(PAPER_METRICS[c].absolute for c in columns) and (setting["gt_root"] or setting["gt_scale"]):
        lines += ["", "\\* absolute metric computed with the ground-truth root and/or scale (see Setting): not a "
                      "prediction-only number (finetune_eval.md §9 #20)."]
    if "F@5" in columns:
        lines += ["", "F@5 / F@15 are the F-scores after Procrustes alignment of the vertices (f5_pa / f15_pa): "
                      "the servers report raw and aligned F, and the published values match the aligned ones "
                      "(finetune_eval.md §2.5, §9 #11)."]
    lines += ["", "Conventions: Procrustes with a proper rotation (the servers' scipy solver may reflect a mirrored "
              "prediction); AUC over 0-50 mm in 100 steps. Sources: "
              + "; ".join(sorted({row.source for row in rows})) + ".", ""]
    return "\n".join(lines)
