"""Name -> objective registry: ``get_objective(name)`` and ``list_objectives()``.

Names are matched case-insensitively with spaces and hyphens read as underscores, so both the
registry key (``median1``, ``isomers_c11h24``) and GuacaMol's own name (``Median molecules 1``,
``C11H24``) work.
"""

from __future__ import annotations

from collections.abc import Callable

from selfsup.chem.objectives.base import Objective
from selfsup.chem.objectives.properties import PenalizedLogP, SAObjective
from selfsup.chem.objectives.tasks import GUACAMOL_V2_TASKS, PMO_TASKS, TASK_BUILDERS
from selfsup.errors import InputError

__all__ = ["get_objective", "list_objectives"]

_BUILDERS: dict[str, Callable[[], Objective]] = dict(TASK_BUILDERS)
_BUILDERS.update({
    "penalized_logp": lambda: PenalizedLogP(form="raw", ring="cycle_basis"),
    "penalized_logp_sssr": lambda: PenalizedLogP(form="raw", ring="sssr"),
    "penalized_logp_gegl": lambda: PenalizedLogP(form="gegl", ring="cycle_basis"),
    "penalized_logp_gegl_sssr": lambda: PenalizedLogP(form="gegl", ring="sssr"),
    "sa_score": SAObjective,
})

_ALIASES = {
    "c11h24": "isomers_c11h24",
    "c9h10n2o2pf2cl": "isomers_c9h10n2o2pf2cl",
    "c7h8n2o2": "isomers_c7h8n2o2",
    "median_molecules_1": "median1",
    "median_molecules_2": "median2",
    "plogp": "penalized_logp",
}


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def list_objectives(suite: str | None = None) -> list[str]:
    """Registry names; ``suite='guacamol_v2'`` or ``'pmo'`` restricts to that benchmark."""
    if suite is None:
        return list(_BUILDERS)
    key = suite.strip().lower()
    if key in ("guacamol", "guacamol_v2"):
        return list(GUACAMOL_V2_TASKS)
    if key == "pmo":
        return list(PMO_TASKS)
    raise InputError(f"unknown suite {suite!r}; use 'guacamol_v2', 'pmo' or None for all")


def get_objective(name: str) -> Objective:
    """A fresh objective for ``name``; raises :class:`InputError` listing the valid names."""
    if not isinstance(name, str):
        raise InputError(f"objective name must be a string, got {type(name).__name__}")
    builder = _BUILDERS.get(_normalise(name))
    if builder is None:
        raise InputError(
            f"unknown objective {name!r}; valid names: {', '.join(_BUILDERS)}"
        )
    return builder()
