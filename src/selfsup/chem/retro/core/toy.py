"""Small hand-made reaction worlds with known optimal routes, for tests, docs and sanity checks.

Molecules are small valid (canonical) SMILES whose chemistry is irrelevant: a world is a table
``product -> [(reactants, probability), ...]`` served by a :class:`FixedReactionModel`, plus a
stock. Costs are Retro*'s ``-log p`` per reaction, worked out by hand in each docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .single_step import FixedReactionModel
from .stock import Stock

__all__ = ["ToyWorld", "cycle_world", "dead_end_world", "toy_worlds"]


@dataclass(frozen=True)
class ToyWorld:
    """A toy reaction world.

    ``optimal_reactions`` is the set of ``(product, sorted reactants)`` of the cheapest route,
    whose cost is ``optimal_cost``; ``retro_star_0_iterations`` is the number of expansions
    Retro*-0 (stopping on the first solution) needs, worked out by hand.
    """

    name: str
    target: str
    reactions: dict[str, tuple[tuple[tuple[str, ...], float], ...]]
    stock_smiles: tuple[str, ...]
    optimal_cost: float
    optimal_reactions: frozenset[tuple[str, tuple[str, ...]]]
    retro_star_0_iterations: int
    description: str = ""

    def model(self, **kwargs) -> FixedReactionModel:
        """A fresh :class:`FixedReactionModel` over this world (fresh counters and cache)."""
        return FixedReactionModel(self.reactions, **kwargs)

    def stock(self) -> Stock:
        return Stock.from_smiles(self.stock_smiles, name=f"toy:{self.name}", source="toy world")


def dead_end_world() -> ToyWorld:
    """A tempting cheap first step that leads to a dead end and an expensive subtree.

    ::

        T  = CCCCCCO   T <- A + B  (p 0.7)      T <- C + D  (p 0.3)
        B  = CCCCO     B <- G      (p 0.95)     B <- F      (p 0.05)
        F  = CCCCCl    F <- S      (p 1.0)
        D  = CCCCN     D <- E      (p 0.9)      D <- H      (p 0.1)
        stock: A = CCO, C = CCN, E = CCCl, S = OCCO;  G = CCOCC and H = CCNCC have no reaction.

    Retro*-0: expand T (rn: A+B 0.357 < C+D 1.204), then B (B <- G has rn 0.051), then G (dead:
    A+B rises to 0.357 + 2.996 = 3.353), then D, which solves T. Optimal route
    T <- C + D, D <- E with cost -log 0.3 - log 0.9 = 1.3093 in 4 iterations; the other route
    (T <- A + B, B <- F, F <- S) costs -log(0.7 * 0.05) = 3.3524.
    """
    t, a, b, c, d = "CCCCCCO", "CCO", "CCCCO", "CCN", "CCCCN"
    e, f, g, h, s = "CCCl", "CCCCCl", "CCOCC", "CCNCC", "OCCO"
    reactions = {
        t: (((a, b), 0.7), ((c, d), 0.3)),
        b: (((g,), 0.95), ((f,), 0.05)),
        f: (((s,), 1.0),),
        d: (((e,), 0.9), ((h,), 0.1)),
    }
    return ToyWorld(
        name="dead_end",
        target=t,
        reactions=reactions,
        stock_smiles=(a, c, e, s),
        optimal_cost=-math.log(0.3) - math.log(0.9),
        optimal_reactions=frozenset({(t, tuple(sorted((c, d)))), (d, (e,))}),
        retro_star_0_iterations=4,
        description="cheap first step into a dead end; the optimal route starts with p=0.3",
    )


def cycle_world() -> ToyWorld:
    """A cycle A <- B, B <- A that the search must not follow.

    ::

        A = CC(C)O   A <- B (p 0.6)    A <- D (p 0.4)
        B = CC(C)N   B <- A (p 0.9)    B <- C (p 0.1)
        stock: C = CCOC;  D = NCCN has no reaction.

    Retro*-0 expands A, then B; B <- A is rejected (A is an ancestor), B <- C solves B and A.
    Optimal route A <- B, B <- C with cost -log 0.6 - log 0.1 = 2.8134 in 2 iterations.
    """
    a, b, c, d = "CC(C)O", "CC(C)N", "CCOC", "NCCN"
    reactions = {
        a: (((b,), 0.6), ((d,), 0.4)),
        b: (((a,), 0.9), ((c,), 0.1)),
    }
    return ToyWorld(
        name="cycle",
        target=a,
        reactions=reactions,
        stock_smiles=(c,),
        optimal_cost=-math.log(0.6) - math.log(0.1),
        optimal_reactions=frozenset({(a, (b,)), (b, (c,))}),
        retro_star_0_iterations=2,
        description="A <- B <- A cycle; the only solution is A <- B <- C",
    )


def toy_worlds() -> dict[str, ToyWorld]:
    """Every toy world by name."""
    worlds = [dead_end_world(), cycle_world()]
    return {w.name: w for w in worlds}
