"""Molecular optimisers over one shared loop: a budgeted oracle, a start pool, a run directory.

``selfsup chem optimize --objective NAME --budget N --optimizer NAME`` runs one of the
registered optimisers (see :data:`OPTIMIZERS`); each is a function
``(ctx: OptimizationContext, cfg, rng) -> None`` that spends the oracle budget through
``ctx.score``. The loop, the record of every oracle call, checkpoints and outputs are shared.
"""

from .base import BF16_SPEED_OVERRIDES, OPTIMIZERS, OptimizationContext, OptimizeConfig
from .generator import SelfsupGoalDirectedGenerator
from .run import optimize, resume

__all__ = ["BF16_SPEED_OVERRIDES", "OPTIMIZERS", "OptimizationContext", "OptimizeConfig",
           "SelfsupGoalDirectedGenerator", "optimize", "resume"]
