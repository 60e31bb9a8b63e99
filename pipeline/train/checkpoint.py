"""Atomic, multi-rank checkpoints: `<run>/checkpoints/step-NNNNNNNN/` holding `state.pt` (model, optimiser,
scheduler, scaler, counters — written by rank 0) and `rank-R.pt` (that rank's RNG and stream state), plus a
`latest` pointer. Everything is written into a temporary directory that rank 0 renames once all ranks are done,
so a crash mid-write never leaves a checkpoint that looks complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from pipeline.errors import HandclrError

LATEST = "latest"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, step: int, rank: int, shared: Callable[[], dict], own: dict,
                    barrier: Callable[[], None], keep_last: int) -> Path:
    root = checkpoint_root(run_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    if rank == 0:
        torch.save(shared(), tmp / "state.pt")
    torch.save(own, tmp / f"rank-{rank}.pt")
    barrier()
    if rank == 0:
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        pointer = root / (LATEST + ".tmp")
        pointer.write_text(final.name + "\n")
        pointer.replace(root / LATEST)
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def resolve_checkpoint(run_dir: str | Path, resume: str) -> Path:
    """`latest` (the run directory's pointer) or a checkpoint directory path."""
    if resume == LATEST:
        pointer = checkpoint_root(run_dir) / LATEST
        if not pointer.exists():
            raise HandclrError(f"--resume latest: no {pointer} (no checkpoint written in {run_dir} yet)")
        path = checkpoint_root(run_dir) / pointer.read_text().strip()
    else:
        path = Path(resume)
    if not (path / "state.pt").exists():
        raise HandclrError(f"--resume {resume}: {path} is not a complete checkpoint (no state.pt)")
    return path


def load_checkpoint(path: Path, rank: int) -> tuple[dict, dict]:
    own = path / f"rank-{rank}.pt"
    if not own.exists():
        raise HandclrError(f"{path}: no {own.name}; resuming needs the world size the checkpoint was written with")
    return (torch.load(path / "state.pt", map_location="cpu", weights_only=False),
            torch.load(own, map_location="cpu", weights_only=False))
