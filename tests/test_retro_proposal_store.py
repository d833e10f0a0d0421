"""The on-disk proposal store shared by the planning processes of one model: what a model
computed comes back identical in another process's model, a cut line is skipped, and searches
with a store find the same routes in the same number of iterations. Offline, seconds."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_retro_world
from selfsup.chem.retro.core.mcts import MCTS
from selfsup.chem.retro.core.proposal_store import ProposalStore, model_file_key
from selfsup.chem.retro.core.reactions import extract_retro_template
from selfsup.chem.retro.core.search import RetroStar
from selfsup.chem.retro.core.single_step import FixedReactionModel, TemplateModel
from selfsup.chem.retro.core.stock import Stock
from selfsup.errors import InputError

# retro templates extracted from three mapped reactions (deprotection, ester hydrolysis, amide)
BOC, ESTER, AMIDE = (extract_retro_template(r) for r in (
    "CC(C)(C)OC(=O)[NH:1][CH2:2][CH3:3]>>[NH2:1][CH2:2][CH3:3]",
    "C[O:1][C:2](=[O:3])[CH3:4]>>[OH:1][C:2](=[O:3])[CH3:4]",
    "[CH3:5][C:6](=[O:7])O.[NH2:1][CH2:2][c:3]1[cH:8][cH:9][cH:10][cH:11][cH:12]1>>"
    "[CH3:5][C:6](=[O:7])[NH:1][CH2:2][c:3]1[cH:8][cH:9][cH:10][cH:11][cH:12]1"))


class _Scored(TemplateModel):
    """A template model with fixed template probabilities (the same for every product)."""

    def __init__(self, templates, scores):
        super().__init__(templates)
        self.scores = np.asarray(scores, float)

    def _template_scores(self, products):
        return np.tile(self.scores, (len(products), 1))


def _world_model(table):
    return FixedReactionModel(table)


def test_a_second_model_gets_exactly_what_the_first_computed(tmp_path):
    templates = [BOC, ESTER, AMIDE]
    first = _Scored(templates, [0.5, 0.3, 0.2])
    store = ProposalStore(tmp_path, "m1")
    assert store.attach(first) == 0
    products = ["CCN", "CC(=O)NCc1ccccc1", "CC(=O)O"]
    want = first.propose(products, top_k=3)
    assert first.n_model_calls == 3 and store.n_written == 3
    assert any(p.metadata.get("template") == AMIDE for props in want for p in props)
    store.close()

    second = _Scored(templates, [0.0, 0.0, 1.0])  # other scores: anything computed would differ
    other = ProposalStore(tmp_path, "m1")
    assert other.attach(second) == 3
    got = second.propose(products, top_k=3)
    assert second.n_model_calls == 0 and second.n_cache_hits == 3
    for a, b in zip(want, got):
        assert [(p.reactants, p.probability, dict(p.metadata)) for p in a] == \
               [(p.reactants, p.probability, dict(p.metadata)) for p in b]
    # another top_k is another entry; another key another folder
    second.propose(products[:1], top_k=1)
    assert second.n_model_calls == 1
    assert ProposalStore(tmp_path, "m2").attach(_Scored(templates, [1, 0, 0])) == 0


def test_the_template_string_is_not_written_but_rebuilt(tmp_path):
    model = _Scored([BOC, ESTER], [0.6, 0.4])
    store = ProposalStore(tmp_path, "k")
    store.attach(model)
    model.propose(["CCN"], top_k=2)
    store.close()
    (line,) = (tmp_path / "k").glob("*.jsonl")
    text = line.read_text()
    assert '"template_id":0' in text and BOC not in text and "template\"" not in text


def test_a_line_cut_by_a_kill_is_skipped_and_computed_again(tmp_path):
    table, stock, target = random_retro_world(3, 8, 3)
    model = _world_model(table)
    store = ProposalStore(tmp_path, "w")
    store.attach(model)
    model.propose(["C", "CC"], top_k=5)
    store.close()
    (f,) = (tmp_path / "w").glob("*.jsonl")
    lines = f.read_text().splitlines()
    f.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # the second line cut
    fresh = _world_model(table)
    again = ProposalStore(tmp_path, "w")
    assert again.attach(fresh) == 1 and again.n_skipped == 1
    fresh.propose(["C", "CC"], top_k=5)
    assert fresh.n_model_calls == 1


@pytest.mark.parametrize("planner", ["retro_star", "mcts"])
def test_searches_with_a_store_find_the_same_routes_in_the_same_iterations(tmp_path, planner):
    solved = 0
    for seed in range(6):
        table, stock_smiles, target = random_retro_world(seed, 12, 3)
        stock = Stock.from_smiles(stock_smiles)

        def search(model, stock=stock, seed=seed, target=target):
            if planner == "mcts":
                return MCTS(model, stock, max_iterations=60, max_depth=6, seed=seed).run(target)
            return RetroStar(model, stock, max_iterations=60, max_depth=6).run(target)

        plain = search(_world_model(table))
        warm = _world_model(table)
        ProposalStore(tmp_path / planner, f"s{seed}").attach(warm)
        first = search(warm)  # fills the store
        shared = _world_model(table)
        ProposalStore(tmp_path / planner, f"s{seed}").attach(shared)
        second = search(shared)  # answered from the store
        for res in (first, second):
            assert (res.success, res.iterations) == (plain.success, plain.iterations)
            assert [r.to_dict() for r in res.routes[:3]] == [r.to_dict() for r in plain.routes[:3]]
        assert warm.n_model_calls > 0 and shared.n_model_calls == 0  # all from the store
        solved += plain.success
    assert 0 < solved < 6  # both outcomes among the worlds


def test_bad_store_inputs(tmp_path):
    with pytest.raises(InputError, match="folder name"):
        ProposalStore(tmp_path, "../up")
    with pytest.raises(InputError, match="use_cache"):
        ProposalStore(tmp_path, "x").attach(FixedReactionModel({}, use_cache=False))
    with pytest.raises(InputError, match="no model file"):
        model_file_key(tmp_path / "missing.pt")
    (tmp_path / "m.pt").write_bytes(b"weights")
    assert model_file_key(tmp_path / "m.pt") == model_file_key(tmp_path / "m.pt")
    assert len(model_file_key(tmp_path / "m.pt")) == 16
