"""Shard sources (brace lists, globs, pipe:, fsspec) and bad data at training time."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
import webdataset as wds

from pipeline.stream import DatasetSpec, HandStream, StreamConfig, StreamError, StreamLoader
from pipeline.stream.shardlist import resolve
from tests.test_stream import same


def hanco_urls(shards: Path) -> list[str]:
    import pyarrow.parquet as pq

    rows = pq.read_table(shards / "manifest.parquet").to_pylist()
    return sorted({str(shards / r["shard"]) for r in rows if r["dataset"] == "hanco"})


def run(shards, items=8, **kw):
    cfg = StreamConfig((DatasetSpec("hanco", shards),), mode="peclr", batch_size=4, out_size=64, items_per_epoch=items,
                       **kw)
    loader = StreamLoader(HandStream(cfg), num_workers=0)
    return list(loader), loader


def test_url_forms_read_the_same_samples(stream_shards):
    urls = hanco_urls(stream_shards)
    assert len(urls) == 16 and urls[0].endswith("shard-000000.tar") and urls[-1].endswith("shard-000015.tar")
    reference, _ = run(str(stream_shards))
    brace = f"{stream_shards}/shard-{{000000..000015}}.tar"
    assert list(resolve(DatasetSpec("hanco", brace)).urls) == urls
    fs = fsspec.filesystem("memory")
    for u in urls:
        fs.pipe(f"/handclr-test/{Path(u).name}", Path(u).read_bytes())
    for form in (brace, tuple(f"pipe:cat {u}" for u in urls), "::".join(urls),
                 tuple(f"memory://handclr-test/{Path(u).name}" for u in urls)):
        batches, _ = run(form)
        assert len(batches) == len(reference) and all(same(a, b) for a, b in zip(batches, reference, strict=True)), form
    globbed, _ = run(f"{stream_shards}/shard-0000[01]*.tar")  # holds other datasets too: they are filtered out
    assert len(globbed) == 2 and all(bool((b["dataset"] == 0).all()) for b in globbed)


def test_missing_shards_are_clear_errors(tmp_path, stream_shards):
    with pytest.raises(StreamError, match="matches no file"):
        resolve(DatasetSpec("hanco", str(tmp_path / "none-*.tar")))
    with pytest.raises(StreamError, match="does not exist"):
        resolve(DatasetSpec("hanco", str(tmp_path / "shard-000000.tar")))
    with pytest.raises(StreamError, match="no samples of dataset 'nope'"):
        resolve(DatasetSpec("nope", str(stream_shards)))
    with pytest.raises(StreamError, match="items_per_epoch is required"):
        HandStream(StreamConfig((DatasetSpec("hanco", hanco_urls(stream_shards)[0]),)))


def corrupt_set(stream_shards: Path, out: Path) -> list[str]:
    """Four shards of good HanCo samples, then: garbage metadata in one sample, every JPEG of another with its
    SOI marker zeroed, and a shard cut in the middle of a member."""
    samples = list(wds.WebDataset(hanco_urls(stream_shards), shardshuffle=False, empty_check=False))
    names = []
    for s in range(4):
        name = out / f"bad-{s}.tar"
        with wds.TarWriter(str(name)) as w:
            for i, sample in enumerate(samples[4 * s:4 * s + 4]):
                members = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
                if s == 1 and i == 0:
                    members["json"] = b"{not json"
                if s == 2 and i == 1:
                    meta = json.loads(members["json"])
                    jpgs = bytearray(members["jpgs"])
                    for o in meta["frames"]["offset"]:
                        jpgs[o:o + 2] = b"\x00\x00"
                    members["jpgs"] = bytes(jpgs)
                w.write(members)
        names.append(str(name))
    data = Path(names[3]).read_bytes()
    Path(names[3]).write_bytes(data[:len(data) * 6 // 10])
    return names


def test_bad_data_is_counted_and_the_stream_continues(stream_shards, tmp_path):
    urls = corrupt_set(stream_shards, tmp_path)
    batches, loader = run(tuple(urls), items=40, interleave=2)
    assert len(batches) == len(loader) == 10
    skips = loader.stats()["skips"]
    assert skips.get("corrupt_sample", 0) >= 1
    assert skips.get("undecodable_frame", 0) >= 1
    assert skips.get("unreadable_shard", 0) >= 1
    counts = loader.stats()["counts"]
    assert counts["items"] == 40


def test_inspect_writes_the_tuple_grid_and_offset_histograms(stream_shards, tmp_path, capsys):
    import cv2

    from pipeline.cli import main

    assert main(["inspect", str(stream_shards), "--samples", str(tmp_path / "look"), "--rows", "3"]) == 0
    grid = cv2.imread(str(tmp_path / "look" / "tuples.png"))
    assert grid.shape == (3 * 128, 4 * 128, 3) and grid.std() > 10  # anchor | positive | 2 negatives, 3 rows
    offsets = cv2.imread(str(tmp_path / "look" / "offsets.png"))
    assert offsets is not None and offsets.shape[1] == 900
    assert "wrote" in capsys.readouterr().out


def test_reused_buffers_give_the_same_batches_when_consumed_in_turn(stream_shards):
    from tests.test_stream import TENSORS, config

    cfg = config(stream_shards, items_per_epoch=40)
    plain = [{k: b[k].clone() for k in TENSORS} for b in StreamLoader(HandStream(cfg), num_workers=2)]
    ring = StreamLoader(HandStream(cfg), num_workers=2, reuse_buffers=True)
    for _ in range(2):  # the second epoch reuses the persistent worker's buffers
        ring.set_epoch(0)
        reused = [{k: b[k].clone() for k in TENSORS} for b in ring]
        assert len(reused) == len(plain) and all(same(a, b) for a, b in zip(plain, reused, strict=True))
