"""Label-efficiency sweeps (pipeline/evaluate/curves.py): the plan, resumability with a counting stand-in for the
trainer, the curves and table on synthetic results, the SLURM array script, and one real point end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline.errors import ConfigError
from pipeline.evaluate import curves
from pipeline.evaluate.curves import EvalArgs, Init, parse_init, sweep_points
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard
from pipeline.train.tasks.finetune import LAST

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "finetune_smoke.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def test_plan_ids_are_stable_unique_and_in_plan_order():
    points = sweep_points([0.05, 0.1, 1.0], ["runs/tempclr_rn50/encoder.safetensors", "random", "imagenet"], [0, 1])
    assert len(points) == len({p.id for p in points}) == 18
    assert [p.id for p in points[:3]] == ["frac-0.05_init-tempclr_rn50_seed-0", "frac-0.05_init-tempclr_rn50_seed-1",
                                          "frac-0.10_init-tempclr_rn50_seed-0"]
    assert points[-1].id == "frac-1.00_init-imagenet_seed-1"
    assert points[0].init == Init("tempclr_rn50", "runs/tempclr_rn50/encoder.safetensors")
    assert [p.id for p in sweep_points([0.05, 0.1, 1.0], ["runs/tempclr_rn50/encoder.safetensors", "random",
                                                          "imagenet"], [0, 1])] == [p.id for p in points]
    assert sweep_points([0.125], ["random"], [3])[0].id == "frac-0.125_init-random_seed-3"  # never rounded
    assert parse_init("peclr=runs/a b/x.safetensors") == Init("peclr", "runs/a b/x.safetensors")
    assert parse_init("weights/my model.safetensors").name == "my-model"
    with pytest.raises(ConfigError, match="distinct names"):
        sweep_points([1.0], ["runs/a/encoder.safetensors", "other/a/encoder.safetensors"], [0])
    with pytest.raises(ConfigError, match=r"lie in \(0, 1\]"):
        sweep_points([0.0, 0.5], ["random"], [0])
    with pytest.raises(ConfigError, match="repeated"):
        sweep_points([0.5, 0.5], ["random"], [0])


def _sweep_args(out: Path, *extra: str) -> list[str]:
    return ["sweep", "--config", str(SMOKE), "--eval-data", "shards/eval", "--dataset", "freihand", "--fractions",
            "0.5", "1.0", "--inits", "random", "pre=runs/p/encoder.safetensors", "--seeds", "0", "1", "--out",
            str(out), "--set", "data.split_seed=7", *extra]


def _fake_results(run_dir: Path, pa_mpjpe: float, pa_mpvpe: float | None) -> None:
    (run_dir / "evaluation").mkdir(parents=True, exist_ok=True)
    (run_dir / "evaluation" / "results.json").write_text(json.dumps({"metrics": {"pa_mpjpe": pa_mpjpe,
                                                                                  "pa_mpvpe": pa_mpvpe}}))


@pytest.fixture
def fake_runner(monkeypatch):
    """Stand-ins for the trainer (records the config, writes the last model unless told to stop) and the
    evaluation (writes a results.json), so that only the sweep's own logic runs."""
    calls = {"train": [], "evaluate": [], "stop": False}

    def train(cfg, resume=None):
        calls["train"].append((cfg, resume))
        if not calls["stop"]:
            (Path(cfg.checkpoint.dir) / LAST).write_bytes(b"")

    def evaluate_run(run_dir, data, dataset, out, weights, max_items=None, device=None):
        calls["evaluate"].append(Path(run_dir).name)
        _fake_results(Path(run_dir), 10.0, 9.0)

    monkeypatch.setattr(curves, "train", train)
    monkeypatch.setattr(curves, "evaluate_run", evaluate_run)
    return calls


def test_finished_points_are_skipped_and_interrupted_ones_resumed(fake_runner, tmp_path, capsys):
    points = sweep_points([0.5, 1.0], ["random", "pre=runs/p/encoder.safetensors"], [0, 1])
    _fake_results(tmp_path / points[1].id, 12.0, None)  # finished: never trained again
    (tmp_path / points[2].id).mkdir()
    (tmp_path / points[2].id / LAST).write_bytes(b"")  # trained, not evaluated: evaluated only
    fake_runner["stop"] = True
    assert cli.main(_sweep_args(tmp_path)) == 0  # the first point is stopped by a signal: the sweep ends there
    assert len(fake_runner["train"]) == 1 and not fake_runner["evaluate"]
    fake_runner["stop"] = False
    assert cli.main(_sweep_args(tmp_path)) == 0
    trained = [Path(cfg.checkpoint.dir).name for cfg, _ in fake_runner["train"][1:]]
    assert trained == [p.id for i, p in enumerate(points) if i not in (1, 2)]
    assert fake_runner["evaluate"] == [p.id for i, p in enumerate(points) if i != 1]
    cfg = fake_runner["train"][-1][0]
    assert (cfg.task, cfg.data.label_fraction, cfg.data.seed, cfg.finetune.init) == (
        "finetune", 1.0, 1, "runs/p/encoder.safetensors")
    assert {c.data.split_seed for c, _ in fake_runner["train"]} == {7}  # one validation split for every point
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    fake_runner["train"].clear()
    assert cli.main(_sweep_args(tmp_path)) == 0 and not fake_runner["train"]  # everything finished
    assert cli.main(_sweep_args(tmp_path, "--point", "3")) == 0 and not fake_runner["train"]
    with pytest.raises(ConfigError, match="--point 8"):
        curves.select_point(points, "8")
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == "[8/8] frac-1.00_init-pre_seed-1: finished" and out[-2].startswith("wrote ")
    assert out[-1] == "[1/1] frac-1.00_init-random_seed-1: finished"


def _synthetic_sweep(out: Path) -> dict:
    """PA-MPJPE = 10 / fraction + seed (mean 10 / f + 0.5 over seeds 0, 1) for `pre`, 20 / f + 2 seed for
    `random`; PA-MPVPE only for `pre`."""
    expected = {}
    for init, base, step, verts in (("pre", 10.0, 1.0, True), ("random", 20.0, 2.0, False)):
        for f in (0.25, 0.5, 1.0):
            for seed in (0, 1):
                point = curves.Point(f, Init(init, init), seed)
                run_dir = out / point.id
                _fake_results(run_dir, base / f + step * seed, base / f - seed if verts else None)
                (run_dir / "point.json").write_text(json.dumps(point.record()))
            expected[init, f] = base / f + step / 2
    return expected


def test_collect_table_and_plot_on_synthetic_results(tmp_path):
    expected = _synthetic_sweep(tmp_path)
    (tmp_path / "unevaluated").mkdir()
    (tmp_path / "unevaluated" / "point.json").write_text("{}")  # not evaluated yet: left out
    paths = curves.write_curves(tmp_path)
    assert paths[-1].read_bytes()[:8] == PNG
    rows = curves.collect(tmp_path)
    assert len(rows) == 12
    fig = curves.curves_figure(curves.summarise(rows))
    joints, verts = fig.axes[:2]
    assert [line.get_label() for line in joints.lines] == ["pre", "random"]
    for line in joints.lines:
        assert np.allclose(line.get_xdata(), [25, 50, 100])
        assert np.allclose(line.get_ydata(), [expected[line.get_label(), f] for f in (0.25, 0.5, 1.0)])
    assert [line.get_label() for line in verts.lines] == ["pre"]
    assert np.allclose(verts.lines[0].get_ydata(), [40 - 0.5, 20 - 0.5, 10 - 0.5])
    assert joints.get_xscale() == "log"
    table = (tmp_path / "curves.md").read_text()
    assert "| random | 25 % | 2 | 81.00 ± 1.41 [80.00, 82.00] | - |" in table
    summary = json.loads((tmp_path / "curves.json").read_text())["summary"]
    assert summary[0]["pa_mpjpe"] == {"mean": 40.5, "std": pytest.approx(2**-0.5), "min": 40.0, "max": 41.0}


def test_slurm_array_has_one_task_per_unfinished_point(tmp_path):
    points = sweep_points([0.5, 1.0], ["random", "pre=runs/p/encoder.safetensors"], [0, 1])
    for i in (0, 5):
        _fake_results(tmp_path / points[i].id, 10.0, None)
    assert cli.main(_sweep_args(tmp_path, "--slurm")) == 0
    script = tmp_path / "sweep.sbatch"
    text = script.read_text()
    array = re.search(r"^#SBATCH --array=(.+)$", text, re.M).group(1).split(",")
    assert array == ["1", "2", "3", "4", "6", "7"]  # the plan indices of the 6 unfinished points
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "4", "PYTHON": "echo"}  # what task 4 would run
    ran = subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, text=True).stdout.split()
    assert ran[0] == "launch/sweep.py" and ran[-2:] == ["--point", "4"]
    args = cli.build_parser().parse_args(["sweep", *ran[1:]])
    assert curves.select_point(sweep_points(args.fractions, args.inits, args.seeds), args.point) == points[4]
    assert args.overrides == ["data.split_seed=7"] and args.out == str(tmp_path)
    for i in range(len(points)):
        _fake_results(tmp_path / points[i].id, 10.0, None)
    with pytest.raises(ConfigError, match="nothing to submit"):
        curves.write_slurm(tmp_path, [], [])


@pytest.fixture(scope="module")
def eval_shards(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval-shards")
    shard(load_recipe(REPO / "shards" / "freihand_eval.yaml"), sample[0] / "freihand", out, workers=1, progress=False)
    return out


def test_one_real_point_end_to_end(sample, sample_shards, eval_shards, tmp_path):
    """Fine-tuning at half the labels, its evaluation and the curves, then skipped when run again."""
    datasets = f"[{{name: freihand, shards: {sample_shards}}}, {{name: ho3d, shards: {sample_shards}}}]"
    overrides = [f"data.datasets={datasets}", f"finetune.mano_model={sample[1]['mano']}", "logging.report_to=none",
                 "logging.progress=false", "loader.num_workers=0", "schedule.max_steps=4"]
    point = sweep_points([0.5], ["random"], [1])[0]
    eval_args = EvalArgs(str(eval_shards), "freihand")
    assert curves.run_point(SMOKE, overrides, point, tmp_path, eval_args) == "ran"
    run_dir = tmp_path / point.id
    assert json.loads((run_dir / "data_split.json").read_text())["split"]["label_fraction"] == 0.5
    assert json.loads((run_dir / "point.json").read_text())["init"] == "random"
    metrics = json.loads((run_dir / "evaluation" / "results.json").read_text())["metrics"]
    assert np.isfinite([metrics["pa_mpjpe"], metrics["pa_mpvpe"]]).all()
    assert curves.run_point(SMOKE, overrides, point, tmp_path, eval_args) == "finished"
    assert curves.write_curves(tmp_path)[-1].read_bytes()[:8] == PNG
    assert curves.collect(tmp_path)[0]["pa_mpjpe"] == metrics["pa_mpjpe"]
