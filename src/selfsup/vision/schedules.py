"""Schedules as plain functions of the step: learning rate, EMA momentum, weight decay.

Each returns a multiplier or a value for step ``step`` of ``total_steps`` (0-based), so a resumed
run recomputes them from the step alone.
"""

from __future__ import annotations

import math

from ..errors import ConfigError


def _check_warmup(warmup: float) -> None:
    if not 0.0 <= warmup < 1.0:
        raise ConfigError(f"optim.warmup={warmup}: use a fraction of the steps in [0, 1).")


def lr_factor(step: int, total_steps: int, milestones: list[float], gamma: float,
              warmup: float = 0.0) -> float:
    """Step decay: the multiplier at ``step`` is ``gamma`` to the number of milestones (fractions
    of ``total_steps``) passed, times a linear warm-up from 1/w to 1 over the first
    w = warmup x total_steps steps."""
    _check_warmup(warmup)
    bounds = [int(f * total_steps) for f in milestones]
    decay = gamma ** sum(step >= b for b in bounds)
    w = int(warmup * total_steps)
    return decay * min(1.0, (step + 1) / w) if w > 0 else decay


def cosine_factor(step: int, total_steps: int, warmup: float = 0.0,
                  final: float = 0.0) -> float:
    """Linear warm-up over the first w = warmup x total_steps steps (from 1/w to 1), then a
    half cosine from 1 down to ``final`` at the last step."""
    _check_warmup(warmup)
    w = int(warmup * total_steps)
    if w > 0 and step < w:
        return (step + 1) / w
    span = max(total_steps - w, 1)
    t = min(max(step - w, 0), span) / span
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """From ``start`` at step 0 to ``end`` at the last step along a half cosine: BYOL's and
    DINO's teacher momentum (0.996 -> 1), DINO's weight decay (0.04 -> 0.4)."""
    t = min(max(step, 0), max(total_steps, 1)) / max(total_steps, 1)
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * t))


def linear_warmup_value(step: int, warmup_steps: int, start: float, end: float) -> float:
    """``start`` to ``end`` linearly over ``warmup_steps``, then ``end`` (DINO's teacher
    temperature warm-up)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps
