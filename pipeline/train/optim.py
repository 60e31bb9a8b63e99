"""Optimisers and the learning-rate schedule.

Weight decay and LARS's trust ratio skip biases and normalisation parameters, recognised by the module that
owns them (any `_NormBase`, `GroupNorm`, `LayerNorm`), never by parameter name. The schedule is a function of
the optimiser step: linear warm-up, then cosine annealing to zero; it is stepped once per optimiser step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.train.config import OptimConfig

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, exempt): exempt = biases and every parameter of a normalisation module."""
    exempt_ids = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, NORMS) or name == "bias":
                exempt_ids.add(id(p))
    decayed = [p for p in model.parameters() if p.requires_grad and id(p) not in exempt_ids]
    exempt = [p for p in model.parameters() if p.requires_grad and id(p) in exempt_ids]
    return decayed, exempt


class LARS:
    """LARS as a wrapper around any inner optimiser (PeCLR: Adam). For each parameter of a group with
    `lars=True`: g <- g + wd w, then g <- g * eta ||w|| / ||g||, then the inner step (with its own weight decay
    off for those groups). Groups with `lars=False` (biases, norms) pass through untouched."""

    def __init__(self, inner: torch.optim.Optimizer, eta: float = 1e-3, eps: float = 1e-8) -> None:
        self.inner, self.eta, self.eps = inner, eta, eps

    @property
    def param_groups(self):
        return self.inner.param_groups

    @property
    def state(self):
        return self.inner.state

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state_dict):
        self.inner.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.inner.param_groups:
            if not group.get("lars", False):
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=group["lars_weight_decay"])
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                ratio = torch.where((w_norm > 0) & (g_norm > 0), self.eta * w_norm / (g_norm + self.eps),
                                    torch.ones_like(w_norm))
                p.grad.copy_(g.mul_(ratio))
        return self.inner.step(closure)


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer | LARS:
    decayed, exempt = split_parameters(model)
    wd = cfg.weight_decay
    groups = [{"params": decayed, "weight_decay": 0.0 if cfg.lars else wd, "lars": cfg.lars,
               "lars_weight_decay": wd},
              {"params": exempt, "weight_decay": 0.0, "lars": False, "lars_weight_decay": 0.0}]
    if cfg.name == "adam":
        inner = torch.optim.Adam(groups, lr=lr)
    elif cfg.name == "adamw":
        inner = torch.optim.AdamW(groups, lr=lr)
    else:
        inner = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return LARS(inner, cfg.lars_eta) if cfg.lars else inner


def scaled_lr(cfg: OptimConfig, effective_batch: int) -> float:
    return cfg.lr * math.sqrt(effective_batch) if cfg.lr_scaling == "sqrt" else cfg.lr


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): (step+1)/warmup during warm-up, then
    0.5 (1 + cos(pi (step - warmup) / (total - warmup)))."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def build_scheduler(optimizer: torch.optim.Optimizer | LARS, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    inner = optimizer.inner if isinstance(optimizer, LARS) else optimizer
    return torch.optim.lr_scheduler.LambdaLR(inner, lambda s: warmup_cosine(s, warmup_steps, total_steps))
