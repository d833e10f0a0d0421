"""Image dataset readers written from the official file-format descriptions, and a dataset class.

Every loader returns ``images`` as ``uint8`` arrays, ``(N, H, W)`` for grey and ``(N, H, W, C)``
for colour, and ``labels`` as ``int64`` arrays of shape ``(N,)``. ``root`` is the dataset
directory (``selfsup.data.dataset_dir(name)`` when ``None``).

Formats:

* IDX (LeCun et al., MNIST page): magic ``00 00 TT NN`` (type code, number of dimensions), ``NN``
  big-endian uint32 sizes, then the data in C order, big-endian. Files may be gzip-compressed.
* CIFAR-10/100 (Krizhevsky 2009, "Learning multiple layers of features from tiny images"):
  python version: pickled dicts with ``data`` (N x 3072 uint8: 1024 red, 1024 green, 1024 blue
  values, each a 32x32 image in row-major order) and ``labels`` (CIFAR-10) or ``fine_labels`` /
  ``coarse_labels`` (CIFAR-100). They are read with the restricted unpickler only. Binary version:
  records of 1 label byte (CIFAR-10) or coarse + fine label bytes (CIFAR-100) then 3072 pixels.
* STL-10 (Coates, Lee and Ng 2011): ``*_X.bin`` holds 96x96x3 images, each channel stored
  column-major (the first 96 bytes are the first column); ``*_y.bin`` labels 1..10 as uint8.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.idx import _read_bytes, idx_bytes, load_idx, write_idx  # noqa: F401
from selfsup.errors import DataNotFoundError, InputError

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm")


def _root(root: PathLike | None, name: str) -> Path:
    if root is not None:
        return Path(root)
    from selfsup.data.registry import dataset_dir

    return dataset_dir(name)


def _idx_pair(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    def find(stem: str) -> Path:
        for cand in (root / stem, root / f"{stem}.gz"):
            if cand.is_file():
                return cand
        raise DataNotFoundError(
            f"missing {root / stem} (or {stem}.gz); run selfsup.data.fetch() for this dataset"
        )

    images = load_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = load_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(
            f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match"
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def _split(split: str, valid: Sequence[str]) -> str:
    if split not in valid:
        raise InputError(f"unknown split {split!r}; valid splits: {', '.join(valid)}")
    return split


def load_mnist(
    root: PathLike | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (LeCun et al. 1998): ``(N, 28, 28)`` uint8, labels 0..9; 60,000 train, 10,000 test."""
    split = _split(split, ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    return _idx_pair(_root(root, "mnist"), prefix)


def load_fashion_mnist(
    root: PathLike | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): same IDX layout and sizes as MNIST."""
    split = _split(split, ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    return _idx_pair(_root(root, "fashion-mnist"), prefix)


# --------------------------------------------------------------------------------------------
# CIFAR

_CIFAR = {
    "cifar10": {
        "py_dir": "cifar-10-batches-py",
        "bin_dir": "cifar-10-batches-bin",
        "py": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "bin": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
        "n_label_bytes": 1,
    },
    "cifar100": {
        "py_dir": "cifar-100-python",
        "bin_dir": "cifar-100-binary",
        "py": {"train": ["train"], "test": ["test"]},
        "bin": {"train": ["train.bin"], "test": ["test.bin"]},
        "n_label_bytes": 2,
    },
}


def _chw_rows_to_hwc(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(f"{path}: CIFAR 'data' must be uint8 N x 3072, got {data.dtype} "
                         f"{data.shape}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_cifar_py(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    from selfsup.data.sources import restricted_unpickle

    raw = _read_bytes(path)
    try:
        batch = restricted_unpickle(raw)
    except Exception as exc:  # UnpicklingError, EOFError, ValueError... all mean "bad file"
        raise InputError(f"{path}: not a readable CIFAR python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise InputError(f"{path}: CIFAR batch must be a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise InputError(f"{path}: CIFAR batch lacks 'data' or {label_key!r} "
                         f"(keys: {sorted(batch)})")
    images = _chw_rows_to_hwc(batch["data"], path)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if labels.shape != (len(images),):
        raise InputError(f"{path}: {len(labels)} labels for {len(images)} images")
    return images, labels


def _read_cifar_bin(path: Path, n_label_bytes: int, label_index: int) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    raw = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    rec = n_label_bytes + 3072
    if raw.size == 0 or raw.size % rec:
        raise InputError(f"{path}: {raw.size} bytes is not a whole number of {rec}-byte CIFAR "
                         "records; the file is corrupt or of the other CIFAR version")
    records = raw.reshape(-1, rec)
    labels = records[:, label_index].astype(np.int64)
    return _chw_rows_to_hwc(records[:, n_label_bytes:], path), labels


def load_cifar(
    root: PathLike | None = None,
    name: str = "cifar10",
    split: str = "train",
    label: str = "fine",
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 or CIFAR-100: ``(N, 32, 32, 3)`` uint8 (HWC, RGB) and int64 labels.

    ``root`` may be the dataset directory (holding ``cifar-10-batches-py`` / ``cifar-100-python``
    or the binary versions ``cifar-10-batches-bin`` / ``cifar-100-binary``) or one of those
    folders itself; the python version is preferred when both exist. ``label`` selects
    CIFAR-100's ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses) labels.
    """
    if name not in _CIFAR:
        raise InputError(f"unknown CIFAR name {name!r}; valid: {', '.join(_CIFAR)}")
    split = _split(split, ("train", "test"))
    if label not in ("fine", "coarse"):
        raise InputError(f"label must be 'fine' or 'coarse', got {label!r}")
    info = _CIFAR[name]
    base = _root(root, name)
    candidates = [
        ("py", base / info["py_dir"]), ("bin", base / info["bin_dir"]), ("py", base), ("bin", base)
    ]
    for fmt, d in candidates:
        files = [d / f for f in info[fmt][split]]
        if all(f.is_file() for f in files):
            break
    else:
        raise DataNotFoundError(
            f"no {name} {split} files under {base}: expected {base / info['py_dir']}/"
            f"{{{', '.join(info['py'][split])}}} (python version) or {base / info['bin_dir']}/"
            f"{{{', '.join(info['bin'][split])}}} (binary version)"
        )
    parts = []
    for f in files:
        if fmt == "py":
            key = "labels" if name == "cifar10" else f"{label}_labels"
            parts.append(_read_cifar_py(f, key))
        else:
            index = 0 if name == "cifar10" or label == "coarse" else 1
            parts.append(_read_cifar_bin(f, info["n_label_bytes"], index))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------------
# STL-10

STL10_SIZE = 96


def read_stl10_images(path: PathLike) -> np.ndarray:
    """``*_X.bin`` -> ``(N, 96, 96, 3)`` uint8. Byte ``c*9216 + x*96 + y`` is pixel (y, x) of
    channel ``c`` (each channel column-major)."""
    path = Path(path)
    raw = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    per = 3 * STL10_SIZE * STL10_SIZE
    if raw.size == 0 or raw.size % per:
        raise InputError(f"{path}: {raw.size} bytes is not a whole number of 96x96x3 images")
    # axes of the file: (image, channel, column x, row y) -> (image, row y, column x, channel)
    arr = raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 3, 2, 1)
    return np.ascontiguousarray(arr)


def load_stl10(root: PathLike | None = None, split: str = "train") -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """STL-10: ``(N, 96, 96, 3)`` uint8 and labels 0..9 (the file's 1..10 minus one).

    Splits: ``train`` (5,000), ``test`` (8,000), ``unlabeled`` (100,000; labels -1) and
    ``train+unlabeled``. ``root`` is the dataset dir holding ``stl10_binary/`` or that folder.
    """
    split = _split(split, ("train", "test", "unlabeled", "train+unlabeled"))
    base = _root(root, "stl10")
    d = base / "stl10_binary" if (base / "stl10_binary").is_dir() else base
    if split == "train+unlabeled":
        a = load_stl10(d, "train")
        b = load_stl10(d, "unlabeled")
        return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    images = read_stl10_images(d / f"{split}_X.bin")
    if split == "unlabeled":
        return images, np.full(len(images), -1, dtype=np.int64)
    raw = np.frombuffer(_read_bytes(d / f"{split}_y.bin"), dtype=np.uint8)
    if raw.size != len(images):
        raise InputError(f"{d / f'{split}_y.bin'}: {raw.size} labels for {len(images)} images")
    if raw.size and (raw.min() < 1 or raw.max() > 10):
        raise InputError(f"{d / f'{split}_y.bin'}: labels must be 1..10")
    return images, raw.astype(np.int64) - 1


# --------------------------------------------------------------------------------------------
# image folders


def list_image_folder(path: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str],
                                                         list[str]]:
    """``(files, labels, class names, skipped)`` of ``path/<class>/<image>`` in sorted order;
    files whose header PIL cannot read are left out and listed in ``skipped``."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} does not exist; pass data.path=FOLDER "
                                "with one subfolder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for ci, cname in enumerate(classes):
        for f in sorted((root / cname).rglob("*")):
            if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                with Image.open(f) as im:  # reads the header only
                    im.size  # noqa: B018
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                skipped.append(f"{f} ({type(exc).__name__})")
                continue
            files.append(f)
            labels.append(ci)
    if not files:
        raise InputError(f"{root}: no readable images found")
    return files, np.asarray(labels, dtype=np.int64), classes, skipped



def load_imagefolder(
    path: PathLike, image_size: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A folder of class subfolders -> ``(N, H, W, 3)`` uint8 RGB, int64 labels, class names.

    Class ``i`` is the ``i``-th subfolder in sorted order; files are read in sorted order.
    ``image_size`` (``s`` or ``(h, w)``) resizes every image (bilinear); without it all images
    must share one size. Unreadable or corrupt images are skipped, counted and reported in one
    warning.
    """
    from PIL import Image

    root = Path(path)
    files, file_labels, classes, skipped = list_image_folder(root)
    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for f, ci in zip(files, file_labels.tolist(), strict=True):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            skipped.append(f"{f} ({type(exc).__name__})")
            continue
        if images and arr.shape != images[0].shape:
            raise InputError(
                f"{f} is {arr.shape[1]}x{arr.shape[0]} but earlier images are "
                f"{images[0].shape[1]}x{images[0].shape[0]}; pass image_size=..."
            )
        images.append(arr)
        labels.append(ci)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s) in {root}, e.g. {skipped[0]}",
            stacklevel=2,
        )
    if not images:
        raise InputError(f"{root}: no readable images found")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


# --------------------------------------------------------------------------------------------
# dataset


class ImageArrayDataset(Dataset):
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` with int64 labels ``(N,)``.

    ``__getitem__`` returns ``(transform(image), label)``; without a transform the image is a
    uint8 tensor of shape ``(C, H, W)`` (``C = 1`` for grey). The subset helpers return new
    datasets holding copies of the selected rows, in their original order.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Any = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise InputError(f"images must be uint8 (N,H,W) or (N,H,W,C), got {images.dtype} "
                             f"{images.shape}")
        if labels.shape != (len(images),):
            raise InputError(f"labels shape {labels.shape} does not match {len(images)} images")
        self.images = images
        self.labels = labels
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.images[i]
        label = int(self.labels[i])
        if self.transform is not None:
            return self.transform(img), label
        t = torch.from_numpy(np.ascontiguousarray(img))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        return t, label

    def class_counts(self) -> dict[int, int]:
        """``{class: count}`` over the labels present (unlabelled ``-1`` included)."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageArrayDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageArrayDataset(self.images[idx], self.labels[idx], self.transform, self.classes)

    def _by_class(self, rng: np.random.Generator) -> dict[int, np.ndarray]:
        out = {}
        for c in np.unique(self.labels):
            if c < 0:
                continue
            out[int(c)] = rng.permutation(np.flatnonzero(self.labels == c))
        return out

    def balanced_subset(self, per_class: int, seed: int = 0) -> ImageArrayDataset:
        """``per_class`` images drawn at random (seeded) from every class; indices kept sorted."""
        if per_class < 1:
            raise InputError(f"per_class must be >= 1, got {per_class}")
        groups = self._by_class(np.random.default_rng(seed))
        short = {c: len(g) for c, g in groups.items() if len(g) < per_class}
        if short:
            raise InputError(f"per_class={per_class} but some classes have fewer images: {short}")
        return self.subset(np.sort(np.concatenate([g[:per_class] for g in groups.values()])))

    @staticmethod
    def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
        """Exponential profile ``n_c = floor(n_max * ratio^(-c/(C-1)))`` (Cui et al. 2019)."""
        if imbalance_ratio < 1:
            raise InputError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
        if num_classes == 1:
            return [n_max]
        return [
            max(1, int(n_max * imbalance_ratio ** (-c / (num_classes - 1)) + 1e-9))
            for c in range(num_classes)
        ]

    def long_tailed_subset(
        self, imbalance_ratio: float, seed: int = 0, n_max: int | None = None
    ) -> ImageArrayDataset:
        """Keep ``n_c`` images of the ``c``-th class (sorted class order) following
        :meth:`long_tail_counts`; ``n_max`` defaults to the smallest class size."""
        groups = self._by_class(np.random.default_rng(seed))
        if n_max is None:
            n_max = min(len(g) for g in groups.values())
        counts = self.long_tail_counts(n_max, len(groups), imbalance_ratio)
        short = {c: len(g) for (c, g), n in zip(groups.items(), counts) if len(g) < n}
        if short:
            raise InputError(f"n_max={n_max} needs more images than some classes have: {short}")
        picked = [g[:n] for g, n in zip(groups.values(), counts)]
        return self.subset(np.sort(np.concatenate(picked)))

    def validation_split(self, n_val: int, seed: int = 0) -> tuple[ImageArrayDataset,
                                                                   ImageArrayDataset]:
        """Hold out ``n_val`` random images (seeded): returns ``(train_rest, validation)``."""
        if not 0 < n_val < len(self):
            raise InputError(f"n_val must be in 1..{len(self) - 1}, got {n_val}")
        perm = np.random.default_rng(seed).permutation(len(self))
        return self.subset(np.sort(perm[n_val:])), self.subset(np.sort(perm[:n_val]))
