"""Input transformations whose index becomes a label: the sets of SLA (Lee et al., ICML 2020).

Self-supervised label augmentation trains one head with ``N * M`` outputs on the joint label
``y * M + j`` of an image of class ``y`` seen through transformation ``t_j``; ``t_0`` is the
identity. This module holds the transformation sets as batched, parameter-free modules that
work on any device (one tensor operation per transformation index, never a loop over images):

==========================  ===  =====================================================
name                        M    transformations (index order; index 0 = identity)
==========================  ===  =====================================================
``identity``                1    the identity (plain training, for baselines)
``rotation``                4    rotation by 0, 90, 180, 270 degrees (``torch.rot90``)
``rotation2``               2    rotation by 0, 180 degrees
``color_perm``              6    channel orders rgb, rbg, grb, gbr, brg, bgr
``color_perm_cyclic``       3    channel orders rgb, gbr, brg
``a+b`` (e.g.               M_a  product: ``t_j = a_{j_a} o b_{j_b}`` with
``rotation+color_perm``)    x    ``j = j_a * M_b + j_b``; identity first; more factors
                            M_b  fold from the left (``a+b+c`` = ``(a+b)+c``)
==========================  ===  =====================================================

Rotations turn the image counter-clockwise as displayed (row 0 at the top) by ``90 * k``
degrees over the last two dims; 90 and 270 degrees need square images. A channel order
``"gbr"`` means output channels (R, G, B) are input channels (G, B, R): ``out = x[:, perm]``.
Colour permutations need 3-channel images.

Interface of every :class:`LabelTransform` (``x`` is ``(B, C, H, W)``):

- ``expand(x) -> (x_all, j_all)``: all ``M`` copies, **transform-major**:
  ``x_all[j * B + b] = t_j(x[b])`` and ``j_all[j * B + b] = j``, shapes ``(M*B, C, H, W)``
  and ``(M*B,)``. The SLA joint labels of the expanded batch are ``joint_labels(y, j_all)`` =
  ``y.repeat(M) * M + j_all``; ``x_all[:B]`` is the untouched batch.
- ``apply(x, j)``: ``t_{j[b]}(x[b])`` for per-sample indices ``j`` of shape ``(B,)``.
- ``inverse(x, j)``: undoes ``apply``: ``inverse(apply(x, j), j) == x`` exactly.
- ``sample(x, generator)``: ``(apply(x, j), j)`` with ``j`` uniform in ``[0, M)`` (the DA
  baseline: transformations as plain augmentation).

Build by name with :func:`build_label_transform`; :func:`list_label_transforms` lists the names.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from selfsup.errors import InputError

__all__ = [
    "ColorPermutation",
    "Identity",
    "LabelTransform",
    "ProductTransform",
    "Rotation",
    "build_label_transform",
    "list_label_transforms",
]


class LabelTransform(nn.Module):
    """Base class: ``M`` transformations ``t_0 .. t_{M-1}`` with ``t_0`` the identity.

    Subclasses implement ``_forward_one(x, k)`` and ``_inverse_one(x, k)`` on a whole batch for
    one index ``k`` and may override ``check(x)``. ``forward(x)`` is ``expand(x)``.
    """

    name: str = "label_transform"

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        super().__init__()
        self.names: tuple[str, ...] = tuple(names)
        self.M: int = len(self.names)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, M={self.M}"

    # -- to implement ------------------------------------------------------------------------
    def _forward_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    def _inverse_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` if ``x`` is not a ``(B, C, H, W)`` batch this set accepts."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(
                f"label transform {self.name!r} expects images of shape (B, C, H, W), got "
                f"{shape}; add a batch dimension with x.unsqueeze(0)"
            )

    # -- public API ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.expand(x)

    def expand(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``M`` copies, transform-major.

        ``(B, C, H, W) -> (x_all (M*B, C, H, W), j_all (M*B,))`` with
        ``x_all[j * B + b] = t_j(x[b])`` and ``j_all[j * B + b] = j``.
        """
        self.check(x)
        B = x.shape[0]
        x_all = torch.cat([self._forward_one(x, k) for k in range(self.M)], dim=0)  # (M*B, C, H, W)
        j_all = torch.arange(self.M, device=x.device).repeat_interleave(B)  # (M*B,)
        return x_all, j_all

    def joint_labels(self, y: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """SLA joint labels ``y * M + j``.

        ``y`` is ``(B,)`` and ``j`` either ``(B,)`` (per sample, as from ``sample``) or
        ``(M*B,)`` (as from ``expand``; ``y`` is then tiled transform-major: ``y.repeat(M)``).
        """
        if j.shape[0] == self.M * y.shape[0] and j.shape[0] != y.shape[0]:
            y = y.repeat(self.M)  # (M*B,), y_all[j * B + b] = y[b]
        if y.shape != j.shape:
            raise InputError(
                f"joint_labels: y has shape {tuple(y.shape)} and j {tuple(j.shape)}; j must have "
                f"B or M*B = {self.M}*B entries"
            )
        return y * self.M + j

    def apply(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W), (B,) -> (B, C, H, W)``: ``out[b] = t_{j[b]}(x[b])``."""
        return self._per_sample(x, j, self._forward_one)

    def inverse(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W), (B,) -> (B, C, H, W)``: ``out[b] = t_{j[b]}^{-1}(x[b])``."""
        return self._per_sample(x, j, self._inverse_one)

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W) -> (t_j(x) (B, C, H, W), j (B,))`` with ``j`` uniform in ``[0, M)``.

        ``j`` is drawn on the generator's device (CPU if none given) and moved to ``x``'s.
        """
        self.check(x)
        device = generator.device if generator is not None else torch.device("cpu")
        j = torch.randint(self.M, (x.shape[0],), generator=generator, device=device)
        j = j.to(x.device)
        return self.apply(x, j), j

    # -- helpers ---------------------------------------------------------------------------------
    def _per_sample(
        self,
        x: torch.Tensor,
        j: torch.Tensor,
        fn: Callable[[torch.Tensor, int], torch.Tensor],
    ) -> torch.Tensor:
        self.check(x)
        if not isinstance(j, torch.Tensor) or j.shape != (x.shape[0],):
            shape = tuple(j.shape) if isinstance(j, torch.Tensor) else type(j).__name__
            raise InputError(
                f"label transform {self.name!r}: j must be a tensor of shape (B,) = "
                f"({x.shape[0]},), got {shape}"
            )
        if j.dtype.is_floating_point or j.dtype == torch.bool:
            raise InputError(f"label transform {self.name!r}: j must be integer, got {j.dtype}")
        j = j.to(x.device)
        if j.numel() and (int(j.min()) < 0 or int(j.max()) >= self.M):
            raise InputError(
                f"label transform {self.name!r}: indices j must lie in [0, {self.M}), got "
                f"min {int(j.min())}, max {int(j.max())}"
            )
        out = torch.empty_like(x)
        for k in range(self.M):  # one batched op per transformation, none per image
            idx = (j == k).nonzero(as_tuple=True)[0]  # (B_k,)
            out[idx] = fn(x[idx], k)  # (B_k, C, H, W)
        return out


class Identity(LabelTransform):
    """M = 1: only the identity (plain training)."""

    name = "identity"

    def __init__(self) -> None:
        super().__init__(["id"])

    def _forward_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x.clone()

    _inverse_one = _forward_one


class Rotation(LabelTransform):
    """Counter-clockwise rotations by the multiples of 90 degrees in ``quarter_turns``.

    ``Rotation()`` = 0/90/180/270 (M=4, name ``rotation``); ``Rotation((0, 2))`` = 0/180
    (M=2, name ``rotation2``). Quarter turns that are odd need square images (H == W).
    """

    def __init__(self, quarter_turns: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        turns = tuple(int(q) % 4 for q in quarter_turns)
        if not turns or turns[0] != 0 or len(set(turns)) != len(turns):
            raise InputError(
                f"quarter_turns must start with 0 (identity) and be distinct, got {quarter_turns}"
            )
        super().__init__([f"rot{90 * q}" for q in turns])
        self.quarter_turns = turns
        self.name = (
            "rotation"
            if turns == (0, 1, 2, 3)
            else ("rotation2" if turns == (0, 2) else f"rotation{turns}")
        )

    def check(self, x: torch.Tensor) -> None:
        super().check(x)
        if any(q % 2 for q in self.quarter_turns) and x.shape[-2] != x.shape[-1]:
            raise InputError(
                f"label transform {self.name!r} rotates by 90 degrees, which needs square images "
                f"(H == W), got H={x.shape[-2]}, W={x.shape[-1]}; crop or resize to a square, or "
                "use 'rotation2' (0/180 degrees)"
            )

    def _forward_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        q = self.quarter_turns[k]
        # (B, C, H, W) -> (B, C, W, H) for odd q; same shape as checked square
        return torch.rot90(x, q, dims=(-2, -1)) if q else x.clone()

    def _inverse_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        q = self.quarter_turns[k]
        return torch.rot90(x, -q, dims=(-2, -1)) if q else x.clone()


_CHANNELS = "rgb"


class ColorPermutation(LabelTransform):
    """Permutations of the RGB channels; ``out = x[:, perm]``, identity first.

    ``ColorPermutation()`` = all 6 permutations in lexicographic order (name ``color_perm``);
    ``ColorPermutation(cyclic=True)`` = the 3 cyclic shifts rgb, gbr, brg
    (name ``color_perm_cyclic``). Needs 3-channel images.
    """

    def __init__(self, cyclic: bool = False) -> None:
        if cyclic:
            perms = [tuple((c + s) % 3 for c in range(3)) for s in range(3)]
        else:
            perms = list(itertools.permutations(range(3)))  # lexicographic, identity first
        super().__init__(["".join(_CHANNELS[c] for c in p) for p in perms])
        self.perms: tuple[tuple[int, ...], ...] = tuple(perms)
        # inverse permutation: inv[p[c]] = c, so x[:, p][:, inv] == x
        self.inverse_perms: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(range(3), key=lambda c, p=p: p[c])) for p in perms
        )
        self.name = "color_perm_cyclic" if cyclic else "color_perm"

    def check(self, x: torch.Tensor) -> None:
        super().check(x)
        if x.shape[1] != 3:
            raise InputError(
                f"label transform {self.name!r} permutes RGB channels and needs 3-channel images, "
                f"got {x.shape[1]} channel(s); use 'rotation' (or 'rotation2') for "
                "grey-scale or other non-RGB images"
            )

    def _forward_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x[:, list(self.perms[k])]  # (B, 3, H, W), channels reordered (a copy)

    def _inverse_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x[:, list(self.inverse_perms[k])]  # (B, 3, H, W)


class ProductTransform(LabelTransform):
    """Product set ``a x b``: ``t_j = a_{j_a} o b_{j_b}``, ``j = j_a * M_b + j_b``.

    ``M = M_a * M_b``; index 0 is the identity because both factors start with it. Names are
    ``"<a name>+<b name>"``, e.g. ``"rot90+gbr"``.
    """

    def __init__(self, a: LabelTransform, b: LabelTransform) -> None:
        super().__init__([f"{na}+{nb}" for na in a.names for nb in b.names])
        self.a = a
        self.b = b
        self.name = f"{a.name}+{b.name}"

    def check(self, x: torch.Tensor) -> None:
        self.a.check(x)
        self.b.check(x)

    def split_index(self, j: int) -> tuple[int, int]:
        """``j -> (j_a, j_b)`` with ``j = j_a * M_b + j_b``."""
        return divmod(j, self.b.M)

    def _forward_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        ka, kb = self.split_index(k)
        return self.a._forward_one(self.b._forward_one(x, kb), ka)

    def _inverse_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        ka, kb = self.split_index(k)
        return self.b._inverse_one(self.a._inverse_one(x, ka), kb)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

_BASE = {
    "identity": Identity,
    "rotation": Rotation,
    "rotation2": lambda: Rotation((0, 2)),
    "color_perm": ColorPermutation,
    "color_perm_cyclic": lambda: ColorPermutation(cyclic=True),
}


def list_label_transforms() -> list[str]:
    """Base names accepted by :func:`build_label_transform`; join them with ``+`` for products."""
    return list(_BASE)


def build_label_transform(name: str) -> LabelTransform:
    """Build a transformation set by name: a base name or a ``+``-joined product.

    Examples: ``"rotation"`` (M=4), ``"color_perm"`` (M=6), ``"rotation+color_perm"`` (M=24),
    ``"rotation2+color_perm_cyclic"`` (M=6). Unknown or repeated names raise
    :class:`selfsup.errors.InputError`.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(
            f"label transform name must be a non-empty string, got {name!r}; valid names: "
            f"{', '.join(list_label_transforms())} (join with '+' for products)"
        )
    parts = [p.strip().lower() for p in name.split("+")]
    for p in parts:
        if p not in _BASE:
            raise InputError(
                f"unknown label transform {p!r} in {name!r}; valid names: "
                f"{', '.join(list_label_transforms())} (join with '+' for products, e.g. "
                "'rotation+color_perm')"
            )
    families = [p.split("_")[0].rstrip("2") for p in parts]  # rotation, color, identity
    if len(set(families)) != len(families):
        raise InputError(
            f"label transform {name!r} combines two sets of the same kind ({', '.join(parts)}); "
            "their product would repeat transformations: use at most one rotation set and one "
            "colour set, e.g. 'rotation+color_perm'"
        )
    result: LabelTransform = _BASE[parts[0]]()
    for p in parts[1:]:
        result = ProductTransform(result, _BASE[p]())
    return result
