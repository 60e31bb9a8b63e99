"""The DataLoader around a HandStream, with the stream's whole state for exact resume.

Built directly on torch's DataLoader (batch_size=None: workers already emit whole batches) and NOT passed
through `accelerate.prepare`: for an IterableDataset, Accelerate's prepared loader by default fetches every
batch on rank 0 and dispatches slices to the other ranks, which would defeat the per-rank shard split and
ship pixels over the network. Every rank builds its own loader with its own rank.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader

from pipeline.stream.batch import unpack
from pipeline.stream.dataset import HandStream
from pipeline.stream.stats import merge_snapshots


def _keep(batch):
    return batch


class StreamLoader:
    """Iterate one epoch per `iter()`; `state_dict()` after any batch resumes at the next one.

    State: epoch, batches consumed this epoch, and per logical worker the state it reported with its last
    consumed batch (reader positions, generator states, counters). Resuming needs the same world size and
    worker count; the roles of the torch workers are rotated so the round robin continues in order.
    """

    def __init__(self, dataset: HandStream, num_workers: int = 2, prefetch_factor: int = 2,
                 pin_memory: bool | None = None, timeout: float = 0.0, reuse_buffers: bool = False,
                 worker_init_fn: Callable[[int], None] | None = None) -> None:
        """`reuse_buffers`: each worker recycles prefetch_factor + 2 batch buffers instead of allocating
        shared memory per batch (about 1.6x the throughput per core). A batch then stays valid until
        2 x num_workers further batches have been drawn (2 without workers): move it to the device or
        copy it before that. A training loop that uses each batch before drawing the next is safe."""
        self.dataset = dataset
        dataset.ring = (prefetch_factor + 2 if num_workers else 2) if reuse_buffers else 0
        self.num_workers = num_workers
        self._loader_args = dict(prefetch_factor=prefetch_factor if num_workers else None, timeout=timeout,
                                 worker_init_fn=worker_init_fn,
                                 pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory)
        self.epoch = 0
        self._consumed = 0
        self._workers: dict[int, dict] = {}
        self._finished_stats: dict = {}
        self._loader = self._build()

    def _build(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_keep,
                          persistent_workers=self.num_workers > 0, **self._loader_args)

    def __len__(self) -> int:
        return self.dataset.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._consumed, self._workers = epoch, 0, {}

    def __iter__(self):
        self.dataset.set_epoch(self.epoch)
        it = iter(self._loader)
        self.dataset.set_resume(None)  # the workers (or this iterator) took their copy
        for wire in it:
            state = wire.pop("state")
            self._workers[state["worker"]] = state
            self._consumed += 1
            yield unpack(wire)
        self._finished_stats = self.stats()
        self.epoch, self._consumed, self._workers = self.epoch + 1, 0, {}

    def stats(self) -> dict:
        """Counters of all epochs so far (items, frames decoded, shards opened, skips by reason)."""
        return merge_snapshots([self._finished_stats] + [s["stats"] for s in self._workers.values()])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self._consumed, "workers": dict(self._workers),
                "finished_stats": self._finished_stats, "num_workers": self.num_workers,
                "world_size": self.dataset.world_size, "rank": self.dataset.rank, "seed": self.dataset.cfg.seed}

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("num_workers", self.num_workers), ("world_size", self.dataset.world_size),
                          ("rank", self.dataset.rank), ("seed", self.dataset.cfg.seed)):
            if state[key] != mine:
                raise ValueError(f"stream state was saved with {key}={state[key]}, this loader has {mine}: "
                                 f"exact resume needs the same world size, rank, worker count and seed")
        self.epoch, self._consumed = state["epoch"], state["consumed"]
        self._workers = {int(k): v for k, v in state["workers"].items()}
        self._finished_stats = state["finished_stats"]
        self.dataset.set_resume({"epoch": self.epoch, "consumed": self._consumed, "workers": self._workers})
        self._loader = self._build()  # persistent workers hold the old state: start fresh ones
