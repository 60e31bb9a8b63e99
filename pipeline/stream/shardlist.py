"""Shard URLs for a dataset stream, and reading a shard's samples through webdataset's openers.

A local shard-set directory is resolved through its manifest (only shards that hold the dataset, with item
counts for the default epoch length). Anything else is expanded like webdataset does (`::` lists, brace
ranges), plus globs for local paths. URLs with a scheme go to `webdataset.gopen` (`pipe:` runs a command,
http(s)), except s3://, gs://, az:// ..., which fsspec opens (`gopen` below).

Reading never raises for a bad shard: unreachable, truncated, failing (a `pipe:` command's exit status, on read
or on close) and, with `read_timeout`, stalled shards are counted as `unreadable_shard`; a repeated member name
drops its sample only (`duplicate_member`).
"""

from __future__ import annotations

import glob
import io
import os
import queue
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.parquet as pq
import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from pipeline.errors import StreamError
from pipeline.sharding.tables import MANIFEST, SHARDS
from pipeline.stream.config import DatasetSpec

FSSPEC_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "memory")
CHUNK = 1 << 20  # bytes per read of a timed source
PREFETCH_CHUNKS = 2  # chunks a timed source reads ahead
Skip = Callable[[str, str], None]  # (reason, message): StreamStats.skip


def gopen(url: str):
    """A readable binary stream for `url`: fsspec for object stores (without touching webdataset's global scheme
    table), webdataset's own openers for local paths, `pipe:` and http(s)."""
    if urlparse(url).scheme in FSSPEC_SCHEMES:
        import fsspec

        return fsspec.open(url, "rb").open()
    return wds.gopen(url, "rb")


@dataclass(frozen=True)
class ShardList:
    urls: tuple[str, ...]
    samples: int | None  # samples of this dataset in these shards, when a manifest says so
    frames: int | None


def _is_local(url: str) -> bool:
    return urlparse(url).scheme in ("", "file") and not url.startswith("pipe:")


def _from_directory(path: str, select: str, keep: Callable[[str], bool] | None) -> ShardList:
    if not os.path.exists(os.path.join(path, MANIFEST)) or not os.path.exists(os.path.join(path, SHARDS)):
        raise StreamError(f"{path}: a shard-set directory needs {MANIFEST} and {SHARDS} (is it a handclr shard set?)")
    rows = pq.read_table(os.path.join(path, MANIFEST), columns=["dataset", "sequence", "shard", "n_frames"]).to_pylist()
    mine = [r for r in rows if r["dataset"] == select]
    if not mine:
        found = sorted({r["dataset"] for r in rows})
        raise StreamError(f"{path}: no samples of dataset {select!r} in the manifest (it has {found})")
    if keep is not None:
        mine = [r for r in mine if keep(r["sequence"])]
        if not mine:
            raise StreamError(f"{path}: no sequence of dataset {select!r} falls in the configured split")
    order = [r["name"] for r in pq.read_table(os.path.join(path, SHARDS), columns=["name"]).to_pylist()]
    held = {r["shard"] for r in mine}
    urls = tuple(os.path.join(path, name) for name in order if name in held)
    return ShardList(urls, len(mine), sum(r["n_frames"] for r in mine))


def resolve(spec: DatasetSpec, keep: Callable[[str], bool] | None = None) -> ShardList:
    """The shard URLs of one dataset stream, in a rank-independent order. `keep(sequence)` restricts a shard-set
    directory to the samples of a split (shards and counts); URLs are filtered as they are read."""
    entries = [spec.shards] if isinstance(spec.shards, str) else list(spec.shards)
    if len(entries) == 1 and _is_local(entries[0]) and os.path.isdir(entries[0]):
        return _from_directory(entries[0], spec.select, keep)
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


def read_shard(url: str, skip: Skip, read_timeout: float = 0.0) -> Iterator[dict]:
    """Samples of one shard (webdataset's tar reader, grouped by key). A truncated, unreachable, failing or (with
    `read_timeout` > 0) stalled shard ends early and is counted once as `unreadable_shard`: the samples read so
    far stand. A shard left before its end (the epoch is over) is closed without counting."""
    try:
        stream = open_shard(url, read_timeout)
    except Exception as exc:  # an unreachable URL is a bad shard, not a crash of the whole run
        skip("unreadable_shard", f"{url}: {exc}")
        return
    ended, error = False, None
    try:
        yield from group_members(tar_file_iterator(stream), url, skip)
        ended = True
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        ended, error = True, exc
    finally:
        closing = close_shard(stream, abandon=not ended)
    if error is not None or closing is not None:
        skip("unreadable_shard", f"{url}: {error if error is not None else closing}")


def open_shard(url: str, read_timeout: float = 0.0):
    """webdataset's opener; with a read timeout, the source is read ahead by a thread (TimedSource)."""
    if read_timeout > 0:
        return io.BufferedReader(TimedSource(url, read_timeout), CHUNK)
    return gopen(url)


def close_shard(stream, abandon: bool) -> Exception | None:
    """Close a shard stream and return, not raise, what a failing source reports on close (a `pipe:` command's
    exit status). An abandoned stream's command is killed first, and its close errors are moot."""
    if abandon:
        _kill(stream)
    try:
        stream.close()
    except Exception as exc:
        return None if abandon else exc
    return None


def _kill(stream) -> None:
    """Stop a `pipe:` command (webdataset's Pipe) now: closing one that stalls would wait for it."""
    proc = getattr(stream, "proc", None)
    if proc is not None and proc.poll() is None:
        proc.kill()


def group_members(files: Iterable[dict], url: str, skip: Skip) -> Iterator[dict]:
    """Members grouped into samples by key, as webdataset's group_by_keys does, except that a member name
    repeated within a sample drops that sample (counted as `duplicate_member`) instead of the rest of the shard."""
    sample, dropped = None, None
    for f in files:
        key, suffix = base_plus_ext(f["fname"])
        if key is None or key == dropped:
            continue
        if sample is not None and key != sample["__key__"]:
            yield sample
            sample = None
        if sample is None:
            sample, dropped = {"__key__": key, "__url__": url}, None
        suffix = suffix.lower()
        if suffix in sample:
            skip("duplicate_member", f"{url}: sample {key}: member {f['fname']} appears twice; sample dropped")
            sample, dropped = None, key
            continue
        sample[suffix] = f["data"]
    if sample is not None:
        yield sample


class TimedSource(io.RawIOBase):
    """A shard source read ahead by a daemon thread, so that waiting more than `timeout` seconds for data raises
    TimeoutError instead of blocking the worker for ever (a stalled `pipe:` command, a hung network read). The
    thread opens, reads and closes the source: open and close errors reach the reader like read errors. A
    stalled read itself cannot be interrupted: its thread ends when the source does, the worker goes on."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__()
        self.url, self.timeout = url, timeout
        self._chunks: queue.Queue = queue.Queue(PREFETCH_CHUNKS)
        self._stop = threading.Event()
        self._source = None
        self._rest = memoryview(b"")
        self._ended = False
        threading.Thread(target=self._pump, name=f"read {url}", daemon=True).start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._rest and not self._ended:
            self._rest = memoryview(self._take())
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            _kill(self._source)
        super().close()

    def _take(self) -> bytes:
        try:
            item = self._chunks.get(timeout=self.timeout)
        except queue.Empty:
            self._ended = True
            raise TimeoutError(f"no data for {self.timeout} s (read_timeout)") from None
        if isinstance(item, Exception):
            self._ended = True
            raise OSError(f"{type(item).__name__}: {item}") from item
        self._ended = not item
        return item

    def _pump(self) -> None:
        """Chunks, then b"" at the end or the exception; the source is closed before the end is handed over."""
        try:
            self._source = gopen(self.url)
            while not self._stop.is_set() and (data := self._source.read(CHUNK)):
                if not self._put(data):
                    return
            if not self._stop.is_set():
                self._source.close()
                self._put(b"")
        except Exception as exc:
            self._put(exc)
        finally:
            if self._source is not None:
                close_shard(self._source, abandon=True)

    def _put(self, item) -> bool:
        """Hand over one item; False once the reader has closed (nobody will take it)."""
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
