"""What the apprentice optimisers share (GEGL and its ablations, LSTM hill climbing, REINVENT):
the device, the pretrained prior, seeded torch generators, sampling to canonical SMILES, score
weights, the start-pool seeding of a queue, and the round counter that decides when to stop.

Determinism: every torch generator is seeded from the run's ``numpy`` generator
(:func:`torch_generator`), so a replay (resume) asks for the same molecules in the same order on
the same device and thread count.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from ..lstm import SmilesLSTM
from ..molecules import Vocabulary, canonical_smiles
from .base import OptimizationContext, OptimizeConfig, sample_pool
from .queues import MaxRewardQueue

__all__ = [
    "Progress",
    "load_prior",
    "random_state",
    "resolve_device",
    "sample_canonical",
    "score_weights",
    "seed_queue",
    "set_random_state",
    "torch_generator",
]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when visible) as a torch device."""
    from ...device import choose_device

    return torch.device(choose_device(name).accelerator)


def load_prior(cfg: OptimizeConfig, device: torch.device | str = "cpu"
               ) -> tuple[SmilesLSTM, Vocabulary]:
    """The pretrained SMILES LSTM at ``cfg.prior`` (eval mode, on ``device``) and its vocabulary.

    Raises ConfigError when ``prior`` is unset or names no file, saying how to make one.
    """
    how = ("pretrain one first (selfsup chem pretrain --config configs/chem/pretrain_zinc_cpu.yaml)"
           " and pass prior=RUN/model.pt")
    if cfg.prior is None:
        raise ConfigError(f"optimizer '{cfg.optimizer}' needs a pretrained SMILES LSTM prior; "
                          f"{how}")
    if not Path(cfg.prior).is_file():
        raise ConfigError(f"prior={cfg.prior!r} is not a file; {how}")
    model, vocab = SmilesLSTM.load(cfg.prior, map_location=device)
    return model.to(device).eval(), vocab


def torch_generator(rng: np.random.Generator, device: torch.device | str = "cpu"
                    ) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``rng`` (draws one integer from it)."""
    device = torch.device(device)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    return gen.manual_seed(int(rng.integers(0, 2**63 - 1)))


def random_state(rng: np.random.Generator, generators: dict[str, torch.Generator],
                 device: torch.device) -> dict:
    """Every random generator a loop draws from, for a state snapshot: ``rng``'s bit generator,
    torch's global one (dropout), the named ``generators`` and, on CUDA, the device's own."""
    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(),
             "generators": {k: g.get_state() for k, g in generators.items()}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_random_state(state: dict, rng: np.random.Generator,
                     generators: dict[str, torch.Generator], device: torch.device) -> None:
    """Inverse of :func:`random_state`: set ``rng`` and the generators in place."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def sample_canonical(model: SmilesLSTM, vocab: Vocabulary, n: int, *, max_len: int,
                     temperature: float, generator: torch.Generator, device: torch.device,
                     keep_stereo: bool = True) -> list[str]:
    """``n`` samples -> the unique valid canonical SMILES among them, in sample order."""
    raw = model.sample(n, vocab, max_len=max_len, temperature=temperature, generator=generator,
                       device=device)
    out = (canonical_smiles(s, keep_stereo=keep_stereo) if s else None for s in raw)
    return list(dict.fromkeys(s for s in out if s))


def score_weights(scores: Sequence[float]) -> np.ndarray:
    """Selection weights proportional to score, shifted up when some scores are negative;
    uniform when all are equal to the minimum."""
    s = np.asarray(scores, dtype=float)
    w = s - min(float(s.min()), 0.0)
    return w if w.sum() > 0 else np.ones_like(s)


class Progress:
    """Counts molecules new to the run and rounds without a change in the run's top-10, from what
    the loop itself sees (replay-safe: the oracle's own record is not, since a replay gets its
    early molecules from the cache), and logs one line per round.

    A run stops when its budget is spent, after ``patience`` rounds in a row with no molecule new
    to the run, or after ``stale_rounds`` rounds in a row that left its top-10 unchanged (0: never;
    a policy that has collapsed can keep finding one new, poor molecule every few rounds, and
    would then run for hours within a 10k budget). PMO's reference runs stop far sooner: after 5
    rounds with the top-100 unchanged, or 10 rounds without a new oracle call."""

    def __init__(self, ctx: OptimizationContext, name: str, patience: int,
                 stale_rounds: int = 0) -> None:
        self.seen: set[str] = set()
        self.idle = 0
        self.stale = 0
        self.new = 0
        self.round = 0
        self.patience = patience
        self.stale_rounds = stale_rounds
        self.top10: list[float] = []  # min-heap of the run's 10 best scores
        self.top_changed = False
        self.ctx = ctx
        self.name = name
        self.log = ctx.run.logger() if ctx.run is not None else None

    def state_dict(self) -> dict:
        """The counters, the molecules seen and the top-10 heap, as plain data (snapshots)."""
        return {"seen": list(self.seen), "idle": self.idle, "stale": self.stale, "new": self.new,
                "round": self.round, "top10": list(self.top10),
                "top_changed": self.top_changed}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.seen = set(state["seen"])
        self.idle, self.stale, self.new = int(state["idle"]), int(state["stale"]), int(state["new"])
        self.round = int(state["round"])
        self.top10 = [float(v) for v in state["top10"]]  # a heap: kept in its order
        self.top_changed = bool(state["top_changed"])

    def saw(self, smiles: Sequence[str], scores: Sequence[float] | None = None) -> None:
        """Count ``smiles`` (canonical); with ``scores``, the finite scores of the molecules new
        to the run also update its top-10."""
        fresh = []  # first occurrences only: REINVENT's batch can hold one molecule twice
        for i, s in enumerate(smiles):
            if s not in self.seen:
                self.seen.add(s)
                fresh.append(i)
        self.new += len(fresh)
        for i in fresh if scores is not None else ():
            v = float(scores[i])
            if not math.isfinite(v):
                continue
            if len(self.top10) < 10:
                heapq.heappush(self.top10, v)
                self.top_changed = True
            elif v > self.top10[0]:
                heapq.heapreplace(self.top10, v)
                self.top_changed = True

    def score(self, smiles: Sequence[str]) -> list[float]:
        """Scores of ``smiles`` (canonical, unique) from the oracle, counted by :meth:`saw`."""
        scores = self.ctx.score(smiles) if smiles else []
        self.saw(smiles, scores)
        return scores

    def start_round(self) -> bool:
        """True while the budget lasts and the run is neither stuck nor stale."""
        if self.round:
            self.idle = self.idle + 1 if self.new == 0 else 0
            self.stale = self._stale_through_this_round()
        self.round += 1
        self.new = 0
        self.top_changed = False
        self._show_round()
        if self.ctx.exhausted:
            return False
        if self.idle >= self.patience:
            self.ctx.stop_reason = f"no new molecule in {self.idle} rounds"
        elif self.stale_rounds and self.stale >= self.stale_rounds:
            self.ctx.stop_reason = f"top-10 unchanged for {self.stale} rounds"
        else:
            return True
        if self.log is not None:
            self.log.info("%s: %s, stopping", self.name, self.ctx.stop_reason)
        return False

    def _stale_through_this_round(self) -> int:
        """Rounds in a row, this one included, that left the top-10 unchanged."""
        return 0 if self.top_changed else self.stale + 1

    def _show_round(self) -> None:
        """Put the round and, with the top-10 rule on, how long the top-10 has been unchanged
        on the command line's status line: a collapsed policy can find few new molecules a
        round, so the call count alone would look stuck."""
        bar = self.ctx.progress
        if bar is None or not bar.enabled:
            return
        status = {"round": self.round}
        if self.stale_rounds:
            status["top10_unchanged"] = f"{self.stale}/{self.stale_rounds}"
        bar.update(bar.done, **status)

    def report(self, **values: float) -> None:
        if self.log is not None:
            parts = " ".join(f"{k} {v:.4g}" for k, v in values.items())
            stale = (f" top-10 unchanged {self._stale_through_this_round()}/{self.stale_rounds}"
                     if self.stale_rounds else "")
            self.log.info("%s round %d: calls %d new %d%s %s", self.name, self.round,
                          self.ctx.oracle.n_calls, self.new, stale, parts)


def seed_queue(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator,
               queue: MaxRewardQueue, progress: Progress) -> None:
    """Score ``start_pool_size`` start-pool molecules into ``queue`` (none by default: the
    apprentice methods start from their prior, not from the pool)."""
    if not cfg.start_pool_size:
        return
    pool = (canonical_smiles(s, keep_stereo=cfg.keep_stereo)
            for s in sample_pool(ctx.start_pool, cfg.start_pool_size, rng))
    smiles = ctx.within_limit(list(dict.fromkeys(s for s in pool if s)))
    queue.add(smiles, progress.score(smiles))
