"""One optimiser step's gradients over an effective batch spread across devices and micro-batches.

Both modes compute the loss on embeddings gathered from every rank, with ids that make every item unique
(items are numbered globally: rank, micro-batch, row), so the objective's masks are the same as on one device.

gradient_cache (exact): forward every micro-batch without a graph (RNG state saved, batch-norm running
statistics restored afterwards so they are updated once), gather, loss and d loss / d embedding on the whole
effective batch, then re-forward each micro-batch with a graph (RNG restored) and back-propagate the cached
embedding gradients, synchronising gradients only on the last micro-batch. Every rank computes the same loss on
the same gathered embeddings and back-propagates only its own slice; the slice gradient is multiplied by the
world size because DDP averages gradients across ranks. The parameter gradient therefore equals that of one
device processing the whole effective batch (batch-norm batch statistics aside).

plain: each micro-batch's loss on its own gathered embeddings (the seeds' accumulation), averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.objectives import equivariant_nt_xent, nt_xent, time_contrastive
from pipeline.train.components.checkpoint import RNGState
from pipeline.train.config import ObjectiveConfig


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the incoming gradient (every rank computes the
    same loss on the gathered tensor, so no reduction is needed)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks in rank order (with gradient for float tensors); identity on one process."""
    if world()[1] == 1:
        return x
    if x.is_floating_point() and x.requires_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world()[1])]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def row_meta(batch: dict, first_item: int) -> dict[str, torch.Tensor]:
    """Per-row ids of a micro-batch's B x V rows (item-major), items numbered from `first_item`."""
    b, v = batch["role"].shape
    device = batch["role"].device
    item = (first_item + torch.arange(b, device=device)).repeat_interleave(v)
    return {"item": item, "role": batch["role"].reshape(-1).long(), "clip": batch["clip"].repeat_interleave(v),
            "position": batch["position"].reshape(-1), "window": batch["window"].repeat_interleave(v),
            "geometry": batch["geometry"].reshape(b * v, -1).float()}


def objective_loss(cfg: ObjectiveConfig, z: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
    if cfg.name == "tempclr":
        return time_contrastive(z, meta["item"], meta["role"], meta["clip"], meta["position"], meta["window"],
                                cfg.temperature, cfg.batch_negatives, cfg.positive_in_denominator)
    if cfg.name == "peclr":
        return equivariant_nt_xent(z, meta["geometry"], meta["item"], cfg.temperature)
    return nt_xent(z, meta["item"], cfg.temperature)


def _gathered_meta(metas: list[dict]) -> dict[str, torch.Tensor]:
    return {k: gather(torch.cat([m[k] for m in metas])) for k in metas[0]}


@contextlib.contextmanager
def norm_stats_restored(model: nn.Module):
    """Batch-norm running statistics (and counters) as they were before the block."""
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.running_mean is not None]
    try:
        yield
    finally:
        for m, mean, var, count in saved:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)


@dataclass
class StepFns:
    """How the trainer runs forward and backward (Accelerate's autocast / backward / no_sync, or plain DDP)."""

    forward: Callable[[dict], torch.Tensor]  # micro-batch -> embeddings [B*V, D]
    backward: Callable[[torch.Tensor], None]
    no_sync: Callable[[], contextlib.AbstractContextManager]


def step_gradients(model: nn.Module, micro: list[dict], cfg: ObjectiveConfig, fns: StepFns,
                   mode: str = "gradient_cache") -> float:
    """Accumulate one optimiser step's gradients into the model's .grad; returns the loss (same on all ranks)."""
    rank, size = world()
    per_rank = sum(int(b["role"].shape[0]) for b in micro)
    firsts, start = [], rank * per_rank
    for b in micro:
        firsts.append(start)
        start += int(b["role"].shape[0])
    metas = [row_meta(b, f) for b, f in zip(micro, firsts, strict=True)]
    if mode == "plain":
        total = 0.0
        for i, (b, m) in enumerate(zip(micro, metas, strict=True)):
            ctx = fns.no_sync() if i < len(micro) - 1 else contextlib.nullcontext()
            with ctx:
                loss = objective_loss(cfg, gather(fns.forward(b).float()), _gathered_meta([m])) / len(micro)
                fns.backward(loss * size)
            total += float(loss.detach())
        return total
    rng = RNGState(next(model.parameters()).device)
    states, cached = [], []
    with torch.no_grad(), norm_stats_restored(model):
        for b in micro:
            states.append(rng.state_dict())
            cached.append(fns.forward(b).float())
    local = torch.cat(cached).requires_grad_(True)
    loss = objective_loss(cfg, gather(local), _gathered_meta(metas))
    (grad,) = torch.autograd.grad(loss, local)
    grads = grad.split([len(z) for z in cached])
    for i, (b, g, state) in enumerate(zip(micro, grads, states, strict=True)):
        rng.load_state_dict(state)
        ctx = fns.no_sync() if i < len(micro) - 1 else contextlib.nullcontext()
        with ctx:
            z = fns.forward(b)
            fns.backward((z.float() * g).sum() * size)
    return float(loss.detach())
