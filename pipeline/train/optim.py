"""Optimisers and the learning-rate schedule.

Weight decay (and, unless `lars_exclude` is off, LARS's trust ratio) skips biases, normalisation
parameters (recognised by the module that owns them: any `_NormBase`, `GroupNorm`, `LayerNorm`, never by a
name that merely looks like one), one-dimensional tensors and the names timm models list in
`no_weight_decay()`. The schedule is a function of
the optimiser step: linear warm-up, then cosine annealing to zero; it is stepped once per optimiser step.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from pipeline.train.config import OptimConfig

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names (full paths) that timm models list in `no_weight_decay()`: cls_token, pos_embed, ..."""
    names = set()
    for prefix, module in model.named_modules():
        if callable(getattr(module, "no_weight_decay", None)):
            names |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    return names


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, exempt). Exempt, as in timm: biases, every parameter of a normalisation module, every tensor
    of at most one dimension (layer-scale gammas) and the names a timm model lists in `no_weight_decay()`."""
    listed = no_weight_decay_names(model)
    exempt_ids = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, NORMS) or name == "bias" or p.ndim <= 1 or \
                    any(fnmatch.fnmatchcase(full, pattern) for pattern in listed):
                exempt_ids.add(id(p))
    decayed = [p for p in model.parameters() if p.requires_grad and id(p) not in exempt_ids]
    exempt = [p for p in model.parameters() if p.requires_grad and id(p) in exempt_ids]
    return decayed, exempt


class LARS:
    """LARS as a wrapper around any inner optimiser (PeCLR: Adam), for the parameter groups with `lars=True`;
    the inner optimiser's own weight decay is off for those groups (`lars_weight_decay` holds it).

    scaling (SimCLR's LARS): g <- (g + wd w) * eta ||w|| / ||g + wd w||.
    clip (LARC, Lightning Bolts' LARSWrapper that PeCLR's code runs): r = eta ||w|| / (||g|| + wd ||w|| + eps),
    g <- (g + wd w) * min(r / lr, 1): the effective step never exceeds the inner optimiser's. A tensor whose
    weight or gradient norm is 0 is left as it is (both modes)."""

    def __init__(self, inner: torch.optim.Optimizer, eta: float = 1e-3, clip: bool = False,
                 eps: float = 1e-8) -> None:
        self.inner, self.eta, self.clip, self.eps = inner, eta, clip, eps

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

    def _multiplier(self, p: torch.Tensor, wd: float, lr: float) -> torch.Tensor:
        g = p.grad.add(p, alpha=wd)
        w_norm = torch.linalg.vector_norm(p)
        if self.clip:
            g_norm = torch.linalg.vector_norm(p.grad)
            ratio = torch.clamp(self.eta * w_norm / (g_norm + wd * w_norm + self.eps) / lr, max=1.0)
        else:
            g_norm = torch.linalg.vector_norm(g)
            ratio = self.eta * w_norm / (g_norm + self.eps)
        return g, torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.inner.param_groups:
            if not group.get("lars", False):
                continue
            for p in group["params"]:
                if p.grad is not None:
                    g, ratio = self._multiplier(p, group["lars_weight_decay"], group["lr"])
                    p.grad.copy_(g.mul_(ratio))
        return self.inner.step(closure)


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer | LARS:
    decayed, exempt = split_parameters(model)
    wd = cfg.weight_decay
    groups = [{"params": decayed, "weight_decay": 0.0 if cfg.lars else wd, "lars": cfg.lars,
               "lars_weight_decay": wd},
              {"params": exempt, "weight_decay": 0.0, "lars": cfg.lars and not cfg.lars_exclude,
               "lars_weight_decay": 0.0}]
    if cfg.name == "adam":
        inner = torch.optim.Adam(groups, lr=lr)
    elif cfg.name == "adamw":
        inner = torch.optim.AdamW(groups, lr=lr)
    else:
        inner = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return LARS(inner, cfg.lars_eta, cfg.lars_clip) if cfg.lars else inner


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
