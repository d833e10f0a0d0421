"""Fine-tuning of a trained template MLP on new reactions (self-improved Retro*).

:func:`fine_tune` continues training a model from its current weights (self-improvement: lr
1e-4, dropout 0.4, 20 epochs, batch 1024), with the training pass of single-step training
(:func:`~.train_single_step.train_epoch`) and, when held-out reactions are given, selection of
the best epoch on them (:func:`~.metrics.template_topk_accuracy`).

Like single-step training, the loop runs on Lightning Fabric (:func:`selfsup.device.setup_fabric`)
on the model's device, with ``precision`` (``auto``: bf16 mixed precision on a CUDA GPU that has
it, else fp16 mixed; 32-bit on CPU and MPS) for the forward passes of training and selection and
for backpropagation; in 32-bit precision the steps are the arithmetic of a plain PyTorch loop.
Fine-tuning stays on that one device: it runs inside a planning or self-improvement process
(data-parallel training is single-step training's ``trainer.devices``); the epoch it reuses,
:func:`~.train_single_step.train_epoch`, shards itself when given a launched data-parallel fabric.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from selfsup.chem.molecules import canonical_smiles
from selfsup.device import setup_fabric
from selfsup.errors import InputError
from selfsup.runs import Run

from ..core.reactions import Reaction, canonical_reactants, extract_retro_template
from ..models.mlp import ForwardTemplateModel, MLPSingleStepModel
from .metrics import template_topk_accuracy
from .train_single_step import train_epoch

__all__ = ["fine_tune"]


def fine_tune(
    model: MLPSingleStepModel | ForwardTemplateModel,
    reactions: Sequence[Reaction | tuple[str | Sequence[str], str | int]],
    *,
    epochs: int = 20,
    lr: float = 1e-4,
    batch_size: int = 1024,
    dropout: float = 0.4,
    weight_decay: float = 0.0,
    seed: int = 0,
    run: Run | None = None,
    select: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Continue training ``model.net`` from its current weights on new reactions.

    Self-improved Retro* (Kim et al., ICML 2021) fine-tunes on the reactions of successful
    routes (and forward-augmented ones): 20 epochs, Adam lr 1e-4, batch 1024, dropout 0.4.

    ``reactions`` items are ``(input, template)`` pairs, ``input`` the product (backward
    model) or the reactant set (forward model, dotted string or sequence) and ``template`` a
    template string of ``model.templates`` or its index; or :class:`Reaction` objects with
    atom-mapped text (their template is extracted with rdchiral). Items whose template is not
    in the model's vocabulary or that cannot be parsed are skipped and counted. Logs one
    ``finetune_loss`` row per epoch to ``run`` when given. Returns counts and losses.

    ``select = (fingerprints, labels)`` of held-out reactions (labels index ``model.templates``,
    ``-1`` unknown) turns on model selection: template top-1 on them is measured before the first
    epoch and after every epoch, and the weights of the best epoch are kept (the starting weights
    win ties), so held-out template accuracy cannot fall. The result then holds
    ``selected_epoch`` (0: the starting weights) and ``select_top1`` per epoch.

    ``on_epoch(epoch, loss)`` is called after each epoch (progress reporting). ``precision``
    is a Lightning precision string (see :data:`selfsup.device.PRECISIONS`) for the model's
    device; ``auto`` is 32-bit on the CPU.
    """
    forward = isinstance(model, ForwardTemplateModel)
    index = {t: i for i, t in enumerate(model.templates)}
    inputs: list[str] = []
    labels: list[int] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for item in reactions:
        try:
            if isinstance(item, Reaction):
                template: str | int = extract_retro_template(item)
                text = ".".join(item.reactants) if forward else item.product
            else:
                source, template = item
                text = (".".join(canonical_reactants(source)) if forward
                        else canonical_smiles(source, remove_atom_map=True, strict=True))  # type: ignore[arg-type]
        except (InputError, TypeError, ValueError):
            skip("malformed")
            continue
        if isinstance(template, (int, np.integer)):
            label = int(template) if 0 <= int(template) < len(model.templates) else -1
        else:
            label = index.get(template, -1)
        if label < 0:
            skip("unknown_template")
            continue
        inputs.append(text)
        labels.append(label)

    t0 = time.perf_counter()
    losses: list[float] = []
    select_top1: list[float] = []
    selected = 0
    net = model.net
    device = model.device
    if len(labels) >= 2 and epochs > 0:
        fps = np.ascontiguousarray(model.fingerprints(inputs))
        y = np.asarray(labels, dtype=np.int64)
        net.set_dropout(dropout)
        # set up by Fabric on the model's device; ``net`` stays the plain module
        fabric, _ = setup_fabric(device.type, precision, device.index)
        fabric_net = fabric.setup_module(net)
        opt = fabric.setup_optimizers(
            torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay))

        def select_accuracy(held_out: tuple[np.ndarray, np.ndarray]) -> float:
            with fabric.autocast():
                return template_topk_accuracy(net, held_out[0], held_out[1], (1,))["top1"]

        if select is not None:
            select_top1.append(select_accuracy(select))
            best_state = copy.deepcopy(net.state_dict())
        for epoch in range(1, epochs + 1):
            tr = train_epoch(fabric_net, opt, fps, y, batch_size, seed=seed * 100_003 + epoch,
                             fabric=fabric)
            losses.append(tr["loss"])
            row = {"step": epoch, "finetune_epoch": epoch, "finetune_loss": tr["loss"],
                   "finetune_acc": tr["acc"]}
            if select is not None:
                row["select_top1"] = select_accuracy(select)
                if row["select_top1"] > max(select_top1):
                    best_state, selected = copy.deepcopy(net.state_dict()), epoch
                select_top1.append(row["select_top1"])
            if run is not None:
                run.log_metrics(row)
            if on_epoch is not None:
                on_epoch(epoch, tr["loss"])
        if select is not None:
            net.load_state_dict(best_state)
    net.eval()
    if hasattr(model, "clear_cache"):
        model.clear_cache()  # cached proposals came from the old weights
    return {
        "n_examples": len(labels),
        "n_skipped": sum(skipped.values()),
        "skipped": skipped,
        "epochs": epochs if len(labels) >= 2 else 0,
        "losses": losses,
        "seconds": round(time.perf_counter() - t0, 2),
    } | ({"selected_epoch": selected, "select_top1": select_top1} if select_top1 else {})
