"""Molecular objectives: properties, penalized logP, GuacaMol v2 and PMO tasks, and a registry.

>>> from selfsup.chem.objectives import get_objective
>>> f = get_objective("celecoxib_rediscovery")
>>> round(f("CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F"), 3)
1.0
"""

from selfsup.chem.objectives.adapters import Composite, FunctionObjective, WeightedSum, as_objective
from selfsup.chem.objectives.base import (
    GUACAMOL_CORRUPT_SCORE,
    ArithmeticMean,
    DescriptorTerm,
    GeometricMean,
    IsomerTerm,
    Objective,
    SmartsTerm,
    TanimotoTerm,
    TaskObjective,
    TopKSpec,
    parse_formula,
)
from selfsup.chem.objectives.fingerprints import (
    FINGERPRINT_TYPES,
    fingerprint,
    tanimoto,
    tanimoto_mols,
)
from selfsup.chem.objectives.modifiers import (
    Chained,
    ClippedScore,
    Gaussian,
    Linear,
    MaxGaussian,
    MinGaussian,
    SmoothClippedScore,
    Thresholded,
)
from selfsup.chem.objectives.properties import (
    GEGL_ZINC_STATS,
    ConstrainedImprovement,
    PenalizedLogP,
    QEDObjective,
    SAObjective,
    cycle_penalty,
    largest_ring_size,
    logp,
    penalized_logp,
    qed,
    sa_score,
)
from selfsup.chem.objectives.registry import (
    get_objective,
    list_objectives,
    register_objective,
    unregister_objective,
)
from selfsup.chem.objectives.tasks import GUACAMOL_V2_TASKS, PMO_TASKS, TARGETS

__all__ = [
    "Composite",
    "FunctionObjective",
    "WeightedSum",
    "as_objective",
    "FINGERPRINT_TYPES",
    "GEGL_ZINC_STATS",
    "GUACAMOL_CORRUPT_SCORE",
    "GUACAMOL_V2_TASKS",
    "PMO_TASKS",
    "TARGETS",
    "ArithmeticMean",
    "Chained",
    "ClippedScore",
    "ConstrainedImprovement",
    "DescriptorTerm",
    "Gaussian",
    "GeometricMean",
    "IsomerTerm",
    "Linear",
    "MaxGaussian",
    "MinGaussian",
    "Objective",
    "PenalizedLogP",
    "QEDObjective",
    "SAObjective",
    "SmartsTerm",
    "SmoothClippedScore",
    "TanimotoTerm",
    "TaskObjective",
    "Thresholded",
    "TopKSpec",
    "cycle_penalty",
    "fingerprint",
    "get_objective",
    "largest_ring_size",
    "list_objectives",
    "logp",
    "parse_formula",
    "penalized_logp",
    "qed",
    "register_objective",
    "sa_score",
    "tanimoto",
    "tanimoto_mols",
    "unregister_objective",
]
