"""Sharding options (the `sharding:` section of a recipe), typed and range-checked at load."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.typedconfig import ByteValue, NonNegativeInt, PositiveInt, ranged


@dataclass(frozen=True)
class ShardOptions:
    seed: NonNegativeInt = 0  # sharding seed: aug_seed = hash(seed, dataset, sequence)
    context: ranged(float, ge=1.0, le=16.0) = 2.5  # crop side = context x longer side of the hand box
    store_size: ranged(int, ge=16, le=4096) = 256  # stored crop side in pixels
    quality: ranged(int, ge=1, le=100) = 90  # JPEG quality of re-encoded crops
    fill_value: ByteValue = 0  # grey level of out-of-image crop regions
    chunk_frames: PositiveInt = 128  # maximum frames per sample; longer clips are split into balanced chunks
    min_frames: PositiveInt = 8  # clips with fewer usable frames are counted and skipped
    shard_bytes: PositiveInt = 256 * 1024 * 1024  # target shard size
    strict: bool = False  # any skip becomes an error
