"""FreiHAND: labelled 224x224 hand crops, each image a one-frame clip (no sequences).

`training/rgb/%08d.jpg` holds 4 background versions: file index = idx + N * version, with N taken from
the length of training_xyz.json (never hard-coded). The sequence id is idx, the view id the version.

Labels per split (`training_*` or `evaluation_*`; the evaluation release FreiHAND_pub_v2_eval adds the evaluation
ground truth in the training files' conventions): K (required), xyz (required for training), mano and verts
(optional). Of `*_mano.json` ([[pose 48, shape 10, uv 2, scale 1]], flat_hand_mean=False) pose and shape are kept:
uv and scale only place the mesh, which the FreiHAND toolkit shifts so that its keypoint 9 (middle MCP) lands on
the back-projection of uv at depth focal / scale, i.e. on xyz[9]. So the camera-frame mesh is
MANO(pose, shape) + (kp3d[9] - MANO keypoint 9), and the translation needs no field of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from pipeline.errors import LayoutError, SkipCounter, SkipError
from pipeline.geometry import project
from pipeline.sources.base import N_VERTS, Clip, Frame, Labels, Source
from pipeline.sources.files import LAYOUT_JSON, VERTS_JSON, MiB, entry_exists, layout_bytes, open_file
from pipeline.sources.options import FreiHANDOptions

FRAME_SIZE = (224, 224)  # FreiHAND images are 224x224 hand crops, stored as they are
# *_verts.json holds 76 million numbers for the training split: parsed in chunks into float32 (json.loads would
# make a Python float and a list per number or vertex, several GB).
_CHUNK = 64 * MiB
_SEPARATORS = bytes.maketrans(b"[],\t\n\r", b"      ")


def _parse_numbers(text: bytes) -> np.ndarray:
    text = text.strip()  # np.fromstring reads a blank string as [-1.0]
    return np.fromstring(text.decode("ascii"), dtype=np.float32, sep=" ") if text else np.empty(0, np.float32)


def json_numbers(f: BinaryIO, chunk: int = _CHUNK) -> tuple[np.ndarray, int, int]:
    """Every number of a JSON document of nested number arrays, in order, and the counts of '[' and ']' (the
    caller checks them against the nesting it expects). ValueError for anything that is not a number."""
    parts, opened, closed, tail = [], 0, 0, b""
    while block := f.read(chunk):
        opened, closed = opened + block.count(b"["), closed + block.count(b"]")
        text = tail + block.translate(_SEPARATORS)
        cut = text.rfind(b" ") + 1  # a number may continue in the next block
        parts.append(_parse_numbers(text[:cut]))
        tail = text[cut:]
    parts.append(_parse_numbers(tail))
    return np.concatenate(parts), opened, closed


class FreiHAND(Source):
    """Options: split (training | evaluation, default training), versions (default [0, 1, 2, 3])."""

    Options = FreiHANDOptions

    dataset = "freihand"

    def _load(self, name: str, required: bool) -> list | None:
        path = self.root / name
        if not entry_exists(path):
            if required:
                raise LayoutError(f"freihand: {self.root} is not a FreiHAND root: missing {name}")
            return None
        try:
            data = json.loads(layout_bytes(path, LAYOUT_JSON, self.dataset))
        except (ValueError, RecursionError) as exc:
            raise LayoutError(f"freihand: {path}: not valid JSON ({exc})") from exc
        if not isinstance(data, list):
            raise LayoutError(f"freihand: {path}: expected a list with one entry per sample")
        return data

    def _load_verts(self, name: str, n: int) -> np.ndarray | None:
        """(n, N_VERTS, 3) float32 from `name` when present; the nesting is checked by counting brackets."""
        path = self.root / name
        if not entry_exists(path):
            return None
        try:
            with open_file(path, VERTS_JSON) as f:
                values, opened, closed = json_numbers(f)
        except SkipError as exc:
            raise LayoutError(f"freihand: {exc}") from exc
        except OSError as exc:
            raise LayoutError(f"freihand: {path}: cannot read ({exc})") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise LayoutError(f"freihand: {path}: not a JSON array of numbers ({exc})") from exc
        brackets = 1 + n * (1 + N_VERTS)
        if values.size != n * N_VERTS * 3 or opened != brackets or closed != brackets:
            raise LayoutError(f"freihand: {path}: expected {n} entries of {N_VERTS}x3 numbers, found {values.size} "
                              f"numbers in {opened} arrays")
        return values.reshape(n, N_VERTS, 3)

    def _tables(self, split: str) -> tuple[int, dict]:
        """Sample count and the split's label tables (None where the file is absent), lengths checked."""
        tables = {"K": self._load(f"{split}_K.json", True), "xyz": self._load(f"{split}_xyz.json", split == "training"),
                  "mano": self._load(f"{split}_mano.json", False)}
        n = len(tables["xyz"]) if tables["xyz"] is not None else len(tables["K"])
        for name, table in tables.items():
            if table is not None and len(table) != n:
                raise LayoutError(f"freihand: {split}_{name}.json has {len(table)} entries, expected {n}")
        tables["verts"] = self._load_verts(f"{split}_verts.json", n)
        return n, tables

    @staticmethod
    def _labels(tables: dict, idx: int) -> Labels:
        K = np.asarray(tables["K"][idx], dtype=np.float64).reshape(3, 3)
        labels = Labels(K=K)
        if tables["xyz"] is not None:
            labels.kp3d = np.asarray(tables["xyz"][idx], dtype=np.float64).reshape(21, 3)
            labels.kp2d = project(K, labels.kp3d)
        if tables["mano"] is not None:
            params = np.asarray(tables["mano"][idx], dtype=np.float64).reshape(-1)
            if params.size < 58:
                raise ValueError(f"MANO entry has {params.size} values, expected pose 48 + shape 10 + ...")
            labels.mano_pose, labels.mano_shape = params[:48], params[48:58]
        if tables["verts"] is not None:
            labels.verts = tables["verts"][idx]  # a view: clips pickled to workers carry only their own vertices
        return labels

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        split = self.options.split
        if split not in ("training", "evaluation"):
            raise LayoutError(f"freihand: unknown split {split!r} (training | evaluation)")
        self.require("FreiHAND", f"{split}/rgb", f"{split}_K.json")
        n, tables = self._tables(split)
        flat_hand_mean = False if tables["mano"] is not None else None
        versions = self.options.versions or ([0, 1, 2, 3] if split == "training" else [0])
        for idx in range(n):
            try:
                labels = self._labels(tables, idx)
            except (TypeError, ValueError, OverflowError) as exc:
                counter.skip("annotation_malformed", f"{self.root}/{split}_*.json entry {idx}: {exc!r}",
                             frames=len(versions), clips=len(versions))
                continue
            for version in versions:
                name = f"{idx + n * version:08d}.jpg"
                frame = Frame(source_id=f"{split}/rgb/{name}", index=0,
                              image=str(self.root / split / "rgb" / name), labels=labels)
                yield Clip(self.dataset, f"{idx:08d}", int(version), "right", None, [frame], passthrough=True,
                           passthrough_size=FRAME_SIZE, flags={"split": split}, mano_flat_hand_mean=flat_hand_mean)
