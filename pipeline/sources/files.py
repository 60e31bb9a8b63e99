"""The one guarded path by which readers and the sharder touch dataset files.

A path is opened only when `os.stat` (following symlinks) says it is a regular file within the size bound
of its kind: a FIFO or device would block the reader forever, a directory or a symlink loop would end in a
traceback, and a file of unbounded size would exhaust memory. Per-item files (frames, per-frame
annotations, videos) fail with `SkipError` whose reason says what happened (`image_missing`,
`annotation_permission_denied`, `image_not_a_file`, `video_symlink_loop`, `image_too_large`, ...);
layout-level files (meta.json, train.txt, list and table files, FreiHAND JSON) fail with `LayoutError`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import LayoutError, SkipError

MiB = 1 << 20


@dataclass(frozen=True)
class FileKind:
    """What a file is for: `name` prefixes the skip reasons, `max_bytes` bounds what may be read."""

    name: str
    max_bytes: int
    allow_empty: bool = False


IMAGE = FileKind("image", 64 * MiB)  # a 50-megapixel JPEG is ~20 MiB
ANNOTATION = FileKind("annotation", 16 * MiB)  # per-frame JSON, pickle or VOC XML: kilobytes in the releases
VIDEO = FileKind("video", 64 * 1024 * MiB)  # only checked here; decord reads it
LIST = FileKind("list", 256 * MiB, allow_empty=True)  # train.txt, ImageSets lists, the 100DOH video table
TABLE = FileKind("table", 8 * 1024 * MiB, allow_empty=True)  # streamed, never read whole: boxes.csv, Parquet
LAYOUT_JSON = FileKind("layout_json", 512 * MiB)  # meta.json, FreiHAND training_*.json, 100DOH releases
VERTS_JSON = FileKind("verts_json", 8 * 1024 * MiB)  # FreiHAND *_verts.json (~1.5 GB for training), read in chunks

_ERRNO_REASONS = {errno.ENOENT: ("missing", "missing"), errno.ENOTDIR: ("missing", "missing (a parent is a file)"),
                  errno.EACCES: ("permission_denied", "permission denied"),
                  errno.EPERM: ("permission_denied", "permission denied"),
                  errno.ELOOP: ("symlink_loop", "symlink loop (too many levels of symbolic links)")}


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _os_error(path: Path, kind: FileKind, exc: OSError) -> SkipError:
    suffix, text = _ERRNO_REASONS.get(exc.errno, ("unreadable", f"cannot read ({exc.strerror or exc})"))
    return SkipError(f"{kind.name}_{suffix}", f"{path}: {text}")


def _check_stat(path: Path, kind: FileKind, st: os.stat_result) -> int:
    if not stat.S_ISREG(st.st_mode):
        raise SkipError(f"{kind.name}_not_a_file", f"{path}: is {_kind_of(st.st_mode)}, not a regular file")
    if st.st_size > kind.max_bytes:
        raise SkipError(f"{kind.name}_too_large", f"{path}: {st.st_size} bytes, more than the {kind.max_bytes} "
                                                  f"allowed for a {kind.name} file")
    if st.st_size == 0 and not kind.allow_empty:
        raise SkipError(f"{kind.name}_empty", f"{path}: empty (0 bytes)")
    return st.st_size


def check_file(path: str | os.PathLike, kind: FileKind) -> int:
    """Size of `path` if it is a regular, readable file within the bound of `kind`; SkipError otherwise."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_error(path, kind, exc) from exc
    size = _check_stat(path, kind, st)
    if not os.access(path, os.R_OK):
        raise SkipError(f"{kind.name}_permission_denied", f"{path}: permission denied")
    return size


def open_file(path: str | os.PathLike, kind: FileKind) -> BinaryIO:
    """Open a checked file for binary reading. Checked again on the descriptor: the path may have changed
    between stat and open, and O_NONBLOCK keeps even that race from blocking on a FIFO."""
    path = Path(path)
    check_file(path, kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _os_error(path, kind, exc) from exc
    try:
        _check_stat(path, kind, os.fstat(fd))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, kind: FileKind) -> bytes:
    """All bytes of a checked file, never more than the bound of `kind`."""
    with open_file(path, kind) as f:
        try:
            data = f.read(kind.max_bytes + 1)
        except OSError as exc:
            raise _os_error(Path(path), kind, exc) from exc
    if len(data) > kind.max_bytes:
        raise SkipError(f"{kind.name}_too_large", f"{path}: grew beyond {kind.max_bytes} bytes while read")
    return data


def read_text(path: str | os.PathLike, kind: FileKind) -> str:
    """UTF-8 text of a checked file, a leading byte-order mark removed."""
    data = read_bytes(path, kind)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipError(f"{kind.name}_malformed", f"{path}: not UTF-8 text ({exc.reason} at byte "
                                                  f"{exc.start})") from exc


def open_text(path: str | os.PathLike, kind: FileKind) -> io.TextIOWrapper:
    """A checked file as UTF-8 text for streaming (csv), byte-order mark removed, newlines left to csv."""
    return io.TextIOWrapper(open_file(path, kind), encoding="utf-8-sig", newline="")


def layout_bytes(path: str | os.PathLike, kind: FileKind, dataset: str) -> bytes:
    """`read_bytes` for a file the whole layout depends on: any problem is a LayoutError."""
    try:
        return read_bytes(path, kind)
    except SkipError as exc:
        raise LayoutError(f"{dataset}: {exc}") from exc


def layout_text(path: str | os.PathLike, kind: FileKind, dataset: str) -> str:
    """`read_text` for a file the whole layout depends on: any problem is a LayoutError."""
    try:
        return read_text(path, kind)
    except SkipError as exc:
        raise LayoutError(f"{dataset}: {exc}") from exc


def entry_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be used as a layout entry (file or directory): None when it exists."""
    try:
        os.stat(path)
    except OSError as exc:
        return _ERRNO_REASONS.get(exc.errno, ("", f"cannot read ({exc.strerror or exc})"))[1]
    return None


def entry_exists(path: str | os.PathLike) -> bool:
    """True when something is at `path`, even a symlink loop or an unreadable entry (so that reading it
    reports the problem instead of treating the file as absent)."""
    return os.path.lexists(path)
