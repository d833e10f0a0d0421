"""The shipped strong prior (issue 24): its dataset-registry entry (ordered sources, checked by
hash) and `selfsup chem optimize` falling back to it when no prior= is given. A tiny prior is
written by the test; offline, seeded, seconds."""

import hashlib

import pytest
import torch
import yaml

from selfsup.chem.cli import _shipped_prior
from selfsup.chem.lstm import SmilesLSTM, SmilesLSTMConfig
from selfsup.chem.molecules import Vocabulary
from selfsup.cli import main
from selfsup.data import fetch, get_spec, registry
from selfsup.data.catalog import STRONG_PRIOR, STRONG_PRIOR_DIR, strong_prior_spec
from selfsup.data.sources import ManualSource, SystemPathSource
from selfsup.errors import ConfigError, DataNotFoundError

POOL = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "OC(=O)CCc1ccccc1"]
SMALL = {"gegl.n_apprentice": 16, "gegl.n_expert": 16, "gegl.queue_size": 16,
         "gegl.imitation_steps": 2, "gegl.imitation_batch": 16, "gegl.sample_max_len": 30}


@pytest.fixture()
def tiny_prior(tmp_path):
    """An untrained 1 x 8 SMILES LSTM saved as <tmp>/repo/model.pt, and its sha256."""
    vocab = Vocabulary.build(POOL)
    torch.manual_seed(0)
    model = SmilesLSTM(SmilesLSTMConfig(len(vocab), embed_dim=8, hidden_dim=8, n_layers=1,
                                        dropout=0.0))
    path = model.save(tmp_path / "repo" / "model.pt", vocab)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def shipped(monkeypatch):
    """Swap the registry entry for one the test makes; the real one is put back after."""
    real = get_spec(STRONG_PRIOR)

    def use(spec):
        registry.register(spec, replace=True)

    yield use
    registry.register(real, replace=True)


def test_the_real_entry_reads_the_repository_copy_then_a_hand_placed_file():
    spec = get_spec(STRONG_PRIOR)
    assert spec.kind == "model" and spec.files == ("model.pt",)
    kinds = [type(s) for s in spec.sources]
    assert kinds == [SystemPathSource, ManualSource]
    assert str(spec.sources[0].dirs[0]).endswith(STRONG_PRIOR_DIR)
    sha = spec.sources[0].sha256.get("model.pt")
    assert spec.fetchable == (sha is not None)  # never fetched unchecked
    assert all(s.sha256.get("model.pt") == sha for s in spec.sources)


def test_fetch_checks_the_hash(tiny_prior, tmp_path, shipped):
    path, sha = tiny_prior
    shipped(strong_prior_spec(path.parent, sha))
    got = fetch(STRONG_PRIOR, root=tmp_path / "data") / "model.pt"
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha
    model, vocab = SmilesLSTM.load(got)
    assert model.config.hidden_dim == 8 and len(vocab) == model.config.vocab_size
    # another file under the same name is refused by every source
    shipped(strong_prior_spec(path.parent, "0" * 64))
    with pytest.raises(DataNotFoundError, match="(?s)sha256.*placed by hand"):
        fetch(STRONG_PRIOR, root=tmp_path / "other")
    assert not strong_prior_spec(path.parent, None).fetchable


def test_shipped_prior_fills_in_only_a_missing_prior(tiny_prior, tmp_path, shipped):
    path, sha = tiny_prior
    shipped(strong_prior_spec(path.parent, sha))
    root = f"data_root={tmp_path / 'data'}"
    (override,) = _shipped_prior(None, ["optimizer=gegl", root])
    assert override == f"prior={tmp_path / 'data' / STRONG_PRIOR / 'model.pt'}"
    for opt in ("lstm_hc", "reinvent", "prior_only", "gegl_no_expert"):
        assert _shipped_prior(None, [f"optimizer={opt}", root]) == (override,)
    assert _shipped_prior(None, ["optimizer=graph_ga", root]) == ()
    assert _shipped_prior(None, ["optimizer=gegl", "prior=mine.pt", root]) == ()


def test_optimize_gegl_without_prior_runs_from_the_shipped_one(tiny_prior, tmp_path, shipped,
                                                                monkeypatch):
    path, sha = tiny_prior
    shipped(strong_prior_spec(path.parent, sha))
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    pool = tmp_path / "pool.smi"
    pool.write_text("\n".join(POOL) + "\n")
    torch.set_num_threads(1)
    rc = main(["chem", "optimize", "--optimizer", "gegl", "--objective", "qed", "--budget", "20",
               f"start_pool={pool}", f"run_root={tmp_path / 'runs'}", "checkpoint_every=1000",
               *[f"{k}={v}" for k, v in SMALL.items()]])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["prior"] == str(tmp_path / "data" / STRONG_PRIOR / "model.pt")
    assert cfg["optimizer"] == "gegl"
    assert (run / "results.json").is_file()


def test_without_a_shipped_prior_the_error_names_the_fix(tiny_prior, tmp_path, shipped):
    path, sha = tiny_prior
    shipped(strong_prior_spec(path.parent, None))  # this version ships none
    with pytest.raises(ConfigError, match="(?s)ships none yet.*prior=RUN/model.pt.*"
                                          "pretrain_zinc_strong.yaml"):
        _shipped_prior(None, ["optimizer=gegl"])
    shipped(strong_prior_spec(tmp_path / "nowhere", sha))  # shipped, but not on this machine
    with pytest.raises(ConfigError, match="(?s)not available here.*placed by hand.*"
                                          "prior=RUN/model.pt"):
        _shipped_prior(None, ["optimizer=gegl", f"data_root={tmp_path / 'data'}"])


def test_the_demo_uses_the_shipped_prior_when_there_is_one(tiny_prior, tmp_path, shipped,
                                                           monkeypatch):
    from selfsup.demo import _shipped_prior as demo_prior

    path, sha = tiny_prior
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    shipped(strong_prior_spec(path.parent, None))  # none shipped: the demo pretrains its own
    assert demo_prior() is None
    shipped(strong_prior_spec(tmp_path / "nowhere", sha))  # shipped, not on this machine
    assert demo_prior() is None
    shipped(strong_prior_spec(path.parent, sha))
    (path.parent / "results.json").write_text('{"validity": 0.961, "n_samples": 10000}')
    got, info = demo_prior()
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha
    assert info == {"validity": 0.961, "n_samples": 10000}
