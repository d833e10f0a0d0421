"""Monte Carlo tree search for retrosynthesis, after AiZynthFinder (Genheden et al., J.
Cheminform. 2020; the search of Segler et al., Nature 2018).

A node is a *state*: the molecules still to be accounted for on the way from the target, each
with its depth (reactions between the target and it) and whether it is a building block. The
root holds the target alone; an action disconnects one molecule of a state that is not in stock
with one of the single-step model's top-k reactions, giving the child state with that molecule
replaced by the reaction's reactants. A state is *solved* when every molecule is in stock.

One round (AiZynthFinder's iteration) is:

1. **Selection**: from the root, follow the child with the largest
   ``Q + U``, ``Q = (P + W) / (1 + N)``, ``U = c * sqrt(2 ln(sum_j (1 + N_j)) / (1 + N))``,
   where ``P`` is the single-step probability of the child's reaction (its prior, counted as one
   visit), ``W`` the sum and ``N`` the number of rewards backed up through the child, and the sum
   runs over the siblings; until an unexpanded state. Ties are broken by the seeded generator.
2. **Expansion**: ask the single-step model for every molecule of the state that is not in stock
   (as AiZynthFinder does) and create one child per proposal. A proposal whose reactants include
   the molecule itself or one of the molecules it was made for (its lineage) is rejected (cycle
   prevention, as in :mod:`.search`). A molecule with no reaction left makes the state a dead
   end; so does a molecule not in stock at ``max_depth``.
3. **Rollout**: from the new state keep taking the best child by the same rule (on fresh
   children: the most probable reaction) and expanding it, until a solved state, a dead end or
   the budget.
4. **Backup**: the rollout's last state gets AiZynthFinder's state score
   ``w * f + (1 - w) / (1 + exp(d - d0))`` (``f``: the share of its molecules in stock,
   ``d``: its deepest molecule's depth, the route's longest chain; ``w = 0.95``, ``d0 = 4``), added
   to ``W`` and ``N`` of every state on the path.

Budget and comparability with :class:`~.search.RetroStar`: ``iterations`` counts single-step
model calls, one per molecule sent to ``model.propose``, as Retro* counts its expansions, so
``success within N iterations`` means the same number of model calls for both planners. A
state repeats the molecules of its parent that it did not disconnect; the proposals for a
molecule are asked for once per search and reused in every later state that holds it
(``stats['n_proposal_reuses']``); AiZynthFinder caches its policy the same way. Children are
built at once at expansion (stock look-ups only, no model call), so a solution is seen as soon
as the reaction that completes it is proposed, as in Retro*. The search stops at the first solved
state (``stop_on_first_solution``) or when the budget, the time or the tree runs out; states
that are solved or dead are closed and never selected again, and a state whose children are all
closed is closed, so a search that collects several routes keeps making progress.

Deterministic given ``seed``: the generator is seeded afresh for every target.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator

from selfsup.chem.molecules import canonical_smiles
from selfsup.errors import InputError

from .routes import MIN_PROBABILITY, Route, RouteStep, reaction_cost
from .search import SearchResult, gc_paused, search_stats
from .single_step import Proposal, SingleStepModel
from .stock import Stock

__all__ = ["MCTS", "MctsMolecule", "MctsNode", "state_score"]

_MAX_MEMO = 1_000_000


def state_score(fraction_in_stock: float, depth: int, *, stock_weight: float = 0.95,
                depth_midpoint: float = 4.0) -> float:
    """AiZynthFinder's state score: ``w * f + (1 - w) / (1 + exp(d - d0))``.

    ``f`` is the share of the state's molecules that are in stock, ``d`` the depth of its deepest
    molecule; the second term falls from 1 to 0 around ``d0`` reactions.
    """
    x = depth - depth_midpoint
    squash = 1.0 / (1.0 + math.exp(x)) if x < 700 else 0.0
    return stock_weight * fraction_in_stock + (1.0 - stock_weight) * squash


class MctsMolecule:
    """One molecule of a state: SMILES, depth, the molecule it was made for (``parent``) and
    whether it is in stock. Shared by every state that holds it; compared by identity."""

    __slots__ = ("smiles", "depth", "parent", "in_stock")

    def __init__(self, smiles: str, depth: int, parent: MctsMolecule | None,
                 in_stock: bool) -> None:
        self.smiles = smiles
        self.depth = depth
        self.parent = parent
        self.in_stock = in_stock

    def lineage(self) -> Iterator[str]:
        """SMILES of this molecule and of every molecule it was made for, up to the target."""
        m: MctsMolecule | None = self
        while m is not None:
            yield m.smiles
            m = m.parent

    def __repr__(self) -> str:
        return f"MctsMolecule({self.smiles!r}, depth={self.depth}, in_stock={self.in_stock})"


class MctsNode:
    """A state of the search tree.

    ``molecules``: the state's molecules; ``action``: ``(molecule, proposal, reactants)`` of the
    reaction that made this state from its parent (``None`` at the root); ``prior``: that
    reaction's probability; ``visits``/``value_sum``: ``N`` and ``W`` of the backed-up rewards;
    ``solved``: every molecule in stock; ``dead``: cannot be solved (a molecule not in stock at
    the depth limit, one without reactions, or every child dead); ``closed``: solved or dead, or
    every child closed (never selected again).
    """

    __slots__ = ("molecules", "parent", "action", "prior", "visits", "value_sum", "children",
                 "expanded", "solved", "dead", "closed", "score")

    def __init__(self, molecules: tuple[MctsMolecule, ...], parent: MctsNode | None,
                 action: tuple[MctsMolecule, Proposal, tuple[MctsMolecule, ...]] | None,
                 prior: float) -> None:
        self.molecules = molecules
        self.parent = parent
        self.action = action
        self.prior = prior
        self.visits = 0
        self.value_sum = 0.0
        self.children: list[MctsNode] = []
        self.expanded = False
        self.solved = all(m.in_stock for m in molecules)
        self.dead = False
        self.closed = self.solved
        self.score = 0.0

    @property
    def depth(self) -> int:
        """Reactions between the root state and this one."""
        n, node = 0, self
        while node.parent is not None:
            n, node = n + 1, node.parent
        return n

    def path(self) -> list[MctsNode]:
        """The states from the root to this one."""
        out: list[MctsNode] = []
        node: MctsNode | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def __repr__(self) -> str:
        return (f"MctsNode({[m.smiles for m in self.molecules]}, N={self.visits}, "
                f"W={self.value_sum:.3g}, solved={self.solved}, dead={self.dead})")


class _OutOfBudget(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class MCTS:
    """Monte Carlo tree search over states of molecules (AiZynthFinder's planner).

    Args:
        model: backward model; one iteration is one molecule sent to ``model.propose``.
        stock: building blocks (anything with ``__contains__`` and ``describe()``).
        top_k: proposals requested per molecule.
        max_iterations: budget of single-step model calls; ``None`` = unlimited.
        time_limit_s: wall-clock budget checked before each model call; ``None`` = unlimited.
        max_depth: most reactions between the target and any molecule; a state holding a
            molecule not in stock at that depth is a dead end. ``None`` = unlimited.
        c: exploration constant of ``U`` (AiZynthFinder's default 1.4).
        seed: seeds the tie-breaking generator, afresh for every target.
        stock_weight, depth_midpoint: ``w`` and ``d0`` of :func:`state_score`.
        stop_on_first_solution: stop as soon as a solved state exists; otherwise search on
            (within the limits) and return every distinct route found.
        max_routes: most routes kept in ``SearchResult.routes`` (cheapest first).
        min_probability: clip of the reaction cost ``-log(clip(p, min_probability, 1))`` given
            to route steps (the search itself uses the probabilities).
        pause_gc: pause the cyclic garbage collector during each :meth:`run`, as Retro* does.
    """

    def __init__(
        self,
        model: SingleStepModel,
        stock: Stock,
        *,
        top_k: int = 50,
        max_iterations: int | None = None,
        time_limit_s: float | None = None,
        max_depth: int | None = None,
        c: float = 1.4,
        seed: int = 0,
        stock_weight: float = 0.95,
        depth_midpoint: float = 4.0,
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
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        if max_routes < 1:
            raise InputError(f"max_routes must be >= 1, got {max_routes}")
        if not (math.isfinite(c) and c >= 0):
            raise InputError(f"the exploration constant c must be a finite number >= 0, got {c}")
        if not 0.0 <= stock_weight <= 1.0:
            raise InputError(f"stock_weight must be in [0, 1], got {stock_weight}")
        if not math.isfinite(depth_midpoint):
            raise InputError(f"depth_midpoint must be finite, got {depth_midpoint}")
        self.model = model
        self.stock = stock
        self.top_k = top_k
        self.max_iterations = max_iterations
        self.time_limit_s = time_limit_s
        self.max_depth = max_depth
        self.c = float(c)
        self.seed = int(seed)
        self.stock_weight = float(stock_weight)
        self.depth_midpoint = float(depth_midpoint)
        self.stop_on_first_solution = stop_on_first_solution
        self.max_routes = max_routes
        self.min_probability = min_probability
        self.pause_gc = pause_gc
        self._in_stock: dict[str, bool] = {}

    # ------------------------------------------------------------------------------------
    # Public
    # ------------------------------------------------------------------------------------
    def run(self, target: str) -> SearchResult:
        """Search a route for ``target`` (any valid SMILES; canonicalised first)."""
        with gc_paused(self.pause_gc):
            return self._run(target)

    def _run(self, target: str) -> SearchResult:
        t0 = self._t0 = time.perf_counter()
        smiles = canonical_smiles(target, remove_atom_map=True, strict=True)
        counts0 = self.model.counts()
        self._rng = random.Random(self.seed)
        self._proposals: dict[str, list[Proposal]] = {}
        self._iterations = 0
        self._solutions: list[MctsNode] = []
        self._first_solution: int | None = None
        self._stats = {"n_cycle_rejected": 0, "n_dead_ends": 0, "n_depth_limited": 0,
                       "n_proposal_reuses": 0, "n_state_nodes": 0, "n_expanded_states": 0,
                       "n_rounds": 0}
        root = self._new_node((MctsMolecule(smiles, 0, None, self._is_in_stock(smiles)),),
                              None, None, 1.0)
        if root.solved:
            reason = "in_stock"
            self._solutions.append(root)
            self._first_solution = 0
        else:
            reason = self._search(root)
        routes = self._routes()
        elapsed = time.perf_counter() - t0
        stats = search_stats(
            self, counts0,
            {"planner": "mcts", "root_visits": sum(ch.visits for ch in root.children)},
            {"c": self.c, "seed": self.seed, "stock_weight": self.stock_weight,
             "depth_midpoint": self.depth_midpoint},
        )
        return SearchResult(
            target=smiles,
            success=bool(self._solutions),
            iterations=self._iterations,
            time_s=elapsed,
            best_route=routes[0] if routes else None,
            routes=routes,
            stop_reason=reason,
            first_solution_iteration=self._first_solution,
            stats=stats,
            root=root,  # type: ignore[arg-type]  # an MctsNode: the MCTS tree
        )

    # ------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------
    def _search(self, root: MctsNode) -> str:
        try:
            while True:
                if self._solutions and self.stop_on_first_solution:
                    return "solved"
                self._check_budget()
                if root.closed:
                    return "exhausted"
                self._stats["n_rounds"] += 1
                leaf = self._select(root)
                if leaf is None:  # every state below the root is closed
                    continue
                self._expand(leaf)
                node = leaf
                while not node.closed and not (self._solutions and self.stop_on_first_solution):
                    child = self._best_child(node)
                    if child is None:
                        break
                    self._expand(child)
                    node = child
                self._backup(node)
        except _OutOfBudget as stop:
            return stop.reason

    def _check_budget(self) -> None:
        if self.max_iterations is not None and self._iterations >= self.max_iterations:
            raise _OutOfBudget("max_iterations")
        if (self.time_limit_s is not None
                and time.perf_counter() - self._t0 >= self.time_limit_s):
            raise _OutOfBudget("time_limit")

    def _select(self, root: MctsNode) -> MctsNode | None:
        node = root
        while node.expanded:
            child = self._best_child(node)
            if child is None:  # pragma: no cover - a node with no open child is closed
                self._close(node)
                return None
            node = child
        return node

    def _best_child(self, node: MctsNode) -> MctsNode | None:
        """The open child with the largest ``Q + U`` (ties: the seeded generator)."""
        children = node.children
        if not children:
            return None
        total = 0
        for ch in children:
            total += ch.visits + 1
        log_total = math.log(total)
        c = self.c
        best: list[MctsNode] = []
        best_val = -math.inf
        for ch in children:
            if ch.closed:
                continue
            n = ch.visits + 1
            val = (ch.prior + ch.value_sum) / n + c * math.sqrt(2.0 * log_total / n)
            if val > best_val:
                best, best_val = [ch], val
            elif val == best_val:
                best.append(ch)
        if not best:
            return None
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _backup(self, node: MctsNode) -> None:
        reward = node.score
        while node.parent is not None:
            node.visits += 1
            node.value_sum += reward
            node = node.parent

    # ------------------------------------------------------------------------------------
    # States
    # ------------------------------------------------------------------------------------
    def _is_in_stock(self, smiles: str) -> bool:
        hit = self._in_stock.get(smiles)
        if hit is None:
            if len(self._in_stock) > _MAX_MEMO:
                self._in_stock.clear()
            hit = self._in_stock[smiles] = smiles in self.stock
        return hit

    def _new_node(self, molecules: tuple[MctsMolecule, ...], parent: MctsNode | None,
                  action: tuple[MctsMolecule, Proposal, tuple[MctsMolecule, ...]] | None,
                  prior: float) -> MctsNode:
        node = MctsNode(molecules, parent, action, prior)
        self._stats["n_state_nodes"] += 1
        n_stock = sum(m.in_stock for m in molecules)
        depth = max((m.depth for m in molecules), default=0)
        node.score = state_score(n_stock / len(molecules) if molecules else 1.0, depth,
                                 stock_weight=self.stock_weight,
                                 depth_midpoint=self.depth_midpoint)
        if node.solved:
            self._solutions.append(node)
            if self._first_solution is None:
                self._first_solution = self._iterations
        elif self.max_depth is not None and any(
                not m.in_stock and m.depth >= self.max_depth for m in molecules):
            node.dead = node.closed = True
            self._stats["n_depth_limited"] += 1
        return node

    def _proposals_for(self, smiles: str) -> list[Proposal]:
        props = self._proposals.get(smiles)
        if props is not None:
            self._stats["n_proposal_reuses"] += 1
            return props
        self._check_budget()
        props = self.model.propose([smiles], self.top_k)[0]
        self._iterations += 1
        self._proposals[smiles] = props
        return props

    def _expand(self, node: MctsNode) -> None:
        """Children of ``node``: one per non-cyclic proposal for each molecule not in stock."""
        if node.expanded or node.closed:
            return
        actions: list[tuple[int, MctsMolecule, Proposal]] = []
        for i, mol in enumerate(node.molecules):
            if mol.in_stock:
                continue
            lineage = set(mol.lineage())
            kept = 0
            for prop in self._proposals_for(mol.smiles):
                if any(r in lineage for r in prop.reactants):
                    self._stats["n_cycle_rejected"] += 1
                    continue
                actions.append((i, mol, prop))
                kept += 1
            if kept == 0:  # this molecule can never be made: the state is a dead end
                self._stats["n_dead_ends"] += 1
                node.expanded = True
                self._close(node, dead=True)
                return
        self._stats["n_expanded_states"] += 1
        node.expanded = True
        for i, mol, prop in actions:
            depth = mol.depth + 1
            reactants = tuple(MctsMolecule(r, depth, mol, self._is_in_stock(r))
                              for r in prop.reactants)
            rest = node.molecules[:i] + node.molecules[i + 1:]
            child = self._new_node(rest + reactants, node, (mol, prop, reactants),
                                   float(prop.probability))
            node.children.append(child)
        if all(ch.closed for ch in node.children):
            self._close(node, dead=all(ch.dead for ch in node.children))

    def _close(self, node: MctsNode, dead: bool = False) -> None:
        """Close ``node`` (dead too if ``dead``) and every ancestor whose children are now all
        closed (dead when they are all dead)."""
        node.closed = True
        node.dead = node.dead or dead
        parent = node.parent
        while parent is not None and not parent.closed:
            if not all(ch.closed for ch in parent.children):
                break
            parent.closed = True
            parent.dead = all(ch.dead for ch in parent.children)
            parent = parent.parent

    # ------------------------------------------------------------------------------------
    # Routes
    # ------------------------------------------------------------------------------------
    def _routes(self) -> list[Route]:
        """One route per distinct solved state found, cheapest first (ties: found first)."""
        seen: set[tuple] = set()
        routes: list[tuple[float, int, Route]] = []
        for i, node in enumerate(self._solutions):
            route = self._route(node)
            sig = route.signature()
            if sig in seen:
                continue
            seen.add(sig)
            routes.append((route.total_cost, i, route))
        routes.sort(key=lambda t: (t[0], t[1]))
        return [r for _, _, r in routes[: self.max_routes]]

    def _route(self, node: MctsNode) -> Route:
        made: dict[int, tuple[Proposal, tuple[MctsMolecule, ...]]] = {}
        path = node.path()
        for state in path[1:]:
            mol, prop, reactants = state.action  # type: ignore[misc]
            made[id(mol)] = (prop, reactants)

        def build(mol: MctsMolecule) -> Route:
            how = made.get(id(mol))
            if how is None:
                return Route(mol.smiles, in_stock=mol.in_stock)
            prop, reactants = how
            step = RouteStep(
                reactants=[build(r) for r in reactants],
                probability=float(prop.probability),
                cost=reaction_cost(prop.probability, self.min_probability),
                metadata=dict(prop.metadata),
            )
            return Route(mol.smiles, in_stock=False, step=step)

        return build(path[0].molecules[0])

