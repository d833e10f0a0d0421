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

The loop runs on Lightning Fabric (``lightning.fabric.Fabric``: Lightning's accelerators and
precision plugins, under a loop of one's own; see :func:`selfsup.device.setup_fabric`): it places
the network and batches on the device of ``trainer.device`` (by default one device: the CPU, one
CUDA GPU or Apple MPS) and applies ``trainer.precision`` (``auto``: bf16 mixed precision on a CUDA
GPU that has it, else fp16 mixed with a gradient scaler, 32-bit on CPU and MPS) to the forward
passes of training and validation and to backpropagation. In 32-bit precision a step is the same
arithmetic as a plain PyTorch loop. The loop itself (data order, epochs, model selection,
checkpoints) stays here, so that resume is exact: the order and dropout masks of epoch ``e`` depend
only on ``(seed, e)``, and ``checkpoints/last.pt`` holds the network, Adam's state, the selection so
far and, under 16-bit mixed precision, the gradient scaler's state. The test metrics are measured on
the selected network as saved (outside autocast).

Data-parallel: ``trainer.devices=N trainer.strategy=ddp`` (``N`` > 1 alone means ddp too) trains
over ``N`` processes of one machine (GPUs, or CPU processes on gloo) with PyTorch DDP through
Fabric. ``selfsup chem train-single-step ...`` (or ``--resume RUN``) starts as one process, which
re-runs its command line for ranks 1..N-1 when it sets up Fabric (Fabric's script launcher); they
join its run folder (:func:`selfsup.runs.ddp_child_run`). Rank 0 prepares the data cache first;
in every epoch each process trains on its shard of the epoch's permutation
(:func:`selfsup.device.shard_order`; ``optim.batch_size`` is per process), DDP averages the
gradients (and hands rank 0's BatchNorm statistics to all), and rank 0 alone validates, selects,
writes ``checkpoints/last.pt`` (the one-process kind), logs and tests. Resume stays exact: a
process's order and dropout masks depend only on ``(seed, epoch, rank)``.

The metrics are in :mod:`.metrics`; fine-tuning a trained model (self-improvement) is
:func:`~.fine_tune.fine_tune`, which reuses :func:`train_epoch`; a finished run's model loads with
:func:`~selfsup.chem.retro.models.mlp.load_trained_model`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.device import (
    check_parallel,
    check_precision,
    gradient_step,
    record_shard,
    shard_order,
)
from selfsup.errors import ConfigError, InputError
from selfsup.io import atomic_torch_save
from selfsup.progress import Progress
from selfsup.runs import Run, ddp_child_run, ddp_run_env, resume_run, start_run

from ..models.mlp import (
    ForwardTemplateMLP,
    ForwardTemplateModel,
    MLPSingleStepModel,
    TemplateMLP,
)
from .metrics import evaluate_exact_match, template_topk_accuracy
from .templates_data import SplitData, TemplateData, prepare_uspto50k

if TYPE_CHECKING:
    from lightning.fabric import Fabric

__all__ = [
    "DATA_SETTING_KEYS",
    "SingleStepConfig",
    "load_single_step_config",
    "model_data_settings",
    "resume",
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
    # issue 23: drop train/valid reactions whose template does not reproduce them, and identify
    # templates by canonical key (templates_data module docstring)
    clean: bool = False
    # tables of extra train reactions (templates_data.write_reaction_table; a relative path not
    # found here is looked up under <data cache>/derived), e.g. the ORD training group
    extra_train: list[str] = field(default_factory=list)


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
    # auto (bf16-mixed on CUDA, else 32-true) | 32-true | bf16-mixed | 16-mixed (Lightning's names)
    precision: str = "auto"
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    # devices (GPUs, or CPU processes with strategy=ddp) of one machine; with more than one,
    # optim.batch_size is per process and an epoch has 1/devices of the steps
    devices: int = 1
    strategy: str = "auto"  # auto | ddp (torch.distributed; gloo on CPUs, nccl on GPUs)


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
    check_precision(cfg.trainer.precision)  # before a run folder is made or a run is resumed
    check_parallel(cfg.trainer.devices, cfg.trainer.strategy)
    return cfg


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
    fabric: Fabric | None = None,
) -> dict[str, float]:
    """One shuffled pass of cross-entropy training; returns mean ``loss`` and batch ``acc``.

    The order and the dropout masks depend only on ``seed`` (resumed runs repeat them). A
    trailing batch of one example is skipped (BatchNorm needs two). ``on_batch(loss)`` is called
    after each optimiser step (progress reporting).

    With ``fabric`` (a Lightning Fabric that set up ``net`` and ``optimizer``), batches go to its
    device (``device`` is not used), the forward pass runs under its precision (autocast) and
    backpropagation goes through it (the gradient scaler of 16-bit mixed precision); in 32-bit
    precision the step is the same arithmetic as without it. A data-parallel (launched) fabric of
    ``world_size`` processes: each takes its shard of the epoch's order
    (:func:`selfsup.device.shard_order`; the same number of steps in every process), its dropout
    masks from ``(seed, rank)``, DDP averages the gradients, and the ``loss`` and ``acc``
    returned are those of all processes' examples.
    """
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    if fabric is not None:
        device, autocast = fabric.device, fabric.autocast
    else:
        device, autocast = torch.device(device), nullcontext
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed) + 1 if world == 1 else (int(seed) + 1) * world + rank)
    order = shard_order(torch.randperm(len(fps), generator=gen).numpy(), rank, world)
    record_shard(seed, order, rank)  # a test hook
    net.train()
    loss_sum, correct, n_seen, n_steps = 0.0, 0, 0, 0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        if len(idx) < 2:
            continue
        xb = torch.from_numpy(fps[idx]).to(device)
        yb = torch.from_numpy(labels[idx]).long().to(device)
        with autocast():
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
        gradient_step(net, loss, optimizer, fabric=fabric)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        n_seen += len(idx)
        n_steps += 1
        if on_batch is not None:
            on_batch(float(loss.detach()))
    net.eval()
    if world > 1 and fabric is not None:  # the epoch's figures over all processes
        total = fabric.all_reduce(torch.tensor([loss_sum, correct, n_seen], dtype=torch.float64,
                                               device=device), reduce_op="sum")
        loss_sum, correct, n_seen = float(total[0]), int(total[1]), int(total[2])
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


def _parallel(cfg: SingleStepConfig) -> bool:
    return cfg.trainer.devices > 1 or cfg.trainer.strategy == "ddp"


def _fabric(cfg: SingleStepConfig, run: Run):
    """The Lightning Fabric of a run: ``trainer.devices`` of ``trainer.device`` (one by default;
    more: DDP under ``trainer.strategy``, the other processes launched here and told ``run``'s
    folder) with ``trainer.precision`` (after ``trainer.threads`` is applied); returns ``(fabric,
    the DeviceChoice)``."""
    from selfsup.device import setup_fabric

    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(int(t.threads))
    with ddp_run_env(run, _parallel(cfg)):
        out = setup_fabric(t.device, t.precision, devices=t.devices, strategy=t.strategy)
    if t.threads:  # again: Lightning's launcher sets its own count when $OMP_NUM_THREADS is unset
        torch.set_num_threads(int(t.threads))
    return out


# the settings of the training split (prepare_uspto50k's keyword arguments) that a saved model
# records in its checkpoint (``extra["data"]``), so that what fine-tunes it later
# (self-improvement's rehearsal and random control) draws from the same split
DATA_SETTING_KEYS = ("min_count", "reextract", "radius", "n_bits", "clean", "extra_train")


def _data_settings(cfg: SingleStepConfig) -> dict[str, Any]:
    d = cfg.data
    return {"min_count": int(d.min_count), "reextract": bool(d.reextract), "radius": int(d.radius),
            "n_bits": int(d.n_bits), "clean": bool(d.clean),
            "extra_train": [str(p) for p in d.extra_train]}


def _prepare(cfg: SingleStepConfig) -> tuple[TemplateData, dict]:
    return prepare_uspto50k(cfg.data.root, cfg.data.cache_dir, **_data_settings(cfg))


def model_data_settings(model_path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The training-split settings (``DATA_SETTING_KEYS``) a single-step model was trained with,
    and where they were read: its checkpoint (``extra["data"]``, written since issue 23), else
    the ``config.yaml`` of the ``selfsup chem train-single-step`` run folder holding it, else
    the defaults (USPTO-50k alone, as recorded templates)."""
    import yaml

    from ..models.mlp import _read_checkpoint

    path = Path(model_path)
    extra = _read_checkpoint(path).get("extra", {}) or {}
    if isinstance(extra.get("data"), dict):
        got, source = extra["data"], "checkpoint"
    elif (path.parent / "config.yaml").is_file() and (path.parent / "run.json").is_file():
        got = (yaml.safe_load((path.parent / "config.yaml").read_text()) or {}).get("data") or {}
        source = str(path.parent / "config.yaml")
    else:
        got, source = {}, "defaults"
    base = _data_settings(SingleStepConfig())
    out = {k: got.get(k, base[k]) for k in DATA_SETTING_KEYS}
    out["extra_train"] = [str(p) for p in (out["extra_train"] or [])]
    return out, source


def train_single_step(
    config_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    max_epochs: int | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Train, select and evaluate the template MLP; return the run and its results.

    ``max_epochs`` stops this call after that many epochs (the run stays ``running`` and
    :func:`resume` continues it), for time-sliced jobs; results are then ``{}``.

    With ``trainer.devices`` > 1 this is also what the other processes of a data-parallel run
    call (the launcher re-runs the command line): they join the run rank 0 made, and return
    ``{}`` (rank 0 evaluates and reports).
    """
    child = ddp_child_run()
    if child is not None:
        return child, _train(child, child.load_config(SingleStepConfig,
                                                      loader=load_single_step_config),
                             start_ckpt=None, max_epochs=max_epochs)
    return start_run("chem.train_single_step", SingleStepConfig, config_path, overrides,
                     lambda run, cfg: _train(run, cfg, start_ckpt=None, max_epochs=max_epochs),
                     loader=load_single_step_config)


def resume(run_path: str | os.PathLike, *, max_epochs: int | None = None
           ) -> tuple[Run, dict[str, Any]]:
    """Continue a killed (or time-sliced) run from ``checkpoints/last.pt``.

    Metrics logged after the checkpoint are dropped first, so none is counted twice. A finished
    run is returned as it is. A data-parallel run resumes with its ``trainer.devices`` processes.
    """
    child = ddp_child_run()
    if child is not None:  # a process launched by rank 0: the run's config and checkpoint as is
        return child, _train(child, child.load_config(SingleStepConfig,
                                                      loader=load_single_step_config),
                             start_ckpt=child.read_checkpoint("last.pt", "epoch", unit="epoch"),
                             max_epochs=max_epochs)

    def go_on(run: Run, cfg: SingleStepConfig, ckpt: dict | None) -> dict[str, Any]:
        run.trim_metrics(int(ckpt["epoch"]) if ckpt is not None else 0)
        return _train(run, cfg, start_ckpt=ckpt, max_epochs=max_epochs)

    return resume_run("chem.train_single_step", SingleStepConfig, run_path, go_on,
                      loader=load_single_step_config,
                      check=lambda run, cfg: run.read_checkpoint("last.pt", "epoch",
                                                                 unit="epoch"))


def _train(
    run: Run, cfg: SingleStepConfig, start_ckpt: dict | None, max_epochs: int | None
) -> dict[str, Any]:
    fabric, dev = _fabric(cfg, run)
    device = fabric.device
    # data-parallel: only rank 0 writes files (log, metrics, checkpoints, model) and evaluates
    world, main = fabric.world_size, fabric.is_global_zero
    logger = run.logger() if main else log
    logger.info("device %s, precision %s%s", dev.description, dev.precision,
                f", {world} processes ({cfg.trainer.strategy})" if world > 1 else "")
    t_prep = time.perf_counter()
    if world > 1:
        with fabric.rank_zero_first():  # rank 0 fills the cache of prepared arrays, then others
            data, data_report = _prepare(cfg)
    else:
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

    # network and optimiser set up by Fabric (device, precision); ``net`` and ``opt`` stay the
    # plain objects, for their state dicts, validation and the saved model
    _seed_all(cfg.seed)
    net = _make_net(cfg, data.n_templates)
    fabric_net = fabric.setup_module(net)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    optimizer = fabric.setup_optimizers(opt)
    precision = fabric.strategy.precision  # holds the gradient scaler of 16-bit mixed precision
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
        if start_ckpt.get("precision"):
            precision.load_state_dict(start_ckpt["precision"])
        start_epoch = int(start_ckpt["epoch"])
        best = dict(start_ckpt["best"])
        logger.info("resumed after epoch %d", start_epoch)

    ks = sorted(set(int(k) for k in cfg.eval.top_k))
    t_train = time.perf_counter()
    end_epoch = cfg.optim.epochs
    if max_epochs is not None:
        end_epoch = min(end_epoch, start_epoch + int(max_epochs))
    n_fit = -(-len(y_train) // world)  # the rows of an epoch each process trains on
    steps_per_epoch = n_fit // cfg.optim.batch_size + int(n_fit % cfg.optim.batch_size >= 2)
    bar = Progress(cfg.optim.epochs * steps_per_epoch, "train-single-step", "steps",
                   enabled=None if main else False)
    shown = {"step": start_epoch * steps_per_epoch, "epoch": start_epoch}

    def on_batch(loss: float) -> None:
        shown["step"] += 1
        bar.update(shown["step"], epoch=f"{shown['epoch']}/{cfg.optim.epochs}", loss=loss)

    with bar:
        for epoch in range(start_epoch + 1, end_epoch + 1):
            t0 = time.perf_counter()
            shown["epoch"] = epoch
            tr = train_epoch(fabric_net, optimizer, x_train, y_train, cfg.optim.batch_size,
                             seed=cfg.seed * 100_003 + epoch, on_batch=on_batch, fabric=fabric)
            if not main:  # rank 0 selects, checkpoints and logs
                continue
            with fabric.autocast():
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
                "precision": precision.state_dict(),  # {} but with a gradient scaler
            }, run.checkpoint_dir / "last.pt")
            run.log_metrics(row)
            logger.info("epoch %d: %s", epoch, row)
            bar.update(epoch * steps_per_epoch, valid_top1=va["top1"])
    t_train = time.perf_counter() - t_train
    if not main:
        return {}
    if end_epoch < cfg.optim.epochs:
        logger.info("stopped after epoch %d of %d (max_epochs); resume to continue",
                    end_epoch, cfg.optim.epochs)
        return {}

    if best["state_dict"] is not None:
        net.load_state_dict(best["state_dict"])
    net.eval()
    model_cls = ForwardTemplateModel if direction == "forward" else MLPSingleStepModel
    model = model_cls(net, data.templates, radius=cfg.data.radius, device=device)
    model.save(run.path / "model.pt",
               extra={"best_epoch": int(best["epoch"]), "valid_template_top1": best["metric"],
                      "direction": direction, "data": _data_settings(cfg)})

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
    return results
