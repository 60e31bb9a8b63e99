"""Sharding orchestration: list clips, take this part's share, process clips in parallel, write shards in
plan order (so the output does not depend on the worker count), resume, merge parts, summarise."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from pipeline.errors import HandclrError, SkipCounter
from pipeline.sharding.clipjob import ClipResult, process_clip
from pipeline.sharding.recipe import Recipe
from pipeline.sharding.tables import read_table, write_tables
from pipeline.sharding.writer import INDEX_DIR, ShardSink, atomic_write_text, load_resume_state, shard_name
from pipeline.sources.base import Clip, Source

log = logging.getLogger("handclr")
SUMMARY = "summary.json"


@dataclass
class Stats:
    """Counts of completed clips. Invariants: clips_in = clips_written + clip skips and
    frames_in = frames_written + frame skips (listing skips are reported separately)."""

    clips_in: int = 0
    frames_in: int = 0
    clips_written: int = 0
    counter: SkipCounter = field(default_factory=SkipCounter)

    def to_dict(self) -> dict:
        return {"clips_in": self.clips_in, "frames_in": self.frames_in, "clips_written": self.clips_written,
                "skips": self.counter.to_dict()}

    @classmethod
    def from_dict(cls, data: dict, strict: bool) -> "Stats":
        return cls(data["clips_in"], data["frames_in"], data["clips_written"],
                   SkipCounter.from_dict(data["skips"], strict))


def list_clips(recipe: Recipe, root: Path, counter: SkipCounter) -> tuple[list[Source], list[tuple[int, Clip]]]:
    sources, plan = [], []
    for i, spec in enumerate(recipe.sources):
        source = spec.build(root)
        sources.append(source)
        plan.extend((i, clip) for clip in source.clips(counter))
    return sources, plan


def plan_id(recipe: Recipe, root: Path, part: tuple[int, int], plan: list[tuple[int, Clip]]) -> str:
    h = hashlib.sha256(f"{recipe.fingerprint()}\x00{root.resolve()}\x00{part}".encode())
    for i, clip in plan:
        h.update(f"{i}/{clip.dataset}/{clip.sequence}/{clip.view}/{len(clip.frames)}\n".encode())
    return h.hexdigest()[:16]


_WORKER_STATE: dict = {}


def _init_worker(sources: list[Source], recipe: Recipe) -> None:
    _WORKER_STATE["sources"], _WORKER_STATE["recipe"] = sources, recipe


def _job(task: tuple[int, Clip]) -> ClipResult:
    spec_index, clip = task
    opts = _WORKER_STATE["recipe"].sources[spec_index].sharding
    return process_clip(_WORKER_STATE["sources"][spec_index], clip, opts, opts.min_frames)


def _results(tasks: list[tuple[int, Clip]], sources, recipe, workers: int) -> Iterator[ClipResult]:
    if workers <= 1:
        _init_worker(sources, recipe)
        yield from map(_job, tasks)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(sources, recipe)) as pool:
        yield from pool.imap(_job, tasks, chunksize=1)


def part_dir(out: Path, part: tuple[int, int]) -> Path:
    return out / f"part-{part[0]:05d}-of-{part[1]:05d}"


def shard(recipe: Recipe, root: Path, out: Path, workers: int = 1, part: tuple[int, int] | None = None,
          progress: bool = True) -> dict:
    """Shard everything `recipe` lists under `root` into `out` (or its part directory); returns the summary."""
    root, out = Path(root), Path(out)
    strict = recipe.sharding.strict
    listing = SkipCounter(strict=strict)
    sources, plan = list_clips(recipe, root, listing)
    i, n = part or (0, 1)
    if not 0 <= i < n:
        raise HandclrError(f"--part {i}/{n}: need 0 <= i < N")
    plan = [task for k, task in enumerate(plan) if k % n == i]
    target = part_dir(out, (i, n)) if part else out
    target.mkdir(parents=True, exist_ok=True)
    pid = plan_id(recipe, root, (i, n), plan)
    summary_path = target / SUMMARY
    if summary_path.exists():
        done = json.loads(summary_path.read_text())
        if done.get("plan") == pid:
            log.info("%s is already complete", target)
            return done
        raise HandclrError(f"{target} holds a finished run of a different recipe, root or part; "
                           f"use another --out or remove it")
    state = load_resume_state(target, pid)
    stats = Stats.from_dict(state.stats, strict) if state.stats else Stats(counter=SkipCounter(strict=strict))
    keys = {r["key"] for r in state.rows}
    rows, shards = list(state.rows), list(state.shards)
    if state.next_shard:
        log.info("resuming %s after %d complete shard(s) at clip %d", target, state.next_shard, state.next_clip)
    sink = ShardSink(target, pid, recipe.sharding.shard_bytes, state.next_shard)
    tasks = plan[state.next_clip:]
    bar = tqdm(total=len(plan), initial=state.next_clip, unit="clip", disable=not progress, desc="sharding")
    try:
        for offset, result in enumerate(_results(tasks, sources, recipe, workers)):
            clip_index = state.next_clip + offset
            skip = state.skip_samples if offset == 0 else 0
            written = skip
            for s, sample in enumerate(result.samples[skip:], start=skip):
                if sample.key in keys:
                    result.counter.skip("duplicate_key", f"{sample.key} (already written)",
                                        frames=sample.row["n_frames"])
                    continue
                if sink.pending_bytes and sink.pending_bytes + sample.row["bytes"] > sink.shard_bytes:
                    record = sink.finish((clip_index, s), stats.to_dict())
                    rows.extend(record["rows"])
                    shards.append(record["shard"])
                sink.add(sample.key, sample.members, sample.row)
                keys.add(sample.key)
                written += 1
            if result.samples and not written:
                result.counter.skip("duplicate_key", f"all samples of {result.samples[0].key}", clips=1)
            stats.clips_in += 1
            stats.frames_in += result.frames_in
            stats.clips_written += bool(written)
            stats.counter.merge(result.counter)
            bar.update(1)
        record = sink.finish((len(plan), 0), stats.to_dict())
        if record:
            rows.extend(record["rows"])
            shards.append(record["shard"])
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    summary = summarise(stats, listing, rows, shards)
    summary["plan"] = pid
    check_accounting(summary, target)
    if part is None:
        write_tables(target, rows, shards)
    atomic_write_text(summary_path, json.dumps(summary, indent=1, sort_keys=True))
    return summary


def summarise(stats: Stats, listing: SkipCounter, rows: list[dict], shards: list[dict]) -> dict:
    return {**stats.to_dict(), "listing_skips": listing.to_dict(), "samples": len(rows),
            "frames_written": sum(r["n_frames"] for r in rows), "shards": len(shards),
            "bytes": sum(s["bytes"] for s in shards),
            "datasets": sorted({r["dataset"] for r in rows})}


def check_accounting(summary: dict, where: Path) -> None:
    skips = summary["skips"]
    frames_skipped = sum(skips["frames"].values())
    clips_skipped = sum(skips["clips"].values())
    if summary["frames_in"] != summary["frames_written"] + frames_skipped or \
            summary["clips_in"] != summary["clips_written"] + clips_skipped:
        raise HandclrError(f"{where}: accounting mismatch (frames in {summary['frames_in']} != written "
                           f"{summary['frames_written']} + skipped {frames_skipped}, or clips in "
                           f"{summary['clips_in']} != written {summary['clips_written']} + skipped {clips_skipped})")


def merge(out: Path) -> dict:
    """Join finished part directories into one shard set with global shard numbering and tables."""
    out = Path(out)
    parts = sorted(out.glob("part-*-of-*"))
    if not parts:
        raise HandclrError(f"{out}: no part-*-of-* directories to merge")
    n = int(parts[0].name.split("-of-")[1])
    expected = [part_dir(out, (i, n)).name for i in range(n)]
    missing = [e for e in expected if not (out / e / SUMMARY).exists()]
    if missing or len(parts) != n:
        raise HandclrError(f"{out}: cannot merge, unfinished or missing parts: {', '.join(missing) or parts}")
    rows, shards, summaries = [], [], []
    moves = []
    for name in expected:
        summaries.append(json.loads((out / name / SUMMARY).read_text()))
        part_rows = read_table(out / name / INDEX_DIR)
        by_shard: dict[str, list[dict]] = {}
        for r in part_rows["rows"]:
            by_shard.setdefault(r["shard"], []).append(r)
        for sh in part_rows["shards"]:
            new = shard_name(len(shards))
            moves.append((out / name / sh["name"], out / new))
            rows.extend({**r, "shard": new} for r in by_shard.get(sh["name"], []))
            shards.append({**sh, "name": new})
    seen, dups = set(), []
    for r in rows:
        (dups.append(r["key"]) if r["key"] in seen else seen.add(r["key"]))
    if dups:
        raise HandclrError(f"{out}: parts share keys {dups[:5]} (sequence ids that collide after sanitising)")
    for src, dst in moves:
        src.replace(dst)
    write_tables(out, rows, shards)
    total = Stats()
    for s in summaries:
        total.clips_in += s["clips_in"]
        total.frames_in += s["frames_in"]
        total.clips_written += s["clips_written"]
        total.counter.merge(SkipCounter.from_dict(s["skips"]))
    summary = summarise(total, SkipCounter.from_dict(summaries[0]["listing_skips"]), rows, shards)
    summary["plan"] = "merged:" + ",".join(s["plan"] for s in summaries)
    check_accounting(summary, out)
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=1, sort_keys=True))
    for name in expected:
        shutil.rmtree(out / name)
    return summary
