"""The DataLoader around a HandStream, with the stream's whole state for exact resume.

Built directly on torch's DataLoader (batch_size=None: workers already emit whole batches) and NOT passed
through `accelerate.prepare`: for an IterableDataset, Accelerate's prepared loader by default fetches every
batch on rank 0 and dispatches slices to the other ranks, which would defeat the per-rank shard split and
ship pixels over the network. Every rank builds its own loader with its own rank.

Its state carries the stream config's fields that define the batch sequence (and their sha256 fingerprint):
resuming under a different batch size, dataset list, mode, epoch length, sampling or augmentation is refused
with the fields that changed, as are a different world size, rank, worker count or seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from pipeline.augment.cv2_exec import single_threaded
from pipeline.errors import StreamError
from pipeline.stream.batch import unpack
from pipeline.stream.dataset import HandStream
from pipeline.stream.stats import merge_snapshots

log = logging.getLogger("handclr.stream")
UNSEQUENCED = ("executor", "decoder", "read_timeout")  # change how batches are made, not which items they hold
SHOWN_CHANGES = 6


def _keep(batch):
    return batch


def stream_fields(stream: HandStream) -> dict:
    """What defines the batch sequence, as plain JSON values: the config less UNSEQUENCED, each dataset's shard
    names (not their location: a shard set may be copied elsewhere between runs), views, batches per epoch."""
    cfg = stream.cfg
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in UNSEQUENCED}
    fields["datasets"] = [{"name": d.name, "select": d.select, "weight": d.weight, "window": d.window,
                           "shards": [url.rstrip("/").rsplit("/", 1)[-1] for url in s.urls]}
                          for d, s in zip(cfg.datasets, stream.shards, strict=True)]
    fields.update(views=cfg.views, batches_per_epoch=stream.batches_per_epoch)
    return json.loads(json.dumps(fields, default=repr))


def fingerprint(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 100 else text[:97] + "..."


def differences(saved, mine, path: str = "") -> list[str]:
    """`path: saved then, mine now` for every leaf that differs (dicts by key, equally long lists by index)."""
    if isinstance(saved, dict) and isinstance(mine, dict):
        return [d for k in sorted(saved.keys() | mine.keys())
                for d in differences(saved.get(k), mine.get(k), f"{path}.{k}" if path else k)]
    if isinstance(saved, list) and isinstance(mine, list) and len(saved) == len(mine):
        return [d for i, (a, b) in enumerate(zip(saved, mine, strict=True)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if saved == mine else [f"{path}: {_short(saved)} then, {_short(mine)} now"]


def ring_size(num_workers: int, prefetch_factor: int, hold: int) -> int:
    """Buffers per worker so that the `hold` most recently yielded batches are never written over.

    Batches go round robin over W workers, so the consumer holds at most ceil(hold / W) of one worker's; the
    DataLoader keeps at most `prefetch_factor` further tasks outstanding per worker, each writing one buffer;
    one spare absorbs the batch the pin-memory thread may still be copying. Without workers the next batch is
    built in the consumer's process after the held ones: hold + 1."""
    if num_workers == 0:
        return hold + 1
    return -(-hold // num_workers) + prefetch_factor + 1


class StreamLoader:
    """Iterate one epoch per `iter()`; `state_dict()` after any batch resumes at the next one.

    State: epoch, batches consumed this epoch, and per logical worker the state it reported with its last
    consumed batch (reader positions, generator states, counters), plus the stream config's sequence fields and
    fingerprint. Resuming needs the same world size, rank, worker count and those fields; the roles of the torch
    workers are rotated so the round robin continues in order. `timeout` (s, 0: none) bounds the wait for a
    worker's batch: past it the loader raises StreamError.
    """

    def __init__(self, dataset: HandStream, num_workers: int = 2, prefetch_factor: int = 2,
                 pin_memory: bool | None = None, timeout: float = 0.0, reuse_buffers: bool = False,
                 worker_init_fn: Callable[[int], None] | None = None, hold: int = 1) -> None:
        """`reuse_buffers`: each worker recycles a ring of batch buffers instead of allocating shared memory
        per batch (about 1.6x the throughput per core). `hold` is how many batches the consumer keeps alive at
        once (a trainer with accumulation A holds A micro-batches until its optimiser step): the ring is sized
        so that no held batch is overwritten (see `ring_size`)."""
        if hold < 1:
            raise ValueError(f"hold must be >= 1, got {hold}")
        self.dataset = dataset
        dataset.ring = ring_size(num_workers, prefetch_factor, hold) if reuse_buffers else 0
        single_threaded()  # here, before workers fork: cv2 reconfigured inside a forked child can deadlock
        self.num_workers = num_workers
        self._loader_args = dict(prefetch_factor=prefetch_factor if num_workers else None, timeout=timeout,
                                 worker_init_fn=worker_init_fn,
                                 pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory)
        self.epoch = 0
        self._consumed = 0
        self._workers: dict[int, dict] = {}
        self._finished_stats: dict = {}
        self._fields = stream_fields(dataset)
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
        for wire in self._within_timeout(it):
            state = wire.pop("state")
            self._workers[state["worker"]] = state
            self._consumed += 1
            yield unpack(wire)
        self._finished_stats = self.stats()
        self.epoch, self._consumed, self._workers = self.epoch + 1, 0, {}

    def _within_timeout(self, it):
        """The DataLoader's batches; its `timeout` (a RuntimeError in torch) becomes a StreamError that says what
        stalled. A stalled shard read inside a worker is `read_timeout`'s to catch (counted, the stream goes on)."""
        timeout = self._loader_args["timeout"]
        while True:
            try:
                wire = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:
                if timeout and "timed out" in str(exc):
                    raise StreamError(f"no batch from the loader's workers within timeout={timeout} s: a stalled shard "
                                      f"source or a hung worker (set the stream's read_timeout to skip stalled "
                                      f"shards)") from exc
                raise
            yield wire

    def stats(self) -> dict:
        """Counters of all epochs so far (items, frames decoded, shards opened, skips by reason)."""
        return merge_snapshots([self._finished_stats] + [s["stats"] for s in self._workers.values()])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self._consumed, "workers": dict(self._workers),
                "finished_stats": self._finished_stats, "num_workers": self.num_workers,
                "world_size": self.dataset.world_size, "rank": self.dataset.rank, "seed": self.dataset.cfg.seed,
                "stream": self._fields, "fingerprint": fingerprint(self._fields)}

    def _check_resumable(self, state: dict) -> None:
        """Refuse a state that would not continue the same batch sequence here, naming what differs."""
        for key, mine in (("num_workers", self.num_workers), ("world_size", self.dataset.world_size),
                          ("rank", self.dataset.rank), ("seed", self.dataset.cfg.seed)):
            if state[key] != mine:
                raise StreamError(f"stream state was saved with {key}={state[key]}, this loader has {mine}: "
                                  f"exact resume needs the same world size, rank, worker count and seed")
        if "stream" not in state:
            log.warning("stream state without a stream config fingerprint (saved by an older version): resuming "
                        "without checking that the config is unchanged")
            return
        changed = differences(state["stream"], self._fields)
        if changed:
            more = f"; and {len(changed) - SHOWN_CHANGES} more" if len(changed) > SHOWN_CHANGES else ""
            shown = "; ".join(changed[:SHOWN_CHANGES])
            raise StreamError(f"stream state was saved under another stream config ({shown}{more}): exact resume "
                              f"needs the same datasets, mode, batch size, epoch length, sampling and augmentation")

    def load_state_dict(self, state: dict) -> None:
        self._check_resumable(state)
        self.epoch, self._consumed = state["epoch"], state["consumed"]
        self._workers = {int(k): v for k, v in state["workers"].items()}
        self._finished_stats = state["finished_stats"]
        self.dataset.set_resume({"epoch": self.epoch, "consumed": self._consumed, "workers": self._workers})
        self._loader = self._build()  # persistent workers hold the old state: start fresh ones
