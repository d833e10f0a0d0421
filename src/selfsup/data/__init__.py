"""selfsup.data: the dataset registry, its sources and the loaders.

``fetch(name)`` makes a dataset available in the data directory (``$SELFSUP_DATA`` or
``~/.cache/selfsup/data``) from the first source that works; the loaders read the official file
formats. Image loaders (which import torch) are loaded lazily.
"""

from __future__ import annotations

from typing import Any

from selfsup.data.molecules import load_moses, load_uspto50k, load_zinc250k
from selfsup.data.registry import (
    DatasetSpec,
    dataset_dir,
    default_root,
    fetch,
    get_spec,
    is_available,
    list_datasets,
)

_IMAGES = (
    "ImageArrayDataset",
    "load_cifar",
    "load_fashion_mnist",
    "load_idx",
    "load_imagefolder",
    "load_mnist",
    "load_stl10",
    "write_idx",
)

__all__ = [
    "DatasetSpec",
    "dataset_dir",
    "default_root",
    "fetch",
    "get_spec",
    "is_available",
    "list_datasets",
    "load_moses",
    "load_uspto50k",
    "load_zinc250k",
    *_IMAGES,
]


def __getattr__(name: str) -> Any:
    if name in _IMAGES:
        from selfsup.data import images

        return getattr(images, name)
    raise AttributeError(f"module 'selfsup.data' has no attribute {name!r}")
