"""Backbones: He et al. 2016 CIFAR ResNet sizes, shapes, option-A shortcuts, torchvision keys."""

from __future__ import annotations

import pytest
import torch
import torchvision

from selfsup.errors import InputError
from selfsup.vision.backbones import (
    Backbone,
    CifarBasicBlock,
    OptionAShortcut,
    build_backbone,
    list_backbones,
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Exact counts of the backbone (no classifier), computed from the architecture:
# stem 3*16*9 + 2*16, blocks 2 convs + 2 BNs each, option-A shortcuts free.
# The paper's table (He et al. 2016, Table 6) counts the 10-way classifier: 64*10 + 10 = 650.
@pytest.mark.parametrize(
    ("name", "exact", "paper"),
    [("resnet20", 269_072, 0.27e6), ("resnet32", 463_504, 0.46e6), ("resnet56", 852_368, 0.85e6)],
)
def test_cifar_resnet_parameter_counts(name: str, exact: int, paper: float) -> None:
    net = build_backbone(name)
    assert n_params(net) == exact
    assert abs(exact + 650 - paper) / paper < 0.02
    assert net.out_dim == 64
    assert net.depth == int(name[len("resnet") :])


def test_stem_and_stage_counts_by_hand() -> None:
    # resnet8 = n=1: stem conv+bn, one block per stage, no shortcut parameters.
    net = build_backbone("resnet8")
    stem = 3 * 16 * 9 + 2 * 16
    blocks = sum(
        9 * cin * cout + 9 * cout * cout + 4 * cout for cin, cout in [(16, 16), (16, 32), (32, 64)]
    )
    assert n_params(net) == stem + blocks


def test_option_a_shortcut_is_parameter_free_and_zero_padded() -> None:
    torch.manual_seed(0)
    block = CifarBasicBlock(4, 8, stride=2)
    assert isinstance(block.shortcut, OptionAShortcut)
    assert n_params(block.shortcut) == 0
    x = torch.randn(2, 4, 6, 6)
    s = block.shortcut(x)
    assert s.shape == (2, 8, 3, 3)
    torch.testing.assert_close(s[:, :4], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert torch.count_nonzero(s[:, 4:]) == 0
    # shortcut modules across a whole network have no parameters either
    net = build_backbone("resnet20")
    assert not any("shortcut" in n for n, _ in net.named_parameters())


@pytest.mark.parametrize("in_channels", [1, 3])
def test_cifar_shapes(in_channels: int) -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet8", width=0.25, in_channels=in_channels).eval()
    assert net.out_dim == 16
    x = torch.randn(2, in_channels, 32, 32)
    feats = net.forward_features(x)
    assert feats.shape == (2, 16, 8, 8)
    out = net(x)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out, feats.mean(dim=(2, 3)))
    # MNIST-sized input, odd intermediate sizes: 28 -> 14 -> 7
    assert net(torch.randn(2, in_channels, 28, 28)).shape == (2, 16)


def test_wrong_channels_raise() -> None:
    net = build_backbone("resnet8", width=0.25, in_channels=1)
    with pytest.raises(InputError, match="in_channels"):
        net(torch.randn(1, 3, 8, 8))


def test_no_weight_decay_names() -> None:
    net = build_backbone("resnet8", width=0.25)
    names = net.no_weight_decay_names()
    params = dict(net.named_parameters())
    assert names <= set(params)
    assert "bn1.weight" in names and "bn1.bias" in names
    assert all(params[n].dim() == 1 for n in names)
    assert all(params[n].dim() == 4 for n in set(params) - names)  # only conv weights decay


def test_kaiming_init() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet20")
    w = net.layer3[0].conv2.weight  # (64, 64, 3, 3), fan_out = 64 * 9
    expected = (2.0 / (64 * 9)) ** 0.5
    assert abs(w.std().item() - expected) / expected < 0.05
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)


def test_torchvision_resnet18_small_stem_shapes() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet18", small_image_stem=True).eval()
    assert isinstance(net, Backbone) and net.out_dim == 512
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert net.forward_features(x).shape == (2, 512, 4, 4)
        assert net(x).shape == (2, 512)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_torchvision_resnet18_default_stem_and_grey() -> None:
    net = build_backbone("resnet18", in_channels=1).eval()
    with torch.no_grad():
        assert net.forward_features(torch.randn(1, 1, 64, 64)).shape == (1, 512, 2, 2)


def test_torchvision_state_dict_compatible() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet18").eval()
    plain = torchvision.models.resnet18(num_classes=7).eval()
    result = plain.load_state_dict(net.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    # the plain model now computes the same features (fc replaced by identity)
    plain.fc = torch.nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), net(x))

    # small stem: give the plain model the same stem first (see the module docstring)
    small = build_backbone("resnet18", small_image_stem=True)
    plain = torchvision.models.resnet18(num_classes=7)
    plain.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    plain.maxpool = torch.nn.Identity()
    result = plain.load_state_dict(small.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]


def test_resnet50_keys_match_torchvision() -> None:
    net = build_backbone("resnet50")
    assert net.out_dim == 2048
    tv_keys = set(torchvision.models.resnet50().state_dict())
    assert tv_keys - set(net.state_dict()) == {"fc.weight", "fc.bias"}
    assert set(net.state_dict()) <= tv_keys


def test_registry() -> None:
    names = list_backbones()
    for n in ["resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]:
        assert n in names
    assert "resnet18" in names and "resnet50" in names
    with pytest.raises(InputError, match="resnet32"):  # lists valid names
        build_backbone("resnet33")
    with pytest.raises(InputError, match="small_image_stem"):
        build_backbone("resnet20", small_image_stem=True)
    with pytest.raises(InputError, match="width"):
        build_backbone("resnet20", width=0)
