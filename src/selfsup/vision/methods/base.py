"""What a vision method is, to the training host: a module with a loss, hooks and a registry.

The host (:mod:`selfsup.vision.host`) knows no method. It hands each training step the raw
batch as the data loader gives it (uint8 images, labels or ``None`` for an unlabelled split) and
a generator seeded by (seed, step), and asks the method for its loss. Everything else a method
needs (views, heads, EMA teachers, queues) lives in the method.

A method is an ``nn.Module`` with:

- ``training_step(images, labels, generator) -> (loss, logs)``: the loss of one batch; ``logs``
  are scalars the host writes to the run's metrics;
- ``after_step(step, total_steps)``: called after each optimiser step (EMA / momentum updates);
- ``before_optimizer_step(step, total_steps, optimizer)``: called after the backward pass and
  before each optimiser step (gradients unscaled under mixed precision); a method may clip or
  drop gradients or set its parameter groups' weight decay there (DINO). Default: nothing;
- ``param_groups(weight_decay)``: the optimiser's parameter groups (by default no weight decay
  on normalisation parameters and biases);
- ``predict(x) -> {rule: logits}`` (optional): class logits of normalised images, for
  supervised evaluation and model selection; ``primary_rule()`` names the rule a run is judged
  by;
- ``features(x)``: the backbone's pooled features of normalised images (probes, kNN monitor).

Each method registers itself under a name with :func:`register` and is built from a
:class:`MethodContext` by its ``from_context`` class method; its config is its own section of the
run config (``cfg.<name>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MethodContext:
    """What a method is built from: the run config and what the data says."""

    cfg: Any  # the run's VisionTrainConfig
    n_classes: int
    in_channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    total_steps: int


class Method(nn.Module):
    """Base of every vision method (see the module docstring)."""

    name: ClassVar[str] = ""
    uses_labels: ClassVar[bool] = False  # True: the training loss needs labels
    backbone: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self._stats_set = False

    # ------------------------------------------------------------------------- construction
    @classmethod
    def from_context(cls, ctx: MethodContext) -> Method:
        raise NotImplementedError

    def set_normalisation(self, mean: list[float], std: list[float]) -> None:
        """Per-channel mean and std (of images in [0, 1]) used by :meth:`normalise`; kept out of
        the state dict, so weights stay loadable whatever data they meet."""
        self.register_buffer("_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._stats_set = True

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Images as float in [0, 1]: uint8 batches are divided by 255."""
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x / 255 - mean) / std`` for uint8 ``x``; ``(x - mean) / std`` for float in [0, 1]."""
        if not self._stats_set:
            raise RuntimeError("set_normalisation() was not called")
        return (self.to_unit(x) - self._mean) / self._std

    # ----------------------------------------------------------------------------- training
    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step with the number of steps done (EMA updates)."""

    def before_optimizer_step(self, step: int, total_steps: int, optimizer: Any) -> None:
        """Called before every optimiser step with the number of steps done so far, once the
        gradients are in (and unscaled): clip or drop gradients, set per-group weight decay in
        ``optimizer.param_groups``. The default does nothing."""

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Two groups: weights with ``weight_decay``, norm parameters and biases without."""
        from ..backbones import no_weight_decay_names

        skip = no_weight_decay_names(self)
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if name in skip else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    # ---------------------------------------------------------------------------- inference
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, D)`` of normalised images."""
        return self.backbone(x)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{rule: (B, n_classes) logits}`` of normalised images; empty when the method has no
        classifier (then a kNN monitor selects the model). By default the online probe's logits
        on :meth:`features` when the method has one (``self.probe``)."""
        probe = getattr(self, "probe", None)
        if probe is None:
            return {}
        with torch.no_grad():
            return {"single": probe(self.features(x))}

    def primary_rule(self) -> str:
        return "single"

    def has_classifier(self) -> bool:
        """Whether :meth:`predict` gives class logits (else a kNN monitor selects the model); by
        default whether the method has an online probe."""
        return getattr(self, "probe", None) is not None

    def online_probe_loss(self, labels: torch.Tensor | None,
                          features_of: Callable[[torch.Tensor], torch.Tensor],
                          logs: dict[str, Any]) -> torch.Tensor | None:
        """The online linear probe's cross-entropy on the labelled images of the batch (label
        >= 0), or None (no probe, no labels, or none labelled).

        ``features_of(keep)`` gives the detached features ``(n, D)`` of the rows ``keep`` (a bool
        mask over the batch): the probe changes nothing in the backbone. Adds
        ``train_probe_loss`` and ``train_probe_acc`` to ``logs``."""
        probe = getattr(self, "probe", None)
        if probe is None or labels is None:
            return None
        keep = labels >= 0
        if not bool(keep.any()):
            return None
        logits = probe(features_of(keep))
        loss = F.cross_entropy(logits, labels[keep])
        logs["train_probe_loss"] = loss.detach()
        logs["train_probe_acc"] = (logits.argmax(1) == labels[keep]).float().mean()
        return loss

    @torch.no_grad()
    def eval_counts(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Sums over one evaluation batch: correct predictions per rule and, for the rule
        ``single`` when there is one, the cross-entropy. The host divides by the images."""
        out: dict[str, float] = {}
        preds = self.predict(x)
        for rule, logits in preds.items():
            out[rule] = float((logits.argmax(1) == y).sum().item())
        if "single" in preds:
            out["loss"] = float(F.cross_entropy(preds["single"].float(), y, reduction="sum"))
        return out


# ------------------------------------------------------------------------------- registry

METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method buildable by name (``method=<name>`` in a config)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def backbone_from_config(cfg: Any, in_channels: int, image_size: int | None = None) -> nn.Module:
    """The backbone named by ``cfg.model`` (CIFAR ResNets take a width, torchvision ResNets a
    small-image stem, ViTs (``vit_*``) a patch size, a CLS token, a drop-path rate and the image
    size their positional embeddings are learned for: ``image_size``, the size of the images
    the method feeds the backbone; other sizes are interpolated, and None means 32)."""
    from ..backbones import build_backbone

    kwargs: dict[str, Any] = {"in_channels": in_channels}
    name = cfg.model.backbone
    if name in ("resnet18", "resnet50"):  # torchvision ResNets
        kwargs["small_image_stem"] = cfg.model.small_image_stem
    elif isinstance(name, str) and name.strip().lower().startswith("vit_"):
        size, patch = int(image_size or 32), cfg.model.patch_size
        if patch < 1 or size % patch:
            from ...errors import ConfigError

            raise ConfigError(f"model.patch_size={patch} does not divide the image size {size}; "
                              "pick a patch size that divides it (e.g. 4 for 32 px, 16 for 224)")
        kwargs.update(img_size=size, patch_size=patch, cls_token=cfg.model.cls_token,
                      drop_path=cfg.model.drop_path)
    else:
        kwargs["width"] = cfg.model.width
    return build_backbone(name, **kwargs)
