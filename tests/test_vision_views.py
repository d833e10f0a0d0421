"""Parameter-returning augmentations (selfsup.vision.augment) and view recipes (views)."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from selfsup.errors import ConfigError
from selfsup.vision import augment as A
from selfsup.vision.views import View, ViewRecipe, build_views, multi_crop, simclr


def _images(b=6, c=3, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g)


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def _ones(b):
    return torch.ones(b, dtype=torch.bool)


# --- every op: recorded params reproduce the output exactly ---------------------------------

OPS = [
    ("crop", lambda x, g: A.random_resized_crop(x, (16, 12), generator=g),
     lambda x, p: A.apply_resized_crop(x, p, (16, 12))),
    ("flip", lambda x, g: A.random_horizontal_flip(x, 0.5, g), A.apply_horizontal_flip),
    ("jitter", lambda x, g: A.color_jitter(x, 0.8, 0.8, 0.8, 0.2, p=0.8, generator=g),
     A.apply_color_jitter),
    ("gray", lambda x, g: A.random_grayscale(x, 0.5, g), A.apply_grayscale),
    ("blur", lambda x, g: A.gaussian_blur(x, 0.5, (0.1, 2.0), None, g),
     lambda x, p: A.apply_gaussian_blur(x, p)),
    ("solarize", lambda x, g: A.random_solarize(x, 0.5, 0.5, g), A.apply_solarize),
    ("rotation", lambda x, g: A.random_rotation90(x, 1.0, g), A.apply_rotation90),
]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name,op,apply", OPS, ids=[o[0] for o in OPS])
def test_params_reproduce_output(name, op, apply, c):
    x = _images(b=16, c=c, h=20, w=20)
    out, params = op(x, _gen(3))
    assert all(v.shape[0] == 16 for v in params.values())
    assert torch.equal(apply(x, params), out)
    # determinism: same seed, same output and params; another seed differs (random ops)
    out2, params2 = op(x, _gen(3))
    assert torch.equal(out, out2)
    assert all(torch.equal(params[k], params2[k]) for k in params)
    assert out.dtype == x.dtype and out.device == x.device


def test_apply_params_replays_a_pipeline():
    x = _images(b=8)
    g = _gen(5)
    params = {}
    y, p = A.random_resized_crop(x, 16, generator=g)
    params |= p
    y, p = A.random_horizontal_flip(y, 0.5, g)
    params |= p
    y, p = A.color_jitter(y, generator=g)
    params |= p
    y, p = A.random_grayscale(y, 0.3, g)
    params |= p
    y, p = A.gaussian_blur(y, 0.5, generator=g)
    params |= p
    y, p = A.random_solarize(y, 0.5, generator=g)
    params |= p
    assert torch.equal(A.apply_params(x, params, size=16), y)


def test_params_shapes_and_dtypes():
    x = _images(b=5)
    g = _gen()
    _, p = A.random_resized_crop(x, 8, generator=g)
    assert p["crop_box"].shape == (5, 4) and p["crop_box"].dtype == torch.float32
    box = p["crop_box"]
    assert (box >= 0).all() and (box[:, 0] + box[:, 2] <= 1 + 1e-6).all()
    assert (box[:, 1] + box[:, 3] <= 1 + 1e-6).all()
    _, p = A.color_jitter(x, generator=g)
    assert p["jitter_applied"].dtype == torch.bool
    assert p["jitter_factors"].shape == (5, 4)
    assert torch.equal(p["jitter_order"].sort(dim=1).values, torch.arange(4).expand(5, 4))
    _, p = A.random_rotation90(x[..., :20, :20], generator=g)
    assert p["rotation_k"].dtype == torch.int64 and set(p["rotation_k"].tolist()) <= {0, 1, 2, 3}


# --- agreement with torchvision.transforms.functional on single images ----------------------

def test_resized_crop_matches_torchvision():
    x = _images(b=12, h=20, w=24)
    scale = torch.tensor([20, 24, 20, 24], dtype=torch.float64)
    for size in [(16, 16), (40, 36), (7, 9)]:  # down- and up-sampling
        out, p = A.random_resized_crop(x, size, generator=_gen(7))
        boxes = (p["crop_box"].double() * scale).round().long()
        for i in range(x.shape[0]):
            top, left, h, w = boxes[i].tolist()
            ref = TF.resized_crop(x[i], top, left, h, w, list(size), antialias=False)
            torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_resized_crop_box_distribution_and_fallback():
    b = 4000
    box = A.sample_resized_crop_boxes(b, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), _gen(0))
    area = box[:, 2] * box[:, 3] / 1024
    assert box.dtype == torch.float64 and (box == box.round()).all()  # integer pixels
    assert area.min() >= 0.15 and area.max() <= 1.0
    # same distribution as torchvision's sampler (rejection makes it smaller than 0.6)
    torch.manual_seed(0)
    img = torch.zeros(1, 32, 32)
    ref = [T.RandomResizedCrop.get_params(img, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(b)]
    ref_area = torch.tensor([p[2] * p[3] / 1024 for p in ref], dtype=torch.float64)
    assert abs(area.mean().item() - ref_area.mean().item()) < 0.015
    ratio = box[:, 3] / box[:, 2]
    assert ratio.min() > 0.6 and ratio.max() < 1.6
    # impossible scale: every try fails -> centre crop of the whole image (ratio-clipped)
    box = A.sample_resized_crop_boxes(3, 10, 40, (2.0, 3.0), (3 / 4, 4 / 3), _gen(0))
    want = list(T.RandomResizedCrop.get_params(torch.zeros(1, 10, 40), (2.0, 3.0), (3 / 4, 4 / 3)))
    assert want == [0, 13, 10, 13]  # w = round(10 * 4/3), centred
    assert box.tolist() == [[float(v) for v in want]] * 3


def test_flip_matches_torchvision():
    x = _images()
    out, p = A.random_horizontal_flip(x, 0.5, _gen(2))
    assert 0 < p["flip"].sum() < x.shape[0]
    for i in range(x.shape[0]):
        assert torch.equal(out[i], TF.hflip(x[i]) if p["flip"][i] else x[i])


@pytest.mark.parametrize("factor", [0.0, 0.35, 1.0, 1.7])
def test_jitter_components_match_torchvision(factor):
    x = _images()
    f = torch.full((x.shape[0],), factor)
    pairs = [(A.adjust_brightness, TF.adjust_brightness),
             (A.adjust_contrast, TF.adjust_contrast),
             (A.adjust_saturation, TF.adjust_saturation)]
    for c in (3, 1):
        xc = x[:, :c]
        for mine, ref in pairs:
            want = torch.stack([ref(xi, factor) for xi in xc])
            torch.testing.assert_close(mine(xc, f), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shift", [-0.5, -0.23, -0.02, 0.0, 0.1, 0.37, 0.5])
def test_hue_matches_torchvision(shift):
    x = torch.cat([_images(), torch.randint(0, 3, (4, 3, 20, 24)).float() / 2])  # with ties
    want = torch.stack([TF.adjust_hue(xi, shift) for xi in x])
    torch.testing.assert_close(A.adjust_hue(x, torch.full((x.shape[0],), shift)), want,
                               atol=1e-5, rtol=0)
    g = x[:, :1]
    assert torch.equal(A.adjust_hue(g, torch.full((x.shape[0],), shift)), g)  # grey: no-op


def test_jitter_composition_matches_torchvision_in_recorded_order():
    x = _images(b=10)
    out, p = A.color_jitter(x, 0.8, 0.8, 0.8, 0.2, p=0.7, generator=_gen(4))
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    assert 0 < p["jitter_applied"].sum() < 10
    for i in range(10):
        want = x[i]
        if p["jitter_applied"][i]:
            for op in p["jitter_order"][i].tolist():
                want = fns[op](want, p["jitter_factors"][i, op].item())
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = _images()
    out, p = A.random_grayscale(x, 0.5, _gen(2))
    for i in range(x.shape[0]):
        want = TF.rgb_to_grayscale(x[i], 3) if p["gray_applied"][i] else x[i]
        torch.testing.assert_close(out[i], want, atol=1e-6, rtol=0)
    g = x[:, :1]
    assert torch.equal(A.random_grayscale(g, 1.0, _gen())[0], g)  # 1 channel: no-op


@pytest.mark.parametrize("k", [3, 5, 9])
def test_blur_matches_torchvision(k):
    x = _images()
    out, p = A.gaussian_blur(x, 0.7, (0.1, 2.0), k, _gen(6))
    assert 0 < p["blur_applied"].sum() < x.shape[0]
    for i in range(x.shape[0]):
        s = p["blur_sigma"][i].item()
        want = TF.gaussian_blur(x[i], [k, k], [s, s]) if p["blur_applied"][i] else x[i]
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=0)


def test_blur_kernel_size_rule():
    assert [A.blur_kernel_size(s) for s in (224, 96, 64, 32, 9)] == [23, 9, 7, 3, 1]


def test_solarize_matches_torchvision():
    x = _images()
    out, p = A.random_solarize(x, 0.5, 0.5, _gen(2))
    for i in range(x.shape[0]):
        want = TF.solarize(x[i], 0.5) if p["solarize_applied"][i] else x[i]
        assert torch.equal(out[i], want)


def test_rotation_is_rot90():
    x = _images(h=16, w=16)
    out, p = A.random_rotation90(x, 1.0, _gen(9))
    for i in range(x.shape[0]):
        assert torch.equal(out[i], torch.rot90(x[i], int(p["rotation_k"][i]), dims=(-2, -1)))
    _, p0 = A.random_rotation90(x, 0.0, _gen(9))
    assert (p0["rotation_k"] == 0).all()


def test_generator_determines_draws_and_default_generator_works():
    x = _images()
    a = A.color_jitter(x, generator=A.step_generator(3, 10))[1]["jitter_factors"]
    b = A.color_jitter(x, generator=A.step_generator(3, 10))[1]["jitter_factors"]
    c = A.color_jitter(x, generator=A.step_generator(3, 11))[1]["jitter_factors"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    A.random_resized_crop(x, 8)  # no generator: the global CPU generator


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        A.color_jitter(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError):
        A.color_jitter(torch.rand(2, 3, 8, 8), hue=0.6)
    with pytest.raises(ValueError):
        A.random_grayscale(torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8))


# --- view recipes -------------------------------------------------------------------------------

def _u8(b=8, c=3, s=32):
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=_gen(0))


@pytest.mark.parametrize("name", ["simclr", "moco_v2", "simsiam", "byol"])
def test_two_view_recipes(name):
    x = _u8()
    r = build_views(name, 24)
    views = r(x, A.step_generator(0, 1))
    assert isinstance(r, ViewRecipe) and len(views) == 2
    keys = None
    for v in views:
        assert isinstance(v, View) and v.images.shape == (8, 3, 24, 24)
        keys = keys or set(v.params)
        assert set(v.params) == keys
    assert {"crop_box", "flip", "jitter_applied", "jitter_factors", "jitter_order",
            "gray_applied", "blur_applied", "blur_sigma", "solarize_applied"} == keys
    assert not torch.equal(views[0].images, views[1].images)
    again = r(x, A.step_generator(0, 1))
    assert all(torch.equal(a.images, b.images) for a, b in zip(views, again))
    replay = r.replay(x, [v.params for v in views])
    assert all(torch.equal(a.images, b) for a, b in zip(views, replay))


def test_recipe_settings_follow_the_papers():
    s = build_views("simclr", 224).views[0]
    assert (s.crop_scale, s.jitter, s.jitter_p, s.gray_p, s.blur_p) == (
        (0.08, 1.0), (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, 0.5)
    assert s.kernel_size == 23
    assert build_views("simclr", 32).views[0].blur_p == 0.0  # small images: no blur
    assert build_views("simclr", 32, blur=True).views[0].blur_p == 0.5
    m = build_views("moco_v2", 96).views[0]
    assert (m.crop_scale, m.jitter, m.blur_p, m.blur_sigma, m.flip_p) == (
        (0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.5, (0.1, 2.0), 0.5)
    assert build_views("simsiam", 96).views == build_views("moco_v2", 96).views
    b1, b2 = build_views("byol", 224).views
    assert b1.jitter == (0.4, 0.4, 0.2, 0.1) and b1.crop_scale == (0.08, 1.0)
    assert (b1.blur_p, b1.solarize_p, b2.blur_p, b2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    r = build_views("moco_v2", 32, gray_p=0.0, rotation_p=1.0)
    assert all(v.gray_p == 0.0 and v.rotation_p == 1.0 for v in r.views)
    assert "rotation_k" in r(_u8(), _gen())[0].params
    with pytest.raises(ConfigError):
        build_views("nope", 32)
    with pytest.raises(ConfigError):
        build_views("simclr", 32, not_a_field=1)


def test_multi_crop_sizes():
    r = multi_crop(32, 16, n_local=4)
    views = r(_u8(b=4, s=40), _gen())
    assert len(views) == 6
    assert [tuple(v.images.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 4
    r = build_views("multi_crop", 96, local_size=48, n_local=2)
    assert len(r.views) == 4 and r.views[2].crop_scale == (0.05, 0.4)
    assert r.views[0].crop_scale == (0.4, 1.0) and r.views[1].solarize_p == 0.2


def test_normalisation_grey_input_and_float_input():
    x = _u8(c=1)
    mean, std = (0.4,), (0.2,)
    r = simclr(32, mean=mean, std=std)
    plain = simclr(32)
    v = r(x, _gen(1))
    w = plain(x.float() / 255, _gen(1))  # float input draws the same views
    assert v[0].images.shape == (8, 1, 32, 32)
    torch.testing.assert_close(v[0].images, (w[0].images - 0.4) / 0.2)
    assert w[0].images.min() >= 0 and w[0].images.max() <= 1
