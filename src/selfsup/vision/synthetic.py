"""A small procedurally generated image set for tests, docs and smoke runs.

Each class is a fixed random glyph (drawn once from ``class_seed``); an image places its class's
glyph at a random position with a random intensity on a noisy background. Glyphs are not
rotation-invariant, so transformation-prediction methods have something to learn.
"""

from __future__ import annotations

import numpy as np


def make_glyph_images(
    n: int,
    n_classes: int = 10,
    size: int = 16,
    channels: int = 1,
    seed: int = 0,
    class_seed: int = 1234,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` uint8 images (n, size, size) or (n, size, size, channels) and int64 labels."""
    g = min(7, size - 2)
    crng = np.random.default_rng(class_seed)
    glyphs = crng.random((n_classes, g, g)) < 0.45
    glyphs[:, 0, :] = True  # a bar on top breaks rotational symmetry
    tints = crng.uniform(0.3, 1.0, (n_classes, channels))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    imgs = rng.normal(30, 12, (n, size, size, channels))
    pos = rng.integers(0, size - g + 1, (n, 2))
    amp = rng.uniform(150, 225, n)
    for i in range(n):
        y0, x0 = pos[i]
        patch = glyphs[labels[i]][:, :, None] * tints[labels[i]][None, None, :] * amp[i]
        imgs[i, y0 : y0 + g, x0 : x0 + g, :] += patch
    imgs = np.clip(imgs, 0, 255).astype(np.uint8)
    if channels == 1:
        imgs = imgs[..., 0]
    return imgs, labels.astype(np.int64)
