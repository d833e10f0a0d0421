"""Name -> objective registry: ``get_objective(name)`` and ``list_objectives()``.

Names are matched case-insensitively with spaces and hyphens read as underscores, so both the
registry key (``median1``, ``isomers_c11h24``) and GuacaMol's own name (``Median molecules 1``,
``C11H24``) work.

:func:`register_objective` adds a name for this process (e.g. a benchmark's own scoring function
wrapped by :func:`~selfsup.chem.objectives.adapters.as_objective`), so that a
``selfsup.chem.optimize`` run and its replay-resume, which name their objective in the config,
can use it; built-in names cannot be taken.

Parameterised objectives take their parameters in the name, ``<name>:<delta>:<reference SMILES>``
(the SMILES last, so its own ``:`` and ``=`` need no quoting):

* ``constrained_penalized_logp_gegl:0.4:<SMILES>``: GEGL's similarity-constrained penalized logP
  (Ahn et al. 2020, its ``run_gegl_constrained.py``): ``plogp(x) - plogp(ref)`` in the
  ZINC-normalised form with cycle-basis rings when the Tanimoto similarity of ECFP4 count
  fingerprints (RDKit Morgan radius 2, unfolded counts, as GuacaMol's ``ECFP4``) is ``>= delta``,
  else -1000 (GEGL's score for a molecule that breaks the constraint, as for an invalid one);
* ``constrained_penalized_logp:<delta>:<SMILES>`` (alias ``constrained_plogp``): the same with
  the raw form ``logP - SA - max(largest ring - 6, 0)`` (the JT-VAE / GCPN tables' form).

A bad delta or reference SMILES raises :class:`InputError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable

from selfsup.chem.objectives.base import Objective
from selfsup.chem.objectives.properties import ConstrainedImprovement, PenalizedLogP, SAObjective
from selfsup.chem.objectives.tasks import GUACAMOL_V2_TASKS, PMO_TASKS, TASK_BUILDERS
from selfsup.errors import InputError

__all__ = ["get_objective", "list_objectives", "register_objective", "unregister_objective"]

_BUILDERS: dict[str, Callable[[], Objective]] = dict(TASK_BUILDERS)
_BUILDERS.update({
    "penalized_logp": lambda: PenalizedLogP(form="raw", ring="cycle_basis"),
    "penalized_logp_sssr": lambda: PenalizedLogP(form="raw", ring="sssr"),
    "penalized_logp_gegl": lambda: PenalizedLogP(form="gegl", ring="cycle_basis"),
    "penalized_logp_gegl_sssr": lambda: PenalizedLogP(form="gegl", ring="sssr"),
    "sa_score": SAObjective,
})

# names registered at run time by register_objective (this process only; not listed by
# list_objectives, which lists the built-in tasks)
_REGISTERED: dict[str, Callable[[], Objective]] = {}

_ALIASES = {
    "c11h24": "isomers_c11h24",
    "c9h10n2o2pf2cl": "isomers_c9h10n2o2pf2cl",
    "c7h8n2o2": "isomers_c7h8n2o2",
    "median_molecules_1": "median1",
    "median_molecules_2": "median2",
    "plogp": "penalized_logp",
    "constrained_plogp": "constrained_penalized_logp",
    "constrained_plogp_gegl": "constrained_penalized_logp_gegl",
}

# name -> penalized-logP form of the similarity-constrained objectives ("<name>:<delta>:<SMILES>")
_CONSTRAINED = {"constrained_penalized_logp": "raw", "constrained_penalized_logp_gegl": "gegl"}


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
    key = _normalise(name)
    builder = _BUILDERS.get(key) or _REGISTERED.get(key)
    if builder is None and (":" in name or key in _CONSTRAINED):
        return _constrained(name)
    if builder is None:
        raise InputError(
            f"unknown objective {name!r}; valid names: {', '.join([*_BUILDERS, *_REGISTERED])}; "
            f"with parameters: "
            f"{', '.join(f'{k}:<delta>:<reference SMILES>' for k in _CONSTRAINED)}"
        )
    return builder()


def _constrained(name: str) -> Objective:
    """``<name>:<delta>:<reference SMILES>`` -> the similarity-constrained penalized logP."""
    parts = name.split(":", 2)
    key = _normalise(parts[0])
    usage = (f"write it as {' or '.join(_CONSTRAINED)} followed by :<delta>:<reference SMILES>, "
             "e.g. 'constrained_penalized_logp_gegl:0.4:CC(=O)Nc1ccc(O)cc1'")
    if key not in _CONSTRAINED:
        raise InputError(f"objective {name!r}: {parts[0]!r} takes no parameters; {usage}")
    if len(parts) != 3 or not parts[2].strip():
        raise InputError(f"objective {name!r} needs a similarity threshold and a reference "
                         f"SMILES; {usage}")
    try:
        delta = float(parts[1])
    except ValueError:
        raise InputError(f"objective {name!r}: the similarity threshold {parts[1]!r} is not a "
                         f"number; {usage}") from None
    # GEGL's reference ran with cycle-basis rings (run_gegl_constrained.py without
    # --use_atomrings) and GuacaMol's ECFP4 (Morgan radius 2, unfolded counts)
    return ConstrainedImprovement(parts[2].strip(), delta=delta, form=_CONSTRAINED[key],
                                  ring="cycle_basis", fp_type="ECFP4")


def register_objective(name: str, builder: Callable[[], Objective], replace: bool = False) -> str:
    """Make ``get_objective(name)`` return ``builder()`` in this process; returns the normalised
    name. A built-in name is refused, and so is a registered one unless ``replace``."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"objective name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise InputError(f"register_objective({name!r}) needs a callable builder, got "
                         f"{type(builder).__name__}")
    key = _normalise(name)
    if key in _BUILDERS or key in _CONSTRAINED:
        raise InputError(f"objective name {name!r} is built in; choose another name")
    if key in _REGISTERED and not replace:
        raise InputError(f"objective name {name!r} is already registered; pass replace=True")
    _REGISTERED[key] = builder
    return key


def unregister_objective(name: str) -> None:
    """Remove a name added by :func:`register_objective` (absent names are ignored)."""
    _REGISTERED.pop(_normalise(name), None)
