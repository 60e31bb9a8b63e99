"""Re-read a shard set and reconcile it with shards.parquet and manifest.parquet."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import simplejpeg

from pipeline.sharding.clipjob import sample_digest, unpack_labels
from pipeline.sharding.tables import MANIFEST, SHARDS, load_manifest, load_shards


def _read_samples(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def _check_sample(key: str, members: dict[str, bytes], row: dict, deep: bool) -> list[str]:
    problems = []
    if sample_digest(members) != row["sha256"]:
        problems.append(f"{key}: checksum differs from the manifest")
    if sum(len(v) for v in members.values()) != row["bytes"]:
        problems.append(f"{key}: {sum(len(v) for v in members.values())} bytes, manifest says {row['bytes']}")
    try:
        meta = json.loads(members["json"])
        frames = meta["frames"]
        offsets, lengths = frames["offset"], frames["length"]
    except (KeyError, ValueError) as exc:
        return problems + [f"{key}: json member missing or malformed ({exc!r})"]
    if len(offsets) != row["n_frames"] or meta.get("key") != key:
        problems.append(f"{key}: json lists {len(offsets)} frames, manifest says {row['n_frames']}")
    jpgs = members.get("jpgs", b"")
    if offsets and (offsets[-1] + lengths[-1] != len(jpgs) or
                    any(o + n != o2 for o, n, o2 in zip(offsets, lengths, offsets[1:]))):
        problems.append(f"{key}: frame offsets do not tile the jpgs member ({len(jpgs)} bytes)")
    if deep:
        for i, (o, n) in enumerate(zip(offsets, lengths)):
            try:
                img = simplejpeg.decode_jpeg(jpgs[o:o + n])
                if list(img.shape[:2]) != frames["size"][i]:
                    problems.append(f"{key}: frame {i} is {img.shape[:2]}, json says {frames['size'][i]}")
            except ValueError as exc:
                problems.append(f"{key}: frame {i} does not decode ({exc})")
        if "labels" in members:
            try:
                bad = [k for k, v in unpack_labels(members["labels"]).items() if len(v) != len(offsets)]
                if bad:
                    problems.append(f"{key}: label arrays {bad} do not have one entry per frame")
            except Exception as exc:  # any decompression or npz error is a finding, not a crash
                problems.append(f"{key}: labels member does not decode ({exc!r})")
    return problems


def verify(out: str | Path, deep: bool = False) -> list[str]:
    """Every problem found, one line each (empty when the set is consistent)."""
    out = Path(out)
    for table in (MANIFEST, SHARDS):
        if not (out / table).exists():
            return [f"{out / table}: missing (was the run finished or merged?)"]
    shards, manifest = load_shards(out), load_manifest(out)
    rows_by_shard: dict[str, dict[str, dict]] = {}
    for row in manifest:
        rows_by_shard.setdefault(row["shard"], {})[row["key"]] = row
    problems = []
    listed = {s["name"] for s in shards}
    for extra in sorted(p.name for p in out.glob("shard-*.tar") if p.name not in listed):
        problems.append(f"{out / extra}: shard on disk but not in {SHARDS}")
    for orphan in sorted(set(rows_by_shard) - listed):
        problems.append(f"{MANIFEST}: rows point to {orphan}, which is not in {SHARDS}")
    for shard in shards:
        path = out / shard["name"]
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        data = path.read_bytes()
        if len(data) != shard["bytes"]:
            problems.append(f"{path}: {len(data)} bytes, {SHARDS} says {shard['bytes']}")
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            problems.append(f"{path}: sha256 differs from {SHARDS}")
        try:
            samples = _read_samples(path)
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"{path}: unreadable tar ({exc})")
            continue
        expected = rows_by_shard.get(shard["name"], {})
        for key in sorted(set(samples) - set(expected)):
            problems.append(f"{path}: sample {key} not in {MANIFEST}")
        for key in sorted(set(expected) - set(samples)):
            problems.append(f"{path}: sample {key} listed in {MANIFEST} but absent")
        if len(samples) != shard["samples"]:
            problems.append(f"{path}: {len(samples)} samples, {SHARDS} says {shard['samples']}")
        for key in sorted(set(samples) & set(expected)):
            problems.extend(f"{path}: {p}" for p in _check_sample(key, samples[key], expected[key], deep))
    return problems
