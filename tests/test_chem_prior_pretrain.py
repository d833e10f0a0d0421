"""Pretraining's opt-in length groups (issue 24): the same loss as the plain batch, exact resume
(also under bf16 autocast), one process only. Tiny corpus and model, seeded, offline."""

import pytest
import torch

from conftest import chain_corpus, pretrain_straight_and_resumed
from selfsup.chem.lstm import SmilesLSTM, SmilesLSTMConfig, encode_smiles, pretrain
from selfsup.chem.lstm.corpus import batch_tokens
from selfsup.chem.lstm.training import _grouped_loss
from selfsup.chem.molecules import Vocabulary
from selfsup.errors import ConfigError

HEADS = ["", "O", "N", "Cl", "F", "N#C", "OC", "NC", "C(=O)O", "C(=O)N", "c1ccccc1", "c1ccncc1",
         "C1CCCCC1", "S", "C=C", "CC(C)", "OC(=O)C", "N(C)C", "C1CC1", "c1ccoc1"]


def corpus() -> list[str]:
    return chain_corpus(HEADS)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file on one torch thread."""


@pytest.fixture()
def smiles_file(tmp_path):
    path = tmp_path / "tiny.smi"
    path.write_text("\n".join(corpus()) + "\n")
    return path


def _args(path, **extra):
    base = {"data.dataset": str(path), "data.val_size": 20, "data.max_len": 40,
            "model.embed_dim": 16, "model.hidden_dim": 32, "model.n_layers": 2,
            "model.dropout": 0.1, "optim.batch_size": 32, "optim.lr": 0.01,
            "optim.max_steps": 30, "optim.length_groups": 4, "eval.n_samples": 30,
            "eval.val_every_n_steps": 10, "trainer.log_every_n_steps": 5,
            "trainer.checkpoint_every_n_steps": 10, "trainer.threads": 1,
            "trainer.accelerator": "cpu", "run_root": str(path.parent / "runs")}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_grouped_loss_is_the_batch_loss():
    """Sorted into 3 length groups, each trimmed to its longest row: the same mean NLL per target
    token as the padded batch (fp32, no dropout), and the same target count."""
    smiles = corpus()
    vocab = Vocabulary.build(smiles)
    enc = encode_smiles(smiles, vocab)
    torch.manual_seed(0)
    model = SmilesLSTM(SmilesLSTMConfig(len(vocab), embed_dim=16, hidden_dim=32, n_layers=2,
                                        dropout=0.0)).eval()
    idx = torch.randperm(len(enc), generator=torch.Generator().manual_seed(1))[:50]
    tokens = batch_tokens(enc, idx, "cpu")
    plain = model.loss(tokens)
    grouped, n_targets = _grouped_loss(model, enc, idx, 3, torch.device("cpu"))
    assert n_targets == int((tokens[:, 1:] != 0).sum())
    assert torch.allclose(plain, grouped, rtol=0, atol=1e-6)
    # the gradients agree too
    g_plain = torch.autograd.grad(plain, list(model.parameters()))
    g_grouped = torch.autograd.grad(_grouped_loss(model, enc, idx, 3, torch.device("cpu"))[0],
                                    list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_plain, g_grouped))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_length_groups_resume_exactly(smiles_file, monkeypatch, precision):
    """A run with optim.length_groups=4 (and bf16 autocast) stopped after step 15 and resumed
    from its step-10 checkpoint ends with the weights and samples of the uninterrupted run."""
    straight, res_a, run, res_b = pretrain_straight_and_resumed(
        lambda name: _args(smiles_file, name=name, **{"trainer.precision": precision}),
        smiles_file.parent / "runs", monkeypatch, stop_step=15)
    assert (straight.path / "samples.csv").read_bytes() == (run.path / "samples.csv").read_bytes()
    assert res_a["steps"] == res_b["steps"] == 30 and res_a["val_loss"] == res_b["val_loss"]


def test_length_groups_differ_from_the_default_only_by_rounding(smiles_file):
    """Same seed, same data order: after 30 steps the grouped run's validation loss is within
    rounding distance of the default run's (dropout off, fp32)."""
    a = pretrain(None, _args(smiles_file, name="plain", **{"optim.length_groups": 1,
                                                           "model.dropout": 0.0}))[1]
    b = pretrain(None, _args(smiles_file, name="grouped", **{"model.dropout": 0.0}))[1]
    assert a["steps"] == b["steps"] == 30
    assert abs(a["val_loss"] - b["val_loss"]) < 1e-3


def test_length_groups_need_one_process(smiles_file):
    with pytest.raises(ConfigError, match="length_groups=4 needs one process"):
        pretrain(None, _args(smiles_file, name="ddp", **{"trainer.devices": 2,
                                                         "trainer.strategy": "ddp"}))
    with pytest.raises(ConfigError, match="optim.length_groups must be >= 1"):
        pretrain(None, _args(smiles_file, name="zero", **{"optim.length_groups": 0}))
