import contextlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Runs and data caches of a test go to its own temporary folder."""
    monkeypatch.setenv("SELFSUP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    yield


def load_bench_script(name: str, script: str = "run.py"):
    """``benchmarks/<name>/<script>`` as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / name / script
    spec = importlib.util.spec_from_file_location(f"{name}_bench_{Path(script).stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------- a tiny Fashion-MNIST for the mosaic data set


def _rect_items(n: int, seed: int):
    """Fashion-MNIST-like items: (n, 28, 28) uint8 rectangles of 255, labels 0..9."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        h, w = rng.integers(8, 24, 2)
        r, c = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
        x[i, r : r + h, c : c + w] = 255
    return x, (np.arange(n) % 10).astype(np.int64)


@pytest.fixture
def fake_fmnist(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST in idx files (120 train, 40 test items) served by a fake fetch."""
    from selfsup.data import images as image_io
    from selfsup.data import registry
    from selfsup.vision import data as vdata

    d = tmp_path / "fmnist"
    for prefix, (x, y) in (("train", _rect_items(120, 1)), ("t10k", _rect_items(40, 2))):
        image_io.write_idx(d / f"{prefix}-images-idx3-ubyte", x)
        image_io.write_idx(d / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
    monkeypatch.setattr(registry, "fetch", lambda name, root=None, force=False: d)
    vdata._load_mosaic.cache_clear()
    yield d
    vdata._load_mosaic.cache_clear()


def short_vision_run(*extra: str) -> list[str]:
    """Overrides of a one-epoch vision run on 96 synthetic images (batch 32, 32 for validation)
    that logs every step: the short CPU run of the method tests; ``extra`` adds model sizes."""
    return ["data.name=synthetic", "data.synthetic_size=96", "data.val_size=32",
            "optim.epochs=1", "optim.batch_size=32", "trainer.progress=false",
            "trainer.log_every_n_steps=1", *extra]


def chain_corpus(heads: list[str]) -> list[str]:
    """Small molecules for SMILES-LSTM tests: each head group on a carbon chain of 1-8 atoms,
    canonical and de-duplicated in order."""
    from selfsup.chem.molecules import canonicalize_many

    canon, n_bad = canonicalize_many([f"{head}{'C' * k}" for head in heads for k in range(1, 9)])
    assert n_bad == 0
    return list(dict.fromkeys(canon))


@pytest.fixture()
def one_torch_thread():
    """Run the test with one torch thread (restored afterwards)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pretrain_straight_and_resumed(make_args, runs_dir: Path, monkeypatch, stop_step: int):
    """Run ``selfsup chem pretrain`` twice from ``make_args(name)``: once straight, once stopped
    after ``stop_step`` (fault injection) and resumed from its last checkpoint. Returns
    ``(straight_run, straight_results, resumed_run, resumed_results)``, after checking that the
    two runs' model.pt weights are equal."""
    import torch

    from selfsup.chem.lstm import pretrain, resume
    from selfsup.io import safe_torch_load

    straight, res_a = pretrain(None, make_args("straight"))
    monkeypatch.setenv("SELFSUP_FAULT_INJECT", f"stop_at_step:{stop_step}")
    with pytest.raises(RuntimeError, match="stopped the run"):
        pretrain(None, make_args("stopped"))
    monkeypatch.delenv("SELFSUP_FAULT_INJECT")
    (stopped,) = (p for p in runs_dir.iterdir() if p.name.startswith("stop"))
    run, res_b = resume(stopped)
    a = safe_torch_load(straight.path / "model.pt")["state_dict"]
    b = safe_torch_load(run.path / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return straight, res_a, run, res_b


def random_retro_world(seed: int, n_mols: int, max_entries: int):
    """A seeded random retrosynthesis world for brute-force checks of the planners:
    ``(table, stock_smiles, target)``; molecules ``C`` .. ``C * n_mols``, each with 1 to
    ``max_entries`` reactions of 1-2 reactants (no self-reactions, no repeats) and a probability
    in [0.02, 1]; 4 of the first ``n_mols - 1`` molecules in stock; the target the last one."""
    import random

    rng = random.Random(seed)
    mols = ["C" * n for n in range(1, n_mols + 1)]
    table = {}
    for m in mols:
        entries = []
        for _ in range(rng.randint(1, max_entries)):
            reactants = tuple(sorted(rng.sample(mols, rng.randint(1, 2))))
            if m in reactants or any(reactants == e[0] for e in entries):
                continue
            entries.append((reactants, round(rng.uniform(0.02, 1.0), 3)))
        table[m] = entries
    return table, rng.sample(mols[:-1], 4), mols[-1]


def brute_force_routes(table, stock, mol, above, depth, max_depth):
    """(min cost, number) of the acyclic routes of ``mol`` within ``max_depth`` reactions, by
    enumeration from the definitions (reaction cost -log clip(p))."""
    import math

    from selfsup.chem.retro.core.routes import reaction_cost

    if mol in stock:
        return 0.0, 1
    if depth >= max_depth:
        return math.inf, 0
    best, count = math.inf, 0
    for reactants, p in table.get(mol, []):
        if any(r in above | {mol} for r in reactants):
            continue
        cost, n = reaction_cost(p), 1
        for r in reactants:
            c, k = brute_force_routes(table, stock, r, above | {mol}, depth + 1, max_depth)
            cost, n = cost + c, n * k
        best, count = min(best, cost), count + n
    return best, count


class Killed(BaseException):
    """Stands for SIGKILL: raised where the fault-injection hook would kill the process."""


@contextlib.contextmanager
def killed_at(monkeypatch, point: str, nth: int = 1):
    """The block runs with ``SELFSUP_FAULT_INJECT=point`` and dies (raises :class:`Killed`,
    expected) at the ``nth`` time the hook fires; the earlier times it goes on."""
    fired = []

    def kill(pid, sig):
        fired.append(sig)
        if len(fired) == nth:
            raise Killed

    with monkeypatch.context() as m:
        m.setenv("SELFSUP_FAULT_INJECT", point)
        m.setattr(os, "kill", kill)
        with pytest.raises(Killed):
            yield
