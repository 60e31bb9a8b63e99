"""Label-efficiency curves (TempCLR Fig. 5, PeCLR Fig. 4): fine-tune at several label fractions for several
initialisations and seeds, evaluate every point, and draw PA-MPJPE (and PA-MPVPE where the head has vertices)
against the fraction, one line per initialisation with its spread over seeds. `handclr sweep` / launch/sweep.py.

The plan is a pure function of the arguments (`sweep_points`), so a SLURM array task rebuilds it and runs its
point by index. Each point is a fine-tuning run directory `OUT/<point id>` holding `point.json`; it is finished
once `evaluation/results.json` exists, and a sweep run again skips it. An interrupted point resumes its
fine-tuning from its newest complete checkpoint, or only evaluates when the fine-tuning had finished.

Only `data.label_fraction`, `data.seed` and `finetune.init` vary between points. `data.split_seed` stays as the
base config sets it: it draws both the held-out validation sequences and the label subsets
(pipeline/stream/splits.py), so every point picks its best checkpoint on the same validation split, and every
seed and initialisation of one fraction sees the same labelled frames (nested across fractions for single-frame
datasets such as FreiHAND). A curve thus compares more labels with fewer, and the spread over seeds is that of
the weights' initialisation, augmentation and data order, not of which frames happened to be labelled.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_write_text
from pipeline.errors import ConfigError, TrainError
from pipeline.evaluate.plots import new_figure, save_figure
from pipeline.evaluate.run import evaluate_run
from pipeline.train.components.checkpoint import LATEST, resolve_checkpoint
from pipeline.train.config import load_config
from pipeline.train.tasks.finetune import LAST
from pipeline.train.trainer import train

DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.4, 1.0)
DEFAULT_SEEDS = (0, 1, 2)
POINT_FILE, EVALUATION, RESULTS = "point.json", "evaluation", "results.json"
METRICS = {"pa_mpjpe": "PA-MPJPE (mm)", "pa_mpvpe": "PA-MPVPE (mm)"}
SPREAD = "band and brackets: min-max over seeds; ± : sample standard deviation over seeds"
TEMPLATE = Path(__file__).resolve().parents[2] / "launch" / "slurm" / "sweep.sbatch"
CURVE_SIZE = (6.4, 4.8)  # inches per panel
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Init:
    name: str  # in point ids and the legend
    spec: str  # finetune.init: random | imagenet | PATH of an encoder.safetensors


def parse_init(text: str) -> Init:
    """`random`, `imagenet`, `NAME=PATH`, or `PATH`, named after its run directory (runs/x/encoder.safetensors:
    x), since every pre-training run exports the same file name."""
    name, sep, spec = text.partition("=")
    if sep and "/" not in name:
        return Init(_NAME.sub("-", name), spec)
    path = Path(text)
    named = path.parent.name if path.stem == "encoder" and path.parent.name else path.stem
    return Init(_NAME.sub("-", named), text)


def _fraction_tag(fraction: float) -> str:
    """Two decimals (sortable, readable) unless they would round the fraction."""
    tag = f"{fraction:.2f}"
    return tag if float(tag) == fraction else f"{fraction:.6g}"


@dataclass(frozen=True)
class Point:
    fraction: float
    init: Init
    seed: int

    @property
    def id(self) -> str:
        return f"frac-{_fraction_tag(self.fraction)}_init-{self.init.name}_seed-{self.seed}"

    def overrides(self, run_dir: Path) -> list[str]:
        """What this point changes in the base config (applied after the user's --set, so nothing undoes it)."""
        return [f"data.label_fraction={self.fraction}", f"data.seed={self.seed}",
                f"finetune.init={json.dumps(self.init.spec)}", f"checkpoint.dir={json.dumps(str(run_dir))}"]

    def record(self) -> dict:
        return {"id": self.id, "fraction": self.fraction, "init": self.init.name, "init_spec": self.init.spec,
                "seed": self.seed}


def sweep_points(fractions, inits, seeds) -> list[Point]:
    """The plan in a stable order (initialisation, fraction, seed): array task i always runs the same point."""
    inits = [i if isinstance(i, Init) else parse_init(i) for i in inits]
    if not (fractions and inits and seeds):
        raise ConfigError("a sweep needs at least one label fraction, one initialisation and one seed")
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ConfigError(f"label fractions must lie in (0, 1], got {bad}")
    names = [i.name for i in inits]
    if len(set(names)) != len(names):
        raise ConfigError(f"initialisations need distinct names, got {names}: name them NAME=PATH")
    points = [Point(float(f), i, int(s)) for i in inits for f in fractions for s in seeds]
    if len({p.id for p in points}) != len(points):
        raise ConfigError("repeated label fractions or seeds in the sweep")
    return points


def select_point(points: list[Point], key: str) -> Point:
    """A point by its id or its index in the plan (what a SLURM array task passes)."""
    for i, p in enumerate(points):
        if key in (p.id, str(i)):
            return p
    raise ConfigError(f"--point {key}: neither an index below {len(points)} nor a point id of this sweep "
                      f"(e.g. {points[0].id})")


def results_path(out_dir: str | Path, point: Point) -> Path:
    return Path(out_dir) / point.id / EVALUATION / RESULTS


@dataclass(frozen=True)
class EvalArgs:
    """Where and how every point is evaluated (pipeline.evaluate.run.evaluate_run)."""

    data: str
    dataset: str
    weights: str = "best"
    max_items: int | None = None
    device: str | None = None


def latest_checkpoint(run_dir: Path) -> str | None:
    """LATEST when run_dir holds a complete checkpoint to resume from, else None (a fresh start)."""
    try:
        resolve_checkpoint(run_dir, LATEST)
    except TrainError:
        return None
    return LATEST


def run_point(base_config: str | Path, overrides: list[str], point: Point, out_dir: str | Path,
              eval_args: EvalArgs) -> str:
    """Fine-tune and evaluate one point. Returns "finished" (already done: skipped), "stopped" (a pre-emption
    signal stopped the fine-tuning after a checkpoint: the next run resumes it) or "ran"."""
    run_dir = Path(out_dir) / point.id
    if results_path(out_dir, point).is_file():
        return "finished"
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / POINT_FILE, json.dumps(point.record(), indent=1))
    if not (run_dir / LAST).is_file():  # the trainer writes the last model only when the schedule is done
        cfg = load_config(base_config, ["task=finetune", *overrides, *point.overrides(run_dir)])
        train(cfg, resume=latest_checkpoint(run_dir))
        gc.collect()  # the run's loader iterators sit in reference cycles: end their workers before the next fork
        if not (run_dir / LAST).is_file():
            return "stopped"
    evaluate_run(run_dir, eval_args.data, eval_args.dataset, run_dir / EVALUATION, eval_args.weights,
                 max_items=eval_args.max_items, device=eval_args.device)
    return "ran"


def collect(out_dir: str | Path, metrics=METRICS) -> list[dict]:
    """One row per evaluated point under out_dir: the point and its `metrics` (None where not measured)."""
    rows = []
    for record in sorted(Path(out_dir).glob(f"*/{POINT_FILE}")):
        results = record.parent / EVALUATION / RESULTS
        if results.is_file():
            measured = json.loads(results.read_text())["metrics"]
            rows.append({**json.loads(record.read_text()), **{m: measured.get(m) for m in metrics}})
    return sorted(rows, key=lambda r: (r["init"], r["fraction"], r["seed"]))


def _stats(values: list) -> dict:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def summarise(rows: list[dict]) -> list[dict]:
    """Per initialisation and fraction: the number of seeds and each metric's mean, std, min and max."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["init"], r["fraction"]), []).append(r)
    return [{"init": init, "fraction": fraction, "seeds": len(group),
             **{m: _stats([r[m] for r in group]) for m in METRICS}}
            for (init, fraction), group in sorted(groups.items())]


def curves_figure(summary: list[dict]):
    """PA-MPJPE (and PA-MPVPE when measured) against the label fraction on a log axis: per initialisation the
    mean over seeds as a line and the min-max over seeds as a band."""
    panels = [m for m in METRICS if any(s[m]["mean"] is not None for s in summary)]
    if not panels:
        raise ValueError("no evaluated point to plot")
    fig = new_figure((CURVE_SIZE[0] * len(panels), CURVE_SIZE[1]))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fractions = sorted({s["fraction"] for s in summary})
    for ax, metric in zip(axes, panels, strict=True):
        for k, init in enumerate(sorted({s["init"] for s in summary})):  # one colour per init in every panel
            line = [s for s in summary if s["init"] == init and s[metric]["mean"] is not None]
            if not line:
                continue
            x = [100 * s["fraction"] for s in line]
            ax.plot(x, [s[metric]["mean"] for s in line], marker="o", color=f"C{k}", label=init)
            ax.fill_between(x, [s[metric]["min"] for s in line], [s[metric]["max"] for s in line],
                            color=f"C{k}", alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g} %" for f in fractions])
        ax.minorticks_off()
        ax.set(xlabel="labelled training frames", ylabel=f"{METRICS[metric]}, mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend(title="initialisation")
    fig.suptitle("label efficiency (band: min-max over seeds)")
    fig.tight_layout()
    return fig


def plot_curves(rows: list[dict], path: str | Path) -> Path:
    """curves_figure of collect()'s rows as a PNG; returns path."""
    return save_figure(curves_figure(summarise(rows)), path)


def _cell(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f} [{stats['min']:.2f}, {stats['max']:.2f}]"


def markdown_table(summary: list[dict]) -> str:
    head = ["initialisation", "labels", "seeds", *METRICS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["init"], f"{100 * s['fraction']:g} %", str(s["seeds"]), *(_cell(s[m]) for m in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± sample std [min, max] over seeds, in mm.\n"


def write_curves(out_dir: str | Path) -> list[Path]:
    """curves.json (points and summary), curves.md (the table) and curves.png from what is evaluated so far."""
    out_dir = Path(out_dir)
    rows = collect(out_dir)
    if not rows:
        raise ConfigError(f"{out_dir}: no evaluated point yet (no */{EVALUATION}/{RESULTS})")
    summary = summarise(rows)
    doc = {"format": "handclr-curves/1", "spread": SPREAD, "metrics": METRICS, "points": rows, "summary": summary}
    atomic_write_text(out_dir / "curves.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out_dir / "curves.md", "# Label efficiency\n\n" + markdown_table(summary))
    return [out_dir / "curves.json", out_dir / "curves.md", plot_curves(rows, out_dir / "curves.png")]


def write_slurm(out_dir: str | Path, argv: list[str], indices: list[int], template: Path = TEMPLATE) -> Path:
    """OUT/sweep.sbatch: the template as an array job over the plan indices of the unfinished points, with the
    sweep's arguments filled in (each task runs `launch/sweep.py ARGS --point $SLURM_ARRAY_TASK_ID`)."""
    if not indices:
        raise ConfigError("every point of the sweep is finished: nothing to submit")
    text = template.read_text()
    array = f"#SBATCH --array={','.join(str(i) for i in indices)}\n"
    defaults = f'if [ "$#" -eq 0 ]; then set -- {shlex.join(argv)}; fi\n'
    strict = "set -euo pipefail\n"
    if text.count(strict) != 1:
        raise ConfigError(f"{template}: expected one line {strict.strip()!r} to place the array and arguments at")
    path = Path(out_dir) / "sweep.sbatch"
    atomic_write_text(path, text.replace(strict, array + strict + defaults))
    return path


def sweep_argv(args: argparse.Namespace) -> list[str]:
    """The sweep's own arguments (no --point / --slurm / --plot-only), for the array tasks."""
    argv = ["--config", args.config, "--eval-data", args.eval_data, "--dataset", args.dataset,
            "--fractions", *map(str, args.fractions), "--inits", *args.inits, "--seeds", *map(str, args.seeds),
            "--out", args.out, "--weights", args.weights]
    argv += [a for o in args.overrides for a in ("--set", o)]
    argv += ["--max-items", str(args.max_items)] if args.max_items is not None else []
    return argv + (["--device", args.device] if args.device else [])


def sweep_command(args: argparse.Namespace) -> int:
    """`handclr sweep`: every unfinished point one after another, then the curves; or one point (--point), the
    SLURM array script (--slurm), or only the curves (--plot-only)."""
    points, out = sweep_points(args.fractions, args.inits, args.seeds), Path(args.out)
    if args.plot_only:
        print("wrote " + ", ".join(map(str, write_curves(out))))
        return 0
    if args.slurm:
        pending = [i for i, p in enumerate(points) if not results_path(out, p).is_file()]
        path = write_slurm(out, sweep_argv(args), pending)
        print(f"wrote {path}: {len(pending)} of {len(points)} points to run; submit with `sbatch {path}`, then "
              f"draw the curves with the same command and --plot-only")
        return 0
    chosen = [select_point(points, args.point)] if args.point is not None else points
    eval_args = EvalArgs(args.eval_data, args.dataset, args.weights, args.max_items, args.device)
    for i, point in enumerate(chosen, 1):
        status = run_point(args.config, args.overrides, point, out, eval_args)
        print(f"[{i}/{len(chosen)}] {point.id}: {status}")
        if status == "stopped":  # a signal asked this process to end: the next run resumes the point
            return 0
    if args.point is None:
        print("wrote " + ", ".join(map(str, write_curves(out))))
    return 0
