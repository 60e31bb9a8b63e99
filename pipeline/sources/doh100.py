"""100 Days of Hands: annotated frames (VOC XML and JSON releases) and raw videos with box tracks.

Annotated frames become single-frame clips, one per hand. Raw videos are decoded sequentially by the
sharder (decord); their per-frame hand boxes come from a box-track file (see `read_box_tracks`) linked
into tracks by overlap; each track is a clip, subsampled to `target_fps`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from pipeline.errors import LayoutError, SkipCounter
from pipeline.sources.base import Clip, Frame, Source, utf8_names
from pipeline.sources.boxes import Detection, interpolate_boxes, link_tracks

VOC_DIR = "pascal_voc_format/VOCdevkit2007_handobj_100K/VOC2007"
META_FILE = "file/meta_100DOH_video.txt"
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
TRACK_COLUMNS = ("video_id", "frame", "x1", "y1", "x2", "y2", "side", "score")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_id(text: str) -> str:
    """Key-safe id: keys may not contain dots (webdataset splits the member name at the first dot)."""
    return _UNSAFE.sub("_", text)


def frame_number(stem: str) -> int:
    """Frame number from a release stem `genre_index_<youtube id>_<frame>` (0 when absent)."""
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def parse_side(value) -> str | None:
    """Hand side from the releases' encodings: 0/1, 'l'/'r', 'left'/'right'."""
    text = str(value).strip().lower()
    return {"0": "left", "l": "left", "left": "left", "1": "right", "r": "right", "right": "right"}.get(text)


def read_video_meta(path: Path) -> dict[str, Fraction]:
    """video_id -> frame rate from the whitespace table with a header row (rates like 30000/1001)."""
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
        header = lines[0]
        vi, fi = header.index("video_id"), header.index("frame_rate")
        return {row[vi]: Fraction(row[fi]) for row in lines[1:]}
    except (OSError, IndexError, ValueError, ZeroDivisionError) as exc:
        raise LayoutError(f"doh100: {path}: expected a whitespace table with columns video_id and "
                          f"frame_rate (e.g. 30000/1001): {exc!r}") from exc


def read_box_tracks(path: Path, counter: SkipCounter, min_score: float) -> dict[str, list[Detection]]:
    """Read the box-track file: CSV with header video_id,frame,x1,y1,x2,y2,side,score.

    `frame` is the 0-based index of the frame in the decoded video, boxes are in pixels, `side` is
    L/R (or left/right, 0/1). Rows below `min_score` are dropped; malformed rows are counted skips.
    """
    out: dict[str, list[Detection]] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(TRACK_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise LayoutError(f"doh100: box-track file {path} lacks columns {sorted(missing)}; expected "
                                  f"header {','.join(TRACK_COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                try:
                    det = Detection(int(row["frame"]), tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")),
                                    parse_side(row["side"]) or "", float(row["score"]))
                except (TypeError, ValueError):
                    counter.skip("annotation_malformed", f"{path}:{line}: bad box-track row")
                    continue
                if not det.side:
                    counter.skip("annotation_malformed", f"{path}:{line}: unknown side {row['side']!r}")
                elif det.score >= min_score:
                    out.setdefault(row["video_id"], []).append(det)
    except OSError as exc:
        raise LayoutError(f"doh100: cannot read box-track file {path} ({exc.strerror})") from exc
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
    meta (video table), target_fps (default 15; None keeps every frame), max_gap (native frames, default
    5), iou_min (default 0.3), min_score (default 0.5)."""

    dataset = "doh100"

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        parts = self.options.get("parts") or self._present_parts()
        if not parts:
            self.require("100DOH", self.options.get("voc_dir", VOC_DIR), "file")
        if "voc" in parts:
            yield from self._voc(counter)
        if "json" in parts:
            yield from self._json(counter)
        if "video" in parts:
            yield from self._videos(counter)

    def _present_parts(self) -> list[str]:
        parts = []
        if (self.root / self.options.get("voc_dir", VOC_DIR)).is_dir():
            parts.append("voc")
        if any((self.root / "file" / f"{s}.json").exists() for s in self._json_splits()):
            parts.append("json")
        if (self.root / self.options.get("tracks", "tracks/boxes.csv")).exists():
            parts.append("video")
        return parts

    def _json_splits(self) -> list[str]:
        return list(self.options.get("json_splits", ["trainval", "test"]))

    def _fps_table(self) -> dict[str, Fraction]:
        path = self.root / self.options.get("meta", META_FILE)
        return read_video_meta(path) if path.exists() else {}

    def _hand_clip(self, seq: str, index: int, image: str, source_id: str, box, side: str,
                   normalized: bool, flags: dict) -> Clip:
        frame = Frame(source_id=source_id, index=index, image=image, box=box, box_normalized=normalized,
                      flags=flags)
        return Clip(self.dataset, safe_id(seq), 0, side, None, [frame], flags={"annotated": True})

    def _voc(self, counter: SkipCounter) -> Iterator[Clip]:
        voc = self.root / self.options.get("voc_dir", VOC_DIR)
        self.require("100DOH VOC", str(voc.relative_to(self.root) / "JPEGImages"),
                     str(voc.relative_to(self.root) / "Annotations"))
        stems = None
        if self.options.get("image_sets"):
            stems = set()
            for name in self.options["image_sets"]:
                stems.update((voc / "ImageSets" / "Main" / f"{name}.txt").read_text().split())
        for name in utf8_names(voc / "Annotations", counter, (".xml",)):
            stem = name[:-4]
            if stems is not None and stem not in stems:
                continue
            xml_path = voc / "Annotations" / name
            try:
                hands = [o for o in ET.parse(xml_path).getroot().iter("object")
                         if (o.findtext("name") or "").strip() == "hand"]
            except ET.ParseError as exc:
                counter.skip("annotation_malformed", f"{xml_path}: not valid XML ({exc})", frames=1, clips=1)
                continue
            index = frame_number(stem)
            for h, obj in enumerate(hands):
                where = f"{xml_path}: hand {h}"
                side = parse_side(obj.findtext("handside"))
                try:
                    bb = obj.find("bndbox")
                    x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                except (AttributeError, TypeError, ValueError):
                    counter.skip("annotation_malformed", f"{where}: missing or non-numeric bndbox",
                                 frames=1, clips=1)
                    continue
                if side is None:
                    counter.skip("annotation_malformed", f"{where}: handside is not 0/1", frames=1, clips=1)
                    continue
                contact = (obj.findtext("contactstate") or "").strip()
                yield self._hand_clip(
                    f"voc_{stem}_hand{h}", index, str(voc / "JPEGImages" / f"{stem}.jpg"),
                    f"voc/{stem}.jpg", (x1 - 1.0, y1 - 1.0, x2, y2), side, False,
                    {"contact_state": int(contact) if contact.isdigit() else None})

    def _json(self, counter: SkipCounter) -> Iterator[Clip]:
        seen = set()
        for split in self._json_splits():
            path = self.root / "file" / f"{split}.json"
            if not path.exists():
                continue
            try:
                table = json.loads(path.read_bytes())
                if not isinstance(table, dict):
                    raise ValueError("top level is not an object of image path -> hand records")
            except ValueError as exc:
                raise LayoutError(f"doh100: {path}: malformed JSON release ({exc})") from exc
            for image in sorted(table):
                if image in seen:
                    continue
                seen.add(image)
                stem = Path(image).stem
                index = frame_number(stem)
                records = table[image] if isinstance(table[image], list) else []
                for h, rec in enumerate(records):
                    where = f"{path}: {image} hand {h}"
                    try:
                        box = tuple(float(rec[k]) for k in ("x1", "y1", "x2", "y2"))
                    except (KeyError, TypeError, ValueError):
                        counter.skip("annotation_malformed", f"{where}: bad x1,y1,x2,y2", frames=1, clips=1)
                        continue
                    side = parse_side(rec.get("hand_side"))
                    if side is None:
                        counter.skip("annotation_malformed", f"{where}: bad hand_side", frames=1, clips=1)
                        continue
                    yield self._hand_clip(f"json_{Path(image).with_suffix('')}_hand{h}", index,
                                          str(self.root / "raw" / image), f"raw/{image}", box, side, True,
                                          {"contact_state": rec.get("contact_state")})

    def _videos(self, counter: SkipCounter) -> Iterator[Clip]:
        videos_dir = self.root / self.options.get("videos", "raw_videos")
        tracks_path = self.root / self.options.get("tracks", "tracks/boxes.csv")
        self.require("100DOH raw video", str(videos_dir.relative_to(self.root)),
                     str(tracks_path.relative_to(self.root)), self.options.get("meta", META_FILE))
        fps_table = self._fps_table()
        files = {Path(n).stem: videos_dir / n for n in utf8_names(videos_dir, counter, VIDEO_EXTS)}
        detections = read_box_tracks(tracks_path, counter, float(self.options.get("min_score", 0.5)))
        target = self.options.get("target_fps", 15)
        max_gap = int(self.options.get("max_gap", 5))
        for video_id in sorted(detections):
            if video_id not in files:
                counter.skip("video_missing", f"{videos_dir}/{video_id}.* (named in {tracks_path})", clips=1)
                continue
            if video_id not in fps_table:
                counter.skip("frame_rate_unknown", f"{video_id} is not in {self.options.get('meta', META_FILE)}",
                             clips=1)
                continue
            fps = float(fps_table[video_id])
            tracks = link_tracks(detections[video_id], float(self.options.get("iou_min", 0.3)), max_gap)
            for t, track in enumerate(tracks):
                known = {d.frame: d.box for d in track}
                indices = subsample(track[0].frame, track[-1].frame, fps, target)
                # Interpolate between the nearest detections at native rate, not between kept frames.
                grid = sorted(set(known) | set(indices))
                filled = dict(zip(grid, interpolate_boxes(grid, [known.get(i) for i in grid])))
                frames = [Frame(source_id=f"{video_id}/{i:08d}", index=i, video_index=i, box=filled[i])
                          for i in indices]
                yield Clip(self.dataset, safe_id(f"{video_id}_track{t}"), 0, track[0].side, fps, frames,
                           video=str(files[video_id]), flags={"annotated": False, "video_id": video_id,
                                                             "target_fps": target})
