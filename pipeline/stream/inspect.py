"""What the model is fed, as pictures: a grid of augmented tuples and the sampled offsets against the
formulas (`handclr inspect DIR --samples OUT`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from pipeline.errors import StreamError
from pipeline.stream.config import DatasetSpec, StreamConfig, preset_augment
from pipeline.stream.dataset import HandStream
from pipeline.stream.items import ROLE_ANCHOR, ROLE_NEGATIVE, ROLE_POSITIVE
from pipeline.stream.loader import StreamLoader
from pipeline.stream.sampling import eligible_anchors, negative_weights, positive_weights, tempclr_draw

ROLE_NAMES = {ROLE_ANCHOR: "A", ROLE_POSITIVE: "P", ROLE_NEGATIVE: "N"}
TILE = 128


def _usable_datasets(directory: Path, cfg: StreamConfig) -> list[DatasetSpec]:
    """Datasets of the shard set with at least one clip long enough for the mode."""
    rows = pq.read_table(directory / "manifest.parquet", columns=["dataset", "n_frames", "fps"]).to_pylist()
    longest: dict[str, tuple[int, float | None]] = {}
    for r in rows:
        if r["n_frames"] > longest.get(r["dataset"], (0, None))[0]:
            longest[r["dataset"]] = (r["n_frames"], r["fps"])
    specs = []
    for name, (n, fps) in sorted(longest.items()):
        spec = DatasetSpec(name, str(directory))
        if cfg.mode != "tempclr" or len(eligible_anchors(n, cfg.window(spec, fps), cfg.positives, cfg.negatives)):
            specs.append(spec)
    if not specs:
        raise StreamError(f"{directory}: no dataset has clips long enough for {cfg.mode}")
    return specs


def _label(tile: np.ndarray, text: str) -> None:
    cv2.rectangle(tile, (0, 0), (TILE - 1, 16), (0, 0, 0), -1)
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def tuples_grid(directory: Path, mode: str, rows: int, seed: int) -> tuple[np.ndarray, StreamConfig]:
    """rows x views tiles: anchor | positives | negatives (TempCLR), labelled with dataset and time offset."""
    probe = StreamConfig((DatasetSpec("probe", str(directory)),), mode=mode)
    specs = tuple(_usable_datasets(directory, probe))
    cfg = StreamConfig(specs, mode=mode, batch_size=rows, seed=seed, out_size=TILE, executor="cv2",
                       augment=preset_augment(mode), items_per_epoch=rows)
    batch = next(iter(StreamLoader(HandStream(cfg), num_workers=0)))
    frames = batch["frames"].numpy()
    grid = np.zeros((rows * TILE, cfg.views * TILE, 3), np.uint8)
    for b in range(rows):
        for v in range(cfg.views):
            tile = np.ascontiguousarray(frames[b, v])
            role = int(batch["role"][b, v])
            name = ROLE_NAMES.get(role, f"v{v}")
            head = f"{specs[int(batch['dataset'][b])].name} " if v == 0 else ""
            _label(tile, f"{head}{name} {int(batch['offset'][b, v]):+d}")
            grid[b * TILE:(b + 1) * TILE, v * TILE:(v + 1) * TILE] = tile
    return grid, cfg


def offset_histograms(cfg: StreamConfig, n: int = 128, k: int = 15, draws: int = 20000) -> np.ndarray:
    """First positive and first negative offsets of `draws` items on an n-frame clip (bars) against the written
    law averaged over the uniform anchor (dots)."""
    rng = np.random.default_rng(cfg.seed)
    pos, neg = np.zeros(2 * n + 1), np.zeros(2 * n + 1)
    for _ in range(draws):
        d = tempclr_draw(rng, n, k, cfg.positives, cfg.negatives, cfg.positive_law, cfg.negative_law)
        pos[int(d.positives[0]) - d.anchor + n] += 1
        if len(d.negatives):
            neg[int(d.negatives[0]) - d.anchor + n] += 1
    exp_pos, exp_neg = np.zeros(2 * n + 1), np.zeros(2 * n + 1)
    anchors = eligible_anchors(n, k, cfg.positives, cfg.negatives)
    for a in anchors:
        j = np.arange(n)
        dist = np.abs(j - a)
        inside, outside = (dist >= 1) & (dist <= k), dist > k
        wp = positive_weights(dist[inside], k, cfg.positive_law)
        exp_pos[j[inside] - a + n] += draws * wp / wp.sum() / len(anchors)
        if cfg.negatives:
            wn = negative_weights(dist[outside], cfg.negative_law)
            exp_neg[j[outside] - a + n] += draws * wn / wn.sum() / len(anchors)
    panels = [_histogram(pos[n - k:n + k + 1], exp_pos[n - k:n + k + 1], -k,
                         f"positives ({cfg.positive_law}, k={k})"),
              _histogram(neg, exp_neg, -n, f"negatives ({cfg.negative_law}, n={n})")]
    return np.concatenate(panels, axis=0)


def _histogram(observed: np.ndarray, expected: np.ndarray, first: int, title: str, w: int = 900,
               h: int = 300) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    top = max(observed.max(), expected.max(), 1.0)
    m = len(observed)
    bar = (w - 40) / m
    for i, (o, e) in enumerate(zip(observed, expected, strict=True)):
        x0 = int(20 + i * bar)
        x1 = max(x0 + 1, int(20 + (i + 1) * bar) - 1)
        cv2.rectangle(img, (x0, h - 30), (x1, int(h - 30 - o / top * (h - 70))), (200, 140, 60), -1)
        if e > 0:
            cv2.circle(img, ((x0 + x1) // 2, int(h - 30 - e / top * (h - 70))), 3, (30, 30, 220), -1)
    cv2.putText(img, f"{title}: bars sampled, dots formula", (20, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                cv2.LINE_AA)
    for i in (0, m // 2, m - 1):
        cv2.putText(img, f"{first + i:+d}", (int(20 + i * bar), h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return img


def write_samples(directory: str | Path, out: str | Path, mode: str = "tempclr", rows: int = 8,
                  seed: int = 0) -> list[Path]:
    directory, out = Path(directory), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid, cfg = tuples_grid(directory, mode, rows, seed)
    paths = [out / "tuples.png"]
    cv2.imwrite(str(paths[0]), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if mode == "tempclr":
        paths.append(out / "offsets.png")
        cv2.imwrite(str(paths[1]), offset_histograms(cfg))
    return paths


