"""The trainer end to end on CPU: exact resume, pre-emption by signal, the python and torchrun launch styles,
config validation, encoder export, non-finite steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from pipeline.errors import ConfigError
from pipeline.train.config import load_config
from pipeline.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "smoke.yaml"


def smoke(stream_shards, run_dir, *extra):
    return load_config(SMOKE, [f"data.datasets=[{{name: hanco, shards: {stream_shards}}}]",
                               f"checkpoint.dir={run_dir}", "logging.report_to=none", "logging.progress=false",
                               "probe.datasets=[]", "loader.num_workers=0", "schedule.max_steps=6",
                               "data.items_per_epoch=48", *extra])


def final_state(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step-{step:08d}" / "state.pt", weights_only=False)


def test_resume_continues_bit_identically(stream_shards, tmp_path):
    """k + j steps uninterrupted == k steps, stop, resume from the step-k checkpoint, j steps."""
    full = tmp_path / "full"
    train(smoke(stream_shards, full, "checkpoint.every_steps=2", "checkpoint.keep_last=10"))
    resumed = tmp_path / "resumed"
    train(smoke(stream_shards, resumed, "checkpoint.every_steps=100"),
          resume=str(full / "checkpoints" / "step-00000004"))
    a, b = final_state(full, 6), final_state(resumed, 6)
    assert a["progress"] == b["progress"] and a["progress"]["step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (full / "config.yaml").exists() and (full / "encoder.safetensors").exists()
    kept = sorted(p.name for p in (full / "checkpoints").glob("step-*"))
    assert kept == ["step-00000002", "step-00000004", "step-00000006"]


def test_exported_encoder_loads_into_timm(stream_shards, tmp_path):
    train(smoke(stream_shards, tmp_path, "schedule.max_steps=1"))
    encoder = timm.create_model("test_resnet", num_classes=0)
    missing, unexpected = encoder.load_state_dict(safetensors.torch.load_file(tmp_path / "encoder.safetensors"))
    assert not missing and not unexpected


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(SMOKE, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.precision: 'fp8' is not one of"):
        load_config(SMOKE, ["optim.precision=fp8"])
    cfg = load_config(SMOKE, ["distributed.effective_batch=24", "distributed.micro_batch=8"])
    assert cfg.accumulation(1) == 3
    with pytest.raises(ConfigError, match="not a multiple"):
        cfg.accumulation(2)


def launch(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cli_overrides(stream_shards, run_dir, steps):
    return ["--config", str(SMOKE), "--set", f"data.datasets=[{{name: hanco, shards: {stream_shards}}}]",
            "--set", f"checkpoint.dir={run_dir}", "--set", f"schedule.max_steps={steps}",
            "--set", "logging.progress=false", "--set", "data.items_per_epoch=48", "--set", "probe.datasets=[]",
            "--report-to", "none"]


def test_python_launch_stops_on_sigusr1_and_resumes(stream_shards, tmp_path):
    proc = launch([sys.executable, "launch/pretrain.py", *cli_overrides(stream_shards, tmp_path, 100_000)])
    pointer = tmp_path / "checkpoints" / "latest"
    started = time.monotonic()
    lines = []
    for line in proc.stdout:  # wait until training runs, then pre-empt
        lines.append(line)
        if line.startswith("effective batch"):
            time.sleep(2.0)
            proc.send_signal(signal.SIGUSR1)
            break
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "stopping at step" in out and pointer.exists() and time.monotonic() - started < 120
    stopped_at = int(pointer.read_text().strip().split("-")[1])
    assert stopped_at >= 1
    resumed = launch([sys.executable, "launch/pretrain.py", *cli_overrides(stream_shards, tmp_path, stopped_at + 2),
                      "--resume", "latest"])
    out = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, out
    assert "resumed from" in out and pointer.read_text().strip() == f"step-{stopped_at + 2:08d}"


def test_torchrun_two_processes_on_cpu(stream_shards, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = launch([str(torchrun), "--nproc_per_node", "2", "launch/pretrain.py",
                   *cli_overrides(stream_shards, tmp_path, 3)], {"OMP_NUM_THREADS": "1"})
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "accumulation 1 x world 2" in out
    final = tmp_path / "checkpoints" / "step-00000003"
    assert (final / "rank-0.pt").exists() and (final / "rank-1.pt").exists()
    streams = [torch.load(final / f"rank-{r}.pt", weights_only=False)["stream"] for r in (0, 1)]
    assert [s["rank"] for s in streams] == [0, 1] and all(s["world_size"] == 2 for s in streams)
