"""Evaluation figures (PNG): PCK curves, per-joint errors and error over time within sequences.

matplotlib is imported inside the functions, so importing this module (or pipeline.evaluate) costs nothing and
touches no global state. Figures are drawn on their own Agg canvas, never through pyplot: no backend is switched
for the whole process (a notebook's stays as it was) and no figure is registered anywhere, so none is left open.
Each `*_figure` builds the figure (for inspection and tests); each `plot_*` builds it, saves it atomically and
returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_write

DPI = 100
PCK_SIZE = (6.4, 4.8)  # inches; pixels = inches * DPI
PER_JOINT_SIZE = (12.0, 4.8)
TIME_SIZE = (9.6, 7.2)
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# FreiHAND order (pipeline.evaluate.metrics): wrist, then each finger's MCP, PIP, DIP, tip.
JOINT_NAMES = ("wrist", *(f"{finger}_{part}" for finger in FINGERS for part in ("mcp", "pip", "dip", "tip")))


def new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path


def _vector(x, name: str, length: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or (length is not None and len(x) != length):
        raise ValueError(f"{name} must be one-dimensional" + (f" of length {length}" if length else "")
                         + f", got shape {list(x.shape)}")
    return x


def pck_figure(curves: Mapping[str, tuple[Any, Any]]) -> Any:
    """One PCK curve per name: (thresholds_mm [S], pck [S]) as returned by pipeline.evaluate.pck_curve."""
    if not curves:
        raise ValueError("no PCK curve to plot")
    fig = new_figure(PCK_SIZE)
    ax = fig.add_subplot()
    for name, (thresholds, pck) in curves.items():
        thresholds = _vector(thresholds, f"{name} thresholds")
        ax.plot(thresholds, _vector(pck, f"{name} pck", len(thresholds)), label=str(name))
    ax.set(xlabel="threshold (mm)", ylabel="PCK (fraction of points within the threshold)", ylim=(0.0, 1.0))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_pck(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike) -> Path:
    """PCK curves (pck_figure) as a PNG of PCK_SIZE * DPI pixels; returns path."""
    return save_figure(pck_figure(curves), path)


def per_joint_figure(errors_mm: Any) -> Any:
    """Bars of the mean error of each of the 21 joints (FreiHAND order, named on the x-axis): one array [21] or a
    dict name -> [21] (grouped bars, e.g. PA vs RA, or two models). NaN (never labelled) draws no bar."""
    series = dict(errors_mm) if isinstance(errors_mm, Mapping) else {"error": errors_mm}
    if not series:
        raise ValueError("no per-joint errors to plot")
    fig = new_figure(PER_JOINT_SIZE)
    ax = fig.add_subplot()
    x = np.arange(len(JOINT_NAMES))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, _vector(values, f"{name}", len(JOINT_NAMES)), width,
               label=str(name))
    ax.set_xticks(x, JOINT_NAMES, rotation=60, ha="right")
    ax.set(ylabel="mean error (mm)", xlim=(-0.6, len(JOINT_NAMES) - 0.4))
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def plot_per_joint(errors_mm: Any, path: str | os.PathLike) -> Path:
    """Per-joint error bars (per_joint_figure) as a PNG of PER_JOINT_SIZE * DPI pixels; returns path."""
    return save_figure(per_joint_figure(errors_mm), path)


def error_vs_time_figure(sequences: Mapping[Any, tuple[Any, Any]], max_sequences: int = 4) -> Any:
    """Per-frame error against frame index, one panel per sequence (shared error axis), for the max_sequences
    longest sequences (ties by id): long sequences show drift and jitter best. sequences: id -> (frame_index [T],
    error_mm [T]); frames are drawn in frame order, NaN (unlabelled) frames leave a gap."""
    if not sequences or max_sequences < 1:
        raise ValueError("no sequence to plot (or max_sequences < 1)")
    chosen = sorted(sequences, key=lambda s: (-len(sequences[s][0]), str(s)))[:max_sequences]
    fig = new_figure(TIME_SIZE)
    axes = fig.subplots(len(chosen), 1, sharey=True, squeeze=False)[:, 0]
    for ax, seq in zip(axes, chosen, strict=True):
        frames = _vector(sequences[seq][0], f"{seq} frame_index")
        error = _vector(sequences[seq][1], f"{seq} error_mm", len(frames))
        order = np.argsort(frames, kind="stable")
        ax.plot(frames[order], error[order], lw=1.0)
        counted = np.isfinite(error)
        mean = f"mean {error[counted].mean():.1f} mm over {counted.sum()} frames" if counted.any() else "no labels"
        ax.set_title(f"{seq}: {mean}", fontsize="medium")
        ax.set_ylabel("error (mm)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("frame")
    fig.suptitle(f"{len(chosen)} of {len(sequences)} sequences (the longest)")
    fig.tight_layout()
    return fig


def plot_error_vs_time(sequences: Mapping[Any, tuple[Any, Any]], path: str | os.PathLike,
                       max_sequences: int = 4) -> Path:
    """Error over time (error_vs_time_figure) as a PNG of TIME_SIZE * DPI pixels; returns path."""
    return save_figure(error_vs_time_figure(sequences, max_sequences), path)
