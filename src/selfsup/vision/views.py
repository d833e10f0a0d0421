"""View recipes of two-view (and multi-crop) self-supervised learning, as declarative objects.

A :class:`ViewSpec` describes one view's augmentation pipeline with the published probabilities
and strengths; a :class:`ViewRecipe` is a tuple of them plus the normalisation. Calling a recipe
on a batch draws every view from one CPU ``torch.Generator`` (see
:func:`selfsup.vision.augment.step_generator`) and returns a list of :class:`View`, each with
its normalised images and the merged per-image params of every op (what AugSelf regresses).

The op order is fixed: crop -> flip -> colour jitter -> grayscale -> blur -> solarize
(-> rotation by k * 90 degrees when ``rotation_p`` is set). Every op runs (and draws) even at
probability 0, so every view has the same params keys and the random stream does not depend on
the probabilities.

Recipes (``image_size`` is the output size of the views):

* ``simclr``: RRC scale (0.08, 1), flip 0.5, jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2,
  blur p 0.5 sigma (0.1, 2.0) (SimCLR on ImageNet);
* ``moco_v2`` / ``simsiam``: RRC (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2,
  blur p 0.5 sigma (0.1, 2.0), flip 0.5;
* ``byol``: RRC (0.08, 1), flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2,
  blur p 1.0 / 0.1, solarize p 0 / 0.2 (view 1 / view 2);
* ``multi_crop`` (DINO): two global views as BYOL's (blur 1.0 / 0.1, solarize 0 / 0.2) at
  ``global_scale`` plus ``n_local`` local views at ``local_scale`` with blur 0.5.

Blur is dropped on small images, as the CIFAR set-ups of SimCLR/SimSiam do: ``blur=None``
(default) keeps it iff ``image_size >= 64`` (the global size for multi-crop); pass
``blur=True``/``False`` to force it. Blur kernels are odd, about 10% of the view's side.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from . import augment as A

__all__ = [
    "View", "ViewSpec", "ViewRecipe", "VIEW_RECIPES", "build_views",
    "simclr", "moco_v2", "simsiam", "byol", "multi_crop",
]

BLUR_MIN_SIZE = 64


@dataclass
class View:
    """One augmented view: ``images`` (B, C, h, w) normalised, ``params`` per-image dict."""

    images: torch.Tensor
    params: dict[str, torch.Tensor]


@dataclass(frozen=True)
class ViewSpec:
    """One view's pipeline. Probabilities of 0 turn an op into the identity (params still
    recorded); ``rotation_p=None`` leaves the rotation op (and its ``rotation_k``) out."""

    size: int | tuple[int, int]
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None  # None: ~10% of the view's side, odd
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    rotation_p: float | None = None

    @property
    def out_size(self) -> tuple[int, int]:
        return A._pair(self.size)

    @property
    def kernel_size(self) -> int:
        if self.blur_kernel is not None:
            return int(self.blur_kernel)
        return A.blur_kernel_size(min(self.out_size))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment float images in [0, 1]; returns (unnormalised images, merged params)."""
        params: dict[str, torch.Tensor] = {}
        x, p = A.random_resized_crop(x, self.out_size, self.crop_scale, self.crop_ratio,
                                     generator)
        params.update(p)
        x, p = A.random_horizontal_flip(x, self.flip_p, generator)
        params.update(p)
        x, p = A.color_jitter(x, *self.jitter, p=self.jitter_p, generator=generator)
        params.update(p)
        x, p = A.random_grayscale(x, self.gray_p, generator)
        params.update(p)
        x, p = A.gaussian_blur(x, self.blur_p, self.blur_sigma, self.kernel_size, generator)
        params.update(p)
        x, p = A.random_solarize(x, self.solarize_p, self.solarize_threshold, generator)
        params.update(p)
        if self.rotation_p is not None:
            x, p = A.random_rotation90(x, self.rotation_p, generator)
            params.update(p)
        return x, params

    def replay(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reproduce this view's (unnormalised) images from float input and recorded params."""
        return A.apply_params(x, params, size=self.out_size, blur_kernel_size=self.kernel_size,
                              solarize_threshold=self.solarize_threshold)


def _to_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ConfigError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    return x


@dataclass(frozen=True)
class ViewRecipe:
    """Views of a batch: ``recipe(x, generator) -> list[View]``.

    ``x``: (B, C, H, W) uint8 (divided by 255) or float in [0, 1], C = 1 or 3, any device.
    ``mean``/``std``: per-channel normalisation applied last (None: no normalisation).
    """

    name: str
    views: tuple[ViewSpec, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    jitter_strengths: tuple[float, float, float, float] | None = field(default=None)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None and self.std is None:
            return x
        mean = torch.tensor(self.mean if self.mean is not None else (0.0,), dtype=x.dtype,
                            device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std if self.std is not None else (1.0,), dtype=x.dtype,
                           device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[View]:
        x = _to_float(x)
        out = []
        for spec in self.views:
            images, params = spec(x, generator)
            out.append(View(self.normalise(images), params))
        return out

    def replay(self, x: torch.Tensor, params: Sequence[dict[str, torch.Tensor]]
               ) -> list[torch.Tensor]:
        """Normalised images of every view from recorded params (same order as the views)."""
        x = _to_float(x)
        return [self.normalise(s.replay(x, p)) for s, p in zip(self.views, params, strict=True)]


def _blur_on(blur: bool | None, image_size: int) -> bool:
    return image_size >= BLUR_MIN_SIZE if blur is None else bool(blur)


def _norm(v: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(a) for a in v)


def simclr(image_size: int, *, blur: bool | None = None, strength: float = 1.0,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ViewRecipe:
    """SimCLR: two identical-distribution views; jitter (0.8, 0.8, 0.8, 0.2) x ``strength``."""
    s = float(strength)
    jit = (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    spec = ViewSpec(size=image_size, crop_scale=(0.08, 1.0), flip_p=0.5, jitter=jit,
                    jitter_p=0.8, gray_p=0.2, blur_p=0.5 if _blur_on(blur, image_size) else 0.0,
                    blur_sigma=(0.1, 2.0))
    return ViewRecipe("simclr", (spec, spec), _norm(mean), _norm(std), jit)


def moco_v2(image_size: int, *, blur: bool | None = None, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, name: str = "moco_v2") -> ViewRecipe:
    """MoCo v2 (also SimSiam's): RRC (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grey 0.2,
    blur p 0.5 sigma (0.1, 2.0), flip 0.5."""
    jit = (0.4, 0.4, 0.4, 0.1)
    spec = ViewSpec(size=image_size, crop_scale=(0.2, 1.0), flip_p=0.5, jitter=jit,
                    jitter_p=0.8, gray_p=0.2, blur_p=0.5 if _blur_on(blur, image_size) else 0.0,
                    blur_sigma=(0.1, 2.0))
    return ViewRecipe(name, (spec, spec), _norm(mean), _norm(std), jit)


def simsiam(image_size: int, *, blur: bool | None = None, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None) -> ViewRecipe:
    """SimSiam: MoCo v2's views."""
    return moco_v2(image_size, blur=blur, mean=mean, std=std, name="simsiam")


def _byol_pair(size: int, scale: tuple[float, float], blur_on: bool
               ) -> tuple[ViewSpec, ViewSpec]:
    jit = (0.4, 0.4, 0.2, 0.1)
    base = ViewSpec(size=size, crop_scale=scale, flip_p=0.5, jitter=jit, jitter_p=0.8,
                    gray_p=0.2, blur_sigma=(0.1, 2.0))
    v1 = dataclasses.replace(base, blur_p=1.0 if blur_on else 0.0, solarize_p=0.0)
    v2 = dataclasses.replace(base, blur_p=0.1 if blur_on else 0.0, solarize_p=0.2)
    return v1, v2


def byol(image_size: int, *, blur: bool | None = None, mean: Sequence[float] | None = None,
         std: Sequence[float] | None = None) -> ViewRecipe:
    """BYOL: asymmetric views, blur 1.0 / 0.1 and solarize 0 / 0.2."""
    v1, v2 = _byol_pair(image_size, (0.08, 1.0), _blur_on(blur, image_size))
    return ViewRecipe("byol", (v1, v2), _norm(mean), _norm(std), v1.jitter)


def multi_crop(global_size: int = 224, local_size: int = 96, n_local: int = 6,
               global_scale: tuple[float, float] = (0.4, 1.0),
               local_scale: tuple[float, float] = (0.05, 0.4), *, blur: bool | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None
               ) -> ViewRecipe:
    """DINO's multi-crop: 2 global views (BYOL's asymmetric pair) + ``n_local`` local views
    (blur 0.5, no solarize). Views are returned globals first."""
    blur_on = _blur_on(blur, global_size)
    g1, g2 = _byol_pair(global_size, tuple(global_scale), blur_on)
    local = ViewSpec(size=local_size, crop_scale=tuple(local_scale), flip_p=0.5,
                     jitter=g1.jitter, jitter_p=0.8, gray_p=0.2,
                     blur_p=0.5 if blur_on else 0.0, blur_sigma=(0.1, 2.0))
    return ViewRecipe("multi_crop", (g1, g2) + (local,) * int(n_local), _norm(mean), _norm(std),
                      g1.jitter)


VIEW_RECIPES: dict[str, Callable[..., ViewRecipe]] = {
    "simclr": simclr,
    "moco_v2": moco_v2,
    "simsiam": simsiam,
    "byol": byol,
    "multi_crop": multi_crop,
}

_SPEC_FIELDS = {f.name for f in dataclasses.fields(ViewSpec)} - {"size"}


def build_views(name: str, image_size: int, **overrides) -> ViewRecipe:
    """A recipe by name. ``image_size`` is the view size (multi-crop: the global size).

    Overrides that the recipe function takes (``blur``, ``mean``, ``std``, ``strength``,
    ``local_size``, ...) go to it; the others must be :class:`ViewSpec` fields and replace
    that field in every view (e.g. ``gray_p=0.0``, ``rotation_p=1.0``).
    """
    key = name.lower().replace("-", "_")
    if key not in VIEW_RECIPES:
        raise ConfigError(f"unknown view recipe {name!r}; choose one of {sorted(VIEW_RECIPES)}")
    fn = VIEW_RECIPES[key]
    accepted = set(inspect.signature(fn).parameters) - {"name"}
    fn_kw = {k: v for k, v in overrides.items() if k in accepted}
    spec_kw = {k: v for k, v in overrides.items() if k not in accepted}
    bad = sorted(set(spec_kw) - _SPEC_FIELDS)
    if bad:
        raise ConfigError(
            f"unknown override(s) {bad} for view recipe {name!r}; accepted: "
            f"{sorted((accepted - {'image_size', 'global_size'}) | _SPEC_FIELDS)}"
        )
    size_arg = "global_size" if key == "multi_crop" else "image_size"
    recipe = fn(**{size_arg: image_size}, **fn_kw)
    if spec_kw:
        views = tuple(dataclasses.replace(v, **spec_kw) for v in recipe.views)
        jit = spec_kw.get("jitter", recipe.jitter_strengths)
        recipe = dataclasses.replace(recipe, views=views, jitter_strengths=jit)
    return recipe
