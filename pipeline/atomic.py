"""Atomic file writes: a reader sees either the old file or the complete new one, never a half-written one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import HandclrError


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(f)` into a temporary file beside `path`, fsync, rename over `path`. A failure (a full disk) removes
    the temporary file and is a HandclrError naming `path`; the previous version, if any, is unchanged."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HandclrError(f"writing {path}: {exc.strerror or exc} (the previous version, if any, is "
                           f"unchanged; re-run once fixed)") from exc


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
