"""Atomic, resumable shard writing with webdataset's TarWriter.

Each shard is written as `shard-NNNNNN.tar.tmp`, fsynced and renamed; then a sidecar
`.index/shard-NNNNNN.json` records its manifest rows, where the plan continues (clip, sample) and the
cumulative counts of completed clips. A shard is complete when its sidecar exists and its tar has the
recorded size; a re-run keeps the leading complete shards and continues from the last sidecar. The output
directory is locked (`exclusive_lock`) for as long as a sharder or merge writes into it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from pipeline.atomic import atomic_write_text
from pipeline.errors import HandclrError

log = logging.getLogger("handclr")
INDEX_DIR = ".index"
LOCK_FILE = ".lock"
_NUMBERED = re.compile(r"shard-([0-9]{6})\.")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


class _HashingFile:
    """File wrapper that hashes and counts what goes through it (so the shard is read once: while written)."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


@contextmanager
def exclusive_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on DIR/.lock for the block. Two sharders on one output (a duplicated array
    task, a requeue overlap) would otherwise delete each other's shards as stale; the second now fails at
    once. The kernel releases the lock when the process dies, so a crash never leaves it held."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 200).decode(errors="replace").strip()
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise HandclrError(f"{directory} is being written by another handclr shard or merge ({path} is "
                               f"locked by {holder or 'another process'}); wait for it or use another --out") \
                from exc
        raise HandclrError(f"{directory}: cannot lock {path} ({exc.strerror}); the output directory must be on "
                           f"a filesystem with flock support") from exc
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)


def read_sidecar(path: Path) -> dict | None:
    """A shard's sidecar record; None when it is missing, truncated or incomplete (its shard is redone)."""
    try:
        record = json.loads(path.read_text())
        shard = record["shard"]
        valid = (isinstance(record["rows"], list) and len(record["rows"]) == shard["samples"]
                 and all(k in shard for k in ("name", "frames", "bytes", "sha256"))
                 and len(record["next"]) == 2 and isinstance(record["stats"], dict) and "plan" in record)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if valid else None


@dataclass
class ResumeState:
    next_shard: int = 0
    next_clip: int = 0
    skip_samples: int = 0  # samples of `next_clip` already written
    rows: list[dict] = field(default_factory=list)
    shards: list[dict] = field(default_factory=list)
    stats: dict | None = None


def sidecar_records(out: Path, plan_id: str) -> Iterator[dict]:
    """Records of the leading intact sidecars, in shard order. A damaged sidecar ends them (its shard is
    rebuilt on resume), it never stops the run; a sidecar of another plan is an error."""
    for number in itertools.count():
        side = out / INDEX_DIR / f"shard-{number:06d}.json"
        if not side.exists():
            return
        record = read_sidecar(side)
        if record is None:
            log.warning("%s: damaged sidecar, shards from %d on are rebuilt", side, number)
            return
        if record["plan"] != plan_id:
            raise HandclrError(f"{out} holds shards of a different recipe, root or part ({side}); "
                               f"use another --out or remove it")
        yield record


def complete_records(out: Path, plan_id: str) -> list[dict]:
    """Sidecar records of the leading complete shards: sidecar intact and tar of the recorded size."""
    records = []
    for record in sidecar_records(out, plan_id):
        tar = out / shard_name(len(records))
        if not tar.exists() or tar.stat().st_size != record["shard"]["bytes"]:
            break
        records.append(record)
    return records


def load_resume_state(out: Path, plan_id: str) -> ResumeState:
    """Leading complete shards of a previous run of the same plan; everything after them is removed."""
    state = ResumeState()
    for record in complete_records(out, plan_id):
        state.rows.extend(record["rows"])
        state.shards.append(record["shard"])
        state.next_clip, state.skip_samples = record["next"]
        state.stats = record["stats"]
        state.next_shard += 1
    for stale in list(out.glob("shard-*.tar*")) + list((out / INDEX_DIR).glob("shard-*.json*")):
        number = _NUMBERED.match(stale.name)
        if number and (int(number.group(1)) >= state.next_shard or stale.name.endswith(".tmp")):
            stale.unlink()
    return state


class ShardSink:
    """Writes samples into size-bounded shards; rotation happens between samples."""

    def __init__(self, out: Path, plan_id: str, shard_bytes: int, first_shard: int) -> None:
        self.out, self.plan_id, self.shard_bytes = out, plan_id, shard_bytes
        self.index = first_shard
        (out / INDEX_DIR).mkdir(parents=True, exist_ok=True)
        self._file: _HashingFile | None = None
        self._tar: wds.TarWriter | None = None
        self._rows: list[dict] = []
        self._bytes = 0

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def add(self, key: str, members: dict[str, bytes], row: dict) -> None:
        if self._tar is None:
            self._file = _HashingFile(self.out / (shard_name(self.index) + ".tmp"))
            # Fixed mtime: identical input gives byte-identical shards (and checksums) on every run.
            self._tar = wds.TarWriter(self._file, encoder=False, mtime=0.0)
        try:
            self._tar.write({"__key__": key, **members})
        except OSError as exc:
            self.abort()
            raise HandclrError(f"writing {self.out / shard_name(self.index)}: {exc.strerror or exc} "
                               f"(partial shard removed; re-run to resume)") from exc
        self._rows.append({**row, "shard": shard_name(self.index)})
        self._bytes += row["bytes"]

    def finish(self, next_position: tuple[int, int], stats: dict) -> dict | None:
        """Close the open shard (if any), rename it into place and write its sidecar."""
        if self._tar is None:
            return None
        name = shard_name(self.index)
        try:
            self._tar.close()
            self._file.close()
            os.replace(self.out / (name + ".tmp"), self.out / name)
            shard = {"name": name, "samples": len(self._rows), "frames": sum(r["n_frames"] for r in self._rows),
                     "bytes": self._file.size, "sha256": self._file.sha.hexdigest()}
            record = {"plan": self.plan_id, "shard": shard, "rows": self._rows, "next": list(next_position),
                      "stats": stats}
            atomic_write_text(self.out / INDEX_DIR / f"shard-{self.index:06d}.json", json.dumps(record))
        except OSError as exc:
            self.abort()
            raise HandclrError(f"finishing {self.out / name}: {exc.strerror or exc} (re-run to resume)") from exc
        self.index += 1
        self._tar, self._file, self._rows, self._bytes = None, None, [], 0
        return record

    def abort(self) -> None:
        """Drop the open shard: the partial file never reaches a final name."""
        if self._tar is not None:
            # Mark the tar stream closed so its finaliser does not flush into the discarded file.
            self._tar.tarstream.closed = True
            getattr(self._tar.tarstream, "fileobj", self._tar).closed = True
        if self._file is not None:
            try:
                self._file.f.close()
            except OSError:
                pass
            (self.out / (shard_name(self.index) + ".tmp")).unlink(missing_ok=True)
        self._tar, self._file, self._rows, self._bytes = None, None, [], 0
