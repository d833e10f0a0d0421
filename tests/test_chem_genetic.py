"""Graph GA operators and loop (Jensen 2019): validity, determinism, size cap, improvement."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import QED

from selfsup.chem.genetic import (
    MUTATION_KINDS,
    crossover,
    mutate,
    reproduce,
)
from selfsup.chem.optimize.graph_ga import GAResult, graph_ga
from selfsup.errors import InputError

DRUGS = [
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",  # caffeine
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",  # ibuprofen
    "CC(=O)Nc1ccc(O)cc1",  # paracetamol
    "CN1CCCC1c1cccnc1",  # nicotine
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12",  # diazepam
    "Cc1ccc(cc1)-c1cc(nn1-c1ccc(cc1)S(N)(=O)=O)C(F)(F)F",  # celecoxib
    "CN(C)CCCN1c2ccccc2CCc2ccccc21",  # imipramine
    "O=C(O)Cc1ccccc1Nc1c(Cl)cccc1Cl",  # diclofenac
    "CC(C)NCC(O)COc1cccc2ccccc12",  # propranolol
    "COc1ccc2[nH]cc(CCNC(C)=O)c2c1",  # melatonin
    "NC(=O)N1c2ccccc2C=Cc2ccccc21",  # carbamazepine
    "CCOC(=O)C1=C(C)NC(C)=C(C(=O)OC)C1c1cccc(c1)[N+](=O)[O-]",  # nitrendipine
    "CN1CCN(CC1)c1ccc2nc3ccccc3n2c1",  # piperazine-fused heteroaromatic
    "O=C1CCCN1Cc1ccc(F)cc1",  # fluorobenzyl pyrrolidone
    "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1",  # norchlorcyclizine
    "CS(=O)(=O)Nc1ccc(cc1)C(=O)CCN1CCCCC1",  # sulfonamide ketone
    "OC(=O)c1cn(C2CC2)c2cc(N3CCNCC3)c(F)cc2c1=O",  # ciprofloxacin
    "COc1cc2c(cc1OC)C(=O)C(CC1CCN(Cc3ccccc3)CC1)C2",  # donepezil
    "CC1=C(C(=O)Nc2ccccn2)N(C)S(=O)(=O)c2ccccc21",  # piroxicam-like
]


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(DRUGS[a], DRUGS[b]) for a, b in rng.integers(len(DRUGS), size=(n, 2))]


def _valid(smiles: str | None) -> bool:
    return smiles is not None and Chem.MolFromSmiles(smiles) is not None


def test_parents_parse() -> None:
    assert all(_valid(s) for s in DRUGS)


@pytest.mark.parametrize("kind", ["ring", "chain", None])
def test_crossover_children_are_valid(kind: str | None) -> None:
    rng = np.random.default_rng(1)
    children = [crossover(a, b, rng, kind=kind) for a, b in _pairs(50, seed=2)]
    made = [c for c in children if c is not None]
    assert len(made) >= 40  # every parent here has both ring and acyclic single bonds
    assert all(_valid(c) for c in made)
    assert all(c == Chem.MolToSmiles(Chem.MolFromSmiles(c)) for c in made)  # canonical
    assert len(set(made)) > 30  # not copies of a few molecules


@pytest.mark.parametrize("kind", MUTATION_KINDS)
def test_each_mutation_kind_gives_valid_changed_molecules(kind: str) -> None:
    rng = np.random.default_rng(3)
    outs = [mutate(s, rng, kinds=[kind]) for s in DRUGS]
    assert all(_valid(o.smiles) for o in outs)
    changed = [o for o, s in zip(outs, DRUGS) if o.kind is not None]
    assert changed and all(o.kind == kind for o in changed)
    canon = {Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False) for s in DRUGS}
    assert all(o.smiles not in canon for o in changed)


def test_mutation_never_returns_none_and_keeps_molecule_when_all_kinds_fail() -> None:
    rng = np.random.default_rng(4)
    for s in DRUGS:
        for _ in range(5):
            out = mutate(s, rng)
            assert _valid(out.smiles) and out.kind in MUTATION_KINDS
    # a cap below the input size leaves no legal mutation: the molecule comes back, kind None
    out = mutate("C1CC1", rng, max_heavy_atoms=1)
    assert out == ("C1CC1", None)


def test_reproduce_deterministic_given_seed_and_n_jobs() -> None:
    def run(seed: int, n_jobs: int = 1) -> list[str]:
        rng = np.random.default_rng(seed)
        return reproduce(DRUGS, 40, rng, mutation_rate=0.5, n_jobs=n_jobs).children

    first = run(5)
    assert first == run(5) and first != run(6)
    assert len(first) == 40 and all(_valid(c) for c in first)
    assert run(5, n_jobs=2) == run(5, n_jobs=2)


def test_reproduce_counts_and_weights() -> None:
    rng = np.random.default_rng(7)
    out = reproduce(DRUGS, 60, rng, mutation_rate=1.0)
    assert out.n_mutations == 60 and 0 <= out.n_failed_mutations < 60 and out.seconds > 0
    # all weight on aspirin and ibuprofen: children are built from their fragments only (C, O)
    w = [1.0, 0.0, 1.0] + [0.0] * (len(DRUGS) - 3)
    out = reproduce(DRUGS, 30, rng, mutation_rate=0.0, parent_weights=w)
    elements = {a.GetSymbol() for c in out.children for a in Chem.MolFromSmiles(c).GetAtoms()}
    assert elements == {"C", "O"}


@pytest.mark.parametrize(
    ("parents", "kwargs"),
    [
        (["CCO", "not a smiles"], {}),
        ([], {}),
        (["CCO", "CCN"], {"parent_weights": [1.0]}),
        (["CCO", "CCN"], {"parent_weights": [1.0, -1.0]}),
    ],
)
def test_reproduce_rejects_bad_input(parents: list[str], kwargs: dict) -> None:
    with pytest.raises(InputError):
        reproduce(parents, 5, np.random.default_rng(0), **kwargs)


def test_no_size_cap_by_default_and_cap_when_given() -> None:
    # two 42-heavy-atom parents: the reference code's ~39-atom cap would reject most children
    big = [
        "c1ccc(cc1)" + "CCOC(=O)" * 6 + "CCN" + "C(C)" * 4 + "c1ccccc1",
        "O=C(" + "CCN" * 10 + ")c1ccc(cc1)CCCCCCC",
    ]
    sizes = [Chem.MolFromSmiles(s).GetNumHeavyAtoms() for s in big]
    assert min(sizes) > 39
    rng = np.random.default_rng(8)
    free = reproduce(big, 40, rng, mutation_rate=0.0).children
    assert max(Chem.MolFromSmiles(c).GetNumHeavyAtoms() for c in free) > 39
    capped = reproduce(big, 40, rng, mutation_rate=1.0, max_heavy_atoms=30).children
    assert capped and all(Chem.MolFromSmiles(c).GetNumHeavyAtoms() <= 30 for c in capped)


def test_graph_ga_improves_qed_and_records_every_call() -> None:
    start = ["CCCCCCCCCC", "CCOC(=O)CCCCC(=O)OCC", "ClCCCCCl", "CCCCCCCCO", "c1ccccc1CCCCCCCCCC"]
    calls: list[str] = []

    def qed(smiles: list[str]) -> list[float]:
        calls.extend(smiles)
        return [QED.qed(Chem.MolFromSmiles(s)) for s in smiles]

    result = graph_ga(
        qed,
        start,
        generations=6,
        population_size=20,
        offspring_size=20,
        rng=np.random.default_rng(9),
        max_evaluations=120,
    )
    assert isinstance(result, GAResult)
    assert len(calls) == len(set(calls)) == len(result.evaluations) <= 120
    assert [e.smiles for e in result.evaluations] == calls
    initial_best = max(e.score for e in result.evaluations if e.generation == 0)
    assert result.top(1)[0].score > initial_best + 0.1
    assert result.population[0][1] == result.top(1)[0].score
    assert result.generations >= 1
