"""InfoNCE with explicit masks, and the two objectives built on it.

For a query row i with positive set P(i) and negative set N(i), and s = cosine similarity / τ:
    standard (NT-Xent, PeCLR's code):  ℓ(i, p) = -log( e^{s_ip} / (e^{s_ip} + Σ_{n∈N(i)} e^{s_in}) )
    literal TempCLR Eq. 2:             ℓ(i, p) = -log( e^{s_ip} / Σ_{n∈N(i)} e^{s_in} )
The loss is the mean of ℓ over all (query, positive) pairs. Multi-positive queries therefore weigh each
positive equally, and a query with more positives counts proportionally more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE = 0, 1, 2


def info_nce(z: torch.Tensor, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
             temperature: float, positive_in_denominator: bool = True) -> torch.Tensor:
    """z [N, D]; queries [Q] row indices; positives, negatives bool [Q, N]. Mean over (query, positive) pairs."""
    zn = F.normalize(z.float(), dim=1)
    s = zn[queries] @ zn.t() / temperature  # [Q, N]
    neg = s.masked_fill(~negatives, float("-inf"))
    if positive_in_denominator:
        # log(e^{s_ip} + Σ_n e^{s_in}) for every (i, p): logaddexp of the positive with the negatives' LSE
        denom = torch.logaddexp(s, torch.logsumexp(neg, dim=1, keepdim=True))
    else:
        denom = torch.logsumexp(neg, dim=1, keepdim=True).expand_as(s)
    losses = (denom - s)[positives]
    return losses.mean()


def nt_xent(z: torch.Tensor, item: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR: every row is a query; its positives are the other rows of its item, its negatives every row of
    another item. z [N, D], item [N] ids."""
    same = item[:, None] == item[None, :]
    eye = torch.eye(len(item), dtype=torch.bool, device=z.device)
    return info_nce(z, torch.arange(len(item), device=z.device), same & ~eye, ~same, temperature)


def time_contrastive_masks(item: torch.Tensor, role: torch.Tensor, clip: torch.Tensor, position: torch.Tensor,
                           window: torch.Tensor, batch_negatives: bool) -> tuple[torch.Tensor, ...]:
    """Queries (anchor rows) and their positive / negative masks over all rows.

    item, role, clip, position, window: [N] per row (window = the anchor's half-width k, per row of its item).
    Positives: the positive rows of the anchor's item. Negatives: the negative rows of the anchor's item and,
    with `batch_negatives`, every other row of the batch except the anchor's own window (same clip and
    |position - anchor position| <= k) and its own item's anchor and positives.
    """
    queries = torch.nonzero(role == ROLE_ANCHOR).squeeze(1)
    q_item = item[queries]
    own = q_item[:, None] == item[None, :]
    positives = own & (role == ROLE_POSITIVE)[None, :]
    negatives = own & (role == ROLE_NEGATIVE)[None, :]
    if batch_negatives:
        in_window = (clip[queries][:, None] == clip[None, :]) & (
            (position[queries][:, None] - position[None, :]).abs() <= window[queries][:, None])
        negatives = negatives | (~own & ~in_window)
    return queries, positives, negatives


def time_contrastive(z: torch.Tensor, item: torch.Tensor, role: torch.Tensor, clip: torch.Tensor,
                     position: torch.Tensor, window: torch.Tensor, temperature: float,
                     batch_negatives: bool = False, positive_in_denominator: bool = True) -> torch.Tensor:
    """TempCLR's multi-positive time-contrastive loss (standard NT-Xent form by default, Eq. 2 optionally)."""
    queries, pos, neg = time_contrastive_masks(item, role, clip, position, window, batch_negatives)
    return info_nce(z, queries, pos, neg, temperature, positive_in_denominator)
