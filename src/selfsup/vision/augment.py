"""Batched, seeded image augmentations that run on any device.

Randomness comes from an explicit ``torch.Generator`` (seeded per training step by the
caller), so a resumed run draws exactly the augmentations an uninterrupted run would.
Each function returns the augmented batch and the parameters it sampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image.

    x: (B, C, H, W). Returns the crops (B, C, H, W) and the offsets (B, 2) as (dy, dx).
    """
    if padding <= 0:
        return x, torch.zeros(x.shape[0], 2, dtype=torch.long)
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)
    xp = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    off = offsets.to(x.device)
    rows = off[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(), offsets


def random_hflip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each image left-right with probability ``p``. Returns (images, flipped (B,) bool)."""
    flip = torch.rand(x.shape[0], generator=generator) < p
    f = flip.to(x.device)[:, None, None, None]
    return torch.where(f, x.flip(-1), x), flip


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator determined by (seed, step): resumable randomness for training steps."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))
    return g
