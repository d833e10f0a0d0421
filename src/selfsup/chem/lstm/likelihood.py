"""The maximum-likelihood step of the SMILES LSTM, shared by every loop that trains it.

GEGL (Ahn et al., NeurIPS 2020) pretrains the apprentice on ZINC250k (logP tasks) or ChEMBL
(GuacaMol) and, every round, maximises the likelihood of the union of the apprentice and expert
queues (8 steps x batch 256, Adam 1e-3). The loss is the mean negative log-probability per
target token (:meth:`SmilesLSTM.loss`); gradients are clipped to norm 1.0.

:func:`train_likelihood` is that imitation step (GEGL's, and LSTM hill climbing's, which runs on
GEGL's loop); :func:`gradient_step` is the update every SMILES LSTM loop makes from its loss
(the pretraining loop of :mod:`selfsup.chem.lstm.training`, which passes its Lightning Fabric,
:func:`train_likelihood`, and REINVENT's augmented-likelihood loss, which clips nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from selfsup.chem.lstm.corpus import batch_tokens
from selfsup.chem.lstm.model import SmilesLSTM, encode_smiles
from selfsup.chem.molecules import Vocabulary
from selfsup.errors import InputError

if TYPE_CHECKING:
    from lightning.fabric import Fabric

__all__ = ["gradient_step", "train_likelihood"]


def gradient_step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                  grad_clip: float = 0.0, fabric: Fabric | None = None) -> None:
    """One optimiser step on ``loss``: clear the gradients, backpropagate, clip the gradient norm
    of ``model``'s parameters to ``grad_clip`` (0: no clipping), step.

    With ``fabric`` (a Lightning Fabric that set up ``model`` and ``optimizer``), backpropagation
    and clipping go through it, so its precision plugin scales and unscales the gradients (16-bit
    mixed precision); in 32-bit precision the step is the same arithmetic as without it."""
    optimizer.zero_grad(set_to_none=True)
    if fabric is None:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        fabric.backward(loss)
        if grad_clip > 0:
            # non-finite norms are left to the loss check and to the 16-bit gradient scaler,
            # which skips such a step, as without Fabric
            fabric.clip_gradients(model, optimizer, max_norm=grad_clip, error_if_nonfinite=False)
    optimizer.step()


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
