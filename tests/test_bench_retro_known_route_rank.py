"""benchmarks/retro/known_route_rank.py: the steps of a stored known route, the fine-tuned models
listed in the retro v2 cache, and the per-model figures on a fake model with fixed scores."""

import math

import numpy as np
import pytest

from conftest import load_bench_script
from selfsup.chem.retro.core.single_step import Proposal


@pytest.fixture(scope="module")
def krr():
    return load_bench_script("retro", "known_route_rank.py")


def _leaf(smiles):
    return {"smiles": smiles, "in_stock": True}


def _node(smiles, template, kids):
    return {"smiles": smiles, "in_stock": False,
            "reaction": {"probability": 1.0, "cost": 0.0, "metadata": {"template": template},
                         "reactants": kids}}


# a two-step known route as reachable_routes.json stores it: T <- (B, M), M <- (C,)
ROUTE = _node("T", "t1", [_leaf("B"), _node("M", "t2", [_leaf("C")])])


def test_route_steps_breadth_first_with_sorted_reactants(krr):
    assert krr.route_steps(ROUTE) == [("T", ("B", "M"), "t1"), ("M", ("C",), "t2")]
    assert krr.route_steps(_leaf("X")) == []


def test_models_from_cache_by_stock_and_seed(krr):
    cache = {"model": "base.pt",
             "prep:si:s1:seed0": {"models": ["a1.pt", "a2.pt"]},
             "prep:si:s1:seed2": {"models": ["c1.pt", "c2.pt"]},
             "prep:control:s1:seed0": {"model": "r0.pt"},
             "prep:si:s2:seed0": {"models": ["x1.pt", "x2.pt"]},
             "prep:value:with-ord:seed0": {"path": "v.pt"},
             "s1/200/500it|0|retro_star": {"success_at_10": 1.0}}
    assert krr.models_from_cache(cache, "s1") == {
        "si1": {0: "a1.pt", 2: "c1.pt"}, "si2": {0: "a2.pt", 2: "c2.pt"},
        "random_control": {0: "r0.pt"}}


class FakeModel:
    """Templates t0..t3 (no valid SMARTS: identified by their strings); fixed scores per
    product; proposals given per product."""

    templates = ["t0", "t1", "t2", "t3"]

    def __init__(self, scores, proposals):
        self.scores, self.proposals = scores, proposals

    def template_scores(self, products):
        return np.asarray([self.scores[p] for p in products], dtype=np.float32)

    def propose(self, products, top_k):
        return [self.proposals.get(p, []) for p in products]

    def clear_cache(self):
        pass


def test_model_figures(krr):
    scores = {"T": [0.1, 0.6, 0.2, 0.1], "M": [0.5, 0.3, 0.15, 0.05]}
    model = FakeModel(scores, {"T": [Proposal(("B", "M"), 0.9)], "M": [Proposal(("D",), 1.0)]})
    figs, records = krr.model_figures(model, [{"smiles": "T", "route": ROUTE}])
    # step T is proposed, step M is not (C is not among its proposals): the target is not
    # solvable by its known route
    assert records == [{"smiles": "T", "solvable": False}]
    assert figs["solvable_share"] == 0.0 and figs["steps_in_top50_share"] == 0.5
    # t1 ranks 1st for T (0.6), t2 3rd for M (0.5, 0.3 above 0.15)
    assert figs["median_template_rank"] == 2.0 and figs["template_rank_gt50_share"] == 0.0
    assert figs["mean_known_probability"] == pytest.approx((0.6 + 0.15) / 2)
    ent = [-sum(p * math.log(p) for p in scores[k]) for k in ("T", "M")]
    assert figs["mean_entropy"] == pytest.approx(sum(ent) / 2, rel=1e-5)
    model.proposals["M"] = [Proposal(("C",), 0.7)]
    figs, _ = krr.model_figures(model, [{"smiles": "T", "route": ROUTE}])
    assert figs["solvable_share"] == 1.0


def test_figures_of_models_known_by_hash_outlive_their_files(krr, tmp_path):
    """Models made on an earlier machine are gone; their figures, kept by SHA-256 beside the
    results, are reported without the files. A gone model without kept figures is refused."""
    import json

    figs = {m: 0.5 for m in krr.METRICS}
    cache = {"model": "/gone/base.pt", "model_sha256": "aaaa",
             "prep:si:leaves:seed0": {"models": ["/gone/i1.pt", "/gone/i2.pt"],
                                       "model_sha256": ["bbbb", "cccc"]},
             "prep:control:leaves:seed0": {"model": "/gone/c.pt", "model_sha256": "dddd"}}
    assert krr.model_hashes(cache) == {"/gone/base.pt": "aaaa", "/gone/i1.pt": "bbbb",
                                       "/gone/i2.pt": "cccc", "/gone/c.pt": "dddd"}
    (tmp_path / "cache.json").write_text(json.dumps(cache))
    (tmp_path / "routes.json").write_text(json.dumps([{"smiles": "T", "route": ROUTE}]))
    out = tmp_path / "out"
    out.mkdir()
    kept = {h: {"model": "x", "targets": "1 targets", "figures": {**figs, "mean_entropy": i}}
            for i, h in enumerate(("aaaa", "bbbb", "cccc", "dddd"))}
    (out / "retro_known_route_rank_cache.json").write_text(json.dumps(kept))
    argv = ["--cache", str(tmp_path / "cache.json"), "--routes", str(tmp_path / "routes.json"),
            "--out", str(out)]
    assert krr.main(argv) == 0
    rows = json.loads((out / "retro_known_route_rank.json").read_text())["rows"]
    ent = {r["arm"]: r["mean"] for r in rows if r["metric"] == "mean_entropy"}
    assert ent == {"base": 0, "si1": 1, "si2": 2, "random_control": 3}
    del kept["cccc"]
    (out / "retro_known_route_rank_cache.json").write_text(json.dumps(kept))
    with pytest.raises(SystemExit, match="/gone/i2.pt is gone"):
        krr.main(argv)
