"""The synthetic hand-video world: clips that behave like hand video, written in official layouts.

Per clip: one static scene under a panning, zooming camera; one hand identity (skin tone, MANO shape); drifting
light; sometimes an object sweeping in front of the hand; finger curls, rotation and translation as smooth random
trajectories (`pipeline.sampledata.motion`); the MANO-format model posed with smplx and rasterised with
self-occlusion and flat shading (`pipeline.sampledata.raster`); optional motion blur (sub-frame renders
averaged), sensor noise and JPEG/MPEG-4 compression. Labels are the same forward pass that made the pixels.

Written under `out/`:
- `doh100/`: unlabelled videos as 100DOH raw videos (`raw_videos/<id>.mp4`, `file/meta_100DOH_video.txt`) with a
  box-track CSV (`tracks/boxes.csv`, the box of the projected mesh, score 1); a share of them mirrored into left
  hands;
- `ho3d/`: labelled training sequences as HO-3D v3 (`train/<SEQ>/rgb/*.jpg`, `meta/*.pkl`, `train.txt`);
- `ho3d_test/`: held-out labelled sequences in the same layout (HO-3D's own evaluation split hides its labels);
- `mano/MANO_RIGHT.pkl`: the synthetic model every hand is posed with; `world.json`: options, counts, speed.

Every clip draws from its own seed (world seed, kind, index), so a clip is the same whatever the worker count.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.atomic import atomic_write_text
from pipeline.errors import HandclrError
from pipeline.geometry import project
from pipeline.models.mano import load_mano, tip_vertex_ids
from pipeline.models.mano_synthetic import write_synthetic_mano
from pipeline.sampledata.layouts import MANO_FILE, ho3d_meta, write_jpeg, write_pickle
from pipeline.sampledata.motion import MotionOptions, exposure_times, hand_motion
from pipeline.sampledata.posing import SHAPE_SIGMA, HandModel, Hands
from pipeline.sampledata.raster import face_normals, paint_mesh, shade
from pipeline.sampledata.scene import PALM_LIFT, camera_views, lighting, occluder, scene_image, sensor, skin
from pipeline.sources.doh100 import TRACK_COLUMNS
from pipeline.typedconfig import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    apply_override,
    load,
    ranged,
    to_data,
)

# Random streams, each seeded by (world seed, stream, index): a clip's content, a video's side, a sequence's JPEG
# quality. Named so that a new one cannot reuse another's number.
STREAMS = {"video": 0, "train": 1, "test": 2, "side": 3, "jpeg": 4}
MARK = np.array([0.0, 255.0, 0.0])  # colour of the label-check mark: the middle fingertip's cap
MARK_TIP = 2  # the middle finger in tip_vertex_ids' order: its HO-3D tip vertex is FreiHAND joint 12
MARK_RADIUS = 0.006  # m: faces with a vertex this close to the tip vertex at rest (big enough to survive JPEG)
WORLD_FILE = "world.json"
WORLD_PARTS = ("doh100", "ho3d", "ho3d_test", "mano")


@dataclass(frozen=True)
class WorldOptions:
    """Sizes and appearance of a world; the defaults are `make demo`'s."""

    seed: ranged(int, ge=0, lt=2**32) = 0  # one word of each clip's SeedSequence entropy
    videos: NonNegativeInt = 48  # unlabelled 100DOH raw videos
    video_frames: PositiveInt = 120
    sequences: NonNegativeInt = 24  # labelled HO-3D training sequences
    sequence_frames: PositiveInt = 80
    test_sequences: NonNegativeInt = 12  # held-out labelled sequences
    test_frames: PositiveInt = 40
    fps: PositiveFloat = 30.0
    width: ranged(int, ge=64) = 320
    height: ranged(int, ge=64) = 240
    focal: PositiveFloat = 300.0
    left_share: Probability = 0.3  # videos mirrored into left hands
    occluder_share: Probability = 0.3  # clips with an object sweeping in front of the hand
    noise: NonNegativeFloat = 2.0  # sensor read noise, grey levels
    motion_blur: PositiveInt = 2  # sub-frame renders averaged per frame (1: none)
    jpeg_quality: tuple[ranged(int, ge=1, le=100), ranged(int, ge=1, le=100)] = (75, 95)  # low, high
    marks: bool = False  # paint the middle fingertip pure green (label-check tests)
    motion: MotionOptions = field(default_factory=MotionOptions)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.focal, 0, self.width / 2], [0, self.focal, self.height / 2], [0, 0, 1]])


@dataclass
class RenderedClip:
    frames: list[np.ndarray]  # RGB uint8, the right hand as rendered (mirroring is the writer's)
    hands: Hands  # labels at each frame's mid-exposure time
    boxes: np.ndarray  # [F, 4] box of the projected mesh, clipped to the frame
    inside: np.ndarray  # [F] share of the unclipped box inside the frame


@lru_cache(maxsize=2)
def _model(path: str) -> tuple[HandModel, np.ndarray, np.ndarray, np.ndarray]:
    """The posed model, its faces, its rest joints and which faces look palm-wards at rest (lighter skin)."""
    arrays = load_mano(path)
    faces = np.asarray(arrays["f"], np.int64)
    rest = np.asarray(arrays["v_template"], np.float64)
    joints = np.asarray(arrays["J_regressor"], np.float64) @ rest
    palm = face_normals(rest, faces)[:, 2] < 0
    return HandModel(arrays), faces, joints, palm


def _boxes(uv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = uv.min(axis=1), uv.max(axis=1)
    box = np.concatenate([lo, hi], axis=1)
    clipped = np.clip(box, 0, [width, height, width, height])
    area = np.prod(np.maximum(box[:, 2:] - box[:, :2], 1e-6), axis=1)
    inside = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1) / area
    return clipped, inside


def render_clip(opts: WorldOptions, mano_path: str, kind: str, index: int, frames: int) -> RenderedClip:
    """Render one clip (see the module docstring); deterministic in (opts.seed, kind, index). A frame is the mean
    of `motion_blur` renders at instants spread evenly over its exposure and centred on its time, where its
    labels are taken."""
    rng = np.random.default_rng([opts.seed, STREAMS[kind], index])
    model, faces, rest_joints, palm = _model(mano_path)
    label_t = np.arange(frames) / opts.fps
    exposure = exposure_times(frames, opts.fps, opts.motion_blur)
    pose, place = hand_motion(rng, np.concatenate([label_t, exposure.ravel()]), rest_joints, opts.motion)
    shape = np.repeat(rng.normal(0.0, SHAPE_SIGMA, (1, 10)), len(pose), axis=0)
    posed = model.place(pose, shape, place, flat_hand_mean=True, tips="ho3d")
    tone = skin(rng)
    albedo = np.where(palm[:, None], np.minimum(tone * PALM_LIFT, 255), tone)
    mark_faces = _cap(model, faces, tip_vertex_ids("ho3d")[MARK_TIP]) if opts.marks else None
    views = camera_views(rng, scene_image(rng, opts.height, opts.width), label_t, opts.height, opts.width)
    light = lighting(rng, label_t)
    blocker = occluder(rng, opts.height, opts.width) if rng.random() < opts.occluder_share else None
    K, duration = opts.K, max(label_t[-1], 1e-9)
    out = []
    for i in range(frames):
        acc = np.zeros((opts.height, opts.width, 3), np.float32)
        for j in range(opts.motion_blur):
            k = frames + i * opts.motion_blur + j  # row of this instant in `posed`
            img = views[i].copy()
            colours = shade(face_normals(posed.verts[k], faces), albedo, light.light[i], light.ambient)
            if mark_faces is not None:
                colours[mark_faces] = MARK
            paint_mesh(img, posed.verts[k], faces, K, colours)
            if blocker is not None:
                blocker.draw(img, float(np.clip(exposure[i, j] / duration, 0.0, 1.0)))
            acc += img
        out.append(sensor(acc / opts.motion_blur, light.gain[i], opts.noise, rng))
    hands = Hands(*(getattr(posed, f)[:frames] for f in ("pose", "shape", "trans", "joints", "verts")))
    uv = np.stack([project(K, v) for v in hands.verts])
    boxes, inside = _boxes(uv, opts.width, opts.height)
    return RenderedClip(out, hands, boxes, inside)


def world_options_from(seed: int, assignments: list[str]) -> WorldOptions:
    """WorldOptions from `--set key=value` assignments (typed, unknown keys refused) and the seed."""
    data: dict = {}
    for assignment in assignments:
        apply_override(data, assignment)
    return load(WorldOptions, {**data, "seed": seed}, "world options")


def _cap(model: HandModel, faces: np.ndarray, vertex: int) -> np.ndarray:
    """[F] bool: the faces touching the rest-pose vertices within MARK_RADIUS of `vertex`."""
    rest = np.asarray(model.arrays["v_template"], np.float64)
    near = np.flatnonzero(np.linalg.norm(rest - rest[vertex], axis=1) < MARK_RADIUS)
    return np.isin(faces, near).any(axis=1)


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise HandclrError(f"{path}: OpenCV cannot write MPEG-4 (mp4v) video here")
    for img in frames:
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()


def video_id(opts: WorldOptions, index: int) -> str:
    return f"world_{index:04d}_s{opts.seed}"


def _video_clip(opts: WorldOptions, mano: str, out: Path, index: int) -> dict:
    clip = render_clip(opts, mano, "video", index, opts.video_frames)
    left = np.random.default_rng([opts.seed, STREAMS["side"], index]).random() < opts.left_share
    frames, boxes = clip.frames, clip.boxes.copy()
    if left:  # a left hand: the mirror image of a right one
        frames = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
        boxes[:, [0, 2]] = np.clip(opts.width - 1 - boxes[:, [2, 0]], 0, opts.width)  # column c -> W - 1 - c
    vid = video_id(opts, index)
    _write_video(out / "doh100" / "raw_videos" / f"{vid}.mp4", frames, opts.fps)
    rows = [f"{vid},{i},{b[0]:.2f},{b[1]:.2f},{b[2]:.2f},{b[3]:.2f},{'L' if left else 'R'},1.00"
            for i, b in enumerate(boxes) if clip.inside[i] >= 0.5]
    return {"kind": "video", "id": vid, "frames": len(frames), "rows": rows, "left": bool(left)}


def sequence_name(kind: str, index: int) -> str:
    return f"{'W' if kind == 'train' else 'T'}{index:03d}"


def _sequence_clip(opts: WorldOptions, mano: str, out: Path, kind: str, index: int) -> dict:
    n = opts.sequence_frames if kind == "train" else opts.test_frames
    clip = render_clip(opts, mano, kind, index, n)
    root = out / ("ho3d" if kind == "train" else "ho3d_test") / "train" / sequence_name(kind, index)
    jpeg_rng = np.random.default_rng([opts.seed, STREAMS["jpeg"], STREAMS[kind], index])
    quality = jpeg_rng.integers(min(opts.jpeg_quality), max(opts.jpeg_quality), endpoint=True)
    for i, img in enumerate(clip.frames):
        write_jpeg(root / "rgb" / f"{i:04d}.jpg", img, int(quality))
        write_pickle(root / "meta" / f"{i:04d}.pkl", ho3d_meta(clip.hands, i, opts.K))
    return {"kind": kind, "id": sequence_name(kind, index), "frames": n}


def _task(opts: WorldOptions, mano: str, out: Path, kind: str, index: int) -> dict:
    start = time.process_time()
    record = (_video_clip(opts, mano, out, index) if kind == "video"
              else _sequence_clip(opts, mano, out, kind, index))
    return {**record, "cpu_s": time.process_time() - start}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _plan(opts: WorldOptions) -> list[tuple[str, int]]:
    return ([("video", i) for i in range(opts.videos)] + [("train", i) for i in range(opts.sequences)]
            + [("test", i) for i in range(opts.test_sequences)])


def _run(opts: WorldOptions, mano: str, out: Path, workers: int, progress: bool) -> list[dict]:
    plan = _plan(opts)
    bar = tqdm(total=len(plan), desc="world clips", unit="clip", disable=not progress)
    if workers <= 1:  # in this process, whose thread settings stay as they are
        records = []
        for kind, i in plan:
            records.append(_task(opts, mano, out, kind, i))
            bar.update()
        bar.close()
        return records
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = [pool.submit(_task, opts, mano, out, kind, i) for kind, i in plan]
        records = []
        for f in futures:
            records.append(f.result())
            bar.update()
    bar.close()
    return records


def _write_tables(opts: WorldOptions, out: Path, records: list[dict]) -> None:
    videos = [r for r in records if r["kind"] == "video"]
    if videos:
        (out / "doh100" / "file").mkdir(parents=True, exist_ok=True)
        (out / "doh100" / "tracks").mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "doh100" / "file" / "meta_100DOH_video.txt", "video_id genre youtube_id frame_rate "
                          "num_frames\n" + "".join(f"{r['id']} world s{opts.seed}v{r['id'][6:10]} {opts.fps:g} "
                                                   f"{r['frames']}\n" for r in videos))
        atomic_write_text(out / "doh100" / "tracks" / "boxes.csv", ",".join(TRACK_COLUMNS) + "\n"
                          + "".join(row + "\n" for r in videos for row in r["rows"]))
    for kind, root in (("train", "ho3d"), ("test", "ho3d_test")):
        seqs = [r for r in records if r["kind"] == kind]
        if seqs:
            atomic_write_text(out / root / "train.txt",
                              "".join(f"{r['id']}/{i:04d}\n" for r in seqs for i in range(r["frames"])))


def generate_world(out: str | Path, opts: WorldOptions = WorldOptions(), workers: int = 1,
                   progress: bool = True) -> dict:
    """Render and write the world under `out` (replacing WORLD_PARTS of an earlier world); returns (and writes to
    world.json) the options, the counts and the speed of rendering and writing (frames per second per core:
    frames over the workers' summed CPU time, JPEG / MPEG-4 encoding included)."""
    out = Path(out)
    for part in WORLD_PARTS:  # a world is written whole: nothing of an earlier one may be sharded with it
        if (out / part).is_dir():
            shutil.rmtree(out / part)
    (out / WORLD_FILE).unlink(missing_ok=True)
    (out / MANO_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_synthetic_mano(out / MANO_FILE, 0)
    start = time.perf_counter()
    records = _run(opts, str(out / MANO_FILE), out, max(1, workers), progress)
    _write_tables(opts, out, records)
    wall = time.perf_counter() - start
    frames = sum(r["frames"] for r in records)
    cpu = sum(r["cpu_s"] for r in records)
    summary = {"options": to_data(opts), "workers": max(1, workers), "frames": frames, "wall_s": round(wall, 2),
               "frames_per_s": round(frames / wall, 1), "frames_per_s_per_core": round(frames / max(cpu, 1e-9), 1),
               "videos": sum(r["kind"] == "video" for r in records),
               "left_videos": sum(bool(r.get("left")) for r in records),
               "box_rows": sum(len(r.get("rows", ())) for r in records),
               "train_sequences": sum(r["kind"] == "train" for r in records),
               "test_sequences": sum(r["kind"] == "test" for r in records), "cpus": os.cpu_count()}
    atomic_write_text(out / WORLD_FILE, json.dumps(summary, indent=1))
    return summary
