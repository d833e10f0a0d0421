"""MCTS planner (AiZynthFinder-style) on hand-built worlds: routes, iteration accounting against
Retro*, limits, unsolvable targets, determinism, and agreement with a brute force."""

from __future__ import annotations

import json
import math

import pytest

from conftest import brute_force_routes, random_retro_world
from selfsup.chem.retro.core.mcts import MCTS, MctsNode, state_score
from selfsup.chem.retro.core.routes import Route, reaction_cost
from selfsup.chem.retro.core.search import RetroStar, SearchResult
from selfsup.chem.retro.core.single_step import FixedReactionModel, Proposal, SingleStepModel
from selfsup.chem.retro.core.stock import Stock
from selfsup.chem.retro.core.toy import cycle_world, dead_end_world, toy_worlds
from selfsup.errors import InputError


def _check_route(route: Route, table: dict, stock_smiles, max_depth: int | None = None):
    """Every step is a table reaction of its product, leaves are in stock, no molecule repeats
    on a path from the target, depth within the limit, cost = sum of -log p."""
    canon_table = FixedReactionModel(table).table
    stock = Stock.from_smiles(stock_smiles)
    assert route.is_solved
    assert all(leaf in stock for leaf in route.leaves())

    def walk(node: Route, above: frozenset) -> float:
        assert node.smiles not in above
        if node.step is None:
            assert node.in_stock
            return 0.0
        reactants = tuple(r.smiles for r in node.step.reactants)
        known = {p.reactants: p.probability for p in canon_table[node.smiles]}
        assert tuple(sorted(reactants)) in known
        assert node.step.probability == pytest.approx(known[tuple(sorted(reactants))])
        assert node.step.cost == pytest.approx(reaction_cost(node.step.probability))
        return node.step.cost + sum(walk(r, above | {node.smiles}) for r in node.step.reactants)

    assert walk(route, frozenset()) == pytest.approx(route.total_cost)
    if max_depth is not None:
        assert route.depth <= max_depth


# ----------------------------------------------------------------------------------------------
# Worked worlds
# ----------------------------------------------------------------------------------------------


def test_state_score_numbers():
    # AiZynthFinder: 0.95 * share in stock + 0.05 / (1 + exp(depth - 4))
    assert state_score(1.0, 0) == pytest.approx(0.95 + 0.05 / (1 + math.exp(-4)))
    assert state_score(0.5, 4) == pytest.approx(0.475 + 0.025)
    assert state_score(0.0, 10_000) == 0.0
    assert state_score(1.0, 2, stock_weight=1.0) == 1.0


def test_two_step_world_hand_worked():
    """T <- X + Y (0.8) | T <- Z (0.2, Z has no reaction); X <- a (1.0); Y <- b (1.0).

    Round 1: expand {T} (call 1); the rollout takes {X, Y} (larger prior) and expands it: X
    (call 2) and Y (call 3) give {Y, a} and {X, b}; the rollout takes {Y, a} (tie broken by
    the generator or not: both priors are 1.0) and expands it with Y's proposals already known
    (no call): {a, b} is solved. 3 model calls, as Retro* (T, X, Y)."""
    t, x, y, z, a, b = "CCCCCCO", "CCCO", "CCCN", "CCCCl", "CCO", "CCN"
    table = {t: [((x, y), 0.8), ((z,), 0.2)], x: [((a,), 1.0)], y: [((b,), 1.0)]}
    stock = Stock.from_smiles([a, b], name="toy2")
    for seed in range(4):
        model = FixedReactionModel(table)
        res = MCTS(model, stock, seed=seed).run(t)
        assert isinstance(res, SearchResult)
        assert res.success and res.stop_reason == "solved"
        assert res.iterations == 3 == model.n_calls == res.stats["model_calls"]
        assert res.first_solution_iteration == 3
        assert res.stats["n_proposal_reuses"] == 1
        assert res.best_route is res.routes[0] and len(res.routes) == 1
        assert res.best_route.length == 3 and res.best_route.depth == 2
        assert sorted(res.best_route.leaves()) == sorted([a, b])
        assert res.best_cost == pytest.approx(-math.log(0.8))
        _check_route(res.best_route, table, [a, b])
        assert res.stats["stock"]["name"] == "toy2"
        assert isinstance(res.root, MctsNode)
    retro = RetroStar(FixedReactionModel(table), stock).run(t)
    assert retro.iterations == 3 and retro.best_cost == pytest.approx(res.best_cost)


@pytest.mark.parametrize("name", sorted(toy_worlds()))
def test_toy_worlds_same_iterations_as_retro_star(name):
    world = toy_worlds()[name]
    model = world.model()
    res = MCTS(model, world.stock()).run(world.target)
    assert res.success and res.stop_reason == "solved"
    # dead_end: T (1), B (2), G (3, dead end; the rollout backs up its score), then the
    # selection prefers the unvisited C + D branch: D (4) solves it. cycle: A (1), B (2).
    assert res.iterations == world.retro_star_0_iterations == model.n_calls
    assert res.first_solution_iteration == res.iterations
    assert res.best_cost == pytest.approx(world.optimal_cost)
    assert set(res.best_route.reactions()) == world.optimal_reactions
    _check_route(res.best_route, world.reactions, world.stock_smiles)
    retro = RetroStar(world.model(), world.stock()).run(world.target)
    assert retro.iterations == res.iterations


def test_continuing_search_collects_every_route_then_exhausts():
    world = dead_end_world()
    res = MCTS(world.model(), world.stock(), stop_on_first_solution=False).run(world.target)
    assert res.stop_reason == "exhausted" and res.first_solution_iteration == 4
    assert res.iterations == 6  # T, B, G, D, then H and F: every molecule once
    assert [r.total_cost for r in res.routes] == pytest.approx(
        [-math.log(0.3 * 0.9), -math.log(0.7 * 0.05 * 1.0)])
    assert res.routes[0] is res.best_route
    assert res.root.closed and not res.root.dead
    assert res.stats["n_dead_ends"] == 2  # G and H


def test_cycle_prevention():
    world = cycle_world()
    res = MCTS(world.model(), world.stock(), stop_on_first_solution=False).run(world.target)
    assert res.stats["n_cycle_rejected"] == 1  # B <- A while making A
    assert res.success and res.best_cost == pytest.approx(world.optimal_cost)
    stack = [res.root]
    while stack:
        node = stack.pop()
        for m in node.molecules:
            lineage = list(m.lineage())
            assert len(lineage) == len(set(lineage))
        stack.extend(node.children)


def test_target_in_stock_is_solved_without_iterations():
    world = dead_end_world()
    model = world.model()
    res = MCTS(model, world.stock()).run("OCC")
    assert res.success and res.iterations == 0 and model.n_calls == 0
    assert res.stop_reason == "in_stock" and res.first_solution_iteration == 0
    assert res.best_route.length == 0 and res.best_route.in_stock and res.best_cost == 0.0


def test_unsolvable_target_finds_nothing():
    world = dead_end_world()
    model = world.model()
    res = MCTS(model, Stock.from_smiles(["CCCCCCCCCC"])).run(world.target)
    assert not res.success and res.stop_reason == "exhausted"
    assert res.best_route is None and res.routes == [] and res.first_solution_iteration is None
    # T; {B, A}: B, then A has no reaction (dead, G and F never asked); {D, C}: D, then C
    assert res.iterations == model.n_calls == 5
    assert res.root.dead
    res = MCTS(world.model(), world.stock()).run("CCCCCCCCCCCO")  # no reaction at all
    assert not res.success and res.iterations == 1 and res.stop_reason == "exhausted"


# ----------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------


class _EndlessModel(SingleStepModel):
    """Every alkane C_n comes from C_{n+1} or C_{n+2}: nothing is ever solved."""

    def _propose(self, products, top_k):
        return [[Proposal((p + "C",), 0.6), Proposal((p + "CC",), 0.4)] for p in products]


@pytest.mark.parametrize("budget", [0, 1, 7, 25])
def test_iteration_budget_is_exact(budget):
    model = _EndlessModel()
    res = MCTS(model, Stock.from_smiles([]), max_iterations=budget).run("CC")
    assert res.iterations == budget == model.n_calls
    assert res.stop_reason == "max_iterations" and not res.success


def test_max_iterations_on_a_solvable_world():
    world = dead_end_world()
    for limit in range(4):  # the solution needs 4 calls
        model = world.model()
        res = MCTS(model, world.stock(), max_iterations=limit).run(world.target)
        assert not res.success and res.iterations == limit == model.n_calls
        assert res.stop_reason == "max_iterations" and res.best_route is None
    res = MCTS(world.model(), world.stock(), max_iterations=4).run(world.target)
    assert res.success and res.iterations == 4
    res = MCTS(world.model(), world.stock(), time_limit_s=0.0).run(world.target)
    assert res.iterations == 0 and res.stop_reason == "time_limit"


def test_max_depth():
    world = dead_end_world()
    # depth 1: B and D (depth 1, not in stock) are dead ends, nothing can be solved
    model = world.model()
    res = MCTS(model, world.stock(), max_depth=1).run(world.target)
    assert not res.success and res.iterations == 1 == model.n_calls
    assert res.stop_reason == "exhausted" and res.stats["n_depth_limited"] == 2
    res = MCTS(world.model(), world.stock(), max_depth=2).run(world.target)
    assert res.success and res.best_cost == pytest.approx(world.optimal_cost)
    assert res.best_route.depth <= 2
    # the depth-3 route (T <- A + B, B <- F, F <- S) is out of reach at depth 2
    res = MCTS(world.model(), world.stock(), max_depth=2,
               stop_on_first_solution=False).run(world.target)
    assert [r.depth for r in res.routes] == [2]
    res = MCTS(world.model(), world.stock(), max_depth=0).run(world.target)
    assert not res.success and res.iterations == 0 and res.stop_reason == "exhausted"
    # the endless world never goes deeper than max_depth
    res = MCTS(_EndlessModel(), Stock.from_smiles([]), max_depth=3).run("CC")
    assert res.stop_reason == "exhausted"
    stack = [res.root]
    while stack:
        node = stack.pop()
        assert all(m.depth <= 3 for m in node.molecules)
        stack.extend(node.children)


def test_bad_arguments():
    world = dead_end_world()
    for kwargs in ({"max_iterations": -1}, {"max_depth": -2}, {"time_limit_s": -1.0},
                   {"top_k": 0}, {"max_routes": 0}, {"c": -0.1}, {"c": math.nan},
                   {"stock_weight": 1.5}):
        with pytest.raises(InputError):
            MCTS(world.model(), world.stock(), **kwargs)


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


def _tie_world():
    """T <- X (0.5) | T <- Y (0.5); X <- Q (1.0), Q has no reaction; Y <- s (1.0), s in stock.
    The first choice is a tie: X first costs 4 calls (T, X, Q, Y), Y first 2 (T, Y)."""
    t, x, y, q, s = "CCCCO", "CCCO", "CCCN", "CCCCl", "CCO"
    return {t: [((x,), 0.5), ((y,), 0.5)], x: [((q,), 1.0)], y: [((s,), 1.0)]}, [s], t


def _summary(res):
    return (res.success, res.iterations, res.stop_reason, res.first_solution_iteration,
            [r.signature() for r in res.routes],
            {k: v for k, v in res.stats.items() if k != "stock"})


def test_same_seed_same_result_and_seeds_break_ties():
    table, stock_smiles, target = _tie_world()
    stock = Stock.from_smiles(stock_smiles)
    seen = set()
    for seed in range(12):
        a = MCTS(FixedReactionModel(table), stock, seed=seed).run(target)
        search = MCTS(FixedReactionModel(table), stock, seed=seed)
        search.run("CCCCCCCCN")  # an earlier target does not change the next one's result
        b = search.run(target)
        assert _summary(a) == _summary(b)
        assert a.success
        seen.add(a.iterations)
    assert seen == {2, 4}


# ----------------------------------------------------------------------------------------------
# Agreement with a brute force on random worlds
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_exhaustive_mcts_finds_every_route_of_the_brute_force(seed):
    table, stock_smiles, target = random_retro_world(seed, 10, 3)
    stock = Stock.from_smiles(stock_smiles)
    best, count = brute_force_routes(table, set(stock_smiles), target, frozenset(), 0, 3)
    model = FixedReactionModel(table)
    res = MCTS(model, stock, max_depth=3, stop_on_first_solution=False,
               max_routes=100_000).run(target)
    assert res.stop_reason == "exhausted"
    assert res.success == math.isfinite(best)
    assert len(res.routes) == count
    assert res.iterations == model.n_calls <= len(table)  # each molecule asked at most once
    if res.success:
        assert res.best_cost == pytest.approx(best)
        costs = [r.total_cost for r in res.routes]
        assert costs == sorted(costs)
        for r in res.routes:
            _check_route(r, table, stock_smiles, max_depth=3)
    first = MCTS(FixedReactionModel(table), stock, max_depth=3).run(target)
    retro = RetroStar(FixedReactionModel(table), stock, max_depth=3).run(target)
    assert first.success == retro.success == res.success
    if first.success:
        _check_route(first.best_route, table, stock_smiles, max_depth=3)


# ----------------------------------------------------------------------------------------------
# `selfsup chem plan` with planner: mcts
# ----------------------------------------------------------------------------------------------


def test_plan_run_with_mcts(tmp_path):
    from selfsup.chem.retro.workflows.plan import (
        SearchSpec,
        make_model_factory,
        make_stock,
        plan,
        plan_targets,
    )

    de, cy = dead_end_world(), cycle_world()
    targets = [de.target, cy.target, "CCCCN", "CCOCC", "CCO"]
    p = tmp_path / "targets.smi"
    p.write_text("\n".join(targets) + "\n")
    run, res = plan(None, [f"targets={p}", "model=toy:all", "stock=toy:all", "planner=mcts",
                           "search.max_iterations=20", f"run_root={tmp_path / 'runs'}",
                           "n_draw=0", "mcts.c=2.0"])
    assert res["algorithm"] == "MCTS" and res["planner"] == "mcts"
    assert res["n_targets"] == 5 and res["success_rate"] == pytest.approx(4 / 5)
    recs = [json.loads(ln) for ln in (run.path / "results.jsonl").read_text().splitlines()]
    recs.sort(key=lambda r: r["index"])
    assert [r["first_solution_iteration"] for r in recs] == [4, 2, 1, None, 0]
    assert recs[0]["best_cost"] == pytest.approx(de.optimal_cost)
    assert recs[0]["stats"]["planner"] == "mcts"
    # the spec builds the planner it names, with the mcts options
    spec = SearchSpec(make_model_factory("toy:all"), make_stock("toy:all"), max_iterations=20,
                      planner="mcts", mcts={"c": 0.5, "seed": 3})
    search = spec.build()
    assert isinstance(search, MCTS) and search.c == 0.5 and search.seed == 3
    one = plan_targets(targets, spec)
    assert [r["success"] for r in one] == [True, True, True, False, True]


def test_plan_config_planner_errors(tmp_path):
    from selfsup.chem.retro.workflows.plan import SearchSpec, make_model_factory, make_stock, plan
    from selfsup.errors import ConfigError

    p = tmp_path / "targets.smi"
    p.write_text("CCO\n")
    base = [f"targets={p}", "model=toy:all", "stock=toy:all", f"run_root={tmp_path}"]
    with pytest.raises(ConfigError, match="planner must be one of retro_star, mcts"):
        plan(None, [*base, "planner=mcst"])
    with pytest.raises(ConfigError, match="value_model is used by planner retro_star only"):
        plan(None, [*base, "planner=mcts", "value_model=v.pt"])
    with pytest.raises(ConfigError, match="planner must be one of"):
        SearchSpec(make_model_factory("toy:all"), make_stock("toy:all"), planner="bfs").build()
