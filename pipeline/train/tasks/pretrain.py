"""Contrastive pre-training (TempCLR, PeCLR, SimCLR): the objective over the effective batch gathered from every
rank and micro-batch, with gradient caching (exact) or plain accumulation; the encoder is exported for
fine-tuning."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.models import build_model, export_encoder
from pipeline.train.config import TrainConfig
from pipeline.train.step import StepFns, step_gradients
from pipeline.train.tasks.base import Task


class PretrainTask(Task):
    name = "pretrain"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return build_model(m.backbone, m.hidden, m.out, m.channels_last, m.frozen_norm)

    def gradients(self, model: nn.Module, micro: list[dict], fns: StepFns) -> tuple[float, dict]:
        """Accumulates the step's gradients into `model`; returns the loss and nothing else to log."""
        return step_gradients(model, micro, self.cfg.objective, fns, self.cfg.distributed.mode), {}

    def tracker_config(self) -> dict:
        return {"objective": self.cfg.objective.name}

    def finish(self, model: nn.Module, run_dir: Path) -> str:
        return f"encoder {export_encoder(model, run_dir / 'encoder.safetensors')}"
