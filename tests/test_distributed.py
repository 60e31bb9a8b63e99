"""The promise (docs/design.md §5), on CPU with gloo and 2 processes: for each objective, one optimiser step
with (world 2, accumulation 2, micro E/4) gives the parameter gradient of plain autograd over the same E items
on one device, within 1e-5 relative (batch norm frozen)."""

from __future__ import annotations

import contextlib
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from pipeline.augment.affine import view_affine
from pipeline.augment.params import TEMPCLR
from pipeline.augment.torch_exec import model_input
from pipeline.models import build_model
from pipeline.objectives import equivariant_nt_xent, nt_xent, time_contrastive
from pipeline.train.config import ObjectiveConfig
from pipeline.train.step import StepFns, step_gradients

E, S, OUT = 8, 40, 32
OBJECTIVES = {
    "tempclr": (ObjectiveConfig("tempclr", 0.5, batch_negatives=True), 4),
    "peclr": (ObjectiveConfig("peclr", 0.5), 2),
    "simclr": (ObjectiveConfig("simclr", 0.5), 2),
}


def synthetic_batch(views: int, seed: int = 0) -> dict:
    """E items in the stream's batch format: random slots, TempCLR-style roles and geometry."""
    rng = np.random.default_rng(seed)
    geometry = TEMPCLR.geometry.draw(rng, E * views).reshape(E, views, 4)
    boxes = np.tile([8.0, 8.0, 32.0, 32.0], (E * views, 1))
    affine = view_affine(boxes, np.zeros((E * views, 2)), OUT, 1.5, geometry.reshape(-1, 4)).reshape(E, views, 2, 3)
    roles = [0, 1, 2, 2][:views] if views == 4 else [3, 3]
    return {
        "frames": torch.from_numpy(rng.integers(0, 256, (E, views, S, S, 3), dtype=np.uint8)),
        "affine": torch.from_numpy(affine).float(), "geometry": torch.from_numpy(geometry).float(),
        "appearance": torch.from_numpy(TEMPCLR.appearance.draw(rng, E * views).reshape(E, views, 9)).float(),
        "fill": torch.zeros(E, dtype=torch.uint8), "warped": False,
        "role": torch.tensor([roles] * E, dtype=torch.int8),
        "clip": torch.from_numpy(rng.integers(0, 3, E)), "position": torch.from_numpy(rng.integers(0, 30, (E, views))),
        "window": torch.full((E,), 5),
    }


def rows(batch: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def flat_grads(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def run_step(model, micro: list[dict], objective: ObjectiveConfig, mode: str, ddp=None) -> float:
    net = ddp or model
    fns = StepFns(forward=lambda b: net(model_input(b, OUT)), backward=lambda loss: loss.backward(),
                  no_sync=(ddp.no_sync if ddp is not None else contextlib.nullcontext))
    return step_gradients(model, micro, objective, fns, mode)


def fresh_model():
    torch.manual_seed(0)
    return build_model("test_resnet", hidden=32, out=16, frozen_norm=True)


def _worker(rank: int, port: int, name: str, mode: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    objective, views = OBJECTIVES[name]
    batch = synthetic_batch(views)
    model = fresh_model()
    ddp = DistributedDataParallel(model)
    half, quarter = E // 2, E // 4
    mine = rows(batch, rank * half, (rank + 1) * half)
    loss = run_step(model, [rows(mine, 0, quarter), rows(mine, quarter, half)], objective, mode, ddp)
    if rank == 0:
        torch.save({"grad": flat_grads(model), "loss": loss}, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_step(name: str, mode: str, tmp_path) -> dict:
    out = str(tmp_path / f"{name}-{mode}.pt")
    mp.spawn(_worker, args=(free_port(), name, mode, out), nprocs=2, join=True)
    return torch.load(out)


def reference_step(model, batch: dict, objective: ObjectiveConfig) -> float:
    """Plain autograd over the whole batch on one device, with the rows' ids built here (not by the trainer):
    rows are item-major, items numbered 0..E-1."""
    e, v = batch["role"].shape
    z = model(model_input(batch, OUT)).float()
    item = torch.arange(e).repeat_interleave(v)
    if objective.name == "tempclr":
        loss = time_contrastive(z, item, batch["role"].reshape(-1).long(), batch["clip"].repeat_interleave(v),
                                batch["position"].reshape(-1), batch["window"].repeat_interleave(v),
                                objective.temperature, objective.batch_negatives)
    elif objective.name == "peclr":
        loss = equivariant_nt_xent(z, batch["geometry"].reshape(e * v, -1), item, objective.temperature)
    else:
        loss = nt_xent(z, item, objective.temperature)
    loss.backward()
    return float(loss.detach())


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_world2_accumulation2_equals_one_device(name, tmp_path):
    objective, views = OBJECTIVES[name]
    model = fresh_model()
    loss = reference_step(model, synthetic_batch(views), objective)
    reference = flat_grads(model)
    got = distributed_step(name, "gradient_cache", tmp_path)
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
    rel = float((got["grad"] - reference).norm() / reference.norm())
    assert rel < 1e-5, rel
    if name == "tempclr":  # the seeds' plain accumulation sees fewer negatives: a different gradient
        plain = distributed_step(name, "plain", tmp_path)
        assert float((plain["grad"] - reference).norm() / reference.norm()) > 1e-3


def test_gradient_cache_updates_batch_norm_statistics_once():
    """The graph-free pass restores running statistics, so after a step they equal one ordinary forward per
    micro-batch (what plain accumulation does)."""
    objective, views = OBJECTIVES["simclr"]
    batch = synthetic_batch(views, seed=5)
    micro = [rows(batch, 0, E // 2), rows(batch, E // 2, E)]
    stats = []
    for mode in ("gradient_cache", "plain"):
        torch.manual_seed(0)
        model = build_model("test_resnet", hidden=32, out=16)
        run_step(model, micro, objective, mode)
        stats.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k})
    assert stats[0] and all(torch.allclose(stats[0][k], stats[1][k], atol=1e-6) for k in stats[0])
    assert int(stats[0]["head.net.1.num_batches_tracked"]) == 2
