"""Every labelled frame of a shard set exactly once, in shard order, without augmentation, in the stream's
fine-tuning batch format: what evaluation needs and the training stream (random, endless) is not.

Built from the stream's own parts (shard lists, sample parsing, the split rule, items, batch builder), so the
crops, label conventions and pixels are exactly those the model was fine-tuned on; bad samples are counted
(`stats`) and skipped as in the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

import torch

from pipeline.errors import SkipError, StreamError
from pipeline.stream import DatasetSpec, StreamConfig
from pipeline.stream.batch import BatchBuilder, unpack
from pipeline.stream.clipdata import ClipSample, parse_sample
from pipeline.stream.items import clip_items, labelled_positions
from pipeline.stream.shardlist import read_shard, resolve
from pipeline.stream.splits import in_split
from pipeline.stream.stats import StreamStats

log = logging.getLogger("handclr.evaluate")


def sweep_config(data: StreamConfig) -> StreamConfig:
    """The fine-tuning stream config as an evaluation sweep: all labels, no augmentation, the configured split."""
    return replace(data, mode="finetune", label_fraction=1.0, augment=replace(data.augment, enabled=False),
                   executor="none")


def dataset_samples(spec: DatasetSpec, slot_size: int, stats: StreamStats,
                    read_timeout: float = 0.0) -> Iterator[ClipSample]:
    """The parsed clip samples of one dataset in shard order; malformed ones are counted in `stats` and skipped."""
    for url in resolve(spec).urls:
        for raw in read_shard(url, stats.skip, read_timeout):
            try:
                clip = parse_sample(raw, url, slot_size)
            except SkipError as exc:
                stats.skip(exc.reason, str(exc))
                continue
            if clip.dataset == spec.select:
                yield clip


def _clips(cfg: StreamConfig, stats: StreamStats) -> Iterator[tuple[int, ClipSample]]:
    for d, spec in enumerate(cfg.datasets):
        for clip in dataset_samples(spec, cfg.slot_size, stats, cfg.read_timeout):
            if not in_split(cfg.split, clip.dataset, clip.sequence or "", cfg.val_fraction, cfg.split_seed):
                continue
            try:
                clip.load_labels()
            except SkipError as exc:
                stats.skip(exc.reason, str(exc))
                continue
            yield d, clip


def _items(cfg: StreamConfig, d: int, clip: ClipSample):
    """Every labelled frame of the clip sample once (identity geometry: augmentation is off)."""
    n = len(labelled_positions(clip))
    return clip_items(replace(cfg, items_per_sample=n), clip, 0, 0, 0, d) if n else []


def _rows(batch: dict, n: int, sequences: list[str]) -> dict:
    """The first n rows, copied out of the builder's buffer, with each row's source sequence id (`sequence`:
    the submission formats name frames by it)."""
    rows = {k: v[:n].clone() if isinstance(v, torch.Tensor) and v.dim() else v for k, v in batch.items()}
    return {**rows, "sequence": list(sequences[:n])}


def sweep_batches(data: StreamConfig, max_items: int | None = None,
                  stats: StreamStats | None = None) -> Iterator[dict]:
    """Batches of `data.batch_size` frames (the last one shorter), at most `max_items` frames in all."""
    cfg = sweep_config(data)
    stats = stats if stats is not None else StreamStats()
    builder = BatchBuilder(cfg, shared=False)
    wire, arrays, b, total, sequences = None, None, 0, 0, []
    for d, clip in _clips(cfg, stats):
        for item in _items(cfg, d, clip):
            if max_items is not None and total >= max_items:
                break
            if wire is None:
                wire = builder.new()
                batch = unpack(dict(wire))
                arrays = {k: t.numpy() for k, t in batch.items() if isinstance(t, torch.Tensor)}
            try:
                builder.put(arrays, b, item, d)
            except SkipError as exc:
                stats.skip(exc.reason, str(exc))
                continue
            b, total = b + 1, total + 1
            sequences.append(clip.sequence or "")
            if b == cfg.batch_size:
                builder.finish(arrays)
                yield _rows(batch, b, sequences)
                wire, b, sequences = None, 0, []
    if b:  # the unfilled rows of the last batch repeat row 0, so the label transform sees valid views
        for name in arrays:
            if name != "frames" and arrays[name].ndim:
                arrays[name][b:] = arrays[name][0]
        builder.finish(arrays)
        yield _rows(batch, b, sequences)
    if total == 0:
        raise StreamError(f"evaluation sweep over {[s.shards for s in cfg.datasets]} ({cfg.split} split) found no "
                          f"labelled frame; skips: {dict(stats.skips)}")
    log.info("evaluation sweep: %d frames, skips %s", total, dict(stats.skips))
