"""Users' own image folders, read lazily: the images stay on disk and are decoded batch by batch.

``data.name=imagefolder data.lazy=true data.path=FOLDER`` trains on ``FOLDER/<class>/<image>``
without holding the set in memory as one tensor. :class:`FolderImages` behaves like the uint8
image tensors of the in-memory data sets where the training code needs it: ``len``, ``shape``,
and indexing by an integer, a slice, or an index array/tensor, which decodes just those files
(``(C, H, W)`` for an integer, ``(n, C, H, W)`` otherwise; RGB, resized to the set's size).

Bad files: a file whose header cannot be read is skipped when the folder is listed and counted
(``skipped``); a file that fails later, when its pixels are decoded, becomes a black image, is
counted in ``decode_errors`` and named in a warning, so one damaged image cannot stop a long run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.images import list_image_folder  # noqa: F401  (re-exported)
from ..errors import InputError


class FolderImages:
    """Image files decoded on demand to uint8 RGB tensors of one size (see the module doc)."""

    def __init__(self, files: list[Path], size: int | tuple[int, int]) -> None:
        self.files = list(files)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.decode_errors = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.size[0], self.size[1])

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx) -> FolderImages:
        """The images at ``idx`` (an index array), still on disk."""
        return FolderImages([self.files[int(i)] for i in np.asarray(idx).reshape(-1)], self.size)

    def _load(self, i: int) -> torch.Tensor:
        from PIL import Image

        f = self.files[i]
        try:
            with Image.open(f) as im:
                im = im.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            self.decode_errors += 1
            warnings.warn(f"{f} could not be decoded ({type(exc).__name__}); a black image "
                          f"stands in for it ({self.decode_errors} so far)", stacklevel=2)
            arr = np.zeros((self.size[0], self.size[1], 3), dtype=np.uint8)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)):
            return self._load(int(idx))
        if isinstance(idx, slice):
            ids = range(*idx.indices(len(self.files)))
        else:
            arr = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
            ids = np.flatnonzero(arr) if arr.dtype == bool else arr.reshape(-1)
        if len(ids) == 0:
            return torch.zeros((0, 3, *self.size), dtype=torch.uint8)
        return torch.stack([self._load(int(i)) for i in ids])


class ImagesAndLabels(torch.utils.data.Dataset):
    """``(image, label)`` pairs of an image tensor or :class:`FolderImages` and labels."""

    def __init__(self, images, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def channel_stats(images, n: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (of values in [0, 1]) over at most ``n`` images drawn at
    random."""
    g = np.random.default_rng(seed)
    idx = np.sort(g.permutation(len(images))[:n])
    x = images[idx].float() / 255.0
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
