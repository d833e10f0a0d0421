"""Reactions, rdchiral template extraction/application and the template model base."""

from __future__ import annotations

import numpy as np
import pytest

from selfsup.chem.molecules import canonical_smiles
from selfsup.chem.retro.core.reactions import (
    Reaction,
    apply_retro_template,
    apply_templates,
    extract_retro_template,
    extract_templates,
    parse_reaction_smiles,
    parse_reactions,
    template_reproduces,
)
from selfsup.chem.retro.core.single_step import TemplateModel
from selfsup.errors import InputError

# Atom-mapped reactions written by hand (leaving groups unmapped, as in USPTO).
AMIDE = (
    "[CH3:1][C:2](=[O:3])O.[NH2:5][CH2:6][c:7]1[cH:8][cH:9][cH:10][cH:11][cH:12]1"
    ">>[CH3:1][C:2](=[O:3])[NH:5][CH2:6][c:7]1[cH:8][cH:9][cH:10][cH:11][cH:12]1"
)
ESTER_HYDROLYSIS = "[CH3:1][C:2](=[O:3])[O:4]CC>O>[CH3:1][C:2](=[O:3])[OH:4]"
SUZUKI = (
    "Br[c:1]1[cH:2][cH:3][cH:4][cH:5][cH:6]1.OB(O)[c:7]1[cH:8][cH:9][c:10]([CH3:13])[cH:11][cH:12]1"
    ">>[c:1]1(-[c:7]2[cH:8][cH:9][c:10]([CH3:13])[cH:11][cH:12]2)[cH:2][cH:3][cH:4][cH:5][cH:6]1"
)


def test_reaction_parsing_canonical_and_key():
    rxn = Reaction.from_smiles(AMIDE)
    assert rxn.product == "CC(=O)NCc1ccccc1"
    assert rxn.reactants == ("CC(=O)O", "NCc1ccccc1")
    assert rxn.mapped == AMIDE
    same = Reaction.create("c1ccc(CNC(C)=O)cc1", ["c1ccccc1CN", "OC(C)=O"])
    assert same == rxn and same.key == rxn.key
    assert rxn.key == ("CC(=O)NCc1ccccc1", frozenset({"CC(=O)O", "NCc1ccccc1"}))
    ester = Reaction.from_smiles(ESTER_HYDROLYSIS)
    assert ester.reagents == "O" and ester.product == "CC(=O)O"
    assert parse_reaction_smiles("CC>O>CO") == ("CC", "O", "CO")


@pytest.mark.parametrize("bad", ["CCO", "CC>>", ">>CC", "C>>C>>C", "CC>>C1CC", "XX>>CC", 12])
def test_malformed_reaction_raises_input_error(bad):
    with pytest.raises(InputError):
        Reaction.from_smiles(bad)


def test_parse_reactions_skips_and_counts():
    rxns, report = parse_reactions([AMIDE, "CC>>", SUZUKI, "Q>>C"])
    assert [r.product for r in rxns] == ["CC(=O)NCc1ccccc1", "Cc1ccc(-c2ccccc2)cc1"]
    assert (report.n_total, report.n_ok, report.n_skipped) == (4, 2, 2)
    assert report.skipped == {"malformed_reaction": 2}
    assert [i for i, _ in report.examples] == [1, 3]


def test_amide_template_round_trip():
    template = extract_retro_template(AMIDE)
    assert template.count(">>") == 1
    # Regenerates the recorded reactants ...
    assert apply_retro_template(template, "CC(=O)NCc1ccccc1") == [("CC(=O)O", "NCc1ccccc1")]
    # ... and generalises to another N-alkyl acetamide written non-canonically.
    assert apply_retro_template(template, "O=C(C)NC1CCCCC1") == [("CC(=O)O", "NC1CCCCC1")]
    # No amide: no outcome.
    assert apply_retro_template(template, "CCO") == []


def test_ester_hydrolysis_template():
    template = extract_retro_template(Reaction.from_smiles(ESTER_HYDROLYSIS))
    assert apply_retro_template(template, "CC(=O)O") == [("CCOC(C)=O",)]


def test_suzuki_template_gives_both_disconnections():
    template = extract_retro_template(SUZUKI)
    outcomes = apply_retro_template(template, "Cc1ccc(-c2ccccc2)cc1")
    assert outcomes == [  # sorted, whatever order rdchiral's set gave them in
        ("Brc1ccccc1", "Cc1ccc(B(O)O)cc1"),
        ("Cc1ccc(Br)cc1", "OB(O)c1ccccc1"),
    ]


def test_template_outcomes_do_not_depend_on_the_string_hash_seed():
    import os
    import subprocess
    import sys

    code = ("from selfsup.chem.retro.core.reactions import apply_retro_template, "
            "extract_retro_template; import sys; t = extract_retro_template(sys.argv[1]); "
            "print(apply_retro_template(t, 'Cc1ccc(-c2ccccc2)c(C)c1'))")
    outs = {subprocess.run([sys.executable, "-c", code, SUZUKI], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in (1, 2, 3)}
    assert len(outs) == 1 and "Br" in outs.pop()


def test_bad_templates_and_reactions_reported_cleanly():
    with pytest.raises(InputError, match="no atom maps"):
        extract_retro_template("CCO>>CC")
    with pytest.raises(InputError, match="no template"):
        extract_retro_template("[CH3:1][OH:2]>>[CH3:1][OH:2]")
    with pytest.raises(InputError, match="malformed retro template"):
        apply_retro_template("not a template", "CCO")
    with pytest.raises(InputError, match="cannot compile"):
        apply_retro_template("[C:1]>>", "CCO")
    with pytest.raises(InputError):
        apply_retro_template(extract_retro_template(AMIDE), "not a smiles")
    with pytest.raises(InputError):
        extract_retro_template(Reaction.create("CCO", "CC.O"))  # no mapped text

    pairs, report = extract_templates([AMIDE, "C>>", "CCO>>CC", SUZUKI])
    assert [r.product for r, _ in pairs] == ["CC(=O)NCc1ccccc1", "Cc1ccc(-c2ccccc2)cc1"]
    assert report.skipped == {"malformed_reaction": 1, "no_template": 1}
    assert report.as_dict()["n_skipped"] == 2

    outcomes, report = apply_templates(["bad", extract_retro_template(AMIDE)], "CC(=O)NC1CCCCC1")
    assert outcomes == [[], [("CC(=O)O", "NC1CCCCC1")]]
    assert (report.n_ok, report.skipped) == (1, {"bad_template": 1})


def test_canonical_smiles_for_reactions_clears_maps_and_raises():
    assert canonical_smiles("[CH3:1][OH:2]", remove_atom_map=True, strict=True) == "CO"
    assert canonical_smiles("[CH3:1][OH:2]") == "[CH3:1][OH:2]"  # maps kept unless asked
    assert canonical_smiles("OCC", strict=True) == "CCO"
    with pytest.raises(InputError, match="cannot parse SMILES 'C1CC'"):
        canonical_smiles("C1CC", strict=True)
    with pytest.raises(InputError, match="empty or non-string"):
        canonical_smiles("  ", strict=True)
    assert canonical_smiles("C1CC") is None and canonical_smiles(None) is None
    # one cache for every option set, and it can be emptied (the retro speed benchmark does)
    canonical_smiles.cache_clear()
    assert canonical_smiles("[CH3:1][OH:2]", remove_atom_map=True) == "CO"


class _FixedScores(TemplateModel):
    def __init__(self, templates, scores, **kw):
        super().__init__(templates, **kw)
        self.scores = np.asarray(scores, dtype=float)

    def _template_scores(self, products):
        return np.tile(self.scores, (len(products), 1))


def test_template_model_applies_top_k_merges_and_renormalises():
    amide, suzuki = extract_retro_template(AMIDE), extract_retro_template(SUZUKI)
    # The amide template twice (identical outcomes are merged), a broken one, and Suzuki.
    model = _FixedScores([amide, "garbage>>x", amide, suzuki], [0.3, 0.25, 0.28, 0.17])
    (props,) = model.propose(["O=C(C)NC1CCCCC1"], top_k=3)
    assert len(props) == 1
    assert props[0].reactants == ("CC(=O)O", "NC1CCCCC1")
    assert props[0].probability == pytest.approx(1.0)
    assert props[0].metadata["template_id"] == 0 and props[0].metadata["n_merged"] == 2
    assert model.n_template_errors == 1

    (props,) = model.propose(["Cc1ccc(-c2ccccc2)cc1"], top_k=4)
    # Suzuki gives two sets at 0.17 each; renormalised to 0.5 each.
    assert sorted(p.probability for p in props) == pytest.approx([0.5, 0.5])
    assert {p.metadata["template_id"] for p in props} == {3}
    # top_k=1 keeps only the amide template, which does not match the biaryl.
    assert model.propose(["Cc1ccc(-c2ccccc2)cc1"], top_k=1) == [[]]


def test_template_reproduces_judges_by_outcome():
    amide = Reaction.from_smiles(AMIDE)
    template = extract_retro_template(amide)
    assert template_reproduces(template, amide)
    # The same template on another acetamide whose known reactants it does give.
    other = Reaction.create("O=C(C)NC1CCCCC1", ["CC(=O)O", "NC1CCCCC1"])
    assert template_reproduces(template, other)
    # Same product, other recorded reactants (an acid chloride): not reproduced.
    chloride = Reaction.create("CC(=O)NCc1ccccc1", ["CC(=O)Cl", "NCc1ccccc1"])
    assert not template_reproduces(template, chloride)
    # A template that does not compile reproduces nothing instead of raising.
    assert not template_reproduces("not a template", amide)
