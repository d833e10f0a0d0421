"""GEGL: genetic-expert-guided learning (Ahn, Kim, Lee, Shin; NeurIPS 2020), budgeted.

An apprentice (a pretrained SMILES LSTM, :class:`~selfsup.chem.lstm.SmilesLSTM`) and a genetic
expert (graph GA crossover + mutation, :func:`~selfsup.chem.genetic.reproduce`) each fill a
max-reward priority queue of size ``K`` (:class:`~.queues.MaxRewardQueue`); the apprentice then
imitates the union of both queues by maximum likelihood. One round:

1. sample ``N_app`` SMILES from the apprentice, canonicalise, drop invalid ones, score them;
   the apprentice queue keeps the ``K`` best molecules seen so far;
2. the expert draws parent pairs from the apprentice queue (probability proportional to score,
   shifted to be >= 0), makes ``N_exp`` children (crossover, then mutation with rate 0.01),
   scores them; the expert queue keeps the ``K`` best children seen so far;
3. imitation: ``imitation_steps`` Adam steps (one Adam kept across rounds) of batch
   ``imitation_batch`` on the SMILES of both queues (mean token negative log-likelihood).

Rounds repeat until the oracle budget is spent (molecules seen before are free: the oracle caches
by canonical SMILES), until ``patience`` rounds in a row bring no molecule new to the run, or
until ``stale_rounds`` rounds in a row leave the run's top-10 unchanged (see :class:`Progress`).

Paper settings (configs/chem/gegl_paper.yaml): N_app = N_exp = 8192, K = 1024, 8 x 256 steps,
200 rounds, no budget. Budgeted defaults here (PMO-style, 10k unique calls): 100 + 100 per round
and K = 100 (about 50 rounds in 10k calls; a queue of 1024 would hold most of what a 10k run
ever sees, so the apprentice would imitate mediocre molecules), 8 steps x batch 64 (about 2.5
passes over the union of at most 200 molecules per round).

Registered optimisers: ``gegl``; the paper's ablations ``gegl_no_expert`` (apprentice queue
only) and ``gegl_no_learning`` (no imitation: the apprentice stays the prior); and ``prior_only``
(neither: sample the prior until the budget is spent, a control).

Determinism: sampling uses a ``torch.Generator`` and imitation batches another, both seeded from
the run's ``numpy`` generator, which also drives the expert; dropout draws from torch's global
generator, seeded from it too. A replay (resume) therefore asks for the same molecules in the
same order on the same device and thread count.

The helpers :func:`load_prior`, :func:`torch_generator`, :func:`sample_canonical`,
:func:`score_weights`, :func:`seed_queue` and :class:`Progress` are shared with
:mod:`.lstm_hc` and :mod:`.reinvent`.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from ..genetic import reproduce
from ..lstm import SmilesLSTM
from ..molecules import Vocabulary, canonical_smiles
from ..pretrain import train_likelihood
from .base import GEGLConfig, OptimizationContext, OptimizeConfig, register, sample_pool
from .queues import MaxRewardQueue

__all__ = [
    "GEGLConfig",
    "Progress",
    "load_prior",
    "resolve_device",
    "run_gegl",
    "sample_canonical",
    "score_weights",
    "seed_queue",
    "torch_generator",
]


def _check(g: GEGLConfig) -> None:
    positive = {"n_apprentice": g.n_apprentice, "queue_size": g.queue_size,
                "imitation_steps": g.imitation_steps, "imitation_batch": g.imitation_batch,
                "sample_max_len": g.sample_max_len, "patience": g.patience}
    if g.stale_rounds < 0:
        raise ConfigError(f"gegl.stale_rounds={g.stale_rounds} must be >= 0 (0: off)")
    bad = [f"gegl.{k}={v}" for k, v in positive.items() if v < 1]
    if g.n_expert < 0:
        bad.append(f"gegl.n_expert={g.n_expert}")
    if bad:
        raise ConfigError(f"{', '.join(bad)}: these must be positive (n_expert may be 0)")
    if not 0.0 <= g.mutation_rate <= 1.0 or g.temperature < 0 or g.lr <= 0:
        raise ConfigError("gegl.mutation_rate must be in [0, 1], gegl.temperature >= 0, "
                          "gegl.lr > 0")


# ------------------------------------------------------------------------- shared helpers
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
            self.stale = 0 if self.top_changed else self.stale + 1
        self.round += 1
        self.new = 0
        self.top_changed = False
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

    def report(self, **values: float) -> None:
        if self.log is not None:
            parts = " ".join(f"{k} {v:.4g}" for k, v in values.items())
            self.log.info("%s round %d: calls %d new %d %s", self.name, self.round,
                          self.ctx.oracle.n_calls, self.new, parts)


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


# ------------------------------------------------------------------------------ the loop
def run_gegl(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator,
             g: GEGLConfig, name: str = "gegl") -> None:
    """GEGL rounds with the settings ``g`` until the budget is spent (see the module docstring)."""
    _check(g)
    device = resolve_device(g.device)
    model, vocab = load_prior(cfg, device)
    sample_gen = torch_generator(rng, device)
    batch_gen = torch_generator(rng, "cpu")
    torch.manual_seed(int(rng.integers(0, 2**63 - 1)))  # dropout during imitation
    adam = torch.optim.Adam(model.parameters(), lr=g.lr) if g.learn else None
    apprentice_q = MaxRewardQueue(g.queue_size, canonicalize=False)
    expert_q = MaxRewardQueue(g.queue_size, canonicalize=False)
    progress = Progress(ctx, name, g.patience, g.stale_rounds)
    seed_queue(ctx, cfg, rng, apprentice_q, progress)
    while progress.start_round():
        # 1. apprentice: sample, canonicalise, drop invalid, score
        samples = sample_canonical(model, vocab, g.n_apprentice, max_len=g.sample_max_len,
                                   temperature=g.temperature, generator=sample_gen,
                                   device=device, keep_stereo=cfg.keep_stereo)
        samples = ctx.within_limit(samples)
        if samples:
            apprentice_q.add(samples, progress.score(samples))
        # 2. expert: children of apprentice-queue parents drawn by score
        if g.use_expert and g.n_expert and len(apprentice_q) and not ctx.exhausted:
            children = reproduce(apprentice_q.smiles(), g.n_expert, rng, g.mutation_rate,
                                 n_jobs=cfg.n_jobs,
                                 parent_weights=score_weights(apprentice_q.scores())).children
            children = ctx.within_limit(list(dict.fromkeys(children)))
            if children:
                expert_q.add(children, progress.score(children))
        # 3. imitation of the union of both queues
        loss = float("nan")
        if adam is not None and not ctx.exhausted:
            union = list(dict.fromkeys(apprentice_q.smiles() + expert_q.smiles()))
            if union:
                loss = train_likelihood(model, union, vocab, steps=g.imitation_steps,
                                        batch_size=g.imitation_batch, generator=batch_gen,
                                        device=device, optimizer=adam, max_len=g.sample_max_len)
        best = max(apprentice_q.scores()[:1] + expert_q.scores()[:1], default=float("nan"))
        progress.report(best=best, imitation_loss=loss)


def _variant(name: str, **flags: bool):
    def fn(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator) -> None:
        run_gegl(ctx, cfg, rng, dataclasses.replace(cfg.gegl, **flags), name=name)

    fn.__name__ = f"run_{name}"
    fn.__doc__ = f"GEGL variant '{name}' ({flags or 'as configured'})."
    return register(name)(fn)


run_gegl_default = _variant("gegl")
run_gegl_no_expert = _variant("gegl_no_expert", use_expert=False)
run_gegl_no_learning = _variant("gegl_no_learning", learn=False)
run_prior_only = _variant("prior_only", use_expert=False, learn=False)
