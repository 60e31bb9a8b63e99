"""Parquet tables of a shard set: manifest.parquet (one row per sample) and shards.parquet (one per shard)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_write
from pipeline.errors import HandclrError, SkipError
from pipeline.sources.files import TABLE, check_file

MANIFEST = "manifest.parquet"
SHARDS = "shards.parquet"

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("dataset", pa.string()), ("sequence", pa.string()), ("view", pa.int32()),
    ("chunk", pa.int32()), ("n_frames", pa.int32()), ("labelled_frames", pa.int32()), ("fps", pa.float64()),
    ("side", pa.string()), ("shard", pa.string()), ("bytes", pa.int64()), ("sha256", pa.string()),
    ("aug_seed", pa.int64()), ("source_root", pa.string()),
])
SHARDS_SCHEMA = pa.schema([
    ("name", pa.string()), ("samples", pa.int64()), ("frames", pa.int64()), ("bytes", pa.int64()),
    ("sha256", pa.string()),
])


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist([{f.name: r[f.name] for f in schema} for r in rows], schema=schema)
    atomic_write(path, lambda f: pq.write_table(table, f))


def write_tables(out: Path, rows: list[dict], shards: list[dict]) -> None:
    _write(out / MANIFEST, rows, MANIFEST_SCHEMA)
    _write(out / SHARDS, shards, SHARDS_SCHEMA)


def read_rows(path: Path, schema: pa.Schema) -> list[dict]:
    """Rows of one table; HandclrError naming the file when it is missing, not a file, not Parquet or
    lacks a column of `schema`."""
    try:
        check_file(path, TABLE)
        table = pq.read_table(path)
    except SkipError as exc:
        hint = " (is this a finished or merged shard set?)" if exc.reason.endswith("_missing") else ""
        raise HandclrError(f"{exc}{hint}") from exc
    except (OSError, pa.ArrowException) as exc:
        raise HandclrError(f"{path}: unreadable Parquet ({exc})") from exc
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise HandclrError(f"{path}: lacks column(s) {missing}")
    return table.to_pylist()


def load_manifest(out: Path) -> list[dict]:
    return read_rows(Path(out) / MANIFEST, MANIFEST_SCHEMA)


def load_shards(out: Path) -> list[dict]:
    return read_rows(Path(out) / SHARDS, SHARDS_SCHEMA)
