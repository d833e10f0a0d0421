"""Pretraining of the SMILES LSTM by maximum likelihood: GEGL's apprentice before its rounds.

Reads top to bottom: the config (its ``data`` section is :class:`~.corpus.DataConfig`), the
pretraining loop with atomic checkpoints, then :func:`pretrain` / :func:`resume`. The corpus is
prepared by :mod:`.corpus`, each step is :func:`~.likelihood.gradient_step` on
:meth:`SmilesLSTM.loss` (mean negative log-probability per target token, gradients clipped to
norm 1.0 by default), and the samples drawn at the end are scored by :mod:`.metrics`.

The loop runs on Lightning Fabric (``lightning.fabric.Fabric``: Lightning's accelerators and
precision plugins, which vision's Lightning Trainer uses too, under a loop of one's own): it
places the model and batches on the device of ``trainer.accelerator`` (by default one device: the
CPU, one CUDA GPU or Apple MPS) and applies ``trainer.precision`` (``auto``: bf16 mixed precision
on a CUDA GPU that has it, else fp16 mixed with a gradient scaler, 32-bit on CPU and MPS; see
:func:`selfsup.device.choose_device`) to the forward passes, backpropagation and gradient
clipping. In 32-bit precision a step is the same arithmetic as a plain PyTorch loop. The loop
itself (data order, schedule, logging, validation, checkpoints) stays here, so that resume is
exact.

Two opt-in speed settings, both off by default (seeded runs with them round differently from runs
without): ``trainer.precision=bf16-mixed`` (bfloat16 autocast of the forward passes, fp32 weights
and Adam; pays off on CPUs with AMX / AVX-512 BF16) and ``optim.length_groups=n`` (each batch
sorted by length and run as ``n`` groups trimmed to their own longest row: less padding, the same
mean loss per target token; one process only). Both resume exactly like the default.

Data-parallel: ``trainer.devices=N trainer.strategy=ddp`` (``N`` > 1 alone means ddp too) trains
over ``N`` processes of one machine (GPUs, or CPU processes on gloo) with PyTorch DDP through
Fabric (:func:`selfsup.device.setup_fabric`). The command (``selfsup chem pretrain ...`` or
``--resume RUN``) starts as one process; when it sets up Fabric it re-runs its own command line
for ranks 1..N-1 (Fabric's script launcher, ``LOCAL_RANK`` set), which join rank 0's run folder
(:func:`selfsup.runs.ddp_child_run`) instead of making one. Each process trains on its shard of
every epoch's permutation (:func:`selfsup.device.shard_order`: every N-th row; ``optim.batch_size``
is per process, so an epoch has 1/N of the steps), DDP averages the gradients, and only rank 0
writes files (vocab, metrics, log, checkpoints, model, samples, results; validation and sampling
run there too). The logged training loss and tokens per second are over all processes. The
checkpoint is the one-process kind; resume it with the same ``trainer.devices``.

Determinism: the model is initialised from ``seed``; the data order of epoch ``e`` is a
permutation drawn from ``(seed, e)``; dropout draws from torch's global generator, whose state is
saved in every checkpoint (with the gradient scaler's, under 16-bit mixed precision), so a
resumed run continues exactly as the uninterrupted one. Over N > 1 processes the generator is
seeded at every step from ``(seed, step, rank)`` instead (each process's dropout masks differ and
need no saved state), and the loss window in the checkpoint is the mean over the processes, so a
resumed data-parallel run is exact too.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfsup.chem.lstm.corpus import DataConfig, batch_tokens, prepare_corpus
from selfsup.chem.lstm.metrics import sample_metrics
from selfsup.chem.lstm.model import EncodedSmiles, SmilesLSTM, SmilesLSTMConfig
from selfsup.device import (
    check_parallel,
    check_precision,
    gradient_step,
    record_shard,
    shard_order,
)
from selfsup.errors import ConfigError, InputError
from selfsup.io import atomic_torch_save, atomic_write_json, atomic_write_text
from selfsup.progress import Progress
from selfsup.runs import Run, ddp_child_run, ddp_run_env, resume_run, start_run

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "TrainerConfig",
    "pretrain",
    "resume",
]

# ============================================================================ config


@dataclass(frozen=True)
class ModelConfig:
    embed_dim: int = 256
    hidden_dim: int = 1024  # GEGL: 3 x 1024
    n_layers: int = 3
    dropout: float = 0.2


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    max_steps: int | None = None  # overrides epochs when set
    schedule: str = "constant"  # constant | cosine (to 0 at the last step)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    weight_decay: float = 0.0
    # opt-in speed setting (off: 1): each batch sorted by length and run as this many groups, each
    # trimmed to its own longest row (less padding); the loss is still the mean over every target
    # token of the batch, so only the rounding differs (and, with dropout, the masks drawn).
    # One process only (several forwards per step do not go through DDP's gradient averaging).
    length_groups: int = 1


@dataclass(frozen=True)
class EvalConfig:
    n_samples: int = 1000  # SMILES sampled at the end for validity / uniqueness / novelty
    sample_batch_size: int = 1000
    temperature: float = 1.0
    val_every_n_steps: int = 500  # validation loss (also at the last step)
    eval_batch_size: int = 512


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: str = "auto"  # auto | cpu | cuda | mps
    # auto (bf16-mixed on CUDA, else 32-true) | 32-true | bf16-mixed | 16-mixed (Lightning's names)
    precision: str = "auto"
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 500  # checkpoints/last.ckpt (also at the last step)
    # devices (GPUs, or CPU processes with strategy=ddp) of one machine; with more than one,
    # optim.batch_size is per process and an epoch has 1/devices of the steps
    devices: int = 1
    strategy: str = "auto"  # auto | ddp (torch.distributed; gloo on CPUs, nccl on GPUs)


@dataclass(frozen=True)
class PretrainConfig:
    name: str = "smiles-lstm"
    seed: int = 0
    run_root: str | None = None  # default $SELFSUP_RUNS or ./runs
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def _check(cfg: PretrainConfig) -> None:
    if cfg.optim.schedule not in ("constant", "cosine"):
        raise ConfigError(f"optim.schedule={cfg.optim.schedule!r}; use constant or cosine")
    positive = {
        "optim.batch_size": cfg.optim.batch_size, "optim.epochs": cfg.optim.epochs,
        "optim.length_groups": cfg.optim.length_groups,
        "data.max_len": cfg.data.max_len, "eval.sample_batch_size": cfg.eval.sample_batch_size,
        "eval.eval_batch_size": cfg.eval.eval_batch_size,
        "eval.val_every_n_steps": cfg.eval.val_every_n_steps,
        "trainer.log_every_n_steps": cfg.trainer.log_every_n_steps,
        "trainer.checkpoint_every_n_steps": cfg.trainer.checkpoint_every_n_steps,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if cfg.optim.max_steps is not None and cfg.optim.max_steps < 1:
        raise ConfigError(f"optim.max_steps must be >= 1 or null, got {cfg.optim.max_steps}")
    if cfg.data.val_size < 0 or cfg.eval.n_samples < 0:
        raise ConfigError("data.val_size and eval.n_samples must be >= 0")
    check_precision(cfg.trainer.precision)
    check_parallel(cfg.trainer.devices, cfg.trainer.strategy)
    if cfg.optim.length_groups > 1 and _parallel(cfg):
        raise ConfigError(f"optim.length_groups={cfg.optim.length_groups} needs one process; "
                          "set optim.length_groups=1 or trainer.devices=1")


def _write_samples_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["smiles", "valid", "canonical", "novel"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# ============================================================================ pretraining loop


def _lr_schedule(cfg: OptimConfig, total_steps: int) -> list[float]:
    """Learning rate of every step (precomputed; length ``total_steps``)."""
    if cfg.schedule == "constant":
        lrs = [cfg.lr] * total_steps
    else:
        lrs = [0.5 * cfg.lr * (1 + math.cos(math.pi * s / total_steps)) for s in range(total_steps)]
    assert len(lrs) == total_steps
    return lrs


@torch.no_grad()
def _val_loss(model: SmilesLSTM, enc: EncodedSmiles, batch_size: int, device,
              autocast: Callable[[], AbstractContextManager]) -> float | None:
    if len(enc) == 0:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(enc), batch_size):
        tokens = batch_tokens(enc, torch.arange(i, min(i + batch_size, len(enc))), device)
        with autocast():
            nll = model.token_nll(tokens)
        total += float(nll.float().sum())
        count += int((tokens[:, 1:] != 0).sum())
    model.train(was_training)
    return total / max(count, 1)


def _grouped_loss(model: Any, enc: EncodedSmiles, idx: torch.Tensor, groups: int,
                  device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean token NLL of rows ``idx`` of ``enc`` computed in ``groups`` length-sorted groups, each
    trimmed to its own longest row (``optim.length_groups``): the sum of the groups' NLLs over
    the batch's target-token count. Returns ``(loss, target tokens)``."""
    idx = idx[torch.argsort(enc.lengths[idx], stable=True)]
    n_targets = int((enc.lengths[idx].long() - 1).sum())
    total = None
    for part in idx.chunk(groups):
        nll = model.token_nll(batch_tokens(enc, part, device)).sum()  # (b_g, T_g - 1) summed
        total = nll if total is None else total + nll
    return total / max(n_targets, 1), n_targets


def _epoch_order(seed: int, epoch: int, n: int, rank: int = 0, world_size: int = 1
                 ) -> torch.Tensor:
    """The training rows of epoch ``epoch`` in order: a permutation of ``n`` drawn from ``(seed,
    epoch)``; with ``world_size`` processes, process ``rank``'s shard of it
    (:func:`selfsup.device.shard_order`)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return shard_order(torch.randperm(n, generator=g), rank, world_size)


def _fault_inject(step: int) -> None:
    """Test hook: ``SELFSUP_FAULT_INJECT=stop_at_step:K`` raises RuntimeError after step K."""
    flag = os.environ.get("SELFSUP_FAULT_INJECT", "")
    if flag.startswith("stop_at_step:") and step == int(flag.split(":", 1)[1]):
        raise RuntimeError(f"SELFSUP_FAULT_INJECT stopped the run after step {step}")


def _parallel(cfg: PretrainConfig) -> bool:
    return cfg.trainer.devices > 1 or cfg.trainer.strategy == "ddp"


def _fabric(cfg: PretrainConfig, run: Run):
    """The Lightning Fabric of a run (:func:`selfsup.device.setup_fabric`): ``trainer.devices``
    of ``trainer.accelerator`` (one by default; more: DDP under ``trainer.strategy``, the other
    processes launched here and told ``run``'s folder) with ``trainer.precision``; returns
    ``(fabric, the DeviceChoice)``."""
    from selfsup.device import setup_fabric

    t = cfg.trainer
    with ddp_run_env(run, _parallel(cfg)):
        out = setup_fabric(t.accelerator, t.precision, devices=t.devices, strategy=t.strategy)
    if t.threads:  # again: Lightning's launcher sets its own count when $OMP_NUM_THREADS is unset
        torch.set_num_threads(t.threads)
    return out


def _run_fit(
    run: Run, cfg: PretrainConfig, state: dict | None, console: Callable[[str], None] | None
) -> dict[str, Any]:
    _check(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    fabric, dev = _fabric(cfg, run)
    device = fabric.device
    # data-parallel: this process's rank of world; only rank 0 writes files and talks
    rank, world = fabric.global_rank, fabric.world_size
    main = rank == 0
    log = run.logger() if main else None

    def say(msg: str) -> None:
        if log is None:
            return
        log.info(msg)
        if console is not None:
            console(msg)

    def ranks_sum(values: list[float]) -> list[float]:
        """``values`` summed over the processes (one all-reduce); themselves in one process."""
        if world == 1:
            return values
        total = fabric.all_reduce(torch.tensor(values, dtype=torch.float64, device=device),
                                  reduce_op="sum")
        return [float(v) for v in total.cpu()]
    # the device as results.json and the log name it; a precision other than 32-bit is added
    device_name = dev.description + ("" if dev.precision == "32-true" else f", {dev.precision}")

    # -- data
    t0 = time.perf_counter()
    corpus = prepare_corpus(cfg.data, cfg.seed)
    say(f"corpus {cfg.data.dataset}: {corpus.stats} ({time.perf_counter() - t0:.1f}s)")
    vocab = corpus.vocab
    if state is not None and state["vocab"] != vocab.to_dict():
        raise InputError(
            f"run {run.path}: the corpus gives another vocabulary than the checkpoint's; was the "
            f"dataset file {cfg.data.dataset!r} changed? Start a new run instead"
        )
    if main:
        atomic_write_json(run.path / "vocab.json", vocab.to_dict())

    # -- model and optimiser, set up by Fabric (device, precision); ``model`` and ``adam`` stay
    # the plain objects, for their state dicts, the validation loss, sampling and model.pt
    torch.manual_seed(cfg.seed)
    mcfg = SmilesLSTMConfig(vocab_size=len(vocab), **asdict(cfg.model))
    model = SmilesLSTM(mcfg)
    fabric_model = fabric.setup_module(model)
    if _parallel(cfg):  # SmilesLSTM.loss runs through DDP's forward (its gradient averaging)
        fabric_model.mark_forward_method("loss")
    groups = cfg.optim.length_groups
    if groups > 1:
        fabric_model.mark_forward_method("token_nll")
    adam = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    optimizer = fabric.setup_optimizers(adam)
    precision = fabric.strategy.precision  # holds the gradient scaler of 16-bit mixed precision
    n_train = len(corpus.train)
    n_shard = math.ceil(n_train / world)  # the rows of an epoch each process trains on
    steps_per_epoch = math.ceil(n_shard / cfg.optim.batch_size)
    total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    lrs = _lr_schedule(cfg.optim, total)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"device {device_name}; {n_params:,} parameters; {n_train} train molecules; "
        f"{total} steps ({steps_per_epoch} per epoch)"
        + (f"; {world} processes ({cfg.trainer.strategy})" if world > 1 else ""))

    # -- resume
    step = 0
    window = {"loss_sum": 0.0, "n": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        adam.load_state_dict(state["optimizer"])
        if state.get("precision"):
            precision.load_state_dict(state["precision"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step = int(state["step"])
        window = dict(state["window"])
        say(f"resumed from step {step}")

    def checkpoint() -> None:
        # data-parallel: the loss window averaged over the processes (each resumes from it)
        saved = window if world == 1 else {"loss_sum": ranks_sum([window["loss_sum"]])[0] / world,
                                           "n": window["n"]}
        if not main:
            return
        payload = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": adam.state_dict(),
            "precision": precision.state_dict(),  # {} but with a gradient scaler
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "vocab": vocab.to_dict(),
            "window": saved,
        }
        atomic_torch_save(payload, run.checkpoint_dir / "last.ckpt")

    # -- train
    model.train()
    order = None
    order_epoch = -1
    tokens_seen, t_train, t_window, tok_window = 0, time.perf_counter(), time.perf_counter(), 0
    val_loss = None
    last_train_loss = window["loss_sum"] / window["n"] if window["n"] else None
    start_step = step
    with Progress(total, "pretrain", "steps", enabled=None if main else False) as bar:
        while step < total:
            epoch, i = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = _epoch_order(cfg.seed, epoch, n_train, rank, world), epoch
                record_shard(epoch, order, rank)  # a test hook
            idx = order[i * cfg.optim.batch_size : (i + 1) * cfg.optim.batch_size]
            for group in adam.param_groups:
                group["lr"] = lrs[step]
            if world > 1:  # dropout masks of each process and step from (seed, step, rank)
                torch.manual_seed((cfg.seed * 1_000_003 + step) * world + rank)
            if groups == 1:
                tokens = batch_tokens(corpus.train, idx, device)  # (b, T)
                with fabric.autocast():
                    loss = fabric_model.loss(tokens)
                n_tok = int((tokens[:, 1:] != 0).sum())
            else:
                with fabric.autocast():
                    loss, n_tok = _grouped_loss(fabric_model, corpus.train, idx, groups, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {float(loss)} at step {step}; lower optim.lr or keep "
                    "optim.grad_clip at 1.0"
                )
            gradient_step(fabric_model, loss, optimizer, cfg.optim.grad_clip, fabric=fabric)
            step += 1
            tokens_seen += n_tok
            tok_window += n_tok
            window["loss_sum"] += float(loss.detach())
            window["n"] += 1

            if step % cfg.trainer.log_every_n_steps == 0 or step == total:
                # over all processes (rank 0's figures would be those of its shard only)
                loss_sum, tok_all = ranks_sum([window["loss_sum"], float(tok_window)])
                last_train_loss = loss_sum / world / window["n"]
                now = time.perf_counter()
                row = {"step": step, "epoch": epoch, "train_loss": last_train_loss,
                       "lr": lrs[step - 1], "tokens_per_s": tok_all / max(now - t_window, 1e-9)}
                if main:
                    run.log_metrics(row)
                say(f"step {step}/{total} loss {last_train_loss:.4f} "
                    f"{row['tokens_per_s']:.0f} tok/s")
                window = {"loss_sum": 0.0, "n": 0}
                t_window, tok_window = now, 0
            if main and (step % cfg.eval.val_every_n_steps == 0 or step == total):
                val_loss = _val_loss(model, corpus.val, cfg.eval.eval_batch_size, device,
                                     fabric.autocast)
                if val_loss is not None:
                    run.log_metrics({"step": step, "val_loss": val_loss})
                    say(f"step {step} val_loss {val_loss:.4f}")
            if step % cfg.trainer.checkpoint_every_n_steps == 0 or step == total:
                checkpoint()
            shown = window["loss_sum"] / window["n"] if window["n"] else last_train_loss
            bar.update(step, loss=shown, val_loss=val_loss)
            _fault_inject(step)
    train_seconds = time.perf_counter() - t_train
    if world > 1:
        tokens_seen = int(ranks_sum([float(tokens_seen)])[0])
        if not main:  # rank 0 evaluates, saves and reports
            return {}
    if val_loss is None:  # resumed after the last step's checkpoint: nothing left to train
        val_loss = _val_loss(model, corpus.val, cfg.eval.eval_batch_size, device,
                             fabric.autocast)

    # -- evaluate: sample, score, save the apprentice
    model.save(run.path / "model.pt", vocab, extra={"run": run.path.name, "step": step,
                                                   "dataset": cfg.data.dataset})
    # sampling draws on the model's device on CUDA (no host round trip per token), else on the CPU
    g = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(cfg.seed + 1)
    samples = model.sample(
        cfg.eval.n_samples, vocab, max_len=cfg.data.max_len, temperature=cfg.eval.temperature,
        generator=g, device=device, batch_size=cfg.eval.sample_batch_size,
    )
    metrics, rows = sample_metrics(
        samples, frozenset(corpus.train_smiles), keep_stereo=cfg.data.keep_stereo
    )
    _write_samples_csv(run.path / "samples.csv", rows)
    results: dict[str, Any] = {
        "steps": step,
        "epochs": step / steps_per_epoch,
        "final_train_loss": last_train_loss,
        "val_loss": val_loss,
        **metrics,
        **corpus.stats,
        "n_params": n_params,
        "device": device_name,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_s": tokens_seen / max(train_seconds, 1e-9) if step > start_step else None,
        "model": "model.pt",
        "samples": "samples.csv",
    }
    run.log_metrics({"step": step, **{k: metrics[k] for k in ("validity", "uniqueness",
                                                               "novelty")}})
    run.finish(results)
    say(f"finished: validity {metrics['validity']:.3f} uniqueness {metrics['uniqueness']:.3f} "
        f"novelty {metrics['novelty']:.3f}")
    return results


# ============================================================================ entry points


def pretrain(
    config_path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    console: Callable[[str], None] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Start a new pretraining run from a config file and ``key=value`` overrides.

    With ``trainer.devices`` > 1 this is also what the other processes of a data-parallel run
    call (the launcher re-runs the command line): they join the run rank 0 made."""
    child = ddp_child_run()
    if child is not None:
        return child, _run_fit(child, child.load_config(PretrainConfig), None, console)
    return start_run("chem.pretrain", PretrainConfig, config_path, overrides,
                     lambda run, cfg: _run_fit(run, cfg, None, console), check=_check)


def resume(
    run_path: str | os.PathLike,
    overrides: Sequence[str] = (),
    console: Callable[[str], None] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Continue a stopped run from ``checkpoints/last.ckpt``; metrics after it are dropped first.

    A finished run is returned as is, unless ``overrides`` change its config (e.g. a larger
    ``optim.max_steps`` trains on from the last checkpoint; with the constant schedule this equals
    one run of the larger number of steps). The updated config is written into the run.
    A data-parallel run resumes with its ``trainer.devices`` processes, exactly; another number
    (an override) goes on from the checkpoint, but with other shards and steps per epoch.
    """
    child = ddp_child_run()
    if child is not None:  # a process launched by rank 0: the run's config and checkpoint as is
        return child, _run_fit(child, child.load_config(PretrainConfig),
                               child.read_checkpoint("last.ckpt", "step"), console)

    def check(run: Run, cfg: PretrainConfig) -> dict[str, Any] | None:
        _check(cfg)
        return run.read_checkpoint("last.ckpt", "step")

    def go_on(run: Run, cfg: PretrainConfig, state: dict[str, Any] | None) -> dict[str, Any]:
        run.trim_metrics(int(state["step"]) if state is not None else -1)
        return _run_fit(run, cfg, state, console)

    return resume_run("chem.pretrain", PretrainConfig, run_path, go_on, check=check,
                      overrides=overrides)
