"""Device-side executor: the whole batch in a few batched torch ops (the default for GPU training).

warp (affine_grid + grid_sample, bilinear, out-of-slot = fill) -> fused colour matrix -> clip ->
Sobel on flagged frames -> /255 -> mean/std normalisation -> channels_last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.augment.colour import LUMA, SOBEL_SCALE, colour_matrix

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalised_theta(affine: torch.Tensor, slot: int, out_size: int) -> torch.Tensor:
    """Pixel-centre affine [N, 2, 3] (output -> slot) as the normalised theta of `affine_grid`
    (align_corners=False: x_n = (2x + 1) / L - 1)."""
    n = affine.shape[0]
    dt = affine.dtype
    un = torch.tensor([[out_size / 2, 0, (out_size - 1) / 2], [0, out_size / 2, (out_size - 1) / 2], [0, 0, 1]],
                      dtype=dt, device=affine.device)
    to_norm = torch.tensor([[2 / slot, 0, 1 / slot - 1], [0, 2 / slot, 1 / slot - 1]], dtype=dt, device=affine.device)
    full = torch.cat([affine, torch.tensor([0, 0, 1], dtype=dt, device=affine.device).expand(n, 1, 3)], dim=1)
    return to_norm @ full @ un


def colour_matrices(appearance: torch.Tensor) -> torch.Tensor:
    """[N, 9] appearance vectors -> [N, 3, 4] colour matrices (small: built on the host in float64)."""
    rows = [torch.from_numpy(colour_matrix(p)) for p in appearance.detach().cpu().double().numpy()]
    return torch.stack(rows).to(appearance.device)


def sobel_luma(luma: torch.Tensor) -> torch.Tensor:
    """|∇ luma| * SOBEL_SCALE for [N, 1, H, W], borders reflected like cv2's BORDER_REFLECT_101."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=luma.dtype, device=luma.device)
    weight = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="reflect"), weight)
    return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2) * SOBEL_SCALE


def augment_pixels(frames: torch.Tensor, affine: torch.Tensor, appearance: torch.Tensor, out_size: int,
                   fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """uint8 [B, V, S, S, 3] slots -> float32 [B*V, 3, O, O] augmented pixels in grey levels (0..255).
    `fill` (scalar or per item [B]) is what lies outside the slot."""
    b, v, s = frames.shape[:3]
    fill = torch.as_tensor(fill, dtype=torch.float32, device=frames.device).expand(b)
    fill = fill.repeat_interleave(v).view(b * v, 1, 1, 1)
    x = frames.reshape(b * v, s, s, 3).permute(0, 3, 1, 2).float() - fill
    theta = normalised_theta(affine.reshape(b * v, 2, 3).double(), s, out_size).float()
    grid = F.affine_grid(theta, [b * v, 3, out_size, out_size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    app = appearance.reshape(b * v, -1)
    m = colour_matrices(app).float()
    y = torch.einsum("nij,njhw->nihw", m[:, :, :3], x) + m[:, :, 3, None, None]
    sobel = app[:, 3] >= 0.5
    if bool(sobel.any()):
        luma_row = torch.as_tensor(LUMA, dtype=m.dtype, device=m.device) @ m[sobel]
        luma = torch.einsum("nj,njhw->nhw", luma_row[:, :3], x[sobel])[:, None] + luma_row[:, 3, None, None, None]
        y[sobel] = sobel_luma(luma).expand(-1, 3, -1, -1)
    return y.clamp_(0.0, 255.0)


def normalise(pixels: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype: torch.dtype = torch.float32,
              channels_last: bool = True) -> torch.Tensor:
    """Grey levels -> model input: (x / 255 - mean) / std, in `dtype` and channels_last memory format."""
    m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1) * 255.0
    sd = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1) * 255.0
    out = ((pixels - m) / sd).to(dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def model_input(batch: dict, out_size: int, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A stream batch (on its device) -> normalised [B*V, 3, O, O]; a batch the worker already warped
    (cv2 executor) is only normalised."""
    frames = batch["frames"]
    if bool(batch["warped"]):
        b, v, o = frames.shape[:3]
        pixels = frames.reshape(b * v, o, o, 3).permute(0, 3, 1, 2).float()
    else:
        pixels = augment_pixels(frames, batch["affine"], batch["appearance"], out_size, batch["fill"])
    return normalise(pixels, mean, std, dtype, channels_last)
