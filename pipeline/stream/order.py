"""Pure bookkeeping of who reads what: per-epoch shard order, the rank/worker split, batch quotas.

Consumers are (rank, logical worker) pairs, c = rank * W + w of C = world * W. For every pass over a
dataset's shards the order is a permutation drawn from (seed, dataset, epoch, pass) alone — identical on
every rank — and only then split: consumer c takes positions c, c + C, ... With fewer shards than
consumers every consumer reads every shard and keeps the samples whose running number r (shard position p
plus sample index in the shard) has (p + r) % C == c. Either way no two consumers read the same sample in
one pass.
"""

from __future__ import annotations

import numpy as np


def pass_order(n_shards: int, seed: int, dataset_index: int, epoch: int, pass_: int) -> np.ndarray:
    return np.random.default_rng([seed, dataset_index, epoch, pass_, 0x5A4D]).permutation(n_shards)


def consumer_positions(n_shards: int, consumer: int, consumers: int) -> tuple[range, bool]:
    """Positions of the pass order this consumer reads, and whether it must filter samples."""
    if n_shards >= consumers:
        return range(consumer, n_shards, consumers), False
    return range(n_shards), True


def keeps_sample(position: int, raw_index: int, consumer: int, consumers: int) -> bool:
    return (position + raw_index) % consumers == consumer


def worker_quota(batches: int, worker: int, workers: int) -> int:
    """Batches of one logical worker when the DataLoader deals batch j to worker j % W."""
    return batches // workers + (1 if worker < batches % workers else 0)


def logical_worker(torch_worker: int, workers: int, consumed: int) -> int:
    """After `consumed` batches of an epoch, torch worker 0 must produce batch `consumed`: rotate roles so the
    DataLoader's round robin (which always restarts at worker 0) continues the same global sequence."""
    return (torch_worker + consumed) % workers
