"""Graph GA operators (GB-GA, Jensen 2019) and reproduction of a population with them.

* :mod:`.operators`: graph crossover and mutation with their ring and size checks and the time
  guard (:func:`crossover`, :func:`mutate`, :class:`Mutation`, :data:`GIVE_UPS`,
  :data:`OPERATOR_TIME_LIMIT_S`, :data:`MUTATION_KINDS`);
* :mod:`.reproduce`: children of a population over a process pool (:func:`reproduce`,
  :class:`ReproductionResult`).

The GA loop itself (``graph_ga``) is an optimiser: :mod:`selfsup.chem.optimize.graph_ga`. GEGL
(:mod:`selfsup.chem.optimize.gegl`) uses :func:`reproduce` as its genetic expert.
"""

from .operators import (
    GIVE_UPS,
    MUTATION_KINDS,
    OPERATOR_TIME_LIMIT_S,
    Mutation,
    crossover,
    mutate,
)
from .reproduce import ReproductionResult, reproduce

__all__ = [
    "GIVE_UPS",
    "MUTATION_KINDS",
    "OPERATOR_TIME_LIMIT_S",
    "Mutation",
    "ReproductionResult",
    "crossover",
    "mutate",
    "reproduce",
]
