"""benchmarks/gegl/guacamol_distribution.py (issue 24): our side samples a prior and merges the
rows; the GuacaMol side (its own venv) scores them. A tiny prior and training set made here;
the end-to-end test is skipped where the GuacaMol venv is absent."""

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import load_bench_script
from selfsup.chem.lstm import SmilesLSTM, SmilesLSTMConfig, train_likelihood
from selfsup.chem.molecules import Vocabulary, canonicalize_many

HEADS = ["", "O", "N", "Cl", "F", "N#C", "OC", "NC", "C(=O)O", "C(=O)N", "c1ccccc1", "c1ccncc1",
         "C1CCCCC1", "S", "C=C", "CC(C)", "OC(=O)C", "N(C)C", "C1CC1", "c1ccoc1"]
GUACAMOL_PYTHON = Path("/work/peers/guacamol-venv/bin/python")


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("gegl", "guacamol_distribution.py")


@pytest.fixture(scope="module")
def corpus():
    canon, n_bad = canonicalize_many([f"{h}{'C' * k}" for h in HEADS for k in range(1, 9)])
    assert n_bad == 0
    return list(dict.fromkeys(canon))


@pytest.fixture(scope="module")
def prior(tmp_path_factory, corpus):
    """A 1 x 32 SMILES LSTM trained 100 steps on the chain molecules, saved in 'tiny/'."""
    vocab = Vocabulary.build(corpus)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmilesLSTM(SmilesLSTMConfig(len(vocab), embed_dim=16, hidden_dim=32,
                                            n_layers=1, dropout=0.0))
        train_likelihood(model, corpus, vocab, steps=100, batch_size=32, lr=1e-2,
                         generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(threads)
    return model.save(tmp_path_factory.mktemp("p") / "tiny" / "model.pt", vocab)


def test_the_pool_covers_guacamols_sampling_loops(bench, prior):
    """At least 2 n samples and 1.05 n valid ones (whole batches), seeded: the same pool twice."""
    pool, info = bench.sample_pool(prior, 40, seed=3, temperature=1.0, max_len=40, batch_size=25)
    assert len(pool) == info["n_sampled"] and len(pool) % 25 == 0
    assert len(pool) >= 80 and info["n_valid"] >= math.ceil(1.05 * 40)
    assert bench.sample_pool(prior, 40, 3, 1.0, 40, 25)[0] == pool
    assert info["model"] == {"embed_dim": 16, "hidden_dim": 32, "n_layers": 1,
                             "vocab_size": info["model"]["vocab_size"]}


def test_notes_give_every_prior_beside_the_anchor(bench):
    entry = {"size": "3 x 512", "number_samples": 10000, "fcd_raw": 0.5, "command": "c",
             "started": "t", "prior": "p/model.pt", "n_sampled": 20000, "n_valid": 19000,
             "training_set": "ZINC250k", "exhausted": [],
             "scores": {m: 0.5 for m in bench.ANCHOR}}
    text = bench.notes_text({"b": entry, "a": {**entry, "exhausted": ["fcd"]}})
    lines = text.splitlines()
    assert lines[4].startswith("| a (3 x 512) | 10,000 | 0.500") and lines[5].startswith("| b ")
    assert "| 0.959 | 1.000 | 0.912 | 0.991 | 0.913 |" in text
    assert "ran out of samples: ['fcd']" in text and "not reachable" in text


@pytest.mark.skipif(not GUACAMOL_PYTHON.is_file(),
                    reason="the GuacaMol venv (benchmarks/peers/make_guacamol_venv.sh) is not on "
                           "this machine")
def test_guacamol_scores_the_samples_and_rows_merge(bench, prior, corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = {"setting": "guacamol-v2/50000-calls", "arm": "gegl", "metric": "score_sum",
             "mean": 1.0, "std": 0.0, "seeds": [1.0]}
    (out / "gegl_guacamol.json").write_text(json.dumps({"rows": [other],
                                                        "notes_sections": {"z": "kept"}}))
    training = tmp_path / "train.smi"
    training.write_text("\n".join(corpus) + "\n")
    args = ["--prior", str(prior), "--n-samples", "20", "--batch-size", "50", "--max-len", "40",
            "--training-set", str(training), "--out", str(out)]
    assert bench.main(args) == 0
    doc = json.loads((out / "gegl_guacamol.json").read_text())
    rows = {(r["setting"], r["arm"], r["metric"]): r for r in doc["rows"]}
    assert rows[("guacamol-v2/50000-calls", "gegl", "score_sum")] == other  # kept
    got = {m: rows[("prior/tiny", "smiles_lstm", m)]["mean"] for m in bench.ANCHOR}
    assert all(0.0 <= v <= 1.0 for v in got.values())
    entry = doc["distribution_learning"]["tiny"]
    assert got == entry["scores"] and entry["guacamol"]["versions"]["guacamol"] == "0.5.5"
    assert entry["fcd_raw"] >= 0 and math.isclose(got["fcd"], math.exp(-0.2 * entry["fcd_raw"]))
    # GuacaMol's validity is RDKit's parse of the first 20 samples, as our count gives it
    pool = json.loads(next(out.glob("guacamol-dist-tiny-*/samples.json")).read_text())
    from rdkit import Chem

    valid = sum(1 for s in pool[:20] if s and Chem.MolFromSmiles(s) is not None)
    assert got["validity"] == valid / 20
    md = (out / "gegl_guacamol.md").read_text()
    assert "kept" in md and "| prior/tiny | smiles_lstm | fcd |" in md
    # a second run of the same prior replaces its rows, never doubles them
    assert bench.main(args) == 0
    doc = json.loads((out / "gegl_guacamol.json").read_text())
    assert len(doc["rows"]) == 1 + len(bench.ANCHOR)
