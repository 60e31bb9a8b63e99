"""What every task provides, and the hooks a task may leave as they are."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.train.step import StepFns


class Task:
    """The only difference between runs: the model, how one effective batch becomes gradients, what happens
    around the steps, what is exported. Stateful: `state_dict` goes into every checkpoint."""

    name = "task"

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def gradients(self, model: nn.Module, micro: list[dict], fns: StepFns) -> tuple[float, dict]:
        """Accumulate one optimiser step's gradients into `model`; returns the loss and extra values to log."""
        raise NotImplementedError

    def model_kwargs(self, batch: dict) -> dict:
        """Keyword arguments of the model's forward besides the image tensor."""
        return {}

    def to(self, device: torch.device) -> Task:
        return self

    def tracker_config(self) -> dict:
        return {}

    def start(self, trainer) -> None:
        """Before the first step (every rank)."""

    def after_step(self, trainer, last: bool) -> None:
        """After every optimiser step (every rank; a task that works on one rank must keep the others waiting)."""

    def finish(self, model: nn.Module, run_dir: Path) -> str:
        """On the main process at the end of a run; returns what was exported, for the closing line."""
        return ""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore by default."""
