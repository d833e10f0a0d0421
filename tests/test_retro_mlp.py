"""Template-classifier single-step model: data preparation, MLP, training, metrics, forward model.

A tiny hand-written USPTO-50k-like set (atom-mapped reactions, templates extracted by rdchiral
here) in the same tab-separated layout as the real files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.chem.retro.core.reactions import Reaction, extract_retro_template
from selfsup.chem.retro.core.single_step import Proposal
from selfsup.chem.retro.models.mlp import (
    ForwardTemplateMLP,
    ForwardTemplateModel,
    MLPSingleStepModel,
    TemplateMLP,
    apply_forward_template,
    load_template_model,
    load_trained_model,
    reverse_template,
)
from selfsup.chem.retro.training.fine_tune import fine_tune
from selfsup.chem.retro.training.metrics import exact_match_topk, template_topk_accuracy
from selfsup.chem.retro.training.templates_data import (
    build_vocabulary,
    morgan_fingerprints,
    prepare_uspto50k,
)
from selfsup.chem.retro.training.train_single_step import resume, train_single_step
from selfsup.errors import InputError
from selfsup.io import safe_torch_load

RXN = {
    "amide1": "[CH3:1][C:2](=[O:3])O.[NH2:5][CH2:6][c:7]1[cH:8][cH:9][cH:10][cH:11][cH:12]1"
    ">>[CH3:1][C:2](=[O:3])[NH:5][CH2:6][c:7]1[cH:8][cH:9][cH:10][cH:11][cH:12]1",
    "amide2": "O[C:1](=[O:2])[c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1.[NH:9]1[CH2:10][CH2:11][O:12]"
    "[CH2:13][CH2:14]1>>[O:2]=[C:1]([c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1)[N:9]1[CH2:10][CH2:11]"
    "[O:12][CH2:13][CH2:14]1",
    "ester1": "C[O:1][C:2](=[O:3])[c:4]1[cH:5][cH:6][c:7]([CH3:10])[cH:8][cH:9]1"
    ">>[OH:1][C:2](=[O:3])[c:4]1[cH:5][cH:6][c:7]([CH3:10])[cH:8][cH:9]1",
    "ester2": "CC[O:1][C:2](=[O:3])[CH2:4][CH2:5][c:6]1[cH:7][cH:8][cH:9][cH:10][cH:11]1"
    ">>[OH:1][C:2](=[O:3])[CH2:4][CH2:5][c:6]1[cH:7][cH:8][cH:9][cH:10][cH:11]1",
    "boc1": "CC(C)(C)OC(=O)[NH:1][CH2:2][CH2:3][OH:4]>>[NH2:1][CH2:2][CH2:3][OH:4]",
    "boc2": "CC(C)(C)OC(=O)[N:1]1[CH2:2][CH2:3][CH:4]([OH:7])[CH2:5][CH2:6]1"
    ">>[NH:1]1[CH2:2][CH2:3][CH:4]([OH:7])[CH2:5][CH2:6]1",
    "redam1": "O=[CH:1][c:2]1[cH:3][cH:4][cH:5][cH:6][cH:7]1.[CH3:8][NH:9][CH3:10]"
    ">>[CH3:8][N:9]([CH3:10])[CH2:1][c:2]1[cH:3][cH:4][cH:5][cH:6][cH:7]1",
    "redam2": "O=[C:1]1[CH2:2][CH2:3][CH2:4][CH2:5][CH2:6]1.[NH2:7][CH2:8][c:9]1[cH:10][cH:11]"
    "[cH:12][cH:13][cH:14]1>>[CH:1]1([NH:7][CH2:8][c:9]2[cH:10][cH:11][cH:12][cH:13][cH:14]2)"
    "[CH2:2][CH2:3][CH2:4][CH2:5][CH2:6]1",
    # test only: its template is never seen in train
    "nitro": "[O-][N+:1](=O)[c:2]1[cH:3][cH:4][c:5]([CH3:8])[cH:6][cH:7]1"
    ">>[NH2:1][c:2]1[cH:3][cH:4][c:5]([CH3:8])[cH:6][cH:7]1",
}
TRAIN = ["amide1", "amide2", "ester1", "ester2", "boc1", "boc2", "redam1", "redam2"]
VALID = ["amide1", "boc1"]
TEST = ["amide2", "redam1", "nitro"]
BAD_ROWS = [
    "CC>>C1CC\tC>>C\tbad1",  # unparsable product: malformed_reaction
    "CC.O>>CC.O\tC>>C\tbad2",  # two product fragments: malformed_reaction
    "only-one-field",  # wrong number of fields: dropped by the reader, malformed_row
]
TEMPLATES = {k: extract_retro_template(v) for k, v in RXN.items()}


def _write_split(root, split, names, extra=()):
    lines = ["RxnSmilesClean\tRetroTemplate\tid"]
    lines += [f"{RXN[n]}\t{TEMPLATES[n]}\t{n}" for n in names]
    lines += list(extra)
    (root / f"reaction_templates_50k_{split}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("uspto_tiny")
    _write_split(root, "train", TRAIN, BAD_ROWS)
    _write_split(root, "valid", VALID)
    _write_split(root, "test", TEST)
    return root


def _overrides(tiny, run_root, **extra):
    base = {
        "data.root": str(tiny),
        "data.cache_dir": str(tiny / "cache"),
        "run_root": str(run_root),
        "model.hidden": 64,
        "model.dropout": 0.1,
        "optim.lr": 0.01,
        "optim.batch_size": 16,
        "optim.epochs": 30,
        "trainer.threads": 1,
        "eval.n_test": 0,
        "eval.top_k": "[1,2,5]",
        "trainer.device": "cpu",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return train_single_step(None, _overrides(tiny, runs))


def test_prepare_counts_fingerprints_and_cache(tiny):
    data, report = prepare_uspto50k(tiny, tiny / "cache_prep")
    assert report["cache"]["hit"] is False
    tr = report["splits"]["train"]
    assert (tr["n_rows"], tr["n_reactions"], tr["n_skipped"]) == (11, 8, 3)
    assert tr["skipped"] == {"malformed_reaction": 2, "malformed_row": 1}
    assert report["n_templates"] == 8 and data.templates == sorted(TEMPLATES[n] for n in TRAIN)
    assert report["splits"]["valid"]["coverage"] == 1.0
    assert report["splits"]["test"]["coverage"] == pytest.approx(2 / 3)
    test = data["test"]
    assert test.labels[2] == -1 and test.labels[0] == data.templates.index(TEMPLATES["amide2"])
    assert test.products[0] == "O=C(c1ccccc1)N1CCOCC1"
    assert test.reactants[0] == ("C1COCCN1", "O=C(O)c1ccccc1")
    fps = data["train"].product_fps
    assert fps.shape == (8, 2048) and fps.dtype == np.uint8 and set(np.unique(fps)) <= {0, 1}
    assert np.array_equal(fps, morgan_fingerprints(data["train"].products))
    assert data["train"].reactant_fps.shape == (8, 2048)
    again, rep2 = prepare_uspto50k(tiny, tiny / "cache_prep")
    assert rep2["cache"]["hit"] is True and rep2["splits"] == report["splits"]
    assert np.array_equal(again["train"].product_fps, fps)
    assert again["test"].reactants == test.reactants and again.templates == data.templates


def test_vocabulary_min_count_and_order():
    assert build_vocabulary(["a", "b", "a", "c", "c", "c"], 2) == ["c", "a"]
    assert build_vocabulary(["b", "a"]) == ["a", "b"]
    with pytest.raises(InputError):
        build_vocabulary(["a"], 0)


def test_template_mlp_architecture():
    net = TemplateMLP(5, fp_dim=2048, hidden=512, dropout=0.3)
    kinds = [type(m).__name__ for m in net.body] + [type(net.head).__name__]
    assert kinds == ["Linear", "BatchNorm1d", "ELU", "Dropout", "Linear"]
    assert net.body[0].in_features == 2048 and net.head.in_features == 512
    assert net.eval()(torch.zeros(3, 2048, dtype=torch.uint8)).shape == (3, 5)
    net.set_dropout(0.4)
    assert net.body[3].p == 0.4


def test_training_reaches_full_template_accuracy_and_exact_match(trained, tiny):
    run, res = trained
    assert res["n_templates"] == 8 and res["valid_template_top1"] == 1.0
    # test: two seen reactions (hits) and one unseen template (a miss at every k)
    assert res["test_template_top1"] == pytest.approx(2 / 3)
    assert res["test_exact_top1"] == pytest.approx(2 / 3)
    assert res["test_exact_top5"] == pytest.approx(2 / 3)
    model = load_trained_model(run.path)
    assert isinstance(model, MLPSingleStepModel)
    data, _ = prepare_uspto50k(tiny, tiny / "cache")
    acc = template_topk_accuracy(model.net, data["train"].product_fps, data["train"].labels, (1,))
    assert acc["top1"] == 1.0
    amide = Reaction.from_smiles(RXN["amide1"])
    top = model.propose([amide.product], top_k=5)[0]
    assert top[0].reactants == amide.reactants and top[0].probability > 0.5
    assert top[0].metadata["template"] == TEMPLATES["amide1"]
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == list(range(1, 31))
    assert run.meta["status"] == "finished"


def test_resume_matches_uninterrupted_run(trained, tiny, tmp_path):
    run, res = trained
    part, empty = train_single_step(None, _overrides(tiny, tmp_path), max_epochs=10)
    assert empty == {} and len(part.read_metrics()) == 10
    part, res2 = resume(part.path)
    assert res2["test_exact_top1"] == res["test_exact_top1"]
    assert [r["train_loss"] for r in part.read_metrics()] == pytest.approx(
        [r["train_loss"] for r in run.read_metrics()], rel=1e-5
    )
    a = safe_torch_load(run.path / "model.pt")["state_dict"]
    b = safe_torch_load(part.path / "model.pt")["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_exact_match_topk_hand_made():
    preds = [[("A",), ("B",)], [Proposal(("C",), 0.9)], [], [("X",), ("Y",), ("D",)]]
    truths = [("B",), ("C",), ("D",), ("D",)]
    assert exact_match_topk(preds, truths, (1, 2, 3)) == {
        "top1": 0.25, "top2": 0.5, "top3": 0.75,
    }
    with pytest.raises(InputError):
        exact_match_topk(preds, truths[:2])


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    model = load_trained_model(trained[0].path)
    products = [Reaction.from_smiles(RXN[n]).product for n in ("amide1", "boc2", "nitro")]
    path = model.save(tmp_path / "m.pt", extra={"note": "x"})
    ckpt = safe_torch_load(path)  # weights_only=True
    assert ckpt["kind"] == "backward" and len(ckpt["templates"]) == 8
    again = MLPSingleStepModel.load(path)
    assert again.extra == {"note": "x"} and again.templates == model.templates
    assert np.array_equal(model.template_scores(products), again.template_scores(products))
    assert model.propose(products, 5) == again.propose(products, 5)
    with pytest.raises(InputError):
        ForwardTemplateModel.load(path)


def test_forward_template_on_amide_coupling(tmp_path):
    t = TEMPLATES["amide1"]
    assert reverse_template(t).startswith("(") and ">>" in reverse_template(t)
    assert apply_forward_template(t, ["NCc1ccccc1", "CC(=O)O"]) == ["CC(=O)NCc1ccccc1"]
    assert apply_forward_template(t, "CC(=O)O.NCc1ccccc1") == ["CC(=O)NCc1ccccc1"]
    assert apply_forward_template(t, ["CCO"]) == []
    with pytest.raises(InputError):
        reverse_template("not a template")
    torch.manual_seed(0)
    fwd = ForwardTemplateModel(ForwardTemplateMLP(2, hidden=8), [TEMPLATES["boc1"], t])
    (preds,) = fwd.predict([("CC(=O)O", "NCc1ccccc1")], n_templates=2, top_k=3)
    assert [p.product for p in preds] == ["CC(=O)NCc1ccccc1"] and preds[0].template_id == 1
    assert preds[0].probability == pytest.approx(
        float(fwd.template_scores(["CC(=O)O.NCc1ccccc1"])[0, 1]), rel=1e-6
    )
    fwd.save(tmp_path / "f.pt")
    assert isinstance(load_template_model(tmp_path / "f.pt"), ForwardTemplateModel)


def test_fine_tune_counts_and_changes_weights(trained):
    model = load_trained_model(trained[0].path)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    boc = Reaction.from_smiles(RXN["boc1"])
    items = [
        (boc.product, TEMPLATES["boc1"]),
        (Reaction.from_smiles(RXN["ester1"]).product, model.templates.index(TEMPLATES["ester1"])),
        Reaction.from_smiles(RXN["amide2"]),
        ("Cc1ccc(N)cc1", TEMPLATES["nitro"]),  # not in the vocabulary
        ("not a smiles ((", TEMPLATES["boc1"]),
    ]
    model.propose([boc.product], 3)
    out = fine_tune(model, items, epochs=3, batch_size=8, seed=1)
    assert (out["n_examples"], out["n_skipped"]) == (3, 2)
    assert out["skipped"] == {"unknown_template": 1, "malformed": 1}
    assert len(out["losses"]) == 3 and model.net.body[3].p == 0.4
    assert not model.net.training and len(model._cache) == 0
    assert any(not torch.equal(before[k], v) for k, v in model.net.state_dict().items())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_crashed_and_resumed_run_equals_the_uninterrupted_one_file_by_file(
        tiny, tmp_path, monkeypatch, precision):
    """A run that dies in epoch 6 (after its training pass, before that epoch's checkpoint) and
    is resumed from its epoch-5 checkpoint ends with the weights (model.pt, checkpoints/last.pt),
    metrics.jsonl rows (but the timings) and results.json (but the timings) of the
    uninterrupted run; also in bf16 mixed precision (Fabric's autocast, on the CPU here)."""
    from selfsup.chem.retro.training import train_single_step as tss

    extra = {"optim.epochs": 9, "optim.batch_size": 5, "trainer.precision": precision}
    straight, res_a = train_single_step(None, _overrides(tiny, tmp_path / "a", **extra))
    calls = {"n": 0}
    measure = tss.template_topk_accuracy

    def dies_in_epoch_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("killed in epoch 6")
        return measure(*args, **kwargs)

    monkeypatch.setattr(tss, "template_topk_accuracy", dies_in_epoch_6)
    with pytest.raises(RuntimeError, match="killed in epoch 6"):
        train_single_step(None, _overrides(tiny, tmp_path / "b", **extra))
    monkeypatch.setattr(tss, "template_topk_accuracy", measure)
    (crashed,) = (tmp_path / "b").iterdir()
    assert safe_torch_load(crashed / "checkpoints" / "last.pt")["epoch"] == 5
    run, res_b = resume(crashed)
    for name, key in (("model.pt", "state_dict"), ("checkpoints/last.pt", "net")):
        a = safe_torch_load(straight.path / name)[key]
        b = safe_torch_load(run.path / name)[key]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(r) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in r.read_metrics()]

    assert rows(straight) == rows(run) and len(rows(run)) == 9
    timings = ("prepare_seconds", "train_seconds_this_call", "test_exact_seconds")
    assert ({k: v for k, v in res_a.items() if k not in timings}
            == {k: v for k, v in res_b.items() if k not in timings})


def test_the_fabric_epoch_in_32_bit_is_the_plain_pytorch_epoch():
    from lightning.fabric import Fabric

    from selfsup.chem.retro.training.train_single_step import train_epoch

    fps = (np.random.default_rng(0).random((37, 64)) < 0.2).astype(np.uint8)
    labels = np.random.default_rng(1).integers(0, 6, 37)
    torch.manual_seed(0)
    plain = TemplateMLP(6, fp_dim=64, hidden=16, dropout=0.2)
    wrapped = TemplateMLP(6, fp_dim=64, hidden=16, dropout=0.2)
    wrapped.load_state_dict(plain.state_dict())
    adam = torch.optim.Adam(plain.parameters(), lr=0.01)
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    module = fabric.setup_module(wrapped)
    optimizer = fabric.setup_optimizers(torch.optim.Adam(wrapped.parameters(), lr=0.01))
    for epoch in range(3):
        a = train_epoch(plain, adam, fps, labels, 8, seed=epoch)
        b = train_epoch(module, optimizer, fps, labels, 8, seed=epoch, fabric=fabric)
        assert a == b
    assert all(torch.equal(p, q) for p, q in zip(plain.state_dict().values(),
                                                 wrapped.state_dict().values()))


def test_an_unknown_precision_is_refused_before_the_run_folder_is_made(tiny, tmp_path):
    from selfsup.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.precision='fp8'"):
        train_single_step(None, _overrides(tiny, tmp_path / "runs", **{"trainer.precision": "fp8"}))
    assert not (tmp_path / "runs").exists()
