"""Training-step throughput (run by `make bench`): does the loader starve the model, and what does exact
gradient caching cost against the seeds' plain accumulation at the same effective batch?

Per configuration, items/s over timed optimiser steps (after warm-up) and peak memory:
* synthetic: the step's micro-batches are prebuilt in memory (the model alone),
* loader: the same step fed by the streaming loader (one worker), so loader / synthetic < 1 means the loader
  starves the model,
* plain: the seeds' accumulation (each micro-batch its own loss) on synthetic batches, same E.
CPU figures (tiny timm test model, 64 px, E = 32 = 4 x 8) always; on a CUDA machine also resnet18 and resnet50
at 224 px, bf16, channels_last, with and without torch.compile, E = 2048 on one GPU. Peak memory is the CUDA
allocator's peak on GPU and the process's peak resident set on CPU. Writes benchmarks/results/train_step.json.

Run from the repository root as a module, `python -m benchmarks.train_step` (what `make bench` does): the benchmarks
import each other as the `benchmarks` package, which `python benchmarks/train_step.py` cannot see.
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.sharding import cpu_model
from pipeline.models import build_model
from pipeline.sampledata import generate
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard
from pipeline.stream import HandStream
from pipeline.train.config import load_config
from pipeline.train.optim import build_optimizer
from pipeline.train.step import StepFns
from pipeline.train.tasks import PretrainTask
from pipeline.train.trainer import Progress, build_loader, forward_fn, optimiser_step, to_device

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"
WARMUP, STEPS = 2, 8


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def setup(cfg, device):
    torch.manual_seed(0)
    model = build_model(cfg.model.backbone, cfg.model.hidden, cfg.model.out, cfg.model.channels_last).to(device)
    optimizer = build_optimizer(model, cfg.optim, cfg.optim.lr)
    net = torch.compile(model) if cfg.model.compile else model
    fns = StepFns(forward_fn(net, cfg, device), lambda loss: loss.backward(), contextlib.nullcontext)
    return model, optimizer, fns, torch.amp.GradScaler(device.type, enabled=False)


def run(cfg, device, micro_source) -> tuple[float, int]:
    """items/s over STEPS optimiser steps after WARMUP, and peak memory."""
    model, optimizer, fns, scaler = setup(cfg, device)
    accumulation = cfg.accumulation(1)
    progress = Progress()

    def one_step():
        micro = [to_device(next(micro_source), device) for _ in range(accumulation)]
        optimiser_step(model, micro, cfg, PretrainTask(cfg), fns, optimizer, scaler, progress)

    for _ in range(WARMUP):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return cfg.distributed.effective_batch * STEPS / seconds, peak_memory(device)


def loader_batches(cfg):
    loader = build_loader(cfg, HandStream(cfg.data), cfg.accumulation(1))
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def synthetic_batches(cfg):
    """Distinct real micro-batches drawn once and then cycled from memory."""
    source = loader_batches(replace(cfg, loader=replace(cfg.loader, reuse_buffers=False)))
    pool = [next(source) for _ in range(cfg.accumulation(1))]
    while True:
        yield from pool


def measure(name: str, cfg, device) -> dict:
    synthetic, mem = run(cfg, device, synthetic_batches(cfg))
    attached, mem_loader = run(cfg, device, loader_batches(cfg))
    plain_cfg = replace(cfg, distributed=replace(cfg.distributed, mode="plain"))
    plain, mem_plain = run(plain_cfg, device, synthetic_batches(cfg))
    row = {"items_per_s": synthetic, "peak_memory_bytes": mem, "loader_items_per_s": attached,
           "loader_peak_memory_bytes": mem_loader, "loader_vs_synthetic": attached / synthetic,
           "plain_items_per_s": plain, "plain_peak_memory_bytes": mem_plain,
           "gradient_cache_vs_plain": synthetic / plain,
           "effective_batch": cfg.distributed.effective_batch, "micro_batch": cfg.distributed.micro_batch,
           "backbone": cfg.model.backbone, "out_size": cfg.data.out_size, "precision": cfg.optim.precision,
           "compile": cfg.model.compile}
    print(f"{name:<28} {synthetic:>10.1f} {attached:>10.1f} {attached / synthetic:>8.2f} {plain:>10.1f} "
          f"{mem / 2**20:>10.0f}")
    return row


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", seed=0, ho3d_version=3)
        shard(load_recipe(REPO / "shards" / "sample.yaml"), tmp / "data", tmp / "shards", workers=1, progress=False)
        shards = tmp / "shards"
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        base = load_config(REPO / "launch" / "configs" / "smoke.yaml",
                           [f"data.datasets=[{{name: hanco, shards: {shards}}}, "
                            f"{{name: doh100, shards: {shards}, window: 4}}]",
                            "data.items_per_epoch=4096", "distributed.effective_batch=32", "distributed.micro_batch=8",
                            "logging.report_to=none", "probe.datasets=[]"])
        configs = {"cpu_test_resnet_64px": base}
        if device.type == "cuda":
            for backbone in ("resnet18", "resnet50"):
                for compile_ in (False, True):
                    configs[f"{backbone}_224_bf16{'_compile' if compile_ else ''}"] = load_config(
                        REPO / "launch" / "configs" / "tempclr_hanco_rn18.yaml",
                        [f"data.datasets=[{{name: hanco, shards: {shards}}}]", f"model.backbone={backbone}",
                         f"model.compile={str(compile_).lower()}", "data.items_per_epoch=1000000",
                         "distributed.micro_batch=256" if backbone == "resnet18" else "distributed.micro_batch=128",
                         "optim.precision=bf16", "logging.report_to=none"])
        print(f"{'configuration':<28} {'items/s':>10} {'loader':>10} {'ratio':>8} {'plain':>10} {'peak MiB':>10}")
        rows = {name: measure(name, cfg, device) for name, cfg in configs.items()}
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {cpu_model()}",
              "configs": rows,
              "context": {"warmup_steps": WARMUP, "timed_steps": STEPS, "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "python": platform.python_version(),
                          "loader_workers": {n: c.loader.num_workers for n, c in configs.items()}}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
