"""HandStream: the IterableDataset every rank and loader worker iterates.

Per epoch and rank it yields exactly `batches_per_epoch` batches in total over its workers (dataset streams
repeat, so uneven shard counts can never make one rank stop early and hang DDP; a consumer whose share holds no
usable sample reads whole passes instead, see reader.py). A dataset without any usable item is a StreamError on
every consumer, never a spin: each reader is told which of its items made it into a batch. Items are mixed
across datasets by weight: each item's dataset is an independent draw from the weights, so over N items dataset
d's count is Binomial(N, w_d) (tests bound it at 5 standard deviations).

The epoch lives in a shared value, because persistent workers keep their own copy of this object and would
otherwise never see it change (webdataset's own epoch counter has the same problem).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.errors import SkipError, StreamError
from pipeline.stream.batch import BatchBuilder, unpack
from pipeline.stream.config import DatasetSpec, StreamConfig
from pipeline.stream.order import logical_worker, worker_quota
from pipeline.stream.reader import DatasetReader
from pipeline.stream.shardlist import ShardList, resolve
from pipeline.stream.splits import in_split
from pipeline.stream.stats import StreamStats


class HandStream(IterableDataset):
    def __init__(self, cfg: StreamConfig, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise StreamError(f"rank {rank} outside world size {world_size}")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.shards: list[ShardList] = [resolve(d, self._split_filter(d)) for d in cfg.datasets]
        self.batches_per_epoch = self._epoch_batches()
        self._epoch = mp.Value("q", 0, lock=False)
        self._resume: dict | None = None
        self.ring = 0  # batches each worker cycles through instead of allocating (StreamLoader sets it)
        self._builder: tuple[int, BatchBuilder] | None = None

    def _split_filter(self, spec: DatasetSpec) -> Callable[[str], bool] | None:
        """keep(sequence) for the configured split (None for "all"): the default epoch length counts its samples."""
        cfg = self.cfg
        return None if cfg.split == "all" else partial(in_split, cfg.split, spec.select, val_fraction=cfg.val_fraction,
                                                        seed=cfg.split_seed)

    def _epoch_batches(self) -> int:
        """Batches per rank. A stated items_per_epoch must fill one batch on every rank; the default (what the
        manifests imply) is at least one batch."""
        items, per_batch = self.cfg.items_per_epoch, self.world_size * self.cfg.batch_size
        if items is None:
            if any(s.samples is None for s in self.shards):
                raise StreamError("items_per_epoch is required when a dataset's shards are URLs rather than a "
                                  "shard-set directory with a manifest")
            return max(1, sum(s.samples for s in self.shards) * self.cfg.items_per_sample // per_batch)
        if items < per_batch:
            raise StreamError(f"items_per_epoch {items} is fewer than one batch per rank: {self.world_size} rank(s) "
                              f"x batch_size {self.cfg.batch_size} = {per_batch} items")
        return items // per_batch

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def set_resume(self, state: dict | None) -> None:
        self._resume = state

    def __iter__(self):
        """Reads the epoch and any resume state now (not lazily), so the caller may clear them right after."""
        info = get_worker_info()
        workers, torch_worker = (info.num_workers, info.id) if info else (1, 0)
        epoch = self.epoch
        resume = self._resume if self._resume is not None and self._resume["epoch"] == epoch else None
        self._resume = None
        consumed = resume["consumed"] if resume else 0
        w = logical_worker(torch_worker, workers, consumed)
        return self._batches(epoch, workers, w, (resume or {}).get("workers", {}).get(w), info is not None)

    def _batches(self, epoch: int, workers: int, w: int, state: dict | None, shared: bool):
        cfg = self.cfg
        consumer, consumers = self.rank * workers + w, self.world_size * workers
        stats = StreamStats()
        readers = [DatasetReader(cfg, d, spec, self.shards[d], consumer, consumers, epoch, self.rank, w, stats)
                   for d, spec in enumerate(cfg.datasets)]
        mixer = np.random.default_rng([cfg.seed, epoch, self.rank, w, 0x313])
        produced = 0
        if state is not None:
            for reader, rs in zip(readers, state["readers"], strict=True):
                reader.load_state_dict(rs)
            mixer.bit_generator.state = state["mixer"]
            produced = state["produced"]
            stats.restore(state["stats"])
        if self._builder is None or self._builder[0] != os.getpid():
            self._builder = (os.getpid(), BatchBuilder(cfg, shared, self.ring))  # kept across epochs: a
        builder = self._builder[1]  # persistent worker keeps reusing its buffer ring
        cumulative = np.cumsum(cfg.weights)
        cumulative[-1] = np.inf  # no float round-off can select past the last dataset
        quota = worker_quota(self.batches_per_epoch, w, workers)
        while produced < quota:
            wire = builder.new()
            arrays = {k: t.numpy() for k, t in unpack(dict(wire)).items() if isinstance(t, torch.Tensor)}
            b = 0
            while b < cfg.batch_size:
                d = int(np.searchsorted(cumulative, mixer.random(), side="right"))
                item = readers[d].next_item()
                try:
                    builder.put(arrays, b, item, d)
                except SkipError as exc:
                    stats.skip(exc.reason, str(exc))
                    continue
                readers[d].used()
                stats.add("items")
                stats.add(f"items/{cfg.datasets[d].name}")
                stats.add("frames_decoded", len(item.positions))
                b += 1
            builder.finish(arrays)
            produced += 1
            wire["state"] = {"worker": w, "produced": produced, "mixer": mixer.bit_generator.state,
                              "readers": [r.state_dict() for r in readers], "stats": stats.snapshot()}
            yield wire
