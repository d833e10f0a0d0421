"""AugSelf: augmentation-aware self-supervision (Lee et al., NeurIPS 2021), the auxiliary part.

    L = L_SSL + lambda * sum_a loss_a( phi_a(concat(f(v1), f(v2))), omega_a(v1) - omega_a(v2) )

``f`` is the backbone output (before any projector), ``phi_a`` a 3-layer MLP per augmentation
kind ``a`` (:class:`AugSelfHeads`), ``omega_a`` a summary of the augmentation parameters of a
view, read from the params dicts of :mod:`selfsup.vision.augment` / :mod:`selfsup.vision.views`.
The loss is applied symmetrically, to (v1, v2) and to (v2, v1) with the swapped target.

Per-view ``omega`` (normalised so that every target is O(1)):

* ``crop``: (centre y, centre x, h, w) of the crop box, in coordinates normalised by the source
  image; the x-centre is mirrored (x -> 1 - x) when THAT view was flipped. Each view uses its
  own flip state: the official AugSelf code mirrored both views with view 1's flip, a bug that
  makes the target wrong whenever exactly one view is flipped.
* ``colour``: the jitter factors (brightness - 1, contrast - 1, saturation - 1, hue shift), each
  divided by the width of its sampling range; all zero for a view whose jitter was not applied.
* ``blur``: sigma divided by the width of the sigma range; 0 when blur was not applied.
* ``solarize``: 1.0 if solarised, else 0.0.

Targets are ``omega(v1) - omega(v2)`` for those (regressed with MSE on ``tanh(pred)``, as in the
paper). Discrete kinds: ``flip`` is a binary target "same flip state" (1 if both views have the
same flip; BCE with logits), ``rotation`` the 4-way class ``(k1 - k2) mod 4`` (cross-entropy).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "AUGSELF_KINDS", "CONTINUOUS_KINDS", "DEFAULT_JITTER", "AugSelfHeads", "augself_omega",
    "augself_targets", "augself_loss", "normalise_kinds",
]

#: Output dimension of each kind's head.
AUGSELF_KINDS = {"crop": 4, "colour": 4, "flip": 1, "blur": 1, "rotation": 4, "solarize": 1}
CONTINUOUS_KINDS = frozenset({"crop", "colour", "blur", "solarize"})
#: Jitter strengths assumed when none are given: MoCo v2 / SimSiam's (AugSelf's base recipes).
DEFAULT_JITTER = (0.4, 0.4, 0.4, 0.1)
_ALIASES = {"color": "colour", "rot": "rotation", "rotate": "rotation", "solarise": "solarize"}


def normalise_kinds(kinds: str | Iterable[str]) -> tuple[str, ...]:
    """Canonical kind names (``color`` -> ``colour``); raises ConfigError on unknown ones."""
    if isinstance(kinds, str):
        kinds = [k for k in kinds.replace(",", " ").split() if k]
    out: list[str] = []
    for k in kinds:
        k = _ALIASES.get(k.lower(), k.lower())
        if k not in AUGSELF_KINDS:
            raise ConfigError(f"unknown AugSelf kind {k!r}; choose from {sorted(AUGSELF_KINDS)}")
        if k not in out:
            out.append(k)
    if not out:
        raise ConfigError("AugSelf needs at least one kind")
    return tuple(out)


def _jitter_widths(jitter_ranges) -> torch.Tensor:
    """(4,) sampling-range widths from 4 strengths (ColorJitter style) or 4 (lo, hi) pairs."""
    if jitter_ranges is None:
        jitter_ranges = DEFAULT_JITTER
    jr = list(jitter_ranges)
    if len(jr) != 4:
        raise ConfigError(f"jitter_ranges needs 4 entries (b, c, s, h), got {jitter_ranges!r}")
    widths = []
    for i, r in enumerate(jr):
        if isinstance(r, (int, float)):
            s = float(r)
            widths.append(2 * s if i == 3 else s + min(s, 1.0))  # [max(0,1-s), 1+s] / [-h, h]
        else:
            lo, hi = r
            widths.append(float(hi) - float(lo))
    return torch.tensor(widths, dtype=torch.float32)


def _need(params: dict[str, torch.Tensor], key: str, kind: str) -> torch.Tensor:
    if key not in params:
        raise ConfigError(f"AugSelf kind {kind!r} needs params[{key!r}]; the views were made "
                          f"without that augmentation (params keys: {sorted(params)})")
    return params[key]


def augself_omega(params: dict[str, torch.Tensor], kind: str, jitter_ranges=None,
                  blur_sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """(B, d) float32 summary of one view's params for a continuous kind (see module doc)."""
    if kind == "crop":
        box = _need(params, "crop_box", kind).float()
        cy = box[:, 0] + box[:, 2] / 2
        cx = box[:, 1] + box[:, 3] / 2
        if "flip" in params:
            cx = torch.where(params["flip"].to(cx.device), 1 - cx, cx)
        return torch.stack([cy, cx, box[:, 2], box[:, 3]], dim=1)
    if kind == "colour":
        f = _need(params, "jitter_factors", kind).float()
        applied = _need(params, "jitter_applied", kind).to(f.device)
        ident = torch.tensor([1.0, 1.0, 1.0, 0.0], device=f.device)
        w = _jitter_widths(jitter_ranges).to(f.device)
        w = torch.where(w > 0, w, torch.ones_like(w))
        return torch.where(applied[:, None], (f - ident) / w, torch.zeros_like(f))
    if kind == "blur":
        s = _need(params, "blur_sigma", kind).float()
        applied = _need(params, "blur_applied", kind).to(s.device)
        width = float(blur_sigma[1]) - float(blur_sigma[0])
        width = width if width > 0 else 1.0
        return torch.where(applied, s / width, torch.zeros_like(s))[:, None]
    if kind == "solarize":
        return _need(params, "solarize_applied", kind).float()[:, None]
    raise ConfigError(f"augself_omega: {kind!r} is not a continuous kind")


def augself_targets(params1: dict[str, torch.Tensor], params2: dict[str, torch.Tensor],
                    kinds: str | Sequence[str] = ("crop", "colour"), jitter_ranges=None,
                    blur_sigma: tuple[float, float] = (0.1, 2.0)) -> dict[str, torch.Tensor]:
    """Targets of the pair (v1, v2) per kind.

    Continuous kinds: ``omega(v1) - omega(v2)`` (B, d) float32, d = 4 (crop, colour) or 1 (blur,
    solarize). ``flip``: (B, 1) float32, 1.0 where both views have the same flip state.
    ``rotation``: (B,) int64, ``(k1 - k2) mod 4``.

    ``jitter_ranges``: the colour jitter strengths (b, c, s, h) the views were drawn with, or
    their four (lo, hi) sampling ranges; None: MoCo v2's (0.4, 0.4, 0.4, 0.1). ``blur_sigma``:
    the sigma range of the blur.
    """
    out: dict[str, torch.Tensor] = {}
    for kind in normalise_kinds(kinds):
        if kind in CONTINUOUS_KINDS:
            o1 = augself_omega(params1, kind, jitter_ranges, blur_sigma)
            o2 = augself_omega(params2, kind, jitter_ranges, blur_sigma).to(o1.device)
            out[kind] = o1 - o2
        elif kind == "flip":
            f1 = _need(params1, "flip", kind)
            f2 = _need(params2, "flip", kind).to(f1.device)
            out[kind] = (f1 == f2).float()[:, None]
        else:  # rotation
            k1 = _need(params1, "rotation_k", kind).long()
            k2 = _need(params2, "rotation_k", kind).long().to(k1.device)
            out[kind] = torch.remainder(k1 - k2, 4)
    return out


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, d_out),
    )


class AugSelfHeads(nn.Module):
    """One 3-layer MLP (Linear-BN-ReLU-Linear-BN-ReLU-Linear) per kind on concat(f1, f2).

    Output dims: crop 4, colour 4, flip 1, blur 1, rotation 4, solarize 1.
    """

    def __init__(self, feat_dim: int, kinds: str | Sequence[str] = ("crop", "colour"),
                 hidden: int = 512) -> None:
        super().__init__()
        self.feat_dim = int(feat_dim)
        self.kinds = normalise_kinds(kinds)
        self.heads = nn.ModuleDict(
            {k: _mlp(2 * self.feat_dim, hidden, AUGSELF_KINDS[k]) for k in self.kinds}
        )

    def forward(self, f1: torch.Tensor, f2: torch.Tensor,
                kinds: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Raw predictions (logits for flip/rotation) per kind for the ordered pair (f1, f2)."""
        z = torch.cat([f1, f2], dim=1)
        ks = self.kinds if kinds is None else normalise_kinds(kinds)
        return {k: self.heads[k](z) for k in ks}


def augself_loss(
    heads: AugSelfHeads, f1: torch.Tensor, f2: torch.Tensor, params1: dict[str, torch.Tensor],
    params2: dict[str, torch.Tensor], kinds: str | Sequence[str] | None = ("crop", "colour"),
    weight: float = 1.0, jitter_ranges=None, blur_sigma: tuple[float, float] = (0.1, 2.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``weight * sum_kind loss_kind``, each loss symmetric over (v1, v2) and (v2, v1).

    Both orders go through the heads as one batch of 2B rows (so BatchNorm sees both), and each
    kind's loss is the mean over those 2B rows, i.e. the mean of the two directions:
    MSE(tanh(pred), target) for continuous kinds (target negated for (v2, v1)),
    BCE-with-logits for ``flip`` (same target both ways), cross-entropy for ``rotation``
    ((k1 - k2) mod 4, then (k2 - k1) mod 4). ``kinds=None``: the heads' kinds.
    Returns (loss, logs) with logs ``augself/<kind>`` (detached) and ``augself/total``.
    """
    ks = heads.kinds if kinds is None else normalise_kinds(kinds)
    t12 = augself_targets(params1, params2, ks, jitter_ranges, blur_sigma)
    z = torch.cat([torch.cat([f1, f2], dim=1), torch.cat([f2, f1], dim=1)], dim=0)
    total = z.new_zeros(())
    logs: dict[str, torch.Tensor] = {}
    for k in ks:
        pred = heads.heads[k](z)
        t = t12[k].to(z.device)
        if k in CONTINUOUS_KINDS:
            tgt = torch.cat([t, -t], dim=0).to(pred.dtype)
            loss_k = F.mse_loss(torch.tanh(pred), tgt)
        elif k == "flip":
            tgt = torch.cat([t, t], dim=0).to(pred.dtype)
            loss_k = F.binary_cross_entropy_with_logits(pred, tgt)
        else:  # rotation
            tgt = torch.cat([t, torch.remainder(-t, 4)], dim=0)
            loss_k = F.cross_entropy(pred, tgt)
        logs[f"augself/{k}"] = loss_k.detach()
        total = total + loss_k
    loss = weight * total
    logs["augself/total"] = loss.detach()
    return loss, logs
