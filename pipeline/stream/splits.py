"""Validation split and label subsets: pure functions of ids, so every rank, worker and rerun agrees without a
list of ids to ship, and the rule itself is what a run directory records (`split_record`).

Both rules draw u = stable_hash63(key) / 2^63, uniform in [0, 1), from the sharder's stable hash
(`pipeline.sharding.clipjob.stable_hash63`: blake2b, independent of shard order and machines):

- Validation: a sequence is held out iff u(split, seed, dataset, sequence) < val_fraction. The unit is the
  sequence: a FreiHAND sequence is one unique sample id whose four background versions are its views (they
  never straddle the split), HO-3D and HanCo sequences go whole (all cameras, all chunks).
- Labels: frame i (the source frame index) of a sequence keeps its labels iff
  floor(f i + u) > floor(f (i - 1) + u), u = u(labels, seed, dataset, sequence), f = label_fraction.
  Within a video this is a uniform stride with a random phase: exactly f of consecutive frames, gaps of
  floor(1/f) or ceil(1/f) frames, as "sparsely annotated sequences" (TempCLR §4.3; finetune_eval.md §9 #7
  proposes a stride for HO-3D). A single-frame sequence (FreiHAND: index 0) is kept iff u < f, i.e. a
  random share f of unique sample ids with their background versions together (PeCLR thesis §5.4); HanCo's
  cameras share frame indices, so a time step is labelled in all cameras or none. The rule depends on the
  source frame index only, never on chunking or on which frames the sharder dropped.
The hash keys are tagged ("split", "labels") so neither rule correlates with the other or with aug_seed.
"""

from __future__ import annotations

import numpy as np

from pipeline.sharding.clipjob import stable_hash63
from pipeline.stream.config import StreamConfig

RULE_VERSION = 1
SCALE = float(2**63)


def _uniform(*parts) -> float:
    return stable_hash63("\x00".join(str(p) for p in parts)) / SCALE


def in_validation(dataset: str, sequence: str, val_fraction: float, seed: int) -> bool:
    """True when the whole sequence belongs to the held-out validation split."""
    return _uniform("split", seed, dataset, sequence) < val_fraction


def in_split(split: str, dataset: str, sequence: str, val_fraction: float, seed: int) -> bool:
    """Whether a sequence is part of `split` ("all", "train" or "val")."""
    return split == "all" or in_validation(dataset, sequence, val_fraction, seed) == (split == "val")


def label_selected(dataset: str, sequence: str, frame_index: int | np.ndarray, fraction: float,
                   seed: int) -> np.bool_ | np.ndarray:
    """True (per frame, for an int or an array of source frame indices) when the frame keeps its labels: a
    uniform stride of `fraction` with a per-sequence random phase (see the module docstring)."""
    u = _uniform("labels", seed, dataset, sequence)
    i = np.asarray(frame_index, dtype=np.float64)
    return np.floor(fraction * i + u) > np.floor(fraction * (i - 1) + u)


def split_record(cfg: StreamConfig) -> dict:
    """The split and label-subset rule of a StreamConfig as JSON values: with the shards, enough to recompute
    exactly which sequences were held out and which frames kept their labels."""
    return {
        "rule_version": RULE_VERSION,
        "split": cfg.split, "val_fraction": cfg.val_fraction, "label_fraction": cfg.label_fraction,
        "split_seed": cfg.split_seed, "datasets": [d.select for d in cfg.datasets],
        "hash": "u(parts) = stable_hash63('\\x00'.join(parts)) / 2**63; stable_hash63(text) = first 8 bytes of "
                "blake2b(text, digest_size=8), little-endian, & (2**63 - 1)",
        "validation": "sequence held out iff u('split', split_seed, dataset, sequence) < val_fraction",
        "labels": "frame (source index i) keeps its labels iff floor(f*i + u) > floor(f*(i-1) + u), "
                  "u = u('labels', split_seed, dataset, sequence), f = label_fraction",
    }
