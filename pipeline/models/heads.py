"""Fine-tuning heads on encoder features [B, F]: TempCLR's iterative MANO regressor and PeCLR's 2.5D head.

Normalised crop coordinates: x right, y down, the crop's outer pixel edges at ±1. With pixel centres at
integers (pipeline/geometry.py, pipeline/augment/affine.py), pixel x of a size-wide crop spans [x - 0.5, x + 0.5],
so x_norm = (2 x + 1) / size - 1 (the `align_corners=False` convention of torch's grid_sample).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.keypoints25d import camera_rays, root_depth
from pipeline.models.rotations import rot6d_to_matrix

N_JOINTS = 21
N_POSE = 16  # MANO: global (wrist) orientation + 15 finger joints
N_BETAS = 10
STATE = N_POSE * 6 + N_BETAS + 3  # pose 6D, betas, camera (raw scale, tx, ty)


def pixels_to_normalised(kp: torch.Tensor, size: int | float) -> torch.Tensor:
    """Crop pixels (centres at integers) -> normalised crop coordinates in [-1, 1] (edges)."""
    return (2 * kp + 1) / size - 1


def normalised_to_pixels(kp: torch.Tensor, size: int | float) -> torch.Tensor:
    """Inverse of `pixels_to_normalised`."""
    return ((kp + 1) * size - 1) / 2


def weak_perspective(points3d: torch.Tensor, scale: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """HMR/ExPose weak perspective s·(X_xy + t): points3d [B, K, 3] (metres, camera axes x right, y down),
    scale [B], t [B, 2] (metres) -> [B, K, 2] normalised crop coordinates."""
    return scale[:, None, None] * (points3d[..., :2] + t[:, None, :])


def mean_state() -> torch.Tensor:
    """The default initial state [STATE]: identity rotations (6D (1, 0, 0, 1, 0, 0)), zero betas (the MANO mean
    shape), zero raw camera (scale = mean_scale, no translation)."""
    pose = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(N_POSE)
    return torch.cat([pose, torch.zeros(N_BETAS + 3)])


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear + ReLU layers through `widths`, the last Linear zero-initialised (no activation), so the head's
    first output is exactly its prior (the mean state, the closed-form root)."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-2], widths[1:-1], strict=True):
        layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
    last = nn.Linear(widths[-2], widths[-1])
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class MANORegressor(nn.Module):
    """ExPose/HMR iterative error feedback (TempCLR §3.2; official config: 3 stages, MLP [1024, 1024], ReLU,
    no normalisation, finetune_eval.md §9 #2): state_{k+1} = state_k + MLP([features, state_k]), one MLP
    shared by all stages, state_0 = the mean. Returns one dict per stage (the last is penalised, §9 #3):
    pose6d [B, 16, 6], rotmat [B, 16, 3, 3] (MANO joint order, global first), betas [B, 10],
    cam_scale [B], cam_t [B, 2] (metres, see `weak_perspective`).

    Camera scale: s = softplus(raw + softplus⁻¹(mean_scale)), so s = mean_scale (0.9, TempCLR's mean) at
    raw = 0, s > 0 always, and ds/draw = sigmoid(·) as ExPose's softplus camera. With joints in metres a
    ~0.2 m hand spanning most of the crop needs s ≈ 5-10: the mean is only the starting point.
    It does not run MANO: pose the layer with rotmat/betas (pipeline/models/mano.py), then project with
    `weak_perspective`.
    """

    def __init__(self, in_features: int, stages: int = 3, hidden: tuple[int, ...] = (1024, 1024),
                 mean_params: torch.Tensor | None = None, mean_scale: float = 0.9) -> None:
        super().__init__()
        self.stages = stages
        self.mlp = mlp([in_features + STATE, *hidden, STATE])
        mean = mean_state() if mean_params is None else torch.as_tensor(mean_params, dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(STATE).clone())
        self.scale_offset = math.log(math.expm1(mean_scale))  # softplus⁻¹(mean_scale)

    def decode(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw state [B, STATE] -> the named parameters."""
        pose6d = state[:, :N_POSE * 6].reshape(-1, N_POSE, 6)
        betas, cam = state[:, N_POSE * 6:N_POSE * 6 + N_BETAS], state[:, N_POSE * 6 + N_BETAS:]
        return {"pose6d": pose6d, "rotmat": rot6d_to_matrix(pose6d), "betas": betas,
                "cam_scale": nn.functional.softplus(cam[:, 0] + self.scale_offset), "cam_t": cam[:, 1:]}

    def forward(self, features: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        state = self.mean.to(features.dtype).expand(len(features), -1)
        out = []
        for _ in range(self.stages):
            state = state + self.mlp(torch.cat([features, state], dim=1))
            out.append(self.decode(state))
        return out


class KeypointHead25D(nn.Module):
    """PeCLR's head: one linear layer -> uv [B, 21, 2] (normalised crop coordinates, §9 #9) and z_rel [B, 21]
    (root-relative depth over the wrist -> index-MCP bone, see pipeline/models/keypoints25d.py).

    With `refine`, also the wrist depth in bone lengths: z_root_closed from the closed form (`root_depth`) and
    z_root = z_root_closed + M_ref(z_rel, K⁻¹ uv, z_root_closed) (thesis eq. 3.11), M_ref an MLP 2×256 ReLU
    (§9 #8) whose zero-initialised output starts it at the closed form. Its inputs are detached: M_ref learns
    to correct the 2.5D it is given, and neither its loss nor the closed form's unstable gradient (a -> 0)
    reaches the 2.5D outputs or the encoder. The closed form is clamped to [0, max_root_depth] bone lengths
    (non-finite values from degenerate predictions included). Metric depth = z_root × bone length (metres).
    """

    def __init__(self, in_features: int, refine: bool = False, refine_hidden: tuple[int, ...] = (256, 256),
                 max_root_depth: float = 50.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, N_JOINTS * 3)
        self.refine = mlp([N_JOINTS * 3 + 1, *refine_hidden, 1]) if refine else None
        self.max_root_depth = max_root_depth

    def forward(self, features: torch.Tensor, K: torch.Tensor | None = None,
                size: int | None = None) -> dict[str, torch.Tensor]:
        """features [B, F]; K [B, 3, 3] of the output crop in its pixels and its size: needed with `refine`."""
        out = self.linear(features).reshape(-1, N_JOINTS, 3)
        pred = {"uv": out[..., :2], "z_rel": out[..., 2]}
        if self.refine is None:
            return pred
        if K is None or size is None:
            raise ValueError("KeypointHead25D(refine=True) needs the crop's K and size")
        uv = normalised_to_pixels(pred["uv"].detach().float(), size)
        z_rel, K = pred["z_rel"].detach().float(), K.float()
        closed = root_depth(uv, z_rel, K).nan_to_num(nan=0.0, posinf=self.max_root_depth, neginf=0.0)
        closed = closed.clamp(0.0, self.max_root_depth)
        x = torch.cat([z_rel, camera_rays(uv, K)[..., :2].flatten(1), closed[:, None]], dim=1)
        pred["z_root_closed"] = closed
        pred["z_root"] = closed + self.refine(x.to(features.dtype)).squeeze(1)
        return pred
