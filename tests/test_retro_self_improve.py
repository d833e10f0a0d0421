"""Self-improvement: collecting route reactions, the confidence filter, and a tiny end-to-end run.

The end-to-end test uses a tiny USPTO-50k-like set (atom-mapped reactions in the real file
layout, templates extracted by rdchiral) with a two-step chain in train
(Boc-aminoethanol -> aminoethanol -> N-acetyl aminoethanol), and a tiny template MLP trained on
it first.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from selfsup.chem.retro.core.reactions import extract_retro_template
from selfsup.chem.retro.core.single_step import FixedReactionModel
from selfsup.chem.retro.models.mlp import MLPSingleStepModel
from selfsup.chem.retro.training.train_single_step import train_single_step
from selfsup.chem.retro.workflows.self_improve import (
    RouteReaction,
    collect_route_reactions,
    confidence_filter,
    self_improve,
)
from selfsup.errors import ConfigError, InputError

RXN = {
    "boc": "CC(C)(C)OC(=O)[NH:1][CH2:2][CH2:3][OH:4]>>[NH2:1][CH2:2][CH2:3][OH:4]",
    "acetyl": "[CH3:1][C:2](=[O:3])O.[NH2:5][CH2:6][CH2:7][OH:8]"
    ">>[CH3:1][C:2](=[O:3])[NH:5][CH2:6][CH2:7][OH:8]",
    "amide": "[CH3:1][C:2](=[O:3])O.[NH2:5][CH2:6][c:7]1[cH:8][cH:9][cH:10][cH:11][cH:12]1"
    ">>[CH3:1][C:2](=[O:3])[NH:5][CH2:6][c:7]1[cH:8][cH:9][cH:10][cH:11][cH:12]1",
    "ester": "C[O:1][C:2](=[O:3])[c:4]1[cH:5][cH:6][c:7]([CH3:10])[cH:8][cH:9]1"
    ">>[OH:1][C:2](=[O:3])[c:4]1[cH:5][cH:6][c:7]([CH3:10])[cH:8][cH:9]1",
    "boc2": "CC(C)(C)OC(=O)[N:1]1[CH2:2][CH2:3][CH:4]([OH:7])[CH2:5][CH2:6]1"
    ">>[NH:1]1[CH2:2][CH2:3][CH:4]([OH:7])[CH2:5][CH2:6]1",
}
SPLITS = {"train": ["boc", "acetyl", "amide", "ester", "boc2"], "valid": ["amide", "boc"],
          "test": ["boc2", "ester"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("uspto_chain")
    for split, names in SPLITS.items():
        lines = ["RxnSmilesClean\tRetroTemplate\tid"]
        lines += [f"{RXN[n]}\t{extract_retro_template(RXN[n])}\t{n}" for n in names]
        (root / f"reaction_templates_50k_{split}.csv").write_text("\n".join(lines) + "\n")
    torch.set_num_threads(1)
    run, _ = train_single_step(None, [
        f"data.root={root}", f"data.cache_dir={root / 'cache'}",
        f"run_root={tmp_path_factory.mktemp('runs')}", "model.hidden=32", "model.dropout=0.0",
        "optim.lr=0.02", "optim.batch_size=8", "optim.epochs=40", "trainer.threads=1",
        "trainer.device=cpu", "eval.n_test=0", "eval.top_k=[1,5]"])
    return root, run.path / "model.pt"


def _si_overrides(root, model, tmp_path, **extra):
    base = {"model": str(model), "data.root": str(root), "data.cache_dir": str(root / "cache"),
            "run_root": str(tmp_path / "runs"), "n_iterations": 1, "targets.n": 0,
            "search.max_iterations": 10, "search.top_k": 5, "filter.min_probability": 0.5,
            "finetune.epochs": 2, "finetune.batch_size": 8, "finetune.replay": 0,
            "eval.n_test": 0,
            "eval.top_k": "[1,5]"}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_confidence_filter_top5_and_probability():
    table = {"CCCCO": [(("CCO", "CC"), 0.85)] + [((f"C{'C' * i}N",), 0.02) for i in range(6)]
             + [(("CCCCCl",), 0.01)],
             "CCCCN": [(("CCCl",), 0.55), (("CCNCC",), 0.45)]}
    ref = FixedReactionModel(table)
    rxns = [RouteReaction("CCCCO", ("CC", "CCO"), "t1"),      # rank 0, p 0.85: kept
            RouteReaction("CCCCO", ("CCCN",), "t2"),           # rank 2, p 0.02: low probability
            RouteReaction("CCCCO", ("CCCCCl",), "t3"),         # rank 7: not in the top 5
            RouteReaction("CCCCN", ("CCCl",), "t4"),           # rank 0, p 0.55 < 0.8
            RouteReaction("CCCCN", ("OCCO",), "t5")]           # not proposed at all
    kept, counts = confidence_filter(rxns, ref, rank=5, min_probability=0.8, top_k=50)
    assert [(k.template, k.ref_rank, k.ref_probability) for k in kept] == [("t1", 0, 0.85)]
    assert counts == {"n_in": 5, "n_kept": 1, "n_not_ranked": 2, "n_low_probability": 2}
    kept, _ = confidence_filter(rxns, ref, rank=5, min_probability=0.5)
    assert [k.template for k in kept] == ["t1", "t4"]
    kept, _ = confidence_filter(rxns, ref, rank=8, min_probability=0.0)
    assert [k.template for k in kept] == ["t1", "t2", "t3", "t4"]


def test_collect_route_reactions_from_records():
    route = {"smiles": "A", "reaction": {"metadata": {"template": "tA"}, "reactants": [
        {"smiles": "C"}, {"smiles": "B", "reaction": {"metadata": {"template": "tB"},
                                                      "reactants": [{"smiles": "D"}]}}]}}
    recs = [{"success": True, "best_route": route}, {"success": True, "best_route": route},
            {"success": False, "best_route": None}]
    got = collect_route_reactions(recs)
    assert [(r.product, r.reactants, r.template) for r in got] == [
        ("A", ("B", "C"), "tA"), ("B", ("D",), "tB")]


def test_self_improve_iteration_end_to_end(tiny, tmp_path):
    root, model = tiny
    run, res = self_improve(None, _si_overrides(root, model, tmp_path))
    it = res["iterations"][0]
    assert res["n_targets"] == 5  # every train product has a known train route
    # the model knows every train reaction: all 5 targets solved, 5 distinct route reactions
    # (the 2-step target reuses the Boc deprotection), all confidently ranked by the reference
    assert it["n_solved"] == 5 and it["n_route_reactions"] == 5
    assert it["n_kept"] == 5 and it["n_finetune_examples"] == 5
    assert res["onestep_after"]["top1"] >= res["onestep_before"]["top1"]
    d = run.path / "iterations" / "iter_1"
    assert MLPSingleStepModel.load(d / "model.pt").extra["iteration"] == 1
    rows = list(csv.DictReader((d / "reactions.csv").open()))
    assert len(rows) == it["n_kept"] and {r["source"] for r in rows} == {"route"}
    assert all(float(r["ref_probability"]) >= 0.5 and int(r["ref_rank"]) < 5 for r in rows)
    assert len((d / "plan.jsonl").read_text().splitlines()) == 5
    assert set(res["onestep_before"]) == {"top1", "top5", "n"}
    assert json.loads((run.path / "results.json").read_text())["mode"] == "self_improve"


def test_random_control_fine_tunes_on_random_train_reactions(tiny, tmp_path):
    root, model = tiny
    with pytest.raises(ConfigError, match="control_n_reactions"):
        self_improve(None, _si_overrides(root, model, tmp_path, mode="random_control"))
    run, res = self_improve(None, _si_overrides(root, model, tmp_path, mode="random_control",
                                                control_n_reactions=3, n_iterations=2))
    assert [r["n_finetune_examples"] for r in res["iterations"]] == [3, 3]
    for i in (1, 2):
        rows = list(csv.DictReader((run.path / "iterations" / f"iter_{i}" /
                                    "reactions.csv").open()))
        assert len(rows) == 3 and {r["source"] for r in rows} == {"random"}
    assert len(res["models"]) == 2


def test_replay_mixes_random_train_reactions_into_the_fine_tuning_set(tiny, tmp_path):
    root, model = tiny
    with pytest.raises(ConfigError, match="replay"):
        self_improve(None, _si_overrides(root, model, tmp_path, **{"finetune.replay": -1}))
    _, res = self_improve(None, _si_overrides(root, model, tmp_path,
                                              **{"finetune.replay": 0.6}))
    it = res["iterations"][0]
    # 5 kept route reactions + round(0.6 * 5) = 3 replayed train reactions
    assert it["n_kept"] == 5 and it["n_replay"] == 3 and it["n_finetune_examples"] == 8
    _, res = self_improve(None, _si_overrides(root, model, tmp_path, mode="random_control",
                                              control_n_reactions=2,
                                              **{"finetune.replay": 1.0}))
    assert res["iterations"][0]["n_replay"] == 2
    assert res["iterations"][0]["n_finetune_examples"] == 4


def test_select_on_valid_keeps_the_best_validation_epoch(tiny, tmp_path):
    root, model = tiny
    _, res = self_improve(None, _si_overrides(root, model, tmp_path,
                                              **{"finetune.select_on_valid": "true",
                                                 "finetune.epochs": 3}))
    it = res["iterations"][0]
    assert 0 <= it["selected_epoch"] <= 3
    assert it["valid_template_top1_after"] >= it["valid_template_top1_before"]


def test_fine_tune_selection_restores_the_starting_weights_when_nothing_is_better(tiny):
    import numpy as np

    from selfsup.chem.retro.training.fine_tune import fine_tune
    from selfsup.chem.retro.training.metrics import template_topk_accuracy

    _, model_path = tiny
    model = MLPSingleStepModel.load(model_path)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    prods = ["OCCN", "CC(=O)NCCO"]
    fps = np.ascontiguousarray(model.fingerprints(prods))
    labels = model.net(torch.as_tensor(fps)).argmax(1).numpy()  # the model's own answers: 100%
    assert template_topk_accuracy(model.net, fps, labels, (1,))["top1"] == 1.0
    wrong = [(p, model.templates[(int(lb) + 1) % len(model.templates)])
             for p, lb in zip(prods, labels)]  # fine-tuning on other templates only
    ft = fine_tune(model, wrong * 4, epochs=3, lr=0.05, batch_size=8, dropout=0.0,
                   select=(fps, labels))
    assert ft["selected_epoch"] == 0 and ft["select_top1"][0] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())


def test_forward_augment_keeps_confident_back_consistent_products():
    from selfsup.chem.retro.models.mlp import ForwardPrediction
    from selfsup.chem.retro.workflows.self_improve import forward_augment

    class Forward:  # reactants CC + CCO -> three candidate products
        def predict(self, sets, n_templates=10, top_k=10):
            assert sets == ["CC.CCO"]
            return [[ForwardPrediction("CCCCO", 0.95, 0),  # the recorded product: not new
                     ForwardPrediction("CCOCC", 0.9, 1),   # maps back top-1: added
                     ForwardPrediction("CCCOC", 0.85, 2),  # maps back only at rank 2
                     ForwardPrediction("OCCCC", 0.5, 3)]]  # p < 0.8

    backward = FixedReactionModel({
        "CCOCC": [(("CC", "CCO"), 0.7), (("CCCl",), 0.3)],
        "CCCOC": [(("CCCl",), 0.6), (("CC", "CCO"), 0.4)],
        "OCCCC": [(("CC", "CCO"), 0.9)]})
    kept = [RouteReaction("CCCCO", ("CC", "CCO"), "t1")]
    aug = forward_augment(kept, Forward(), backward, min_probability=0.8)
    assert [(a.product, a.reactants, a.source) for a in aug] == [
        ("CCOCC", ("CC", "CCO"), "forward")]


# ------------------------------------------------------------------ at scale: resume and counts


def test_not_top1_marks_reactions_the_model_does_not_rank_first():
    from selfsup.chem.retro.workflows.self_improve import not_top1

    model = FixedReactionModel({"CCCCO": [(("CC", "CCO"), 0.6), (("CCCCCl",), 0.4)],
                                "CCCCN": [(("CCCl",), 0.9)]})
    rxns = [RouteReaction("CCCCO", ("CC", "CCO"), "t1"),   # ranked first
            RouteReaction("CCCCO", ("CCCCCl",), "t2"),     # second
            RouteReaction("CCCCN", ("CCCl",), "t3"),       # first
            RouteReaction("OCCO", ("CO",), "t4")]          # no proposal at all
    assert not_top1(rxns, model) == [False, True, False, True]


def test_plan_resumable_after_a_kill_searches_only_the_rest(tmp_path):
    from selfsup.chem.retro.core.toy import toy_worlds
    from selfsup.chem.retro.workflows.plan import SearchSpec, make_model_factory, make_stock
    from selfsup.chem.retro.workflows.self_improve import plan_resumable

    worlds = toy_worlds()
    # the two toy targets, an intermediate of each, and a dead molecule (no reaction)
    targets = [worlds["dead_end"].target, "CCCCN", worlds["cycle"].target, "CC(C)N", "NCCN"]
    spec = SearchSpec(make_model_factory("toy:all"), make_stock("toy:all"), top_k=5,
                      max_iterations=20)
    whole, n_whole = plan_resumable(targets, spec, tmp_path / "whole.jsonl")
    assert n_whole == 5 and [r["success"] for r in whole] == [True, True, True, True, False]
    assert whole[0]["iterations"] == worlds["dead_end"].retro_star_0_iterations

    class Killed(Exception):
        pass

    seen = []

    def kill_after_two(rec):
        seen.append(rec["index"])
        if len(seen) == 2:
            raise Killed

    jsonl = tmp_path / "part.jsonl"
    with pytest.raises(Killed):
        plan_resumable(targets, spec, jsonl, on_record=kill_after_two)
    assert len(jsonl.read_text().splitlines()) == 2  # written before the kill
    with jsonl.open("a") as f:
        f.write('{"index": 4, "targ')  # a line cut by the kill
    again, n_new = plan_resumable(targets, spec, jsonl)
    assert n_new == 3
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in again]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in whole]
    # records of another target list at the same index are not taken as done
    _, n_new = plan_resumable(targets[::-1], spec, jsonl)
    assert n_new == 4  # index 2 holds the same target in both orders


class _Kill(BaseException):
    """Stands for a kill: not an Exception, so nothing in between catches it."""


def _kill_at_record(monkeypatch, n_records):
    """Make the self-improvement run stop as its ``n_records + 1``-th planning record is
    about to be written (counted over all iterations)."""
    import selfsup.chem.retro.workflows.self_improve as si

    real = si.append_jsonl
    count = [0]

    def append(path, obj):
        if count[0] == n_records:
            raise _Kill
        count[0] += 1
        real(path, obj)

    monkeypatch.setattr(si, "append_jsonl", append)
    return lambda: monkeypatch.setattr(si, "append_jsonl", real)


def _final_state(run_path, n_iterations):
    last = run_path / "iterations" / f"iter_{n_iterations}"
    model = MLPSingleStepModel.load(last / "model.pt")
    return ((last / "reactions.csv").read_text(),
            {k: v.clone() for k, v in model.net.state_dict().items()})


@pytest.mark.parametrize(("n_iterations", "kill_at"), [(1, 2), (2, 7)])
def test_resume_after_a_kill_mid_planning_matches_an_uninterrupted_run(
        tiny, tmp_path, monkeypatch, n_iterations, kill_at):
    from selfsup.chem.retro.workflows.self_improve import resume_self_improve
    from selfsup.runs import Run

    root, model = tiny
    over = _si_overrides(root, model, tmp_path, n_iterations=n_iterations,
                         **{"finetune.replay": 0.4})
    whole, res_whole = self_improve(None, over)
    # kill_at 2: during iteration 1 (5 targets); 7: during iteration 2, after iteration 1
    restore = _kill_at_record(monkeypatch, kill_at)
    with pytest.raises(_Kill):
        self_improve(None, over)
    restore()
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p != whole.path)
    killed = runs[-1]
    assert Run.open(killed).meta["status"] == "failed"
    it_killed = 1 + kill_at // 5
    plan = killed / "iterations" / f"iter_{it_killed}" / "plan.jsonl"
    assert len(plan.read_text().splitlines()) == kill_at % 5
    done_before = {}
    if it_killed == 2:
        done_before = {p.name: p.read_bytes() for p in (killed / "iterations" / "iter_1")
                       .iterdir()}
    run, res = resume_self_improve(killed)
    assert run.path == killed and Run.open(killed).meta["status"] == "finished"
    it = res["iterations"][it_killed - 1]
    assert it["n_planned_this_call"] == 5 - kill_at % 5 and it["n_targets"] == 5
    assert it["n_plan_calls"] == 2  # the killed call recorded its time, then the resumed one
    if it_killed == 2:  # the finished iteration was read back, not run again
        assert {p.name: p.read_bytes() for p in (killed / "iterations" / "iter_1")
                .iterdir()} == done_before
        assert res["iterations"][0] == json.loads(done_before["summary.json"])
    csv_a, w_a = _final_state(whole.path, n_iterations)
    csv_b, w_b = _final_state(killed, n_iterations)
    assert csv_a == csv_b
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    for a, b in zip(res_whole["iterations"], res["iterations"]):
        for key in ("n_solved", "n_route_reactions", "n_kept", "n_not_top1", "n_replay",
                    "n_finetune_examples", "onestep"):
            assert a[key] == b[key], key
    # a finished run asked to resume is returned as it is
    again, res_again = resume_self_improve(killed)
    assert res_again == json.loads((killed / "results.json").read_text())


def test_per_iteration_counts_add_up_and_the_value_network_is_trained(tiny, tmp_path):
    from selfsup.chem.retro.models.value import ValueModel

    root, model = tiny
    with pytest.raises(ConfigError, match="value.epochs"):
        self_improve(None, _si_overrides(root, model, tmp_path,
                                         **{"value.train": "true", "value.epochs": 0}))
    run, res = self_improve(None, _si_overrides(root, model, tmp_path, n_iterations=2,
                                                **{"finetune.replay": 0.4,
                                                   "value.train": "true",
                                                   "value.epochs": 3}))
    for it in res["iterations"]:
        assert it["n_targets"] == 5 and it["n_solved"] <= it["n_targets"]
        assert it["n_kept"] <= it["n_route_reactions"] == it["n_in"]
        assert it["n_kept"] + it["n_not_ranked"] + it["n_low_probability"] == it["n_in"]
        assert 0 <= it["n_not_top1"] <= it["n_kept"]
        assert it["n_forward_augmented"] == 0
        assert it["n_replay"] == round(0.4 * it["n_kept"])
        assert it["n_finetune_examples"] + it["n_finetune_skipped"] == (
            it["n_kept"] + it["n_replay"])
        assert set(it["stage_seconds"]) == {"plan", "plan_search_seconds", "filter", "forward",
                                            "finetune", "value", "eval"}
        assert all(v >= 0 for v in it["stage_seconds"].values())
        d = run.path / "iterations" / f"iter_{it['iteration']}"
        assert json.loads((d / "summary.json").read_text()) == it
        # value network: every solved route of >= 1 reaction (the 5 train targets), and
        # one example per distinct non-leaf molecule of those routes
        assert it["value"]["n_routes"] == 5 and it["value"]["n_examples"] == 5
        v = ValueModel.load(d / "value.pt")
        assert v.extra["iteration"] == it["iteration"] and v.extra["n_routes"] == 5
        assert (v.predict(["OCCN"]) >= 0).all()
    # iteration 1 plans with the reference model itself: every kept reaction is its top-1
    assert res["iterations"][0]["n_not_top1"] == 0
    assert res["value_models"] == [str(run.path / "iterations" / f"iter_{i}" / "value.pt")
                                   for i in (1, 2)]
    # trained afterwards from the run's records: the same network as value.train made
    from selfsup.chem.retro.workflows.self_improve import train_iteration_value

    path, info = train_iteration_value(run.path, 2, out=tmp_path / "again.pt")
    assert info["n_routes"] == res["iterations"][1]["value"]["n_routes"]
    again, saved = ValueModel.load(path), ValueModel.load(run.path / "iterations" / "iter_2"
                                                          / "value.pt")
    sd1, sd2 = again.net.state_dict(), saved.net.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    with pytest.raises(InputError, match="has not finished"):
        train_iteration_value(run.path, 3)


EXTRA = {
    "propionyl": "[CH3:1][CH2:4][C:2](=[O:3])O.[NH2:5][CH2:6][CH2:7][OH:8]"
    ">>[CH3:1][CH2:4][C:2](=[O:3])[NH:5][CH2:6][CH2:7][OH:8]",
    "boc_benzyl": "CC(C)(C)OC(=O)[NH:1][CH2:2][c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1"
    ">>[NH2:1][CH2:2][c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1",
}


def test_self_improvement_rehearses_the_models_own_training_split(tiny, tmp_path):
    """A model trained on USPTO-50k plus an extra table (as the USPTO+ORD model) records that
    split in its checkpoint, and self-improvement's rehearsal and random control draw from it,
    not from USPTO-50k alone; a model without the record is read from its run folder."""
    from selfsup.chem.retro.training.templates_data import write_reaction_table
    from selfsup.chem.retro.training.train_single_step import model_data_settings

    root, _ = tiny
    table = write_reaction_table(tmp_path / "extra.tsv", [
        {"id": k, "reaction": v, "template": extract_retro_template(v)}
        for k, v in EXTRA.items()])
    run, _ = train_single_step(None, [
        f"data.root={root}", f"data.cache_dir={root / 'cache'}", f"data.extra_train=[{table}]",
        f"run_root={tmp_path / 'ss'}", "model.hidden=32", "model.dropout=0.0", "optim.lr=0.02",
        "optim.batch_size=8", "optim.epochs=5", "trainer.threads=1", "trainer.device=cpu",
        "eval.n_test=0", "eval.top_k=[1,5]"])
    model = run.path / "model.pt"
    settings, source = model_data_settings(model)
    assert source == "checkpoint" and settings["extra_train"] == [str(table)]
    assert settings["clean"] is False and settings["min_count"] == 1
    # the random control draws min(control_n_reactions, train size) reactions: 7 = 5 + 2 only
    # when the extra table is part of the split
    _, res = self_improve(None, _si_overrides(root, model, tmp_path, mode="random_control",
                                              control_n_reactions=50))
    assert res["training_split"]["n_train_reactions"] == 7
    assert res["training_split"]["source"] == "checkpoint"
    assert res["iterations"][0]["n_finetune_examples"] == 7
    si_model = MLPSingleStepModel.load(res["models"][0])
    assert si_model.extra["data"]["extra_train"] == [str(table)]
    # an explicit setting wins: USPTO-50k alone
    _, res = self_improve(None, _si_overrides(root, model, tmp_path, mode="random_control",
                                              control_n_reactions=50,
                                              **{"data.extra_train": "[]"}))
    assert res["training_split"]["n_train_reactions"] == 5
    assert res["training_split"]["source"] == "checkpoint and the config"
    # a model saved before the record existed: its run folder's config.yaml says the same
    old = MLPSingleStepModel.load(model)
    old.extra.pop("data")
    old.save(run.path / "model.pt", extra=old.extra)
    settings, source = model_data_settings(run.path / "model.pt")
    assert source.endswith("config.yaml") and settings["extra_train"] == [str(table)]
    # and outside a run folder: the defaults (USPTO-50k alone)
    old.save(tmp_path / "loose.pt", extra=old.extra)
    settings, source = model_data_settings(tmp_path / "loose.pt")
    assert source == "defaults" and settings["extra_train"] == []
