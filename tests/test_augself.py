"""AugSelf targets, heads and loss (selfsup.vision.augself)."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.vision.augment import step_generator
from selfsup.vision.augself import (
    AUGSELF_KINDS,
    AugSelfHeads,
    augself_loss,
    augself_targets,
    normalise_kinds,
)
from selfsup.vision.views import build_views

ALL = ("crop", "colour", "flip", "blur", "rotation", "solarize")


def _views(b=8, seed=0):
    x = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(seed))
    r = build_views("byol", 32, blur=True, rotation_p=1.0)  # every op present and random
    return r(x, step_generator(seed, 0))


def _params(box, flip, applied=False, factors=(1.0, 1.0, 1.0, 0.0), k=0, blur=None,
            solar=False):
    b = len(box)
    return {
        "crop_box": torch.tensor(box, dtype=torch.float32),
        "flip": torch.tensor(flip),
        "jitter_applied": torch.full((b,), applied),
        "jitter_factors": torch.tensor([factors] * b, dtype=torch.float32),
        "jitter_order": torch.arange(4).expand(b, 4),
        "blur_applied": torch.full((b,), blur is not None),
        "blur_sigma": torch.full((b,), 0.0 if blur is None else blur),
        "solarize_applied": torch.full((b,), solar),
        "rotation_k": torch.full((b,), k),
    }


def test_identical_views_give_zero_targets():
    v1, _ = _views()
    t = augself_targets(v1.params, v1.params, ALL, (0.4, 0.4, 0.2, 0.1))
    for k in ("crop", "colour", "blur", "solarize"):
        assert torch.equal(t[k], torch.zeros_like(t[k])), k
    assert torch.equal(t["flip"], torch.ones(8, 1))
    assert torch.equal(t["rotation"], torch.zeros(8, dtype=torch.long))
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "crop": (8, 4), "colour": (8, 4), "flip": (8, 1), "blur": (8, 1), "rotation": (8,),
        "solarize": (8, 1)}


def test_swapping_views_negates_continuous_targets():
    v1, v2 = _views(seed=3)
    t12 = augself_targets(v1.params, v2.params, ALL)
    t21 = augself_targets(v2.params, v1.params, ALL)
    for k in ("crop", "colour", "blur", "solarize"):
        assert torch.equal(t12[k], -t21[k]), k
        assert t12[k].abs().sum() > 0, k
    assert torch.equal(t12["flip"], t21["flip"])
    assert torch.equal((t12["rotation"] + t21["rotation"]) % 4, torch.zeros(8, dtype=torch.long))


def test_crop_target_mirrors_each_views_own_flip():
    # view 1: box y0=0.1 x0=0.2 h=0.5 w=0.4 (centre x 0.4), flipped -> mirrored x-centre 0.6
    # view 2: box y0=0.0 x0=0.5 h=0.5 w=0.5 (centre x 0.75), not flipped
    p1 = _params([[0.1, 0.2, 0.5, 0.4]], [True])
    p2 = _params([[0.0, 0.5, 0.5, 0.5]], [False])
    t = augself_targets(p1, p2, ["crop", "flip"])
    torch.testing.assert_close(t["crop"], torch.tensor([[0.35 - 0.25, 0.6 - 0.75, 0.0, -0.1]]))
    assert t["flip"].item() == 0.0
    # the official code's bug (view 1's flip used for both) would have given 0.6 - 0.25
    p2f = _params([[0.0, 0.5, 0.5, 0.5]], [True])
    t = augself_targets(p1, p2f, ["crop", "flip"])
    torch.testing.assert_close(t["crop"][0, 1], torch.tensor(0.6 - 0.25))
    assert t["flip"].item() == 1.0


def test_colour_blur_rotation_solarize_targets_by_hand():
    p1 = _params([[0, 0, 1, 1]], [False], applied=True, factors=(1.2, 0.8, 1.1, 0.05), k=3,
                 blur=1.0, solar=True)
    p2 = _params([[0, 0, 1, 1]], [False], applied=False, factors=(0.7, 0.7, 0.7, -0.1), k=1)
    t = augself_targets(p1, p2, ALL, jitter_ranges=(0.4, 0.4, 0.4, 0.1),
                        blur_sigma=(0.1, 2.0))
    # widths: 0.8, 0.8, 0.8, 0.2; view 2 not jittered -> 0
    torch.testing.assert_close(t["colour"], torch.tensor([[0.25, -0.25, 0.125, 0.25]]))
    torch.testing.assert_close(t["blur"], torch.tensor([[1.0 / 1.9]]))
    assert t["solarize"].item() == 1.0 and t["rotation"].item() == 2
    # (lo, hi) ranges are accepted too, and strengths above 1 clip the lower end at 0
    t2 = augself_targets(p1, p2, ["colour"], jitter_ranges=[(0.6, 1.4)] * 3 + [(-0.1, 0.1)])
    torch.testing.assert_close(t2["colour"], t["colour"])
    t3 = augself_targets(p1, p2, ["colour"], jitter_ranges=(1.5, 0.4, 0.4, 0.1))
    assert math.isclose(t3["colour"][0, 0].item(), 0.2 / 2.5, rel_tol=1e-6)


def test_heads_shapes():
    heads = AugSelfHeads(16, ALL, hidden=32)
    out = heads(torch.randn(5, 16), torch.randn(5, 16))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (5, d) for k, d in AUGSELF_KINDS.items()}
    mlp = heads.heads["crop"]
    assert [type(m).__name__ for m in mlp] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert mlp[0].in_features == 32 and mlp[0].out_features == 32
    assert AugSelfHeads(16).kinds == ("crop", "colour")
    assert normalise_kinds("crop,color") == ("crop", "colour")
    with pytest.raises(ConfigError):
        AugSelfHeads(16, ["hue"])


def _constant_heads(kinds, biases):
    """Heads whose output is the last layer's bias (weights zeroed), in eval mode."""
    heads = AugSelfHeads(3, kinds, hidden=4)
    for k in kinds:
        last = heads.heads[k][-1]
        torch.nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(biases[k]))
    return heads.eval()


def test_loss_matches_hand_computation():
    kinds = ("crop", "colour", "flip", "rotation")
    biases = {"crop": [0.5, -0.5, 0.0, 1.0], "colour": [0.2, 0.0, 0.0, -0.3], "flip": [0.7],
              "rotation": [0.0, 1.0, 0.0, -1.0]}
    heads = _constant_heads(kinds, biases)
    p1 = _params([[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 1.0, 1.0]], [True, False], applied=True,
                 factors=(1.4, 1.0, 1.0, 0.1), k=1)
    p2 = _params([[0.0, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]], [False, False], k=0)
    f1, f2 = torch.randn(2, 3), torch.randn(2, 3)
    loss, logs = augself_loss(heads, f1, f2, p1, p2, kinds, weight=0.5,
                              jitter_ranges=(0.4, 0.4, 0.4, 0.1))

    # targets by hand
    crop_t = [[0.1, 0.6 - 0.75, 0.0, -0.1], [0.0, 0.0, 0.0, 0.0]]
    colour_t = [[0.5, 0.0, 0.0, 0.5]] * 2
    same_flip = [0.0, 1.0]
    rot = [1, 1]  # (1 - 0) mod 4; swapped (0 - 1) mod 4 = 3

    def mse(bias, rows):
        p = [math.tanh(b) for b in bias]
        errs = [(p[j] - s * r[j]) ** 2 for s in (1, -1) for r in rows for j in range(len(p))]
        return sum(errs) / len(errs)

    crop = mse(biases["crop"], crop_t)
    colour = mse(biases["colour"], colour_t)
    z = biases["flip"][0]
    sig = 1 / (1 + math.exp(-z))
    flip = -sum(y * math.log(sig) + (1 - y) * math.log(1 - sig) for y in same_flip) / 2
    lg = biases["rotation"]
    lse = math.log(sum(math.exp(v) for v in lg))
    rotation = sum(lse - lg[c] for c in rot + [3, 3]) / 4
    want = {"crop": crop, "colour": colour, "flip": flip, "rotation": rotation}
    for k, v in want.items():
        assert math.isclose(logs[f"augself/{k}"].item(), v, rel_tol=1e-5), k
    assert math.isclose(loss.item(), 0.5 * sum(want.values()), rel_tol=1e-5)
    assert math.isclose(logs["augself/total"].item(), loss.item(), rel_tol=1e-6)


def test_loss_trains_end_to_end_on_views():
    torch.manual_seed(0)
    v1, v2 = _views(b=16, seed=1)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8))
    heads = AugSelfHeads(8, ALL, hidden=16)
    loss, logs = augself_loss(heads, backbone(v1.images), backbone(v2.images), v1.params,
                              v2.params, kinds=None, jitter_ranges=(0.4, 0.4, 0.2, 0.1))
    assert torch.isfinite(loss) and set(logs) == {f"augself/{k}" for k in ALL} | {
        "augself/total"}
    loss.backward()
    assert backbone[1].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError):  # views without rotation params
        p = dict(v1.params)
        del p["rotation_k"]
        augself_targets(p, v2.params, ["rotation"])
