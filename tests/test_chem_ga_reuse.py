"""What the graph GA and the oracle reuse between steps changes nothing (issue 20): parents
parsed in an earlier generation, and the oracle's parse of a molecule given as its canonical
SMILES."""

from __future__ import annotations

import math

import numpy as np
from rdkit import Chem

from selfsup.chem.genetic import reproduce
from selfsup.chem.genetic.operators import _rings_ok
from selfsup.chem.objectives import get_objective
from selfsup.chem.objectives.adapters import as_objective
from selfsup.chem.optimize.graph_ga import graph_ga
from selfsup.chem.oracles import Oracle

PARENTS = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CN1CCCC1c1cccnc1",
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12",
    "O=C(O)Cc1ccccc1Nc1c(Cl)cccc1Cl",
    "CC(C)NCC(O)COc1cccc2ccccc12",
    "OC(=O)c1cn(C2CC2)c2cc(N3CCNCC3)c(F)cc2c1=O",
]


def test_reproduce_with_kept_parses_makes_the_same_children():
    parsed: dict = {}
    for seed in range(4):  # the same dict over calls, as the GA keeps it between generations
        parents = PARENTS[seed:] + PARENTS[:seed]
        plain = reproduce(parents, 30, np.random.default_rng(seed), mutation_rate=0.3)
        kept = reproduce(parents, 30, np.random.default_rng(seed), mutation_rate=0.3,
                         parsed=parsed)
        assert kept.children == plain.children and len(plain.children) == 30
        assert (kept.n_failed_crossovers, kept.n_mutations, kept.n_failed_mutations) == (
            plain.n_failed_crossovers, plain.n_mutations, plain.n_failed_mutations)
    assert set(parsed) == set(PARENTS)


def test_graph_ga_calls_are_a_function_of_the_seed():
    def run() -> list[tuple[str, float]]:
        qed = get_objective("qed")
        res = graph_ga(qed.score_list, PARENTS, rng=np.random.default_rng(3),
                       population_size=8, offspring_size=12, max_evaluations=80)
        return [(e.smiles, e.score) for e in res.evaluations]

    first = run()
    assert len(first) == 80 and first == run()


def test_rings_ok_matches_the_rules_on_examples():
    cases = {
        "c1ccccc1": True, "C1=CC1": False, "C1=CCC1": False, "C1#CCCCCC1": False,
        "C1=C=CCCC1": False,  # two double bonds at one ring atom
        "C=C1CCCCC1": True,  # exocyclic double bond to a chain atom
        "C1CCCCCCC1": True,  # 8-ring is fine when the limit allows it
    }
    for smiles, ok in cases.items():
        mol = Chem.MolFromSmiles(smiles)
        Chem.Kekulize(mol, clearAromaticFlags=True)
        assert _rings_ok(mol, 8) == ok, smiles
    assert not _rings_ok(Chem.MolFromSmiles("C1CCCCCCC1"), 6)


def test_oracle_scores_parsed_molecules_as_the_objective_does():
    qed = get_objective("qed")
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in PARENTS]
    batch = canonical[:4] + PARENTS[4:] + ["CCO", "OCC", "not smiles"]
    got = Oracle(qed).score_batch(batch).scores
    expected = [qed(s) for s in batch[:-1]] + [qed.invalid_score]
    assert all(a == b for a, b in zip(got, expected))
    # an objective with its own batch path is called with the SMILES, as before
    seen = []

    def batch_fn(smiles):
        seen.extend(smiles)
        return [float(len(s)) for s in smiles]

    oracle = Oracle(as_objective(batch_fn, batch=True))
    scores = oracle.score_batch(canonical[:3]).scores
    assert seen == canonical[:3] and scores == [float(len(s)) for s in canonical[:3]]
    assert not any(math.isnan(s) for s in got)
