"""Atomic, multi-rank checkpoints: `<run>/checkpoints/step-NNNNNNNN/` holding `state.pt` (model, optimiser,
scheduler, scaler, counters — written by rank 0) and `rank-R.pt` (that rank's RNG and stream state), plus a
`latest` pointer. Everything is written into a temporary directory that rank 0 renames once all ranks are done,
so a crash mid-write never leaves a checkpoint that looks complete. `complete.json` lists every file with its
byte size: a checkpoint whose files are missing, empty or truncated afterwards (a full disk, a bad copy) is
recognised as incomplete, and `--resume latest` falls back to the newest complete one."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.errors import TrainError

log = logging.getLogger("handclr.train")
LATEST = "latest"
MANIFEST = "complete.json"


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
        sizes = {}
        for f in sorted(tmp.iterdir()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            sizes[f.name] = f.stat().st_size
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": sizes}))
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


def incomplete(path: Path) -> str | None:
    """Why `path` is not a complete checkpoint, or None when every file it lists is there at its size."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable {MANIFEST} ({exc.__class__.__name__})"
    for name, size in files.items():
        f = path / name
        actual = f.stat().st_size if f.is_file() else None
        if actual != size:
            return f"{f} is {'missing' if actual is None else f'{actual} bytes, expected {size}'}"
    return None


def resolve_checkpoint(run_dir: str | Path, resume: str) -> Path:
    """`latest`: the newest complete checkpoint of the run, starting from the `latest` pointer and falling back
    to older ones (each skipped one is logged); or a checkpoint directory path, which must be complete."""
    if resume != LATEST:
        path = Path(resume)
        problem = incomplete(path)
        if problem:
            raise TrainError(f"--resume {resume}: not a complete checkpoint: {problem}")
        return path
    root = checkpoint_root(run_dir)
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        candidates = [named] + [c for c in candidates if c != named]
    for path in candidates:
        problem = incomplete(path)
        if problem is None:
            return path
        log.warning("--resume latest: skipping %s: %s", path, problem)
    raise TrainError(f"--resume latest: no complete checkpoint in {root}"
                     + (f" ({len(candidates)} incomplete)" if candidates else ""))


def _load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... on a damaged file
        raise TrainError(f"{path}: cannot load checkpoint file ({exc.__class__.__name__}: {exc})") from exc


def load_checkpoint(path: Path, rank: int) -> tuple[dict, dict]:
    own = path / f"rank-{rank}.pt"
    if not own.exists():
        raise TrainError(f"{path}: no {own.name}; resuming needs the world size the checkpoint was written with")
    return _load(path / "state.pt"), _load(own)


class RNGState:
    """This rank's torch generators (CPU and, on a GPU, CUDA) as a stateful part."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def state_dict(self) -> dict:
        return {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        if state["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)


class Checkpointer:
    """Owns every stateful part of a run. `shared` parts are identical on every rank and written once by rank 0
    (model, optimiser, scheduler, scaler, progress); `own` parts differ per rank (RNG, stream position).
    Each part has state_dict() / load_state_dict(); `extra` is saved with the shared state, never loaded."""

    def __init__(self, run_dir: str | Path, rank: int, barrier: Callable[[], None], keep_last: int,
                 shared: dict, own: dict, extra: Callable[[], dict] | None = None) -> None:
        self.run_dir, self.rank, self.barrier, self.keep_last = Path(run_dir), rank, barrier, keep_last
        self.shared, self.own, self.extra = shared, own, extra or dict

    def save(self, step: int) -> Path:
        def shared_state() -> dict:
            return {**{k: v.state_dict() for k, v in self.shared.items()}, **self.extra()}

        return save_checkpoint(self.run_dir, step, self.rank, shared_state,
                               {k: v.state_dict() for k, v in self.own.items()}, self.barrier, self.keep_last)

    def load(self, resume: str) -> Path:
        """`latest` or a checkpoint path: every part as it was saved."""
        path = resolve_checkpoint(self.run_dir, resume)
        shared, own = load_checkpoint(path, self.rank)
        for parts, state in ((self.shared, shared), (self.own, own)):
            for key, part in parts.items():
                if key not in state:
                    raise TrainError(f"{path}: the checkpoint has no {key!r} state")
                part.load_state_dict(state[key])
        return path
