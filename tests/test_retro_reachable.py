"""Reachable held-out route targets and the known-route ceiling (issue 23), on a toy world of
hand-mapped reactions: Boc deprotections, amide couplings and a methyl-ester hydrolysis."""

from __future__ import annotations

import numpy as np
import pytest

from selfsup.chem.retro.core.reactions import Reaction, extract_retro_template
from selfsup.chem.retro.core.single_step import TemplateModel
from selfsup.chem.retro.core.stock import Stock
from selfsup.chem.retro.training.template_identity import TemplateMatcher
from selfsup.chem.retro.workflows.ord_split import OrdReaction
from selfsup.chem.retro.workflows.route_benchmark import DatasetReaction
from selfsup.chem.retro.workflows.route_benchmark_reachable import (
    CEILING_METRICS,
    HeldOutFreeStock,
    build_reachable_targets,
    ceiling_rows,
    dataset_reactions_with_ord,
    known_route_ceiling,
    leaves_stock,
    one_step_solutions,
    reaction_leaves,
    training_targets,
)
from selfsup.errors import InputError

BOC = "CC(C)(C)OC(=O)[NH:1][CH2:2]{r}>>[NH2:1][CH2:2]{r}"
AMIDE = "[CH3:90][C:91](=[O:92])O.[NH2:1][CH2:2]{r}>>[CH3:90][C:91](=[O:92])[NH:1][CH2:2]{r}"
ESTER = "C[O:1][C:2](=[O:3]){r}>>[OH:1][C:2](=[O:3]){r}"
PH = "[c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1"  # phenyl
TOL = "[c:3]1[cH:4][cH:5][c:6]([CH3:9])[cH:7][cH:8]1"  # p-tolyl
ACIDPH = "[c:3]1[cH:4][cH:5][c:6]([C:10](=[O:11])[OH:12])[cH:7][cH:8]1"  # p-carboxyphenyl
ETOH = "[CH2:3][OH:4]"
TRAIN = [BOC.format(r=ETOH), AMIDE.format(r=ETOH), ESTER.format(r="[CH2:4][CH3:5]")]
HELD = [BOC.format(r=PH), AMIDE.format(r=PH),  # a two-step route to CC(=O)NCc1ccccc1
        BOC.format(r=TOL), AMIDE.format(r=TOL),  # the same to the tolyl amide
        BOC.format(r=ACIDPH), AMIDE.format(r=ACIDPH)]  # ... and to an acid (see the stock)
TARGET_PH, TARGET_TOL = "CC(=O)NCc1ccccc1", "CC(=O)NCc1ccc(C)cc1"
TARGET_ACID = "CC(=O)NCc1ccc(C(=O)O)cc1"
METHYL_ESTER = "COC(=O)c1ccc(CNC(C)=O)cc1"  # one ester hydrolysis away from TARGET_ACID


def _ord(texts, prefix):
    out = []
    for i, t in enumerate(texts):
        rxn = Reaction.from_smiles(t)
        out.append(OrdReaction(f"{prefix}{i}", t, extract_retro_template(t), rxn))
    return out


class _Fixed(TemplateModel):
    """Templates with fixed scores (the same for every product, or per product)."""

    def __init__(self, templates, scores=None, per_product=None):
        super().__init__(templates)
        self.scores = np.full(len(templates), 1.0 / len(templates)) if scores is None \
            else np.asarray(scores, float)
        self.per_product = per_product or {}

    def template_scores(self, products):
        return np.stack([np.asarray(self.per_product.get(p, self.scores), float)
                         for p in products])

    _template_scores = template_scores


@pytest.fixture(scope="module")
def world():
    uspto = [DatasetReaction(i, "train", f"u{i}", r.product, r.reactants,
                             extract_retro_template(t))
             for i, (t, r) in enumerate((t, Reaction.from_smiles(t)) for t in TRAIN)]
    reactions = dataset_reactions_with_ord(uspto, [], _ord(HELD, "h"))
    templates = [r.template for r in uspto]
    return reactions, templates


def test_dataset_reactions_with_ord_continues_indices(world):
    reactions, _ = world
    assert [r.index for r in reactions] == list(range(len(TRAIN) + len(HELD)))
    assert {r.split for r in reactions[len(TRAIN):]} == {"ord"}
    assert all(r.template for r in reactions)


def test_held_out_free_stock_drops_held_out_products(world):
    reactions, _ = world
    base = leaves_stock(reactions)
    assert "NCc1ccccc1" not in base  # a held-out intermediate is made by a reaction
    assert "CC(=O)O" in base
    wide = Stock.from_smiles(["NCc1ccccc1", "CC(=O)O", "OCC"], name="wide")
    st = HeldOutFreeStock(wide, [r.product for r in reactions if r.split == "ord"])
    assert "NCc1ccccc1" in wide and "NCc1ccccc1" not in st
    assert "C(C(=O)O)" in st and 5 not in st
    assert st.describe()["base"]["name"] == "wide" and st.describe()["n_excluded"] == 6
    with pytest.raises(InputError):
        HeldOutFreeStock(3, [])


def test_training_targets_are_train_products_never_made_by_held_out_reactions():
    train = [DatasetReaction(0, "train", "a", "NCCO", ("CC(C)(C)OC(=O)NCCO",)),
             DatasetReaction(1, "ord_train", "b", "CC(=O)NCCO", ("CC(=O)O", "NCCO")),
             DatasetReaction(2, "train", "c", "NCc1ccccc1", ("CC(C)(C)OC(=O)NCc1ccccc1",))]
    held = [DatasetReaction(3, "ord", "d", "NCc1ccccc1", ("CC(C)(C)OC(=O)NCc1ccccc1",)),
            DatasetReaction(4, "test", "e", "CC(=O)NCc1ccccc1", ("CC(=O)O", "NCc1ccccc1"))]
    # the benzylamine is made by a held-out reaction too: it is never a training target
    assert training_targets(train + held) == ["CC(=O)NCCO", "NCCO"]
    assert training_targets(train + held, Stock.from_smiles(["NCCO"])) == ["CC(=O)NCCO"]
    assert training_targets(held) == []


def test_written_stock_files_rebuild_the_same_stock(world, tmp_path):
    from selfsup.chem.retro.workflows.route_benchmark_reachable import ReachableTargets, _write

    reactions, _ = world
    held = [r.product for r in reactions if r.split == "ord"]
    smiles = ["CC(=O)O", "NCc1ccccc1", "OCC"]
    wide = Stock.from_smiles(smiles, name="wide")
    _write(tmp_path, "toy", ReachableTargets(targets=[], stock=HeldOutFreeStock(wide, held),
                                             stock_smiles=smiles))
    assert (tmp_path / "stock.smi").read_text().split() == smiles
    again = HeldOutFreeStock(Stock.from_file(tmp_path / "stock.smi"),
                             (tmp_path / "stock_exclude.smi").read_text().split())
    for smi in ["NCc1ccccc1", "CC(=O)O", "OCC", "CCCC"]:
        assert (smi in again) == (smi in HeldOutFreeStock(wide, held))
    assert "NCc1ccccc1" not in again and "OCC" in again


def test_one_step_solutions_need_every_reactant_in_stock(world):
    _, templates = world
    m = TemplateMatcher(templates)
    assert one_step_solutions(TARGET_PH, m, {"CC(=O)O"}) == []
    sol = one_step_solutions(TARGET_PH, m, {"CC(=O)O", "NCc1ccccc1"})
    assert sol == [(1, ("CC(=O)O", "NCc1ccccc1"))]
    assert one_step_solutions(TARGET_ACID, m, {METHYL_ESTER}, first=False) == [
        (2, (METHYL_ESTER,))]


def test_reachable_targets_and_their_ceiling(world):
    reactions, templates = world
    model = _Fixed(templates)
    made = {r.product for r in reactions}
    leaves = {m for r in reactions for m in r.reactants if m not in made}
    assert all(m in leaves_stock(reactions) for m in leaves)
    base = Stock.from_smiles(sorted(leaves) + [METHYL_ESTER])
    rt = build_reachable_targets(reactions, model, stock=base, top_k=2)
    # the acid target is one ester hydrolysis away from the stock: not a target
    assert [t.smiles for t in rt.targets] == sorted([TARGET_PH, TARGET_TOL])
    assert rt.report["counts"] == {"eligible": 2, "one_step_solvable": 1}
    assert rt.facts[TARGET_ACID]["one_step_solution"] == [2, [METHYL_ESTER]]
    assert all(t.length == 2 for t in rt.targets)
    assert rt.report["step_matches"]["n_steps"] == 6
    assert set(rt.report["step_matches"]["how"]) <= {"string", "key", "candidates", "scan"}
    # a seeded draw
    one = build_reachable_targets(reactions, model, stock=base, n_targets=1, seed=0)
    assert len(one.targets) == 1 and one.targets[0].smiles in (TARGET_PH, TARGET_TOL)

    shares, records = known_route_ceiling(rt.targets, model, rt.stock, top_k=50)
    assert shares["solvable_share"] == 1.0 and sum(shares.values()) == pytest.approx(1.0)
    # top-1 with the amide template ranked last: the first step is beyond the top-k
    low = _Fixed(templates, scores=[0.4, 0.1, 0.5])
    shares, records = known_route_ceiling(rt.targets, low, rt.stock, top_k=1)
    assert shares["beyond_top50_share"] == 1.0
    assert records[1]["first_failing_step"] == TARGET_PH
    # a vocabulary without the amide template: the step's template is absent
    no_amide = _Fixed([templates[0], templates[2]])
    shares, _ = known_route_ceiling(rt.targets, no_amide, rt.stock)
    assert shares["template_absent_share"] == 1.0
    # a stock without the Boc amines: the known route's leaves are missing
    shares, records = known_route_ceiling(rt.targets, model, {"CC(=O)O"})
    assert shares["leaf_not_in_stock_share"] == 1.0
    assert records[0]["leaves_not_in_stock"] == ["Cc1ccc(CNC(=O)OC(C)(C)C)cc1"]


def test_an_unreachable_step_removes_the_target(world):
    reactions, templates = world
    model = _Fixed([templates[0], templates[2]])  # no amide template
    rt = build_reachable_targets(reactions, model, scan=True)
    assert rt.targets == [] and rt.report["counts"] == {"step_not_reachable": 3}
    # the default stock (leaves of every reaction) keeps its SMILES to be written out
    assert rt.stock_smiles == reaction_leaves(reactions)
    assert all(m in rt.stock.base for m in rt.stock_smiles)
    assert "NCc1ccccc1" not in rt.stock_smiles  # a reaction makes it


def test_ceiling_rows_format():
    shares = dict.fromkeys(CEILING_METRICS, 0.0) | {"solvable_share": 1.0}
    rows = ceiling_rows("reachable", shares)
    assert [r["metric"] for r in rows] == list(CEILING_METRICS)
    assert rows[0] == {"setting": "ceiling/reachable", "arm": "known_route",
                       "metric": "solvable_share", "mean": 1.0, "std": 0.0, "seeds": [1.0]}
