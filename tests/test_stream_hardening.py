"""The stream keeps its promise: a malformed sample or shard is counted and skipped, a dataset that can never
yield an item is a clear error on every consumer in bounded time, every rank yields `len(loader)` batches, and
a resume under a changed stream config is refused."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import zstandard

from pipeline.stream import DatasetSpec, HandStream, StreamConfig, StreamError, StreamLoader
from pipeline.stream.clipdata import clip_id
from pipeline.stream.config import preset_augment
from tests.conftest import deadline
from tests.test_stream_sources import hanco_urls


@pytest.fixture(scope="module")
def hanco(stream_shards) -> list[dict]:
    """The HanCo samples of the stream shards, as plain members."""
    return [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}
            for s in wds.WebDataset(hanco_urls(stream_shards), shardshuffle=False, empty_check=False)]


def write_tar(path: Path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)
    return str(path)


def with_meta(sample: dict, edit) -> dict:
    meta = json.loads(sample["json"])
    edit(meta)
    return {**sample, "json": json.dumps(meta).encode()}


def pack_npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def unpack_npz(blob: bytes) -> dict:
    with np.load(io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(blob))) as npz:
        return {k: npz[k] for k in npz.files}


def stream(urls, items=8, workers=0, rank=0, world=1, timeout=0.0, **kw):
    args = dict(mode="peclr", batch_size=2, out_size=32, interleave=2, items_per_epoch=items,
                augment=preset_augment("peclr"))
    args.update(kw)
    cfg = StreamConfig((DatasetSpec("hanco", tuple(urls)),), **args)
    loader = StreamLoader(HandStream(cfg, rank, world), num_workers=workers, timeout=timeout)
    return list(loader), loader


def seen_clips(batches) -> set[int]:
    return {int(c) for b in batches for c in b["clip"]}


def frames(**values):
    def edit(meta):
        for name, value in values.items():
            meta["frames"][name] = [value] * len(meta["frames"]["offset"])
    return edit


def top(**values):
    return lambda meta: meta.update(values)


SAMPLE_PROBLEMS = {
    "negative view": (top(view=-1), "corrupt_sample"),
    "negative chunk": (top(chunk=-1), "corrupt_sample"),
    "negative aug_seed": (top(aug_seed=-1), "corrupt_sample"),
    "aug_seed beyond 63 bits": (top(aug_seed=2**63), "corrupt_sample"),
    "NaN hand box": (frames(hand_box=[math.nan] * 4), "corrupt_sample"),
    "null hand box": (frames(hand_box=[None] * 4), "corrupt_sample"),
    "empty hand box": (frames(hand_box=[10.0, 10.0, 10.0, 50.0]), "corrupt_sample"),
    "frame larger than the slot": (frames(size=[300, 300]), "frame_exceeds_slot"),
    "fill value above 255": (top(fill_value=300), "corrupt_sample"),
    "negative fill value": (top(fill_value=-1), "corrupt_sample"),
    "frame index beyond int64": (frames(index=2**70), "corrupt_sample"),
    "fps not a number": (top(fps="fast"), "corrupt_sample"),
    "fps beyond any camera": (top(fps=1e300), "corrupt_sample"),
    "other schema version": (top(schema=2), "unsupported_schema"),
}


@pytest.mark.parametrize("problem", list(SAMPLE_PROBLEMS))
def test_malformed_sample_is_counted_and_the_stream_continues(hanco, tmp_path, problem):
    edit, reason = SAMPLE_PROBLEMS[problem]
    bad = with_meta(hanco[0], edit)
    url = write_tar(tmp_path / "s.tar", [bad] + hanco[1:5])
    batches, loader = stream([url])
    assert len(batches) == len(loader) == 4
    assert loader.stats()["skips"].get(reason, 0) >= 1, loader.stats()
    assert loader.stats()["counts"]["items"] == 8
    assert clip_id(bad["__key__"]) not in seen_clips(batches)


def _garbage(labels: dict) -> bytes:
    return b"\x28\xb5\x2f\xfd not an archive"


def _empty_arrays(labels: dict) -> bytes:
    return pack_npz({k: v[:0] for k, v in labels.items()})


def _text_kp2d(labels: dict) -> bytes:
    return pack_npz({**labels, "kp2d": np.full(labels["kp2d"].shape, "x")})


def _bomb(labels: dict) -> bytes:
    return pack_npz({**labels, "pad": np.zeros(16 << 20, np.uint8)})  # 16 MiB of zeros: a few KiB compressed


LABEL_PROBLEMS = {"garbage": (_garbage, "corrupt_labels"),
                  "arrays of the wrong length": (_empty_arrays, "corrupt_labels"),
                  "text keypoints": (_text_kp2d, "corrupt_labels"),
                  "decompression bomb": (_bomb, "labels_too_large")}


@pytest.mark.parametrize("problem", list(LABEL_PROBLEMS))
def test_corrupt_labels_are_counted_when_labels_are_read(hanco, tmp_path, problem):
    make, reason = LABEL_PROBLEMS[problem]
    bad = {**hanco[0], "labels": make(unpack_npz(hanco[0]["labels"]))}
    assert len(bad["labels"]) < 64 << 10
    url = write_tar(tmp_path / "s.tar", [bad] + hanco[1:5])
    batches, loader = stream([url], labels=True)
    assert len(batches) == len(loader) == 4
    assert loader.stats()["skips"].get(reason, 0) >= 1, loader.stats()
    assert clip_id(bad["__key__"]) not in seen_clips(batches)
    assert all(b["labelled"].all() for b in batches)


def test_failing_pipe_shards_are_counted_not_raised(hanco, tmp_path):
    good = write_tar(tmp_path / "good.tar", hanco[:4])
    with deadline(60):
        batches, loader = stream([good, "pipe:exit 3", f"pipe:cat {good}; exit 3"], items=12)
    assert len(batches) == len(loader) == 6
    assert loader.stats()["skips"]["unreadable_shard"] >= 2


def test_duplicate_member_drops_only_that_sample(hanco, tmp_path):
    a, b, c, d = hanco[:4]
    url = write_tar(tmp_path / "dup.tar", [a, b, b, c, d])  # b's members twice in a row: json repeats
    batches, loader = stream([url], items=12)
    assert len(batches) == len(loader) == 6
    assert loader.stats()["skips"].get("duplicate_member", 0) >= 1
    assert seen_clips(batches) == {clip_id(s["__key__"]) for s in (a, c, d)}


def _undecodable(sample: dict) -> dict:
    meta = json.loads(sample["json"])
    jpgs = bytearray(sample["jpgs"])
    for o in meta["frames"]["offset"]:
        jpgs[o:o + 2] = b"\x00\x00"
    return {**sample, "jpgs": bytes(jpgs)}


def test_all_frames_undecodable_is_an_error_on_every_consumer_not_a_spin(hanco, tmp_path):
    urls = [write_tar(tmp_path / f"u{i}.tar", [_undecodable(s) for s in hanco[2 * i:2 * i + 2]]) for i in range(3)]
    for rank in (0, 1):
        with deadline(60), pytest.raises(StreamError, match=r"dataset hanco.*no usable item.*undecodable_frame"):
            stream(urls, rank=rank, world=2)


@pytest.mark.parametrize("n", [1, 2])
def test_every_rank_yields_its_epoch_with_fewer_samples_than_consumers(hanco, tmp_path, n):
    url = write_tar(tmp_path / "few.tar", hanco[:n])
    geometry = []
    for rank in (0, 1):
        batches, loader = stream([url], workers=2, rank=rank, world=2)
        assert len(batches) == len(loader) == 2
        assert seen_clips(batches) <= {clip_id(s["__key__"]) for s in hanco[:n]}
        geometry.append(torch.cat([b["geometry"] for b in batches]))
    assert not torch.equal(*geometry)  # consumers reading the same samples still draw their own items


def test_stalled_source_times_out_and_is_counted(hanco, tmp_path):
    good = write_tar(tmp_path / "good.tar", hanco[:4])
    with deadline(30):
        batches, loader = stream([good, "pipe:exec sleep 60"], read_timeout=0.5)
    assert len(batches) == len(loader) == 4
    assert loader.stats()["skips"]["unreadable_shard"] >= 1


def test_timed_reads_give_the_same_batches(hanco, tmp_path):
    good = write_tar(tmp_path / "good.tar", hanco[:4])
    urls = [good, f"pipe:cat {good}"]
    plain, _ = stream(urls, items=16)
    timed, loader = stream(urls, items=16, read_timeout=5.0)
    assert not loader.stats()["skips"]
    assert all(torch.equal(a["frames"], b["frames"]) and torch.equal(a["clip"], b["clip"])
               for a, b in zip(plain, timed, strict=True))


def test_stalled_worker_is_a_stream_error(tmp_path):
    with deadline(60), pytest.raises(StreamError, match="no batch"):
        stream(["pipe:exec sleep 3"], workers=1, timeout=1.0)


@pytest.mark.parametrize("items", [1, 7])
def test_epoch_shorter_than_one_batch_per_rank_is_an_error(hanco, tmp_path, items):
    url = write_tar(tmp_path / "s.tar", hanco[:4])
    with pytest.raises(StreamError, match=rf"items_per_epoch {items}.*2 rank.*batch_size 4"):
        stream([url], items=items, world=2, batch_size=4)


CHANGES = {"batch_size": dict(batch_size=4), "mode": dict(mode="simclr"), "items_per_epoch": dict(items=16),
           "datasets": dict(extra=True), "augment": dict(augment=preset_augment("tempclr"))}


def _loader(urls, extra=False, items=8, **kw) -> StreamLoader:
    args = dict(mode="peclr", batch_size=2, out_size=32, interleave=2, items_per_epoch=items,
                augment=preset_augment("peclr"))
    args.update(kw)
    specs = (DatasetSpec("hanco", tuple(urls)),)
    if extra:
        specs += (DatasetSpec("more", tuple(urls), dataset="hanco"),)
    return StreamLoader(HandStream(StreamConfig(specs, **args)), num_workers=0)


@pytest.mark.parametrize("field", list(CHANGES))
def test_resume_refuses_a_changed_stream_config(hanco, tmp_path, field):
    url = write_tar(tmp_path / "s.tar", hanco[:4])
    loader = _loader([url])
    next(iter(loader))
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    _loader([url]).load_state_dict(state)  # unchanged: accepted
    with pytest.raises(StreamError, match=field):
        _loader([url], **CHANGES[field]).load_state_dict(state)


def test_resume_refuses_another_seed_or_world_with_a_stream_error(hanco, tmp_path):
    url = write_tar(tmp_path / "s.tar", hanco[:4])
    state = _loader([url]).state_dict()
    with pytest.raises(StreamError, match="seed"):
        _loader([url], seed=1).load_state_dict(state)
    with pytest.raises(StreamError, match="world_size"):
        StreamLoader(HandStream(_loader([url]).dataset.cfg, 0, 2), num_workers=0).load_state_dict(state)


def test_resume_of_a_consumer_reading_whole_passes_is_exact(hanco, tmp_path):
    url = write_tar(tmp_path / "few.tar", hanco[:1])
    full, loader = stream([url], items=12, rank=1, world=2)
    assert loader.stats()["counts"]["whole_passes/hanco"] == 1
    cfg = loader.dataset.cfg
    first = StreamLoader(HandStream(cfg, 1, 2), num_workers=0)
    head = next(iter(first))
    fresh = StreamLoader(HandStream(cfg, 1, 2), num_workers=0)
    fresh.load_state_dict(first.state_dict())
    rest = list(fresh)
    assert len(rest) == len(full) - 1
    assert all(torch.equal(a["geometry"], b["geometry"]) and torch.equal(a["clip"], b["clip"])
               for a, b in zip([head, *rest], full, strict=True))
