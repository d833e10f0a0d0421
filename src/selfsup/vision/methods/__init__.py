"""Vision methods on the training host; importing this package registers the built-in ones.

:mod:`.base` holds the :class:`~.base.Method` interface and the registry; each method is one
module that registers itself (``@register(name)``); :func:`build_method` builds one by name.
"""

from __future__ import annotations

from ...errors import ConfigError
from . import (  # noqa: F401  (importing registers them)
    byol,
    dino,
    mae,
    moco,
    rotnet,
    selfpatch,
    simclr,
    simsiam,
    sla,
    supervised,
)
from .base import METHODS, Method, MethodContext, register

__all__ = ["METHODS", "Method", "MethodContext", "build_method", "list_methods", "register"]


def list_methods() -> list[str]:
    return sorted(METHODS)


def build_method(name: str, ctx: MethodContext) -> Method:
    """The registered method ``name`` built for ``ctx``; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise ConfigError(f"Unknown method '{name}'. Valid: {', '.join(sorted(METHODS))}")
    method = METHODS[name].from_context(ctx)
    method.set_normalisation(ctx.mean, ctx.std)
    return method
