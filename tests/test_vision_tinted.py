"""Tinted items and mosaics, on synthetic box 'items' made here (offline, fast)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from selfsup.errors import InputError
from selfsup.vision import tinted as tinted_mod
from selfsup.vision.mosaic import make_mosaic
from selfsup.vision.tinted import (
    TintedSet,
    hsv_to_rgb,
    hue_bin,
    item_boxes,
    make_tinted,
    rgb_to_hue,
    tinted_fashion_mnist,
)


def box_items(n: int, seed: int = 0, canvas: int = 28):
    """Rectangles with a flat 255 core and a 1-pixel ring of 128, symmetric about their box
    centre (so the mass centre is the box centre), at random places in the canvas."""
    rng = np.random.default_rng(seed)
    h = rng.integers(8, 25, n)
    w = rng.integers(8, 25, n)
    r0 = rng.integers(0, canvas - h + 1)
    c0 = rng.integers(0, canvas - w + 1)
    r = np.arange(canvas)
    in_r = (r[None] >= r0[:, None]) & (r[None] < (r0 + h)[:, None])
    in_c = (r[None] >= c0[:, None]) & (r[None] < (c0 + w)[:, None])
    core_r = (r[None] >= (r0 + 1)[:, None]) & (r[None] < (r0 + h - 1)[:, None])
    core_c = (r[None] >= (c0 + 1)[:, None]) & (r[None] < (c0 + w - 1)[:, None])
    box = in_r[:, :, None] & in_c[:, None, :]
    core = core_r[:, :, None] & core_c[:, None, :]
    items = np.where(core, 255, np.where(box, 128, 0)).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    return items, labels, np.stack([r0, r0 + h, c0, c0 + w], axis=1)


@pytest.fixture(scope="module")
def items():
    return box_items(600, seed=3)


@pytest.fixture(scope="module")
def tset(items):
    x, y, _ = items
    return make_tinted(x, y, size=32, seed=11)


# --------------------------------------------------------------------------------------------
# tinted


def test_shapes_ranges_and_meta(tset, items):
    n = len(items[0])
    assert tset.images.shape == (n, 3, 32, 32) and tset.images.dtype == np.uint8
    assert len(tset) == n
    lc = tset.label_classes
    assert lc == {"class": 10, "item_colour": 8, "background_colour": 8, "position": 9,
                  "scale": 3}
    for name, lab in tset.labels.items():
        assert lab.dtype == np.int64 and lab.shape == (n,)
        assert lab.min() >= 0 and lab.max() < lc[name]
    np.testing.assert_array_equal(tset.labels["class"], items[1])
    # the balanced draws reach every bin
    for name in ("item_colour", "background_colour", "position", "scale"):
        assert len(np.unique(tset.labels[name])) == lc[name]
    json.dumps(tset.meta)  # JSON-able
    assert tset.meta["seed"] == 11 and tset.meta["size"] == 32


def test_determinism_seed_and_chunk(items):
    x, y, _ = items
    a = make_tinted(x, y, seed=5)
    b = make_tinted(x, y, seed=5, chunk=7)
    c = make_tinted(x, y, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    for k in a.values:
        np.testing.assert_array_equal(a.values[k], b.values[k])
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels["item_colour"], c.labels["item_colour"])
    d = make_tinted(x, y, seed=[5, 1])
    assert d.meta["seed"] == [5, 1]
    assert not np.array_equal(a.images, d.images)


def test_item_box_inside_and_sizes(tset, items):
    v = tset.values
    half_h, half_w = v["box_h"] / 2, v["box_w"] / 2
    assert np.all(v["centre_y"] - half_h >= -1e-4) and np.all(v["centre_y"] + half_h <= 32 + 1e-4)
    assert np.all(v["centre_x"] - half_w >= -1e-4) and np.all(v["centre_x"] + half_w <= 32 + 1e-4)
    longest = np.maximum(v["box_h"], v["box_w"])
    np.testing.assert_allclose(longest, v["scale"] * 32, rtol=1e-5)
    assert v["scale"].min() >= 0.5 and v["scale"].max() <= 0.75
    # aspect of the source box is kept
    src = items[2].astype(float)
    np.testing.assert_allclose(v["box_h"] / v["box_w"],
                               (src[:, 1] - src[:, 0]) / (src[:, 3] - src[:, 2]), rtol=1e-5)
    np.testing.assert_array_equal(item_boxes(items[0]), src)


def test_background_corner_has_background_colour(tset):
    v = tset.values
    n = len(tset)
    # the corner farthest from the item: never covered (the item is at most 0.75 of the side)
    row = np.where(v["centre_y"] < 16, 31, 0)
    col = np.where(v["centre_x"] < 16, 31, 0)
    corner = tset.images[np.arange(n), :, row, col]  # (n, 3)
    np.testing.assert_array_equal(corner, v["background_rgb"])
    np.testing.assert_array_equal(hue_bin(rgb_to_hue(corner), 8), tset.labels["background_colour"])


def test_full_intensity_item_pixel_has_item_colour(tset):
    v = tset.values
    n = len(tset)
    cy = np.floor(v["centre_y"]).astype(int)
    cx = np.floor(v["centre_x"]).astype(int)
    centre = tset.images[np.arange(n), :, cy, cx]  # inside the flat 255 core
    np.testing.assert_array_equal(centre, v["item_rgb"])
    np.testing.assert_array_equal(hue_bin(rgb_to_hue(centre), 8), tset.labels["item_colour"])


def test_item_and_background_colours_differ(tset):
    k, gap = 8, 2
    d = (tset.labels["item_colour"] - tset.labels["background_colour"]) % k
    assert np.all((d >= gap) & (d <= k - gap))
    hi = tset.values["item_hsv"][:, 0].astype(float)
    hb = tset.values["background_hsv"][:, 0].astype(float)
    circ = np.abs(hi - hb)
    circ = np.minimum(circ, 1 - circ)
    assert circ.min() >= (gap - 0.5) / k - 1e-6
    assert np.all(np.abs(tset.values["item_rgb"].astype(int)
                         - tset.values["background_rgb"].astype(int)).max(axis=1) > 20)
    # the hue drawn is inside the central half of its bin
    for key, lab in (("item_hsv", "item_colour"), ("background_hsv", "background_colour")):
        h = tset.values[key][:, 0].astype(float)
        off = (h * k - tset.labels[lab] + k / 2) % k - k / 2
        assert np.all(np.abs(off) <= 0.25 + 1e-6)


def test_position_bin_agrees_with_item_mass(tset):
    img = tset.images.astype(np.float64)
    bg = tset.values["background_rgb"].astype(np.float64)[:, :, None, None]
    it = tset.values["item_rgb"].astype(np.float64)[:, :, None, None]
    diff = it - bg
    alpha = ((img - bg) * diff).sum(1) / (diff**2).sum(1)  # (n, 32, 32)
    alpha = np.clip(alpha, 0, None)
    mass = alpha.sum((1, 2))
    centres = np.arange(32) + 0.5
    my = (alpha.sum(2) * centres).sum(1) / mass
    mx = (alpha.sum(1) * centres).sum(1) / mass
    np.testing.assert_allclose(my, tset.values["centre_y"], atol=0.3)
    np.testing.assert_allclose(mx, tset.values["centre_x"], atol=0.3)
    # bins from the measured mass centre: which third of the free travel
    py = (my - tset.values["box_h"] / 2) / (32 - tset.values["box_h"])
    px = (mx - tset.values["box_w"] / 2) / (32 - tset.values["box_w"])
    row = np.clip(np.floor(py * 3), 0, 2)
    col = np.clip(np.floor(px * 3), 0, 2)
    measured = (3 * row + col).astype(int)
    clear = (np.abs(py * 3 - np.round(py * 3)) > 0.1) & (np.abs(px * 3 - np.round(px * 3)) > 0.1)
    assert clear.sum() > len(tset) // 2
    np.testing.assert_array_equal(measured[clear], tset.labels["position"][clear])
    assert (measured == tset.labels["position"]).mean() > 0.95
    # and in absolute terms: top-left bins have their mass in the top-left quarter
    tl = tset.labels["position"] == 0
    assert np.all(my[tl] < 16) and np.all(mx[tl] < 16)
    br = tset.labels["position"] == 8
    assert np.all(my[br] > 16) and np.all(mx[br] > 16)


def test_fixed_scale_and_options(items):
    x, y, _ = items
    t = make_tinted(x[:50], y[:50], size=40, item_scale=0.5, seed=0, n_hue_bins=6,
                    min_hue_gap=3, saturation=1.0, value=1.0)
    assert t.images.shape == (50, 3, 40, 40)
    assert np.all(t.labels["scale"] == 0)
    np.testing.assert_allclose(np.maximum(t.values["box_h"], t.values["box_w"]), 20, rtol=1e-5)
    d = (t.labels["item_colour"] - t.labels["background_colour"]) % 6
    assert np.all(d == 3)  # the opposite hue bin
    assert t.meta["item_scale"] == [0.5, 0.5]


@pytest.mark.parametrize("kwargs", [
    {"item_scale": (0.8, 0.5)},
    {"item_scale": 0.0},
    {"item_scale": 1.5},
    {"min_hue_gap": 5},
    {"n_hue_bins": 1},
    {"size": 2},
    {"saturation": (0.2, 1.3)},
])
def test_bad_parameters(items, kwargs):
    x, y, _ = items
    with pytest.raises(InputError):
        make_tinted(x[:5], y[:5], **kwargs)


def test_bad_items():
    with pytest.raises(InputError):
        make_tinted(np.zeros((4, 28, 28), np.float32), np.zeros(4, np.int64))
    with pytest.raises(InputError):
        make_tinted(np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(InputError):
        make_tinted(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))


def test_all_zero_item_gives_plain_background():
    x = np.zeros((3, 28, 28), np.uint8)
    t = make_tinted(x, np.zeros(3, np.int64), seed=1)
    np.testing.assert_array_equal(t.images, np.broadcast_to(
        t.values["background_rgb"][:, :, None, None], t.images.shape))


def test_save_load_round_trip_without_pickle(tset, tmp_path):
    path = tset.save(tmp_path / "sub" / "tinted.npz")
    assert path.is_file()
    with np.load(path, allow_pickle=False) as z:
        assert str(z["format"]) == "selfsup.tinted/1"
        assert "labels.position" in z.files and "values.centre_x" in z.files
        assert all(z[k].dtype != object for k in z.files)
    back = TintedSet.load(path)
    np.testing.assert_array_equal(back.images, tset.images)
    assert back.labels.keys() == tset.labels.keys()
    assert back.values.keys() == tset.values.keys()
    for k in tset.labels:
        np.testing.assert_array_equal(back.labels[k], tset.labels[k])
        assert back.labels[k].dtype == tset.labels[k].dtype
    for k in tset.values:
        np.testing.assert_array_equal(back.values[k], tset.values[k])
    assert back.meta == json.loads(json.dumps(tset.meta))
    sub = back.subset(np.arange(10))
    assert len(sub) == 10 and sub.labels["class"].shape == (10,)


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError):
        TintedSet.load(bad)
    with pytest.raises(InputError):
        TintedSet.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez_compressed(other, images=np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="missing"):
        TintedSet.load(other)
    wrong = tmp_path / "wrong.npz"
    np.savez_compressed(wrong, format=np.array("nope"), meta=np.array("{}"),
                        images=np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="format"):
        TintedSet.load(wrong)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array("selfsup.tinted/1"), meta=np.array("{}"),
             images=np.zeros((1, 3, 4, 4), np.uint8),
             **{"labels.x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(InputError):
        TintedSet.load(pickled)
    assert zipfile.is_zipfile(pickled)


def test_hsv_round_trip():
    rng = np.random.default_rng(0)
    hsv = np.stack([rng.random(500), rng.uniform(0.3, 1, 500), rng.uniform(0.3, 1, 500)], 1)
    rgb = hsv_to_rgb(hsv)
    h = rgb_to_hue(rgb)
    d = np.abs(h - hsv[:, 0])
    np.testing.assert_allclose(np.minimum(d, 1 - d), 0, atol=1e-9)
    np.testing.assert_allclose(rgb.max(1), hsv[:, 2], atol=1e-12)
    np.testing.assert_array_equal(hue_bin(np.array([0.0, 0.06, 0.07, 0.99, 0.5]), 8),
                                  [0, 0, 1, 0, 4])


def test_speed_smoke():
    x, y, _ = box_items(3000, seed=1)
    t = make_tinted(x, y, size=32, seed=0)
    assert t.images.shape == (3000, 3, 32, 32)
    m = make_mosaic(x, y, size=64, grid=2, seed=0)
    assert m.images.shape == (750, 1, 64, 64)


def test_tinted_fashion_mnist_uses_the_loaders(tmp_path, monkeypatch):
    from selfsup.data import images as image_io
    from selfsup.data import registry

    x, y, _ = box_items(40, seed=2)
    d = tmp_path / "fashion-mnist"
    image_io.write_idx(d / "train-images-idx3-ubyte", x)
    image_io.write_idx(d / "train-labels-idx1-ubyte", y.astype(np.uint8))
    image_io.write_idx(d / "t10k-images-idx3-ubyte", x[:20])
    image_io.write_idx(d / "t10k-labels-idx1-ubyte", y[:20].astype(np.uint8))
    calls = []

    def fake_fetch(name, root=None, force=False):
        calls.append((name, root))
        return d

    monkeypatch.setattr(registry, "fetch", fake_fetch)
    tr = tinted_fashion_mnist("train", root=tmp_path, seed=3, n=30)
    te = tinted_fashion_mnist("test", root=tmp_path, seed=3)
    assert calls[0] == ("fashion-mnist", tmp_path)
    assert len(tr) == 30 and len(te) == 20
    np.testing.assert_array_equal(tr.labels["class"], y[:30])
    assert tr.meta["seed"] == [3, 0] and te.meta["seed"] == [3, 1]
    assert tr.meta["source"]["split"] == "train" and te.meta["source"]["first_n"] == 20
    assert tr.label_classes["class"] == 10
    # the same items in both splits get different draws
    assert not np.array_equal(tr.values["item_rgb"][:20], te.values["item_rgb"])
    with pytest.raises(InputError):
        tinted_fashion_mnist("valid", root=tmp_path)
    assert tinted_mod.FASHION_MNIST_CLASSES[9] == "Ankle boot"


# --------------------------------------------------------------------------------------------
# mosaic


@pytest.fixture(scope="module")
def mosaic(items):
    x, y, _ = items
    return make_mosaic(x, y, size=64, grid=2, seed=4)


def test_mosaic_shapes_and_labels(mosaic, items):
    x, y, _ = items
    n = len(x) // 4
    assert mosaic.images.shape == (n, 1, 64, 64) and mosaic.images.dtype == np.uint8
    assert mosaic.masks.shape == (n, 64, 64) and mosaic.masks.dtype == np.int64
    assert mosaic.item_labels.shape == (n, 4) and mosaic.boxes.shape == (n, 4, 4)
    # without replacement: every item used at most once, labels follow the items
    src = mosaic.source_index.ravel()
    assert len(np.unique(src)) == len(src)
    np.testing.assert_array_equal(mosaic.item_labels, y[mosaic.source_index])
    assert mosaic.masks.min() >= 0 and mosaic.masks.max() <= 10
    json.dumps(mosaic.meta)
    images, masks, labels, boxes, source, meta = mosaic  # a tuple
    assert meta["grid"] == 2


def test_mosaic_masks_agree_with_drawn_items(mosaic):
    img = mosaic.images[:, 0].astype(int)
    m = mosaic.masks
    # mask pixels are drawn pixels above the threshold, background is 0
    assert np.all(img[m > 0] > 16 - 1)
    assert np.all(img[img > 17] != 0) and np.all(m[img > 17] > 0)
    assert np.all(img[m == 0] <= 17)
    rows = np.arange(64)[None, :, None] + 0.5
    cols = np.arange(64)[None, None, :] + 0.5
    for c in range(4):
        r, q = divmod(c, 2)
        t, left, b, right = (mosaic.boxes[:, c, i][:, None, None] for i in range(4))
        # boxes stay in their cells
        assert np.all(t >= 32 * r - 1e-4) and np.all(b <= 32 * (r + 1) + 1e-4)
        assert np.all(left >= 32 * q - 1e-4) and np.all(right <= 32 * (q + 1) + 1e-4)
        inside = (rows > t - 0.5) & (rows < b + 0.5) & (cols > left - 0.5) & (cols < right + 0.5)
        lab = mosaic.item_labels[:, c][:, None, None] + 1
        cell_mask = np.zeros_like(m, dtype=bool)
        cell_mask[:, 32 * r: 32 * (r + 1), 32 * q: 32 * (q + 1)] = True
        # inside a cell the mask is 0 or that cell's class; nothing drawn outside the box
        assert np.all((m == 0) | ~cell_mask | (m == lab))
        assert np.all(img[cell_mask & ~inside] == 0)
        # the box centre is in the item's flat core: drawn at 255 and masked
        cy = np.floor((mosaic.boxes[:, c, 0] + mosaic.boxes[:, c, 2]) / 2).astype(int)
        cx = np.floor((mosaic.boxes[:, c, 1] + mosaic.boxes[:, c, 3]) / 2).astype(int)
        idx = np.arange(len(m))
        assert np.all(img[idx, cy, cx] == 255)
        np.testing.assert_array_equal(m[idx, cy, cx], mosaic.item_labels[:, c] + 1)


def test_mosaic_determinism_colour_and_empty(items):
    x, y, _ = items
    a = make_mosaic(x, y, size=48, grid=3, seed=1, n=20)
    b = make_mosaic(x, y, size=48, grid=3, seed=1, n=20, chunk=3)
    c = make_mosaic(x, y, size=48, grid=3, seed=2, n=20)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks, c.masks)
    col = make_mosaic(x, y, size=48, grid=3, seed=1, n=20, colour=True)
    assert col.images.shape == (20, 3, 48, 48)
    np.testing.assert_array_equal(col.masks, a.masks)  # the same geometry
    # colour background where nothing is drawn: one colour per image
    bgpix = col.images.transpose(0, 2, 3, 1)[a.images[:, 0] == 0]
    assert len(bgpix) > 0
    per_image = [np.unique(col.images[i].reshape(3, -1)[:, a.images[i, 0].ravel() == 0], axis=1)
                 for i in range(20)]
    assert all(u.shape[1] == 1 for u in per_image)
    e = make_mosaic(x, y, size=48, grid=3, seed=1, n=20, p_empty=1.0)
    assert np.all(e.masks == 0) and np.all(e.images == 0) and np.all(e.item_labels == -1)
    assert np.all(np.isnan(e.boxes)) and np.all(e.source_index == -1)
    half = make_mosaic(x, y, size=48, grid=3, seed=1, n=200, p_empty=0.5)
    assert 0.3 < (half.item_labels == -1).mean() < 0.7
    assert half.meta["with_replacement"]  # 200 * 9 > 600 items
    u8 = make_mosaic(x, y, size=48, grid=3, seed=1, n=20, mask_dtype=np.uint8)
    assert u8.masks.dtype == np.uint8
    np.testing.assert_array_equal(u8.masks, a.masks)


@pytest.mark.parametrize("kwargs", [
    {"size": 63, "grid": 2},
    {"grid": 0},
    {"p_empty": 1.5},
    {"threshold": 300},
    {"item_scale": (0.5, 1.2)},
])
def test_mosaic_bad_parameters(items, kwargs):
    x, y, _ = items
    with pytest.raises(InputError):
        make_mosaic(x, y, **kwargs)
