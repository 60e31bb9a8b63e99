"""Streaming-loader throughput against the JPEG decode limit and a seed-style baseline (run by `make bench`).

Per core: the decode limit, the seed-style baseline and the stream's one DataLoader worker process each run
pinned to the same core (OpenCV and torch single-threaded); the consuming main process sits on another core
when the machine has one, as in training, where it feeds the accelerator. Every measurement handles the SAME
frames — the ones the stream's sampler picks in epoch 0 (TempCLR: anchor + 1 positive + 2 negatives per item) —
and produces the same output shape, 224 x 224 per view:

* decode_limit: simplejpeg decode of exactly those frames' JPEG bytes, already in memory, into a preallocated
  array of the batch's shape [B x V, 256, 256, 3]. No tar reading, no sampling, no process boundary: the
  ceiling of any loader of these shards.
* stream_decode_only: our stream with the device-side executor (it decodes into the batch; warping happens
  later on the accelerator, so it is not part of this figure).
* stream_cv2: our stream with the worker-side cv2 executor (warp + colour + Sobel in the worker, 224² out).
* seed_baseline: how the seeds' public code does it: one original 640x480 JPEG file per frame on disk, PIL
  decode, rotation of the full frame, crop and resize to 224, torchvision transforms per frame (tensor
  conversion, channel noise, random grey, normalisation), torch.stack per item. Being ~30x slower, it
  handles the first SEED_ITEMS items' frames only; rates are per frame, so they compare directly.

Each is warmed up once and repeated; medians are reported (frames/s/core) with ratios, to stdout and to
benchmarks/results/stream.json.

Run from the repository root as a module, `python -m benchmarks.stream` (what `make bench` does): the benchmarks
import each other as the `benchmarks` package, which `python benchmarks/stream.py` cannot see.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import simplejpeg
import torch
import torchvision.transforms.functional as TF
import webdataset as wds

from benchmarks.sharding import cpu_model, pin_to_one_core
from pipeline.sampledata.layouts import ho3d
from pipeline.sharding.recipe import load_recipe
from pipeline.sharding.run import shard
from pipeline.stream import DatasetSpec, HandStream, StreamConfig, StreamLoader
from pipeline.stream.clipdata import clip_id

GOAL_LIMIT, GOAL_SEED = 0.85, 5.0
REPETITIONS = 5
ITEMS, BATCH, ITEMS_PER_SAMPLE = 1536, 32, 32
SEED_ITEMS = 256  # the baseline is ~30x slower: it runs on the first 256 items' frames
RESULTS = Path(__file__).resolve().parent / "results" / "stream.json"
ALLOWED = set(os.sched_getaffinity(0))
WORK_CORE = min(ALLOWED)  # pin_to_one_core() takes the same one
RECIPE = """\
name: bench-stream
sharding: {seed: 0, context: 2.5, store_size: 256, quality: 90, chunk_frames: 128, min_frames: 8}
sources:
  - type: ho3d
    path: ho3d
    options: {fps: 30}
"""


def stream_config(shards: Path, executor: str) -> StreamConfig:
    return StreamConfig((DatasetSpec("ho3d", str(shards)),), mode="tempclr", batch_size=BATCH, out_size=224,
                        positives=1, negatives=2, items_per_sample=ITEMS_PER_SAMPLE, items_per_epoch=ITEMS,
                        executor=executor)


def stream_run(loader: StreamLoader) -> int:
    loader.set_epoch(0)
    frames = 0
    for batch in loader:
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
    return frames


def picked_frames(shards: Path) -> tuple[list[bytes], list[dict]]:
    """JPEG bytes and seed-baseline records of every frame epoch 0 picks, in stream order."""
    meta, jpgs = {}, {}
    for s in wds.WebDataset(sorted(str(p) for p in shards.glob("shard-*.tar")), shardshuffle=False,
                            empty_check=False):
        m = json.loads(s["json"])
        meta[clip_id(m["key"])], jpgs[clip_id(m["key"])] = m, s["jpgs"]
    data, records = [], []
    for batch in StreamLoader(HandStream(stream_config(shards, "none")), num_workers=0):
        for b in range(batch["clip"].shape[0]):
            m, blob = meta[int(batch["clip"][b])], jpgs[int(batch["clip"][b])]
            fr = m["frames"]
            views = []
            for v, p in enumerate(batch["position"][b].tolist()):
                data.append(blob[fr["offset"][p]:fr["offset"][p] + fr["length"][p]])
                x0, y0, x1, y1 = fr["crop_box"][p]
                f = (x1 - x0) / m["store_size"]
                hx0, hy0, hx1, hy1 = fr["hand_box"][p]
                views.append({"path": str(Path(m["source_root"]) / fr["source_id"][p]),
                              "box": (x0 + hx0 * f, y0 + hy0 * f, x0 + hx1 * f, y0 + hy1 * f),
                              "geometry": batch["geometry"][b, v].tolist(),
                              "appearance": batch["appearance"][b, v].tolist()})
            records.append(views)
    return data, records


def decode_limit(data: list[bytes]) -> int:
    """Decode the picked frames into a preallocated batch-shaped array: the same output as the stream's."""
    out = np.empty((BATCH * 4, 256, 256, 3), np.uint8)
    for i, jpeg in enumerate(data):
        simplejpeg.decode_jpeg(jpeg, "RGB", buffer=out[i % len(out)])
    return len(data)


def seed_view(view: dict, out: int = 224, margin: float = 1.5) -> torch.Tensor:
    img = PIL.Image.open(view["path"]).convert("RGB")
    angle, scale, tx, ty = view["geometry"]
    x0, y0, x1, y1 = view["box"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    img = img.rotate(math.degrees(angle), resample=PIL.Image.BILINEAR, center=(cx, cy))
    side = margin * max(x1 - x0, y1 - y0) / scale
    cx, cy = cx - tx * side, cy - ty * side
    img = img.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    t = TF.to_tensor(img.resize((out, out), PIL.Image.BILINEAR))
    app = view["appearance"]
    t = (t * torch.tensor(app[0:3]).view(3, 1, 1)).clamp(0, 1)
    if app[4] >= 0.5:
        t = TF.rgb_to_grayscale(t, num_output_channels=3)
    return TF.normalize(t, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def seed_baseline(records: list[list[dict]]) -> int:
    frames = 0
    for i in range(0, len(records), BATCH):
        items = [torch.stack([seed_view(v) for v in views]) for views in records[i:i + BATCH]]
        torch.stack(items)
        frames += sum(len(v) for v in records[i:i + BATCH])
    return frames


def timed(fn, repetitions: int) -> tuple[int, list[float]]:
    frames = fn()
    runs = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        if fn() != frames:
            raise RuntimeError("a repetition handled a different number of frames")
        runs.append(time.perf_counter() - t0)
    return frames, runs


def pin_worker(_: int) -> None:
    os.sched_setaffinity(0, {WORK_CORE})
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def main() -> None:
    core = pin_to_one_core()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        tmp_path = Path(tmp)
        ho3d(tmp_path / "data" / "ho3d", np.random.default_rng(0), version=3, frames=150, eval_frames=50)
        (tmp_path / "bench.yaml").write_text(RECIPE)
        shards = tmp_path / "shards"
        shard(load_recipe(tmp_path / "bench.yaml"), tmp_path / "data", shards, workers=1, progress=False)
        data, records = picked_frames(shards)
        runs = {"decode_limit": timed(lambda: decode_limit(data), REPETITIONS),
                "seed_baseline": timed(lambda: seed_baseline(records[:SEED_ITEMS]), max(2, REPETITIONS // 2))}
        others = sorted(ALLOWED - {core})
        os.sched_setaffinity(0, {others[0]} if others else {core})  # the consumer, off the worker's core
        for name, ex in (("stream_decode_only", "none"), ("stream_cv2", "cv2")):
            loader = StreamLoader(HandStream(stream_config(shards, ex)), num_workers=1, reuse_buffers=True,
                                  worker_init_fn=pin_worker)
            runs[name] = timed(lambda loader=loader: stream_run(loader), REPETITIONS)
        os.sched_setaffinity(0, {core})
    rates = {name: frames / statistics.median(r) for name, (frames, r) in runs.items()}
    report = {**rates,
              "ratio_decode_only_vs_limit": rates["stream_decode_only"] / rates["decode_limit"],
              "ratio_cv2_vs_limit": rates["stream_cv2"] / rates["decode_limit"],
              "ratio_decode_only_vs_seed": rates["stream_decode_only"] / rates["seed_baseline"],
              "ratio_cv2_vs_seed": rates["stream_cv2"] / rates["seed_baseline"],
              "goals": {"decode_only_vs_limit": GOAL_LIMIT, "decode_only_vs_seed": GOAL_SEED},
              "runs_s": {name: r for name, (_, r) in runs.items()},
              "context": {"frames_per_run": len(data), "items": ITEMS, "seed_baseline_items": SEED_ITEMS,
                          "batch": BATCH, "views": 4, "items_per_sample": ITEMS_PER_SAMPLE,
                          "stored": "256x256 JPEG q90 (HO-3D v3 layout)", "output": "224x224",
                          "repetitions": REPETITIONS, "statistic": "median after a warm-up", "core": core,
                          "consumer_on_other_core": len(ALLOWED) > 1, "cpu": cpu_model(),
                          "torch": torch.__version__, "opencv": cv2.__version__,
                          "simplejpeg": simplejpeg.__version__}}
    print(f"{'measurement':<20} {'frames/s/core':>14} {'vs limit':>9} {'vs seed':>8}")
    for name in ("decode_limit", "stream_decode_only", "stream_cv2", "seed_baseline"):
        print(f"{name:<20} {rates[name]:>14.1f} {rates[name] / rates['decode_limit']:>9.2f} "
              f"{rates[name] / rates['seed_baseline']:>8.2f}")
    print(f"goals: decode-only >= {GOAL_LIMIT} x limit ({report['ratio_decode_only_vs_limit']:.2f}), "
          f">= {GOAL_SEED} x seed ({report['ratio_decode_only_vs_seed']:.2f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
