"""Image data for vision training: load a dataset, split, subsample, hand out tensors.

Images stay uint8 (N, C, H, W) in memory; normalisation and augmentation happen batched in the
training step, on the training device.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError

IMAGE_DATASETS = (
    "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder",
    "tinted-fashion-mnist", "fmnist-mosaic",
)
MOSAIC_GRID = 2  # fmnist-mosaic: 2 x 2 items per mosaic


@dataclass
class VisionData:
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    mean: list[float]
    std: list[float]
    # further labels of the same images for probes (tinted sets: item_colour, position, ...):
    # name -> {"train": (N,), "val": ..., "test": ...} int64, aligned with the splits above
    targets: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # generator parameters of a made data set
    # per-pixel class maps of a dense data set (fmnist-mosaic: 0 background, c + 1 item of class
    # c): {"train": (N, H, W), "val": ..., "test": ...} uint8, aligned with the splits above
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    def summary(self) -> dict:
        return {
            "train": int(self.train_x.shape[0]),
            "val": int(self.val_x.shape[0]),
            "test": int(self.test_x.shape[0]),
            "n_classes": self.n_classes,
            "image_shape": list(self.train_x.shape[1:]),
            "train_class_counts": torch.bincount(self.train_y[self.train_y >= 0],
                                                 minlength=self.n_classes).tolist(),
            **({"train_unlabeled": int((self.train_y < 0).sum())}
               if bool((self.train_y < 0).any()) else {}),
            **({"targets": sorted(self.targets)} if self.targets else {}),
            **({"masks": True} if self.masks else {}),
        }


def _to_nchw(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:  # (N, H, W) grey
        t = t[:, None]
    elif t.ndim == 4:  # (N, H, W, C)
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


@functools.lru_cache(maxsize=2)
def _load_tinted(root: str | None, image_size: int | None, generator_seed: int):
    """Both splits of tinted Fashion-MNIST (made once per process and arguments: a run and its
    evaluations use the same images; callers copy what they index)."""
    from .tinted import tinted_fashion_mnist

    size = image_size or 32
    tr = tinted_fashion_mnist("train", root=root, size=size, seed=generator_seed)
    te = tinted_fashion_mnist("test", root=root, size=size, seed=generator_seed)
    extras = {k: (tr.labels[k], te.labels[k]) for k in tr.labels if k != "class"}
    meta = {"generator": "selfsup.vision.tinted.tinted_fashion_mnist", "size": size,
            "seed": generator_seed, "train": tr.meta, "test": te.meta}
    nhwc = (0, 2, 3, 1)  # the loaders' layout; _to_nchw turns it back
    return (tr.images.transpose(nhwc), tr.labels["class"], te.images.transpose(nhwc),
            te.labels["class"], extras, meta)


@functools.lru_cache(maxsize=2)
def _load_mosaic(root: str | None, image_size: int | None, generator_seed: int):
    """Both splits of ``fmnist-mosaic`` (made once per process and arguments, like
    :func:`_load_tinted`): :func:`selfsup.vision.mosaic.make_mosaic` of the Fashion-MNIST train
    items (train) and test items (test), ``size = image_size or 32``, a 2 x 2 grid, grey, as many
    mosaics as items (60000 / 10000, items drawn with replacement, so an item appears in about
    four mosaics of its own split and never in the other split), seeded ``[generator_seed, 0]`` /
    ``[generator_seed, 1]``. The image label (``class``) is the class of the first cell (top left):
    balanced over the classes, unlike the class of the largest item, which favours wide items
    (pullovers, coats, bags) over sandals and sneakers; that one is the further label
    ``largest`` (:func:`mosaic_labels`), and ``cell1`` .. ``cell3`` are the classes of the other
    cells (row-major). Returns NHWC images, labels, test images and labels, extras, masks and
    meta."""
    from ..data import images, registry
    from .mosaic import make_mosaic

    size = image_size or 32
    ddir = registry.fetch("fashion-mnist", root=root)
    out, meta = [], {"generator": "selfsup.vision.mosaic.make_mosaic", "size": size,
                     "grid": MOSAIC_GRID, "seed": generator_seed,
                     "label": "class of the first (top-left) cell"}
    for i, split in enumerate(("train", "test")):
        x, y = images.load_fashion_mnist(ddir, split)
        m = make_mosaic(x, y, size=size, grid=MOSAIC_GRID, seed=[generator_seed, i],
                        n=len(y), mask_dtype=np.uint8)
        out.append((m, mosaic_labels(m.masks, m.item_labels, MOSAIC_GRID)))
        meta[split] = m.meta
    (tr, tr_big), (te, te_big) = out
    extras = {f"cell{c}": (tr.item_labels[:, c], te.item_labels[:, c])
              for c in range(1, MOSAIC_GRID**2)}
    extras["largest"] = (tr_big, te_big)
    nhwc = (0, 2, 3, 1)
    return (tr.images.transpose(nhwc), tr.item_labels[:, 0], te.images.transpose(nhwc),
            te.item_labels[:, 0], extras, (tr.masks, te.masks), meta)


def mosaic_labels(masks: np.ndarray, item_labels: np.ndarray, grid: int) -> np.ndarray:
    """The image label of mosaics: the class of the item with the most mask pixels.

    ``masks`` ``(N, S, S)`` (0 background, ``c + 1`` class ``c``), ``item_labels``
    ``(N, grid * grid)`` (row-major cells, -1 empty). Items never leave their cell, so an item's
    area is the count of non-zero mask pixels in its cell. Ties go to the first cell; a mosaic
    without any item pixel gets -1 (unlabelled)."""
    n, s = masks.shape[0], masks.shape[-1]
    cell = s // grid
    on = (masks > 0).reshape(n, grid, cell, grid, cell)
    area = on.sum(axis=(2, 4), dtype=np.int64).reshape(n, grid * grid)
    area = np.where(item_labels >= 0, area, -1)
    best = area.argmax(axis=1)  # the first maximum
    lab = item_labels[np.arange(n), best]
    return np.where(area.max(axis=1) > 0, lab, -1).astype(np.int64)


def _load_arrays(name: str, root: str | None, path: str | None, image_size: int | None, seed: int,
                 synthetic_size: int):
    """Return (train_x, train_y, test_x, test_y) numpy arrays for a dataset name."""
    if name == "synthetic":
        from .synthetic import make_glyph_images

        tr = make_glyph_images(synthetic_size, seed=seed + 1)
        te = make_glyph_images(max(synthetic_size // 4, 10), seed=seed + 2)
        return tr[0], tr[1], te[0], te[1]
    from ..data import images, registry

    if name == "imagefolder":
        if not path:
            raise ConfigError(
                "data.name=imagefolder needs data.path=FOLDER (class subfolders of images)."
            )
        x, y, _classes = images.load_imagefolder(path, image_size=image_size)
        return x, y, None, None
    ddir = registry.fetch(name, root=root)
    if name == "mnist":
        tr, te = images.load_mnist(ddir, "train"), images.load_mnist(ddir, "test")
    elif name == "fashion-mnist":
        tr, te = images.load_fashion_mnist(ddir, "train"), images.load_fashion_mnist(ddir, "test")
    elif name in ("cifar10", "cifar100"):
        tr, te = images.load_cifar(ddir, name, "train"), images.load_cifar(ddir, name, "test")
    elif name == "stl10":
        tr, te = images.load_stl10(ddir, "train"), images.load_stl10(ddir, "test")
    else:
        raise ConfigError(
            f"Unknown image dataset '{name}'. Valid names: {', '.join(IMAGE_DATASETS)}"
        )
    return tr[0], tr[1], te[0], te[1]


def per_class_subset(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k random images of every class (all of a class if it has fewer)."""
    idx = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        idx.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(idx))


def long_tailed_subset(y: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Exponential long tail: class c keeps n_max * ratio^(-c/(C-1)) images (ratio >= 1)."""
    classes = np.unique(y)
    n_max = min(int((y == c).sum()) for c in classes)
    idx = []
    for rank, c in enumerate(classes):
        keep = max(1, int(round(n_max * ratio ** (-rank / max(len(classes) - 1, 1)))))
        members = np.flatnonzero(y == c)
        idx.append(rng.permutation(members)[:keep])
    return np.sort(np.concatenate(idx))


def load_vision_data(
    name: str,
    *,
    root: str | None = None,
    path: str | None = None,
    image_size: int | None = None,
    val_size: int = 5000,
    per_class: int | None = None,
    imbalance_ratio: float = 1.0,
    seed: int = 0,
    synthetic_size: int = 2000,
    unlabeled: bool = False,
    generator_seed: int = 0,
    lazy: bool = False,
) -> VisionData:
    """Load ``name``, hold out ``val_size`` training images (seeded), then subsample train.

    ``per_class`` keeps K images per class (low-data setting); ``imbalance_ratio`` > 1 keeps a
    long-tailed subset. The held-out validation set is drawn before subsampling, so it is the
    same images for every setting of the same seed. ``unlabeled`` adds the data set's unlabeled
    images (STL-10) to the training split with label -1, after the subsampling.
    ``tinted-fashion-mnist`` is made by :func:`selfsup.vision.tinted.tinted_fashion_mnist` from
    ``generator_seed`` (the same images for every run seed); its further labels (item colour,
    background colour, position, scale) are in ``targets``. ``fmnist-mosaic`` (2 x 2 mosaics of
    grey Fashion-MNIST items, :func:`_load_mosaic`) is made the same way; its label is the class
    of the top-left cell, its per-pixel class maps are in ``masks``, the classes of the other
    cells and of the largest item in ``targets`` (``cell1`` .. ``cell3``, ``largest``).
    """
    if name not in IMAGE_DATASETS:
        raise ConfigError(
            f"Unknown image dataset '{name}'. Valid names: {', '.join(IMAGE_DATASETS)}"
        )
    if lazy:
        if name != "imagefolder":
            raise ConfigError(f"data.lazy=true reads image folders; data.name={name} is loaded "
                              "into memory (use data.name=imagefolder data.path=FOLDER)")
        return _load_folder_lazy(path, image_size, val_size, per_class, seed)
    extras: dict = {}
    meta: dict = {}
    masks = None
    if name == "tinted-fashion-mnist":
        trx, try_, tex, tey, extras, meta = _load_tinted(root, image_size, generator_seed)
        meta = copy.deepcopy(meta)
    elif name == "fmnist-mosaic":
        trx, try_, tex, tey, extras, masks, meta = _load_mosaic(root, image_size, generator_seed)
        meta = copy.deepcopy(meta)
    else:
        trx, try_, tex, tey = _load_arrays(name, root, path, image_size, seed, synthetic_size)
    unl = None
    if unlabeled:
        if name != "stl10":
            raise ConfigError(f"data.unlabeled=true: {name} has no unlabeled split (stl10 has)")
        from ..data import images, registry

        unl = images.load_stl10(registry.fetch("stl10", root=root), "unlabeled")[0]
    rng = np.random.default_rng(seed)
    n = len(try_)
    n_val = min(val_size, n // 2)
    perm = rng.permutation(n)
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if tex is None:  # a folder without a test split: hold out a second slice for test
        test_idx, tr_idx = tr_idx[: len(tr_idx) // 5], tr_idx[len(tr_idx) // 5 :]
        tex, tey = trx[test_idx], try_[test_idx]
    vx, vy = trx[val_idx], try_[val_idx]
    trx, try_ = trx[tr_idx], try_[tr_idx]
    ext = {k: {"train": a[tr_idx], "val": a[val_idx], "test": b} for k, (a, b) in extras.items()}
    msk = ({"train": masks[0][tr_idx], "val": masks[0][val_idx], "test": masks[1]}
           if masks is not None else {})
    if per_class is not None:
        keep = per_class_subset(try_, per_class, rng)
        trx, try_ = trx[keep], try_[keep]
        ext = {k: {**v, "train": v["train"][keep]} for k, v in ext.items()}
        msk = {**msk, "train": msk["train"][keep]} if msk else msk
    if imbalance_ratio > 1.0:
        keep = long_tailed_subset(try_, imbalance_ratio, rng)
        trx, try_ = trx[keep], try_[keep]
        ext = {k: {**v, "train": v["train"][keep]} for k, v in ext.items()}
        msk = {**msk, "train": msk["train"][keep]} if msk else msk
    if unl is not None:  # unlabeled images join the training split with label -1
        trx = np.concatenate([trx, unl])
        try_ = np.concatenate([try_, np.full(len(unl), -1, dtype=np.int64)])
    n_classes = int(max(try_.max(), tey.max(), vy.max() if len(vy) else 0)) + 1
    train_x = _to_nchw(trx)
    xf = train_x.float() / 255.0
    mean = xf.mean(dim=(0, 2, 3)).tolist()
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    return VisionData(
        train_x=train_x,
        train_y=torch.from_numpy(try_.astype(np.int64)),
        val_x=_to_nchw(vx),
        val_y=torch.from_numpy(vy.astype(np.int64)),
        test_x=_to_nchw(tex),
        test_y=torch.from_numpy(tey.astype(np.int64)),
        n_classes=n_classes,
        mean=mean,
        std=std,
        targets={k: {s: torch.from_numpy(np.asarray(a, dtype=np.int64)) for s, a in v.items()}
                 for k, v in ext.items()},
        meta=meta,
        masks={s: torch.from_numpy(np.ascontiguousarray(a)) for s, a in msk.items()},
    )


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _load_folder_lazy(path: str | None, image_size: int | None, val_size: int,
                      per_class: int | None, seed: int) -> VisionData:
    """An image folder split like the in-memory sets (validation drawn first, then a fifth of
    the rest held out for test), with the images left on disk (:mod:`selfsup.vision.folder`)."""
    from .folder import FolderImages, channel_stats, list_image_folder

    if not path or not image_size:
        raise ConfigError("data.lazy=true needs data.path=FOLDER and data.image_size=SIZE "
                          "(every image is resized to SIZE x SIZE)")
    files, y, classes, skipped = list_image_folder(path)
    if skipped:
        import warnings

        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {path}, e.g. {skipped[0]}",
                      stacklevel=2)
    rng = np.random.default_rng(seed)
    n = len(y)
    n_val = min(val_size, n // 2)
    perm = rng.permutation(n)
    val_idx, rest = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    test_idx, tr_idx = rest[: len(rest) // 5], rest[len(rest) // 5 :]
    if per_class is not None:
        tr_idx = tr_idx[per_class_subset(y[tr_idx], per_class, rng)]
    allx = FolderImages(files, image_size)
    train_x = allx.subset(tr_idx)
    mean, std = channel_stats(train_x, seed=seed)
    t = lambda idx: torch.from_numpy(y[idx].astype(np.int64))  # noqa: E731
    return VisionData(train_x=train_x, train_y=t(tr_idx), val_x=allx.subset(val_idx),
                      val_y=t(val_idx), test_x=allx.subset(test_idx), test_y=t(test_idx),
                      n_classes=len(classes), mean=mean, std=std,
                      meta={"classes": classes, "skipped": len(skipped), "lazy": True})


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """A random permutation per epoch drawn from (seed, epoch): identical after a resume.

    Under torch.distributed each of the W processes takes every W-th index of the same
    permutation (n // W each), so the processes see disjoint images. ``start`` skips the first
    indices of the next pass only (a resume in the middle of an epoch); ``len`` stays the whole
    epoch (of this process)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 10_007 + self.epoch)
        start, self.start = self.start, 0
        perm = torch.randperm(self.n, generator=g)
        rank, world = _rank_world()
        if world > 1:
            perm = perm[rank::world][: self.n // world]
        return iter(perm[start:].tolist())

    def __len__(self) -> int:
        return self.n // _rank_world()[1]


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over an :class:`EpochSeededSampler` that knows how many batches of the
    current epoch it has served. Lightning stores ``state_dict()`` in every checkpoint and hands
    it back on resume, so a run resumed from a checkpoint taken in the middle of an epoch goes on
    with the next batch of the same permutation instead of starting the epoch again."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSeededSampler) or not self.drop_last:
            raise TypeError("ResumableLoader needs an EpochSeededSampler and drop_last=True")
        self.served = 0
        self._skip = 0

    def __iter__(self):
        skip, self._skip = self._skip, 0
        self.sampler.start = skip * self.batch_size
        self.served = skip
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "served": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        served = int(state.get("served", 0))
        if 0 < served < len(self):  # a finished epoch is not resumed into
            self.sampler.set_epoch(int(state["epoch"]))
            self._skip = served
