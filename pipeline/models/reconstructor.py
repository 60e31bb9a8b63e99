"""The fine-tuned hand reconstructor: the (pre-trained) timm encoder with a MANO or 2.5D head, and the MANO
kinematics the MANO head is read through.

The MANO kinematics is not part of the model's state: the MANO file is licensed and must never end up in a
checkpoint, so the task holds it and rebuilds it from `finetune.mano_model` on resume.
"""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import timm
import torch
from smplx.lbs import lbs
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.heads import KeypointHead25D, MANORegressor
from pipeline.models.mano import MANO_TO_FREIHAND, build_mano_layer, load_mano, tip_vertex_ids

N_MANO_JOINTS = 16


def build_backbone(name: str, init: str) -> nn.Module:
    """timm backbone without classifier: `random`, `imagenet` (timm's pretrained weights, downloaded by timm)
    or the path of a pre-training run's `encoder.safetensors` (its timm name must match)."""
    if init in ("random", "imagenet"):
        return timm.create_model(name, pretrained=init == "imagenet", num_classes=0)
    path = Path(init)
    if not path.is_file():
        raise ConfigError(f"finetune.init: {init!r} is neither random, imagenet nor an encoder.safetensors file")
    backbone = timm.create_model(name, pretrained=False, num_classes=0)
    with safetensors.safe_open(str(path), "pt") as f:
        trained_as = (f.metadata() or {}).get("timm_model")
    if trained_as is not None and trained_as != name:
        raise ConfigError(f"finetune.init: {path} holds a {trained_as} encoder, model.backbone is {name}")
    missing, unexpected = backbone.load_state_dict(safetensors.torch.load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ConfigError(f"finetune.init: {path} does not fit {name}: missing {missing[:4]}, unexpected "
                          f"{unexpected[:4]}")
    return backbone


class HandReconstructor(nn.Module):
    """Encoder -> head. `head`: "mano" (TempCLR's iterative regressor: list of per-stage parameter dicts) or
    "2p5d" (PeCLR's linear 2.5D head: uv, z_rel, and with `refine` the root depth)."""

    def __init__(self, backbone: str, head: str, init: str = "random", stages: int = 3,
                 hidden: tuple[int, ...] = (1024, 1024), refine: bool = False) -> None:
        super().__init__()
        self.backbone_name, self.head_name = backbone, head
        self.backbone = build_backbone(backbone, init)
        features = self.backbone.num_features
        self.head = (MANORegressor(features, stages, hidden) if head == "mano"
                     else KeypointHead25D(features, refine=refine))

    def forward(self, x: torch.Tensor, K: torch.Tensor | None = None, size: int | None = None):
        features = self.backbone(x).float()
        return self.head(features) if self.head_name == "mano" else self.head(features, K, size)


class MANOKinematics(nn.Module):
    """MANO's linear blend skinning driven by rotation matrices (the regressor's output), with the 21 joints in
    FreiHAND order. Poses are *absolute* joint rotations: a dataset whose MANO parameters are stored relative to
    the mean hand pose (`flat_hand_mean` false: FreiHAND, HanCo) has the mean added by `absolute_pose`."""

    def __init__(self, model_path: str | Path, tips: str = "freihand") -> None:
        super().__init__()
        arrays = load_mano(model_path)
        layer = build_mano_layer(arrays, flat_hand_mean=True)
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights"):
            self.register_buffer(name, getattr(layer, name).detach().clone().float(), persistent=False)
        self.register_buffer("parents", layer.parents.detach().clone(), persistent=False)
        mean = torch.as_tensor(arrays["hands_mean"], dtype=torch.float32).reshape(45)
        self.register_buffer("hands_mean", mean, persistent=False)
        self.tips = list(tip_vertex_ids(tips))
        self.order = list(MANO_TO_FREIHAND)

    def forward(self, rotmat: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rotmat [B, 16, 3, 3] (global first, MANO joint order), betas [B, 10] -> (joints [B, 21, 3] FreiHAND
        order, vertices [B, 778, 3]) in MANO's frame, metres, float32."""
        verts, joints = lbs(betas.float(), rotmat.float(), self.v_template, self.shapedirs,
                            self.posedirs, self.J_regressor, self.parents, self.lbs_weights, pose2rot=False)
        joints21 = torch.cat([joints[:, :N_MANO_JOINTS], verts[:, self.tips]], dim=1)[:, self.order]
        return joints21, verts

    def absolute_pose(self, pose: torch.Tensor, flat_hand_mean: torch.Tensor) -> torch.Tensor:
        """pose [B, 48] axis-angle as stored, flat_hand_mean [B] (1 true, 0 false, -1 unknown) -> absolute
        axis-angle [B, 48] (what smplx poses: the mean is added in axis-angle); NaN where the convention is
        unknown (the pose term is then masked)."""
        pose = pose.float().clone()
        relative = flat_hand_mean == 0
        pose[relative, 3:] = pose[relative, 3:] + self.hands_mean
        pose[flat_hand_mean < 0] = float("nan")
        return pose
