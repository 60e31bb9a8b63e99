"""The demo's pure parts: the effect size and spread it reports, its budget scaling, its config rebasing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.demo.report import effect, spread
from pipeline.demo.run import _rebased, budget_for


def test_spread_is_the_sample_statistics():
    s = spread([10.0, 11.0, 12.0, None, math.nan])
    assert s == {"n": 3, "mean": 11.0, "std": 1.0, "min": 10.0, "max": 12.0}
    assert spread([]) == {"n": 0}


def test_effect_size_and_separation_by_hand():
    pre, rnd = spread([10.0, 11.0, 12.0]), spread([14.0, 15.0, 16.0])
    e = effect(pre, rnd, "lower")
    assert e["gain"] == pytest.approx(4.0) and e["cohen_d"] == pytest.approx(4.0) and e["ranges_separate"]
    overlap = effect(spread([10.0, 13.0, 16.0]), spread([12.0, 15.0, 18.0]), "lower")
    assert overlap["gain"] == pytest.approx(2.0) and not overlap["ranges_separate"]
    # higher is better (AUC): a lower pre-trained mean is a negative gain
    auc = effect(spread([0.6, 0.7]), spread([0.8, 0.9]), "higher")
    assert auc["gain"] == pytest.approx(-0.2) and not auc["ranges_separate"]
    assert effect(spread([1.0]), spread([2.0]), "lower")["cohen_d"] is None  # one seed each: no spread
    assert effect({"n": 0}, rnd, "lower") == {}


def test_budget_scales_every_stage_together():
    half, ref, double = budget_for(7.5), budget_for(15), budget_for(30)
    assert (half.pretrain_steps, half.finetune_steps) == (ref.pretrain_steps // 2, ref.finetune_steps // 2)
    assert half.world(0).videos == ref.world(0).videos // 2 and half.world(5).seed == 5
    assert ref.ablations == () and ref.curve_fractions == ()
    assert double.ablations == ("peclr", "simclr") and double.curve_fractions
    assert budget_for(1).world(0).sequences == 8  # floors keep a tiny demo runnable
    assert budget_for(15, ablations=True).ablations == ("peclr", "simclr")


def test_config_paths_move_under_the_demo_directory():
    data = {"data": {"datasets": [{"name": "ho3d", "shards": "runs/demo/shards/world"}]},
            "finetune": {"mano_model": "runs/demo/world/mano/MANO_RIGHT.pkl", "init": "random"},
            "checkpoint": {"dir": "runs/demo2"}}
    moved = _rebased(data, Path("/tmp/x"))
    assert moved["data"]["datasets"][0]["shards"] == "/tmp/x/shards/world"
    assert moved["finetune"] == {"mano_model": "/tmp/x/world/mano/MANO_RIGHT.pkl", "init": "random"}
    assert moved["checkpoint"]["dir"] == "runs/demo2"  # only paths under runs/demo move


def test_verdict_needs_the_models_off_the_mean_hand_floor():
    from pipeline.demo.report import verdict

    floor = {"pa_mpjpe": 15.0}
    near = {"tempclr": {"pa_mpjpe": spread([14.9, 15.1])}, "random": {"pa_mpjpe": spread([15.2, 15.3])}}
    assert verdict(near, floor).startswith("**No initialisation left the floor**")
    learned = {"tempclr": {"pa_mpjpe": spread([12.0, 12.2])}}  # 19 % below the floor
    assert "19 % below the mean hand" in verdict(learned, floor)
