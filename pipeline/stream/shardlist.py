"""Shard URLs for a dataset stream, and reading a shard's samples through webdataset's openers.

A local shard-set directory is resolved through its manifest (only shards that hold the dataset, with item
counts for the default epoch length). Anything else is expanded like webdataset does (`::` lists, brace
ranges), plus globs for local paths. URLs with a scheme go to `webdataset.gopen`: `pipe:` runs a command,
and s3://, gs://, az:// ... are served by fsspec (registered below in webdataset's scheme table).
"""

from __future__ import annotations

import glob
import os
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import urlparse

import pyarrow.parquet as pq
import webdataset as wds
from webdataset.gopen import gopen_schemes
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_iterator

from pipeline.sharding.tables import MANIFEST, SHARDS
from pipeline.stream.config import DatasetSpec, StreamError

FSSPEC_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "memory")


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    import fsspec

    return fsspec.open(url, mode).open()


for _scheme in FSSPEC_SCHEMES:
    gopen_schemes[_scheme] = _gopen_fsspec


@dataclass(frozen=True)
class ShardList:
    urls: tuple[str, ...]
    samples: int | None  # samples of this dataset in these shards, when a manifest says so
    frames: int | None


def _is_local(url: str) -> bool:
    return urlparse(url).scheme in ("", "file") and not url.startswith("pipe:")


def _from_directory(path: str, select: str) -> ShardList:
    if not os.path.exists(os.path.join(path, MANIFEST)) or not os.path.exists(os.path.join(path, SHARDS)):
        raise StreamError(f"{path}: a shard-set directory needs {MANIFEST} and {SHARDS} (is it a handclr shard set?)")
    rows = pq.read_table(os.path.join(path, MANIFEST), columns=["dataset", "shard", "n_frames"]).to_pylist()
    mine = [r for r in rows if r["dataset"] == select]
    if not mine:
        found = sorted({r["dataset"] for r in rows})
        raise StreamError(f"{path}: no samples of dataset {select!r} in the manifest (it has {found})")
    order = [r["name"] for r in pq.read_table(os.path.join(path, SHARDS), columns=["name"]).to_pylist()]
    held = {r["shard"] for r in mine}
    urls = tuple(os.path.join(path, name) for name in order if name in held)
    return ShardList(urls, len(mine), sum(r["n_frames"] for r in mine))


def resolve(spec: DatasetSpec) -> ShardList:
    """The shard URLs of one dataset stream, in a rank-independent order."""
    entries = [spec.shards] if isinstance(spec.shards, str) else list(spec.shards)
    if len(entries) == 1 and _is_local(entries[0]) and os.path.isdir(entries[0]):
        return _from_directory(entries[0], spec.select)
    urls: list[str] = []
    for entry in entries:
        for url in expand_urls(entry):  # webdataset's own expansion: `::` lists, $WDS_ variables, braces
            if _is_local(url) and glob.has_magic(url):
                matched = sorted(glob.glob(url))
                if not matched:
                    raise StreamError(f"dataset {spec.name}: {url} matches no file")
                urls.extend(matched)
            elif _is_local(url) and not os.path.exists(url):
                raise StreamError(f"dataset {spec.name}: shard {url} does not exist")
            else:
                urls.append(url)
    if not urls:
        raise StreamError(f"dataset {spec.name}: no shards in {spec.shards!r}")
    return ShardList(tuple(urls), None, None)


def read_shard(url: str, on_error: Callable[[str, Exception], None]) -> Iterator[dict]:
    """Samples of one shard (webdataset's tar reader and key grouping). A truncated or unreadable tar ends
    the shard early: `on_error(url, exc)` is told once and the samples read so far stand."""
    try:
        stream = wds.gopen(url, "rb")
    except Exception as exc:  # an unreachable URL is a bad shard, not a crash of the whole run
        on_error(url, exc)
        return
    try:
        files = ({**f, "__url__": url} for f in tar_file_iterator(stream))
        yield from group_by_keys(files)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        on_error(url, exc)
    finally:
        stream.close()
