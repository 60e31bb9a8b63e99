"""The options each dataset reader accepts in a recipe's `options:` mapping, typed (pipeline/typedconfig.py).

Each reader declares its dataclass as `Options`; a recipe's source options are loaded into it before any file is
read (and so are keyword options given in code), so a mistyped value or an unknown key is a ConfigError naming
the recipe, the source and the key. The defaults here are the readers' only defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.typedconfig import NonNegativeInt, PositiveFloat, PositiveInt, Probability, ranged

HancoImages = Literal["rgb", "rgb_merged", "rgb_homo", "rgb_color_auto", "rgb_color_sample"]
HancoFlag = Literal["is_train", "subject_id", "is_valid", "object_id", "has_fit"]


@dataclass(frozen=True)
class NoOptions:
    """A reader without options."""


@dataclass(frozen=True)
class HanCoOptions:
    images: HancoImages = "rgb"
    labels: bool = True
    cameras: list[ranged(int, ge=0, le=7)] | None = None  # default: all eight
    filters: dict[HancoFlag, bool | int] = field(default_factory=dict)  # a frame is kept when all match
    fps: PositiveFloat | None = None  # HanCo publishes no frame rate


@dataclass(frozen=True)
class HO3DOptions:
    splits: list[Literal["train", "evaluation"]] | None = None  # default: both, where present
    fps: PositiveFloat | None = None  # HO-3D publishes none
    image_size: tuple[PositiveInt, PositiveInt] = (640, 480)  # clips boxes derived from joints


@dataclass(frozen=True)
class DOH100Options:
    parts: list[Literal["voc", "json", "video"]] | None = None  # default: those present
    voc_dir: str = "pascal_voc_format/VOCdevkit2007_handobj_100K/VOC2007"
    image_sets: list[str] | None = None
    json_splits: list[str] = field(default_factory=lambda: ["trainval", "test"])
    videos: str = "raw_videos"
    tracks: str = "tracks/boxes.csv"
    meta: str = "file/meta_100DOH_video.txt"
    target_fps: PositiveFloat | None = 15.0  # None keeps every native frame
    max_gap: NonNegativeInt = 5  # native frames a track may miss
    iou_min: Probability = 0.3
    min_score: Probability = 0.5


@dataclass(frozen=True)
class FreiHANDOptions:
    split: Literal["training", "evaluation"] = "training"
    versions: list[ranged(int, ge=0, le=3)] | None = None  # default: all four (training), [0] (evaluation)


