"""PeCLR's equivariant NT-Xent: each view's projection, read as 64 points in 2D, is mapped back by the inverse
of its view's geometric transform before the cosine similarity.

Each projection is first normalised to unit length, as PeCLR's code does: the loss then depends on a projection
only through its direction, so its gradient is orthogonal to the projection (the detached centroid and extent
of a raw projection would otherwise leak a component along it). For a view with rotation θ and translation
t = v / L (pixels over image size, our `geometry` columns 2-3):
    points p [64, 2] of z / ||z||;  c = centroid(p) (detached);  L_z = max(p) - min(p) per axis (detached)
    p' = R(-θ) (p - c) + c - t ⊙ L_z
Scale needs no inverse: cosine similarity ignores it. R(θ) = [[cos, -sin], [sin, cos]] on (x, y), the same
convention as the image warp (pipeline/augment/affine.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.objectives.contrastive import nt_xent


def rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # [..., 2, 2]


def invert_geometry(z: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """z [N, 2K] as K 2D points per row; geometry [N, 4] (angle, scale, tx, ty) -> inverted z [N, 2K]."""
    p = z.reshape(len(z), -1, 2)
    c = p.mean(dim=1, keepdim=True).detach()
    extent = (p.amax(dim=1) - p.amin(dim=1)).detach()  # [N, 2]
    r = rotation(-geometry[:, 0].to(p.dtype))
    q = torch.einsum("nij,nkj->nki", r, p - c) + c - (geometry[:, 2:4].to(p.dtype) * extent)[:, None, :]
    return q.reshape(len(z), -1)


def equivariant_nt_xent(z: torch.Tensor, geometry: torch.Tensor, item: torch.Tensor,
                        temperature: float = 0.5) -> torch.Tensor:
    return nt_xent(invert_geometry(F.normalize(z.float(), dim=1), geometry), item, temperature)
