"""FreiHAND: labelled 224x224 hand crops, each image a one-frame clip (no sequences).

`training/rgb/%08d.jpg` holds 4 background versions: file index = idx + N * version, with N taken from
the length of training_xyz.json (never hard-coded). The sequence id is idx, the view id the version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from pipeline.errors import LayoutError, SkipCounter
from pipeline.geometry import project
from pipeline.sources.base import Clip, Frame, Labels, Source
from pipeline.sources.files import LAYOUT_JSON, entry_exists, layout_bytes
from pipeline.sources.options import FreiHANDOptions

FRAME_SIZE = (224, 224)  # FreiHAND images are 224x224 hand crops, stored as they are


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

    def clips(self, counter: SkipCounter) -> Iterator[Clip]:
        split = self.options.split
        if split not in ("training", "evaluation"):
            raise LayoutError(f"freihand: unknown split {split!r} (training | evaluation)")
        self.require("FreiHAND", f"{split}/rgb", f"{split}_K.json")
        Ks = self._load(f"{split}_K.json", True)
        xyzs = self._load(f"{split}_xyz.json", split == "training")
        manos = self._load(f"{split}_mano.json", False)
        n = len(xyzs) if xyzs is not None else len(Ks)
        for name, table in (("K", Ks), ("xyz", xyzs), ("mano", manos)):
            if table is not None and len(table) != n:
                raise LayoutError(f"freihand: {split}_{name}.json has {len(table)} entries, expected {n}")
        versions = self.options.versions or ([0, 1, 2, 3] if split == "training" else [0])
        for idx in range(n):
            try:
                K = np.asarray(Ks[idx], dtype=np.float64).reshape(3, 3)
                labels = Labels(K=K)
                if xyzs is not None:
                    labels.kp3d = np.asarray(xyzs[idx], dtype=np.float64).reshape(21, 3)
                    labels.kp2d = project(K, labels.kp3d)
                if manos is not None:
                    params = np.asarray(manos[idx], dtype=np.float64).reshape(-1)
                    if params.size < 58:
                        raise ValueError(f"MANO entry has {params.size} values, expected pose 48 + shape 10 + ...")
                    labels.mano_pose, labels.mano_shape = params[:48], params[48:58]
            except (TypeError, ValueError, OverflowError) as exc:
                counter.skip("annotation_malformed", f"{self.root}/{split}_*.json entry {idx}: {exc!r}",
                             frames=len(versions), clips=len(versions))
                continue
            for version in versions:
                name = f"{idx + n * version:08d}.jpg"
                frame = Frame(source_id=f"{split}/rgb/{name}", index=0,
                              image=str(self.root / split / "rgb" / name), labels=labels)
                yield Clip(self.dataset, f"{idx:08d}", int(version), "right", None, [frame], passthrough=True,
                           passthrough_size=FRAME_SIZE, flags={"split": split},
                           mano_flat_hand_mean=False if manos is not None else None)
