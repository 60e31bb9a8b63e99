"""One dataset's endless item stream for one consumer within one epoch, with an exact, small state.

`interleave` shards are open at once; each step picks one of them uniformly, takes the next item of its
current clip sample, or reads the slot's next sample. A finished shard is replaced by the next one of the
consumer's pass order; once a pass's shards are all open its remaining ones are drained, then the next pass
starts (new permutation), so a dataset never runs dry and never repeats a sample within a pass.
State = pass, next position, per slot (position, raw samples read, current sample, items emitted) and the
generator state: restoring re-reads only the open shards up to their current samples (no decoding).

A pass whose shards were all opened after the last usable item (one that made it into a batch) gave this
consumer nothing. The first time, its share may just hold no usable sample (fewer usable samples than
consumers): it then reads every sample of every pass, with its own draws (`whole`), so that every rank still
fills its batches. A whole pass without a usable item is a StreamError naming the dataset and the skips, raised
by every consumer after at most two passes: never a spin.

Parsing applies the configured split (a sample outside it is dropped whole, `split_excluded`) and the label
fraction (frames outside the label subset become unlabelled, `labels_excluded`); see splits.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import SkipError, StreamError
from pipeline.sharding.clipjob import LABEL_FIELDS
from pipeline.stream.clipdata import ClipSample, parse_sample
from pipeline.stream.config import DatasetSpec, StreamConfig
from pipeline.stream.items import TOO_SHORT, Item, clip_items
from pipeline.stream.order import consumer_positions, keeps_sample, pass_order
from pipeline.stream.shardlist import ShardList, read_shard
from pipeline.stream.splits import in_split, label_selected
from pipeline.stream.stats import StreamStats

WHOLE_PASS_SALT = 0x3A11  # seeds of a consumer reading whole passes: (salt, consumer)


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
        self.whole = False  # this consumer's share gave no usable item in a pass: read every sample instead
        self._split()
        self.pass_, self.next = 0, 0
        self.slots: list[Slot | None] = [None] * cfg.interleave
        self.idle = 0  # shards opened since the last usable item

    def _split(self) -> None:
        if self.whole:
            self.mine, self.filtering = list(range(len(self.shards.urls))), False
        else:
            positions, self.filtering = consumer_positions(len(self.shards.urls), self.consumer, self.consumers)
            self.mine = list(positions)

    def used(self) -> None:
        """The last item made it into a batch (its frames decoded): the dataset is usable."""
        self.idle = 0

    def state_dict(self) -> dict:
        return {"pass": self.pass_, "next": self.next, "idle": self.idle, "whole": self.whole,
                "rng": self.rng.bit_generator.state, "slots": [s.state() if s else None for s in self.slots]}

    def load_state_dict(self, state: dict) -> None:
        self.pass_, self.next, self.idle = state["pass"], state["next"], state["idle"]
        self.whole = state.get("whole", False)
        self._split()
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
        slot.samples = read_shard(self.shards.urls[int(order[position])], self.stats.skip, self.cfg.read_timeout)
        self.stats.add("shards_opened")
        return slot

    def _open_next(self) -> Slot:
        self.idle += 1
        slot = self._open(self.pass_, self.mine[self.next])
        self.next += 1
        return slot

    def _next_pass(self) -> None:
        """Every shard of the pass is drained. If all were opened after the last usable item, the pass gave
        nothing: widen this consumer's share to whole passes once, then give up."""
        if self.idle >= len(self.mine):
            if self.whole:
                raise StreamError(f"dataset {self.spec.name}: a whole pass over all its {len(self.shards.urls)} "
                                  f"shard(s) gave consumer {self.consumer}/{self.consumers} no usable item "
                                  f"(skips so far: {dict(self.stats.skips)}); check the mode, window and shards")
            self.whole, self.idle = True, 0
            self._split()
            self.stats.add(f"whole_passes/{self.spec.name}")
        self.pass_, self.next = self.pass_ + 1, 0

    def _items(self, raw: dict, slot: Slot) -> list[Item] | None:
        try:
            clip: ClipSample = parse_sample(raw, raw.get("__url__", "?"), self.cfg.slot_size)
            if clip.dataset != self.spec.select:
                return None
            self.stats.add("samples_read")
            if not self._in_split(clip):
                self.stats.add("split_excluded")
                return None
            if self.cfg.labels:
                clip.load_labels()
                self._label_fraction(clip)
            k = self.cfg.window(self.spec, clip.fps)
            salt = (WHOLE_PASS_SALT, self.consumer) if self.whole else ()
            items = clip_items(self.cfg, clip, k, self.epoch, slot.pass_, self.d, salt)
        except SkipError as exc:
            self.stats.skip(exc.reason, str(exc))
            return None
        if items is None:
            self.stats.skip(TOO_SHORT.get(self.cfg.mode, "too_short"),
                            f"{clip.url}: sample {clip.key} ({clip.n} frames)")
        return items

    def _in_split(self, clip: ClipSample) -> bool:
        """Whether the clip's sequence is in the configured split (splits.py); the rule needs its sequence id."""
        cfg = self.cfg
        if cfg.split == "all" and cfg.label_fraction == 1:
            return True
        if clip.sequence is None:
            raise SkipError("corrupt_sample", f"{clip.url}: sample {clip.key}: no sequence id in the metadata, so "
                                              f"neither the split nor the label fraction can place it")
        return in_split(cfg.split, clip.dataset, clip.sequence, cfg.val_fraction, cfg.split_seed)

    def _label_fraction(self, clip: ClipSample) -> None:
        """Frames outside the label subset become unlabelled, their label fields NaN so that nothing downstream can
        use them by mistake (counted as `labels_excluded`)."""
        if clip.labels is None or self.cfg.label_fraction == 1:
            return
        keep = label_selected(clip.dataset, clip.sequence, clip.index, self.cfg.label_fraction, self.cfg.split_seed)
        drop = clip.labels["labelled"] & ~keep
        self.stats.add("labels_excluded", int(drop.sum()))
        clip.labels["labelled"] = clip.labels["labelled"] & keep
        for name in LABEL_FIELDS.keys() & clip.labels.keys():
            clip.labels[name] = clip.labels[name].copy()
            clip.labels[name][drop] = np.nan

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
                    self._next_pass()
                    continue
                i = live[int(self.rng.integers(len(live)))]
            slot = self.slots[i]
            if slot is None:
                slot = self.slots[i] = self._open_next()
            if slot.emitted < len(slot.items):
                slot.emitted += 1
                return slot.items[slot.emitted - 1]
            if not self._read(slot):
                self.slots[i] = None
