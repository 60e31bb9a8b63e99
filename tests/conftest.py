"""Shared fixtures: sample datasets in the official layouts, generated at test time, and shard readers
that go through webdataset's own reader (independent of the sharder's code)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import webdataset as wds
import yaml
import zstandard

from pipeline.sampledata import generate
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RECIPE = REPO / "shards" / "sample.yaml"


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sample-data")
    truth = generate(root, seed=0, ho3d_version=3)
    return root, truth


@pytest.fixture(scope="session")
def sample_shards(sample, tmp_path_factory) -> Path:
    root, _ = sample
    out = tmp_path_factory.mktemp("sample-shards")
    shard(load_recipe(SAMPLE_RECIPE), root, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def stream_shards(sample, tmp_path_factory) -> Path:
    """The sample datasets in small shards (about one HanCo clip each), so ranks and workers split them."""
    root, _ = sample
    out = tmp_path_factory.mktemp("stream-shards")
    shard(load_recipe(SAMPLE_RECIPE, {"shard_bytes": 170_000}), root, out, workers=1, progress=False)
    return out


@pytest.fixture
def sample_copy(sample, tmp_path) -> Path:
    """A private, modifiable copy of the sample datasets."""
    root = tmp_path / "data"
    shutil.copytree(sample[0], root)
    return root


def write_recipe(path: Path, sources: list[dict], **sharding) -> Path:
    path.write_text(yaml.safe_dump({"name": "test", "sharding": {"seed": 0, "min_frames": 1, **sharding},
                                    "sources": sources}))
    return path


def run(tmp_path: Path, root: Path, sources: list[dict], out_name: str = "out", workers: int = 1,
        part=None, **sharding) -> tuple[dict, Path]:
    recipe = load_recipe(write_recipe(tmp_path / f"{out_name}.yaml", sources, **sharding))
    out = tmp_path / out_name
    return shard(recipe, root, out, workers=workers, part=part, progress=False), out


def read_shard_set(out: Path) -> dict[str, dict]:
    """key -> {"meta", "jpegs" (list of bytes), "frames" (decoded RGB), "labels"} via webdataset."""
    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    samples = {}
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        meta = json.loads(s["json"])
        fr = meta["frames"]
        jpegs = [s["jpgs"][o:o + n] for o, n in zip(fr["offset"], fr["length"], strict=True)]
        labels = None
        if "labels" in s:
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(s["labels"])
            with np.load(io.BytesIO(raw)) as npz:
                labels = {k: npz[k] for k in npz.files}
        samples[s["__key__"]] = {"meta": meta, "jpegs": jpegs, "labels": labels,
                                 "frames": [simplejpeg.decode_jpeg(j) for j in jpegs]}
    return samples


def accounting(summary: dict) -> tuple[int, int]:
    """(frames in, frames written + skipped frames): equal when nothing is lost."""
    return summary["frames_in"], summary["frames_written"] + sum(summary["skips"]["frames"].values())


@contextlib.contextmanager
def deadline(seconds: float):
    """Turn a hang (a blocking open, a runaway conversion, a spinning stream) into a test failure
    (AssertionError: unlike TimeoutError, not an OSError that the code under test would count as a skip)."""
    def expire(signum, frame):
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
