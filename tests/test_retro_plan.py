"""Multi-target planning (process pool, resume, metrics), the route benchmark, the value network.

Planning runs over the toy worlds of ``selfsup.chem.retro.core.toy`` (``toy:all``: both worlds in
one table), whose optimal routes and Retro*-0 iteration counts are worked out by hand.
"""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch

from selfsup.chem.retro.core.routes import Route
from selfsup.chem.retro.core.search import RetroStar
from selfsup.chem.retro.core.toy import cycle_world, dead_end_world
from selfsup.chem.retro.models.value import (
    ValueExample,
    ValueModel,
    train_value_network,
    value_examples_from_routes,
)
from selfsup.chem.retro.workflows.plan import (
    SearchSpec,
    make_model_factory,
    make_stock,
    plan,
    plan_targets,
    read_records,
    resume_plan,
    summarize,
)
from selfsup.chem.retro.workflows.route_benchmark import (
    build_route_benchmark,
    load_route_benchmark,
    load_targets,
    reactions_from_smiles,
    write_route_benchmark,
)
from selfsup.errors import ConfigError

DE, CY = dead_end_world(), cycle_world()
# dead_end target (4 its), cycle target (2 its), D of dead_end (1 it), G (no reaction: fails
# after 1 it), A = CCO (in stock: 0 its)
TARGETS = [DE.target, CY.target, "CCCCN", "CCOCC", "CCO"]


def _spec(**kw) -> SearchSpec:
    return SearchSpec(make_model_factory("toy:all"), make_stock("toy:all"), max_iterations=20,
                      **kw)


def _strip(records):
    """Drop what depends on the machine or on which worker ran what (its model cache)."""
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k != "time_s"}
        r["stats"] = {k: v for k, v in r["stats"].items() if k != "model_cache_hits"}
        out.append(r)
    return out


def test_plan_targets_two_workers_match_one_worker():
    one = plan_targets(TARGETS, _spec())
    two = plan_targets(TARGETS, _spec(), n_workers=2, start_method="spawn")
    assert _strip(one) == _strip(two)
    assert [r["index"] for r in two] == [0, 1, 2, 3, 4]
    assert [r["success"] for r in one] == [True, True, True, False, True]
    assert [r["first_solution_iteration"] for r in one] == [4, 2, 1, None, 0]
    assert one[0]["best_cost"] == pytest.approx(DE.optimal_cost)
    assert one[1]["best_cost"] == pytest.approx(CY.optimal_cost)
    assert one[3]["stop_reason"] == "exhausted"


def test_summarize_success_at_k_by_hand():
    fsi = [0, 3, 10, 11, 60, None, None, 100]
    lengths = [0, 1, 2, 3, 2, None, None, 4]
    recs = [{"index": i, "success": f is not None, "first_solution_iteration": f,
             "best_route_length": n, "iterations": f or 7} for i, (f, n) in
            enumerate(zip(fsi, lengths))]
    s = summarize(recs, max_iterations=100, success_at=[10, 25, 50, 100, 200])
    assert s["success_at_10"] == 3 / 8
    assert s["success_at_25"] == 4 / 8
    assert s["success_at_50"] == 4 / 8
    assert s["success_at_100"] == 6 / 8
    assert "success_at_200" not in s  # beyond the budget
    assert s["mean_route_length"] == pytest.approx(12 / 6)
    # failures counted at the maximum
    assert s["mean_iterations"] == pytest.approx((0 + 3 + 10 + 11 + 60 + 100 + 100 + 100) / 8)


def _targets_file(tmp_path):
    p = tmp_path / "targets.smi"
    p.write_text("# toy targets\n" + "\n".join(TARGETS[:3]) + "\nnot_a_smiles((\n"
                 + "\n".join(TARGETS[3:]) + "\n")
    return p


def test_plan_run_writes_results_routes_pictures_and_resumes(tmp_path):
    overrides = [f"targets={_targets_file(tmp_path)}", "model=toy:all", "stock=toy:all",
                 "search.max_iterations=20", f"run_root={tmp_path / 'runs'}", "n_draw=2"]
    run, res = plan(None, overrides)
    assert res["n_targets"] == 5 and res["n_bad_targets"] == 1
    assert res["success_rate"] == pytest.approx(4 / 5)
    assert res["success_at_10"] == pytest.approx(4 / 5)
    assert res["stock"]["name"] == "toy:all" and res["algorithm"] == "Retro*-0"
    routes = json.loads((run.path / "routes.json").read_text())
    assert [r["index"] for r in routes] == [0, 1, 2, 4]
    assert Route.from_dict(routes[0]["route"]).total_cost == pytest.approx(DE.optimal_cost)
    assert sorted(p.name for p in (run.path / "artefacts").glob("*.png")) == [
        "route_0000.png", "route_0001.png"]

    # Simulate a kill after two targets, with a line cut in the middle.
    jsonl = run.path / "results.jsonl"
    lines = jsonl.read_text().splitlines()
    by_index = sorted(lines, key=lambda ln: json.loads(ln)["index"])
    jsonl.write_text(by_index[0] + "\n" + by_index[1] + "\n" + by_index[2][:30])
    run.set_status("running")
    run2, res2 = resume_plan(run.path)
    assert res2["n_skipped_done"] == 2 and res2["n_searched_this_call"] == 3
    keep = ("success_rate", "success_at_10", "mean_iterations", "mean_route_length")
    assert {k: res2[k] for k in keep} == {k: res[k] for k in keep}
    assert sorted(r["index"] for r in read_records(jsonl)) == [0, 1, 2, 3, 4]
    # finished: returned as it is
    assert resume_plan(run.path)[1] == res2


def test_plan_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="targets is required"):
        plan(None, ["model=toy:all"])
    with pytest.raises(ConfigError, match="executor"):
        plan(None, [f"targets={_targets_file(tmp_path)}", "model=toy:all", "executor=spark"])


def test_ray_executor_missing_is_a_clear_error():
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="ray"):
            plan_targets(TARGETS[:1], _spec(), executor="ray")


# ---------------------------------------------------------------------------- route benchmark

# Unmapped reactions (chaining needs no atom maps). Held-out (test) chain of 2 steps:
#   ester -> acid (test), acid + morpholine -> amide (test).
# The same acid is also made in train, from the ethyl ester, so the acid is a train product.
ACID = "Cc1ccc(C(=O)O)cc1"
AMIDE = "Cc1ccc(C(=O)N2CCOCC2)cc1"
TEST_RXNS = ["COC(=O)c1ccc(C)cc1>>" + ACID, ACID + ".C1COCCN1>>" + AMIDE]
# Train chain: Boc-aminoethanol -> aminoethanol -> acetamide, plus the ethyl ester hydrolysis.
TRAIN_RXNS = ["CC(C)(C)OC(=O)NCCO>>NCCO", "CC(=O)O.NCCO>>CC(=O)NCCO",
              "CCOC(=O)c1ccc(C)cc1>>" + ACID]


def test_route_benchmark_hand_made_chains(tmp_path):
    rx = reactions_from_smiles({"train": TRAIN_RXNS, "test": TEST_RXNS})
    bench = build_route_benchmark(rx, test_splits=("test",))
    train = {t.smiles: t for t in bench.targets["train"]}
    test = {t.smiles: t for t in bench.targets["test"]}
    assert set(train) == {"NCCO", "CC(=O)NCCO", ACID}
    assert (train["CC(=O)NCCO"].length, train["CC(=O)NCCO"].depth) == (2, 2)
    assert list(train["CC(=O)NCCO"].route.reactions()) == [
        ("CC(=O)NCCO", ("CC(=O)O", "NCCO")), ("NCCO", ("CC(C)(C)OC(=O)NCCO",))]
    # the acid is a train product: not a held-out target; the amide is, with its test route
    assert set(test) == {AMIDE}
    amide = test[AMIDE]
    assert (amide.length, amide.split, amide.group) == (2, "test", "test")
    assert amide.route.is_solved
    splits = set()

    def walk(r):
        if r.step is not None:
            splits.add(r.step.metadata["split"])
            for c in r.step.reactants:
                walk(c)

    walk(amide.route)
    assert splits == {"test"}  # never the train reaction that also makes the acid
    rep = bench.report["groups"]
    assert rep["test"]["n_multistep"] == 1 and rep["test"]["excluded_products"] == {
        "train_product": 1}
    assert rep["train"]["length_distribution"] == {"1": 2, "2": 1}
    paths = write_route_benchmark(bench, tmp_path / "bench")
    assert load_targets(paths["targets_test_multistep"]) == ([AMIDE], 0)
    gz = tmp_path / "targets.smi.gz"
    gz.write_bytes(gzip.compress(b"# a comment\n" + AMIDE.encode() + b"\nnot-a-smiles\n"))
    assert load_targets(gz) == ([AMIDE], 1)  # gzip read transparently, the bad line counted
    again = load_route_benchmark(tmp_path / "bench", "test")
    assert again[0].route.signature() == amide.route.signature()


# ---------------------------------------------------------------------------- value network


def test_value_network_fits_costs_saves_and_plugs_into_retro_star(tmp_path):
    torch.set_num_threads(1)
    examples = [ValueExample("CCCCCCO", 1.3), ValueExample("CCCCN", 0.1),
                ValueExample("CCCCO", 3.0), ValueExample("CC(C)O", 2.8)]
    model, hist = train_value_network(examples, epochs=120, lr=2e-2, batch_size=4, dropout=0.0)
    assert hist[-1]["mse"] < 1e-2 < hist[0]["mse"]
    pred = model.predict([e.smiles for e in examples])
    assert pred == pytest.approx([e.cost for e in examples], abs=0.15)
    model.save(tmp_path / "value.pt")
    again = ValueModel.load(tmp_path / "value.pt")
    assert again.predict(["CCCCN"]) == pytest.approx(model.predict(["CCCCN"]), abs=1e-6)
    res = RetroStar(DE.model(), DE.stock(), again.as_value_fn(), max_iterations=20).run(DE.target)
    assert res.success and res.stats["value_fn"] == "ValueModel.as_value_fn"


def test_value_hinge_pushes_negative_routes_above_the_true_cost():
    # m costs 1.0; a negative reaction of cost 0.2 through reactant r must cost >= 1.0 + 0.5
    ex = [ValueExample("CCCCCCO", 1.0, ((0.2, ("CCCCO",)),)), ValueExample("CCCCO", 0.0)]
    _, with_hinge = train_value_network(ex, epochs=40, lr=1e-2, batch_size=2, margin=0.5,
                                        hinge_weight=1.0, dropout=0.0)
    assert with_hinge[0]["hinge"] > 0.5 and with_hinge[-1]["hinge"] < with_hinge[0]["hinge"]
    assert math.isfinite(with_hinge[-1]["loss"])


def test_value_examples_from_routes_use_model_costs():
    res = RetroStar(DE.model(), DE.stock()).run(DE.target)
    ex = {e.smiles: e for e in value_examples_from_routes([res.best_route], DE.model(),
                                                          DE.stock())}
    assert ex[DE.target].cost == pytest.approx(DE.optimal_cost)
    assert ex["CCCCN"].cost == pytest.approx(-math.log(0.9))
    # the other proposal of the target is a negative, its stock reactant dropped
    assert ex[DE.target].negatives == ((pytest.approx(-math.log(0.7)), ("CCCCO",)),)


def test_value_loss_matches_a_loop_written_from_the_paper():
    from selfsup.chem.retro.models.value import ValueMLP
    from selfsup.chem.retro.training.templates_data import morgan_fingerprints

    ex = [ValueExample("CCCCCCO", 1.0, ((0.2, ("CCCCO", "CCN")), (3.0, ("CCCCO",)))),
          ValueExample("CCCCN", 0.5, ((0.1, ()),)), ValueExample("CCCCO", 2.0)]
    _, hist = train_value_network(ex, epochs=1, lr=0.0, batch_size=8, margin=0.7,
                                  hinge_weight=0.5, dropout=0.0, seed=3)
    torch.manual_seed(3)
    net = ValueMLP(2048, 128, 0.0)

    def v(smi):
        return float(net(torch.as_tensor(morgan_fingerprints([smi], 2, 2048))).detach()[0])

    mse = sum((v(e.smiles) - e.cost) ** 2 for e in ex) / len(ex)
    hinges = [max(0.0, e.cost + 0.7 - (c + sum(v(r) for r in rs)))
              for e in ex for c, rs in e.negatives]
    hinge = sum(hinges) / len(hinges)
    assert hist[0]["mse"] == pytest.approx(mse, rel=1e-5)
    assert hist[0]["hinge"] == pytest.approx(hinge, rel=1e-5)
    assert hist[0]["loss"] == pytest.approx(mse + 0.5 * hinge, rel=1e-5)
