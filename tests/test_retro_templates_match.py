"""Templates matched by behaviour (issue 23): canonical keys, matching onto a vocabulary by key
and by application, cleaning of training data, fine-tuning on re-extracted templates, and the
ORD family split.

The three USPTO-50k test reactions below (rows 9, 27 and 36 of reaction_templates_50k_test.csv)
have a recorded template (``RetroTemplate``) whose string differs from the one the installed
rdchiral extracts (``NEW``); both do the same thing to the reaction. Row 9 differs only in the
order atoms and map numbers are written (same canonical key); rows 27 and 36 are extracted with
a different extent (different keys), and only applying them shows that they agree.
"""

from __future__ import annotations

import pytest
import torch

from selfsup.chem.retro.core.reactions import (
    BulkReport,
    Reaction,
    extract_retro_template,
    template_reproduces,
)
from selfsup.chem.retro.models.mlp import MLPSingleStepModel, TemplateMLP
from selfsup.chem.retro.training.fine_tune import fine_tune
from selfsup.chem.retro.training.template_identity import (
    TemplateMatcher,
    agreement,
    canonical_template,
    filter_reproducing,
    template_keys,
)
from selfsup.chem.retro.training.templates_data import (
    build_vocabulary,
    prepare_from_records,
    prepare_uspto50k,
    read_reaction_table,
    write_reaction_table,
)
from selfsup.chem.retro.workflows.ord_split import (
    load_ord_split,
    mapped_main_reaction,
    reaction_families,
    split_families,
)
from selfsup.errors import DataNotFoundError, InputError

RXN9 = (
    "[CH3:1][c:2]1[cH:3][c:4](/[CH:5]=[CH:6]/[C:7]([F:8])([F:9])[F:10])[cH:11][cH:12][c:13]1"
    "[C:14](=[O:15])[NH:16][c:17]1[cH:18][cH:19][c:20]2[s:21][c:22]([CH:23]([CH3:24])[OH:25])"
    "[n:26][c:27]2[cH:28]1>>[CH3:1][c:2]1[cH:3][c:4](/[CH:5]=[CH:6]/[C:7]([F:8])([F:9])[F:10])"
    "[cH:11][cH:12][c:13]1[C:14](=[O:15])[NH:16][c:17]1[cH:18][cH:19][c:20]2[s:21][c:22]"
    "([C:23]([CH3:24])=[O:25])[n:26][c:27]2[cH:28]1"
)
REC9 = ("[#16;a:1]:[c:2](:[#7;a:3])-[C;H0;D3;+0:4](-[C;D1;H3:5])=[O;H0;D1;+0:6]>>"
        "[#16;a:1]:[c:2](:[#7;a:3])-[CH;D3;+0:4](-[C;D1;H3:5])-[OH;D1;+0:6]")
NEW9 = ("[#16;a:1]:[c:2](-[C;H0;D3;+0:3](-[C;D1;H3:4])=[O;H0;D1;+0:5]):[#7;a:6]>>"
        "[#16;a:1]:[c:2](-[CH;D3;+0:3](-[C;D1;H3:4])-[OH;D1;+0:5]):[#7;a:6]")
RXN27 = (
    "Br[c:1]1[n:2][cH:3][c:4]([NH2:5])[c:6](-[c:7]2[cH:8][c:9](-[c:10]3[cH:11][cH:12][c:13]"
    "([CH2:14][N:15]4[CH2:16][CH2:17][CH2:18][CH2:19][CH2:20]4)[cH:21][cH:22]3)[cH:23][n:24]"
    "[c:25]2[F:26])[cH:27]1.[CH:28]#[C:29][Si:30]([CH3:31])([CH3:32])[CH3:33]>>[c:1]1([C:28]#"
    "[C:29][Si:30]([CH3:31])([CH3:32])[CH3:33])[n:2][cH:3][c:4]([NH2:5])[c:6](-[c:7]2[cH:8]"
    "[c:9](-[c:10]3[cH:11][cH:12][c:13]([CH2:14][N:15]4[CH2:16][CH2:17][CH2:18][CH2:19][CH2:20]"
    "4)[cH:21][cH:22]3)[cH:23][n:24][c:25]2[F:26])[cH:27]1"
)
REC27 = ("[#7;a:2]:[c;H0;D3;+0:1](:[c:3])-[C;H0;D2;+0:9]#[C:8]-[#14:5](-[C;D1;H3:4])"
         "(-[C;D1;H3:6])-[C;D1;H3:7]>>Br-[c;H0;D3;+0:1](:[#7;a:2]):[c:3].[C;D1;H3:4]-[#14:5]"
         "(-[C;D1;H3:6])(-[C;D1;H3:7])-[C:8]#[CH;D1;+0:9]")
NEW27 = ("[#7;a:2]:[c;H0;D3;+0:1](-[C;H0;D2;+0:5]#[C:4]):[c:3]>>"
         "Br-[c;H0;D3;+0:1](:[#7;a:2]):[c:3].[C:4]#[CH;D1;+0:5]")
RXN36 = (
    "O=[N+:1]([O-])[c:2]1[c:3]([F:4])[c:5]([Br:6])[cH:7][c:8]([C:9]([O:10][CH3:11])=[O:12])"
    "[c:13]1[O:14][CH3:15]>>[NH2:1][c:2]1[c:3]([F:4])[c:5]([Br:6])[cH:7][c:8]([C:9]([O:10]"
    "[CH3:11])=[O:12])[c:13]1[O:14][CH3:15]"
)
REC36 = ("[C;D1;H3:8]-[#8:7]-[C:5](=[O;D1;H0:6])-[c:4]1:[c:3]:[c:2](-[NH2;D1;+0:1]):[c:11]:"
         "[c:10]:[c:9]:1>>O=[N+;H0;D3:1](-[O-])-[c:2]1:[c:3]:[c:4](-[C:5](=[O;D1;H0:6])-[#8:7]"
         "-[C;D1;H3:8]):[c:9]:[c:10]:[c:11]:1")
NEW36 = "[NH2;D1;+0:1]-[c:2]>>O=[N+;H0;D3:1](-[O-])-[c:2]"
# an unrelated template (amide coupling), and the thiazole reduction of row 11's kind (pyrazine)
AMIDE_T = ("[C:1]-[C;H0;D3;+0:2](=[O;D1;H0:3])-[NH;D2;+0:4]-[C:5]>>"
           "O-[C;H0;D3;+0:2](-[C:1])=[O;D1;H0:3].[NH2;D1;+0:4]-[C:5]")
OTHER11 = ("[#7;a:1]:[c:2](:[c:3]:[#7;a:4])-[C;H0;D3;+0:5](-[C;D1;H3:6])=[O;H0;D1;+0:7]>>"
           "[#7;a:1]:[c:2](:[c:3]:[#7;a:4])-[CH;D3;+0:5](-[C;D1;H3:6])-[OH;D1;+0:7]")


# ---------------------------------------------------------------------------------- canonical key


def test_raw_strings_differ_behaviour_agrees_on_uspto50k_rows():
    for rxn_text, rec, new in ((RXN9, REC9, NEW9), (RXN27, REC27, NEW27), (RXN36, REC36, NEW36)):
        rxn = Reaction.from_smiles(rxn_text)
        assert rec != new
        assert template_reproduces(rec, rxn) and template_reproduces(new, rxn)
        # the installed rdchiral's extraction is NEW up to spelling (same canonical key)
        assert canonical_template(extract_retro_template(rxn)) == canonical_template(new)
    assert canonical_template(REC9) == canonical_template(NEW9) is not None
    assert canonical_template(REC27) != canonical_template(NEW27)  # different extents
    assert canonical_template(REC36) != canonical_template(NEW36)
    assert canonical_template(REC9) != canonical_template(OTHER11)  # thiazole vs pyrazine


def test_canonical_key_ignores_fragment_order_and_map_numbers_but_not_chemistry():
    a = "[C:1]-[C;H0;D3;+0:2](=[O;D1;H0:3])-[NH;D2;+0:4]-[C:5]>>O-[C;H0;D3;+0:2](-[C:1])=[O;D1;H0:3].[NH2;D1;+0:4]-[C:5]"  # noqa: E501
    b = "[C:9]-[NH;D2;+0:7]-[C;H0;D3;+0:3](=[O;D1;H0:1])-[C:2]>>[NH2;D1;+0:7]-[C:9].[C:2]-[C;H0;D3;+0:3](-O)=[O;D1;H0:1]"  # noqa: E501
    assert a == AMIDE_T and canonical_template(a) == canonical_template(b)
    # the leaving group moved to the other carbonyl partner: another template
    c = "[C:1]-[C;H0;D3;+0:2](=[O;D1;H0:3])-[NH;D2;+0:4]-[C:5]>>Cl-[C;H0;D3;+0:2](-[C:1])=[O;D1;H0:3].[NH2;D1;+0:4]-[C:5]"  # noqa: E501
    assert canonical_template(c) != canonical_template(a)
    # the same atoms with the map correspondence swapped between the two carbons
    d = "[C:1]-[C;H0;D3;+0:2](=[O;D1;H0:3])-[NH;D2;+0:4]-[C:5]>>O-[C;H0;D3;+0:2](-[C:5])=[O;D1;H0:3].[NH2;D1;+0:4]-[C:1]"  # noqa: E501
    assert canonical_template(d) != canonical_template(a)
    assert len(canonical_template(a)) == 64


def test_canonical_key_keeps_stereo_marks_relative_to_the_pattern():
    r = "[C;H0;D3;+0:1](-[O:5])>>Cl-[C;H0;D3;+0:1].[O:5]"
    base = "[C@H;D3;+0:1](-[F;D1;H0:2])(-[Cl;D1;H0:3])-[O;D2;+0:4]-[C:5]>>O-[C@H;D3;+0:1](-[F;D1;H0:2])-[Cl;D1;H0:3].[C:5]-[OH;D1;+0:4]"  # noqa: E501
    flipped = base.replace("[C@H;D3;+0:1](-[F;D1;H0:2])(-[Cl", "[C@@H;D3;+0:1](-[F;D1;H0:2])(-[Cl")
    # the same centre written with two neighbours swapped and the tag flipped: same template
    swapped = base.replace("[C@H;D3;+0:1](-[F;D1;H0:2])(-[Cl;D1;H0:3])",
                           "[C@@H;D3;+0:1](-[Cl;D1;H0:3])(-[F;D1;H0:2])")
    k = canonical_template(base)
    assert k is not None and canonical_template(r) is not None
    assert canonical_template(flipped) != k
    assert canonical_template(swapped) == k
    # a directional bond read from the other end is the same bond
    e1 = "[F:1]/[CH;D2;+0:2]=[CH;D2;+0:3]/[Cl:4]>>[F:1]-[C:2]#[C:3]-[Cl:4]"
    e2 = "[Cl:4]\\[CH;D2;+0:3]=[CH;D2;+0:2]\\[F:1]>>[F:1]-[C:2]#[C:3]-[Cl:4]"
    e3 = "[F:1]/[CH;D2;+0:2]=[CH;D2;+0:3]\\[Cl:4]>>[F:1]-[C:2]#[C:3]-[Cl:4]"
    assert canonical_template(e1) == canonical_template(e2) != canonical_template(e3)
    # a symmetric pattern (F at both ends): an equivalent spelling may get another key (a miss,
    # never a false match)
    s1 = "[F:1]/[CH;D2;+0:2]=[CH;D2;+0:3]/[F:4]>>[F:1]-[C:2]#[C:3]-[F:4]"
    s3 = "[F:1]/[CH;D2;+0:2]=[CH;D2;+0:3]\\[F:4]>>[F:1]-[C:2]#[C:3]-[F:4]"
    assert canonical_template(s1) != canonical_template(s3)


@pytest.mark.parametrize("bad", ["", "CC", "C>>", "[C:1]>>[C:2]", "[C:1][C:1]>>[C:1]", "Q>>C", 5])
def test_no_canonical_key_for_malformed_or_inconsistent_templates(bad):
    assert canonical_template(bad) is None


def test_template_keys_fall_back_to_the_raw_string():
    keys = template_keys([REC9, NEW9, "nonsense>>x"])
    assert keys[0] == keys[1] and keys[2] == "raw:nonsense>>x"


# ---------------------------------------------------------------------------------- matching


def test_matcher_by_string_key_candidates_and_scan():
    vocab = [AMIDE_T, OTHER11, REC27, REC9, REC36]
    m = TemplateMatcher(vocab)
    assert m.lookup(REC9) == (3, "string")
    assert m.lookup(NEW9) == (3, "key")
    assert m.lookup(NEW27) == (-1, "none")
    rxn27 = Reaction.from_smiles(RXN27)
    assert m.match(rxn27, NEW27, candidates=[0, 2]) .index == 2
    res = m.match(rxn27, NEW27, candidates=[0, 2])
    assert (res.how, res.n_applied) == ("candidates", 2)
    res = m.match(rxn27, NEW27, candidates=[1])
    assert (res.index, res.how) == (2, "scan")
    # the scan applies only templates whose product pattern matches (REC27 alone here)
    assert res.n_applied == 2
    assert m.match(rxn27, NEW27, candidates=[1], scan=False).index == -1
    rxn36 = Reaction.from_smiles(RXN36)
    assert m.match(rxn36, NEW36).index == 4
    # reproducing() lists every template that gives the reactants back
    assert m.reproducing(rxn36, scan=True, first=False)[0] == [4]


def test_filter_reproducing_drops_and_counts():
    items = [(Reaction.from_smiles(RXN9), NEW9), (Reaction.from_smiles(RXN36), REC9),
             (Reaction.from_smiles(RXN27), "not a template")]
    report = BulkReport()
    keep, rep = filter_reproducing(items, report, indices=[10, 11, 12])
    assert keep == [0] and rep is report
    assert report.skipped == {"template_not_reproducing": 2}
    assert [i for i, _ in report.examples] == [11, 12]
    assert not report.examples[0][1].startswith("rec-")
    # labels (record ids) start each skip message, so a skipped record can be looked up
    labelled = BulkReport()
    filter_reproducing(items, labelled, indices=[10, 11, 12], labels=["rec-a", "rec-b", "rec-c"])
    assert [m.split(":")[0] for _, m in labelled.examples] == ["rec-b", "rec-c"]


def _model(templates: list[str]) -> MLPSingleStepModel:
    torch.manual_seed(0)
    return MLPSingleStepModel(TemplateMLP(len(templates), 2048, 16, 0.0), templates)


def test_fine_tune_labels_re_extracted_templates_by_behaviour():
    vocab = [AMIDE_T, OTHER11, REC27, REC9, REC36]
    model = _model(vocab)
    # a plain amide: its own template ([C;D1;H3:5]) is not AMIDE_T's string or key, but
    # AMIDE_T gives its reactants back
    amide = Reaction.from_smiles(
        "[CH3:1][C:2](=[O:3])O.[NH2:5][CH3:6]>>[CH3:1][C:2](=[O:3])[NH:5][CH3:6]")
    items = [Reaction.from_smiles(RXN9), Reaction.from_smiles(RXN27), Reaction.from_smiles(RXN36),
             (Reaction.from_smiles(RXN9).product, NEW9),  # a string: found by its key
             (Reaction.from_smiles(RXN27).product, NEW27),  # a string alone cannot be applied
             Reaction(product="CCO", reactants=("CC=O",))]  # no mapped text: no template
    out = fine_tune(model, items + [amide], epochs=1, batch_size=4, seed=0, match_top_k=2)
    assert out["n_examples"] == 5
    assert out["skipped"] == {"unknown_template": 1, "no_template": 1}
    assert sum(out["matched"].values()) == 5 and out["matched"]["key"] == 2
    assert out["matched"].get("candidates", 0) + out["matched"].get("scan", 0) == 3
    # without the application steps only the string and key matches remain
    out = fine_tune(_model(vocab), items + [amide], epochs=1, batch_size=4, match_top_k=0,
                    match_scan=False)
    assert out["matched"] == {"key": 2} and out["skipped"]["unknown_template"] == 4


def test_fine_tune_skips_reactions_whose_template_does_not_reproduce(monkeypatch):
    from selfsup.chem.retro.training import fine_tune as ft

    model = _model([REC9, REC36])
    monkeypatch.setattr(ft, "extract_retro_template", lambda rxn: REC9)  # wrong for RXN36
    out = fine_tune(model, [Reaction.from_smiles(RXN9), Reaction.from_smiles(RXN36)] * 2,
                    epochs=1, batch_size=4)
    assert out["skipped"] == {"template_not_reproducing": 2}
    assert out["n_examples"] == 2 and out["matched"] == {"string": 2}


# ---------------------------------------------------------------------------------- data


def _rows(pairs):
    return [{"id": f"r{i}", "reaction": r, "template": t} for i, (r, t) in enumerate(pairs)]


def test_clean_preparation_merges_spellings_drops_non_reproducing_keeps_test():
    train = _rows([(RXN9, REC9), (RXN9, NEW9), (RXN27, REC27), (RXN36, REC9)])
    valid = _rows([(RXN9, NEW9), (RXN36, REC9)])
    test = _rows([(RXN9, NEW9), (RXN36, REC9), (RXN27, NEW27)])
    recs = {"train": train, "valid": valid, "test": test}
    plain, _ = prepare_from_records(recs, n_bits=64)
    assert plain.n_templates == 3 and len(plain["train"]) == 4
    data, report = prepare_from_records(recs, n_bits=64, clean=True)
    assert data.templates == [NEW9, REC27]  # REC9, NEW9: one class (count tie: smaller string)
    assert data.params["clean"] is True
    assert report["splits"]["train"]["skipped"] == {"template_not_reproducing": 1}
    assert report["splits"]["valid"]["skipped"] == {"template_not_reproducing": 1}
    assert data["train"].labels.tolist() == [0, 0, 1]
    assert data["valid"].labels.tolist() == [0]
    assert len(data["test"]) == 3  # kept whole; labelled by key
    assert data["test"].labels.tolist() == [0, 0, -1]
    assert build_vocabulary([NEW9, REC9, NEW9], by_key=True) == [NEW9]


def test_reaction_table_round_trip_and_extra_train(tmp_path):
    path = write_reaction_table(tmp_path / "t.tsv", _rows([(RXN9, NEW9), (RXN27, "")]))
    with open(path, "a") as fh:
        fh.write("only-one-cell\n")
    rows, bad = read_reaction_table(path)
    assert bad == 1 and [r["id"] for r in rows] == ["r0", "r1"] and rows[1]["template"] == ""
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    with pytest.raises(InputError, match="header"):
        read_reaction_table(tmp_path / "bad.tsv")
    with pytest.raises(InputError, match="tab"):
        write_reaction_table(tmp_path / "x.tsv", [{"id": "a\tb", "reaction": RXN9}])

    root = tmp_path / "uspto"
    root.mkdir()
    for split, pairs in (("train", [(RXN36, REC36)]), ("valid", [(RXN9, REC9)]),
                         ("test", [(RXN27, REC27)])):
        lines = ["RxnSmilesClean\tRetroTemplate\tid"] + [f"{r}\t{t}\t{split}{i}"
                                                       for i, (r, t) in enumerate(pairs)]
        (root / f"reaction_templates_50k_{split}.csv").write_text("\n".join(lines) + "\n")
    base, _ = prepare_uspto50k(root, tmp_path / "cache", n_bits=64)
    data, report = prepare_uspto50k(root, tmp_path / "cache", n_bits=64, clean=True,
                                    extra_train=[path])
    assert len(base["train"]) == 1 and base["valid"].labels.tolist() == [-1]
    # RXN27's empty template is re-extracted; the bad line is a malformed row
    assert data["train"].ids == ["train0", "r0", "r1"]
    assert report["splits"]["train"]["skipped"] == {"malformed_row": 1}
    assert data["valid"].labels.tolist() == [data.templates.index(NEW9)]
    assert data["test"].labels.tolist() == [-1]  # REC27's key is not NEW27's
    again, rep2 = prepare_uspto50k(root, tmp_path / "cache", n_bits=64, clean=True,
                                   extra_train=[path])
    assert rep2["cache"]["hit"] and again.templates == data.templates
    with pytest.raises(DataNotFoundError, match="ord_split"):
        prepare_uspto50k(root, tmp_path / "cache", n_bits=64, extra_train=[tmp_path / "no.tsv"])


# ---------------------------------------------------------------------------------- ORD split


def _r(product: str, *reactants: str) -> Reaction:
    return Reaction.create(product, reactants)


def test_families_join_chains_and_shared_products_not_shared_reactants():
    rxns = [_r("CCOC(C)=O", "CCO", "CC(=O)O"),  # 0
            _r("CCOC(C)=O", "CCO", "CC(=O)Cl"),  # 1: same product as 0
            _r("CC(=O)O", "CC=O"),  # 2: makes a reactant of 0
            _r("CCN", "CC=O", "N"),  # 3: shares only a reactant with 2
            _r("CCNC(C)=O", "CCN", "CC(=O)Cl")]  # 4: uses the product of 3
    assert reaction_families(rxns) == [0, 0, 0, 1, 1]


def test_split_families_holds_whole_families_out_seeded_and_forced():
    rxns, ids = [], []
    for k in range(40):  # 20 two-step chains and 20 single reactions
        a, b = "C" * (k + 2) + "O", "C" * (k + 2) + "N"
        if k < 20:
            rxns += [_r(a + "C(=O)C", a, "CC(=O)Cl"), _r(a, "C" * (k + 2) + "=O")]
            ids += [f"c{k}a", f"c{k}b"]
        else:
            rxns.append(_r(b + "C(C)=O", b, "CC(=O)Cl"))
            ids.append(f"s{k}")
    groups, rep = split_families(rxns, ids, seed=3, p_chain=0.5, p_single=0.2)
    again, _ = split_families(rxns, ids, seed=3, p_chain=0.5, p_single=0.2)
    assert groups == again and split_families(rxns, ids, seed=4)[0] != groups
    fam = reaction_families(rxns)
    for f in set(fam):
        assert len({g for g, ff in zip(groups, fam) if ff == f}) == 1  # whole families
    assert rep["n_families"] == 40 and rep["n_chain_families"] == 20
    assert rep["family_size_distribution"] == {"1": 20, "2": 20}
    assert 0 < rep["n_heldout_chain_families"] < 20
    assert rep["n_reactions_by_group"]["heldout"] == groups.count("heldout")
    all_held, _ = split_families(rxns, ids, p_chain=1.0, p_single=1.0,
                                 train_products={rxns[0].product})
    assert all_held[:2] == ["train", "train"] and set(all_held[2:]) == {"heldout"}
    with pytest.raises(InputError):
        split_families(rxns, ids[:3])
    with pytest.raises(InputError):
        split_families(rxns, ids, p_chain=2.0)


def test_mapped_main_reaction_keeps_mapped_donors_and_the_main_product():
    rec = {"mapped": True, "reaction":
           "[CH3:1][C:2](=[O:3])[OH:4].[NH2:5][CH3:6].O>CCO>[CH3:1][C:2](=[O:3])[NH:5][CH3:6].[OH2:4]"}
    text = mapped_main_reaction(rec)
    rxn = Reaction.from_smiles(text)
    assert rxn.product == "CNC(C)=O" and rxn.reactants == ("CC(=O)O", "CN")
    assert ":" in text.split(">>")[1]
    assert mapped_main_reaction({"mapped": False, "reaction": "CC>>CC"}) is None


def test_agreement_counts_strings_keys_and_vocabulary_placement():
    rows = [{"reaction": RXN9, "template": REC9}, {"reaction": RXN27, "template": REC27},
            {"reaction": RXN36, "template": REC36}, {"reaction": "CC>>CC", "template": REC9}]
    out = agreement(rows)
    assert out == {"n": 3, "no_template": 1, "same_string": 0, "same_key": 1,
                   "same_key_same_outcomes": 1,
                   "recorded_reproduces": 3, "reextracted_reproduces": 3}
    out = agreement(rows, _model([AMIDE_T, REC27, REC9, REC36]), top_k=1)
    assert out["vocab_key"] == 1 and out["vocab_candidates"] + out["vocab_scan"] == 2
    assert out["application_templates_applied_mean"] >= 1


def test_load_ord_split_reads_tables_and_names_the_command(tmp_path):
    write_reaction_table(tmp_path / "heldout.tsv", _rows([(RXN9, NEW9)]))
    held = load_ord_split(tmp_path, "heldout")
    assert [h.id for h in held] == ["r0"] and held[0].template == NEW9
    assert held[0].reaction == Reaction.from_smiles(RXN9)
    with pytest.raises(InputError, match="workflows.ord_split"):
        load_ord_split(tmp_path, "train")
    with pytest.raises(InputError, match="group"):
        load_ord_split(tmp_path, "test")
