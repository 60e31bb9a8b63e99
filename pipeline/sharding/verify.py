"""Re-read a shard set and reconcile it with shards.parquet, manifest.parquet and summary.json."""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import simplejpeg

from pipeline.errors import HandclrError
from pipeline.sharding.clipjob import sample_digest, unpack_labels
from pipeline.sharding.tables import MANIFEST, SHARDS, load_manifest, load_shards

SUMMARY = "summary.json"
# Manifest columns that repeat a field of the sample's json member (same name in both).
META_COLUMNS = ("key", "dataset", "sequence", "view", "chunk", "fps", "side", "aug_seed", "source_root")


def _read_samples(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _meta_problems(key: str, meta: dict, row: dict) -> list[str]:
    """The manifest row must say what the sample's own metadata says."""
    frames = meta["frames"]
    found = {c: meta.get(c) for c in META_COLUMNS}
    found["n_frames"] = len(frames["offset"])
    found["labelled_frames"] = sum(bool(v) for v in frames.get("labelled", []))
    return [f"{key}: manifest {c}={row[c]!r}, sample json says {v!r}" for c, v in found.items() if not _same(v, row[c])]


def _tiling_problems(key: str, frames: dict, jpgs: bytes) -> list[str]:
    offsets, lengths = frames["offset"], frames["length"]
    if len(offsets) != len(lengths) or (offsets and (offsets[0] != 0 or offsets[-1] + lengths[-1] != len(jpgs) or any(
            o + n != o2 for o, n, o2 in zip(offsets, lengths, offsets[1:], strict=False)))):
        return [f"{key}: frame offsets do not tile the jpgs member ({len(jpgs)} bytes)"]
    return []


def _label_problems(key: str, meta: dict, labels: dict) -> list[str]:
    """Label arrays have one entry per frame, and MANO poses come with the convention they were made in
    (`mano_flat_hand_mean`: the mean pose is added or not, the same numbers are different hands)."""
    n = len(meta["frames"]["offset"])
    bad = [k for k, v in labels.items() if v.shape[:1] != (n,)]
    problems = [f"{key}: label arrays {bad} do not have one entry per frame"] if bad else []
    pose = labels.get("mano_pose")
    posed = pose is not None and pose.dtype.kind == "f" and not np.isnan(pose).all()
    if posed and not isinstance(meta.get("mano_flat_hand_mean"), bool):
        problems.append(f"{key}: MANO poses without a recorded mano_flat_hand_mean "
                        f"({meta.get('mano_flat_hand_mean')!r})")
    return problems


def _decode_problems(key: str, meta: dict, members: dict[str, bytes]) -> list[str]:
    """Deep check: every frame decodes at its recorded size, the labels are consistent (_label_problems)."""
    frames = meta["frames"]
    problems, jpgs, sizes = [], members.get("jpgs", b""), frames.get("size") or []
    for i, (o, n) in enumerate(zip(frames["offset"], frames["length"], strict=True)):
        size = sizes[i] if i < len(sizes) else None
        try:
            img = simplejpeg.decode_jpeg(jpgs[o:o + n])
            if list(img.shape[:2]) != size:
                problems.append(f"{key}: frame {i} is {list(img.shape[:2])}, json says {size}")
        except ValueError as exc:
            problems.append(f"{key}: frame {i} does not decode ({exc})")
    if "labels" in members:
        try:
            labels = unpack_labels(members["labels"])
        except Exception as exc:  # any decompression or npz error is a finding, not a crash
            return problems + [f"{key}: labels member does not decode ({exc!r})"]
        problems += _label_problems(key, meta, labels)
    return problems


def _check_sample(key: str, members: dict[str, bytes], row: dict, deep: bool) -> list[str]:
    problems = []
    if sample_digest(members) != row["sha256"]:
        problems.append(f"{key}: checksum differs from the manifest")
    if sum(len(v) for v in members.values()) != row["bytes"]:
        problems.append(f"{key}: {sum(len(v) for v in members.values())} bytes, manifest says {row['bytes']}")
    try:
        meta = json.loads(members["json"])
        tiling = _tiling_problems(key, meta["frames"], members.get("jpgs", b""))
        problems += _meta_problems(key, meta, row) + tiling
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return problems + [f"{key}: json member missing or malformed ({exc!r})"]
    if deep and not tiling:
        problems += _decode_problems(key, meta, members)
    return problems


def _duplicates(values: list[str]) -> list[str]:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def _table_problems(out: Path, shards: list[dict], manifest: list[dict]) -> list[str]:
    """Rows listed twice (the stream would read them twice per pass) and rows and files that do not match."""
    problems = [f"{MANIFEST}: key {k} listed more than once" for k in _duplicates([r["key"] for r in manifest])]
    problems += [f"{SHARDS}: shard {n} listed more than once" for n in _duplicates([s["name"] for s in shards])]
    listed = {s["name"] for s in shards}
    for extra in sorted(p.name for p in out.glob("shard-*.tar") if p.name not in listed):
        problems.append(f"{out / extra}: shard on disk but not in {SHARDS}")
    for orphan in sorted({r["shard"] for r in manifest} - listed):
        problems.append(f"{MANIFEST}: rows point to {orphan}, which is not in {SHARDS}")
    frames = Counter()
    for r in manifest:
        frames[r["shard"]] += r["n_frames"]
    for s in shards:
        if s["frames"] != frames[s["name"]]:
            problems.append(f"{SHARDS}: {s['name']} has {s['frames']} frames, {MANIFEST} rows sum to "
                            f"{frames[s['name']]}")
    return problems


def _summary_problems(out: Path, shards: list[dict], manifest: list[dict]) -> list[str]:
    """summary.json must count what the tables hold and balance frames and clips in against out + skips."""
    try:
        summary = json.loads((out / SUMMARY).read_text())
        skips = summary["skips"]
        want = {"samples": len(manifest), "shards": len(shards),
                "frames_written": sum(r["n_frames"] for r in manifest), "bytes": sum(s["bytes"] for s in shards),
                "datasets": sorted({r["dataset"] for r in manifest}),
                "frames_in": summary["frames_written"] + sum(skips["frames"].values()),
                "clips_in": summary["clips_written"] + sum(skips["clips"].values())}
        return [f"{out / SUMMARY}: {k} is {summary.get(k)!r}, expected {v!r}" for k, v in want.items()
                if summary.get(k) != v]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{out / SUMMARY}: missing or malformed ({exc!r})"]


def _shard_problems(out: Path, shard: dict, expected: dict[str, dict], deep: bool) -> list[str]:
    path = out / shard["name"]
    if not path.is_file():
        return [f"{path}: missing"]
    problems = []
    data = path.read_bytes()
    if len(data) != shard["bytes"]:
        problems.append(f"{path}: {len(data)} bytes, {SHARDS} says {shard['bytes']}")
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        problems.append(f"{path}: sha256 differs from {SHARDS}")
    try:
        samples = _read_samples(path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return problems + [f"{path}: unreadable tar ({exc})"]
    problems += [f"{path}: sample {k} not in {MANIFEST}" for k in sorted(set(samples) - set(expected))]
    problems += [f"{path}: sample {k} listed in {MANIFEST} but absent" for k in sorted(set(expected) - set(samples))]
    if len(samples) != shard["samples"]:
        problems.append(f"{path}: {len(samples)} samples, {SHARDS} says {shard['samples']}")
    for key in sorted(set(samples) & set(expected)):
        problems.extend(f"{path}: {p}" for p in _check_sample(key, samples[key], expected[key], deep))
    return problems


def verify(out: str | Path, deep: bool = False) -> list[str]:
    """Every problem found, one line each (empty when the set is consistent)."""
    out = Path(out)
    if not out.is_dir():
        return [f"{out}: no such shard-set directory"]
    try:
        shards, manifest = load_shards(out), load_manifest(out)
    except HandclrError as exc:
        return [str(exc)]
    problems = _table_problems(out, shards, manifest) + _summary_problems(out, shards, manifest)
    rows_by_shard: dict[str, dict[str, dict]] = {}
    for row in manifest:
        rows_by_shard.setdefault(row["shard"], {})[row["key"]] = row
    first = {}
    for shard in shards:
        first.setdefault(shard["name"], shard)
    for name, shard in first.items():
        problems += _shard_problems(out, shard, rows_by_shard.get(name, {}), deep)
    return problems
