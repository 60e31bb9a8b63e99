"""The Trainer: one code path for `accelerate launch`, `torchrun` and plain `python`, for every task.

Accelerate provides the process group, device placement, DDP wrapping of the model and the trackers. The
optimiser, scheduler, autocast and GradScaler stay in our hands: the scheduler is stepped exactly once per
optimiser step (a prepared scheduler would be stepped once per process), and gradient caching needs its own
control of backward and `no_sync`. The stream loader is per rank and never prepared (see pipeline/stream/loader.py).
The task (pipeline/train/tasks) is the only difference between pre-training and fine-tuning.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from pipeline.augment.torch_exec import model_input
from pipeline.errors import TrainError
from pipeline.stream import HandStream, StreamLoader
from pipeline.train.components.checkpoint import Checkpointer, RNGState
from pipeline.train.components.metrics import MetricsLogger
from pipeline.train.components.signals import StopFlag
from pipeline.train.config import TrainConfig
from pipeline.train.optim import build_optimizer, build_scheduler, scaled_lr
from pipeline.train.step import StepFns
from pipeline.train.tasks import Task, build_task

log = logging.getLogger("handclr.train")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    samples_seen: int = 0
    skipped_steps: int = 0
    nonfinite_in_a_row: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def build_loader(cfg: TrainConfig, dataset: HandStream, accumulation: int) -> StreamLoader:
    """The rank's loader; it holds `accumulation` micro-batches alive at once (one optimiser step's worth)."""
    c = cfg.loader
    return StreamLoader(dataset, num_workers=c.num_workers, prefetch_factor=c.prefetch_factor, timeout=c.timeout,
                        reuse_buffers=c.reuse_buffers, hold=accumulation)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def forward_fn(net: torch.nn.Module, cfg: TrainConfig, device: torch.device,
               kwargs: Callable[[dict], dict] = lambda batch: {}) -> Callable[[dict], torch.Tensor]:
    """Micro-batch on the device -> model output: device-side augmentation in float32, the model under autocast
    (`kwargs(batch)`: the task's further arguments of the model, e.g. the crop's K)."""
    dtype = DTYPES[cfg.optim.precision]

    def forward(batch: dict) -> torch.Tensor:
        x = model_input(batch, cfg.data.out_size, channels_last=cfg.model.channels_last)
        with torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext():
            return net(x, **kwargs(batch))

    return forward


def plan_steps(cfg: TrainConfig, micro_batches: int, accumulation: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, warm-up steps) from the loader's micro-batches per rank and epoch."""
    steps_per_epoch = micro_batches // accumulation
    if steps_per_epoch < 1:
        raise TrainError(f"an epoch has {micro_batches} micro-batches per rank, fewer than the {accumulation} one "
                         f"optimiser step needs: raise data.items_per_epoch or lower distributed.effective_batch")
    total_steps = cfg.schedule.epochs * steps_per_epoch
    if cfg.schedule.max_steps is not None:
        total_steps = min(total_steps, cfg.schedule.max_steps)
    return steps_per_epoch, total_steps, round(cfg.schedule.warmup_epochs * steps_per_epoch)


def step_values(cfg: TrainConfig, loss: float, grad_norm: float, lr: float, times: tuple[float, float, float],
                stats: dict, progress: Progress, accumulation: int, world: int) -> dict:
    """What is logged for one step; times = (start, data ready, step done)."""
    t0, t1, t2 = times
    items_per_s = cfg.distributed.effective_batch / max(t2 - t0, 1e-9)
    return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "items_per_s": items_per_s,
            "items_per_s_per_device": items_per_s / world, "data_wait_fraction": (t1 - t0) / max(t2 - t0, 1e-9),
            "skipped_samples": sum(stats["skips"].values()), "skipped_steps": progress.skipped_steps,
            "accumulation": accumulation, "effective_batch": cfg.distributed.effective_batch}


def optimiser_step(model, micro: list[dict], cfg: TrainConfig, task: Task, fns: StepFns, optimizer, scaler,
                   progress: Progress) -> tuple[float, float, dict]:
    """Gradients of one effective batch, unscale, clip, then step — or skip and count a non-finite step
    (the schedule still advances: a skipped step consumes its data)."""
    optimizer.zero_grad(set_to_none=True)
    buffers = [(b, b.clone()) for b in model.buffers()]  # batch-norm statistics and counters
    scale = scaler.state_dict()
    loss, extra = task.gradients(model, micro, fns)
    scaler.unscale_(optimizer)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    if math.isfinite(loss) and math.isfinite(grad_norm):
        scaler.step(optimizer)
        progress.nonfinite_in_a_row = 0
    else:
        # the forward passes ran in train mode on the bad input: put batch-norm statistics back, and unless only
        # fp16 gradients overflowed (the scaler's own business: it backs off), the loss scale too
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        optimizer.zero_grad(set_to_none=True)
        progress.skipped_steps += 1
        progress.nonfinite_in_a_row += 1
        log.warning("step %d: non-finite loss %s or gradient norm %s: step skipped", progress.step, loss, grad_norm)
        if progress.nonfinite_in_a_row >= cfg.optim.max_nonfinite:
            raise TrainError(f"{progress.nonfinite_in_a_row} optimiser steps in a row had a non-finite loss or "
                             f"gradient (last loss {loss}, grad norm {grad_norm}); lower optim.lr, use bf16 "
                             f"instead of fp16, or check the data")
    scaler.update()
    if not math.isfinite(loss):
        scaler.load_state_dict(scale)
    return loss, grad_norm, extra



class Trainer:
    """Builds every part from the config on this rank; `train()` runs the steps."""

    def __init__(self, cfg: TrainConfig, task: Task, report_to: str) -> None:
        self.cfg, self.task, self.run_dir = cfg, task, Path(cfg.checkpoint.dir)
        # cpu=True is what makes Accelerate form a gloo group under torchrun / accelerate launch without GPUs
        self.accelerator = acc = Accelerator(cpu=not torch.cuda.is_available(), project_dir=str(self.run_dir),
                                             log_with=None if report_to == "none" else report_to)
        self.device, self.rank, self.world = acc.device, acc.process_index, acc.num_processes
        self.accumulation = cfg.accumulation(self.world)
        if acc.is_main_process:
            cfg.save(self.run_dir / "config.yaml")
        self.loader = build_loader(cfg, HandStream(cfg.data, self.rank, self.world), self.accumulation)
        self.steps_per_epoch, self.total_steps, self.warmup_steps = plan_steps(cfg, len(self.loader),
                                                                               self.accumulation)
        torch.manual_seed(cfg.data.seed)  # identical initial weights on every rank
        model = task.build_model()
        task.to(self.device)
        if cfg.model.sync_bn and self.world > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(model, cfg.optim, scaled_lr(cfg.optim, cfg.distributed.effective_batch))
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.optim.precision == "fp16")
        net = acc.prepare_model(model)
        self.fns = StepFns(forward=forward_fn(torch.compile(net) if cfg.model.compile else net, cfg, self.device,
                                              task.model_kwargs),
                           backward=lambda loss: self.scaler.scale(loss).backward(), no_sync=lambda: acc.no_sync(net))
        self.progress = Progress()
        self.checkpointer = Checkpointer(
            self.run_dir, self.rank, acc.wait_for_everyone, cfg.checkpoint.keep_last,
            shared={"model": model, "optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler,
                    "progress": self.progress, "task": task},
            own={"rng": RNGState(self.device), "stream": self.loader}, extra=lambda: {"config": cfg.to_dict()})
        self.metrics = MetricsLogger(acc, self.run_dir, report_to, cfg.logging.every_steps, cfg.logging.progress,
                                     self.total_steps, 0, task.name)

    def restore(self, resume: str) -> None:
        path = self.checkpointer.load(resume)
        self.metrics.bar.update(self.progress.step)
        self.metrics.print(f"resumed from {path} at step {self.progress.step}, epoch {self.progress.epoch}")

    def step_once(self, batches) -> dict | None:
        """One optimiser step on the next `accumulation` micro-batches; None when the epoch is exhausted (a
        remainder shorter than one step is dropped). Returns what is logged."""
        t0 = time.perf_counter()
        micro = [to_device(b, self.device) for b in itertools.islice(batches, self.accumulation)]
        if len(micro) < self.accumulation:
            return None
        t1 = time.perf_counter()
        loss, grad_norm, extra = optimiser_step(self.model, micro, self.cfg, self.task, self.fns, self.optimizer,
                                                self.scaler, self.progress)
        self.scheduler.step()
        self.progress.step += 1
        self.progress.samples_seen += self.cfg.distributed.effective_batch
        return {**step_values(self.cfg, loss, grad_norm, self.scheduler.get_last_lr()[0],
                              (t0, t1, time.perf_counter()), self.loader.stats(), self.progress, self.accumulation,
                              self.world), **extra}

    def start_message(self) -> str:
        d = self.cfg.distributed
        return (f"effective batch {d.effective_batch} = micro {d.micro_batch} x accumulation {self.accumulation} x "
                f"world {self.world}; {self.steps_per_epoch} steps/epoch, {self.total_steps} steps, warm-up "
                f"{self.warmup_steps}; mode {d.mode}")

    def tracker_config(self) -> dict:
        d = self.cfg.distributed
        return {"effective_batch": d.effective_batch, "micro_batch": d.micro_batch, "accumulation": self.accumulation,
                "world_size": self.world, "backbone": self.cfg.model.backbone, "lr": self.cfg.optim.lr,
                **self.task.tracker_config()}

    def train(self) -> Progress:
        progress, stop, stopped = self.progress, StopFlag(), False
        self.metrics.start(self.tracker_config(), self.start_message())
        self.task.start(self)
        self.model.train()
        while progress.step < self.total_steps and not stopped:
            self.loader.set_epoch(progress.epoch)
            batches = iter(self.loader)
            while progress.step < self.total_steps and not stopped:
                values = self.step_once(batches)
                if values is None:
                    progress.epoch += 1
                    break
                self.metrics.step(progress.step, values)
                self.task.after_step(self, last=progress.step == self.total_steps)
                self.model.train()
                if stop.agreed(self.device):
                    self.metrics.print(f"stopping at step {progress.step} on a signal; checkpoint "
                                       f"{self.checkpointer.save(progress.step)}")
                    stopped = True
                elif progress.step % self.cfg.checkpoint.every_steps == 0 and progress.step < self.total_steps:
                    self.checkpointer.save(progress.step)
        if not stopped:
            path = self.checkpointer.save(progress.step)
            if self.accelerator.is_main_process:
                self.metrics.print(f"done: step {progress.step}, checkpoint {path}, "
                                   f"{self.task.finish(self.model, self.run_dir)}")
        self.metrics.close()
        return progress


def train(cfg: TrainConfig, resume: str | None = None, report_to: str | None = None,
          task: Task | None = None) -> Progress:
    """Run `task` (default: the config's pre-training) to the end of its schedule or to a stop signal."""
    trainer = Trainer(cfg, task or build_task(cfg), report_to or cfg.logging.report_to)
    if resume:
        trainer.restore(resume)
    return trainer.train()
