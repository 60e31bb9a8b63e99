"""From one parsed clip sample to training items: sampler draws, then augmentation parameters.

Seeds (every draw is reproducible and independent of worker count and order):
  sampler draws   rng([seed, epoch, pass, dataset index, clip id])
  augmentation    rng([aug_seed, seed, epoch, pass, view, chunk]): geometry for all m items of the clip
                  sample first (row j for item j: once per item when time-coherent, once per view
                  otherwise), then appearance for every view of every item.
So item j of a clip gets new but reproducible parameters every epoch, drawn in one vectorised call per clip.
A consumer that reads a whole pass (fewer usable samples than consumers) appends a per-consumer salt to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.augment.affine import view_affine
from pipeline.augment.colour import identity_appearance
from pipeline.augment.params import GeometrySpec
from pipeline.stream.clipdata import ClipSample
from pipeline.stream.config import StreamConfig
from pipeline.stream.sampling import eligible_anchors, frames_draw, sequence_draw, tempclr_draw

ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE, ROLE_VIEW, ROLE_SEQUENCE = 0, 1, 2, 3, 4
# Why a clip sample yields no item, per mode (counted as a skip).
TOO_SHORT = {"tempclr": "too_short_for_negatives", "sequence": "too_short_for_sequence",
             "finetune": "no_labelled_frames", "finetune_sequence": "no_labelled_sequence"}


@dataclass
class Item:
    clip: ClipSample
    positions: np.ndarray  # [V] frame positions in the clip sample
    roles: np.ndarray  # [V]
    offsets: np.ndarray  # [V] position minus the anchor's (TempCLR), step in the sequence, 0 for views
    geometry: np.ndarray  # [V, 4]
    appearance: np.ndarray  # [V, 9]
    affine: np.ndarray  # [V, 2, 3] output -> slot pixels
    slot_xy: np.ndarray  # [V, 2] where each stored crop's top-left pixel sits in its slot
    window: int  # the TempCLR half-width k used for this item (0 in other modes)


def slot_offsets(clip: ClipSample, positions: np.ndarray, slot: int) -> np.ndarray:
    """[V, 2] (x, y) of each stored crop's top-left pixel in the slot: smaller crops are centred (parsing
    skipped samples with frames larger than the slot)."""
    return (slot - clip.sizes[positions][:, ::-1]) // 2


def labelled_positions(clip: ClipSample) -> np.ndarray:
    """Positions whose frame is labelled (after the label fraction, see reader.py): finetune items' only source."""
    return np.empty(0, np.int64) if clip.labels is None else np.flatnonzero(clip.labels["labelled"])


def labelled_sequence_starts(clip: ClipSample, length: int, interval: int) -> np.ndarray:
    """Start positions s of the sequences s, s+Δ, ..., s+(length-1)Δ inside the clip sample that hold at least one
    labelled frame: finetune_sequence items' only sources (the supervised terms need a label, the temporal ones
    use every frame)."""
    span = (length - 1) * interval
    labelled = np.zeros(clip.n, bool) if clip.labels is None else clip.labels["labelled"]
    if clip.n <= span:
        return np.empty(0, np.int64)
    frames = np.arange(clip.n - span)[:, None] + interval * np.arange(length)
    return np.flatnonzero(labelled[frames].any(axis=1))


def _draw_positions(cfg: StreamConfig, rng: np.random.Generator, clip: ClipSample, k: int,
                    anchors: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """[(positions, roles, offsets)] for the items of one clip, or None when it is too short (finetune: when it
    has no labelled frame; finetune_sequence: no sequence with one)."""
    out, n = [], clip.n
    if cfg.mode == "tempclr":
        for _ in range(cfg.items_per_sample):
            d = tempclr_draw(rng, n, k, cfg.positives, cfg.negatives, cfg.positive_law, cfg.negative_law, anchors)
            if d is None:
                return None
            pos = np.concatenate([[d.anchor], d.positives, d.negatives])
            roles = np.array([ROLE_ANCHOR] + [ROLE_POSITIVE] * cfg.positives + [ROLE_NEGATIVE] * cfg.negatives)
            out.append((pos, roles, pos - d.anchor))
    elif cfg.mode == "sequence":
        for _ in range(cfg.items_per_sample):
            pos = sequence_draw(rng, n, cfg.sequence_length, cfg.sequence_interval)
            if pos is None:
                return None
            out.append((pos, np.full(len(pos), ROLE_SEQUENCE), pos - pos[0]))
    elif cfg.mode == "finetune":
        labelled = labelled_positions(clip)
        for p in labelled[frames_draw(rng, len(labelled), cfg.items_per_sample)]:
            out.append((np.array([p]), np.full(1, ROLE_VIEW), np.zeros(1, dtype=np.int64)))
        return out or None
    elif cfg.mode == "finetune_sequence":
        starts = labelled_sequence_starts(clip, cfg.sequence_length, cfg.sequence_interval)
        steps = cfg.sequence_interval * np.arange(cfg.sequence_length)
        for s in starts[frames_draw(rng, len(starts), cfg.items_per_sample)]:
            out.append((s + steps, np.full(cfg.sequence_length, ROLE_SEQUENCE), steps))
        return out or None
    else:
        for p in frames_draw(rng, n, cfg.items_per_sample):
            out.append((np.array([p, p]), np.full(2, ROLE_VIEW), np.zeros(2, dtype=np.int64)))
    return out


def clip_items(cfg: StreamConfig, clip: ClipSample, k: int, epoch: int, pass_: int, dataset_index: int,
               salt: tuple[int, ...] = ()) -> list[Item] | None:
    """The items of one clip sample. `salt` extends both seeds: consumers that read the same samples (see
    DatasetReader.whole) must still draw different items."""
    rng = np.random.default_rng([cfg.seed, epoch, pass_, dataset_index, clip.clip_id, *salt])
    anchors = eligible_anchors(clip.n, k, cfg.positives, cfg.negatives) if cfg.mode == "tempclr" else None
    drawn = _draw_positions(cfg, rng, clip, k, anchors)
    if drawn is None:
        return None
    m, v = len(drawn), len(drawn[0][0])
    spec = cfg.augment
    if not spec.enabled:
        geometry = np.tile(GeometrySpec.identity(), (m, v, 1))
        appearance = np.tile(identity_appearance(), (m, v, 1))
    else:
        arng = np.random.default_rng([clip.aug_seed, cfg.seed, epoch, pass_, clip.view, clip.chunk, *salt])
        if cfg.time_coherent:
            geometry = np.repeat(spec.geometry.draw(arng, m)[:, None], v, axis=1)
        else:
            geometry = spec.geometry.draw(arng, m * v).reshape(m, v, -1)
        appearance = spec.appearance.draw(arng, m * v).reshape(m, v, -1)
    pos = np.stack([d[0] for d in drawn])
    slots = slot_offsets(clip, pos.ravel(), cfg.slot_size)
    margin = 1.0 if clip.passthrough else spec.geometry.margin
    affine = view_affine(clip.hand_boxes[pos.ravel()], slots, cfg.out_size, margin,
                          geometry.reshape(m * v, -1)).reshape(m, v, 2, 3)
    slots = slots.reshape(m, v, 2)
    window = k if cfg.mode == "tempclr" else 0
    return [Item(clip, p, roles, offsets, geometry[j], appearance[j], affine[j], slots[j], window)
            for j, (p, roles, offsets) in enumerate(drawn)]
