"""The maximum-likelihood step of the SMILES LSTM, shared by every loop that trains it.

GEGL (Ahn et al., NeurIPS 2020) pretrains the apprentice on ZINC250k (logP tasks) or ChEMBL
(GuacaMol) and, every round, maximises the likelihood of the union of the apprentice and expert
queues (8 steps x batch 256, Adam 1e-3). The loss is the mean negative log-probability per
target token (:meth:`SmilesLSTM.loss`); gradients are clipped to norm 1.0.

:func:`train_likelihood` is that imitation step (GEGL's, and LSTM hill climbing's, which runs on
GEGL's loop); every loop that trains a model here makes its update with
:func:`selfsup.device.gradient_step` (the pretraining loop of :mod:`selfsup.chem.lstm.training`
and the template MLP's ``train_epoch``, which pass their Lightning Fabric, :func:`train_likelihood`,
and REINVENT's augmented-likelihood loss, which clips nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from selfsup.chem.lstm.model import SmilesLSTM, encode_smiles
from selfsup.chem.molecules import Vocabulary
from selfsup.device import gradient_step
from selfsup.errors import InputError

if TYPE_CHECKING:
    pass

__all__ = ["train_likelihood"]


def train_likelihood(
    model: SmilesLSTM,
    smiles_list: Sequence[str],
    vocab: Vocabulary,
    *,
    steps: int = 8,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    grad_clip: float = 1.0,
    max_len: int | None = None,
    cache: dict[str, list[int] | str] | None = None,
    precision: str = "32",
    length_groups: int = 1,
) -> float:
    """``steps`` maximum-likelihood steps on ``smiles_list``; returns the mean loss of the steps.

    GEGL's imitation: 8 steps x batch 256 of Adam 1e-3 on the union of both queues. Batches walk
    through seeded shuffles of the list (``generator`` on the CPU; a new shuffle when one is
    used up). SMILES that cannot be encoded (unknown tokens, too long for ``max_len``) are skipped;
    ``nan`` is returned (and nothing trained) when none is left. Pass ``optimizer`` to keep Adam's
    moments across rounds; otherwise a fresh Adam(``lr``) is made. The model's train/eval mode is
    restored afterwards. ``cache``: see :func:`encode_smiles` (a loop that trains on overlapping
    lists tokenises each SMILES once).

    Two settings trade bit-exactness with the default for speed (other rounding, same loss):
    ``precision="bf16"`` runs the forward under bfloat16 autocast (the LSTM and the head in
    bfloat16, fp32 weights, loss and Adam; fast on CPUs with AMX / AVX-512 BF16 and on GPUs);
    ``length_groups=n`` sorts each batch by length and runs it as ``n`` groups, each trimmed to
    its own longest row (less padding), the loss still the mean over every target token of the
    batch (with dropout > 0 the groups also draw other dropout masks). Neither is on by default:
    seeded runs with them differ from runs without.

    The encoded list goes to ``device`` once; each batch is cut from it there (trimmed to its
    longest row, the width read from the lengths kept on the CPU), and the losses are read back
    once at the end, so a GPU step waits for no copy. Cost on the CPU: nearly all of it is the
    LSTM's forward and backward (``benchmarks/results/gegl_speed.md``).
    """
    if precision not in ("32", "bf16") or length_groups < 1:
        raise InputError(f"train_likelihood needs precision '32' or 'bf16' and length_groups "
                         f">= 1, got {precision!r}, {length_groups}")
    if steps < 1 or batch_size < 1:
        raise InputError(f"train_likelihood needs steps >= 1 and batch_size >= 1, got {steps}, "
                         f"{batch_size}")
    enc = encode_smiles(list(smiles_list), vocab, max_len=max_len, cache=cache)
    if len(enc) == 0:
        return float("nan")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tokens = enc.tokens.to(device)  # (N, T) long, on the device once
    was_training = model.training
    model.train()
    losses: list[torch.Tensor] = []
    perm = torch.randperm(len(enc), generator=generator)
    pos = 0
    try:
        for _ in range(steps):
            if pos >= len(perm):
                perm, pos = torch.randperm(len(enc), generator=generator), 0
            idx = perm[pos : pos + batch_size]
            pos += batch_size
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=precision == "bf16"):
                loss = _batch_loss(model, tokens, enc.lengths, idx, length_groups)
            gradient_step(model, loss, optimizer, grad_clip)
            losses.append(loss.detach())
    finally:
        model.train(was_training)
    values = torch.stack(losses).tolist()  # one read-back
    return sum(values) / len(values)


def _batch_loss(model: SmilesLSTM, tokens: torch.Tensor, lengths: torch.Tensor,
                idx: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean token NLL of rows ``idx`` of ``tokens`` (N, T) on the model's device; ``lengths``
    (N,) on the CPU. ``groups > 1``: the rows sorted by length, in that many groups, each trimmed
    to its longest row; the sum of their NLLs over the batch's target count."""
    device = tokens.device
    if groups == 1:
        width = int(lengths[idx].max())
        return model.loss(tokens[idx.to(device), :width])  # (b, width) batch
    idx = idx[torch.argsort(lengths[idx], stable=True)]
    n_targets = int((lengths[idx] - 1).sum())
    total = None
    for part in idx.chunk(groups):
        width = int(lengths[part].max())
        nll = model.token_nll(tokens[part.to(device), :width]).sum()
        total = nll if total is None else total + nll
    return total / max(n_targets, 1)
