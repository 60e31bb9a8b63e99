"""Contrastive pre-training (TempCLR, PeCLR, SimCLR): the objective over the effective batch gathered from every
rank and micro-batch, with gradient caching (exact) or plain accumulation; the encoder is exported for
fine-tuning. With `probe.datasets`, a linear probe of the encoder runs every `probe.every_steps` steps and at the
end (rank 0; the other ranks wait), and its history is part of the checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from pipeline.models import build_model, export_encoder
from pipeline.train.components.probe import Probe
from pipeline.train.config import TrainConfig
from pipeline.train.step import StepFns, step_gradients
from pipeline.train.tasks.base import Task


class PretrainTask(Task):
    name = "pretrain"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.probe = (Probe(cfg.probe, cfg.data, cfg.distributed.micro_batch, cfg.model.channels_last)
                      if cfg.probe.datasets else None)
        self.history: list[dict] = []

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return build_model(m.backbone, m.hidden, m.out, m.channels_last, m.frozen_norm)

    def gradients(self, model: nn.Module, micro: list[dict], fns: StepFns) -> tuple[float, dict]:
        """Accumulates the step's gradients into `model`; returns the loss and nothing else to log."""
        return step_gradients(model, micro, self.cfg.objective, fns, self.cfg.distributed.mode), {}

    def tracker_config(self) -> dict:
        return {"objective": self.cfg.objective.name}

    def start(self, trainer) -> None:
        """Reads the probe frames once, before the first step, so a bad probe config fails at once."""
        if self.probe is None:
            return
        if trainer.accelerator.is_main_process:
            start = time.perf_counter()
            n = self.probe.collect()
            trainer.metrics.print(f"probe: {n} frames of {[d.name for d in self.cfg.probe.datasets]} read in "
                                  f"{time.perf_counter() - start:.1f} s; every {self.cfg.probe.every_steps} steps")
        trainer.accelerator.wait_for_everyone()

    def after_step(self, trainer, last: bool) -> None:
        step = trainer.progress.step
        if self.probe is None or (not last and step % self.cfg.probe.every_steps):
            return
        if trainer.accelerator.is_main_process:
            values = self.probe.run(trainer.model.backbone, trainer.device)
            trainer.metrics.record(step, values)
            self.history.append({"step": step, **values})
            trainer.metrics.print(f"step {step} probe: PA-MPJPE {values['probe_pa_mpjpe']:.2f} mm, 2D EPE "
                                  f"{values['probe_epe_2d_px']:.2f} px, retrieval@{self.cfg.probe.k} "
                                  f"{values[f'probe_retrieval@{self.cfg.probe.k}']:.3f} "
                                  f"({values['probe_seconds']:.2f} s)")
        trainer.accelerator.wait_for_everyone()

    def state_dict(self) -> dict:
        return {"probe_history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("probe_history", []))  # checkpoints from before the probe hold none

    def finish(self, model: nn.Module, run_dir: Path) -> str:
        return f"encoder {export_encoder(model, run_dir / 'encoder.safetensors')}"
