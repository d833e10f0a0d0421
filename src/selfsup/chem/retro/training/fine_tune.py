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

from ..core.reactions import (
    Reaction,
    canonical_reactants,
    extract_retro_template,
    template_reproduces,
)
from ..models.mlp import ForwardTemplateModel, MLPSingleStepModel
from .metrics import template_topk_accuracy
from .template_identity import TemplateMatcher
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
    match_top_k: int = 50,
    match_scan: bool = True,
) -> dict[str, Any]:
    """Continue training ``model.net`` from its current weights on new reactions.

    Self-improved Retro* (Kim et al., ICML 2021) fine-tunes on the reactions of successful
    routes (and forward-augmented ones): 20 epochs, Adam lr 1e-4, batch 1024, dropout 0.4.

    ``reactions`` items are ``(input, template)`` pairs, ``input`` the product (backward
    model) or the reactant set (forward model, dotted string or sequence) and ``template`` a
    template string or its index in ``model.templates``; or :class:`Reaction` objects with
    atom-mapped text. Templates are matched by what they do, never by raw string alone
    (:class:`~.template_identity.TemplateMatcher`): a template string is found in the vocabulary
    by string, then by canonical key; a :class:`Reaction`'s template is extracted with rdchiral,
    the reaction is skipped (``template_not_reproducing``) when that template does not give back
    its own reactants, and otherwise is labelled with the vocabulary template of the same string
    or key, else the first of the model's ``match_top_k`` templates for its input that
    reproduces it, else (``match_scan``) the first vocabulary template that reproduces it (the
    scan applies only the templates whose product pattern matches the product). Cost, measured
    on 300 USPTO-50k test reactions against a 13,180-template vocabulary (2 shared CPU cores):
    134 placed by string, 71 more by key (the vocabulary's keys take ~10 s once); the 87 left
    to application took 0.29 s each on average (max 1.9 s, 49 templates applied): 46 placed
    from the model's top-50, 25 by the scan, 16 nowhere (``python -m
    selfsup.chem.retro.training.template_identity --n 300 --model M``). Items whose template is
    found nowhere (``unknown_template``), without a template (``no_template``) or that cannot
    be parsed (``malformed``) are skipped and counted; ``matched`` counts how the others were
    labelled. Logs one ``finetune_loss`` row per epoch to ``run`` when given. Returns counts
    and losses.

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
    matcher = TemplateMatcher(model.templates)
    inputs: list[str] = []
    labels: list[int] = []
    skipped: dict[str, int] = {}
    matched: dict[str, int] = {}
    pending: list[tuple[int, Reaction]] = []  # (position in labels, reaction) to apply

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for item in reactions:
        try:
            if isinstance(item, Reaction):
                text = ".".join(item.reactants) if forward else item.product
            else:
                source, template = item
                text = (".".join(canonical_reactants(source)) if forward
                        else canonical_smiles(source, remove_atom_map=True, strict=True))  # type: ignore[arg-type]
        except (InputError, TypeError, ValueError):
            skip("malformed")
            continue
        if isinstance(item, Reaction):
            try:
                template = extract_retro_template(item)
            except InputError:
                skip("no_template")
                continue
            if not template_reproduces(template, item):
                skip("template_not_reproducing")
                continue
            label, how = matcher.lookup(template)
            if label < 0:  # labelled below, by application
                pending.append((len(labels), item))
                inputs.append(text)
                labels.append(-1)
                continue
        elif isinstance(template, (int, np.integer)):
            label = int(template) if 0 <= int(template) < len(model.templates) else -1
            how = "index"
        elif isinstance(template, str):
            label, how = matcher.lookup(template)
        else:
            skip("malformed")
            continue
        if label < 0:
            skip("unknown_template")
            continue
        matched[how] = matched.get(how, 0) + 1
        inputs.append(text)
        labels.append(label)
    if pending:  # by application: the model's top-k for the input first, then a scan
        scores = model.template_scores([inputs[pos] for pos, _ in pending])
        k = min(int(match_top_k), len(model.templates))
        for (pos, rxn), row in zip(pending, scores):
            top = np.argsort(-row, kind="stable")[:k] if k > 0 else []
            res = matcher.match(rxn, None, top, scan=match_scan)
            labels[pos] = res.index
            if res.index >= 0:
                matched[res.how] = matched.get(res.how, 0) + 1
            if res.index < 0:
                skip("unknown_template")
        keep = [i for i, y in enumerate(labels) if y >= 0]
        inputs = [inputs[i] for i in keep]
        labels = [labels[i] for i in keep]

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
        "matched": matched,
        "epochs": epochs if len(labels) >= 2 else 0,
        "losses": losses,
        "seconds": round(time.perf_counter() - t0, 2),
    } | ({"selected_epoch": selected, "select_top1": select_top1} if select_top1 else {})
