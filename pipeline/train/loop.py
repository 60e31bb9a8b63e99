"""The pre-training loop: one code path for `accelerate launch`, `torchrun` and plain `python`.

Accelerate provides the process group, device placement, DDP wrapping of the model and the trackers. The
optimiser, scheduler, autocast and GradScaler stay in our hands: the scheduler is stepped exactly once per
optimiser step (a prepared scheduler would be stepped once per process), and gradient caching needs its own
control of backward and `no_sync`. The stream loader is per rank and never prepared (see pipeline/stream/loader.py).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from accelerate import Accelerator
from tqdm import tqdm

from pipeline.augment.torch_exec import model_input
from pipeline.errors import HandclrError
from pipeline.models import build_model, export_encoder
from pipeline.stream import DatasetSpec, HandStream, StreamConfig, StreamLoader
from pipeline.stream.config import preset_augment
from pipeline.train.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from pipeline.train.config import TrainConfig
from pipeline.train.optim import build_optimizer, build_scheduler, scaled_lr
from pipeline.train.step import StepFns, step_gradients

log = logging.getLogger("handclr.train")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainError(HandclrError):
    pass


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    samples_seen: int = 0
    skipped_steps: int = 0
    nonfinite_in_a_row: int = 0


class StopFlag:
    """SIGTERM / SIGUSR1 (SLURM pre-emption): finish the current step, save, exit cleanly."""

    def __init__(self) -> None:
        self.raised = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:
        log.warning("received signal %d: finishing this step, then checkpoint and exit", signum)
        self.raised = True

    def agreed(self, device: torch.device) -> bool:
        """True on every rank as soon as any rank got the signal (so all ranks save together)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.raised
        flag = torch.tensor([1.0 if self.raised else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def stream_config(cfg: TrainConfig) -> StreamConfig:
    d = cfg.data
    mode = cfg.objective.name  # the stream's modes include every objective's name
    return StreamConfig(tuple(DatasetSpec(e.name, e.shards, e.weight, e.window) for e in d.datasets), mode=mode,
                        batch_size=cfg.distributed.micro_batch, seed=d.seed, out_size=d.out_size,
                        positives=d.positives, negatives=d.negatives, positive_law=d.positive_law,
                        negative_law=d.negative_law, items_per_sample=d.items_per_sample,
                        augment=preset_augment(mode), executor=d.executor,
                        items_per_epoch=d.items_per_epoch)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def forward_fn(net: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Callable[[dict], torch.Tensor]:
    """Micro-batch on the device -> embeddings: device-side augmentation in float32, the model under autocast."""
    dtype = DTYPES[cfg.optim.precision]

    def forward(batch: dict) -> torch.Tensor:
        x = model_input(batch, cfg.data.out_size, channels_last=cfg.model.channels_last)
        with torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext():
            return net(x)

    return forward


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def optimiser_step(model, micro: list[dict], cfg: TrainConfig, fns: StepFns, optimizer, scaler,
                    progress: Progress) -> tuple[float, float]:
    """Gradients of one effective batch, unscale, clip, then step — or skip and count a non-finite step
    (the schedule still advances: a skipped step consumes its data)."""
    optimizer.zero_grad(set_to_none=True)
    loss = step_gradients(model, micro, cfg.objective, fns, cfg.distributed.mode)
    scaler.unscale_(optimizer)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    if math.isfinite(loss) and math.isfinite(grad_norm):
        scaler.step(optimizer)
        progress.nonfinite_in_a_row = 0
    else:
        progress.skipped_steps += 1
        progress.nonfinite_in_a_row += 1
        log.warning("step %d: non-finite loss %s or gradient norm %s: step skipped", progress.step, loss, grad_norm)
        if progress.nonfinite_in_a_row >= cfg.optim.max_nonfinite:
            raise TrainError(f"{progress.nonfinite_in_a_row} optimiser steps in a row had a non-finite loss or "
                             f"gradient (last loss {loss}, grad norm {grad_norm}); lower optim.lr, use bf16 "
                             f"instead of fp16, or check the data")
    scaler.update()
    return loss, grad_norm


def train(cfg: TrainConfig, resume: str | None = None, report_to: str | None = None) -> Progress:
    report_to = report_to or cfg.logging.report_to
    run_dir = Path(cfg.checkpoint.dir)
    # cpu=True is what makes Accelerate form a gloo group under torchrun / accelerate launch without GPUs
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=None if report_to == "none" else report_to,
                              project_dir=str(run_dir))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    accumulation = cfg.accumulation(world)
    if accelerator.is_main_process:
        cfg.save(run_dir / "config.yaml")

    dataset = HandStream(stream_config(cfg), rank, world)
    loader = StreamLoader(dataset, num_workers=cfg.data.num_workers, reuse_buffers=cfg.data.reuse_buffers)
    steps_per_epoch = len(loader) // accumulation
    if steps_per_epoch < 1:
        raise TrainError(f"an epoch has {len(loader)} micro-batches per rank, fewer than the {accumulation} one "
                         f"optimiser step needs: raise data.items_per_epoch or lower distributed.effective_batch")
    total_steps = cfg.schedule.epochs * steps_per_epoch
    if cfg.schedule.max_steps is not None:
        total_steps = min(total_steps, cfg.schedule.max_steps)
    warmup_steps = round(cfg.schedule.warmup_epochs * steps_per_epoch)

    torch.manual_seed(cfg.data.seed)  # identical initial weights on every rank
    model = build_model(cfg.model.backbone, cfg.model.hidden, cfg.model.out, cfg.model.channels_last,
                        cfg.model.frozen_norm)
    if cfg.model.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    optimizer = build_optimizer(model, cfg.optim, scaled_lr(cfg.optim, cfg.distributed.effective_batch))
    scheduler = build_scheduler(optimizer, warmup_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.optim.precision == "fp16")
    net = accelerator.prepare_model(model)
    forward_module = torch.compile(net) if cfg.model.compile else net
    progress = Progress()

    if resume:
        path = resolve_checkpoint(run_dir, resume)
        shared, own = load_checkpoint(path, rank)
        model.load_state_dict(shared["model"])
        optimizer.load_state_dict(shared["optimizer"])
        scheduler.load_state_dict(shared["scheduler"])
        scaler.load_state_dict(shared["scaler"])
        progress = Progress(**shared["progress"])
        loader.load_state_dict(own["stream"])
        torch.set_rng_state(own["rng"]["cpu"])
        if own["rng"]["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(own["rng"]["cuda"], device)
        accelerator.print(f"resumed from {path} at step {progress.step}, epoch {progress.epoch}")

    fns = StepFns(forward=forward_fn(forward_module, cfg, device), backward=lambda loss: scaler.scale(loss).backward(),
                  no_sync=lambda: accelerator.no_sync(net))
    stop = StopFlag()

    def shared_state() -> dict:  # rank 0 only: identical on every rank
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "progress": vars(progress).copy(), "config": cfg.to_dict()}

    def save() -> Path:
        return save_checkpoint(run_dir, progress.step, rank, shared_state,
                               {"rng": _rng_state(device), "stream": loader.state_dict()},
                               accelerator.wait_for_everyone, cfg.checkpoint.keep_last)

    if report_to != "none":
        accelerator.init_trackers("pretrain", config={"effective_batch": cfg.distributed.effective_batch,
                                                      "micro_batch": cfg.distributed.micro_batch,
                                                      "accumulation": accumulation, "world_size": world,
                                                      "backbone": cfg.model.backbone,
                                                      "objective": cfg.objective.name, "lr": cfg.optim.lr})
    accelerator.print(f"effective batch {cfg.distributed.effective_batch} = micro {cfg.distributed.micro_batch} x "
                      f"accumulation {accumulation} x world {world}; {steps_per_epoch} steps/epoch, "
                      f"{total_steps} steps, warm-up {warmup_steps}; mode {cfg.distributed.mode}")
    bar = tqdm(total=total_steps, initial=progress.step, disable=not (accelerator.is_main_process and
                                                                        cfg.logging.progress), desc="pretrain")
    model.train()
    stopped = False
    while progress.step < total_steps and not stopped:
        loader.set_epoch(progress.epoch)
        batches = iter(loader)
        while progress.step < total_steps and not stopped:
            t0 = time.perf_counter()
            micro = [to_device(b, device) for b in itertools.islice(batches, accumulation)]
            if len(micro) < accumulation:  # epoch exhausted (a remainder shorter than one step is dropped)
                progress.epoch += 1
                break
            t1 = time.perf_counter()
            loss, grad_norm = optimiser_step(model, micro, cfg, fns, optimizer, scaler, progress)
            scheduler.step()
            progress.step += 1
            progress.samples_seen += cfg.distributed.effective_batch
            t2 = time.perf_counter()
            bar.update(1)
            if progress.step % cfg.logging.every_steps == 0 or progress.step == total_steps:
                items_per_s = cfg.distributed.effective_batch / max(t2 - t0, 1e-9)
                stats = loader.stats()
                values = {"loss": loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                          "items_per_s": items_per_s, "items_per_s_per_device": items_per_s / world,
                          "data_wait_fraction": (t1 - t0) / max(t2 - t0, 1e-9),
                          "skipped_samples": sum(stats["skips"].values()), "skipped_steps": progress.skipped_steps,
                          "accumulation": accumulation, "effective_batch": cfg.distributed.effective_batch}
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{values['lr']:.2e}", items_s=f"{items_per_s:.0f}")
                if report_to != "none":
                    accelerator.log(values, step=progress.step)
            if stop.agreed(device):
                accelerator.print(f"stopping at step {progress.step} on a signal; checkpoint {save()}")
                stopped = True
            elif progress.step % cfg.checkpoint.every_steps == 0 and progress.step < total_steps:
                save()
    bar.close()
    if not stopped:
        path = save()
        if accelerator.is_main_process:
            encoder = export_encoder(model, run_dir / "encoder.safetensors")
            accelerator.print(f"done: step {progress.step}, checkpoint {path}, encoder {encoder}")
    if report_to != "none":
        accelerator.end_training()
    return progress
