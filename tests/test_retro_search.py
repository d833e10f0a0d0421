"""Retro* search on hand-worked toy worlds, model call accounting, routes (JSON, drawing)."""

from __future__ import annotations

import gc
import json
import math
import random

import pytest

from conftest import brute_force_routes, random_retro_world
from selfsup.chem.retro.core.routes import Route, RouteStep, draw_route, reaction_cost
from selfsup.chem.retro.core.search import MoleculeNode, RetroStar, iter_nodes
from selfsup.chem.retro.core.single_step import FixedReactionModel, Proposal, SingleStepModel
from selfsup.chem.retro.core.stock import Stock
from selfsup.chem.retro.core.toy import cycle_world, dead_end_world, toy_worlds
from selfsup.errors import InputError

# ----------------------------------------------------------------------------------------------
# Toy worlds: known optimal routes and costs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(toy_worlds()))
def test_finds_known_optimal_route_and_exact_cost(name):
    world = toy_worlds()[name]
    model = world.model()
    result = RetroStar(model, world.stock()).run(world.target)
    assert result.success and result.stop_reason == "solved"
    assert result.best_cost == pytest.approx(world.optimal_cost, abs=1e-12)
    assert set(result.best_route.reactions()) == world.optimal_reactions
    assert result.best_route.is_solved
    assert result.iterations == world.retro_star_0_iterations == result.first_solution_iteration
    assert model.n_calls == result.iterations == result.stats["model_calls"]
    assert result.stats["stock"]["name"] == f"toy:{name}"


def test_dead_end_world_numbers_and_continuing_search_collects_routes():
    world = dead_end_world()
    assert world.optimal_cost == pytest.approx(1.3093333199837625)
    result = RetroStar(world.model(), world.stock(), stop_on_first_solution=False).run(world.target)
    # Continues to F and H after the first solution at iteration 4, then runs out of nodes.
    assert result.iterations == 6 and result.stop_reason == "exhausted"
    assert result.first_solution_iteration == 4
    assert [r.total_cost for r in result.routes] == pytest.approx(
        [-math.log(0.3 * 0.9), -math.log(0.7 * 0.05 * 1.0)]
    )
    assert result.routes[0] is result.best_route
    assert [r.length for r in result.routes] == [2, 3]
    assert [r.depth for r in result.routes] == [2, 3]
    assert result.stats["n_dead_ends"] == 2  # G and H have no reaction


def test_value_function_steers_the_search():
    world = dead_end_world()
    # A high estimate for B (CCCCO) sends the search straight to D.
    result = RetroStar(
        world.model(), world.stock(), value_fn=lambda s: 5.0 if s == "CCCCO" else 0.0
    ).run(world.target)
    assert result.iterations == 2 and result.best_cost == pytest.approx(world.optimal_cost)


def test_cycle_prevention():
    world = cycle_world()
    result = RetroStar(world.model(), world.stock(), stop_on_first_solution=False).run(world.target)
    assert result.stats["n_cycle_rejected"] == 1
    for node in iter_nodes(result.root):
        if isinstance(node, MoleculeNode):
            above = {m.smiles for m in node.ancestors()}
            for rxn in node.children:
                assert not above & set(rxn.reactants)
    b = result.root.children[0].children[0]
    assert b.smiles == "CC(C)N" and [r.reactants for r in b.children] == [("CCOC",)]
    assert result.best_cost == pytest.approx(world.optimal_cost)


def test_target_in_stock_is_solved_without_iterations():
    world = dead_end_world()
    model = world.model()
    result = RetroStar(model, world.stock()).run("OCC")  # CCO written another way
    assert result.success and result.iterations == 0 and model.n_calls == 0
    assert result.stop_reason == "in_stock" and result.best_cost == 0.0
    assert result.best_route.length == 0 and result.best_route.in_stock


def test_limits():
    world = dead_end_world()
    for limit in range(4):
        model = world.model()
        result = RetroStar(model, world.stock(), max_iterations=limit).run(world.target)
        assert not result.success and result.iterations == limit == model.n_calls
        assert result.stop_reason == "max_iterations" and result.best_route is None
    # Depth 1: D (depth 1, not in stock) is a dead end, so nothing can be solved.
    result = RetroStar(world.model(), world.stock(), max_depth=1).run(world.target)
    assert not result.success and result.iterations == 1 and result.stop_reason == "exhausted"
    result = RetroStar(world.model(), world.stock(), max_depth=2).run(world.target)
    assert result.success and result.best_cost == pytest.approx(world.optimal_cost)
    result = RetroStar(world.model(), world.stock(), time_limit_s=0.0).run(world.target)
    assert result.iterations == 0 and result.stop_reason == "time_limit"
    with pytest.raises(InputError):
        RetroStar(world.model(), world.stock(), max_iterations=-1)


class _EndlessModel(SingleStepModel):
    """Every alkane C_n comes from C_{n+1} or C_{n+2}: nothing is ever solved."""

    def _propose(self, products, top_k):
        return [[Proposal((p + "C",), 0.6), Proposal((p + "CC",), 0.4)] for p in products]


@pytest.mark.parametrize("budget", [1, 7, 25])
def test_iteration_budget_is_exact(budget):
    model = _EndlessModel()
    result = RetroStar(model, Stock.from_smiles([]), max_iterations=budget).run("CC")
    assert result.iterations == budget == model.n_calls
    assert result.stop_reason == "max_iterations" and not result.success


# ----------------------------------------------------------------------------------------------
# Selection and optimality against a brute force written from the paper's definitions
# ----------------------------------------------------------------------------------------------


class _CheckedRetroStar(RetroStar):
    """Checks every selection against V_t computed from scratch (Chen et al. 2020, eqs. 4-6)."""

    n_checked = 0

    def _select(self, root):
        rn: dict[int, float] = {}

        def rn_mol(m):
            if m.in_stock:
                v = 0.0
            elif not m.expanded:
                v = math.inf if m.dead else m.value
            else:
                v = min((rn_rxn(r) for r in m.children), default=math.inf)
            rn[id(m)] = v
            return v

        def rn_rxn(r):
            rn[id(r)] = r.cost + sum(rn_mol(m) for m in r.children)
            return rn[id(r)]

        rn_mol(root)
        open_vt = {}
        stack = [(root, rn[id(root)])]
        while stack:
            m, vt = stack.pop()
            assert m.rn == pytest.approx(rn[id(m)])
            if m.is_open:
                open_vt[id(m)] = vt
            for r in m.children:
                if math.isfinite(rn[id(r)]):
                    stack.extend((c, vt - rn[id(m)] + rn[id(r)]) for c in r.children)
        leaf = super()._select(root)
        finite = [v for v in open_vt.values() if math.isfinite(v)]
        if leaf is None:
            assert not finite
        else:
            assert open_vt[id(leaf)] == pytest.approx(min(finite))
            type(self).n_checked += 1
        return leaf


@pytest.mark.parametrize("seed", range(8))
def test_selection_and_optimal_cost_match_brute_force(seed):
    table, stock_smiles, target = random_retro_world(seed, 12, 4)
    stock = Stock.from_smiles(stock_smiles)
    search = _CheckedRetroStar(
        FixedReactionModel(table),
        stock,
        max_depth=4,
        stop_on_first_solution=False,
        max_routes=10_000,
    )
    result = search.run(target)
    best, count = brute_force_routes(table, set(stock_smiles), target, frozenset(), 0, 4)
    assert result.success == math.isfinite(best)
    assert result.stop_reason == "exhausted"
    if result.success:
        assert result.best_cost == pytest.approx(best)
        assert len(result.routes) == count
        costs = [r.total_cost for r in result.routes]
        assert costs == sorted(costs)
        assert len({r.signature() for r in result.routes}) == count
        # The k-best enumeration returns exactly the k cheapest routes.
        few = RetroStar(
            FixedReactionModel(table),
            stock,
            max_depth=4,
            stop_on_first_solution=False,
            max_routes=3,
        ).run(target)
        assert [r.total_cost for r in few.routes] == pytest.approx(costs[:3])
    # Retro*-0 stopping on the first solution agrees on success.
    first = RetroStar(FixedReactionModel(table), stock, max_depth=4).run(target)
    assert first.success == result.success
    assert first.iterations <= result.iterations


# ----------------------------------------------------------------------------------------------
# Single-step model accounting
# ----------------------------------------------------------------------------------------------


class _Recorder(SingleStepModel):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[list[str]] = []

    def _propose(self, products, top_k):
        self.seen.append(list(products))
        return [
            [
                Proposal(("CC", "CCO"), 0.2, {"id": 0}),
                Proposal(("OCC", "CC"), 0.3, {"id": 1}),  # same set, other spelling
                Proposal(("CC.OCC",), 0.1, {"id": 2}),  # same set, dotted
                Proposal(("CN",), 0.4, {"id": 3}),
                Proposal(("C1CC",), 0.5, {"id": 4}),  # invalid SMILES: dropped
                Proposal((p,), 0.5, {"id": 5}),  # the product itself: dropped
            ]
            for p in products
        ]


def test_model_merges_renormalises_caches_and_counts():
    model = _Recorder()
    (props,) = model.propose(["CCCCO"], top_k=10)
    assert [p.reactants for p in props] == [("CC", "CCO"), ("CN",)]
    assert [p.probability for p in props] == pytest.approx([0.6, 0.4])
    assert props[0].metadata == {"id": 1, "n_merged": 3}
    assert model.n_invalid == 2
    (top1,) = model.propose(["OCCCC"], top_k=1)  # same molecule, other top_k: a miss
    assert [p.probability for p in top1] == pytest.approx([1.0])
    model.propose(["OCCCC"], top_k=10)  # hit
    assert (model.n_calls, model.n_cache_hits, model.n_model_calls) == (3, 1, 2)
    # One batch: two spellings of one new product and one cached product.
    out = model.propose(["CCCCCO", "OCCCCC", "CCCCO"], top_k=10)
    assert model.seen[-1] == ["CCCCCO"] and out[0] == out[1]
    assert (model.n_calls, model.n_cache_hits, model.n_batches) == (6, 2, 3)
    model.reset_counts()
    assert model.counts()["n_calls"] == 0
    with pytest.raises(InputError):
        model.propose(["C1CC"])
    uncached = _Recorder(use_cache=False)
    uncached.propose(["CCCCO"])
    uncached.propose(["CCCCO"])
    assert uncached.n_cache_hits == 0 and len(uncached.seen) == 2


def test_search_reuses_cached_expansions_but_counts_each_iteration():
    world = dead_end_world()
    model = world.model()
    search = RetroStar(model, world.stock())
    first = search.run(world.target)
    second = search.run(world.target)
    assert first.iterations == second.iterations == 4
    assert model.n_calls == 8 and model.n_cache_hits == 4
    assert second.stats["model_calls"] == 4 and second.stats["model_cache_hits"] == 4


def test_repeated_proposals_give_the_same_answer_and_count_invalid_each_time():
    model = _Recorder()
    first = model.propose(["CCCCO"], top_k=10)
    model.clear_cache()
    again = model.propose(["OCCCC"], top_k=10)  # computed again from the same raw proposals
    assert again == first and again[0][0].metadata == {"id": 1, "n_merged": 3}
    assert model.n_invalid == 4 and model.n_model_calls == 2


# ----------------------------------------------------------------------------------------------
# Pinned search figures: the search's results may not change when its code is made faster
# ----------------------------------------------------------------------------------------------


def _pinned_world(seed: int):
    rng = random.Random(seed)
    mols = ["C" * n for n in range(1, 25)]
    table = {}
    for m in mols:
        entries = []
        for _ in range(rng.randint(0, 6)):
            reactants = tuple(sorted(rng.sample(mols, rng.randint(1, 3))))
            if any(reactants == e[0] for e in entries):
                continue
            entries.append((reactants, round(rng.uniform(0.001, 1.0), 3)))
        table[m] = entries
    return table, rng.sample(mols[:-1], 6), mols[-1]


class _OrderModel(FixedReactionModel):
    """Records the length of each product it computes (the molecules are C, CC, CCC, ...)."""

    def _propose(self, products, top_k):
        self.order.extend(len(p) for p in products)
        return super()._propose(products, top_k)


# (seed, stop on first solution, value V(m) = 0.05 * atoms) -> success, iterations, first
# solution, stop reason, best cost, routes, their summed cost, molecule / reaction / open nodes,
# cycle-rejected reactions, dead ends, depth-limited molecules, products in expansion order.
# Recorded with the search as it was before the issue-20 speed-up (dataclass nodes, sweeps).
PINNED = [
    (0, True, False, True, 3, 3, "solved", 1.4209419234, 1, 1.4209419234, 17, 12, 9, 0, 0, 0,
     [24, 4, 12]),
    (0, False, False, True, 60, 3, "max_iterations", 0.8289852315, 19, 33.9463288144, 232, 128,
     69, 57, 6, 17, [24, 4, 12, 11, 6, 8, 5, 18, 3, 10, 13, 22, 16, 14, 15]),
    (2, False, False, True, 50, 1, "exhausted", 1.6144504543, 2, 4.6380711566, 118, 62, 40, 26,
     27, 6, [24, 15, 1, 13, 5, 6, 19, 20, 12, 22, 17, 9, 2, 18]),
    (4, True, False, True, 40, 40, "solved", 5.3354947348, 2, 11.2099859704, 108, 60, 33, 12, 8,
     0, [24, 18, 21, 13, 9, 7, 6, 10, 8, 17, 11, 14, 20]),
    (4, False, False, True, 60, 40, "max_iterations", 5.3354947348, 2, 11.2099859704, 143, 80,
     26, 30, 10, 7, [24, 18, 21, 13, 9, 7, 6, 10, 8, 17, 11, 14, 20, 22]),
    (4, True, True, True, 35, 35, "solved", 5.3354947348, 2, 11.2099859704, 99, 54, 33, 9, 8, 0,
     [24, 6, 13, 18, 21, 9, 7, 8, 10, 17, 11, 20, 14]),
    (5, False, False, True, 17, 1, "exhausted", 0.9014021194, 1, 0.9014021194, 35, 20, 11, 4, 7,
     0, [24, 7, 13, 22, 5, 6, 1, 3, 19, 11, 23, 10]),
]


@pytest.mark.parametrize("pinned", PINNED, ids=[f"{p[0]}-{p[1]}-{p[2]}" for p in PINNED])
def test_search_figures_are_pinned(pinned):
    seed, first, value = pinned[:3]
    table, stock_smiles, target = _pinned_world(seed)
    model = _OrderModel(table)
    model.order = []
    r = RetroStar(model, Stock.from_smiles(stock_smiles),
                  (lambda s: 0.05 * len(s)) if value else None, max_iterations=60, max_depth=6,
                  top_k=4, stop_on_first_solution=first, max_routes=20).run(target)
    st = r.stats
    got = (r.success, r.iterations, r.first_solution_iteration, r.stop_reason,
           round(r.best_cost, 10), len(r.routes), round(sum(x.total_cost for x in r.routes), 10),
           st["n_molecule_nodes"], st["n_reaction_nodes"], st["n_open_molecules"],
           st["n_cycle_rejected"], st["n_dead_ends"], st["n_depth_limited"], model.order)
    assert got == tuple(pinned[3:])
    # the node counts kept during the search are those of the finished tree
    nodes = list(iter_nodes(r.root))
    mols = [n for n in nodes if isinstance(n, MoleculeNode)]
    assert (len(mols), len(nodes) - len(mols), sum(m.is_open for m in mols)) == (
        st["n_molecule_nodes"], st["n_reaction_nodes"], st["n_open_molecules"])


class _GcProbe(FixedReactionModel):
    def _propose(self, products, top_k):
        self.gc_seen.append(gc.isenabled())
        if self.fail:
            raise RuntimeError("model failure")
        return super()._propose(products, top_k)


def test_search_pauses_the_collector_and_restores_it():
    world = dead_end_world()
    model = _GcProbe(world.reactions)
    model.gc_seen, model.fail = [], False
    assert gc.isenabled()
    RetroStar(model, world.stock()).run(world.target)
    assert model.gc_seen == [False] * 4 and gc.isenabled()
    model.clear_cache()
    model.gc_seen = []
    RetroStar(model, world.stock(), pause_gc=False).run(world.target)
    assert model.gc_seen == [True] * 4
    model.clear_cache()
    model.fail, model.gc_seen = True, []
    with pytest.raises(RuntimeError):
        RetroStar(model, world.stock()).run(world.target)
    assert model.gc_seen == [False] and gc.isenabled()
    gc.disable()
    try:
        model.fail = False
        RetroStar(model, world.stock()).run(world.target)
        assert not gc.isenabled()  # a collector the caller turned off stays off
    finally:
        gc.enable()


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------


def _example_route() -> Route:
    leaf = Route("CCO", in_stock=True)
    inner = Route(
        "CCCCN",
        step=RouteStep([Route("CCCl", in_stock=True)], 0.9, reaction_cost(0.9), {"t": 3}),
    )
    return Route("CCCCCCO", step=RouteStep([leaf, inner], 0.3, reaction_cost(0.3)))


def test_route_measures_and_json_round_trip():
    route = _example_route()
    assert route.total_cost == pytest.approx(-math.log(0.27))
    assert (route.length, route.depth) == (2, 2)
    assert route.leaves() == ["CCO", "CCCl"] and route.is_solved
    back = Route.from_dict(json.loads(json.dumps(route.to_dict())))
    assert back == route and back.signature() == route.signature()
    assert reaction_cost(0.0) == pytest.approx(-math.log(1e-3)) and reaction_cost(2.0) == 0.0
    with pytest.raises(InputError):
        Route.from_dict({"smiles": "CC", "reaction": {"reactants": "CC"}})
    with pytest.raises(InputError):
        Route.from_dict(["CC"])


def test_search_route_json_round_trip():
    world = dead_end_world()
    result = RetroStar(world.model(), world.stock()).run(world.target)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["best_cost"] == pytest.approx(world.optimal_cost)
    assert Route.from_dict(data["best_route"]) == result.best_route


def test_draw_route_writes_png(tmp_path):
    from PIL import Image

    path = draw_route(_example_route(), tmp_path / "sub" / "route.png", mol_size=120)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.size[0] >= 2 * 120 and img.size[1] >= 3 * 120
    # An unparsable SMILES is drawn as a labelled box, not an error.
    draw_route(Route("not-a-smiles"), tmp_path / "bad.png")
    assert (tmp_path / "bad.png").stat().st_size > 0


def test_retro_core_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, selfsup.chem.retro; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
