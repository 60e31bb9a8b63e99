"""The options each dataset reader accepts in a recipe's `options:` mapping, typed (pipeline/typedconfig.py).

Each reader declares its dataclass as `Options`; a recipe's source options are loaded into it before any file is
read (and so are keyword options given in code), so a mistyped value or an unknown key is a ConfigError naming
the recipe, the source and the key. The defaults here are the readers' only defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.typedconfig import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability, ranged

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
    # A MANO_RIGHT.pkl (absolute, or relative to the root): the training frames then also carry the mesh
    # vertices MANO(handPose, handBeta, handTrans) gives, as HO-3D's own evaluation derives them (MPVPE, F-score).
    mano_model: str | None = None


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
    max_gap: NonNegativeInt = 8  # native frames a track may miss (bridged by interpolation)
    iou_min: Probability = 0.3  # a detection overlapping a track's last box this much may extend it ...
    max_shift: PositiveFloat = 0.5  # ... else its centre may move this much per frame, relative to the box size
    max_scale: PositiveFloat = 2.0  # box size may change at most by this factor between linked detections
    side_cost: NonNegativeFloat = 0.3  # link-cost penalty for a handedness label against the track's vote
    min_score: Probability = 0.5
    duplicate_overlap: Probability = 0.7  # a box covering this much of a higher-scored one of its frame (of the
    # smaller's area) is the same hand reported twice: dropped before linking (box_same_hand)
    stitch_jump: PositiveFloat = 1.0  # linked tracks are joined when the centre moves at most this x the box size
    # x sqrt(frames elapsed) (a shaking camera jumps the image by up to about a box per frame) ...
    fragment_s: NonNegativeFloat = 0.5  # ... across max_gap frames; a track spanning under this many seconds ...
    fragment_gap_s: NonNegativeFloat = 1.0  # ... of the same side across this many (alone it would be lost)
    min_detections: PositiveInt = 3  # a track with fewer detections is dropped (track_too_short)
    static_motion: NonNegativeFloat = 0.15  # centre spread / box size below which a place is static ...
    static_s: PositiveFloat = 2.0  # ... when detected there for this many seconds in all (track_static)
    smooth_s: NonNegativeFloat = 0.25  # sd of the Gaussian weights of the box smoothing in seconds (0: raw boxes)


@dataclass(frozen=True)
class FreiHANDOptions:
    split: Literal["training", "evaluation"] = "training"
    versions: list[ranged(int, ge=0, le=3)] | None = None  # default: all four (training), [0] (evaluation)


