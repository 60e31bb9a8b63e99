"""OUT/report.md of `make demo`: pre-trained against random initialisation on held-out sequences, the effect size
and the seeds' spread, the label-efficiency plot, the t-SNE side by side, and each stage's wall time."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_write_text
from pipeline.demo.baseline import BASELINE_FILE
from pipeline.evaluate.curves import collect, curves_figure, summarise
from pipeline.evaluate.plots import save_figure

METRICS = {"pa_mpjpe": ("PA-MPJPE (mm)", "lower"), "pa_mpvpe": ("PA-MPVPE (mm)", "lower"),
           "auc_pa_mpjpe_0_50": ("AUC PA-PCK 0-50 mm", "higher")}
REPORT = "report.md"
FLOOR_MARGIN = 0.1  # PA-MPJPE at least 10 % below the mean hand's counts as having learned from the pixels
FLOOR_NOTE = ("The mean hand: the training sequences' mean articulation and shape, predicted for every test frame "
              "(Procrustes alignment supplies the rotation); a model near it learned nothing about the fingers from "
              "the pixels.")


def spread(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return {"n": 0}
    return {"n": len(v), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def effect(a: dict, b: dict, better: str) -> dict[str, Any]:
    """How far `a` (pre-trained) is ahead of `b` (random) on one metric: the difference of means (positive:
    a better), Cohen's d with the pooled standard deviation, and whether every seed of a beats every seed of b
    (the ranges do not overlap: "more than the spread over seeds")."""
    if not a.get("n") or not b.get("n"):
        return {}
    sign = 1.0 if better == "lower" else -1.0
    gain = sign * (b["mean"] - a["mean"])
    pooled = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)
    separated = a["max"] < b["min"] if better == "lower" else a["min"] > b["max"]
    return {"gain": gain, "cohen_d": gain / pooled if pooled > 0 else None, "ranges_separate": bool(separated)}


def _cell(s: dict) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def results_table(rows: list[dict], fraction: float, floor: dict | None = None
                  ) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """The markdown table at `fraction` (one row per initialisation, then the mean-hand floor) and its stats."""
    inits = sorted({r["init"] for r in rows if r["fraction"] == fraction}, key=lambda n: (n == "random", n))
    stats = {i: {m: spread([r[m] for r in rows if r["init"] == i and r["fraction"] == fraction]) for m in METRICS}
             for i in inits}
    lines = ["| initialisation | seeds | " + " | ".join(label for label, _ in METRICS.values()) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for i in inits:
        n = max(s.get("n", 0) for s in stats[i].values())
        lines.append(f"| {i} | {n} | " + " | ".join(_cell(stats[i][m]) for m in METRICS) + " |")
    if floor:
        lines.append("| mean hand (no image) | – | " + " | ".join(f"{floor[m]:.2f}" for m in METRICS) + " |")
    return lines, stats


def _effects(stats: dict[str, dict[str, dict]]) -> tuple[list[str], dict]:
    lines, found = [], {}
    for init in (i for i in stats if i != "random"):
        if "random" not in stats:
            break
        found[init] = {m: effect(stats[init][m], stats["random"][m], better) for m, (_, better) in METRICS.items()}
        for m, (label, _) in METRICS.items():
            e = found[init][m]
            if e:
                lines.append(f"- {init} vs random, {label}: gain {e['gain']:+.2f} (Cohen's d {_num(e['cohen_d'])}); "
                             f"every {init} seed better than every random seed: "
                             f"{'yes' if e['ranges_separate'] else 'no'}")
    return lines, found


def verdict(stats: dict[str, dict[str, dict]], floor: dict | None) -> str:
    """One sentence on whether the models left the mean-hand floor: a gain between models that did not learn
    the fingers is not a gain from pre-training."""
    if not floor or not stats:
        return ""
    measured = [(s["pa_mpjpe"]["mean"], name) for name, s in stats.items() if s["pa_mpjpe"].get("n")]
    if not measured:
        return "**No fine-tuning run produced a finite PA-MPJPE.**"
    best = min(measured)
    margin = 1 - best[0] / floor["pa_mpjpe"]
    if margin < FLOOR_MARGIN:
        return (f"**No initialisation left the floor**: the best ({best[1]}, {best[0]:.2f} mm) is within "
                f"{100 * FLOOR_MARGIN:.0f} % of the mean hand ({floor['pa_mpjpe']:.2f} mm) or worse, so the "
                "differences above are not evidence that pre-training helps at this budget.")
    return (f"The best initialisation ({best[1]}, {best[0]:.2f} mm) is {100 * margin:.0f} % below the mean hand "
            f"({floor['pa_mpjpe']:.2f} mm): the models learned the fingers from the pixels.")


def _stage_lines(seconds: dict[str, float]) -> list[str]:
    lines = ["| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {s:.0f} |" for name, s in seconds.items()]
    return [*lines, f"| **total** | **{sum(seconds.values()):.0f}** ({sum(seconds.values()) / 60:.1f} min) |"]


def _embedding_lines(out: Path) -> list[str]:
    path = out / "embedding" / "report.json"
    if not path.is_file():
        return ["(no embedding report)"]
    doc = json.loads(path.read_text())
    lines = ["![t-SNE](embedding/tsne.png)", "",
             f"Temporal retrieval@{doc['settings']['k']} (a neighbour of the same clip within "
             f"±{doc['settings']['window']} frames; chance {doc['retrieval_chance']:.3f}):"]
    lines += [f"- {name}: {enc['retrieval']:.3f}" for name, enc in doc["encoders"].items()]
    return lines


def _world_lines(out: Path) -> list[str]:
    path = out / "world" / "world.json"
    if not path.is_file():
        return []
    w = json.loads(path.read_text())
    o = w["options"]
    return [f"World seed {o['seed']}: {w['videos']} unlabelled videos x {o['video_frames']} frames "
            f"({w['left_videos']} left hands), {w['train_sequences']} labelled training sequences x "
            f"{o['sequence_frames']} frames, {w['test_sequences']} held-out test sequences x {o['test_frames']} "
            f"frames, {o['width']}x{o['height']} at {o['fps']:g} fps; rendered at {w['frames_per_s_per_core']} "
            f"frames/s/core ({w['frames']} frames in {w['wall_s']} s with {w['workers']} workers)."]


def write_report(out: Path, budget: Any, seconds: dict[str, float]) -> Path:
    """Write OUT/report.md (and OUT/report.json with the same numbers); returns the markdown's path."""
    rows = collect(out / "finetune", METRICS)
    floor_path = out / BASELINE_FILE
    floor = json.loads(floor_path.read_text()) if floor_path.is_file() else None
    table, stats = results_table(rows, budget.label_fraction, floor)
    effect_lines, effects = _effects(stats)
    lines = ["# handclr demo: does pre-training help?", "", *_world_lines(out), "",
             f"Fine-tuning the MANO head at label fraction {budget.label_fraction:g} for {budget.finetune_steps} "
             f"steps after {budget.pretrain_steps} pre-training steps (budget {budget.minutes:g} min); evaluated on "
             f"the held-out test sequences. Cells: mean ± sample std [min, max] over seeds {list(budget.seeds)}.",
             "", *table, "", FLOOR_NOTE, "", *effect_lines, "", verdict(stats, floor), ""]
    if len({r["fraction"] for r in rows}) > 1:
        summary = summarise([{**r, "pa_mpvpe": r.get("pa_mpvpe")} for r in rows])
        save_figure(curves_figure(summary), out / "curves.png")
        lines += ["## Label efficiency", "", "![label efficiency](curves.png)", ""]
    lines += ["## Embeddings (held-out test sequences)", "", *_embedding_lines(out), "",
              "## Wall time", "", *_stage_lines(seconds), ""]
    atomic_write_text(out / "report.json", json.dumps({"rows": rows, "stats": stats, "effects": effects,
                                                       "mean_hand": floor, "seconds": seconds}, indent=1,
                                                      allow_nan=False))
    path = out / REPORT
    atomic_write_text(path, "\n".join(lines))
    return path


def _num(x: float | None) -> str:
    return "undefined (no spread)" if x is None else f"{x:.1f}"
