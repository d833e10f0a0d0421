"""Score modifiers: maps from a raw property value to a desirability, usually in [0, 1].

Written from their definitions in GuacaMol (Brown et al., J. Chem. Inf. Model. 2019, Methods):

* Gaussian(mu, sigma):     exp(-((x - mu) / sigma)^2 / 2)
* MinGaussian(mu, sigma):  1 for x <= mu, Gaussian(mu, sigma) above (favours small values)
* MaxGaussian(mu, sigma):  1 for x >= mu, Gaussian(mu, sigma) below (favours large values)
* ClippedScore(upper_x, lower_x=0, high=1, low=0): the straight line through (lower_x, low) and
  (upper_x, high), clipped to [low, high]; upper_x < lower_x gives a decreasing score.
* SmoothClippedScore: a logistic with the same end points and the same slope at the midpoint.
* Thresholded(t):          min(x, t) / t
* Linear(slope):           slope * x;   Chained: apply modifiers left to right.

Every modifier is a callable ``float -> float`` (also accepts numpy arrays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from selfsup.errors import InputError

__all__ = [
    "Chained",
    "ClippedScore",
    "Gaussian",
    "Linear",
    "MaxGaussian",
    "MinGaussian",
    "Modifier",
    "SmoothClippedScore",
    "Thresholded",
]

Modifier = Callable[[float], float]


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise InputError(f"{name} must be > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Linear:
    """``slope * x``."""

    slope: float = 1.0

    def __call__(self, x):
        return self.slope * x


@dataclass(frozen=True)
class Gaussian:
    """Bell ``exp(-0.5 ((x - mu) / sigma)^2)``: 1 at ``mu``."""

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        _positive("Gaussian sigma", self.sigma)

    def __call__(self, x):
        z = (np.asarray(x, dtype=float) - self.mu) / self.sigma
        out = np.exp(-0.5 * z * z)
        return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class MinGaussian:
    """Half Gaussian favouring small values: 1 for ``x <= mu``, a Gaussian tail above."""

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        _positive("MinGaussian sigma", self.sigma)

    def __call__(self, x):
        return Gaussian(self.mu, self.sigma)(np.maximum(x, self.mu))


@dataclass(frozen=True)
class MaxGaussian:
    """Half Gaussian favouring large values: 1 for ``x >= mu``, a Gaussian tail below."""

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        _positive("MaxGaussian sigma", self.sigma)

    def __call__(self, x):
        return Gaussian(self.mu, self.sigma)(np.minimum(x, self.mu))


@dataclass(frozen=True)
class ClippedScore:
    """Line through ``(lower_x, low_score)`` and ``(upper_x, high_score)``, clipped to the scores.

    ``ClippedScore(upper_x=0.75)`` maps a similarity of 0 to 0, 0.75 and above to 1.
    """

    upper_x: float
    lower_x: float = 0.0
    high_score: float = 1.0
    low_score: float = 0.0

    def __post_init__(self) -> None:
        if not self.low_score < self.high_score:
            raise InputError(
                f"ClippedScore needs low_score < high_score, got {self.low_score}, "
                f"{self.high_score}"
            )
        if self.upper_x == self.lower_x:
            raise InputError("ClippedScore needs upper_x != lower_x")

    def __call__(self, x):
        slope = (self.high_score - self.low_score) / (self.upper_x - self.lower_x)
        y = self.high_score + slope * (np.asarray(x, dtype=float) - self.upper_x)
        out = np.clip(y, self.low_score, self.high_score)
        return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class SmoothClippedScore:
    """Logistic from ``low_score`` to ``high_score`` centred between ``lower_x`` and ``upper_x``.

    Its slope at the centre equals the slope of the matching :class:`ClippedScore`.
    """

    upper_x: float
    lower_x: float = 0.0
    high_score: float = 1.0
    low_score: float = 0.0

    def __post_init__(self) -> None:
        if not self.low_score < self.high_score or self.upper_x == self.lower_x:
            raise InputError("SmoothClippedScore needs low_score < high_score, upper_x != lower_x")

    def __call__(self, x):
        # logistic slope at the centre is k * L / 4; the clipped line's slope is L / (upper - lower)
        k = 4.0 / (self.upper_x - self.lower_x)
        mid = 0.5 * (self.upper_x + self.lower_x)
        span = self.high_score - self.low_score
        out = self.low_score + span / (1.0 + np.exp(-k * (np.asarray(x, dtype=float) - mid)))
        return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class Thresholded:
    """``min(x, threshold) / threshold``: linear up to the threshold, then 1."""

    threshold: float

    def __post_init__(self) -> None:
        _positive("Thresholded threshold", self.threshold)

    def __call__(self, x):
        out = np.minimum(x, self.threshold) / self.threshold
        return float(out) if np.ndim(out) == 0 else out


class Chained:
    """Apply ``modifiers`` one after the other (the last one gives the final score)."""

    def __init__(self, modifiers: Sequence[Modifier]) -> None:
        self.modifiers = list(modifiers)

    def __call__(self, x):
        for m in self.modifiers:
            x = m(x)
        return x

    def __repr__(self) -> str:
        return f"Chained({self.modifiers!r})"
