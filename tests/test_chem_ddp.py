"""Data-parallel (DDP) chemistry training on Lightning Fabric: two processes on gloo, CPU.

SMILES LSTM pretraining and template-MLP training with ``trainer.devices=2
trainer.strategy=ddp`` run as the command line does (rank 0 re-runs it for rank 1); they end with
the same kind of run folder and checkpoint as a one-process run, each process trains on its own
half of every epoch's rows (recorded by the ``SELFSUP_RECORD_ROWS`` test hook), and a stopped
two-process run resumes to the weights of the uninterrupted one. The tiny data sets are those of
``test_chem_lstm.py`` and ``test_retro_mlp.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.device import setup_fabric, shard_order
from selfsup.errors import ConfigError
from selfsup.io import safe_torch_load

TESTS = Path(__file__).resolve().parent


def _test_module(name: str):
    """Another test file as a module (for its tiny data; the tests folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_ddp_{name}", TESTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _selfsup(args: list[str], **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    env.pop("LOCAL_RANK", None)
    env["PYTHONPATH"] = str(TESTS.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _rows(folder: Path) -> dict[tuple[int, int], list[int]]:
    """``{(epoch, rank): rows}`` from the SELFSUP_RECORD_ROWS files."""
    out = {}
    for path in sorted(folder.glob("rows-*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[(rec["epoch"], rec["rank"])] = rec["rows"]
    return out


def _status(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["status"]


# ------------------------------------------------------------------------------ the pieces


def test_shard_order_splits_a_permutation_like_distributed_sampler():
    order = torch.tensor([4, 0, 3, 1, 2, 5])
    assert shard_order(order, 0, 1) is order
    assert shard_order(order, 0, 2).tolist() == [4, 3, 2]
    assert shard_order(order, 1, 2).tolist() == [0, 1, 5]
    # 7 rows over 2 processes: padded with the first row, 4 each
    seven = np.array([6, 2, 0, 5, 1, 3, 4])
    assert shard_order(seven, 0, 2).tolist() == [6, 0, 1, 4]
    assert shard_order(seven, 1, 2).tolist() == [2, 5, 3, 6]
    assert sorted(shard_order(seven, 0, 3).tolist() + shard_order(seven, 1, 3).tolist()
                  + shard_order(seven, 2, 3).tolist()) == [0, 1, 2, 2, 3, 4, 5, 6, 6]


def test_devices_and_strategy_are_checked():
    with pytest.raises(ConfigError, match="trainer.devices=0"):
        setup_fabric("cpu", "32-true", devices=0)
    with pytest.raises(ConfigError, match="trainer.strategy='fsdp'"):
        setup_fabric("cpu", "32-true", devices=2, strategy="fsdp")
    from selfsup.chem.lstm import pretrain
    from selfsup.chem.retro.training.train_single_step import load_single_step_config

    with pytest.raises(ConfigError, match="trainer.strategy"):
        load_single_step_config(None, ["trainer.strategy=ddp_spawn"])
    with pytest.raises(ConfigError, match="trainer.devices"):
        pretrain(None, ["trainer.devices=0"])
    fabric, _ = setup_fabric("cpu", "32-true")  # the default: one device, as before
    assert fabric.world_size == 1 and type(fabric.strategy).__name__ == "SingleDeviceStrategy"


# ------------------------------------------------------------------------------ LSTM pretraining


def _lstm_args(smiles: Path, root: Path, **extra) -> list[str]:
    base = {
        "data.dataset": str(smiles), "data.val_size": 19, "data.max_len": 40,
        "model.embed_dim": 16, "model.hidden_dim": 32, "model.n_layers": 2,
        "model.dropout": 0.1, "optim.batch_size": 16, "optim.lr": 0.01, "optim.epochs": 2,
        "eval.n_samples": 20, "eval.val_every_n_steps": 5, "trainer.log_every_n_steps": 2,
        "trainer.checkpoint_every_n_steps": 3, "trainer.threads": 1,
        "trainer.accelerator": "cpu", "run_root": str(root), "data.root": str(root / "data"),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def lstm_runs(tmp_path_factory):
    """A one-process run (in this process) and a two-process run (the command line) of the same
    config: 179 molecules, 19 held out, 160 to train on, batches of 16, two epochs."""
    from selfsup.chem.lstm import pretrain

    tmp = tmp_path_factory.mktemp("lstm_ddp")
    smiles = tmp / "tiny.smi"
    smiles.write_text("SMILES\n" + "\n".join(_test_module("test_chem_lstm").corpus()) + "\n")
    one, res_one = pretrain(None, _lstm_args(smiles, tmp / "runs", name="one"))
    (tmp / "rows").mkdir()
    two = _selfsup(["chem", "pretrain", *_lstm_args(smiles, tmp / "runs", name="two",
                                                   **{"trainer.devices": 2,
                                                      "trainer.strategy": "ddp"})],
                   SELFSUP_RECORD_ROWS=str(tmp / "rows"))
    assert two.returncode == 0, two.stderr[-3000:]
    (two_dir,) = (tmp / "runs").glob("two-*")
    return {"tmp": tmp, "smiles": smiles, "one": one.path, "res_one": res_one, "two": two_dir,
            "rows": _rows(tmp / "rows"), "stdout": two.stdout}


def test_lstm_pretraining_over_two_processes_ends_like_a_one_process_run(lstm_runs):
    from selfsup.chem.lstm import SmilesLSTM
    from selfsup.chem.lstm.training import _epoch_order

    one, two = lstm_runs["one"], lstm_runs["two"]
    for d in (one, two):
        assert _status(d) == "finished"
        assert {p.name for p in d.iterdir()} >= {"model.pt", "vocab.json", "samples.csv",
                                                  "results.json", "metrics.jsonl", "log.txt"}
    c1 = safe_torch_load(one / "checkpoints" / "last.ckpt")
    c2 = safe_torch_load(two / "checkpoints" / "last.ckpt")
    assert c1.keys() == c2.keys() and c1["model"].keys() == c2["model"].keys()
    assert all(c1["model"][k].shape == c2["model"][k].shape for k in c1["model"])
    assert c1["step"] == 20 and c2["step"] == 10  # per-process batches of 16: half the steps
    m1, v1 = SmilesLSTM.load(one / "model.pt")
    m2, v2 = SmilesLSTM.load(two / "model.pt")
    assert v1.to_dict() == v2.to_dict() and m1.config == m2.config
    assert all(torch.equal(c2["model"][k], v) for k, v in m2.state_dict().items())
    res_two = json.loads((two / "results.json").read_text())
    assert res_two.keys() == lstm_runs["res_one"].keys()
    assert res_two["steps"] == 10 and res_two["epochs"] == 2.0 and res_two["n_train"] == 160
    assert res_two["final_train_loss"] < 3.0
    # only rank 0 wrote: one metrics row per logged step, one results table printed
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss" in r] == [2, 4, 6, 8, 10]
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 10]
    assert "2 processes (ddp)" in (two / "log.txt").read_text()
    assert lstm_runs["stdout"].count("run directory:") == 1
    # each process trained on its own half of every epoch, in the seeded global order
    seen = lstm_runs["rows"]
    assert sorted(seen) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for epoch in (0, 1):
        r0, r1 = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(r0) == len(r1) == 80 and not set(r0) & set(r1)
        assert sorted(r0 + r1) == list(range(160))
        order = _epoch_order(0, epoch, 160).tolist()
        assert r0 == order[0::2] and r1 == order[1::2]
    assert seen[(0, 0)] != seen[(1, 0)]


def test_a_stopped_two_process_pretraining_resumes_to_the_uninterrupted_weights(lstm_runs):
    """Stopped after step 7 (mid-epoch 1), resumed from its step-6 checkpoint, on two
    processes again: the weights and logged steps of the uninterrupted two-process run."""
    tmp = lstm_runs["tmp"]
    args = _lstm_args(lstm_runs["smiles"], tmp / "runs", name="stopped",
                      **{"trainer.devices": 2, "trainer.strategy": "ddp"})
    stopped = _selfsup(["chem", "pretrain", *args], SELFSUP_FAULT_INJECT="stop_at_step:7")
    assert stopped.returncode != 0 and "stopped the run after step 7" in stopped.stderr
    (run_dir,) = (tmp / "runs").glob("stopped-*")
    assert safe_torch_load(run_dir / "checkpoints" / "last.ckpt")["step"] == 6
    again = _selfsup(["chem", "pretrain", "--resume", str(run_dir)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert _status(run_dir) == "finished"
    assert "resumed from step 6" in (run_dir / "log.txt").read_text()
    a = safe_torch_load(lstm_runs["two"] / "model.pt")["state_dict"]
    b = safe_torch_load(run_dir / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def losses(d: Path) -> dict[int, float]:
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["train_loss"] for r in rows if "train_loss" in r}

    straight, resumed = losses(lstm_runs["two"]), losses(run_dir)
    assert list(resumed) == [2, 4, 6, 8, 10]  # rows after the checkpoint not doubled
    assert resumed == pytest.approx(straight, rel=1e-9, abs=0)


# ------------------------------------------------------------------------------ template MLP


def test_template_mlp_training_over_two_processes_ends_like_a_one_process_run(tmp_path):
    from selfsup.chem.retro.models.mlp import MLPSingleStepModel, load_trained_model
    from selfsup.chem.retro.training.train_single_step import train_single_step

    data = _test_module("test_retro_mlp")
    root = tmp_path / "uspto_tiny"
    root.mkdir()
    data._write_split(root, "train", data.TRAIN, data.BAD_ROWS)
    data._write_split(root, "valid", data.VALID)
    data._write_split(root, "test", data.TEST)
    args = {"data.root": root, "data.cache_dir": root / "cache", "run_root": tmp_path / "runs",
            "model.hidden": 64, "model.dropout": 0.1, "optim.lr": 0.01, "optim.batch_size": 2,
            "optim.epochs": 3, "trainer.threads": 1, "eval.n_test": 0, "eval.top_k": "[1,2,5]",
            "trainer.device": "cpu"}
    one, res_one = train_single_step(None, [f"{k}={v}" for k, v in {**args, "name": "one"}.items()])
    (tmp_path / "rows").mkdir()
    two = _selfsup(["chem", "train-single-step",
                    *[f"{k}={v}" for k, v in {**args, "name": "two", "trainer.devices": 2,
                                              "trainer.strategy": "ddp"}.items()]],
                   SELFSUP_RECORD_ROWS=str(tmp_path / "rows"))
    assert two.returncode == 0, two.stderr[-3000:]
    (two_dir,) = (tmp_path / "runs").glob("two-*")
    assert _status(one.path) == _status(two_dir) == "finished"
    c1 = safe_torch_load(one.path / "checkpoints" / "last.pt")
    c2 = safe_torch_load(two_dir / "checkpoints" / "last.pt")
    assert c1.keys() == c2.keys() and c1["net"].keys() == c2["net"].keys()
    assert c1["format"] == c2["format"] and c2["epoch"] == 3 and c2["n_templates"] == 8
    m1, m2 = load_trained_model(one.path), load_trained_model(two_dir)
    assert isinstance(m2, MLPSingleStepModel) and m1.templates == m2.templates
    assert m1.net.state_dict().keys() == m2.net.state_dict().keys()
    res_two = json.loads((two_dir / "results.json").read_text())
    assert res_two.keys() == res_one.keys() and res_two["n_templates"] == 8
    rows = [json.loads(x) for x in (two_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # rank 0 alone logs
    assert "2 processes (ddp)" in (two_dir / "log.txt").read_text()
    # 8 training reactions: each process trained on 4 of every epoch, the two halves disjoint
    seen = _rows(tmp_path / "rows")
    assert sorted(seen) == [(e, r) for e in (1, 2, 3) for r in (0, 1)]
    for epoch in (1, 2, 3):
        r0, r1 = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(r0) == len(r1) == 4 and sorted(r0 + r1) == list(range(8))
        order = torch.randperm(8, generator=torch.Generator().manual_seed(epoch)).tolist()
        assert r0 == order[0::2] and r1 == order[1::2]
