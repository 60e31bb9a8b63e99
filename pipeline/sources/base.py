"""Clip records: the contract between the dataset readers and the sharder (docs/design.md §1).

Readers list clips lazily: a frame says where its pixels are and where its annotation is, but nothing is
decoded while listing. Per-frame annotations that live in one file per frame (HO-3D pickles, HanCo JSON)
are read by the reader's `annotate` at sharding time, inside the worker that processes the clip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import LayoutError, SkipCounter
from pipeline.sources.files import entry_problem
from pipeline.sources.options import NoOptions
from pipeline.typedconfig import load

Box = tuple[float, float, float, float]
N_VERTS = 778  # MANO mesh vertices (pipeline.models.mano has the model; readers need only the count)
# Frame numbers are ASCII digits only: `int()` and `str.isdigit()` also accept other scripts' digits
# ('٣' is 3), so a renamed copy could pose as another frame; 12 digits keep indices well inside int64.
_ASCII_NUMBER = re.compile(r"[0-9]{1,12}")


def ascii_number(text: str | None) -> int | None:
    """The non-negative integer spelled by `text` in ASCII digits (nothing else, not even spaces), else None."""
    return int(text) if text is not None and _ASCII_NUMBER.fullmatch(text) else None


@dataclass
class Labels:
    """Per-frame labels in source coordinates. Any field may be None; kp arrays are float64."""

    K: np.ndarray | None = None  # 3x3 intrinsics of the source image
    kp3d: np.ndarray | None = None  # 21x3, camera frame (OpenCV: +z forward), FreiHAND joint order
    kp2d: np.ndarray | None = None  # 21x2 source pixels (pixel centres at integers)
    mano_pose: np.ndarray | None = None  # 48 axis-angle
    mano_shape: np.ndarray | None = None  # 10
    verts: np.ndarray | None = None  # N_VERTS x 3 MANO mesh vertices, metres, camera frame (as kp3d)

    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass
class Frame:
    """One frame of a clip. Exactly one of `image` / `video_index` locates the pixels."""

    source_id: str  # stable id of the frame inside its dataset, e.g. a relative path
    index: int  # frame number in the source sequence (time = index / fps)
    image: str | None = None
    video_index: int | None = None
    box: Box | None = None  # hand box x1,y1,x2,y2 in source pixels; None: interpolate from neighbours
    box_normalized: bool = False  # box given in [0,1] image units (100DOH JSON), scaled once pixels load
    labels: Labels | None = None
    annotation: str | None = None  # per-frame annotation file that the reader's `annotate` reads
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass
class Clip:
    """One continuous view of one hand."""

    dataset: str
    sequence: str
    view: int
    side: str  # "right" | "left"; the sharder mirrors left hands
    fps: float | None
    frames: list[Frame]
    video: str | None = None  # path of the video that holds the frames (raw 100DOH)
    passthrough: bool = False  # frames are already hand crops at stored geometry: keep the JPEG bytes
    passthrough_size: tuple[int, int] | None = None  # (height, width) every passthrough frame must have
    flags: dict[str, Any] = field(default_factory=dict)
    mano_flat_hand_mean: bool | None = None  # convention of mano_pose, None when there is no MANO label


class Source:
    """A dataset reader. Subclasses list clips and, when frames carry `annotation`, load it lazily."""

    dataset: str = ""

    Options: type = NoOptions  # the typed `options:` of a recipe entry (pipeline/sources/options.py)

    def __init__(self, root: str | os.PathLike, **options: Any) -> None:
        self.root = Path(root)
        self.options = load(self.Options, options, f"{self.dataset} options")

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        raise NotImplementedError

    def annotate(self, clip: Clip, frame: Frame) -> None:
        """Fill `frame.box` / `frame.labels` from `frame.annotation`; raise SkipError when bad."""

    def require(self, layout: str, *relative: str) -> None:
        """Fail with a message naming the expected layout and everything missing or unusable (a symlink loop,
        no permission)."""
        if not self.root.is_dir():
            raise LayoutError(f"{self.dataset}: root {self.root} does not exist or is not a directory "
                              f"(expected the {layout} layout)")
        problems = {r: entry_problem(self.root / r) for r in relative}
        missing = [r for r, p in problems.items() if p == "missing"]
        found = (["missing " + ", ".join(missing)] if missing else []) + [
            f"{r}: {p}" for r, p in problems.items() if p and p != "missing"]
        if found:
            raise LayoutError(f"{self.dataset}: {self.root} is not a {layout} root: " + "; ".join(found))


def utf8_names(directory: Path, counter: SkipCounter, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Sorted entry names of `directory`; names that are not valid UTF-8 are counted and skipped.

    Python decodes undecodable bytes to lone surrogates; such a name cannot go into JSON or Parquet.
    A directory that cannot be listed (permission, symlink loop) is a counted skip, not a traceback.
    """
    try:
        entries = os.listdir(directory)
    except OSError as exc:
        counter.skip("directory_unreadable", f"{directory}: cannot list ({exc.strerror or exc})", clips=1)
        return []
    names = []
    for name in entries:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            counter.skip("non_utf8_name", f"{directory}/{os.fsencode(name)!r}", frames=1)
            continue
        if not suffixes or name.endswith(suffixes):
            names.append(name)
    return sorted(names)

