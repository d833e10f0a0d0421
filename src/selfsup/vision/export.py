"""``selfsup vision export RUN``: the backbone of a run's selected weights as a plain state dict.

The file holds the backbone's parameters and buffers under the names of the matching
torchvision model (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...; no ``fc``), so

    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load("backbone.pt", weights_only=True), strict=False)  # fc stays

loads it (``missing_keys`` = the ``fc`` weights only). A backbone trained with the small-image
stem needs the same stem first: ``net.conv1 = nn.Conv2d(C, 64, 3, 1, 1, bias=False)`` and
``net.maxpool = nn.Identity()``; ``backbone.json`` beside the weights says which. CIFAR ResNets
(resnet20, ...) have no torchvision counterpart; their state dict loads into
:func:`selfsup.vision.backbones.build_backbone` with the recorded arguments. A ViT (``vit_*``)
loads into ``timm.models.vision_transformer.VisionTransformer(**spec["timm_args"])`` with
``strict=True`` (``backbone.json`` records the arguments).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import atomic_torch_save, atomic_write_json


def backbone_spec(cfg: Any, in_channels: int, image_size: int | None = None) -> dict[str, Any]:
    """How to rebuild the backbone: name, arguments, and its torchvision counterpart (for a
    ViT: the ``timm.models.vision_transformer.VisionTransformer`` arguments that load the state
    dict with ``strict=True``; ``image_size``: the size the run trained at)."""
    name = cfg.model.backbone
    spec: dict[str, Any] = {"backbone": name, "in_channels": in_channels}
    if isinstance(name, str) and name.startswith("vit_"):
        from .vit import VIT_SIZES

        dim, depth, heads = VIT_SIZES[name]
        cls = bool(cfg.model.cls_token)
        timm_args: dict[str, Any] = {
            "img_size": int(image_size or 32), "patch_size": cfg.model.patch_size,
            "in_chans": in_channels, "embed_dim": dim, "depth": depth, "num_heads": heads,
            "mlp_ratio": 4.0, "qkv_bias": True, "num_classes": 0, "class_token": cls,
            "global_pool": "token" if cls else "avg"}
        if not cls:
            timm_args["fc_norm"] = False  # the final norm on every token, then the mean
        spec.update(img_size=timm_args["img_size"], patch_size=cfg.model.patch_size,
                    cls_token=cls, torchvision=None,
                    timm="timm.models.vision_transformer.VisionTransformer",
                    timm_args=timm_args,
                    note="loads with strict=True into timm's VisionTransformer(**timm_args), or "
                    "into selfsup.vision.backbones.build_backbone with the recorded arguments")
    elif name in ("resnet18", "resnet50"):
        spec.update(small_image_stem=cfg.model.small_image_stem,
                    torchvision=f"torchvision.models.{name}",
                    note="replace conv1 by a 3x3 stride-1 convolution and maxpool by Identity "
                    "before loading" if cfg.model.small_image_stem else "loads as it is")
    else:
        spec.update(width=cfg.model.width, torchvision=None,
                    note="a CIFAR ResNet: build it with selfsup.vision.backbones.build_backbone")
    return spec


def export_backbone(run_path: str | os.PathLike, out: str | os.PathLike | None = None
                    ) -> dict[str, Any]:
    """Write the selected weights' backbone state dict (``out``, default
    ``RUN/artefacts/backbone.pt``) and ``backbone.json`` beside it; returns the spec."""
    from .train import load_selected

    run, cfg, model, data = load_selected(run_path)
    target = Path(out) if out else run.artefact_dir / "backbone.pt"
    state = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    atomic_torch_save(state, target)
    spec = backbone_spec(cfg, data.in_channels, int(data.train_x.shape[-1]))
    spec.update(weights=str(target), method=cfg.method, tensors=len(state))
    atomic_write_json(target.with_suffix(".json"), spec)
    return spec
