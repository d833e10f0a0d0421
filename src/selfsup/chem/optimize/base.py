"""The shared optimisation loop: config, oracle context, outputs, resume by replay.

Resume: the oracle's call record is saved atomically every ``checkpoint_every`` calls. A resumed
run rebuilds the oracle cache from that record and replays the optimiser from the start with the
same seed: the optimiser is deterministic given the seed, so it asks for the same molecules in the
same order, those already paid for are answered from the cache at no budget cost, and the run
continues exactly where it was killed.

State snapshots (the apprentice optimisers: GEGL and its variants, LSTM hill climbing, REINVENT):
a replay re-does all the sampling and training the run had done, which for an hour-long 50k-call
run costs the hour again. So, at the end of a round and at most every ``state_every_seconds``,
such an optimiser saves everything its next rounds depend on (model and Adam state, every random
generator, queues, counters) to ``optimizer_state.pt`` in the run folder, right after saving the
call record (:meth:`OptimizationContext.save_state`). A resumed run loads the snapshot
(:meth:`OptimizationContext.load_state`, ``weights_only``) and replays from that round: the calls
between the snapshot and the record come from the cache as in a replay from the start, and the
run asks for the same molecules in the same order as an uninterrupted one. A snapshot that cannot
be read or does not fit the run (another optimiser, more calls than the record) is set aside with a
log line and the run replays from the start. A finished run deletes its snapshot. Graph GA has no
snapshot: its replay costs little next to its oracle calls.

Queue record (``queues.jsonl`` in the run folder, GEGL and its variants): one JSON line per
round, appended as the round ends (:meth:`OptimizationContext.log_queues`), with the round, the
oracle calls spent so far and what the optimiser's queues held. A resumed run first drops the
lines of rounds that ended after its saved call record (:meth:`OptimizationContext.open_queue_log`)
and its replay writes only the rounds after the last line kept, so the file holds every round
once, in order, as an uninterrupted run writes it. A run started before this record existed
(a call record but no ``queues.jsonl``) gets none: its replayed early rounds could not say how many
calls they had spent. Writing it draws no random number and changes no call.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, InputError
from ...io import (
    append_jsonl,
    atomic_torch_save,
    atomic_write_text,
    dumps_json,
    read_text_maybe_gzip,
    safe_torch_load,
)
from ...progress import Progress
from ...runs import Run
from ..oracles import Oracle


@dataclass(frozen=True)
class GraphGAConfig:
    population_size: int = 120  # PMO / GuacaMol baseline defaults
    offspring_size: int = 70
    mutation_rate: float = 0.067
    max_heavy_atoms: int | None = None  # no cap by default (the reference capped at ~39)


@dataclass(frozen=True)
class GEGLConfig:
    """GEGL (gegl.py). Budgeted defaults; the paper's are in configs/chem/gegl_paper.yaml."""

    n_apprentice: int = 100  # SMILES sampled from the apprentice per round (paper: 8192)
    n_expert: int = 100  # expert children per round (paper: 8192)
    queue_size: int = 100  # K of each max-reward queue (paper: 1024)
    imitation_steps: int = 8  # Adam steps per round (paper: 8)
    imitation_batch: int = 64  # SMILES per step (paper: 256)
    # "bf16": bfloat16 autocast of the imitation forward (2.3x imitation, 1.8x a whole run on a
    # CPU with AMX, benchmarks/results/gegl_speed.md; other rounding, so other seeded results);
    # "32": float32, bit-exact with earlier runs
    imitation_precision: str = "32"
    # > 1: each imitation batch runs as this many length-sorted groups, less padding (1.5x
    # imitation, 1.3x a whole run at 4; the same loss with other rounding, so seeded results
    # may differ); 1: one batch
    imitation_length_groups: int = 1
    lr: float = 1e-3  # Adam, kept across rounds (paper: 1e-3)
    mutation_rate: float = 0.01  # expert mutation probability per child (paper: 0.01)
    sample_max_len: int = 100  # most tokens per sampled SMILES (<eos> included)
    temperature: float = 1.0  # sampling temperature of the apprentice
    use_expert: bool = True  # False: the gegl_no_expert ablation
    learn: bool = True  # False: the gegl_no_learning ablation (apprentice stays the prior)
    patience: int = 20  # stop after this many rounds in a row without a molecule new to the run
    stale_rounds: int = 1000  # ... or this many that left the run's top-10 unchanged (0: off)
    device: str = "cpu"  # cpu | cuda | auto (replay-resume is exact on the same device only)


@dataclass(frozen=True)
class LSTMHCConfig:
    """SMILES-LSTM hill climbing (lstm_hc.py), sized for 1k-10k calls."""

    n_samples: int = 256  # SMILES sampled per round (GuacaMol: 1024)
    keep_top: int = 128  # best molecules fine-tuned on (GuacaMol: 512)
    epochs_per_round: float = 2.0  # passes over the top-k per round
    batch_size: int = 64  # (GuacaMol: 256)
    lr: float = 1e-3
    sample_max_len: int = 100
    temperature: float = 1.0
    patience: int = 20  # stop after this many rounds in a row without a new molecule
    stale_rounds: int = 1000  # ... or this many that left the run's top-10 unchanged (0: off)
    device: str = "cpu"  # cpu | cuda | auto
    # opt-in speed settings of the fine-tuning step, as GEGL's imitation_precision and
    # imitation_length_groups (they change the arithmetic, so seeded runs differ)
    precision: str = "32"  # "32" | "bf16" (bfloat16 autocast of the forward)
    length_groups: int = 1  # length-sorted groups per batch (less padding)


@dataclass(frozen=True)
class ReinventConfig:
    """REINVENT (reinvent.py); PMO's defaults."""

    batch_size: int = 64  # sequences sampled per step (PMO: 64)
    lr: float = 5e-4  # Adam on the agent (PMO: 5e-4)
    sigma: float = 500.0  # weight of the score in the augmented likelihood (PMO: 500)
    experience_replay: int = 24  # memory molecules added to each step's loss (PMO: 24)
    memory_size: int = 100  # best molecules kept for replay
    sample_max_len: int = 100
    patience: int = 20  # stop after this many steps in a row without a new molecule
    stale_rounds: int = 1000  # ... or this many that left the run's top-10 unchanged (0: off)
    device: str = "cpu"  # cpu | cuda | auto
    # opt-in: "bf16" runs the prior's and the agent's likelihood forwards under bfloat16 autocast
    # (the loss stays float32); it changes the arithmetic, so seeded runs differ
    precision: str = "32"


# The opt-in speed setting of every apprentice optimiser, as overrides: bfloat16 autocast of the
# LSTM's training forwards (graph GA has no LSTM). It changes the arithmetic, so seeded runs differ
# from float32 ones (GEGL's whole runs agree within their seed spread:
# benchmarks/results/gegl_speed.md). Length-sorted groups (`*.length_groups`) are left out: with
# the shipped 3 x 512 prior on a CPU with bf16 matrix units, one padded batch of 64 beats 4 groups
# of 16 (whole 1,000-call runs: GEGL 9% and LSTM hill climbing 12% fewer CPU seconds).
BF16_SPEED_OVERRIDES: tuple[str, ...] = (
    "gegl.imitation_precision=bf16", "lstm_hc.precision=bf16", "reinvent.precision=bf16")


@dataclass(frozen=True)
class OptimizeConfig:
    name: str = "optimize"
    seed: int = 0
    run_root: str | None = None
    objective: str = "qed"  # any name of `selfsup chem objectives`
    budget: int = 10000  # unique oracle calls (PMO: 10k)
    optimizer: str = "graph_ga"
    start_pool: str = "zinc250k"  # zinc250k | a file of SMILES (one per line)
    start_pool_size: int | None = None  # default: the optimiser's population size
    data_root: str | None = None
    keep_stereo: bool = True
    # canonical SMILES longer than this are not scored (like invalid ones, no oracle call, counted
    # in n_too_long); null: no limit. 100 is GEGL's limit (its reference code; penalized logP
    # otherwise rewards endless chains) and GuacaMol's ChEMBL filter: it also bounds a molecule
    # at 100 heavy atoms, so one huge molecule cannot stall a scorer (deco_hop took 160 s on a
    # 300-carbon chain). ZINC250k: at most 38 heavy atoms; 13 of its 249,456 canonical SMILES
    # (written with stereo) are longer than 100 characters.
    max_smiles_length: int | None = 100
    n_jobs: int = 1  # processes for the genetic operators
    checkpoint_every: int = 500  # oracle calls between saves of the call record
    # seconds between state snapshots of an apprentice optimiser (module docstring); 0: every
    # round; null: none (a killed run replays from its start)
    state_every_seconds: float | None = 300.0
    graph_ga: GraphGAConfig = field(default_factory=GraphGAConfig)
    prior: str | None = None  # model.pt of a pretrained SMILES LSTM (gegl, lstm_hc, reinvent, ...)
    gegl: GEGLConfig = field(default_factory=GEGLConfig)
    lstm_hc: LSTMHCConfig = field(default_factory=LSTMHCConfig)
    reinvent: ReinventConfig = field(default_factory=ReinventConfig)


class OptimizationContext:
    """What an optimiser sees: ``score`` (budgeted, cached, recorded), the start pool, the run."""

    def __init__(self, oracle: Oracle, start_pool: list[str], run: Run | None,
                 checkpoint_every: int = 500, checkpoint_seconds: float = 60.0,
                 state_every_seconds: float | None = None) -> None:
        self.oracle = oracle
        self.state_every_seconds = state_every_seconds  # None: no state snapshots
        self._state_saved_at = time.perf_counter()
        self.start_pool = start_pool
        self.run = run
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds  # a slow run saves its record this often
        self._last_saved = oracle.n_calls
        self._last_logged = 0
        self.t0 = self._saved_at = time.perf_counter()
        self.stop_reason: str | None = None  # why an optimiser stopped before the budget
        self.progress: Progress | None = None  # calls spent and best score, on the command line
        self._best = -math.inf
        self._seen = 0  # oracle records already looked at for the best score
        self._queue_log: Path | None = None  # queues.jsonl, once open_queue_log opened it
        self._rounds_logged = 0  # the last round in it (kept on resume: the replay skips them)

    @property
    def exhausted(self) -> bool:
        return self.oracle.exhausted

    def within_limit(self, canonical: Sequence[str]) -> list[str]:
        """The canonical SMILES the oracle will score: those no longer than its ``max_length``
        (all of them without one). GEGL's queues take only these, as its reference filtered
        samples and children by length before scoring."""
        return [s for s in canonical if self.oracle.fits(s)]

    def open_queue_log(self) -> bool:
        """Start the run's queue record (``queues.jsonl``, see the module docstring), before the
        optimiser's first oracle call; True if rounds will be recorded.

        A fresh run creates the file empty. A resumed run keeps the lines of the rounds that
        ended within its saved call record (a prefix of rounds 1, 2, ...), drops the rest, and
        :meth:`log_queues` then skips the rounds kept, which the replay passes again. No run
        folder, or a resumed run that has calls but no file: nothing is recorded."""
        if self.run is None:
            return False
        path = self.run.path / QUEUE_LOG
        saved = self.oracle.n_calls  # the call record the run resumed from (0: a fresh run)
        if not path.is_file():
            if saved:
                self.run.logger().info("no %s in this resumed run (it started before the "
                                       "record existed): its rounds are not recorded",
                                       QUEUE_LOG)
                return False
            atomic_write_text(path, "")
        else:
            kept = []
            for row in read_queue_log(path):
                if row["round"] != len(kept) + 1 or row["calls"] > saved:
                    break
                kept.append(row)
            # the kept lines as they were written (the floats round-trip exactly through JSON)
            atomic_write_text(path, "".join(dumps_json(r) + "\n" for r in kept))
            self._rounds_logged = len(kept)
        self._queue_log = path
        return True

    def log_queues(self, round_index: int, queues: dict[str, list[list[Any]]],
                   **extra: Any) -> None:
        """Append round ``round_index``'s line to ``queues.jsonl``: ``round``, ``calls`` (the
        oracle's unique calls at the end of the round), ``extra`` and ``queues`` (each queue's
        items best first, ``[smiles, score, origin]``). A round already in the file (kept on
        resume) is not written again; without :meth:`open_queue_log` nothing is written."""
        if self._queue_log is None or round_index <= self._rounds_logged:
            return
        if round_index != self._rounds_logged + 1:
            raise InputError(f"queue record: round {round_index} after round "
                             f"{self._rounds_logged}; rounds are logged in order")
        append_jsonl(self._queue_log, {"round": round_index, "calls": self.oracle.n_calls,
                                       **extra, "queues": queues})
        self._rounds_logged = round_index

    def load_state(self, optimizer: str) -> dict[str, Any] | None:
        """The state snapshot of a resumed run (module docstring), or None: a fresh run, no run
        folder, no snapshot, or one that does not fit this run (logged; the caller replays from
        the start). ``optimizer``: the name the snapshot was saved under."""
        if self.run is None or not self.oracle.n_calls:
            return None
        path = self.run.path / STATE_FILE
        if not path.is_file():
            return None
        log = self.run.logger()
        try:
            state = safe_torch_load(path)
        except InputError as exc:
            log.warning("%s; replaying the run from its start instead", exc)
            return None
        calls = state.get("calls") if isinstance(state, dict) else None
        if (not isinstance(calls, int) or state.get("format") != STATE_FORMAT
                or state.get("optimizer") != optimizer or calls > self.oracle.n_calls):
            log.warning("%s does not fit this run (optimizer %r, %s calls; the record holds %d); "
                        "replaying the run from its start instead", path,
                        state.get("optimizer") if isinstance(state, dict) else None, calls,
                        self.oracle.n_calls)
            return None
        log.info("resuming from the state of round %s (%d calls); the calls up to %d are "
                 "replayed from the record", state.get("round"), calls, self.oracle.n_calls)
        self._state_saved_at = time.perf_counter()
        return state

    def save_state(self, optimizer: str, build: Callable[[], dict[str, Any]]) -> bool:
        """At a round's end: when ``state_every_seconds`` have passed since the last snapshot (or
        the run's start), save the call record and then ``build()`` (tensors and plain data) as
        the run's state snapshot, both atomically; True if saved. Draws no random number."""
        if self.run is None or self.state_every_seconds is None or self.oracle.exhausted:
            return False
        if time.perf_counter() - self._state_saved_at < self.state_every_seconds:
            return False
        self._save_record()  # first, so that the snapshot's calls are never more than its
        atomic_torch_save({"format": STATE_FORMAT, "optimizer": optimizer,
                           "calls": self.oracle.n_calls, **build()},
                          self.run.path / STATE_FILE)
        self._state_saved_at = time.perf_counter()
        _fault_point("kill_after_state")
        return True

    def _save_record(self) -> None:
        """Save the oracle's call record atomically and note when (the next save counts from
        here)."""
        self.oracle.save_record(self.run.path / "oracle_calls.csv")
        self._last_saved = self.oracle.n_calls
        self._saved_at = time.perf_counter()

    def score(self, smiles: Sequence[str]) -> list[float]:
        """Scores of ``smiles`` (nan past the budget); logs and checkpoints as calls accrue."""
        scores = self.oracle(list(smiles))
        n = self.oracle.n_calls
        if self.progress is not None and self.progress.enabled and n > self._seen:
            self._best = max([self._best,
                              *(r.score for r in self.oracle.records_since(self._seen))])
            self._seen = n
            self.progress.update(n, best=self._best)
        if self.run is not None:
            if n // 100 > self._last_logged // 100:
                m = self.oracle.metrics()
                self.run.log_metrics({"step": n, "top1": m["top1"], "top10_mean": m["top10_mean"],
                                      "auc_top10": m["auc_top10"]})
                self._last_logged = n
            due = (n - self._last_saved >= self.checkpoint_every or self.oracle.exhausted
                   or (n > self._last_saved
                       and time.perf_counter() - self._saved_at >= self.checkpoint_seconds))
            if due:
                self._save_record()
                _fault_point("kill_after_checkpoint")
        return scores


def _fault_point(name: str) -> None:
    """Test hook: with ``SELFSUP_FAULT_INJECT=<name>`` the process dies here like a killed job."""
    if os.environ.get("SELFSUP_FAULT_INJECT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


QUEUE_LOG = "queues.jsonl"  # the per-round queue record of a run folder (module docstring)
STATE_FILE = "optimizer_state.pt"  # an apprentice optimiser's state snapshot (module docstring)
STATE_FORMAT = 1


def read_queue_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``queues.jsonl`` in order; a line cut by a kill (the last) is dropped."""
    import json

    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # cut by a kill: it and anything after it are replayed
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            break
        rows.append(row)
    return rows


Optimizer = Callable[[OptimizationContext, OptimizeConfig, np.random.Generator], None]
OPTIMIZERS: dict[str, Optimizer] = {}


def register(name: str) -> Callable[[Optimizer], Optimizer]:
    def deco(fn: Optimizer) -> Optimizer:
        OPTIMIZERS[name] = fn
        return fn

    return deco


def load_start_pool(cfg: OptimizeConfig) -> list[str]:
    """The molecules optimisers start from: ZINC250k (fetched) or a SMILES file."""
    if cfg.start_pool == "zinc250k":
        from ...data import molecules, registry

        return molecules.load_zinc250k(registry.fetch("zinc250k", root=cfg.data_root))
    path = Path(cfg.start_pool)
    if not path.is_file():
        raise ConfigError(
            f"start_pool '{cfg.start_pool}' is neither 'zinc250k' nor an existing SMILES file."
        )
    text = read_text_maybe_gzip(path, "start pool", "Pass a SMILES file, one per line.")
    return [ln.split()[0] for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def _write_outputs(run: Run, ctx: OptimizationContext, cfg: OptimizeConfig) -> dict[str, Any]:
    oracle = ctx.oracle
    records = oracle.records
    oracle.save_record(run.path / "oracle_calls.csv")
    ranked = sorted(records, key=lambda r: (-r.score, r.index))
    lines = ["rank,smiles,score,call"] + [
        f"{i + 1},{r.smiles},{r.score:.6g},{r.index}" for i, r in enumerate(ranked)
    ]
    atomic_write_text(run.artefact_dir / "molecules.csv", "\n".join(lines) + "\n")
    _plot_curve(records, run.artefact_dir / "learning_curve.png", cfg)
    _molecule_grid(ranked[:12], run.artefact_dir / "top_molecules.png")
    metrics = oracle.metrics()
    results: dict[str, Any] = {k: round(float(v), 6) for k, v in metrics.items()}
    obj = oracle.objective
    if hasattr(obj, "benchmark_score"):
        results["benchmark_score"] = round(float(obj.benchmark_score([r.score for r in records])),
                                           6)
    results.update(objective=cfg.objective, optimizer=cfg.optimizer, budget=cfg.budget,
                   seed=cfg.seed, wall_seconds=round(time.perf_counter() - ctx.t0, 2),
                   best_smiles=ranked[0].smiles if ranked else None,
                   top10=[{"smiles": r.smiles, "score": round(r.score, 6)} for r in ranked[:10]])
    return results


def _plot_curve(records, path: Path, cfg: OptimizeConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    scores = [r.score for r in records]
    best, top10 = [], []
    heap: list[float] = []
    for s in scores:
        heap = sorted(heap + [s], reverse=True)[:10]
        best.append(heap[0])
        top10.append(sum(heap) / 10.0)
    x = np.arange(1, len(scores) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, best, label="top-1")
    ax.plot(x, top10, label="top-10 mean")
    ax.scatter(x, scores, s=2, alpha=0.2, color="grey", label="each call")
    ax.set_xlabel("unique oracle calls")
    ax.set_ylabel(cfg.objective)
    ax.set_title(f"{cfg.optimizer} on {cfg.objective} (seed {cfg.seed})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def _molecule_grid(records, path: Path) -> None:
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols, legends = [], []
    for r in records:
        m = Chem.MolFromSmiles(r.smiles)
        if m is not None:
            mols.append(m)
            legends.append(f"{r.score:.3f}")
    if not mols:
        return
    img = Draw.MolsToGridImage(mols, molsPerRow=4, subImgSize=(220, 180), legends=legends)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def sample_pool(pool: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` molecules drawn without replacement from the start pool."""
    if not pool:
        raise InputError("the start pool is empty")
    idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in idx]


def finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
