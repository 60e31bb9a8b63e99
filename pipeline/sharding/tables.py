"""Parquet tables of a shard set: manifest.parquet (one row per sample) and shards.parquet (one per shard)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_tables(out: Path, rows: list[dict], shards: list[dict]) -> None:
    _write(out / MANIFEST, rows, MANIFEST_SCHEMA)
    _write(out / SHARDS, shards, SHARDS_SCHEMA)


def read_table(index_dir: Path) -> dict[str, list[dict]]:
    """Manifest rows and shard rows recorded in a (part) directory's sidecars, in shard order."""
    rows, shards = [], []
    for side in sorted(index_dir.glob("shard-*.json")):
        record = json.loads(side.read_text())
        rows.extend(record["rows"])
        shards.append(record["shard"])
    return {"rows": rows, "shards": shards}


def load_manifest(out: Path) -> list[dict]:
    return pq.read_table(out / MANIFEST).to_pylist()


def load_shards(out: Path) -> list[dict]:
    return pq.read_table(out / SHARDS).to_pylist()
