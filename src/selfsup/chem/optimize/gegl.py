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
   Off by default, ``imitation_precision="bf16"`` (bfloat16 autocast of the forward) and
   ``imitation_length_groups=4`` (length-sorted groups, less padding) make this step faster
   (``benchmarks/results/gegl_speed.md``) but change the arithmetic, so seeded runs differ.

Rounds repeat until the oracle budget is spent (molecules seen before are free: the oracle caches
by canonical SMILES), until ``patience`` rounds in a row bring no molecule new to the run, or
until ``stale_rounds`` rounds in a row leave the run's top-10 unchanged (see
:class:`~.common.Progress`).

Paper settings (configs/chem/gegl_paper.yaml): N_app = N_exp = 8192, K = 1024, 8 x 256 steps,
200 rounds, no budget. Budgeted defaults here (PMO-style, 10k unique calls): 100 + 100 per round
and K = 100 (about 50 rounds in 10k calls; a queue of 1024 would hold most of what a 10k run
ever sees, so the apprentice would imitate mediocre molecules), 8 steps x batch 64 (about 2.5
passes over the union of at most 200 molecules per round).

Registered optimisers: ``gegl``; the paper's ablations ``gegl_no_expert`` (apprentice queue
only) and ``gegl_no_learning`` (no imitation: the apprentice stays the prior); and ``prior_only``
(neither: sample the prior until the budget is spent, a control).

Queue record: every round appends one line to the run's ``queues.jsonl``
(:meth:`~.base.OptimizationContext.log_queues`): ``round``, ``calls``, ``queue_size``, ``new``
(molecules new to the run that round, with a finite score, by who proposed them: ``apprentice``,
``expert``, ``pool``) and ``queues``: ``apprentice`` and ``expert``, each the queue's items best
first as ``[smiles, score, origin]``, where ``origin`` is who first proposed the molecule in
this run (``apprentice`` sample, ``expert`` child, or ``pool``: a start-pool molecule seeded into
the apprentice queue); a molecule both proposed sits in the queue of each but keeps its first
origin. The origins are counted from what the loop sees, not from the oracle's record, so a
replay rebuilds them exactly; the record draws no random number and changes no call.
LSTM hill climbing runs on this loop (one queue, its top-k) and writes the same record.
``benchmarks/gegl/lead_analysis.py`` reads it.

Determinism: sampling uses a ``torch.Generator`` and imitation batches another, both seeded from
the run's ``numpy`` generator, which also drives the expert; dropout draws from torch's global
generator, seeded from it too. A replay (resume) therefore asks for the same molecules in the
same order on the same device and thread count.

The helpers (:func:`~.common.load_prior`, :func:`~.common.torch_generator`,
:func:`~.common.sample_canonical`, :func:`~.common.score_weights`, :func:`~.common.seed_queue`,
:class:`~.common.Progress`) live in :mod:`.common`, shared with :mod:`.reinvent`; the imitation
step is :func:`~selfsup.chem.lstm.likelihood.train_likelihood`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ...errors import ConfigError
from ..genetic import reproduce
from ..lstm import train_likelihood
from .base import GEGLConfig, OptimizationContext, OptimizeConfig, register
from .common import (
    Progress,
    load_prior,
    random_state,
    resolve_device,
    sample_canonical,
    score_weights,
    seed_queue,
    set_random_state,
    torch_generator,
)
from .queues import MaxRewardQueue

__all__ = ["GEGLConfig", "run_gegl"]


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
    if g.imitation_precision not in ("32", "bf16") or g.imitation_length_groups < 1:
        raise ConfigError(f"gegl.imitation_precision={g.imitation_precision!r} must be '32' or "
                          f"'bf16' and gegl.imitation_length_groups="
                          f"{g.imitation_length_groups} >= 1")
    if not 0.0 <= g.mutation_rate <= 1.0 or g.temperature < 0 or g.lr <= 0:
        raise ConfigError("gegl.mutation_rate must be in [0, 1], gegl.temperature >= 0, "
                          "gegl.lr > 0")


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
    tokens: dict[str, list[int] | str] = {}  # token ids of the queue molecules, encoded once
    ctx.open_queue_log()
    seed_queue(ctx, cfg, rng, apprentice_q, progress)
    origin = dict.fromkeys(progress.seen, "pool")  # who first proposed each molecule
    new = {"apprentice": 0, "expert": 0, "pool": len(origin)}
    generators = {"sample": sample_gen, "batch": batch_gen}
    queues = {"apprentice": apprentice_q, "expert": expert_q}
    if (state := ctx.load_state(name)) is not None:  # go on from the round it was saved at
        model.load_state_dict(state["model"])
        if adam is not None:
            adam.load_state_dict(state["adam"])
        set_random_state(state["random"], rng, generators, device)
        for k, q in queues.items():
            q.load_state_dict(state["queues"][k])
        progress.load_state_dict(state["progress"])
        origin, new = dict(state["origin"]), dict(state["new"])

    def snapshot() -> dict:
        return {"round": progress.round, "model": model.state_dict(),
                "adam": adam.state_dict() if adam is not None else None,
                "random": random_state(rng, generators, device),
                "queues": {k: q.state_dict() for k, q in queues.items()},
                "progress": progress.state_dict(), "origin": origin, "new": new}

    while progress.start_round():
        # 1. apprentice: sample, canonicalise, drop invalid, score
        samples = sample_canonical(model, vocab, g.n_apprentice, max_len=g.sample_max_len,
                                   temperature=g.temperature, generator=sample_gen,
                                   device=device, keep_stereo=cfg.keep_stereo)
        samples = ctx.within_limit(samples)
        if samples:
            scores = progress.score(samples)
            new["apprentice"] += _first_seen(origin, samples, scores, "apprentice")
            apprentice_q.add(samples, scores)
        # 2. expert: children of apprentice-queue parents drawn by score
        if g.use_expert and g.n_expert and len(apprentice_q) and not ctx.exhausted:
            children = reproduce(apprentice_q.smiles(), g.n_expert, rng, g.mutation_rate,
                                 n_jobs=cfg.n_jobs,
                                 parent_weights=score_weights(apprentice_q.scores())).children
            children = ctx.within_limit(list(dict.fromkeys(children)))
            if children:
                scores = progress.score(children)
                new["expert"] += _first_seen(origin, children, scores, "expert")
                expert_q.add(children, scores)
        # 3. imitation of the union of both queues
        loss = float("nan")
        if adam is not None and not ctx.exhausted:
            union = list(dict.fromkeys(apprentice_q.smiles() + expert_q.smiles()))
            tokens = {s: tokens[s] for s in union if s in tokens}  # drop those that left
            if union:
                loss = train_likelihood(model, union, vocab, steps=g.imitation_steps,
                                        batch_size=g.imitation_batch, generator=batch_gen,
                                        device=device, optimizer=adam, max_len=g.sample_max_len,
                                        cache=tokens, precision=g.imitation_precision,
                                        length_groups=g.imitation_length_groups)
        ctx.log_queues(progress.round, {name: [[s, v, origin[s]] for s, v in q.items()]
                                        for name, q in (("apprentice", apprentice_q),
                                                        ("expert", expert_q))},
                       queue_size=g.queue_size, new=new)
        new = dict.fromkeys(new, 0)
        best = max(apprentice_q.scores()[:1] + expert_q.scores()[:1], default=float("nan"))
        progress.report(best=best, imitation_loss=loss)
        ctx.save_state(name, snapshot)


def _first_seen(origin: dict[str, str], smiles: list[str], scores: list[float],
                who: str) -> int:
    """Mark the molecules of ``smiles`` not seen before as first proposed by ``who``; return how
    many of them have a finite score (those past the budget are marked but not counted)."""
    n = 0
    for s, v in zip(smiles, scores):
        if s not in origin:
            origin[s] = who
            n += math.isfinite(v)
    return n


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
