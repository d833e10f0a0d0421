"""Retro*: best-first retrosynthesis search on an AND-OR tree (Chen et al., ICML 2020).

Molecule (OR) nodes have reaction children; a reaction (AND) node has its reactants as molecule
children. Costs and values, following the paper:

- reaction cost ``c(R) = -log(clip(p, 1e-3, 1))``;
- an open (unexpanded) molecule has reaction number ``rn(m) = V(m)`` from ``value_fn`` (0 by
  default: Retro*-0); a building block has ``rn = 0`` and is solved; a molecule that cannot be
  expanded (no proposal, or at ``max_depth``) has ``rn = inf``;
- ``rn(R) = c(R) + sum_{m in ch(R)} rn(m)`` and, for an expanded molecule,
  ``rn(m) = min_{R in ch(m)} rn(R)``;
- ``V_t(m)``, the cost of the cheapest candidate route through ``m``, satisfies
  ``V_t(root) = rn(root)``, ``V_t(R) = V_t(parent) - rn(parent) + rn(R)`` and
  ``V_t(m) = V_t(parent reaction)``.

Each iteration expands the open molecule with the smallest ``V_t`` by one single-step model
call, adds its reactions (skipping any whose reactant is the molecule or one of its ancestors:
cycle prevention) and updates ``rn`` up the path to the root. To select without a sweep over the
whole tree, every node also keeps ``delta``: the smallest extra cost ``V_t(leaf) - V_t(node)``
over the open leaves below it (``0`` at an open leaf; ``min_R rn(R) - rn(m) + delta(R)`` at a
molecule; ``min_m delta(m)`` at a reaction). The best open leaf has ``V_t = rn(root) +
delta(root)`` and is reached by following the arg-mins down from the root. While the root is
unsolved this is exactly Retro*'s selection (``delta(root) = 0``); after a solution, when the
search continues to collect routes, it selects the best open leaf outside fully solved routes.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from selfsup.chem.molecules import canonical_smiles
from selfsup.errors import InputError

from .routes import MIN_PROBABILITY, Route, RouteStep, reaction_cost
from .single_step import SingleStepModel
from .stock import Stock

__all__ = ["MoleculeNode", "ReactionNode", "RetroStar", "SearchResult", "gc_paused", "search_stats",
           "iter_nodes"]

INF = math.inf
_isfinite = math.isfinite
_MAX_MEMO = 1_000_000  # per-search memo of stock lookups and values


@contextlib.contextmanager
def gc_paused(pause: bool = True) -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (a search makes many small
    objects and no cycles it needs collected before it ends), restoring it on any exit."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class MoleculeNode:
    """OR node. ``depth`` counts reactions between the target and this molecule.

    A plain class with ``__slots__`` (a search makes tens of thousands of nodes: no per-node
    ``__dict__``, faster attribute access); nodes compare by identity.
    """

    __slots__ = ("smiles", "depth", "parent", "in_stock", "value", "children", "expanded",
                 "dead", "solved", "rn", "delta")

    def __init__(self, smiles: str, depth: int, parent: ReactionNode | None = None,
                 in_stock: bool = False, value: float = 0.0) -> None:
        self.smiles = smiles
        self.depth = depth
        self.parent = parent
        self.in_stock = in_stock
        self.value = value
        self.children: list[ReactionNode] = []
        self.expanded = False
        self.dead = False
        self.solved = False
        self.rn = 0.0
        self.delta = INF

    @property
    def is_open(self) -> bool:
        return not (self.expanded or self.in_stock or self.dead)

    def ancestors(self) -> Iterator[MoleculeNode]:
        """This molecule and every molecule above it, up to the target."""
        node: MoleculeNode | None = self
        while node is not None:
            yield node
            node = node.parent.parent if node.parent is not None else None

    def __repr__(self) -> str:
        return (
            f"MoleculeNode({self.smiles!r}, depth={self.depth}, rn={self.rn:.4g}, "
            f"solved={self.solved}, open={self.is_open})"
        )


class ReactionNode:
    """AND node: one proposed reaction ``reactants -> parent.smiles`` (``__slots__``, compared
    by identity)."""

    __slots__ = ("parent", "reactants", "probability", "cost", "metadata", "children", "solved",
                 "rn", "delta")

    def __init__(self, parent: MoleculeNode, reactants: tuple[str, ...], probability: float,
                 cost: float, metadata: dict[str, Any] | None = None) -> None:
        self.parent = parent
        self.reactants = reactants
        self.probability = probability
        self.cost = cost
        self.metadata: dict[str, Any] = {} if metadata is None else metadata
        self.children: list[MoleculeNode] = []
        self.solved = False
        self.rn = 0.0
        self.delta = INF

    def __repr__(self) -> str:
        return (
            f"ReactionNode({'.'.join(self.reactants)!r}>>{self.parent.smiles!r}, "
            f"cost={self.cost:.4g}, rn={self.rn:.4g}, solved={self.solved})"
        )


def iter_nodes(root: MoleculeNode) -> Iterator[MoleculeNode | ReactionNode]:
    """Every node of the tree below ``root`` (pre-order, iterative)."""
    stack: list[MoleculeNode | ReactionNode] = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


@dataclass
class SearchResult:
    """Outcome of one :meth:`RetroStar.run`.

    ``iterations`` is the number of expansions (= single-step model calls); ``routes`` holds up
    to ``max_routes`` solved routes, cheapest first (``routes[0]`` is ``best_route``);
    ``stop_reason`` is one of ``'solved'``, ``'in_stock'``, ``'max_iterations'``,
    ``'time_limit'``, ``'exhausted'``; ``root`` is the search tree.
    """

    target: str
    success: bool
    iterations: int
    time_s: float
    best_route: Route | None
    routes: list[Route]
    stop_reason: str
    first_solution_iteration: int | None
    stats: dict[str, Any]
    root: MoleculeNode = field(repr=False)

    @property
    def best_cost(self) -> float | None:
        return None if self.best_route is None else self.best_route.total_cost

    def to_dict(self, *, include_routes: bool = True) -> dict[str, Any]:
        """JSON-ready summary (the search tree itself is not included)."""
        d: dict[str, Any] = {
            "target": self.target,
            "success": self.success,
            "iterations": self.iterations,
            "time_s": self.time_s,
            "stop_reason": self.stop_reason,
            "first_solution_iteration": self.first_solution_iteration,
            "best_cost": self.best_cost,
            "best_route_length": None if self.best_route is None else self.best_route.length,
            "n_routes": len(self.routes),
            "stats": self.stats,
        }
        if include_routes:
            d["best_route"] = None if self.best_route is None else self.best_route.to_dict()
            d["routes"] = [r.to_dict() for r in self.routes]
        return d


class RetroStar:
    """Retro* search built from a single-step model, a stock and an optional value function.

    Args:
        model: backward model; one expansion is one ``model.propose([smiles], top_k)`` call.
        stock: building blocks (solved at cost 0, never expanded).
        value_fn: ``smiles -> float`` estimate of the cost to make a molecule (``None``: 0,
            i.e. Retro*-0). Called once per distinct non-stock molecule and cached.
        top_k: proposals requested per expansion (Retro*: 50).
        max_iterations: budget of expansions (model calls); ``None`` = unlimited.
        time_limit_s: wall-clock budget checked before each expansion; ``None`` = unlimited.
        max_depth: most reactions between the target and any molecule; molecules at that depth
            that are not in stock are dead ends. ``None`` = unlimited.
        stop_on_first_solution: stop as soon as the target is solved (as Retro* does);
            otherwise keep expanding (within the limits) to collect more routes.
        max_routes: how many cheapest solved routes to enumerate into ``SearchResult.routes``.
        min_probability: clip for the reaction cost ``-log(clip(p, min_probability, 1))``.
        pause_gc: pause Python's cyclic garbage collector during each :meth:`run` (restored
            after, also on an error). The tree a search grows is alive until the search ends,
            so collections during it only re-scan it (a third of the search's time on a
            fixed proposal table); what waits is cyclic garbage made by the model and value
            calls of that one search, collected as soon as the collector runs again.
    """

    def __init__(
        self,
        model: SingleStepModel,
        stock: Stock,
        value_fn: Callable[[str], float] | None = None,
        *,
        top_k: int = 50,
        max_iterations: int | None = None,
        time_limit_s: float | None = None,
        max_depth: int | None = None,
        stop_on_first_solution: bool = True,
        max_routes: int = 100,
        min_probability: float = MIN_PROBABILITY,
        pause_gc: bool = True,
    ) -> None:
        for name, val in (("max_iterations", max_iterations), ("max_depth", max_depth)):
            if val is not None and val < 0:
                raise InputError(f"{name} must be >= 0 or None, got {val}")
        if time_limit_s is not None and time_limit_s < 0:
            raise InputError(f"time_limit_s must be >= 0 or None, got {time_limit_s}")
        if max_routes < 1:
            raise InputError(f"max_routes must be >= 1, got {max_routes}")
        self.model = model
        self.stock = stock
        self.value_fn = value_fn
        self.top_k = top_k
        self.max_iterations = max_iterations
        self.time_limit_s = time_limit_s
        self.max_depth = max_depth
        self.stop_on_first_solution = stop_on_first_solution
        self.max_routes = max_routes
        self.min_probability = min_probability
        self.pause_gc = pause_gc
        self._values: dict[str, float] = {}
        self._in_stock: dict[str, bool] = {}

    # ------------------------------------------------------------------------------------
    # Public
    # ------------------------------------------------------------------------------------
    def run(self, target: str) -> SearchResult:
        """Search a route for ``target`` (any valid SMILES; canonicalised first)."""
        with gc_paused(self.pause_gc):
            return self._run(target)

    def _run(self, target: str) -> SearchResult:
        t0 = time.perf_counter()
        smiles = canonical_smiles(target, remove_atom_map=True, strict=True)
        counts0 = self.model.counts()
        self._stats = {"n_cycle_rejected": 0, "n_dead_ends": 0, "n_depth_limited": 0}
        # node counts kept as the tree grows (no walk over the tree at the end)
        self._n_mol = self._n_rxn = self._n_open = 0
        root = self._new_molecule(smiles, depth=0, parent=None)
        iterations = 0
        first_solution: int | None = 0 if root.solved else None
        if root.in_stock:
            reason = "in_stock"
        else:
            while True:
                if root.solved and self.stop_on_first_solution:
                    reason = "solved"
                    break
                if self.max_iterations is not None and iterations >= self.max_iterations:
                    reason = "max_iterations"
                    break
                if self.time_limit_s is not None and time.perf_counter() - t0 >= self.time_limit_s:
                    reason = "time_limit"
                    break
                leaf = self._select(root)
                if leaf is None:
                    reason = "exhausted"
                    break
                self._expand(leaf)
                iterations += 1
                if root.solved and first_solution is None:
                    first_solution = iterations
        routes = self._enumerate_routes(root) if root.solved else []
        elapsed = time.perf_counter() - t0
        n_mol, n_rxn, n_open = self._n_mol, self._n_rxn, self._n_open
        stats = search_stats(
            self, counts0,
            {"n_molecule_nodes": n_mol, "n_reaction_nodes": n_rxn, "n_open_molecules": n_open,
             "root_rn": root.rn,
             "value_fn": "zero (Retro*-0)" if self.value_fn is None else _name(self.value_fn)},
        )
        return SearchResult(
            target=smiles,
            success=root.solved,
            iterations=iterations,
            time_s=elapsed,
            best_route=routes[0] if routes else None,
            routes=routes,
            stop_reason=reason,
            first_solution_iteration=first_solution,
            stats=stats,
            root=root,
        )

    # ------------------------------------------------------------------------------------
    # Nodes and updates
    # ------------------------------------------------------------------------------------
    def _is_in_stock(self, smiles: str) -> bool:
        hit = self._in_stock.get(smiles)
        if hit is None:
            if len(self._in_stock) > _MAX_MEMO:
                self._in_stock.clear()
            hit = self._in_stock[smiles] = smiles in self.stock
        return hit

    def _value(self, smiles: str) -> float:
        if self.value_fn is None:
            return 0.0
        v = self._values.get(smiles)
        if v is None:
            if len(self._values) > _MAX_MEMO:
                self._values.clear()
            v = float(self.value_fn(smiles))
            if math.isnan(v):
                raise InputError(f"value_fn returned NaN for {smiles!r}")
            self._values[smiles] = v
        return v

    def _new_molecule(self, smiles: str, depth: int, parent: ReactionNode | None) -> MoleculeNode:
        # the leaf state of _update_molecule and the memo look-up of _is_in_stock, inlined:
        # this runs for every molecule node of the search (a few % of a table search)
        node = MoleculeNode(smiles, depth, parent)
        self._n_mol += 1
        hit = self._in_stock.get(smiles)
        if hit is None:
            hit = self._is_in_stock(smiles)
        if hit:
            node.in_stock = True
            node.rn, node.solved = 0.0, True  # delta stays INF
            return node
        if self.max_depth is not None and depth >= self.max_depth:
            node.dead = True
            self._stats["n_depth_limited"] += 1
            node.rn = INF  # delta stays INF
            return node
        self._n_open += 1
        if self.value_fn is not None:
            node.value = self._value(smiles)
        node.rn, node.delta = node.value, 0.0
        return node

    def _expand(self, mol: MoleculeNode) -> None:
        proposals = self.model.propose([mol.smiles], self.top_k)[0]
        ancestors = {m.smiles for m in mol.ancestors()}
        depth = mol.depth + 1
        new_molecule = self._new_molecule
        children = mol.children
        for prop in proposals:
            reactants = prop.reactants
            if any(r in ancestors for r in reactants):
                self._stats["n_cycle_rejected"] += 1
                continue
            rxn = ReactionNode(mol, reactants, float(prop.probability),
                               reaction_cost(prop.probability, self.min_probability),
                               dict(prop.metadata))
            rxn.children = [new_molecule(r, depth, rxn) for r in reactants]
            _update_reaction(rxn)
            children.append(rxn)
        self._n_rxn += len(children)
        self._n_open -= 1
        mol.expanded = True
        if not children:
            mol.dead = True
            self._stats["n_dead_ends"] += 1
        _update_molecule(mol)
        node = mol
        while node.parent is not None:
            _update_reaction(node.parent)
            node = node.parent.parent
            _update_molecule(node)

    @staticmethod
    def _select(root: MoleculeNode) -> MoleculeNode | None:
        """The open molecule with the smallest ``V_t`` (``None`` if no finite one is left)."""
        if not _isfinite(root.rn) or not _isfinite(root.delta):
            return None
        mol = root
        while mol.expanded or mol.in_stock or mol.dead:
            # the first reaction with the smallest extra(R) = rn(R) - rn(mol) + delta(R),
            # V_t of the best open leaf under R minus V_t(mol) (INF unless both finite)
            mrn, best, best_extra = mol.rn, None, INF
            for r in mol.children:
                e = r.rn - mrn + r.delta if _isfinite(r.rn) and _isfinite(r.delta) else INF
                if best is None or e < best_extra:
                    best, best_extra = r, e
            d = best.delta
            for m in best.children:
                if m.delta == d:
                    mol = m
                    break
            else:  # pragma: no cover - delta(R) is the min of its children's
                raise StopIteration
        return mol

    # ------------------------------------------------------------------------------------
    # Routes: the k cheapest solved routes
    # ------------------------------------------------------------------------------------
    def _enumerate_routes(self, root: MoleculeNode) -> list[Route]:
        """Exact k-best solved routes (k = ``max_routes``), cheapest first.

        Post-order over the solved part of the tree: a building block has the single route of
        cost 0; a solved molecule merges the k-best lists of its solved reactions; a reaction
        combines its reactants' k-best lists with a heap over index tuples (k smallest sums).
        """
        k = self.max_routes
        order: list[MoleculeNode | ReactionNode] = []
        stack: list[MoleculeNode | ReactionNode] = [root]
        while stack:
            node = stack.pop()
            order.append(node)
            if isinstance(node, MoleculeNode):
                if not node.in_stock:
                    stack.extend(r for r in node.children if r.solved)
            else:
                stack.extend(node.children)
        # best[id(node)]: list of (cost, choice); molecule choice = (reaction, j) or None,
        # reaction choice = tuple of indices into its children's lists.
        best: dict[int, list[tuple[float, Any]]] = {}
        for node in reversed(order):
            if isinstance(node, MoleculeNode):
                if node.in_stock:
                    best[id(node)] = [(0.0, None)]
                    continue
                cands = [
                    (cost, i, j, rxn)
                    for i, rxn in enumerate(node.children)
                    if rxn.solved
                    for j, (cost, _) in enumerate(best[id(rxn)])
                ]
                cands.sort(key=lambda c: (c[0], c[1], c[2]))
                best[id(node)] = [(c, (rxn, j)) for c, _, j, rxn in cands[:k]]
            else:
                lists = [best[id(m)] for m in node.children]
                best[id(node)] = [(node.cost + s, idx) for s, idx in _k_smallest_sums(lists, k)]

        def build_mol(mol: MoleculeNode, i: int) -> Route:
            _, choice = best[id(mol)][i]
            if choice is None:
                return Route(mol.smiles, in_stock=True)
            rxn, j = choice
            _, idx = best[id(rxn)][j]
            step = RouteStep(
                reactants=[build_mol(m, t) for m, t in zip(rxn.children, idx)],
                probability=rxn.probability,
                cost=rxn.cost,
                metadata=dict(rxn.metadata),
            )
            return Route(mol.smiles, in_stock=False, step=step)

        return [build_mol(root, i) for i in range(len(best[id(root)]))]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def search_stats(planner: Any, counts0: dict, extra: dict, limits: dict | None = None) -> dict:
    """A search's ``stats``, the same keys for both planners: the planner's own counters
    (``planner._stats``), ``extra``, the single-step model's calls and cache hits since
    ``counts0`` (``planner.model.counts()`` at the start), the stock, and the search limits
    (``top_k``, ``max_iterations``, ``time_limit_s``, ``max_depth``,
    ``stop_on_first_solution``, then ``limits``)."""
    counts1 = planner.model.counts()
    return {
        **planner._stats,
        **extra,
        "model_calls": counts1["n_calls"] - counts0["n_calls"],
        "model_cache_hits": counts1["n_cache_hits"] - counts0["n_cache_hits"],
        "stock": planner.stock.describe(),
        "limits": {
            "top_k": planner.top_k,
            "max_iterations": planner.max_iterations,
            "time_limit_s": planner.time_limit_s,
            "max_depth": planner.max_depth,
            "stop_on_first_solution": planner.stop_on_first_solution,
            **(limits or {}),
        },
    }


def _update_molecule(m: MoleculeNode) -> None:
    if m.in_stock:
        m.rn, m.solved, m.delta = 0.0, True, INF
    elif not m.expanded:
        m.solved = False
        if m.dead:
            m.rn, m.delta = INF, INF
        else:
            m.rn, m.delta = m.value, 0.0
    else:
        # one pass: rn = min rn(R) (the first smallest, as min() keeps), solved = any
        rn, solved = INF, False
        children = m.children
        for r in children:
            if r.rn < rn:
                rn = r.rn
            if r.solved:
                solved = True
        m.rn, m.solved = rn, solved
        # delta = min over R of extra(R) = rn(R) - rn(m) + delta(R), with the new rn(m)
        delta = INF
        for r in children:
            if _isfinite(r.rn) and _isfinite(r.delta):
                e = r.rn - rn + r.delta
                if e < delta:
                    delta = e
        m.delta = delta


def _update_reaction(r: ReactionNode) -> None:
    children = r.children
    rn = r.cost + sum([m.rn for m in children])
    solved, delta = True, INF
    for m in children:
        if not m.solved:
            solved = False
        if m.delta < delta:
            delta = m.delta
    r.rn, r.solved = rn, solved
    r.delta = delta if _isfinite(rn) else INF


def _k_smallest_sums(
    lists: list[list[tuple[float, Any]]], k: int
) -> list[tuple[float, tuple[int, ...]]]:
    """The k smallest ``sum_i lists[i][idx_i][0]`` over index tuples (each list sorted)."""
    if any(not lst for lst in lists):
        return []
    start = tuple(0 for _ in lists)
    heap = [(sum(lst[0][0] for lst in lists), start)]
    seen = {start}
    out: list[tuple[float, tuple[int, ...]]] = []
    while heap and len(out) < k:
        total, idx = heapq.heappop(heap)
        out.append((total, idx))
        for i, lst in enumerate(lists):
            if idx[i] + 1 < len(lst):
                nxt = idx[:i] + (idx[i] + 1,) + idx[i + 1 :]
                if nxt not in seen:
                    seen.add(nxt)
                    step = lst[idx[i] + 1][0] - lst[idx[i]][0]
                    heapq.heappush(heap, (total + step, nxt))
    return out


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
