"""Self-supervised losses as plain functions of tensors (each tested against a hand computation).

Shapes: B images per view, D embedding dimensions, K queued keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy over the 2B embeddings.

    z1, z2: (B, D) projections of the two views. Each of the 2B embeddings has one positive (its
    other view) and 2B - 2 negatives (every other embedding); the loss is the mean over all 2B
    anchors of -log softmax(sim / t) at the positive, sim = cosine similarity, self excluded."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    n = z.shape[0]
    b = n // 2
    sim = z @ z.t() / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(b, n), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, positives)


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                   temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE: query q against its key k (positive) and the K queued keys (negatives).

    q: (B, D) queries, k: (B, D) keys of the momentum encoder (no gradient), queue: (K, D);
    all L2-normalised here. Loss = mean CE of [q.k, q.queue^T] / t with target 0."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1).detach()
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ F.normalize(queue, dim=1).t()  # (B, K)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), mean over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's ||normalise(p) - normalise(z)||^2 = 2 - 2 cos(p, z), z the target (no gradient),
    mean over the batch."""
    return (2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=1)).mean()
