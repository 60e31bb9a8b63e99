"""One dataset's endless item stream for one consumer within one epoch, with an exact, small state.

`interleave` shards are open at once; each step picks one of them uniformly, takes the next item of its
current clip sample, or reads the slot's next sample. A finished shard is replaced by the next one of the
consumer's pass order; once a pass's shards are all open its remaining ones are drained, then the next pass
starts (new permutation), so a dataset never runs dry and never repeats a sample within a pass.
State = pass, next position, per slot (position, raw samples read, current sample, items emitted) and the
generator state: restoring re-reads only the open shards up to their current samples (no decoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from pipeline.stream.clipdata import ClipSample, CorruptSample, parse_sample
from pipeline.stream.config import DatasetSpec, StreamConfig, StreamError
from pipeline.stream.items import TOO_SHORT, Item, clip_items
from pipeline.stream.order import consumer_positions, keeps_sample, pass_order
from pipeline.stream.shardlist import ShardList, read_shard
from pipeline.stream.stats import StreamStats


@dataclass
class Slot:
    pass_: int  # the pass whose order `position` indexes (a slot can outlive its pass)
    position: int  # index into that pass's order
    read: int = 0  # raw samples taken from the shard so far
    current: int = -1  # raw index of the sample whose items are being emitted
    emitted: int = 0
    items: list[Item] = field(default_factory=list)
    samples: Iterator[dict] | None = None

    def state(self) -> dict:
        return {"pass": self.pass_, "position": self.position, "read": self.read, "current": self.current,
                "emitted": self.emitted}


class DatasetReader:
    def __init__(self, cfg: StreamConfig, dataset_index: int, spec: DatasetSpec, shards: ShardList, consumer: int,
                 consumers: int, epoch: int, rank: int, worker: int, stats: StreamStats) -> None:
        self.cfg, self.d, self.spec, self.shards = cfg, dataset_index, spec, shards
        self.consumer, self.consumers, self.epoch, self.stats = consumer, consumers, epoch, stats
        self.rng = np.random.default_rng([cfg.seed, epoch, rank, worker, dataset_index, 0x51])
        positions, self.filtering = consumer_positions(len(shards.urls), consumer, consumers)
        self.mine = list(positions)
        self.pass_, self.next = 0, 0
        self.slots: list[Slot | None] = [None] * cfg.interleave
        self.idle = 0  # shards opened since the last item: detects a dataset that can never yield one

    def state_dict(self) -> dict:
        return {"pass": self.pass_, "next": self.next, "idle": self.idle, "rng": self.rng.bit_generator.state,
                "slots": [s.state() if s else None for s in self.slots]}

    def load_state_dict(self, state: dict) -> None:
        self.pass_, self.next, self.idle = state["pass"], state["next"], state["idle"]
        self.rng.bit_generator.state = state["rng"]
        for i, s in enumerate(state["slots"]):
            self.slots[i] = None if s is None else self._restore(s)

    def _restore(self, s: dict) -> Slot:
        slot = self._open(s["pass"], s["position"])
        while slot.read < s["read"]:
            raw = next(slot.samples, None)
            if raw is None:
                break
            if slot.read == s["current"]:
                slot.items = self._items(raw, slot) or []
            slot.read += 1
        slot.current, slot.emitted = s["current"], s["emitted"]
        return slot

    def _open(self, pass_: int, position: int) -> Slot:
        slot = Slot(pass_, position)
        order = pass_order(len(self.shards.urls), self.cfg.seed, self.d, self.epoch, pass_)
        slot.samples = read_shard(self.shards.urls[int(order[position])],
                                  lambda u, exc: self.stats.skip("unreadable_shard", f"{u}: {exc}"))
        self.stats.add("shards_opened")
        return slot

    def _open_next(self) -> Slot:
        self.idle += 1
        if self.idle > len(self.mine) + self.cfg.interleave + 1:
            raise StreamError(f"dataset {self.spec.name}: a whole pass over its {len(self.shards.urls)} shard(s) "
                              f"gave consumer {self.consumer}/{self.consumers} no usable item "
                              f"(skips so far: {dict(self.stats.skips)}); check the mode, window and shards")
        slot = self._open(self.pass_, self.mine[self.next])
        self.next += 1
        return slot

    def _items(self, raw: dict, slot: Slot) -> list[Item] | None:
        try:
            clip: ClipSample = parse_sample(raw, raw.get("__url__", "?"))
            if clip.dataset != self.spec.select:
                return None
            self.stats.add("samples_read")
            k = self.cfg.window(self.spec, clip.fps)
            items = clip_items(self.cfg, clip, k, self.epoch, slot.pass_, self.d)
        except CorruptSample as exc:
            self.stats.skip(exc.reason, str(exc))
            return None
        if items is None:
            self.stats.skip(TOO_SHORT.get(self.cfg.mode, "too_short"),
                            f"{clip.url}: sample {clip.key} ({clip.n} frames)")
        return items

    def _read(self, slot: Slot) -> bool:
        """Advance the slot to its next sample of this consumer; False at the end of its shard."""
        for raw in slot.samples:
            r = slot.read
            slot.read += 1
            if self.filtering and not keeps_sample(slot.position, r, self.consumer, self.consumers):
                continue
            slot.current, slot.emitted = r, 0
            slot.items = self._items(raw, slot) or []
            return True
        return False

    def next_item(self) -> Item:
        while True:
            if self.next < len(self.mine):
                i = int(self.rng.integers(len(self.slots)))
            else:  # pass fully opened: drain its open shards before the next pass starts (no early repeats)
                live = [j for j, s in enumerate(self.slots) if s is not None]
                if not live:
                    self.pass_, self.next = self.pass_ + 1, 0
                    continue
                i = live[int(self.rng.integers(len(live)))]
            slot = self.slots[i]
            if slot is None:
                slot = self.slots[i] = self._open_next()
            if slot.emitted < len(slot.items):
                slot.emitted += 1
                self.idle = 0
                return slot.items[slot.emitted - 1]
            if not self._read(slot):
                self.slots[i] = None
