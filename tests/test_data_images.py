"""Image format readers on tiny files written in the official formats, and dataset subsets."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from selfsup.data import registry, sources
from selfsup.data.images import (
    ImageArrayDataset,
    idx_bytes,
    load_cifar,
    load_fashion_mnist,
    load_idx,
    load_imagefolder,
    load_mnist,
    load_stl10,
    write_idx,
)
from selfsup.errors import InputError

# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx", "a-idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = load_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)


def test_idx_header_bytes():
    data = idx_bytes(np.array([[1, 2, 3]], dtype=np.uint8))
    assert data == bytes([0, 0, 0x08, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3])
    assert idx_bytes(np.array([258], dtype=np.int32))[-4:] == bytes([0, 0, 1, 2])  # big-endian


def test_idx_corrupt_files_name_the_file(tmp_path):
    good = idx_bytes(np.zeros((4, 5, 5), np.uint8))
    (tmp_path / "trunc-idx").write_bytes(good[:-3])
    with pytest.raises(InputError, match="trunc-idx.*corrupt or truncated"):
        load_idx(tmp_path / "trunc-idx")
    (tmp_path / "magic-idx").write_bytes(b"\x01" + good[1:])
    with pytest.raises(InputError, match="magic-idx: not an IDX file"):
        load_idx(tmp_path / "magic-idx")
    (tmp_path / "type-idx").write_bytes(good[:2] + b"\x07" + good[3:])
    with pytest.raises(InputError, match="type-idx: unknown IDX type code 0x07"):
        load_idx(tmp_path / "type-idx")
    (tmp_path / "gz-idx.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(InputError, match="gz-idx.gz"):
        load_idx(tmp_path / "gz-idx.gz")


def test_load_mnist_layouts(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y = np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)  # gz accepted as well
    xi, yi = load_mnist(tmp_path, "train")
    np.testing.assert_array_equal(xi, x)
    assert yi.dtype == np.int64 and yi.tolist() == list(range(6))
    xf, _ = load_fashion_mnist(tmp_path, "train")
    assert xf.shape == (6, 28, 28)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x[:3])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y)
    with pytest.raises(InputError, match="do not match"):
        load_mnist(tmp_path, "test")
    with pytest.raises(InputError, match="valid splits: train, test"):
        load_mnist(tmp_path, "val")


# ---------------------------------------------------------------- CIFAR

def _cifar_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[0, 0] = 200  # red plane, pixel (row 0, col 0)
    rows[0, 1024 + 33] = 77  # green plane, pixel (row 1, col 1)
    rows[0, 2048 + 32 * 31 + 2] = 9  # blue plane, pixel (row 31, col 2)
    return rows


def _check_pixels(images: np.ndarray) -> None:
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert images[0, 0, 0, 0] == 200 and images[0, 1, 1, 1] == 77 and images[0, 31, 2, 2] == 9


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar10_python_archive_placed_by_hand(tmp_path, monkeypatch):
    members = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": name.encode(), b"labels": [i % 10, (i + 1) % 10],
                 b"data": _cifar_rows(2, i), b"filenames": [b"a.png", b"b.png"]}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [b"airplane"] * 10, b"num_vis": 3072}, protocol=2)
    target = tmp_path / "cifar10"
    target.mkdir()
    (target / "cifar-10-python.tar.gz").write_bytes(_tar_gz(members))
    spec = registry.get_spec("cifar10")
    monkeypatch.setattr(spec.sources[0], "files", [sources.UrlFile("file:///nonexistent/x", "x")])
    monkeypatch.setattr(spec.sources[1], "dirs", (str(tmp_path / "nowhere"),))
    staging = registry.fetch("cifar10", root=tmp_path)
    assert registry.read_marker("cifar10", tmp_path)["source"].startswith("files placed by hand")
    assert (staging / "cifar-10-batches-py" / "batches.meta").is_file()
    x, y = load_cifar(staging, "cifar10", "train")
    assert x.shape == (10, 32, 32, 3) and y.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    _check_pixels(x)
    xt, yt = load_cifar(staging / "cifar-10-batches-py", "cifar10", "test")
    assert xt.shape == (2, 32, 32, 3) and yt.tolist() == [5, 6]


def test_cifar100_python_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split, seed in (("train", 3), ("test", 4)):
        batch = {"data": _cifar_rows(3, seed), "fine_labels": [99, 5, 0],
                 "coarse_labels": [19, 1, 0], "filenames": ["x", "y", "z"]}
        (d / split).write_bytes(pickle.dumps(batch, protocol=4))
    x, fine = load_cifar(tmp_path, "cifar100", "train")
    _, coarse = load_cifar(tmp_path, "cifar100", "train", label="coarse")
    _check_pixels(x)
    assert fine.tolist() == [99, 5, 0] and coarse.tolist() == [19, 1, 0]
    assert fine.dtype == np.int64


def test_cifar_python_batch_refuses_code(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    (d / "train").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(InputError, match="not a readable CIFAR python batch.*os.system"):
        load_cifar(tmp_path, "cifar100", "train")


def test_cifar_binary_versions(tmp_path):
    d10 = tmp_path / "c10" / "cifar-10-batches-bin"
    d10.mkdir(parents=True)
    for k, name in enumerate([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]):
        rows = _cifar_rows(2, k)
        labels = np.array([[k], [9]], dtype=np.uint8)
        (d10 / name).write_bytes(np.hstack([labels, rows]).tobytes())
    x, y = load_cifar(tmp_path / "c10", "cifar10", "train")
    _check_pixels(x)
    assert y.tolist() == [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]
    d100 = tmp_path / "c100" / "cifar-100-binary"
    d100.mkdir(parents=True)
    rows = _cifar_rows(2, 7)
    labels = np.array([[3, 42], [19, 99]], dtype=np.uint8)  # coarse, fine
    (d100 / "test.bin").write_bytes(np.hstack([labels, rows]).tobytes())
    x, fine = load_cifar(tmp_path / "c100", "cifar100", "test")
    _, coarse = load_cifar(tmp_path / "c100", "cifar100", "test", label="coarse")
    _check_pixels(x)
    assert fine.tolist() == [42, 99] and coarse.tolist() == [3, 19]
    (d100 / "test.bin").write_bytes(b"\x00" * 3075)
    with pytest.raises(InputError, match="test.bin.*3074-byte CIFAR records"):
        load_cifar(tmp_path / "c100", "cifar100", "test")


# ---------------------------------------------------------------- STL-10

def test_stl10_column_major(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    n = 2
    raw = np.zeros((n, 3, 96, 96), dtype=np.uint8)
    flat = raw.reshape(-1)
    # image 1, channel 1 (green), row y=2, column x=5: byte c*9216 + x*96 + y
    flat[1 * 3 * 9216 + 1 * 9216 + 5 * 96 + 2] = 123
    flat[0] = 7  # image 0, red, (0, 0)
    flat[95] = 8  # image 0, red, last row of column 0 -> (y=95, x=0)
    (d / "train_X.bin").write_bytes(flat.tobytes())
    (d / "train_y.bin").write_bytes(bytes([1, 10]))
    (d / "unlabeled_X.bin").write_bytes(flat.tobytes())
    x, y = load_stl10(tmp_path, "train")
    assert x.shape == (2, 96, 96, 3) and x.dtype == np.uint8
    assert x[1, 2, 5, 1] == 123 and x[1, 5, 2, 1] == 0
    assert x[0, 0, 0, 0] == 7 and x[0, 95, 0, 0] == 8 and x.sum() == 123 + 7 + 8
    assert y.tolist() == [0, 9] and y.dtype == np.int64
    xu, yu = load_stl10(d, "unlabeled")
    assert yu.tolist() == [-1, -1]
    xa, ya = load_stl10(tmp_path, "train+unlabeled")
    assert len(xa) == 4 and ya.tolist() == [0, 9, -1, -1]
    (d / "test_X.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="test_X.bin"):
        load_stl10(tmp_path, "test")


# ---------------------------------------------------------------- image folders

def test_imagefolder_skips_and_counts_corrupt(tmp_path):
    for ci, cname in enumerate(["dog", "cat"]):
        (tmp_path / cname).mkdir()
        for j in range(2):
            Image.new("RGB", (6, 4), (10 * ci, 20 * j, 30)).save(tmp_path / cname / f"{j}.png")
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "cat" / "notes.txt").write_text("not an image, ignored")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*broken\.png"):
        x, y, classes = load_imagefolder(tmp_path)
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1, 1]
    assert x.shape == (4, 4, 6, 3) and x.dtype == np.uint8
    assert x[2, 0, 0].tolist() == [0, 0, 30]  # dog/0.png (dog is class 1, colour index 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr, _, _ = load_imagefolder(tmp_path, image_size=(8, 5))
    assert xr.shape == (4, 8, 5, 3)
    Image.new("RGB", (7, 7)).save(tmp_path / "dog" / "z.png")
    with pytest.raises(InputError, match="image_size"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_imagefolder(tmp_path)


# ---------------------------------------------------------------- dataset and subsets

def _dataset(per_class=(30, 20, 25, 40), shape=(4, 4)) -> ImageArrayDataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    labels = np.random.default_rng(0).permutation(labels)
    images = np.zeros((len(labels), *shape), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))  # a unique id per image (fewer than 256)
    return ImageArrayDataset(images, labels)


def test_dataset_items_and_balanced_subset():
    ds = _dataset()
    img, label = ds[0]
    assert img.shape == (1, 4, 4) and img.dtype.is_floating_point is False
    assert isinstance(label, int)
    rgb = ImageArrayDataset(np.zeros((2, 5, 6, 3), np.uint8), np.array([0, 1]))
    assert rgb[1][0].shape == (3, 5, 6)
    sub = ds.balanced_subset(per_class=7, seed=3)
    assert sub.class_counts() == {0: 7, 1: 7, 2: 7, 3: 7}
    again = ds.balanced_subset(per_class=7, seed=3)
    np.testing.assert_array_equal(sub.images, again.images)
    other = ds.balanced_subset(per_class=7, seed=4)
    assert not np.array_equal(sub.images, other.images)
    with pytest.raises(InputError, match="fewer images"):
        ds.balanced_subset(per_class=21)


def test_long_tailed_subset_profile():
    counts = ImageArrayDataset.long_tail_counts(100, 10, 100.0)
    assert counts == [100, 59, 35, 21, 12, 7, 4, 2, 1, 1]
    assert ImageArrayDataset.long_tail_counts(20, 4, 10.0) == [20, 9, 4, 2]
    ds = _dataset()
    lt = ds.long_tailed_subset(imbalance_ratio=10.0, seed=1)  # n_max = smallest class = 20
    assert lt.class_counts() == {0: 20, 1: 9, 2: 4, 3: 2}
    np.testing.assert_array_equal(lt.labels, ds.long_tailed_subset(10.0, seed=1).labels)
    with pytest.raises(InputError, match="n_max=35"):
        ds.long_tailed_subset(10.0, n_max=35)


def test_validation_split_counts_and_disjoint():
    ds = _dataset()
    train, val = ds.validation_split(15, seed=0)
    assert len(val) == 15 and len(train) == len(ds) - 15
    ids = lambda d: {int(a) for a in d.images[:, 0, 0]}  # noqa: E731  first pixel is unique
    assert ids(train).isdisjoint(ids(val)) and ids(train) | ids(val) == ids(ds)
    _, val2 = ds.validation_split(15, seed=0)
    np.testing.assert_array_equal(val.images, val2.images)
    with pytest.raises(InputError):
        ds.validation_split(len(ds))
