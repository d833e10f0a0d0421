"""REINVENT (Olivecrona, Blaschke, Engkvist, Chen; J. Cheminform. 2017), budgeted.

An agent, initialised from the pretrained prior, is trained so that its log-likelihood of each
sampled sequence ``A`` matches the augmented log-likelihood

    log P_aug(A) = log P_prior(A) + sigma * S(A)

with the loss ``(log P_aug(A) - log P_agent(A))^2`` averaged over the batch. Each step samples
``batch_size`` sequences from the agent (duplicate sequences dropped), scores them with the oracle
(invalid SMILES get the objective's invalid score; molecules past the budget are left out of the
loss) and adds ``experience_replay`` molecules drawn from a replay memory of the ``memory_size``
best molecules seen (probability proportional to score) to the same loss. One Adam on the agent.

Defaults are PMO's (Gao et al. 2022): lr 5e-4, batch 64, sigma 500, experience replay 24; the
memory keeps the 100 best. The prior stays frozen; both models run in eval mode (no dropout), so
the likelihoods are those of the policy that samples. ``sigma`` 500 assumes scores in [0, 1]
(all PMO oracles); scale it down for objectives with larger ranges (and note that invalid SMILES
score the objective's ``invalid_score``, e.g. -1000 for penalized logP). Opt-in,
``precision="bf16"`` runs both likelihood forwards under bfloat16 autocast (the loss in float32):
faster on CPUs with bf16 units, but the arithmetic changes, so seeded runs differ.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...device import gradient_step
from ...errors import ConfigError
from ..lstm import encode_smiles
from ..molecules import canonical_smiles
from .base import OptimizationContext, OptimizeConfig, ReinventConfig, register
from .common import (
    Progress,
    load_prior,
    random_state,
    resolve_device,
    score_weights,
    seed_queue,
    set_random_state,
    torch_generator,
)
from .queues import MaxRewardQueue

__all__ = ["ReinventConfig", "run_reinvent"]


def _check(r: ReinventConfig) -> None:
    if r.batch_size < 1 or r.memory_size < 1 or r.experience_replay < 0 or r.lr <= 0:
        raise ConfigError("reinvent.batch_size, reinvent.memory_size and reinvent.lr must be "
                          "positive, reinvent.experience_replay >= 0")
    if r.precision not in ("32", "bf16"):
        raise ConfigError(f"reinvent.precision={r.precision!r} must be '32' or 'bf16'")
    if r.sample_max_len < 1 or r.patience < 1 or r.stale_rounds < 0:
        raise ConfigError("reinvent.sample_max_len and reinvent.patience must be positive, "
                          "reinvent.stale_rounds >= 0 (0: off)")


@register("reinvent")
def run_reinvent(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator) -> None:
    """REINVENT steps until the budget is spent (see the module docstring)."""
    r = cfg.reinvent
    _check(r)
    device = resolve_device(r.device)
    prior, vocab = load_prior(cfg, device)
    agent, _ = load_prior(cfg, device)
    for p in prior.parameters():
        p.requires_grad_(False)
    sample_gen = torch_generator(rng, device)
    adam = torch.optim.Adam(agent.parameters(), lr=r.lr)
    memory = MaxRewardQueue(r.memory_size, canonicalize=False)
    progress = Progress(ctx, "reinvent", r.patience, r.stale_rounds)
    seed_queue(ctx, cfg, rng, memory, progress)
    generators = {"sample": sample_gen}
    if (state := ctx.load_state("reinvent")) is not None:  # go on from where it was saved
        agent.load_state_dict(state["agent"])
        adam.load_state_dict(state["adam"])
        set_random_state(state["random"], rng, generators, device)
        memory.load_state_dict(state["memory"])
        progress.load_state_dict(state["progress"])

    def snapshot() -> dict:
        return {"round": progress.round, "agent": agent.state_dict(), "adam": adam.state_dict(),
                "random": random_state(rng, generators, device), "memory": memory.state_dict(),
                "progress": progress.state_dict()}

    while progress.start_round():
        batch = agent.sample(r.batch_size, vocab, max_len=r.sample_max_len, generator=sample_gen,
                             device=device, return_details=True)
        rows: dict[tuple[int, ...], int] = {}  # unique token sequences, first occurrence
        for i, row in enumerate(batch.tokens.tolist()):
            rows.setdefault(tuple(row), i)
        keep = list(rows.values())
        smiles = [batch.smiles[i] for i in keep]
        scores = ctx.score(smiles)
        canon = [canonical_smiles(s, keep_stereo=cfg.keep_stereo) if s else None for s in smiles]
        valid = [(c, v) for c, v in zip(canon, scores) if c and math.isfinite(v)]
        progress.saw([c for c, _ in valid], [v for _, v in valid])
        ok = [j for j, v in enumerate(scores) if math.isfinite(v)]
        if not ok:
            continue
        tokens = batch.tokens[[keep[j] for j in ok]]  # (b, T)
        target = torch.tensor([scores[j] for j in ok], dtype=torch.float32, device=device)  # (b,)
        # experience replay: memory molecules drawn by score, before this step's are added
        if r.experience_replay and len(memory):
            w = score_weights(memory.scores())
            n = min(r.experience_replay, int(np.count_nonzero(w)))
            pick = rng.choice(len(memory), size=n, replace=False, p=w / w.sum())
            mem_smiles = [memory.smiles()[i] for i in sorted(pick)]
            mem_scores = [memory.scores()[i] for i in sorted(pick)]
            enc = encode_smiles(mem_smiles, vocab, max_len=r.sample_max_len)
            if len(enc):
                width = max(tokens.shape[1], enc.tokens.shape[1])
                tokens = torch.cat([_pad(tokens, width), _pad(enc.tokens.to(device), width)])
                replay = torch.tensor([mem_scores[i] for i in enc.index], dtype=torch.float32,
                                      device=device)
                target = torch.cat([target, replay])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=r.precision == "bf16"):
            with torch.no_grad():
                prior_ll = prior.log_likelihood(tokens).float()  # (b,)
            agent_ll = agent.log_likelihood(tokens).float()  # (b,)
        augmented = prior_ll + r.sigma * target  # (b,)
        loss = (augmented - agent_ll).pow(2).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite REINVENT loss {float(loss)}; lower reinvent.lr "
                                     "or reinvent.sigma")
        gradient_step(agent, loss, adam)  # grad_clip 0: no clipping
        memory.add([c for c, _ in valid], [v for _, v in valid])
        progress.report(loss=float(loss.detach()), memory_best=memory.scores()[0]
                        if len(memory) else float("nan"))
        ctx.save_state("reinvent", snapshot)


def _pad(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (B, T) token ids with ``<pad>`` (id 0) to (B, width)."""
    return torch.nn.functional.pad(tokens, (0, width - tokens.shape[1]), value=0)
