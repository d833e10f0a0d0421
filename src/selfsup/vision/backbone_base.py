"""The base class of every vision backbone and the weight-decay rule (kept apart from
:mod:`selfsup.vision.backbones` so that backbone families in their own modules, e.g.
:mod:`selfsup.vision.vit`, can subclass it and still be registered there)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

__all__ = ["Backbone", "no_weight_decay_names"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Names of the parameters of ``module`` that should get no weight decay.

    These are all parameters of normalisation layers (BatchNorm, GroupNorm, LayerNorm) and every
    parameter called ``bias``. Names are as in ``module.named_parameters()``.
    """
    names: set[str] = set()
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for p_name, _ in mod.named_parameters(recurse=False):
            if isinstance(mod, _NORM_TYPES) or p_name == "bias":
                names.add(prefix + p_name)
    return names


class Backbone(nn.Module):
    """Base of every backbone: a feature map, global average pooling, ``out_dim``."""

    out_dim: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, out_dim, H', W')``: the last feature map."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, out_dim)``: globally average-pooled features."""
        feats = self.forward_features(x)  # (B, D, H', W')
        return feats.mean(dim=(2, 3))  # (B, D)

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names to exclude from weight decay (norm weights and biases, all biases)."""
        return no_weight_decay_names(self)

    def _check_input(self, x: torch.Tensor, in_channels: int) -> None:
        if x.dim() != 4 or x.shape[1] != in_channels:
            raise InputError(
                f"{type(self).__name__} expects images of shape (B, {in_channels}, H, W), got "
                f"{tuple(x.shape)}; pass (B, C, H, W) images and build the backbone with "
                "in_channels=C"
            )
