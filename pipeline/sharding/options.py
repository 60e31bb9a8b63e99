"""Sharding options (the `sharding:` section of a recipe)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ShardOptions:
    seed: int = 0  # sharding seed: aug_seed = hash(seed, dataset, sequence)
    context: float = 2.5  # crop side = context x longer side of the hand box
    store_size: int = 256  # stored crop side in pixels
    quality: int = 90  # JPEG quality of re-encoded crops
    fill_value: int = 0  # grey level of out-of-image crop regions
    chunk_frames: int = 128  # maximum frames per sample; longer clips are split into balanced chunks
    min_frames: int = 8  # clips with fewer usable frames are counted and skipped
    shard_bytes: int = 256 * 1024 * 1024  # target shard size
    strict: bool = False  # any skip becomes an error

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "ShardOptions":
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"{where}: unknown sharding option(s) {sorted(unknown)}; known: {sorted(known)}")
        opts = cls(**{k: type(getattr(cls, k))(v) for k, v in data.items()})
        if opts.context < 1.0 or opts.store_size < 16 or not 1 <= opts.quality <= 100:
            raise ValueError(f"{where}: need context >= 1, store_size >= 16, 1 <= quality <= 100")
        if opts.chunk_frames < 1 or opts.min_frames < 1 or opts.shard_bytes < 1:
            raise ValueError(f"{where}: chunk_frames, min_frames and shard_bytes must be positive")
        return opts
