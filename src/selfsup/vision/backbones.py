"""Vision backbones: CIFAR ResNets (He et al. 2016, sec. 4.2) and torchvision ResNet-18/50;
Vision Transformers (``vit_*``) live in :mod:`selfsup.vision.vit` and are registered here.

Every backbone returns features, never class scores:

- ``forward(x)``: ``(B, C_in, H, W) -> (B, out_dim)``, globally average-pooled features;
- ``forward_features(x)``: ``(B, C_in, H, W) -> (B, out_dim, H', W')``, the last feature map;
- ``out_dim``: the feature width; ``no_weight_decay_names()``: the parameter names (normalisation
  weights and biases, every bias) that an optimiser should exclude from weight decay.

Backbones are built by name: ``build_backbone("resnet32")``, ``build_backbone("resnet18",
small_image_stem=True)``; ``list_backbones()`` gives the names. ``resnet8`` (and the keyword
``width < 1``) gives tiny networks for tests.

CIFAR ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, sec. 4.2):
a 3x3 convolution with 16 filters, then 3 stages of n basic blocks with 16/32/64 filters on
feature maps of 32/16/8 pixels (for 32 px input), global average pooling; depth 6n + 2 gives
ResNet-20/32/44/56/110 for n = 3/5/7/9/18. Shortcuts are option A: identity, and where the shape
changes, stride-2 subsampling plus zero channels, so they carry no parameters.

torchvision ResNet-18/50 wrappers keep torchvision's attribute names (``conv1``, ``bn1``,
``layer1`` .. ``layer4``) at the top level and drop ``fc``, so ``backbone.state_dict()`` loads
into a plain model of the same name::

    model = torchvision.models.resnet18(num_classes=10)
    missing, unexpected = model.load_state_dict(backbone.state_dict(), strict=False)
    # missing == ["fc.weight", "fc.bias"], unexpected == []

With ``small_image_stem=True`` or ``in_channels != 3`` the shape of ``conv1.weight`` differs from
torchvision's default; first give the plain model the same stem
(``model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)``; ``model.maxpool =
nn.Identity()`` for the small stem), then load as above. Conversely a torchvision state dict
(e.g. ImageNet weights) loads into the backbone with ``strict=False`` (``fc.*`` unexpected).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from selfsup.errors import InputError

from .backbone_base import Backbone, no_weight_decay_names
from .vit import VIT_SIZES, vit_factory

__all__ = [
    "Backbone",
    "CifarBasicBlock",
    "CifarResNet",
    "TorchvisionResNet",
    "build_backbone",
    "list_backbones",
    "no_weight_decay_names",
]

# ---------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, section 4.2)
# ---------------------------------------------------------------------------------------------


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions, unit/zero BatchNorm, as in He et al. 2015."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut (option A): subsample by ``stride``, append zero channels.

    ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))`` with ``C_out >= C_in``;
    output channels ``C_in .. C_out - 1`` are zero.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise InputError(
                f"option-A shortcut needs out_channels >= in_channels, got {in_channels} -> "
                f"{out_channels}; widths must not shrink between stages"
            )
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        if self.extra:
            # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back)
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C_out, H/s, W/s)
        return x


class CifarBasicBlock(nn.Module):
    """Basic block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)), option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = OptionAShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H/s, W/s)
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """CIFAR ResNet of depth 6n + 2 (He et al. 2016, sec. 4.2), without the classifier.

    Args:
        num_blocks: n, basic blocks per stage (3 -> ResNet-20, 5 -> ResNet-32, ...).
        width: multiplier of the stage widths 16/32/64 (rounded, at least 1 channel); the paper
            uses 1. Values below 1 give tiny test networks.
        in_channels: image channels (3 for RGB, 1 for MNIST-style images).

    Shapes: ``forward_features``: ``(B, in_channels, H, W) -> (B, 64*width, H/4, W/4)``;
    ``forward``: ``-> (B, out_dim)`` with ``out_dim = round(64 * width)``.
    """

    def __init__(self, num_blocks: int, *, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if int(num_blocks) != num_blocks or num_blocks < 1:
            raise InputError(f"num_blocks must be a positive integer, got {num_blocks!r}")
        if not width > 0:
            raise InputError(f"width must be > 0, got {width!r}; use 1.0 for the paper's nets")
        if int(in_channels) != in_channels or in_channels < 1:
            raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.num_blocks = int(num_blocks)
        self.depth = 6 * self.num_blocks + 2
        self.in_channels = int(in_channels)
        widths = [max(1, round(w * width)) for w in (16, 32, 64)]
        self.widths = tuple(widths)

        self.conv1 = nn.Conv2d(self.in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        prev = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for b in range(self.num_blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(CifarBasicBlock(prev, w, stride))
                prev = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.out_dim = widths[2]
        _kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, self.in_channels)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16w, H, W)
        x = self.layer1(x)  # (B, 16w, H, W)
        x = self.layer2(x)  # (B, 32w, H/2, W/2)
        return self.layer3(x)  # (B, 64w, H/4, W/4)


def _cifar_factory(num_blocks: int) -> Callable[..., CifarResNet]:
    def factory(*, width: float = 1.0, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(num_blocks, width=width, in_channels=in_channels)

    factory.__doc__ = f"CIFAR ResNet-{6 * num_blocks + 2} (n = {num_blocks}), option-A shortcuts."
    return factory


# ---------------------------------------------------------------------------------------------
# torchvision ResNet-18/50
# ---------------------------------------------------------------------------------------------


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without ``fc``; attribute names match torchvision's.

    Args:
        arch: ``"resnet18"`` or ``"resnet50"`` (any ``torchvision.models.resnet`` builder name).
        small_image_stem: replace the 7x7 stride-2 stem convolution and the max-pool by one 3x3
            stride-1 convolution (for 32-96 px images, as in the SimCLR CIFAR/STL-10 setups).
        in_channels: image channels; changes the shape of ``conv1.weight``.

    Shapes: ``forward_features``: ``(B, in_channels, H, W) -> (B, out_dim, H/32, W/32)``
    (``H/8`` with the small stem); ``forward``: ``-> (B, out_dim)``, ``out_dim`` = 512 for
    ResNet-18, 2048 for ResNet-50. See the module docstring for loading weights.
    """

    def __init__(
        self, arch: str = "resnet18", *, small_image_stem: bool = False, in_channels: int = 3
    ) -> None:
        super().__init__()
        if int(in_channels) != in_channels or in_channels < 1:
            raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
        builder = getattr(torchvision.models, arch, None)
        if builder is None or not arch.startswith("resnet"):
            raise InputError(f"unknown torchvision ResNet {arch!r}; use 'resnet18' or 'resnet50'")
        net = builder(weights=None)  # torchvision's own Kaiming init
        self.arch = arch
        self.in_channels = int(in_channels)
        self.small_image_stem = bool(small_image_stem)
        if self.small_image_stem or self.in_channels != 3:
            k, s, p = (3, 1, 1) if self.small_image_stem else (7, 2, 3)
            net.conv1 = nn.Conv2d(self.in_channels, 64, k, s, p, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if self.small_image_stem:
            net.maxpool = nn.Identity()
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.out_dim = net.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, self.in_channels)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4) or (B, 64, H, W)
        x = self.layer1(x)  # (B, 64 * e, ., .), e = block expansion (1 or 4)
        x = self.layer2(x)  # (B, 128 * e, ./2, ./2)
        x = self.layer3(x)  # (B, 256 * e, ./4, ./4)
        return self.layer4(x)  # (B, 512 * e, ./8, ./8)


def _tv_factory(arch: str) -> Callable[..., TorchvisionResNet]:
    def factory(*, small_image_stem: bool = False, in_channels: int = 3) -> TorchvisionResNet:
        return TorchvisionResNet(arch, small_image_stem=small_image_stem, in_channels=in_channels)

    factory.__doc__ = f"torchvision {arch} without fc; optional small-image stem."
    return factory


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Backbone]] = {
    "resnet8": _cifar_factory(1),  # tiny variant for tests
    "resnet14": _cifar_factory(2),
    "resnet20": _cifar_factory(3),
    "resnet32": _cifar_factory(5),
    "resnet44": _cifar_factory(7),
    "resnet56": _cifar_factory(9),
    "resnet110": _cifar_factory(18),
    "resnet18": _tv_factory("resnet18"),
    "resnet50": _tv_factory("resnet50"),
    **{name: vit_factory(name) for name in VIT_SIZES},  # vit_pico/nano/tiny/small/base
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`, sorted."""
    return sorted(_REGISTRY)


def build_backbone(name: str, **kwargs: object) -> Backbone:
    """Build a backbone by name.

    CIFAR ResNets (``resnet8/14/20/32/44/56/110``) take ``width`` and ``in_channels``;
    torchvision ones (``resnet18``, ``resnet50``) take ``small_image_stem`` and ``in_channels``;
    Vision Transformers (``vit_pico/nano/tiny/small/base``, :mod:`selfsup.vision.vit`) take
    ``img_size``, ``patch_size``, ``in_channels``, ``cls_token`` and ``drop_path``.
    Unknown names or keywords raise :class:`selfsup.errors.InputError` listing valid ones.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise InputError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}")
    factory = _REGISTRY[key]
    params = inspect.signature(factory).parameters
    bad = sorted(set(kwargs) - set(params))
    if bad:
        raise InputError(
            f"backbone {key!r} does not take {', '.join(bad)}; valid keywords: {', '.join(params)}"
        )
    return factory(**kwargs)
