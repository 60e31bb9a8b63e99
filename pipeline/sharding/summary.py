"""`handclr inspect`: a shard set's summary from its manifest."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pipeline.errors import HandclrError
from pipeline.sharding.tables import load_manifest, load_shards


def shard_set_summary(out: str | Path, first: int = 5) -> dict:
    """Counts per dataset from the tables; HandclrError when `out` is not a readable shard set."""
    out = Path(out)
    if not out.is_dir():
        raise HandclrError(f"{out}: no such shard-set directory")
    rows, shards = load_manifest(out), load_shards(out)
    per = defaultdict(lambda: {"clips": set(), "samples": 0, "frames": 0, "labelled_frames": 0, "bytes": 0})
    for r in rows:
        d = per[r["dataset"]]
        d["clips"].add((r["sequence"], r["view"]))
        d["samples"] += 1
        d["frames"] += r["n_frames"]
        d["labelled_frames"] += r["labelled_frames"]
        d["bytes"] += r["bytes"]
    datasets = {name: {**d, "clips": len(d["clips"])} for name, d in sorted(per.items())}
    return {"shards": len(shards), "shard_bytes": sum(s["bytes"] for s in shards), "datasets": datasets,
            "samples": len(rows), "frames": sum(r["n_frames"] for r in rows),
            "first_keys": [r["key"] for r in rows[:first]]}


def format_summary(summary: dict) -> str:
    lines = [f"{'dataset':<10} {'clips':>7} {'samples':>8} {'frames':>9} {'labelled':>9} {'MiB':>9}"]
    for name, d in summary["datasets"].items():
        lines.append(f"{name:<10} {d['clips']:>7} {d['samples']:>8} {d['frames']:>9} {d['labelled_frames']:>9} "
                     f"{d['bytes'] / 2**20:>9.2f}")
    lines.append(f"{summary['shards']} shards, {summary['samples']} samples, {summary['frames']} frames, "
                 f"{summary['shard_bytes'] / 2**20:.2f} MiB")
    lines.append("first keys: " + ", ".join(summary["first_keys"]))
    return "\n".join(lines)
