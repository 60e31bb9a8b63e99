"""Sharding orchestration: list clips, take this part's share, process clips in parallel, write shards in
plan order (so the output does not depend on the worker count), resume, merge parts, summarise."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.atomic import atomic_write_text
from pipeline.augment.cv2_exec import single_threaded
from pipeline.errors import HandclrError, SkipCounter
from pipeline.sharding.clipjob import ClipResult, process_clip
from pipeline.sharding.recipe import Recipe
from pipeline.sharding.tables import write_tables
from pipeline.sharding.writer import (
    ResumeState,
    ShardSink,
    complete_records,
    exclusive_lock,
    load_resume_state,
    shard_name,
    sidecar_records,
)
from pipeline.sources.base import Clip, Source
from pipeline.sources.doh100 import tracks_report

log = logging.getLogger("handclr")
SUMMARY = "summary.json"
TRACKS_REPORT = "tracks_report.json"  # per-video table of 100DOH raw-video track linking


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
    def from_dict(cls, data: dict, strict: bool) -> Stats:
        return cls(data["clips_in"], data["frames_in"], data["clips_written"],
                   SkipCounter.from_dict(data["skips"], strict))


def list_clips(recipe: Recipe, root: Path, counter: SkipCounter) -> tuple[list[Source], list[tuple[int, Clip]]]:
    sources, plan = [], []
    for i, spec in enumerate(recipe.sources):
        source = spec.build(root)
        sources.append(source)
        plan.extend((i, clip) for clip in source.clips(counter))
    return sources, plan


def _hash_plan(h, plan: list[tuple[int, Clip]]) -> str:
    for i, clip in plan:
        h.update(f"{i}/{clip.dataset}/{clip.sequence}/{clip.view}/{len(clip.frames)}\n".encode())
    return h.hexdigest()[:16]


def plan_id(recipe: Recipe, root: Path, part: tuple[int, int], plan: list[tuple[int, Clip]]) -> str:
    return _hash_plan(hashlib.sha256(f"{recipe.fingerprint()}\x00{root.resolve()}\x00{part}".encode()), plan)


def listing_id(recipe: Recipe, plan: list[tuple[int, Clip]]) -> str:
    """The recipe and the whole listing (before the part split), without the root path: parts of one array
    job agree on it even when nodes mount the data at different paths, so `merge` can require it."""
    return _hash_plan(hashlib.sha256(recipe.fingerprint().encode()), plan)


_WORKER_STATE: dict = {}


def _init_worker(sources: list[Source], recipe: Recipe, pool: bool = False) -> None:
    _WORKER_STATE["sources"], _WORKER_STATE["recipe"] = sources, recipe
    if pool:
        single_threaded()


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
    with ctx.Pool(workers, initializer=_init_worker, initargs=(sources, recipe, True)) as pool:
        yield from pool.imap(_job, tasks, chunksize=1)


def part_dir(out: Path, part: tuple[int, int]) -> Path:
    return out / f"part-{part[0]:05d}-of-{part[1]:05d}"


def shard(recipe: Recipe, root: Path, out: Path, workers: int = 1, part: tuple[int, int] | None = None,
          progress: bool = True) -> dict:
    """Shard everything `recipe` lists under `root` into `out` (or its part directory); returns the summary.

    The target directory is locked for the whole run: a second sharder on it fails at once."""
    root, out = Path(root), Path(out)
    i, n = part or (0, 1)
    if not 0 <= i < n:
        raise HandclrError(f"--part {i}/{n}: need 0 <= i < N")
    if part is not None and (out / SUMMARY).exists():
        raise HandclrError(f"{out} already holds a finished (or merged) shard set; parts go to a fresh --out")
    target = part_dir(out, (i, n)) if part else out
    with exclusive_lock(target):
        return _shard_locked(recipe, root, target, workers, (i, n), part is not None, progress)


def _shard_locked(recipe: Recipe, root: Path, target: Path, workers: int, part: tuple[int, int], is_part: bool,
                  progress: bool) -> dict:
    strict = recipe.sharding.strict
    listing = SkipCounter(strict=strict)
    sources, plan = list_clips(recipe, root, listing)
    listed = listing_id(recipe, plan)
    plan = [task for k, task in enumerate(plan) if k % part[1] == part[0]]
    pid = plan_id(recipe, root, part, plan)
    done = _finished_run(target, pid)
    if done is not None:
        return done
    state = load_resume_state(target, pid)
    if state.next_shard:
        log.info("resuming %s after %d complete shard(s) at clip %d", target, state.next_shard, state.next_clip)
    stats = Stats.from_dict(state.stats, strict) if state.stats else Stats(counter=SkipCounter(strict=strict))
    sink = ShardSink(target, pid, recipe.sharding.shard_bytes, state.next_shard)
    rows, shards = _write_plan(plan, state, stats, sink, sources, recipe, workers, progress)
    summary = summarise(stats, listing, rows, shards)
    summary.update(plan=pid, recipe=recipe.fingerprint(), listing=listed)
    check_accounting(summary, target)
    if not is_part:
        write_tables(target, rows, shards)
    reports = {k: v for s in sources for k, v in getattr(s, "report", {}).items()}
    if reports and not is_part:  # before the summary, whose presence marks the run finished
        atomic_write_text(target / TRACKS_REPORT, json.dumps(tracks_report(reports, rows), indent=1, sort_keys=True))
    atomic_write_text(target / SUMMARY, json.dumps(summary, indent=1, sort_keys=True))
    return summary


def _finished_run(target: Path, pid: str) -> dict | None:
    """The summary of a finished run of this plan (its shards and sidecars intact), else None; a summary
    whose sidecars were damaged since is removed, so the run resumes and rebuilds them."""
    path = target / SUMMARY
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
        shards = int(done["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        done, shards = {"plan": pid}, -1
    if done.get("plan") != pid:
        raise HandclrError(f"{target} holds a finished run of a different recipe, root or part; "
                           f"use another --out or remove it")
    if len(complete_records(target, pid)) == shards:
        log.info("%s is already complete", target)
        return done
    log.warning("%s: finished run with damaged shards or sidecars; resuming to rebuild them", target)
    path.unlink()
    return None


def _write_plan(plan: list[tuple[int, Clip]], state: ResumeState, stats: Stats, sink: ShardSink,
                sources: list[Source], recipe: Recipe, workers: int, progress: bool) -> tuple[list[dict], list[dict]]:
    """Process the clips after the resume point and write their samples in plan order."""
    keys = {r["key"] for r in state.rows}
    rows, shards = list(state.rows), list(state.shards)
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
                    _collect(sink.finish((clip_index, s), stats.to_dict()), rows, shards)
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
        _collect(sink.finish((len(plan), 0), stats.to_dict()), rows, shards)
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    return rows, shards


def _collect(record: dict | None, rows: list[dict], shards: list[dict]) -> None:
    if record:
        rows.extend(record["rows"])
        shards.append(record["shard"])


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
    """Join finished part directories into one shard set with global shard numbering and tables.

    Re-runnable after an interruption at any point: part sidecars stay in place until the merged summary
    (the commit) is written, a shard already moved is recognised by its recorded size at the new name,
    and a merge that committed only finishes removing the part directories."""
    out = Path(out)
    if not out.is_dir():
        raise HandclrError(f"{out}: no such directory to merge")
    with exclusive_lock(out):
        done = _merged_summary(out)
        if done is None:
            done = _merge_parts(out)
        _remove_parts(out, done["merged_parts"])
        return done


def _merged_summary(out: Path) -> dict | None:
    """The summary of a committed merge; an error when `out` holds a finished single (non-part) run."""
    if not (out / SUMMARY).exists():
        return None
    try:
        done = json.loads((out / SUMMARY).read_text())
    except (OSError, ValueError) as exc:
        raise HandclrError(f"{out / SUMMARY}: unreadable ({exc}); remove it and re-run the merge") from exc
    if not isinstance(done, dict) or "merged_parts" not in done:
        raise HandclrError(f"{out} holds a finished single run (no --part), there is nothing to merge")
    return done


def _part_names(out: Path) -> list[str]:
    parts = sorted(p.name for p in out.glob("part-*-of-*") if p.is_dir())
    if not parts:
        raise HandclrError(f"{out}: no part-*-of-* directories to merge")
    n = int(parts[0].split("-of-")[1])
    expected = [part_dir(out, (i, n)).name for i in range(n)]
    missing = [e for e in expected if not (out / e / SUMMARY).exists()]
    if missing or parts != expected:
        raise HandclrError(f"{out}: cannot merge, unfinished or missing parts: {', '.join(missing) or parts}")
    return expected


def _part_summaries(out: Path, names: list[str]) -> list[dict]:
    """Each part's summary; all must come from the same recipe and the same dataset listing."""
    summaries = []
    for name in names:
        try:
            summaries.append(json.loads((out / name / SUMMARY).read_text()))
        except (OSError, ValueError) as exc:
            raise HandclrError(f"{out / name / SUMMARY}: unreadable ({exc}); re-run that part") from exc
    for key, what in (("recipe", "recipe"), ("listing", "dataset listing")):
        found = {name: s.get(key) for name, s in zip(names, summaries, strict=True)}
        if None in found.values():
            raise HandclrError(f"{out}: part(s) {[k for k, v in found.items() if v is None]} record no {what} "
                               f"fingerprint (written by an older handclr); re-run them")
        if len(set(found.values())) > 1:
            raise HandclrError(f"{out}: parts were written from different {what}s and cannot be merged: "
                               + ", ".join(f"{k} {v}" for k, v in found.items()))
    return summaries


def _merge_plan(out: Path, names: list[str], summaries: list[dict]) -> tuple[list, list[dict], list[dict]]:
    """(moves (source, destination, bytes), merged rows, merged shard rows) from the parts' sidecars."""
    moves, rows, shards = [], [], []
    for name, summary in zip(names, summaries, strict=True):
        records = list(itertools.islice(sidecar_records(out / name, summary["plan"]), summary["shards"]))
        if len(records) != summary["shards"]:
            raise HandclrError(f"{out / name}: {summary['shards']} shards finished but only {len(records)} "
                               f"sidecars intact; re-run that part to rebuild them")
        for record in records:
            sh = record["shard"]
            new = shard_name(len(shards))
            moves.append((out / name / sh["name"], out / new, sh["bytes"]))
            rows.extend({**r, "shard": new} for r in record["rows"])
            shards.append({**sh, "name": new})
    seen, dups = set(), []
    for r in rows:
        (dups.append(r["key"]) if r["key"] in seen else seen.add(r["key"]))
    if dups:
        raise HandclrError(f"{out}: parts share keys {dups[:5]} (sequence ids that collide after sanitising)")
    return moves, rows, shards


def _move_shard(src: Path, dst: Path, size: int) -> None:
    """Rename a part's shard into place; a shard moved by an interrupted merge is recognised by its size."""
    if src.exists():
        os.replace(src, dst)
    elif not (dst.exists() and dst.stat().st_size == size):
        raise HandclrError(f"{src} is missing and {dst} is not its moved copy; re-run that part")


def _merge_parts(out: Path) -> dict:
    names = _part_names(out)
    with ExitStack() as locks:
        for name in names:  # a part still being written is locked by its sharder
            locks.enter_context(exclusive_lock(out / name))
        summaries = _part_summaries(out, names)
        moves, rows, shards = _merge_plan(out, names, summaries)
        for src, dst, size in moves:
            _move_shard(src, dst, size)
        write_tables(out, rows, shards)
        total = Stats()
        for s in summaries:
            total.clips_in += s["clips_in"]
            total.frames_in += s["frames_in"]
            total.clips_written += s["clips_written"]
            total.counter.merge(SkipCounter.from_dict(s["skips"]))
        summary = summarise(total, SkipCounter.from_dict(summaries[0]["listing_skips"]), rows, shards)
        summary.update(plan="merged:" + ",".join(s["plan"] for s in summaries), recipe=summaries[0]["recipe"],
                       listing=summaries[0]["listing"], merged_parts=names)
        check_accounting(summary, out)
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=1, sort_keys=True))
    return summary


def _remove_parts(out: Path, names: list[str]) -> None:
    for name in names:
        shutil.rmtree(out / name, ignore_errors=True)
