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

from selfsup.chem.lstm.corpus import batch_tokens
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
) -> float:
    """``steps`` maximum-likelihood steps on ``smiles_list``; returns the mean loss of the steps.

    GEGL's imitation: 8 steps x batch 256 of Adam 1e-3 on the union of both queues. Batches walk
    through seeded shuffles of the list (``generator`` on the CPU; a new shuffle when one is
    used up). SMILES that cannot be encoded (unknown tokens, too long for ``max_len``) are skipped;
    ``nan`` is returned (and nothing trained) when none is left. Pass ``optimizer`` to keep Adam's
    moments across rounds; otherwise a fresh Adam(``lr``) is made. The model's train/eval mode is
    restored afterwards.
    """
    if steps < 1 or batch_size < 1:
        raise InputError(f"train_likelihood needs steps >= 1 and batch_size >= 1, got {steps}, "
                         f"{batch_size}")
    enc = encode_smiles(list(smiles_list), vocab, max_len=max_len)
    if len(enc) == 0:
        return float("nan")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    was_training = model.training
    model.train()
    losses: list[float] = []
    perm = torch.randperm(len(enc), generator=generator)
    pos = 0
    try:
        for _ in range(steps):
            if pos >= len(perm):
                perm, pos = torch.randperm(len(enc), generator=generator), 0
            idx = perm[pos : pos + batch_size]
            pos += batch_size
            loss = model.loss(batch_tokens(enc, idx, device))
            gradient_step(model, loss, optimizer, grad_clip)
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    return sum(losses) / len(losses)
