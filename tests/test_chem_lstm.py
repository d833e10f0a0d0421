"""SMILES LSTM (GEGL apprentice) and its maximum-likelihood pretraining: tiny, seeded, offline."""

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import chain_corpus, load_bench_script, pretrain_straight_and_resumed
from selfsup.chem.lstm import (
    CHECKPOINT_FORMAT,
    SmilesLSTM,
    SmilesLSTMConfig,
    encode_smiles,
    pretrain,
    resume,
    sample_metrics,
    train_likelihood,
)
from selfsup.chem.molecules import Vocabulary
from selfsup.errors import InputError
from selfsup.io import safe_torch_load
from selfsup.runs import Run

HEADS = ["", "O", "N", "Cl", "F", "N#C", "OC", "NC", "C(=O)O", "C(=O)N", "c1ccccc1",
         "c1ccncc1", "C1CCCCC1", "FC(F)(F)", "S", "Br", "C=C", "CC(C)", "OC(=O)C", "N(C)C",
         "C1CC1", "c1ccoc1", "O=C", "CO", "NCC"]


def corpus() -> list[str]:
    return chain_corpus(HEADS)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file on one torch thread."""


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build(corpus())


def tiny(vocab, hidden=32, layers=2, dropout=0.0, seed=0) -> SmilesLSTM:
    torch.manual_seed(seed)
    cfg = SmilesLSTMConfig(len(vocab), embed_dim=16, hidden_dim=hidden, n_layers=layers,
                           dropout=dropout)
    return SmilesLSTM(cfg).eval()


def test_log_likelihood_is_the_sum_of_next_token_log_softmax(vocab):
    model = tiny(vocab)
    smiles = ["CCO", "c1ccccc1CCCC", "N"]
    enc = encode_smiles(smiles, vocab)
    assert enc.tokens.shape == (3, 1 + 12 + 1) and enc.lengths.tolist() == [5, 14, 3]
    ll = model.log_likelihood(enc.tokens)
    assert ll.shape == (3,)
    for b, s in enumerate(smiles):
        ids = vocab.encode(s)  # <bos> ... <eos>, no padding
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids[:-1]]))  # (1, T-1, V)
        logp = F.log_softmax(logits[0], dim=-1)
        by_hand = sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1))
        assert ll[b].item() == pytest.approx(by_hand, abs=1e-4)
    # the loss is the per-token mean of the same numbers
    assert model.loss(enc.tokens).item() == pytest.approx(-ll.sum().item() / (4 + 13 + 2),
                                                          rel=1e-5)
    # special tokens are never predicted
    logits, _ = model(enc.tokens)
    for special in (vocab.pad_id, vocab.bos_id, vocab.unk_id):
        assert torch.isneginf(logits[..., special]).all()


def test_encode_skips_and_counts(vocab):
    enc = encode_smiles(["CCO", "C[Si](C)C", "C[C", "C" * 30, "CN"], vocab, max_len=20)
    assert enc.index == [0, 4]
    assert enc.skipped == {"untokenizable": 1, "unknown_token": 1, "too_long": 1}
    assert enc.n_skipped == 3


def test_encode_cache_tokenises_once_and_changes_nothing(vocab, monkeypatch):
    import selfsup.chem.lstm.model as model_mod

    cache: dict = {}
    encode_smiles(["CCO", "C[Si](C)C", "C[C", "C" * 30, "CN"], vocab, max_len=20, cache=cache)
    assert cache["CCO"] == vocab.encode("CCO") and cache["CN"] == vocab.encode("CN")
    assert (cache["C[Si](C)C"], cache["C[C"], cache["C" * 30]) == (
        "unknown_token", "untokenizable", "too_long")
    seen: list[str] = []
    real = model_mod.tokenize
    monkeypatch.setattr(model_mod, "tokenize", lambda s: seen.append(s) or real(s))
    second = ["CN", "c1ccccc1O", "C[C", "CCO", "C" * 30, "C[Si](C)C"]
    cached = encode_smiles(second, vocab, max_len=20, cache=cache)
    assert seen == ["c1ccccc1O"]  # only the new SMILES is tokenised
    plain = encode_smiles(second, vocab, max_len=20)
    assert torch.equal(cached.tokens, plain.tokens) and cached.tokens.shape == (3, 11)
    assert torch.equal(cached.lengths, plain.lengths) and cached.lengths.tolist() == [4, 11, 5]
    assert cached.index == plain.index == [0, 1, 3]
    assert cached.skipped == plain.skipped == {"untokenizable": 1, "unknown_token": 1,
                                               "too_long": 1}
    assert encode_smiles([], vocab).tokens.shape == (0, 2)


def test_train_likelihood_with_a_token_cache_is_bit_identical(vocab):
    smiles = corpus()[:80] + ["C[Si](C)C"]
    warm: dict = {}
    encode_smiles(smiles, vocab, cache=warm)
    runs = []
    for cache in (None, {}, warm):
        model = tiny(vocab)
        adam = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = [train_likelihood(model, smiles[i:], vocab, steps=3, batch_size=16,
                                   generator=torch.Generator().manual_seed(5), optimizer=adam,
                                   cache=cache) for i in (0, 20)]  # two overlapping rounds
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    (ref_losses, ref_params), *others = runs
    for losses, params in others:
        assert losses == ref_losses
        assert all(torch.equal(a, b) for a, b in zip(params, ref_params))


def _one_step(vocab, smiles, **options):
    """Loss of one SGD step of train_likelihood (batch = all of ``smiles``) and the parameters
    after it. SGD, not Adam: Adam's first step is lr * sign(gradient), which would magnify a
    rounding difference in a near-zero gradient to a whole step."""
    model = tiny(vocab)
    sgd = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = train_likelihood(model, smiles, vocab, steps=1, batch_size=len(smiles),
                            generator=torch.Generator().manual_seed(2), optimizer=sgd,
                            grad_clip=0.0, **options)
    return loss, [p.detach().clone() for p in model.parameters()]


def test_length_groups_give_the_same_loss_and_step(vocab):
    smiles = corpus()[::3]  # 1 to about 15 tokens: the groups are much narrower than the batch
    enc = encode_smiles(smiles, vocab)
    assert int(enc.lengths.min()) < int(enc.lengths.max()) - 8
    ref_loss, ref_params = _one_step(vocab, smiles)
    model = tiny(vocab)
    with torch.no_grad():
        assert model.loss(enc.tokens).item() == pytest.approx(ref_loss, rel=1e-6)
    start = [p.detach().clone() for p in model.parameters()]
    moved = max(float((a - b).abs().max()) for a, b in zip(ref_params, start))
    assert moved > 1e-3  # the step changed the parameters
    for groups in (2, 4, len(smiles) + 3):  # more groups than rows: one row per group
        loss, params = _one_step(vocab, smiles, length_groups=groups)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for a, b in zip(params, ref_params):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_trains_close_to_fp32(vocab):
    smiles = corpus()[::3]
    ref_loss, ref_params = _one_step(vocab, smiles)
    for groups in (1, 4):
        loss, params = _one_step(vocab, smiles, precision="bf16", length_groups=groups)
        assert math.isfinite(loss) and loss != ref_loss  # bfloat16 rounding: not the same number
        assert loss == pytest.approx(ref_loss, rel=5e-3)  # measured 1e-4
        for a, b in zip(params, ref_params):
            assert a.dtype == torch.float32 and torch.isfinite(a).all()  # fp32 weights
            torch.testing.assert_close(a, b, rtol=0.0, atol=5e-3)  # measured 6e-4


def test_train_likelihood_rejects_unknown_precision_and_groups(vocab):
    model = tiny(vocab)
    with pytest.raises(InputError, match="precision '32' or 'bf16'.*'fp16'"):
        train_likelihood(model, ["CCO"], vocab, steps=1, precision="fp16")
    with pytest.raises(InputError, match="length_groups >= 1.*, 0"):
        train_likelihood(model, ["CCO"], vocab, steps=1, length_groups=0)


def test_sampling_is_deterministic_and_reports_log_likelihoods(vocab):
    model = tiny(vocab)
    a = model.sample(40, vocab, max_len=30, generator=torch.Generator().manual_seed(3),
                     return_details=True, batch_size=16)
    b = model.sample(40, vocab, max_len=30, generator=torch.Generator().manual_seed(3),
                     return_details=True, batch_size=16)
    c = model.sample(40, vocab, max_len=30, generator=torch.Generator().manual_seed(4))
    assert a.smiles == b.smiles and torch.equal(a.tokens, b.tokens)
    assert a.smiles != c
    assert len(a.smiles) == 40 and (a.tokens[:, 0] == vocab.bos_id).all()
    assert a.smiles == [vocab.decode(r) for r in a.tokens[:, 1:].tolist()]
    done = a.finished
    assert ((a.tokens == vocab.eos_id).sum(1) == done.long()).all()
    # reported log-probs are the model's likelihood of the sampled tokens (policy-gradient input)
    assert torch.allclose(a.log_probs, model.log_likelihood(a.tokens), atol=1e-4)
    assert model.sample(0, vocab) == []


def test_finished_rows_leave_the_batch_and_the_draws_stay_the_whole_batchs(vocab):
    # the reference: the sampler before rows left the batch (every row runs every step until
    # all have emitted <eos>), kept as the baseline of benchmarks/gegl/sampling_speed.py
    whole_batch_chunk = load_bench_script("gegl", "sampling_speed.py").whole_batch_chunk
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2)
    model = tiny(vocab, hidden=48, layers=3)
    for seed in range(3):
        with torch.no_grad():
            ref, _, _ = whole_batch_chunk(model, 64, 40, 1.0,
                                          torch.Generator().manual_seed(seed), torch.device("cpu"))
        got = model.sample(64, vocab, max_len=40, generator=torch.Generator().manual_seed(seed),
                           return_details=True)
        # rows end at different steps, so rows left the batch while others ran on
        lengths = (got.tokens != vocab.pad_id).sum(1)
        assert lengths.min() < lengths.max()
        assert torch.equal(got.tokens, ref)
        assert torch.allclose(got.log_probs, model.log_likelihood(got.tokens), atol=1e-4)


def test_temperature_to_zero_approaches_greedy(vocab):
    model = tiny(vocab)
    with torch.no_grad():
        model.head.weight.mul_(20.0)  # clear gaps between logits
    greedy = model.sample(8, vocab, max_len=25, temperature=0.0, return_details=True)
    assert len(set(greedy.smiles)) == 1  # argmax decoding ignores the generator
    first, _ = model(torch.full((1, 1), vocab.bos_id))
    assert greedy.tokens[0, 1].item() == first[0, -1].argmax().item()
    match = []
    for temp in (1.0, 0.3, 1e-6):
        s = model.sample(8, vocab, max_len=25, temperature=temp,
                         generator=torch.Generator().manual_seed(0), return_details=True)
        width = min(s.tokens.shape[1], greedy.tokens.shape[1])
        match.append((s.tokens[:, :width] == greedy.tokens[:, :width]).float().mean().item())
    assert match[0] <= match[1] <= match[2] == 1.0


def test_likelihood_training_lowers_loss_and_raises_validity(vocab):
    smiles = corpus()
    model = tiny(vocab, hidden=64, layers=1)
    enc = encode_smiles(smiles, vocab)
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    with torch.no_grad():
        loss_before = model.loss(enc.tokens).item()
    valid_before = sample_metrics(model.sample(100, vocab, max_len=40, generator=gen()),
                                  set(smiles))[0]["validity"]
    mean_loss = train_likelihood(model, smiles, vocab, steps=250, batch_size=32, lr=1e-2,
                                 generator=torch.Generator().manual_seed(0))
    assert not model.training  # mode restored
    with torch.no_grad():
        loss_after = model.loss(enc.tokens).item()
    valid_after = sample_metrics(model.sample(100, vocab, max_len=40, generator=gen()),
                                 set(smiles))[0]["validity"]
    assert loss_after < 0.4 * loss_before
    assert loss_after < mean_loss < loss_before
    assert valid_before < 0.3 and valid_after >= 0.8
    # nothing encodable: nothing trained
    assert train_likelihood(model, ["[Si]"], vocab, steps=2) != train_likelihood(
        model, ["[Si]"], vocab, steps=2)  # nan != nan


def test_save_load_round_trip(tmp_path, vocab):
    model = tiny(vocab, dropout=0.2)
    path = model.save(tmp_path / "m.pt", vocab, extra={"note": "x", "step": 3})
    loaded, vocab2 = SmilesLSTM.load(path)
    assert vocab2 == vocab and loaded.config == model.config and not loaded.training
    tokens = encode_smiles(["CCO", "c1ccccc1"], vocab).tokens
    assert torch.equal(model(tokens)[0], loaded(tokens)[0])
    data = safe_torch_load(path)
    assert data["format"] == CHECKPOINT_FORMAT and data["extra"] == {"note": "x", "step": 3}


def test_load_refuses_pickled_objects_and_foreign_files(tmp_path, vocab):
    evil = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "obj": argparse.Namespace(a=1)}, evil)
    with pytest.raises(InputError, match="not a safe"):
        SmilesLSTM.load(evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(InputError, match="not a SMILES LSTM checkpoint"):
        SmilesLSTM.load(other)
    with pytest.raises(InputError, match="no SMILES LSTM checkpoint"):
        SmilesLSTM.load(tmp_path / "missing.pt")


def test_sample_metrics_by_hand():
    metrics, rows = sample_metrics(["CCO", "OCC", "C1CC", "c1ccccc1", "NCC", ""], {"CCO"})
    assert metrics["validity"] == pytest.approx(4 / 6)
    assert metrics["uniqueness"] == pytest.approx(3 / 4)  # CCO, benzene, CCN
    assert metrics["novelty"] == pytest.approx(2 / 3)
    assert [r["novel"] for r in rows] == [False, False, False, True, True, False]


# ------------------------------------------------------------------------------ pretrain runs


def _args(path, **extra):
    base = {
        "data.dataset": str(path), "data.val_size": 20, "data.max_len": 40,
        "model.embed_dim": 16, "model.hidden_dim": 32, "model.n_layers": 2,
        "model.dropout": 0.1, "optim.batch_size": 32, "optim.lr": 0.01, "optim.max_steps": 20,
        "eval.n_samples": 30, "eval.val_every_n_steps": 10, "trainer.log_every_n_steps": 5,
        "trainer.checkpoint_every_n_steps": 10, "trainer.threads": 1,
        "trainer.accelerator": "cpu",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture()
def smiles_file(tmp_path):
    path = tmp_path / "tiny.smi"
    path.write_text("SMILES\n" + "\n".join(corpus()) + "\nnot_a_smiles\n")
    return path


def test_pretrain_end_to_end(smiles_file):
    run, results = pretrain(None, _args(smiles_file, name="e2e"))
    assert (run.path / "model.pt").is_file() and (run.path / "samples.csv").is_file()
    assert (run.path / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run.path / "run.json").read_text())["status"] == "finished"
    assert results["n_invalid"] == 1 and results["n_val"] == 20 and results["steps"] == 20
    for key in ("validity", "uniqueness", "novelty"):
        assert 0.0 <= results[key] <= 1.0
    assert results["n_samples"] == 30 and results["final_train_loss"] < 3.0
    rows = Run.open(run.path).read_metrics()
    assert [r["step"] for r in rows if "train_loss" in r] == [5, 10, 15, 20]
    assert [r["step"] for r in rows if "val_loss" in r] == [10, 20]
    assert len((run.path / "samples.csv").read_text().splitlines()) == 31
    model, vocab = SmilesLSTM.load(run.path / "model.pt")
    assert len(vocab) == results["vocab_size"] == model.config.vocab_size


def test_resume_equals_the_uninterrupted_run(smiles_file, monkeypatch):
    _, straight = pretrain(None, _args(smiles_file, name="straight", **{"optim.max_steps": 40}))
    # (a) a finished 20-step run extended to 40 steps
    short, _ = pretrain(None, _args(smiles_file, name="short"))
    _, extended = resume(short.path, ["optim.max_steps=40"])
    # (b) a 40-step run stopped after step 25, resumed from its step-20 checkpoint
    monkeypatch.setenv("SELFSUP_FAULT_INJECT", "stop_at_step:25")
    with pytest.raises(RuntimeError, match="stopped the run"):
        pretrain(None, _args(smiles_file, name="stopped", **{"optim.max_steps": 40}))
    monkeypatch.delenv("SELFSUP_FAULT_INJECT")
    (stopped,) = (p for p in (smiles_file.parent / "runs").iterdir() if p.name.startswith("stop"))
    assert json.loads((stopped / "run.json").read_text())["status"] == "failed"
    run, resumed = resume(stopped)
    for res in (extended, resumed):
        for key in ("final_train_loss", "val_loss", "validity", "uniqueness", "novelty"):
            assert res[key] == straight[key], key
    for path in (short.path, stopped):
        assert "resumed from step 20" in (path / "log.txt").read_text()
    steps = [r["step"] for r in run.read_metrics() if "train_loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]  # rows after the checkpoint not doubled
    a = safe_torch_load(run.path / "model.pt")["state_dict"]
    b = safe_torch_load(short.path / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run without overrides is returned as is
    assert resume(run.path)[1] == resumed


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_stopped_and_resumed_run_equals_the_uninterrupted_one_file_by_file(
        smiles_file, monkeypatch, precision):
    """The weights in model.pt, the metrics.jsonl rows (but the speed), samples.csv and
    results.json (but the timings) of a run stopped after step 25 and resumed from its step-20
    checkpoint are those of the uninterrupted run; also in bf16 mixed precision (Fabric's
    autocast, on the CPU here)."""
    extra = {"optim.max_steps": 40, "trainer.precision": precision}
    straight, res_a, run, res_b = pretrain_straight_and_resumed(
        lambda name: _args(smiles_file, name=name, **extra), smiles_file.parent / "runs",
        monkeypatch, stop_step=25)

    def rows(r: Run) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in r.read_metrics()]

    assert rows(straight) == rows(run)
    assert (straight.path / "samples.csv").read_bytes() == (run.path / "samples.csv").read_bytes()
    timings = ("train_seconds", "tokens_per_s")
    assert ({k: v for k, v in res_a.items() if k not in timings}
            == {k: v for k, v in res_b.items() if k not in timings})
    assert ("bf16-mixed" in res_a["device"]) == (precision == "bf16-mixed")


def test_the_fabric_step_in_32_bit_is_the_plain_pytorch_step(vocab):
    from lightning.fabric import Fabric

    from selfsup.chem.lstm.corpus import batch_tokens
    from selfsup.device import gradient_step

    enc = encode_smiles(corpus(), vocab)
    plain, wrapped = tiny(vocab).train(), tiny(vocab).train()
    adam = torch.optim.Adam(plain.parameters(), lr=0.01)
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    module = fabric.setup_module(wrapped)
    optimizer = fabric.setup_optimizers(torch.optim.Adam(wrapped.parameters(), lr=0.01))
    for step in range(5):
        tokens = batch_tokens(enc, torch.arange(step * 32, step * 32 + 32), "cpu")
        gradient_step(plain, plain.loss(tokens), adam, grad_clip=0.5)
        with fabric.autocast():
            loss = module.loss(tokens)
        gradient_step(module, loss, optimizer, grad_clip=0.5, fabric=fabric)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), wrapped.parameters()))
