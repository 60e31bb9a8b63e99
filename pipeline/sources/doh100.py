"""100 Days of Hands: annotated frames (VOC XML and JSON releases) and raw videos with box tracks.

Annotated frames become single-frame clips, one per hand. Raw videos are decoded sequentially by the
sharder (decord); their per-frame hand boxes come from a box-track file (see `read_box_tracks`): second boxes
on one hand dropped, the rest linked into tracks (one-to-one per frame), the pieces of one hand stitched,
implausible tracks dropped, boxes smoothed; each track is a clip, subsampled to `target_fps`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from pipeline.errors import LayoutError, SkipCounter, SkipError
from pipeline.sources.base import Clip, Frame, Source, ascii_number, utf8_names
from pipeline.sources.boxes import (
    Detection,
    LinkParams,
    StitchParams,
    interpolate_boxes,
    link_tracks,
    smooth_track,
    split_duplicates,
    static_tracks,
    stitch_tracks,
    track_side,
)
from pipeline.sources.files import (
    ANNOTATION,
    LAYOUT_JSON,
    LIST,
    TABLE,
    entry_exists,
    layout_bytes,
    layout_text,
    open_text,
    read_bytes,
)
from pipeline.sources.options import DOH100Options

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
TRACK_COLUMNS = ("video_id", "frame", "x1", "y1", "x2", "y2", "side", "score")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_RATE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?(/[0-9]{1,12})?")


def safe_id(text: str) -> str:
    """Key-safe id: keys may not contain dots (webdataset splits the member name at the first dot)."""
    return _UNSAFE.sub("_", text)


def frame_number(stem: str) -> int:
    """Frame number from a release stem `genre_index_<youtube id>_<frame>` (0 when absent)."""
    number = ascii_number(stem.rsplit("_", 1)[-1])
    return 0 if number is None else number


def parse_side(value) -> str | None:
    """Hand side from the releases' encodings: 0/1, 'l'/'r', 'left'/'right'."""
    text = str(value).strip().lower()
    return {"0": "left", "l": "left", "left": "left", "1": "right", "r": "right", "right": "right"}.get(text)


def parse_rate(text: str) -> float | None:
    """A positive, finite frame rate written like 30, 29.97 or 30000/1001; None for anything else.

    The pattern comes first: Fraction('1e999999999') would spend minutes building a 10**999999999.
    """
    if not _RATE.fullmatch(text):
        return None
    try:
        rate = float(Fraction(text))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return rate if math.isfinite(rate) and rate > 0 else None


def read_video_meta(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """video_id -> frame rate from the whitespace table with a header row, and video_id -> why its row is
    unusable. Only an unreadable file or a header without video_id and frame_rate stops the run: a bad
    row costs only its own video (counted when a track needs it)."""
    lines = [ln.split() for ln in layout_text(path, LIST, "doh100").splitlines() if ln.strip()]
    header = lines[0] if lines else []
    if "video_id" not in header or "frame_rate" not in header:
        raise LayoutError(f"doh100: {path}: expected a whitespace table whose header has the columns video_id "
                          f"and frame_rate (e.g. 30000/1001), got {' '.join(header)[:200]!r}")
    vi, fi = header.index("video_id"), header.index("frame_rate")
    rates, problems = {}, {}
    for line, row in enumerate(lines[1:], start=2):
        if len(row) <= vi:
            continue
        raw = row[fi] if len(row) > fi else ""
        rate = parse_rate(raw)
        if rate is None:
            problems[row[vi]] = f"{path}:{line}: frame_rate {raw!r} is not a positive rate like 30, 29.97 or 30000/1001"
        else:
            rates[row[vi]] = rate
    return rates, problems


def _detection(row: dict) -> Detection | str:
    """The detection of one box-track row, or why the row cannot be used."""
    frame = ascii_number((row.get("frame") or "").strip())
    if frame is None:
        return f"frame {row.get('frame')!r} is not a non-negative integer in ASCII digits"
    texts = [row.get(k) for k in ("x1", "y1", "x2", "y2", "score")]
    try:
        if not all(t.isascii() for t in texts):
            raise ValueError
        values = [float(t) for t in texts]
    except (AttributeError, ValueError):
        return f"box or score {texts} is not numeric"
    if not all(math.isfinite(v) for v in values):
        return f"box or score {texts} is not finite"
    side = parse_side(row.get("side"))
    if side is None:
        return f"unknown side {row.get('side')!r}"
    return Detection(frame, tuple(values[:4]), side, values[4])


def _track_rows(path: Path, f, counter: SkipCounter) -> Iterator[tuple[int, dict]]:
    """(line, row) of the box-track CSV; a row the csv module cannot split is a counted skip."""
    reader = csv.DictReader(f)
    reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
    missing = set(TRACK_COLUMNS) - set(reader.fieldnames)
    if missing:
        raise LayoutError(f"doh100: box-track file {path} lacks columns {sorted(missing)}; expected "
                          f"header {','.join(TRACK_COLUMNS)}")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            counter.skip("annotation_malformed", f"{path}:{reader.line_num}: unreadable CSV row ({exc})", frames=1)
            continue
        yield reader.line_num, row


def read_box_tracks(path: Path, counter: SkipCounter, min_score: float) -> dict[str, list[Detection]]:
    """Read the box-track file: CSV with header video_id,frame,x1,y1,x2,y2,side,score (UTF-8, a BOM allowed).

    `frame` is the 0-based index of the frame in the decoded video, boxes are in pixels, `side` is
    L/R (or left/right, 0/1). Rows below `min_score` are dropped. Malformed rows and exact repeats of a row
    (which would link into a second copy of every track) are counted listing skips, one frame each.
    """
    out: dict[str, list[Detection]] = {}
    seen: set[tuple] = set()
    try:
        with open_text(path, TABLE) as f:
            for line, row in _track_rows(path, f, counter):
                det = _detection(row)
                if isinstance(det, str):
                    counter.skip("annotation_malformed", f"{path}:{line}: {det}", frames=1)
                    continue
                key = (row["video_id"], det.frame, det.box, det.side, det.score)
                if key in seen:
                    counter.skip("box_duplicate", f"{path}:{line}: repeats an earlier row", frames=1)
                    continue
                seen.add(key)
                if det.score >= min_score:
                    out.setdefault(row["video_id"], []).append(det)
    except SkipError as exc:
        raise LayoutError(f"doh100: box-track file: {exc}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LayoutError(f"doh100: cannot read box-track file {path} ({exc})") from exc
    return out


def subsample(first: int, last: int, native_fps: float, target_fps: float | None) -> list[int]:
    """Native frame indices in [first, last] nearest to a regular grid at target_fps (all when None)."""
    if target_fps is None or target_fps >= native_fps:
        return list(range(first, last + 1))
    step = native_fps / target_fps
    k0, k1 = math.ceil(first / step - 1e-9), math.floor(last / step + 1e-9)
    return sorted({min(last, max(first, round(k * step))) for k in range(k0, k1 + 1)})


class DOH100(Source):
    """Options: parts (subset of voc, json, video; default: those present), voc_dir, image_sets (VOC),
    json_splits (default [trainval, test]), videos (dir of <video_id>.<ext>), tracks (box-track CSV),
    meta (video table), target_fps (default 15; None keeps every frame), and the track knobs (duplicates, linking,
    stitching, filters, smoothing) documented in `DOH100Options`."""

    Options = DOH100Options

    dataset = "doh100"

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        parts = self.options.parts or self._present_parts()
        if not parts:
            self.require("100DOH", self.options.voc_dir, "file")
        if "voc" in parts:
            yield from self._voc(counter)
        if "json" in parts:
            yield from self._json(counter)
        if "video" in parts:
            yield from self._videos(counter)

    def _present_parts(self) -> list[str]:
        parts = []
        if (self.root / self.options.voc_dir).is_dir():
            parts.append("voc")
        if any(entry_exists(self.root / "file" / f"{s}.json") for s in self._json_splits()):
            parts.append("json")
        if entry_exists(self.root / self.options.tracks):
            parts.append("video")
        return parts

    def _json_splits(self) -> list[str]:
        return list(self.options.json_splits)

    def _fps_table(self) -> tuple[dict[str, float], dict[str, str]]:
        path = self.root / self.options.meta
        return read_video_meta(path) if entry_exists(path) else ({}, {})

    def _hand_clip(self, seq: str, index: int, image: str, source_id: str, box, side: str,
                   normalized: bool, flags: dict) -> Clip:
        frame = Frame(source_id=source_id, index=index, image=image, box=box, box_normalized=normalized,
                      flags=flags)
        return Clip(self.dataset, safe_id(seq), 0, side, None, [frame], flags={"annotated": True})

    def _voc_stems(self, voc: Path) -> set[str] | None:
        """Stems named by the `image_sets` lists (None: all annotations); a list is a layout file."""
        if not self.options.image_sets:
            return None
        stems: set[str] = set()
        for name in self.options.image_sets:
            stems.update(layout_text(voc / "ImageSets" / "Main" / f"{name}.txt", LIST, self.dataset).split())
        return stems

    def _voc(self, counter: SkipCounter) -> Iterator[Clip]:
        voc = self.root / self.options.voc_dir
        self.require("100DOH VOC", str(voc.relative_to(self.root) / "JPEGImages"),
                     str(voc.relative_to(self.root) / "Annotations"))
        stems = self._voc_stems(voc)
        for name in utf8_names(voc / "Annotations", counter, (".xml",)):
            stem = name[:-4]
            if stems is not None and stem not in stems:
                continue
            xml_path = voc / "Annotations" / name
            hands = _voc_hands(xml_path, counter)
            for h, obj in enumerate(hands or ()):
                hand = _voc_hand(obj, f"{xml_path}: hand {h}", counter)
                if hand is not None:
                    box, side, contact = hand
                    yield self._hand_clip(f"voc_{stem}_hand{h}", frame_number(stem),
                                          str(voc / "JPEGImages" / f"{stem}.jpg"), f"voc/{stem}.jpg", box, side,
                                          False, {"contact_state": contact})

    def _json_table(self, path: Path) -> dict:
        try:
            table = json.loads(layout_bytes(path, LAYOUT_JSON, self.dataset))
            if not isinstance(table, dict):
                raise ValueError("top level is not an object of image path -> hand records")
        except (ValueError, RecursionError) as exc:
            raise LayoutError(f"doh100: {path}: malformed JSON release ({exc})") from exc
        return table

    def _json(self, counter: SkipCounter) -> Iterator[Clip]:
        seen = set()
        for split in self._json_splits():
            path = self.root / "file" / f"{split}.json"
            if not entry_exists(path):
                continue
            table = self._json_table(path)
            for image in sorted(set(table) - seen):
                seen.add(image)
                records = table[image] if isinstance(table[image], list) else []
                if records and not _relative_path(image):
                    counter.skip("annotation_malformed", f"{path}: image path {image!r} is not a file under raw/",
                                 frames=len(records), clips=len(records))
                    continue
                for h, rec in enumerate(records):
                    hand = _json_hand(rec, f"{path}: {image} hand {h}", counter)
                    if hand is not None:
                        box, side = hand
                        yield self._hand_clip(f"json_{Path(image).with_suffix('')}_hand{h}",
                                              frame_number(Path(image).stem), str(self.root / "raw" / image),
                                              f"raw/{image}", box, side, True,
                                              {"contact_state": rec.get("contact_state")})

    def _videos(self, counter: SkipCounter) -> Iterator[Clip]:
        """Clips of every video with detections; `self.report` gets one row per video (those in the track file
        and those in the video folder), so no video goes missing silently."""
        videos_dir = self.root / self.options.videos
        tracks_path = self.root / self.options.tracks
        meta = self.options.meta
        self.require("100DOH raw video", str(videos_dir.relative_to(self.root)),
                     str(tracks_path.relative_to(self.root)), meta)
        rates, bad_rates = self._fps_table()
        files = {Path(n).stem: videos_dir / n for n in utf8_names(videos_dir, counter, VIDEO_EXTS)}
        detections = read_box_tracks(tracks_path, counter, self.options.min_score)
        self.report = {v: {"status": "no_detections", "detections": 0} for v in files}
        for video_id in sorted(detections):
            row = self.report[video_id] = {"status": "listed", "detections": len(detections[video_id])}
            if video_id not in files:
                row["status"] = "video_missing"
                counter.skip("video_missing", f"{videos_dir}/{video_id}.* (named in {tracks_path})", clips=1)
            elif video_id in bad_rates:
                row["status"] = "frame_rate_invalid"
                counter.skip("frame_rate_invalid", f"{video_id}: {bad_rates[video_id]}", clips=1)
            elif video_id not in rates:
                row["status"] = "frame_rate_unknown"
                counter.skip("frame_rate_unknown", f"{video_id} is not in {meta}", clips=1)
            else:
                yield from self._video_clips(video_id, files[video_id], rates[video_id], detections[video_id],
                                             counter, row)

    def _tracks(self, video_id: str, fps: float, detections: list[Detection], counter: SkipCounter,
                row: dict) -> list[list[Detection]]:
        """Linked and stitched tracks that may be hands; the rest is counted by reason, as listing skips and in
        the video's report row (detections = detections_kept + the detections_dropped)."""
        o = self.options
        detections, duplicates = split_duplicates(detections, o.duplicate_overlap)
        for d in duplicates:
            counter.skip("box_same_hand", f"{video_id}: frame {d.frame}: box {d.box} overlaps a higher-scored box "
                                          f"of the frame", frames=1)
        link = LinkParams(o.iou_min, o.max_gap, o.max_shift, o.max_scale, o.side_cost)
        stitch = StitchParams(o.max_gap, round(o.fragment_s * fps), round(o.fragment_gap_s * fps), o.stitch_jump,
                              o.max_scale, o.side_cost)
        tracks = stitch_tracks(link_tracks(detections, link), stitch)
        static = static_tracks(tracks, fps, o.static_motion, o.static_s)
        kept, dropped, dropped_dets = [], Counter(), Counter(box_same_hand=len(duplicates))
        for t, track in enumerate(tracks):
            reason = "track_too_short" if len(track) < o.min_detections else "track_static" if t in static else None
            if reason is None:
                kept.append(track)
                continue
            dropped[reason] += 1
            dropped_dets[reason] += len(track)
            counter.skip(reason, f"{video_id}: track of {len(track)} detections in frames {track[0].frame}-"
                                 f"{track[-1].frame}", frames=len(track), clips=1)
        row.update(tracks=len(tracks), tracks_dropped=dict(sorted(dropped.items())),
                   detections_kept=sum(len(t) for t in kept), detections_dropped=dict(sorted((+dropped_dets).items())))
        return kept

    def _video_clips(self, video_id: str, video: Path, fps: float, detections: list[Detection],
                     counter: SkipCounter, row: dict) -> Iterator[Clip]:
        target = self.options.target_fps
        row.update(clips=0, frames=0)
        for t, track in enumerate(self._tracks(video_id, fps, detections, counter, row)):
            # Gaps are bridged and boxes smoothed at the native rate, before subsampling.
            span = list(range(track[0].frame, track[-1].frame + 1))
            known = {d.frame: d.box for d in track}
            boxes = smooth_track(span, interpolate_boxes(span, [known.get(i) for i in span]),
                                 self.options.smooth_s * fps)
            indices = subsample(span[0], span[-1], fps, target)
            frames = [Frame(source_id=f"{video_id}/{i:08d}", index=i, video_index=i, box=boxes[i - span[0]])
                      for i in indices]
            row["clips"] += 1
            row["frames"] += len(frames)
            yield Clip(self.dataset, safe_id(f"{video_id}_track{t}"), 0, track_side(track), fps, frames,
                       video=str(video), flags={"annotated": False, "video_id": video_id, "target_fps": target})


def tracks_report(report: dict[str, dict], manifest: list[dict]) -> dict[str, dict]:
    """Per-video table of a 100DOH raw-video listing (`DOH100.report`) completed with what was written
    (manifest rows): detections in, kept and dropped by reason, tracks linked and dropped by reason, clips and
    frames listed and written."""
    out = {}
    for video_id, row in sorted(report.items()):
        prefix = safe_id(f"{video_id}_track")
        rows = [r for r in manifest if r["dataset"] == "doh100" and r["sequence"].startswith(prefix)
                and r["sequence"][len(prefix):].isdigit()]
        out[video_id] = {**row, "clips_written": len({r["sequence"] for r in rows}),
                         "frames_written": sum(r["n_frames"] for r in rows)}
    return out


def _relative_path(image: str) -> bool:
    """A JSON release's image path must name a file under raw/ (not absolute, no '..', not empty)."""
    path = Path(image)
    return bool(path.name) and not path.is_absolute() and ".." not in path.parts


def _voc_hands(xml_path: Path, counter: SkipCounter) -> list[ET.Element] | None:
    """The `hand` objects of one VOC annotation; None (counted) when the file cannot be read or parsed."""
    try:
        root = ET.fromstring(read_bytes(xml_path, ANNOTATION))
    except SkipError as exc:
        counter.skip(exc.reason, str(exc), frames=1, clips=1)
        return None
    except ET.ParseError as exc:
        counter.skip("annotation_malformed", f"{xml_path}: not valid XML ({exc})", frames=1, clips=1)
        return None
    return [o for o in root.iter("object") if (o.findtext("name") or "").strip() == "hand"]


def _voc_hand(obj: ET.Element, where: str, counter: SkipCounter) -> tuple[tuple, str, int | None] | None:
    """(0-based box, side, contact state) of one VOC hand; None (counted) when unusable."""
    try:
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (AttributeError, TypeError, ValueError):
        counter.skip("annotation_malformed", f"{where}: missing or non-numeric bndbox", frames=1, clips=1)
        return None
    side = parse_side(obj.findtext("handside"))
    if side is None:
        counter.skip("annotation_malformed", f"{where}: handside is not 0/1", frames=1, clips=1)
        return None
    return (x1 - 1.0, y1 - 1.0, x2, y2), side, ascii_number((obj.findtext("contactstate") or "").strip())


def _json_hand(rec, where: str, counter: SkipCounter) -> tuple[tuple, str] | None:
    """(normalised box, side) of one JSON-release hand record; None (counted) when unusable."""
    try:
        box = tuple(float(rec[k]) for k in ("x1", "y1", "x2", "y2"))
    except (KeyError, TypeError, ValueError, OverflowError):
        counter.skip("annotation_malformed", f"{where}: bad x1,y1,x2,y2", frames=1, clips=1)
        return None
    side = parse_side(rec.get("hand_side"))
    if side is None:
        counter.skip("annotation_malformed", f"{where}: bad hand_side", frames=1, clips=1)
        return None
    return box, side
