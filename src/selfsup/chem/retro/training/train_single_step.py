"""Train and evaluate the template-classifier single-step model of Retro* on USPTO-50k.

Recipe (Chen et al., ICML 2020; Kim et al., ICML 2021): Morgan fingerprint (radius 2, 2048
bits) -> :class:`~selfsup.chem.retro.models.mlp.TemplateMLP` -> softmax over the train templates,
cross-entropy, Adam (lr 1e-3, batch 1024, dropout 0.3-0.4). Model selection on the valid split
by template top-1 accuracy; every epoch writes ``checkpoints/last.pt`` so :func:`resume` can
continue a killed run; the selected model is written to ``<run>/model.pt``.

Reported on the test split (``results.json``):

- ``test_exact_topK``: a reaction is a hit at k when one of the top-k reactant sets proposed by
  :class:`~selfsup.chem.retro.models.mlp.MLPSingleStepModel` (top-``max(k)`` templates applied with
  rdchiral, identical sets merged) equals the recorded canonical reactant set;
- ``test_template_topK``: the recorded template is among the k most probable templates (cheap;
  a reaction whose template is not in the train vocabulary is a miss in both).

``model.direction: forward`` trains the forward twin (reactant-set fingerprint -> template) and
reports the exact match of the recorded product among the top-k forward predictions instead.

:func:`fine_tune` continues training a model from its current weights (self-improvement: lr
1e-4, dropout 0.4, 20 epochs, batch 1024).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.chem.molecules import canonical_smiles
from selfsup.config import load_config, to_dict
from selfsup.errors import ConfigError, InputError
from selfsup.io import atomic_torch_save
from selfsup.progress import Progress
from selfsup.runs import Run

from ..core.reactions import Reaction, canonical_reactants, extract_retro_template
from ..models.mlp import (
    ForwardTemplateMLP,
    ForwardTemplateModel,
    MLPSingleStepModel,
    TemplateMLP,
)
from .templates_data import SplitData, TemplateData, prepare_uspto50k

__all__ = [
    "SingleStepConfig",
    "evaluate_exact_match",
    "exact_match_topk",
    "fine_tune",
    "load_single_step_config",
    "load_trained_model",
    "resume",
    "template_topk_accuracy",
    "train_epoch",
    "train_single_step",
]

log = logging.getLogger(__name__)

CKPT_FORMAT = "selfsup.single_step_ckpt/1"


# ============================================================================ config


@dataclass(frozen=True)
class SSDataConfig:
    root: str | None = None  # folder of reaction_templates_50k_*.csv; None: fetch into the cache
    cache_dir: str | None = None  # prepared arrays (default <data cache>/derived/...)
    min_count: int = 1  # templates seen fewer times in train are not classes
    reextract: bool = False  # re-extract every template with rdchiral instead of the recorded
    radius: int = 2
    n_bits: int = 2048


@dataclass(frozen=True)
class SSModelConfig:
    direction: str = "backward"  # backward: product -> template; forward: reactants -> template
    hidden: int = 512
    dropout: float = 0.3


@dataclass(frozen=True)
class SSOptimConfig:
    lr: float = 1e-3
    batch_size: int = 1024
    epochs: int = 10
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SSEvalConfig:
    n_test: int = 500  # test reactions for the exact-match metric (0 = the whole split)
    subset_seed: int = 0  # which test reactions (same subset across runs)
    top_k: list[int] = field(default_factory=lambda: [1, 5, 10, 50])  # max = templates applied
    batch_size: int = 64  # products per propose() call
    template_batch_size: int = 2048  # fingerprints per forward pass for template accuracy


@dataclass(frozen=True)
class SSTrainerConfig:
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int | None = None  # torch CPU threads (default: torch's choice)


@dataclass(frozen=True)
class SingleStepConfig:
    name: str = "retro_single_step"
    seed: int = 0
    run_root: str | None = None  # default $SELFSUP_RUNS or ./runs
    data: SSDataConfig = field(default_factory=SSDataConfig)
    model: SSModelConfig = field(default_factory=SSModelConfig)
    optim: SSOptimConfig = field(default_factory=SSOptimConfig)
    eval: SSEvalConfig = field(default_factory=SSEvalConfig)
    trainer: SSTrainerConfig = field(default_factory=SSTrainerConfig)


def load_single_step_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    base: dict | None = None,
) -> SingleStepConfig:
    """Defaults, then ``base``, the YAML at ``path`` and ``key=value`` overrides; validated."""
    cfg = load_config(SingleStepConfig, path, list(overrides), base=base)
    if cfg.model.direction not in ("backward", "forward"):
        raise ConfigError(
            f"model.direction must be 'backward' or 'forward', got {cfg.model.direction!r}"
        )
    if not cfg.eval.top_k or min(cfg.eval.top_k) < 1:
        raise ConfigError(f"eval.top_k must be positive integers, got {cfg.eval.top_k}")
    if cfg.optim.epochs < 0 or cfg.optim.batch_size < 2:
        raise ConfigError("optim.epochs must be >= 0 and optim.batch_size >= 2")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.model.dropout}")
    return cfg


# ============================================================================ metrics


@torch.no_grad()
def template_topk_accuracy(
    net: TemplateMLP,
    fps: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    batch_size: int = 2048,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Fraction of rows whose label is among the top-k templates (``-1`` labels are misses).

    Also returns ``loss``: mean cross-entropy over the rows with a known label.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    kmax = min(max(ks), net.n_templates)
    hits = {k: 0 for k in ks}
    loss_sum, n_known = 0.0, 0
    try:
        for s in range(0, len(fps), batch_size):
            xb = torch.as_tensor(np.asarray(fps[s : s + batch_size])).to(device)
            yb = torch.as_tensor(np.asarray(labels[s : s + batch_size]), dtype=torch.long)
            yb = yb.to(device)
            logits = net(xb)
            top = logits.topk(kmax, dim=1).indices
            match = top == yb[:, None]
            for k in ks:
                hits[k] += int(match[:, :k].any(dim=1).sum())
            known = yb >= 0
            if known.any():
                loss_sum += float(F.cross_entropy(logits[known], yb[known], reduction="sum"))
                n_known += int(known.sum())
    finally:
        net.train(was_training)
    n = max(len(fps), 1)
    out = {f"top{k}": hits[k] / n for k in ks}
    out["loss"] = loss_sum / max(n_known, 1)
    return out


def exact_match_topk(
    predictions: Sequence[Sequence[Any]],
    truths: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10, 50),
) -> dict[str, float]:
    """Top-k exact-match accuracy of ranked predictions against one truth per item.

    ``predictions[i]`` is ranked best first; each entry is compared with ``truths[i]`` after
    taking ``.reactants`` (a :class:`~selfsup.chem.retro.core.single_step.Proposal`) or ``.product``
    (a forward prediction) when present. Returns ``{"top{k}": fraction}``.
    """
    if len(predictions) != len(truths):
        raise InputError(f"{len(predictions)} prediction lists for {len(truths)} truths")
    hits = {k: 0 for k in ks}
    for preds, truth in zip(predictions, truths):
        rank = None
        for r, p in enumerate(preds):
            value = getattr(p, "reactants", getattr(p, "product", p))
            if value == truth:
                rank = r
                break
        for k in ks:
            hits[k] += rank is not None and rank < k
    n = max(len(truths), 1)
    return {f"top{k}": hits[k] / n for k in ks}


def evaluate_exact_match(
    model: MLPSingleStepModel | ForwardTemplateModel,
    inputs: Sequence[str],
    truths: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10, 50),
    batch_size: int = 64,
    progress: logging.Logger | None = None,
) -> dict[str, float]:
    """Exact-match top-k of a backward model (products -> reactant tuples) or a forward one.

    The backward model proposes with ``top_k = max(ks)`` (that many templates applied); the
    forward model applies ``max(ks)`` templates and keeps ``max(ks)`` products.
    """
    kmax = max(ks)
    preds: list[list[Any]] = []
    t0 = time.perf_counter()
    for s in range(0, len(inputs), batch_size):
        chunk = list(inputs[s : s + batch_size])
        if isinstance(model, ForwardTemplateModel):
            preds.extend(model.predict(chunk, n_templates=kmax, top_k=kmax))
        else:
            preds.extend(model.propose(chunk, top_k=kmax))
        if progress is not None:
            progress.info("exact-match eval %d/%d (%.1fs)", len(preds), len(inputs),
                          time.perf_counter() - t0)
    out = exact_match_topk(preds, truths, ks)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["n"] = len(inputs)
    out["mean_proposals"] = float(np.mean([len(p) for p in preds])) if preds else 0.0
    return out


# ============================================================================ training


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def train_epoch(
    net: TemplateMLP,
    optimizer: torch.optim.Optimizer,
    fps: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    device: str | torch.device = "cpu",
    on_batch: Callable[[float], None] | None = None,
) -> dict[str, float]:
    """One shuffled pass of cross-entropy training; returns mean ``loss`` and batch ``acc``.

    The order and the dropout masks depend only on ``seed`` (resumed runs repeat them). A
    trailing batch of one example is skipped (BatchNorm needs two). ``on_batch(loss)`` is called
    after each optimiser step (progress reporting).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed) + 1)
    order = torch.randperm(len(fps), generator=gen).numpy()
    net.train()
    loss_sum, correct, n_seen, n_steps = 0.0, 0, 0, 0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        if len(idx) < 2:
            continue
        xb = torch.from_numpy(fps[idx]).to(device)
        yb = torch.from_numpy(labels[idx]).long().to(device)
        logits = net(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        n_seen += len(idx)
        n_steps += 1
        if on_batch is not None:
            on_batch(float(loss.detach()))
    net.eval()
    return {
        "loss": loss_sum / max(n_seen, 1),
        "acc": correct / max(n_seen, 1),
        "n_steps": n_steps,
    }


def _inputs(split: SplitData, direction: str) -> np.ndarray:
    return split.reactant_fps if direction == "forward" else split.product_fps


def _make_net(cfg: SingleStepConfig, n_templates: int) -> TemplateMLP:
    cls = ForwardTemplateMLP if cfg.model.direction == "forward" else TemplateMLP
    return cls(n_templates, cfg.data.n_bits, cfg.model.hidden, cfg.model.dropout)


def _device(cfg: SingleStepConfig) -> torch.device:
    from selfsup.device import choose_device

    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    return torch.device(choose_device(cfg.trainer.device).accelerator)


def _prepare(cfg: SingleStepConfig) -> tuple[TemplateData, dict]:
    return prepare_uspto50k(
        cfg.data.root,
        cfg.data.cache_dir,
        min_count=cfg.data.min_count,
        reextract=cfg.data.reextract,
        radius=cfg.data.radius,
        n_bits=cfg.data.n_bits,
    )


def train_single_step(
    config_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    max_epochs: int | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Train, select and evaluate the template MLP; return the run and its results.

    ``max_epochs`` stops this call after that many epochs (the run stays ``running`` and
    :func:`resume` continues it), for time-sliced jobs; results are then ``{}``.
    """
    cfg = load_single_step_config(config_path, overrides)
    run = Run.create(cfg.name, to_dict(cfg), seed=cfg.seed, root=cfg.run_root,
                     kind="chem.train_single_step")
    with run.marks_failure():
        return _train(run, cfg, start_ckpt=None, max_epochs=max_epochs)


def resume(run_path: str | os.PathLike, *, max_epochs: int | None = None
           ) -> tuple[Run, dict[str, Any]]:
    """Continue a killed (or time-sliced) run from ``checkpoints/last.pt``.

    Metrics logged after the checkpoint are dropped first, so none is counted twice. A finished
    run is returned as it is.
    """
    run = Run.reopen(run_path, "chem.train_single_step")
    if run.finished:
        return run, run.unchanged()
    cfg = run.load_config(SingleStepConfig, loader=load_single_step_config)
    ckpt = run.read_checkpoint("last.pt", "epoch", unit="epoch")
    run.mark_resumed()
    run.trim_metrics(int(ckpt["epoch"]) if ckpt is not None else 0)
    with run.marks_failure():
        return _train(run, cfg, start_ckpt=ckpt, max_epochs=max_epochs)


def _train(
    run: Run, cfg: SingleStepConfig, start_ckpt: dict | None, max_epochs: int | None
) -> tuple[Run, dict[str, Any]]:
    logger = run.logger()
    device = _device(cfg)
    t_prep = time.perf_counter()
    data, data_report = _prepare(cfg)
    t_prep = time.perf_counter() - t_prep
    logger.info("data: %d templates, %s (%.1fs)", data.n_templates,
                {k: v["n_reactions"] for k, v in data_report["splits"].items()}, t_prep)
    direction = cfg.model.direction
    train, valid = data["train"], data["valid"]
    keep = train.labels >= 0
    x_train = np.ascontiguousarray(_inputs(train, direction)[keep])
    y_train = train.labels[keep]
    if len(y_train) < 2:
        raise InputError("fewer than two training reactions with a template: nothing to train")

    _seed_all(cfg.seed)
    net = _make_net(cfg, data.n_templates).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start_epoch = 0
    best: dict[str, Any] = {"epoch": 0, "metric": -1.0, "state_dict": None}
    if start_ckpt is not None:
        if start_ckpt.get("format") != CKPT_FORMAT:
            raise InputError(f"{run.path}: checkpoint format is not {CKPT_FORMAT}")
        if int(start_ckpt["n_templates"]) != data.n_templates:
            raise InputError(
                f"{run.path}: checkpoint has {start_ckpt['n_templates']} templates, the data "
                f"{data.n_templates}: the data or min_count changed since the run started"
            )
        net.load_state_dict(start_ckpt["net"])
        opt.load_state_dict(start_ckpt["optimizer"])
        start_epoch = int(start_ckpt["epoch"])
        best = dict(start_ckpt["best"])
        logger.info("resumed after epoch %d", start_epoch)

    ks = sorted(set(int(k) for k in cfg.eval.top_k))
    t_train = time.perf_counter()
    end_epoch = cfg.optim.epochs
    if max_epochs is not None:
        end_epoch = min(end_epoch, start_epoch + int(max_epochs))
    n_fit = len(y_train)
    steps_per_epoch = n_fit // cfg.optim.batch_size + int(n_fit % cfg.optim.batch_size >= 2)
    bar = Progress(cfg.optim.epochs * steps_per_epoch, "train-single-step", "steps")
    shown = {"step": start_epoch * steps_per_epoch, "epoch": start_epoch}

    def on_batch(loss: float) -> None:
        shown["step"] += 1
        bar.update(shown["step"], epoch=f"{shown['epoch']}/{cfg.optim.epochs}", loss=loss)

    with bar:
        for epoch in range(start_epoch + 1, end_epoch + 1):
            t0 = time.perf_counter()
            shown["epoch"] = epoch
            tr = train_epoch(net, opt, x_train, y_train, cfg.optim.batch_size,
                             seed=cfg.seed * 100_003 + epoch, device=device,
                             on_batch=on_batch)
            va = template_topk_accuracy(net, _inputs(valid, direction), valid.labels, ks,
                                        cfg.eval.template_batch_size, device)
            improved = va["top1"] > best["metric"]
            if improved:
                best = {"epoch": epoch, "metric": va["top1"],
                        "state_dict": {k: v.detach().cpu().clone()
                                       for k, v in net.state_dict().items()}}
            row = {"step": epoch, "epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"],
                   "valid_loss": va["loss"],
                   **{f"valid_template_top{k}": va[f"top{k}"] for k in ks},
                   "best_epoch": best["epoch"], "seconds": round(time.perf_counter() - t0, 2)}
            atomic_torch_save({
                "format": CKPT_FORMAT, "epoch": epoch, "n_templates": data.n_templates,
                "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict(), "best": best,
            }, run.checkpoint_dir / "last.pt")
            run.log_metrics(row)
            logger.info("epoch %d: %s", epoch, row)
            bar.update(epoch * steps_per_epoch, valid_top1=va["top1"])
    t_train = time.perf_counter() - t_train
    if end_epoch < cfg.optim.epochs:
        logger.info("stopped after epoch %d of %d (max_epochs); resume to continue",
                    end_epoch, cfg.optim.epochs)
        return run, {}

    if best["state_dict"] is not None:
        net.load_state_dict(best["state_dict"])
    net.eval()
    model_cls = ForwardTemplateModel if direction == "forward" else MLPSingleStepModel
    model = model_cls(net, data.templates, radius=cfg.data.radius, device=device)
    model.save(run.path / "model.pt",
               extra={"best_epoch": int(best["epoch"]), "valid_template_top1": best["metric"],
                      "direction": direction})

    results: dict[str, Any] = {
        "direction": direction,
        "n_templates": data.n_templates,
        "data": {k: v for k, v in data_report.items() if k != "cache"},
        "best_epoch": int(best["epoch"]),
        "valid_template_top1": float(best["metric"]),
        "prepare_seconds": round(t_prep, 2),
        "train_seconds_this_call": round(t_train, 2),
    }
    test = data["test"]
    tt = template_topk_accuracy(net, _inputs(test, direction), test.labels, ks,
                                cfg.eval.template_batch_size, device)
    results.update({f"test_template_top{k}": tt[f"top{k}"] for k in ks})
    results["test_template_n"] = len(test)

    sub = test
    if cfg.eval.n_test and cfg.eval.n_test < len(test):
        rng = np.random.default_rng(cfg.eval.subset_seed)
        sub = test.subset(np.sort(rng.choice(len(test), cfg.eval.n_test, replace=False)))
    if direction == "forward":
        inputs, truths = [".".join(r) for r in sub.reactants], list(sub.products)
    else:
        inputs, truths = list(sub.products), list(sub.reactants)
    em = evaluate_exact_match(model, inputs, truths, ks, cfg.eval.batch_size, logger)
    results.update({f"test_exact_top{k}": em[f"top{k}"] for k in ks})
    results["test_exact_n"] = em["n"]
    results["test_exact_seconds"] = em["seconds"]
    results["test_exact_mean_proposals"] = em["mean_proposals"]
    results["test_exact_template_coverage"] = sub.coverage
    results["n_template_errors"] = int(model.n_template_errors)
    logger.info("results: %s", results)
    run.finish(results)
    return run, results


# ============================================================================ fine-tuning


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

    ``on_epoch(epoch, loss)`` is called after each epoch (progress reporting).
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
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        if select is not None:
            select_top1.append(template_topk_accuracy(net, select[0], select[1], (1,))["top1"])
            best_state = copy.deepcopy(net.state_dict())
        for epoch in range(1, epochs + 1):
            tr = train_epoch(net, opt, fps, y, batch_size, seed=seed * 100_003 + epoch,
                             device=device)
            losses.append(tr["loss"])
            row = {"step": epoch, "finetune_epoch": epoch, "finetune_loss": tr["loss"],
                   "finetune_acc": tr["acc"]}
            if select is not None:
                row["select_top1"] = template_topk_accuracy(net, select[0], select[1],
                                                            (1,))["top1"]
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


def load_trained_model(run_path: str | os.PathLike, device: str = "cpu"
                       ) -> MLPSingleStepModel | ForwardTemplateModel:
    """The selected model of a finished training run (``<run>/model.pt``)."""
    from ..models.mlp import load_template_model

    path = Path(run_path) / "model.pt"
    if not path.is_file():
        raise InputError(f"'{run_path}' has no model.pt: is it a finished single-step run?")
    return load_template_model(path, device=device)
