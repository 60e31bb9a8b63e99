"""`handclr embed-report`: is pre-training working? Encoders compared on the same frames of a few clips.

- t-SNE of the pooled encoder features, one panel per encoder, hue by clip and brightness by time (TempCLR Fig. 4;
  finetune_eval.md §5.1, §9 #15: L2-normalised features, PCA to 50 dimensions, perplexity 30, fixed seed);
- temporal retrieval (the pre-training probe's `temporal_retrieval`): the share of each frame's k nearest
  neighbours (cosine) that are frames of its own clip within ±w positions, next to its chance level (what
  randomly placed embeddings score);
- cosine similarity against |Δt| within clips (finetune_eval.md §5.5 #1);
- PeCLR's equivariance of fine-tuned models' 2D output, L_equiv and L_improv (finetune_eval.md §2.8).

Frames are read as the stream reads them (shard lists, sample parsing, items, batch builder) with augmentation off:
every frame of the first clip samples of each dataset, cropped as in pre-training. The numbers are pure functions
of embeddings and ids; figures are drawn like pipeline/evaluate/plots.py's (own Agg canvas, no pyplot).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import __version__
from pipeline.atomic import atomic_write_text
from pipeline.augment.affine import view_affine
from pipeline.augment.params import TEMPCLR
from pipeline.augment.torch_exec import model_input, normalised_theta
from pipeline.errors import ConfigError, SkipError, StreamError
from pipeline.evaluate.plots import new_figure, save_figure
from pipeline.evaluate.report import plain_json
from pipeline.evaluate.sweep import dataset_samples
from pipeline.models.reconstructor import build_backbone
from pipeline.stream import DatasetSpec, StreamConfig
from pipeline.stream.batch import BatchBuilder, unpack
from pipeline.stream.clipdata import ClipSample
from pipeline.stream.items import clip_items
from pipeline.stream.stats import StreamStats
from pipeline.train.components.probe import temporal_retrieval

FORMAT = "handclr-embedding-report/1"
TSNE_PCA_DIMS, TSNE_PERPLEXITY, TSNE_ITERATIONS = 50, 30.0, 1000
TSNE_EXACT_MAX = 500  # frames up to which exact t-SNE is faster than Barnes-Hut (ten times at 150 frames)
# PeCLR Supp. §11: rotations equidistant in [-80°, 80°], translations in [-25, 25]² px of a 224 px crop (scaled to
# the model's input size).
ROTATIONS_DEG = tuple(range(-80, 81, 20))
TRANSLATIONS_224 = (-25.0, -12.5, 0.0, 12.5, 25.0)
REFERENCE_SIZE = 224
EQUIVARIANCE_FRAMES = 64


# ---- frames ----------------------------------------------------------------------------------------------------

def _samples(spec: DatasetSpec, slot_size: int, stats: StreamStats) -> Iterator[ClipSample]:
    """The dataset's clip samples with at least two frames (a single frame has no temporal neighbour), in shard
    order."""
    return (clip for clip in dataset_samples(spec, slot_size, stats) if clip.n >= 2)


def _clip_batch(cfg: StreamConfig, clip: ClipSample, dataset_index: int) -> dict:
    """All frames of one clip sample as one stream batch of a single item (sequence mode over the whole clip at
    interval 1, identity geometry), plus its ids."""
    cfg = replace(cfg, sequence_length=clip.n)
    item = clip_items(cfg, clip, 0, 0, 0, dataset_index)[0]
    builder = BatchBuilder(cfg, shared=False)
    batch = unpack(dict(builder.new()))
    builder.put({k: t.numpy() for k, t in batch.items() if isinstance(t, torch.Tensor)}, 0, item, dataset_index)
    return {**batch, "key": clip.key, "sequence": clip.sequence or clip.key}


def clip_batches(data: str, datasets: Sequence[str], sequences: int, size: int,
                 stats: StreamStats | None = None) -> list[dict]:
    """One batch per clip sample (its frames in order, no augmentation) for the first `sequences` samples of at
    least two frames of each dataset in shard set `data`, at input size `size`."""
    stats = stats if stats is not None else StreamStats()
    batches = []
    for d, name in enumerate(datasets):
        spec = DatasetSpec(name, data)
        cfg = StreamConfig(datasets=(spec,), mode="sequence", batch_size=1, out_size=size, sequence_interval=1,
                           augment=replace(TEMPCLR, enabled=False))
        for clip in itertools.islice(_samples(spec, cfg.slot_size, stats), sequences):
            try:
                batches.append(_clip_batch(cfg, clip, d))
            except SkipError as exc:
                stats.skip(exc.reason, str(exc))
    if not batches:
        raise StreamError(f"{data}: no clip sample of two or more frames in datasets {list(datasets)}; "
                          f"skips: {dict(stats.skips)}")
    return batches


def frame_ids(batches: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(clip [N], position [N]): each frame's clip (index into `batches`) and position in it, in embedding order."""
    clip = np.concatenate([np.full(b["position"].shape[1], i) for i, b in enumerate(batches)])
    return clip, np.concatenate([b["position"][0].numpy() for b in batches])


# ---- encoders --------------------------------------------------------------------------------------------------

def encoder_backbone(source: str) -> str | None:
    """The timm name an encoder.safetensors was pre-trained as (its metadata); None for random / imagenet."""
    if source in ("random", "imagenet"):
        return None
    if not Path(source).is_file():
        raise ConfigError(f"encoder {source!r} is neither random, imagenet nor an encoder.safetensors file")
    with safetensors.safe_open(source, "pt") as f:
        return (f.metadata() or {}).get("timm_model")


def load_encoder(source: str, backbone: str, seed: int = 0) -> nn.Module:
    """timm backbone without classifier, in eval mode: `random` (timm's initialisation under `seed`, the global RNG
    untouched), `imagenet` (timm's pretrained weights, downloaded) or an encoder.safetensors path."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone(backbone, source).eval()


def encoder_labels(sources: Sequence[str]) -> list[str]:
    """Short unique names for the figures: `random`, `imagenet`, or an encoder's run directory name."""
    labels = []
    for source in sources:
        label = source if source in ("random", "imagenet") else (Path(source).parent.name or Path(source).stem)
        labels.append(label if label not in labels else f"{label}-{len(labels)}")
    return labels


@torch.no_grad()
def embed(model: nn.Module, batches: Sequence[dict], size: int, device: torch.device) -> np.ndarray:
    """Pooled features [N, F] (float64) of every frame of `batches`, in order."""
    model.to(device)
    out = []
    for batch in batches:
        on = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out.append(model(model_input(on, size)).double().cpu().numpy())
    return np.concatenate(out)


# ---- measures ------------------------------------------------------------------------------------------------

def _unit(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def retrieval_chance(clip: np.ndarray, position: np.ndarray, w: int) -> float:
    """Expected temporal_retrieval of embeddings that ignore time and clip (any k): each neighbour is a uniform draw
    among the other frames, so frame i scores (its other frames within ±w) / (N - 1) on average; frames with no such
    frame are left out, as temporal_retrieval leaves them out. NaN when none has one."""
    clip, position = np.asarray(clip), np.asarray(position)
    near = (clip[:, None] == clip[None]) & (np.abs(position[:, None] - position[None]) <= w)
    np.fill_diagonal(near, False)
    counts = near.sum(axis=1)
    return float((counts[counts > 0] / (len(near) - 1)).mean()) if counts.any() else math.nan


def cosine_vs_dt(emb: np.ndarray, clip: np.ndarray, position: np.ndarray, max_dt: int) -> dict[str, np.ndarray]:
    """Cosine similarity of frame pairs of the same clip against their distance |Δt| = 1..max_dt in positions:
    `dt`, `mean`, `std` (NaN where no pair) and `pairs` per Δt. Should decay smoothly with Δt."""
    z = _unit(emb)
    clip, position = np.asarray(clip), np.asarray(position)
    i, j = np.triu_indices(len(z), k=1)
    same = clip[i] == clip[j]
    i, j = i[same], j[same]
    dt, sim = np.abs(position[i] - position[j]), np.einsum("nd,nd->n", z[i], z[j])
    steps = np.arange(1, max_dt + 1)
    groups = [sim[dt == d] for d in steps]
    return {"dt": steps, "mean": np.array([g.mean() if len(g) else np.nan for g in groups]),
            "std": np.array([g.std() if len(g) else np.nan for g in groups]),
            "pairs": np.array([len(g) for g in groups])}


def tsne(emb: np.ndarray, seed: int = 0, perplexity: float = TSNE_PERPLEXITY,
         pca_dims: int = TSNE_PCA_DIMS) -> tuple[np.ndarray, dict[str, Any]]:
    """2D t-SNE [N, 2] of L2-normalised features after PCA to `pca_dims`, and the parameters used (the perplexity
    is capped at (N - 1) / 3 for few frames; exact gradients up to TSNE_EXACT_MAX frames); the same seed gives the
    same points."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    z = _unit(emb)
    dims = min(pca_dims, *z.shape)
    if dims < z.shape[1]:
        z = PCA(dims, random_state=seed).fit_transform(z)
    perplexity = float(min(perplexity, max(1.0, (len(z) - 1) / 3)))
    method = "exact" if len(z) <= TSNE_EXACT_MAX else "barnes_hut"
    params = {"seed": seed, "perplexity": perplexity, "pca_dims": dims, "iterations": TSNE_ITERATIONS,
              "init": "pca", "method": method, "features": "L2-normalised"}
    points = TSNE(2, perplexity=perplexity, max_iter=TSNE_ITERATIONS, init="pca", method=method, random_state=seed,
                  n_jobs=1).fit_transform(z)
    return points, params


# ---- equivariance (finetune_eval.md §2.8) --------------------------------------------------------------------

def rotate_translate(angle_deg: float, translation: Sequence[float], size: int) -> np.ndarray:
    """[2, 3] output -> input pixel map of a rotation about the crop centre followed by a translation in pixels:
    pipeline/augment's view map with the whole image as the box, margin and scale 1."""
    geometry = [[math.radians(angle_deg), 1.0, translation[0] / size, translation[1] / size]]
    return view_affine(np.array([[0.0, 0.0, size, size]]), np.zeros((1, 2)), size, 1.0, np.array(geometry))[0]


def warp_images(images: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """Model-input images [N, C, S, S] resampled through one [2, 3] output -> input map (bilinear, zero outside:
    the normalised mean colour)."""
    n, c, s = images.shape[:3]
    theta = normalised_theta(torch.as_tensor(affine, dtype=torch.float64)[None], s, s).float()
    grid = F.affine_grid(theta.expand(n, 2, 3).to(images.device), [n, c, s, s], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def move_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points [..., 2] in input pixels -> where the image warp with `affine` (output -> input) puts them."""
    forward = np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))
    return points @ forward[:2, :2].T + forward[:2, 2]


def l_equiv(model_2d_fn: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, rotations: Sequence[float],
            translations: Sequence[Sequence[float]]) -> np.ndarray:
    """L_equiv = ‖t(f(I)) − f(t(I))‖₂ in pixels (PeCLR Supp. eq. 11, "2D EPE"), averaged over images and keypoints,
    for every rotation (degrees, about the crop centre) combined with every translation (pixels): [R, T].
    `model_2d_fn`: images [N, C, S, S] -> 2D points [N, J, 2] in input pixels."""
    size = images.shape[-1]
    base = np.asarray(model_2d_fn(images), dtype=np.float64)
    out = np.empty((len(rotations), len(translations)))
    for (r, angle), (t, shift) in itertools.product(enumerate(rotations), enumerate(translations)):
        affine = rotate_translate(angle, shift, size)
        moved = np.asarray(model_2d_fn(warp_images(images, affine)), dtype=np.float64)
        out[r, t] = np.linalg.norm(move_points(base, affine) - moved, axis=-1).mean()
    return out


def l_improv(simclr: np.ndarray, peclr: np.ndarray) -> np.ndarray:
    """L_improv = (L_equiv^SimCLR − L_equiv^PeCLR) / L_equiv^SimCLR (PeCLR Supp. eq. 12): > 0 where the second
    model is the more equivariant; NaN where the first is exactly equivariant."""
    simclr = np.asarray(simclr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # no transform (both 0): NaN, not a warning
        return (simclr - np.asarray(peclr, dtype=np.float64)) / simclr


def default_translations(size: int) -> np.ndarray:
    """PeCLR's [-25, 25]² px grid at 224 px, scaled to `size`: [T, 2]."""
    steps = np.asarray(TRANSLATIONS_224) * size / REFERENCE_SIZE
    return np.array([(x, y) for y in steps for x in steps])


def finetuned_equivariance(run_dir: str | Path, data: str, datasets: Sequence[str], device: torch.device,
                           frames: int = EQUIVARIANCE_FRAMES) -> dict[str, Any]:
    """L_equiv of a fine-tuning run's best weights on up to `frames` labelled frames of `datasets` (the 2D output
    reads labels only for its 3D part): over rotations at no translation and translations at no rotation."""
    from pipeline.evaluate.run import load_run
    from pipeline.evaluate.sweep import sweep_batches

    cfg, task, model, path = load_run(Path(run_dir), "best")
    model.eval().to(device)
    task.to(device)
    stream = replace(cfg.data, datasets=tuple(DatasetSpec(name, data) for name in datasets), split="all",
                     batch_size=frames)
    batch = next(sweep_batches(stream, frames))
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    size = cfg.data.out_size

    @torch.no_grad()
    def kp2d(images: torch.Tensor) -> np.ndarray:
        return task.predict(model(images, **task.model_kwargs(batch)), batch)["kp2d"].double().cpu().numpy()

    images = model_input(batch, size)
    translations = default_translations(size)
    return {"weights": str(path), "head": cfg.finetune.head, "input_size": size,
            "frames": int(images.shape[0]), "rotations_deg": np.array(ROTATIONS_DEG, dtype=np.float64),
            "l_equiv_rotation_px": l_equiv(kp2d, images, ROTATIONS_DEG, [(0.0, 0.0)])[:, 0],
            "translations_px": translations, "l_equiv_translation_px": l_equiv(kp2d, images, [0.0], translations)[0]}


# ---- figures ---------------------------------------------------------------------------------------------------

def _clip_colours(clip: np.ndarray, position: np.ndarray) -> np.ndarray:
    """[N, 3] RGB: a hue per clip, darker early in the clip and brighter late."""
    from matplotlib import colormaps

    ids = np.unique(clip)
    palette = colormaps["tab10" if len(ids) <= 10 else "tab20" if len(ids) <= 20 else "hsv"]
    base = np.array([palette(i % palette.N if palette.N < 256 else i / len(ids))[:3] for i in range(len(ids))])
    rows = np.searchsorted(ids, clip)
    last = np.array([position[clip == c].max() for c in ids])[rows]
    time = np.where(last > 0, position / np.maximum(last, 1), 1.0)
    return base[rows] * (0.3 + 0.7 * time)[:, None]


def tsne_figure(points: dict[str, np.ndarray], clip: np.ndarray, position: np.ndarray, params: dict,
                names: Sequence[str]) -> Any:
    """One t-SNE panel per encoder (points [N, 2] each), hue by clip (`names` in the legend), brightness by time,
    consecutive frames joined; the t-SNE parameters in the title."""
    fig = new_figure((4.2 * len(points) + 1.8, 4.6))
    axes = fig.subplots(1, len(points), squeeze=False)[0]
    colours = _clip_colours(clip, position)
    for ax, (label, xy) in zip(axes, points.items(), strict=True):
        for c in np.unique(clip):
            rows = np.flatnonzero(clip == c)
            rows = rows[np.argsort(position[rows], kind="stable")]
            ax.plot(xy[rows, 0], xy[rows, 1], color=colours[rows[-1]], lw=0.6, alpha=0.5,
                    label=names[c] if ax is axes[-1] else None)
            ax.scatter(xy[rows, 0], xy[rows, 1], c=colours[rows], s=18, edgecolors="none")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="x-small", title="clip (dark → late: "
                    "bright)", title_fontsize="x-small")
    fig.suptitle("t-SNE of encoder features: " + ", ".join(f"{k} {v}" for k, v in params.items()), fontsize="small")
    fig.tight_layout()
    return fig


def retrieval_figure(scores: dict[str, tuple[np.ndarray, np.ndarray]], chance: float, k: int, w: int) -> Any:
    """Temporal retrieval against k (ks [K], scores [K]) per encoder, the chance level dashed, the report's k marked."""
    fig = new_figure((6.4, 4.8))
    ax = fig.add_subplot()
    for label, (ks, values) in scores.items():
        ax.plot(ks, values, marker="o", ms=3, label=label)
    ax.axhline(chance, color="grey", ls="--", label=f"chance {chance:.3f}")
    ax.axvline(k, color="grey", ls=":", lw=0.8)
    ax.set(xlabel="k nearest neighbours (cosine)", ylabel=f"share of neighbours in own clip within ±{w}",
           ylim=(0.0, 1.02), title="temporal retrieval")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def cosine_figure(curves: dict[str, dict[str, np.ndarray]]) -> Any:
    """Mean cosine similarity within clips against |Δt|, ± one standard deviation shaded, one curve per encoder."""
    fig = new_figure((6.4, 4.8))
    ax = fig.add_subplot()
    for label, c in curves.items():
        line = ax.plot(c["dt"], c["mean"], marker="o", ms=3, label=label)[0]
        ax.fill_between(c["dt"], c["mean"] - c["std"], c["mean"] + c["std"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="|Δt| (frames within a clip)", ylabel="cosine similarity (mean ± std)",
           title="feature similarity against time distance")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def equivariance_figure(runs: dict[str, dict[str, Any]]) -> Any:
    """L_equiv against rotation and against translation distance per fine-tuned run; with two or more runs also
    L_improv of each against the first."""
    panels = 3 if len(runs) > 1 else 2
    fig = new_figure((4.6 * panels, 4.2))
    axes = fig.subplots(1, panels)
    first = next(iter(runs.values()))
    for label, r in runs.items():
        axes[0].plot(r["rotations_deg"], r["l_equiv_rotation_px"], marker="o", ms=3, label=label)
        distance = np.linalg.norm(r["translations_px"], axis=1)
        d, inverse = np.unique(np.round(distance, 6), return_inverse=True)
        axes[1].plot(d, np.bincount(inverse, r["l_equiv_translation_px"]) / np.bincount(inverse), marker="o", ms=3,
                     label=label)
        if panels == 3 and r is not first:
            axes[2].plot(r["rotations_deg"], l_improv(first["l_equiv_rotation_px"], r["l_equiv_rotation_px"]),
                         marker="o", ms=3, label=f"{label} vs {next(iter(runs))}")
    axes[0].set(xlabel="rotation (degrees)", ylabel="L_equiv (px, 2D EPE)", title="rotation")
    axes[1].set(xlabel="translation distance (px)", ylabel="L_equiv (px, mean over directions)", title="translation")
    if panels == 3:
        axes[2].axhline(0.0, color="grey", lw=0.8)
        axes[2].set(xlabel="rotation (degrees)", ylabel="L_improv", title="improvement over the first run")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# ---- the report ----------------------------------------------------------------------------------------------

def _markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = ["# Embedding report", "",
             f"{doc['data']['frames']} frames of {len(doc['data']['clips'])} clip samples of {doc['data']['datasets']}"
             f" in `{doc['data']['shards']}`, no augmentation, {s['size']} px input.", "",
             f"| encoder | source | features | retrieval k={s['k']} ±{s['window']} | chance | "
             f"cos Δt=1 | cos Δt={s['max_dt']} |", "|---|---|---|---|---|---|---|"]
    for label, e in doc["encoders"].items():
        cos = e["cosine_vs_dt"]["mean"]
        lines.append(f"| {label} | `{e['source']}` | {e['features']} | {e['retrieval']:.3f} | "
                     f"{doc['retrieval_chance']:.3f} | {_num(cos[0])} | {_num(cos[-1])} |")
    lines += ["", "Retrieval: share of each frame's k nearest neighbours (cosine) that are frames of its own clip "
              "within ±w positions; chance: what embeddings ignoring time score. t-SNE: "
              + ", ".join(f"{k} {v}" for k, v in doc["tsne"].items()) + ".", ""]
    if doc.get("equivariance"):
        lines += ["## Equivariance of fine-tuned models (PeCLR, finetune_eval.md §2.8)", "",
                  "| run | head | frames | mean L_equiv rotations (px) | mean L_equiv translations (px) | "
                  "mean L_improv rotations vs first |", "|---|---|---|---|---|---|"]
        for label, r in doc["equivariance"].items():
            improv = r.get("l_improv_rotation")
            lines.append(f"| {label} | {r['head']} | {r['frames']} | {np.mean(r['l_equiv_rotation_px']):.2f} | "
                         f"{np.mean(r['l_equiv_translation_px']):.2f} | "
                         f"{_num(np.mean(improv)) if improv is not None else '–'} |")
        lines.append("")
    lines += ["Figures: " + ", ".join(f"`{name}`" for name in doc["figures"]) + ".", ""]
    return "\n".join(lines)


def _num(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _ks(k: int, n: int) -> np.ndarray:
    return np.arange(1, min(max(2 * k, 10), n - 1) + 1)


def embedding_report(data: str, datasets: Sequence[str], encoders: Sequence[str], out: str | os.PathLike,
                     sequences: int = 8, size: int = 224, k: int = 5, window: int = 4, max_dt: int | None = None,
                     backbone: str | None = None, finetuned: Sequence[str] = (), seed: int = 0,
                     device: str | None = None) -> dict:
    """Write tsne.png, retrieval.png, cosine_vs_dt.png (and equivariance.png with `finetuned` run directories),
    report.json and report.md into `out`; returns the report. `backbone`: the timm name of `random` / `imagenet`
    encoders (default: that of the first encoder.safetensors)."""
    out = Path(out)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = [encoder_backbone(s) for s in encoders]
    backbone = backbone or next((n for n in names if n), None)
    if backbone is None:
        raise ConfigError("embed-report: name the timm backbone (--backbone) of random / imagenet encoders")
    batches = clip_batches(data, datasets, sequences, size)
    clip, position = frame_ids(batches)
    max_dt = max_dt or int(position.max())
    labels = encoder_labels(encoders)
    doc: dict[str, Any] = {
        "format": FORMAT, "handclr_version": __version__,
        "data": {"shards": data, "datasets": list(datasets), "frames": len(clip),
                 "clips": [b["key"] for b in batches]},
        "settings": {"size": size, "k": k, "window": window, "max_dt": max_dt, "seed": seed},
        "retrieval_chance": retrieval_chance(clip, position, window), "encoders": {}}
    points, retrieval_curves, cosine_curves = {}, {}, {}
    for label, source, name in zip(labels, encoders, names, strict=True):
        emb = embed(load_encoder(source, name or backbone, seed), batches, size, dev)
        points[label], doc["tsne"] = tsne(emb, seed)
        ks = _ks(k, len(emb))
        retrieval_curves[label] = (ks, np.array([temporal_retrieval(emb, clip, position, j, window) for j in ks]))
        cosine_curves[label] = cosine_vs_dt(emb, clip, position, max_dt)
        doc["encoders"][label] = {"source": source, "backbone": name or backbone, "features": int(emb.shape[1]),
                                  "retrieval": temporal_retrieval(emb, clip, position, k, window),
                                  "retrieval_vs_k": {"k": ks, "score": retrieval_curves[label][1]},
                                  "cosine_vs_dt": cosine_curves[label]}
    out.mkdir(parents=True, exist_ok=True)
    keys = [b["key"] for b in batches]
    figures = [save_figure(tsne_figure(points, clip, position, doc["tsne"], keys), out / "tsne.png"),
               save_figure(retrieval_figure(retrieval_curves, doc["retrieval_chance"], k, window),
                           out / "retrieval.png"),
               save_figure(cosine_figure(cosine_curves), out / "cosine_vs_dt.png")]
    if finetuned:
        runs = {label: finetuned_equivariance(run, data, datasets, dev)
                for label, run in zip(encoder_labels([str(Path(r) / "best") for r in finetuned]), finetuned,
                                      strict=True)}
        first = next(iter(runs.values()))
        for r in list(runs.values())[1:]:
            r["l_improv_rotation"] = l_improv(first["l_equiv_rotation_px"], r["l_equiv_rotation_px"])
            r["l_improv_translation"] = l_improv(first["l_equiv_translation_px"], r["l_equiv_translation_px"])
        doc["equivariance"] = runs
        figures.append(save_figure(equivariance_figure(runs), out / "equivariance.png"))
    doc["figures"] = [p.name for p in figures]
    doc = plain_json(doc)
    atomic_write_text(out / "report.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "report.md", _markdown(doc))
    return doc
