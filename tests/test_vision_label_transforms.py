"""SLA label transformations: exact inverses, ordering, identity first, products, errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from selfsup.errors import InputError
from selfsup.vision.label_transforms import (
    ProductTransform,
    build_label_transform,
    list_label_transforms,
)

ALL_NAMES = [
    "identity",
    "rotation",
    "rotation2",
    "color_perm",
    "color_perm_cyclic",
    "rotation+color_perm",
    "rotation2+color_perm_cyclic",
    "rotation+color_perm_cyclic",
    "color_perm+rotation",
]
EXPECTED_M = {
    "identity": 1,
    "rotation": 4,
    "rotation2": 2,
    "color_perm": 6,
    "color_perm_cyclic": 3,
    "rotation+color_perm": 24,
    "rotation2+color_perm_cyclic": 6,
    "rotation+color_perm_cyclic": 12,
    "color_perm+rotation": 24,
}


def images(b: int = 5, c: int = 3, h: int = 4, w: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_sizes_names_and_identity_first(name: str) -> None:
    t = build_label_transform(name)
    assert t.M == EXPECTED_M[name] == len(t.names) == len(set(t.names))
    x = images()
    x_all, j_all = t.expand(x)
    assert x_all.shape == (t.M * 5, 3, 4, 4)
    assert torch.equal(x_all[:5], x)  # index 0 is the identity
    # all M transformations differ on a generic image
    flat = x_all.reshape(t.M, -1)  # (M, B*C*H*W)
    assert len({tuple(row.tolist()) for row in flat}) == t.M


@pytest.mark.parametrize("name", ALL_NAMES)
def test_expand_ordering_matches_apply_and_inverse_is_exact(name: str) -> None:
    t = build_label_transform(name)
    x = images()
    B = x.shape[0]
    x_all, j_all = t.expand(x)
    assert torch.equal(j_all, torch.arange(t.M).repeat_interleave(B))
    # transform-major: x_all[j*B + b] == t_j(x[b]) == apply(x, j)[b]
    for j in range(t.M):
        jj = torch.full((B,), j, dtype=torch.long)
        assert torch.equal(x_all[j * B : (j + 1) * B], t.apply(x, jj))
    # apply on the tiled batch equals expand; inverse restores exactly
    assert torch.equal(t.apply(x.repeat(t.M, 1, 1, 1), j_all), x_all)
    assert torch.equal(t.inverse(x_all, j_all), x.repeat(t.M, 1, 1, 1))
    # mixed per-sample indices
    g = torch.Generator().manual_seed(1)
    j = torch.randint(t.M, (B,), generator=g)
    y = t.apply(x, j)
    for b in range(B):
        assert torch.equal(y[b], x_all[int(j[b]) * B + b])
    assert torch.equal(t.inverse(y, j), x)


def test_joint_labels() -> None:
    t = build_label_transform("rotation")
    y = torch.tensor([2, 0, 9])
    x_all, j_all = t.expand(images(b=3))
    joint = t.joint_labels(y, j_all)
    assert joint.tolist() == [8, 0, 36, 9, 1, 37, 10, 2, 38, 11, 3, 39]
    assert torch.equal(joint // t.M, y.repeat(4)) and torch.equal(joint % t.M, j_all)
    assert t.joint_labels(y, torch.tensor([1, 2, 3])).tolist() == [9, 2, 39]


def test_rotation_of_2x2_image() -> None:
    t = build_label_transform("rotation")
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    x_all, _ = t.expand(x)
    assert t.names == ("rot0", "rot90", "rot180", "rot270")
    assert x_all[0, 0].tolist() == [[1, 2], [3, 4]]
    assert x_all[1, 0].tolist() == [[2, 4], [1, 3]]  # 90 degrees counter-clockwise
    assert x_all[2, 0].tolist() == [[4, 3], [2, 1]]
    assert x_all[3, 0].tolist() == [[3, 1], [4, 2]]
    r2, _ = build_label_transform("rotation2").expand(x)
    assert r2[1, 0].tolist() == [[4, 3], [2, 1]]


def test_color_perm_channels() -> None:
    t = build_label_transform("color_perm")
    perms = list(itertools.permutations(range(3)))
    assert t.names == ("rgb", "rbg", "grb", "gbr", "brg", "bgr")
    x = torch.arange(3.0).reshape(1, 3, 1, 1)  # channel c holds value c
    x_all, _ = t.expand(x)
    assert [tuple(int(v) for v in x_all[j, :, 0, 0]) for j in range(6)] == perms
    c = build_label_transform("color_perm_cyclic")
    assert c.names == ("rgb", "gbr", "brg")
    xc, _ = c.expand(x)
    assert xc[1, :, 0, 0].tolist() == [1, 2, 0]


def test_product_indexing() -> None:
    t = build_label_transform("rotation+color_perm")
    assert isinstance(t, ProductTransform)
    rot, perm = build_label_transform("rotation"), build_label_transform("color_perm")
    x = images(b=2)
    x_all, _ = t.expand(x)
    for ja, jb in itertools.product(range(4), range(6)):
        j = ja * 6 + jb
        assert t.names[j] == f"{rot.names[ja]}+{perm.names[jb]}"
        ja_t = torch.full((2,), ja)
        jb_t = torch.full((2,), jb)
        assert torch.equal(x_all[j * 2 : (j + 1) * 2], rot.apply(perm.apply(x, jb_t), ja_t))


def test_sample_is_seeded_and_consistent() -> None:
    t = build_label_transform("rotation+color_perm_cyclic")
    x = images(b=8)
    y1, j1 = t.sample(x, torch.Generator().manual_seed(3))
    y2, j2 = t.sample(x, torch.Generator().manual_seed(3))
    assert torch.equal(j1, j2) and torch.equal(y1, y2)
    assert j1.shape == (8,) and int(j1.min()) >= 0 and int(j1.max()) < t.M
    assert torch.equal(y1, t.apply(x, j1))
    assert torch.equal(t.inverse(y1, j1), x)


def test_module_forward_is_expand() -> None:
    t = build_label_transform("rotation2")
    x = images(b=2, h=3, w=5)  # 180 degrees works on non-square images
    a, ja = t(x)
    b, jb = t.expand(x)
    assert torch.equal(a, b) and torch.equal(ja, jb)
    assert a.shape == (4, 3, 3, 5)


def test_errors() -> None:
    grey = images(c=1)
    for name in ["color_perm", "color_perm_cyclic", "rotation+color_perm"]:
        with pytest.raises(InputError, match="color_perm.*rotation"):
            build_label_transform(name).expand(grey)
    assert build_label_transform("rotation").expand(grey)[0].shape == (20, 1, 4, 4)
    with pytest.raises(InputError, match="H == W"):
        build_label_transform("rotation").expand(images(h=4, w=6))
    with pytest.raises(InputError, match="rotation2"):
        build_label_transform("roation")
    with pytest.raises(InputError, match="color_perm_cyclic"):
        build_label_transform("rotation+hue")
    with pytest.raises(InputError, match="same kind"):
        build_label_transform("rotation+rotation2")
    t = build_label_transform("rotation")
    with pytest.raises(InputError, match=r"\[0, 4\)"):
        t.apply(images(b=2), torch.tensor([0, 4]))
    with pytest.raises(InputError, match="shape"):
        t.apply(images(b=2), torch.tensor([0]))
    with pytest.raises(InputError, match="B, C, H, W"):
        t.expand(torch.zeros(3, 4, 4))
    assert set(list_label_transforms()) == {
        "identity",
        "rotation",
        "rotation2",
        "color_perm",
        "color_perm_cyclic",
    }
