"""`make demo`: the whole pipeline on the synthetic world, on a laptop, and whether pre-training helps.

world -> shards (+ verify) -> TempCLR pre-training -> fine-tuning at a small label fraction from the pre-trained
encoder and from random initialisation, several seeds each -> evaluation on held-out sequences -> embedding
report -> OUT/report.md. Everything runs in this one process (one torch import, no launcher), stage by stage;
a stage whose outputs exist is skipped, so an interrupted demo resumes where it stopped. `minutes` scales every
budget together (world size, pre-training and fine-tuning steps); 15 fits 2 CPU cores, a fresh
clone's `make install` included.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_text
from pipeline.demo.baseline import BASELINE_FILE, mean_hand_baseline
from pipeline.demo.report import write_report
from pipeline.errors import HandclrError
from pipeline.evaluate.curves import EvalArgs, Init, Point, latest_checkpoint, results_path, run_point
from pipeline.evaluate.embedding import embedding_report
from pipeline.sampledata.world import WORLD_FILE, WorldOptions, generate_world
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard
from pipeline.sharding.verify import verify
from pipeline.train.config import load_config
from pipeline.train.trainer import train
from pipeline.typedconfig import read_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs"
RECIPES = Path(__file__).resolve().parents[2] / "shards"
REFERENCE_MINUTES = 15.0
DEFAULT_OUT = "runs/demo"  # the configs' paths start with it; a demo elsewhere rebases them
STAGES_FILE, BUDGET_FILE = "stages.json", "budget.json"
VERIFIED = "verified.json"  # beside a shard set's summary once `verify --deep` found nothing


@dataclass(frozen=True)
class Budget:
    """What `minutes` buys (at the reference, 15 minutes on 2 CPU cores)."""

    minutes: float = REFERENCE_MINUTES
    pretrain_steps: int = 200
    finetune_steps: int = 130
    seeds: tuple[int, ...] = (0, 1, 2)
    label_fraction: float = 0.1
    ablations: tuple[str, ...] = ()  # more pre-training objectives (peclr, simclr), same budget each
    curve_fractions: tuple[float, ...] = ()  # more label fractions for the label-efficiency plot

    def scaled(self, n: int, least: int = 1) -> int:
        return max(least, round(n * self.minutes / REFERENCE_MINUTES))

    def world(self, seed: int) -> WorldOptions:
        base = WorldOptions()
        return WorldOptions(seed=seed, videos=self.scaled(base.videos, 8), sequences=self.scaled(base.sequences, 8),
                            test_sequences=self.scaled(base.test_sequences, 4))


def budget_for(minutes: float, ablations: bool | None = None, curves: bool | None = None) -> Budget:
    """Steps scale with the minutes; the PeCLR/SimCLR ablation and the label-efficiency curve are added when the
    budget allows them (about 2x and 1.5x the reference) unless asked for explicitly."""
    base = Budget(minutes=minutes)
    with_ablations = minutes >= 2 * REFERENCE_MINUTES if ablations is None else ablations
    with_curves = minutes >= 1.5 * REFERENCE_MINUTES if curves is None else curves
    return Budget(minutes, base.scaled(base.pretrain_steps, 10), base.scaled(base.finetune_steps, 10), base.seeds,
                  base.label_fraction, ("peclr", "simclr") if with_ablations else (),
                  (0.05, 0.25, 1.0) if with_curves else ())


@dataclass
class Stages:
    """Wall time of each stage, kept in OUT/stages.json across resumed runs."""

    path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path.is_file():
            self.seconds = json.loads(self.path.read_text())

    def run(self, name: str, done: Callable[[], bool], work: Callable[[], object]) -> None:
        """Run `work` unless `done()`; a stage whose outputs are still missing afterwards (a stop signal ended
        its training after a checkpoint) ends the demo: the next run resumes it."""
        if done():
            print(f"demo: {name}: done before, skipped")
            return
        print(f"demo: {name} ...", flush=True)
        start = time.perf_counter()
        work()
        gc.collect()  # a training run's loader iterators sit in reference cycles: end their workers now
        if not done():
            raise HandclrError(f"demo: {name} stopped before finishing; run the demo again to resume it")
        self.seconds[name] = round(time.perf_counter() - start, 1)
        atomic_write_text(self.path, json.dumps(self.seconds, indent=1))
        print(f"demo: {name}: {self.seconds[name]:.0f} s", flush=True)


def _rebased(value: Any, out: Path) -> Any:
    """Every string path under DEFAULT_OUT moved under `out`, in nested config data."""
    if isinstance(value, dict):
        return {k: _rebased(v, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebased(v, out) for v in value]
    if isinstance(value, str) and (value == DEFAULT_OUT or value.startswith(DEFAULT_OUT + "/")):
        return str(out) + value[len(DEFAULT_OUT):]
    return value


def demo_config(out: Path, name: str, steps: int) -> Path:
    """launch/configs/<name> with its paths under `out` and a schedule of one epoch of exactly `steps` optimiser
    steps (the cosine spans the whole budget), written to OUT/configs/<name>: what the demo ran."""
    data = _rebased(read_yaml(CONFIGS / name), out)
    data["schedule"] = {**data.get("schedule", {}), "max_steps": steps, "epochs": 1}
    data["data"] = {**data["data"], "items_per_epoch": steps * data["distributed"]["effective_batch"]}
    path = out / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def _pretrain(out: Path, budget: Budget, objective: str) -> Path:
    run_dir = out / "pretrain" / objective
    config = demo_config(out, "demo_tempclr.yaml", budget.pretrain_steps)
    cfg = load_config(config, [f"objective.name={objective}", f"checkpoint.dir={json.dumps(str(run_dir))}"])
    train(cfg, resume=latest_checkpoint(run_dir))
    return run_dir / "encoder.safetensors"


def _finetune_points(out: Path, budget: Budget) -> list[Point]:
    inits = [Init(name, str(out / "pretrain" / name / "encoder.safetensors"))
             for name in ("tempclr", *budget.ablations)] + [Init("random", "random")]
    fractions = sorted({budget.label_fraction, *budget.curve_fractions})
    # seed-major order: an interrupted demo has compared every initialisation on the same seeds so far
    return [Point(f, init, seed) for seed in budget.seeds for f in fractions for init in inits
            if f == budget.label_fraction or init.name in ("tempclr", "random")]


def run_demo(out: str | Path = DEFAULT_OUT, minutes: float = REFERENCE_MINUTES, seed: int = 0, workers: int = 2,
             ablations: bool | None = None, curves: bool | None = None) -> Path:
    """Run (or resume) the demo under `out`; returns the path of report.md."""
    out = Path(out)
    budget = budget_for(minutes, ablations, curves)
    out.mkdir(parents=True, exist_ok=True)
    world, shards, test = out / "world", out / "shards" / "world", out / "shards" / "world_test"
    stages = Stages(out / STAGES_FILE)
    _claim(out, {"seed": seed, **budget.__dict__})

    stages.run("world", lambda: (world / WORLD_FILE).is_file(),
               lambda: generate_world(world, budget.world(seed), workers, progress=False))
    for recipe, target in (("world.yaml", shards), ("world_test.yaml", test)):
        stages.run(f"shards ({recipe})", lambda t=target: (t / VERIFIED).is_file(),
                   lambda r=recipe, t=target: _shard(r, world, t, workers))
    for objective in ("tempclr", *budget.ablations):
        stages.run(f"pretrain ({objective})",
                   lambda o=objective: (out / "pretrain" / o / "encoder.safetensors").is_file(),
                   lambda o=objective: _pretrain(out, budget, o))
    eval_args = EvalArgs(str(test), "ho3d")
    finetunes = out / "finetune"
    config = demo_config(out, "demo_finetune.yaml", budget.finetune_steps)
    for point in _finetune_points(out, budget):
        stages.run(f"finetune+evaluate ({point.id})", lambda p=point: results_path(finetunes, p).is_file(),
                   lambda p=point: run_point(config, [], p, finetunes, eval_args))
    stages.run("mean-hand baseline", lambda: (out / BASELINE_FILE).is_file(),
               lambda: atomic_write_text(out / BASELINE_FILE, json.dumps(mean_hand_baseline(world), indent=1)))
    encoders = [str(out / "pretrain" / o / "encoder.safetensors") for o in ("tempclr", *budget.ablations)]
    stages.run("embedding report", lambda: (out / "embedding" / "report.json").is_file(),
               lambda: embedding_report(str(test), ["ho3d"], [*encoders, "random"], out / "embedding",
                                        sequences=min(8, budget.world(seed).test_sequences), size=64, window=4))
    return write_report(out, budget, stages.seconds)


def _claim(out: Path, budget: dict) -> None:
    """Record the demo's seed and budget in OUT, or refuse OUT when it holds another demo's: its finished stages
    would be skipped and mixed into this report."""
    path = out / BUDGET_FILE
    if path.is_file():
        held = json.loads(path.read_text())
        if held != json.loads(json.dumps(budget)):
            raise HandclrError(f"{out} holds a demo with seed {held.get('seed')} and {held.get('minutes')} minutes "
                               f"({path}): use another --out, or remove it to start over")
    atomic_write_text(path, json.dumps(budget, indent=1))


def _shard(recipe: str, world: Path, target: Path, workers: int) -> None:
    summary = shard(load_recipe(RECIPES / recipe), world, target, workers=workers, progress=False)
    problems = verify(target, deep=True)
    if problems:
        raise HandclrError(f"verify {target}: " + "; ".join(problems[:5]))
    atomic_write_text(target / VERIFIED, json.dumps({"deep": True, "problems": 0}))
    lost = summary["frames_in"] - summary["frames_written"]
    print(f"  {recipe}: {summary['frames_written']} frames in {summary['samples']} samples"
          + (f", {lost} frames skipped (see summary.json)" if lost else ""))
