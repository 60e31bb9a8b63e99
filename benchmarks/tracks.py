"""Hand tracks on six real videos (../shared/realdata): yield, false positives, clip lengths and crop jitter.

Builds a 100DOH raw-video root from the videos and their MediaPipe box tracks, shards it with every native
frame (`target_fps: null`) and with the default 15 fps, and reads the written samples back: clips per video,
median clip length, share of true-hand detections that end up in a written clip, written clips on a false
positive, and the crop-centre displacement between consecutive written frames relative to the crop side.

"Before" is the code before the tracking rework (greedy same-side overlap linking, no filters, no smoothing),
measured on 2026-11-21 with this same script on the previous `pipeline/sources/{boxes,doh100}.py`; its numbers
are the BEFORE constants below. The first rework (Hungarian linking, filters, moving-average smoothing; max_gap 8)
gave native yield 0.870, jitter p90 0.0285, 20 of 36 kept tracks written at 15 fps. Now (second boxes on one hand
dropped, pieces of a hand stitched, local linear smoothing with sd smooth_s 0.25 s and per-axis growth;
2026-11-21): native yield 0.918, 0 false-positive clips, jitter p90 0.0272 (0.46x), median clip 30 frames; 15 fps
yield 0.543, p90 0.0467, 16 of 24 kept tracks written. Per video, `true_missed` says why true-hand detections are
in no clip and `detections_dropped` how the reader counted the detections it dropped.
Run as `python -m benchmarks.tracks`; writes benchmarks/results/tracks.json.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import TRACKS_REPORT, shard

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
RESULTS = Path(__file__).resolve().parent / "results" / "tracks.json"
MIN_FRAMES = 8
# Detector false positives, found by drawing every box on its frame (decord) and looking: (video, first frame,
# last frame, side, x1 range, y1 range) of the box's top-left corner. The pancake chair back is the README's
# rule narrowed to the chair (y1 > 100): rows 248 and 252 (x1 > 300, y1 < 90) are a blurred object at the top
# edge, not the chair. The teddy's paws: the bear's foot at frame 30 (the larger of two L boxes) and its raised
# paw at frame 108; every other teddy box sits on a person's fingers.
FALSE_POSITIVES = [
    ("decord_flipping_a_pancake", 24, 258, "L", (300, 1e9), (100, 1e9)),
    ("cotracker_teddy", 30, 30, "L", (235, 245), (0, 1e9)),
    ("cotracker_teddy", 108, 108, "R", (217, 227), (0, 1e9)),
]
# Measured with the previous code (see the docstring), every native frame / target_fps 15.
BEFORE = {
    "native": {"clips": 26, "frames": 847, "median_len": 20, "yield": 0.837, "fp_clips": 3,
               "jitter_median": 0.0176, "jitter_p90": 0.0586,
               "clips_per_video": {"cotracker_pillow": 5, "cotracker_teddy": 4, "decord_flipping_a_pancake": 7,
                                   "hawor_video_0": 5, "mmaction2_demo_arm_wrestling": 4, "mmaction2_test_makeup": 1}},
    "fps15": {"clips": 17, "frames": 433, "median_len": 16, "yield": 0.448, "fp_clips": 1,
              "jitter_median": 0.0253, "jitter_p90": 0.0880,
              "clips_per_video": {"cotracker_pillow": 4, "cotracker_teddy": 4, "decord_flipping_a_pancake": 3,
                                  "hawor_video_0": 4, "mmaction2_demo_arm_wrestling": 1, "mmaction2_test_makeup": 1}},
}


def is_false_positive(video: str, frame: int, side: str, box) -> bool:
    return any(v == video and f0 <= frame <= f1 and s == side and xr[0] < box[0] <= xr[1] and yr[0] < box[1] <= yr[1]
               for v, f0, f1, s, xr, yr in FALSE_POSITIVES)


def detections(realdata: Path) -> list[dict]:
    rows = []
    for path in sorted(realdata.glob("*_boxes.csv")):
        with open(path) as f:
            for r in csv.DictReader(f):
                box = tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2"))
                rows.append({"video": r["video_id"], "frame": int(r["frame"]), "side": r["side"], "box": box,
                             "fp": is_false_positive(r["video_id"], int(r["frame"]), r["side"], box)})
    return rows


def build_root(realdata: Path, root: Path) -> Path:
    """100DOH raw-video layout: raw_videos/ links, tracks/boxes.csv, file/meta_100DOH_video.txt (decord rates)."""
    import decord

    (root / "raw_videos").mkdir(parents=True)
    (root / "tracks").mkdir()
    (root / "file").mkdir()
    meta = ["video_id frame_rate"]
    for video in sorted((realdata / "videos").iterdir()):
        (root / "raw_videos" / video.name).symlink_to(video)
        meta.append(f"{video.stem} {decord.VideoReader(str(video)).get_avg_fps():.4f}")
    (root / "file" / "meta_100DOH_video.txt").write_text("\n".join(meta) + "\n")
    lines = ["video_id,frame,x1,y1,x2,y2,side,score"]
    for path in sorted(realdata.glob("*_boxes.csv")):
        lines += path.read_text().splitlines()[1:]
    (root / "tracks" / "boxes.csv").write_text("\n".join(lines) + "\n")
    return root


def written_clips(out: Path) -> list[dict]:
    """Every written clip: video, side, native indices, crop boxes and hand boxes in source pixels."""
    chunks: dict[str, list[dict]] = {}
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    chunks.setdefault(meta["sequence"], []).append(meta)
    clips = []
    for parts in chunks.values():
        parts.sort(key=lambda m: m["chunk"])
        fr = {k: [v for m in parts for v in m["frames"][k]] for k in ("index", "crop_box", "hand_box")}
        size, mirrored = parts[0]["store_size"], parts[0]["mirrored"]
        hands = []
        for (x0, y0, x1, _), hb in zip(fr["crop_box"], fr["hand_box"], strict=True):
            s = (x1 - x0) / size
            u1, u2 = (size - 1 - hb[2], size - 1 - hb[0]) if mirrored else (hb[0], hb[2])
            hands.append((x0 + (u1 + 0.5) * s - 0.5, y0 + (hb[1] + 0.5) * s - 0.5, x0 + (u2 + 0.5) * s - 0.5,
                          y0 + (hb[3] + 0.5) * s - 0.5))
        clips.append({"video": parts[0]["flags"]["video_id"], "index": fr["index"], "crop": fr["crop_box"],
                      "hand": hands})
    return clips


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def _covers(clip: dict, det: dict) -> bool:
    """The clip holds the detection's frame and its box there overlaps the detection (IoU >= 0.3)."""
    pos = {i: k for k, i in enumerate(clip["index"])}
    return det["frame"] in pos and _iou(clip["hand"][pos[det["frame"]]], det["box"]) >= 0.3


def _false_positive_clip(clip: dict, dets: list[dict]) -> bool:
    """A clip whose covered detections are mostly false positives is a false-positive track (a true-hand clip
    may brush an adjacent false box, as the teddy's foot next to the fingers at frame 30)."""
    covered = [d["fp"] for d in dets if _covers(clip, d)]
    return bool(covered) and sum(covered) * 2 >= len(covered)


def jitter(clips: list[dict]) -> list[float]:
    """|crop-centre displacement| / crop side between consecutive written frames of every clip."""
    out = []
    for c in clips:
        b = np.asarray(c["crop"], dtype=np.float64)
        centre, side = (b[:, :2] + b[:, 2:]) / 2.0, b[:, 2] - b[:, 0]
        out += list(np.linalg.norm(np.diff(centre, axis=0), axis=1) / side[1:])
    return out


def _missed(true: list[dict], clips: list[dict]) -> dict[str, int]:
    """Why true-hand detections are in no clip: no written clip holds their frame (their track was dropped or too
    short), or one does but its box is elsewhere (on another hand, or lagging a fast hand)."""
    out = Counter("box_elsewhere" if any(d["frame"] in c["index"] for c in clips) else "frame_not_in_clip"
                  for d in true if not any(_covers(c, d) for c in clips))
    return dict(sorted(out.items()))


def _video_row(clips: list[dict], dets: list[dict], report: dict) -> dict:
    true = [d for d in dets if not d["fp"]]
    hands_inside = all(c["crop"][k][0] <= h[0] and c["crop"][k][1] <= h[1] and h[2] <= c["crop"][k][2]
                       and h[3] <= c["crop"][k][3] for c in clips for k, h in enumerate(c["hand"]))
    return {"clips": len(clips), "median_len": statistics.median([len(c["index"]) for c in clips]) if clips else 0,
            "frames": sum(len(c["index"]) for c in clips),
            "true_detections": len(true), "true_in_clips": sum(any(_covers(c, d) for c in clips) for d in true),
            "true_missed": _missed(true, clips), "fp_clips": sum(_false_positive_clip(c, dets) for c in clips),
            "hand_box_in_crop": hands_inside,
            # the sharder's own accounting of the detections (tracks_report.json)
            **{k: report[k] for k in ("detections", "detections_kept", "detections_dropped")}}


def measure(root: Path, out: Path, target_fps: float | None, dets: list[dict]) -> dict:
    recipe = out.with_suffix(".yaml")
    recipe.write_text(f"name: tracks\nsharding: {{seed: 0, context: 2.5, store_size: 128, quality: 80, "
                      f"chunk_frames: 128, min_frames: {MIN_FRAMES}}}\nsources:\n  - type: doh100\n    path: .\n"
                      f"    options: {{parts: [video], target_fps: {'null' if target_fps is None else target_fps}}}\n")
    summary = shard(load_recipe(recipe), root, out, workers=2, progress=False)
    clips = written_clips(out)
    report = json.loads((out / TRACKS_REPORT).read_text())
    per = {video: _video_row([c for c in clips if c["video"] == video], [d for d in dets if d["video"] == video],
                             report[video]) for video in sorted({d["video"] for d in dets})}
    j = jitter(clips)
    total_true = sum(p["true_detections"] for p in per.values())
    return {"videos": per, "clips": len(clips), "frames": sum(p["frames"] for p in per.values()),
            "median_len": statistics.median([len(c["index"]) for c in clips]),
            "yield": sum(p["true_in_clips"] for p in per.values()) / total_true,
            "fp_clips": sum(p["fp_clips"] for p in per.values()),
            "jitter_median": float(np.median(j)), "jitter_p90": float(np.percentile(j, 90)),
            "tracks_listed": summary["clips_in"],  # kept tracks; `clips` of them reach min_frames
            "listing_skips": summary["listing_skips"]["clips"], "skips": summary["skips"]["clips"]}


def run(realdata: Path = REALDATA) -> dict:
    dets = detections(realdata)
    with tempfile.TemporaryDirectory(prefix="bench-tracks-") as tmp:
        root = build_root(realdata, Path(tmp) / "doh100")
        return {name: measure(root, Path(tmp) / f"out-{name}", fps, dets)
                for name, fps in (("native", None), ("fps15", 15))}


def main() -> None:
    if not REALDATA.is_dir():
        sys.exit(f"{REALDATA} is missing")
    after = run()
    print(f"{'run':<7} {'':<7} {'clips':>5} {'median len':>10} {'frames':>6} {'yield':>6} {'fp clips':>8} "
          f"{'jitter med':>10} {'jitter p90':>10}")
    for name, a in after.items():
        for label, m in (("before", BEFORE[name]), ("after", a)):
            print(f"{name:<7} {label:<7} {m['clips']:>5} {m['median_len']:>10} {m['frames']:>6} {m['yield']:>6.3f} "
                  f"{m['fp_clips']:>8} {m['jitter_median']:>10.4f} {m['jitter_p90']:>10.4f}")
        print("        clips per video before/after: " + ", ".join(
            f"{v}: {BEFORE[name]['clips_per_video'][v]}/{p['clips']}" for v, p in a["videos"].items()))
        print(f"        kept tracks reaching {MIN_FRAMES} frames: {a['clips']}/{a['tracks_listed']}; true detections "
              "missed: " + ", ".join(f"{v}: {p['true_missed']}" for v, p in a["videos"].items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"before": BEFORE, "after": after}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
