"""Pretraining of the SMILES LSTM by maximum likelihood: GEGL's apprentice before its rounds.

Reads top to bottom: the config (its ``data`` section is :class:`~.corpus.DataConfig`), the
pretraining loop with atomic checkpoints, then :func:`pretrain` / :func:`resume`. The corpus is
prepared by :mod:`.corpus`, each step is :func:`~.likelihood.gradient_step` on
:meth:`SmilesLSTM.loss` (mean negative log-probability per target token, gradients clipped to
norm 1.0 by default), and the samples drawn at the end are scored by :mod:`.metrics`.

The loop runs on Lightning Fabric (``lightning.fabric.Fabric``: Lightning's accelerators and
precision plugins, which vision's Lightning Trainer uses too, under a loop of one's own): it
places the model and batches on the device of ``trainer.accelerator`` (one device: the CPU, one
CUDA GPU or Apple MPS) and applies ``trainer.precision`` (``auto``: bf16 mixed precision on a
CUDA GPU that has it, else fp16 mixed with a gradient scaler, 32-bit on CPU and MPS; see
:func:`selfsup.device.choose_device`) to the forward passes, backpropagation and gradient
clipping. In 32-bit precision a step is the same arithmetic as a plain PyTorch loop. The loop
itself (data order, schedule, logging, validation, checkpoints) stays here, so that resume is
exact.

Determinism: the model is initialised from ``seed``; the data order of epoch ``e`` is a
permutation drawn from ``(seed, e)``; dropout draws from torch's global generator, whose state is
saved in every checkpoint (with the gradient scaler's, under 16-bit mixed precision), so a
resumed run continues exactly as the uninterrupted one.
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
from selfsup.device import check_precision, gradient_step
from selfsup.errors import ConfigError, InputError
from selfsup.io import atomic_torch_save, atomic_write_json, atomic_write_text
from selfsup.progress import Progress
from selfsup.runs import Run, resume_run, start_run

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


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _fault_inject(step: int) -> None:
    """Test hook: ``SELFSUP_FAULT_INJECT=stop_at_step:K`` raises RuntimeError after step K."""
    flag = os.environ.get("SELFSUP_FAULT_INJECT", "")
    if flag.startswith("stop_at_step:") and step == int(flag.split(":", 1)[1]):
        raise RuntimeError(f"SELFSUP_FAULT_INJECT stopped the run after step {step}")


def _fabric(cfg: PretrainConfig):
    """The Lightning Fabric of a run (:func:`selfsup.device.setup_fabric`): one device of
    ``trainer.accelerator`` with ``trainer.precision``; returns ``(fabric, the DeviceChoice)``."""
    from selfsup.device import setup_fabric

    return setup_fabric(cfg.trainer.accelerator, cfg.trainer.precision)


def _run_fit(
    run: Run, cfg: PretrainConfig, state: dict | None, console: Callable[[str], None] | None
) -> dict[str, Any]:
    log = run.logger()

    def say(msg: str) -> None:
        log.info(msg)
        if console is not None:
            console(msg)

    _check(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    fabric, dev = _fabric(cfg)
    device = fabric.device
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
    atomic_write_json(run.path / "vocab.json", vocab.to_dict())

    # -- model and optimiser, set up by Fabric (device, precision); ``model`` and ``adam`` stay
    # the plain objects, for their state dicts, the validation loss, sampling and model.pt
    torch.manual_seed(cfg.seed)
    mcfg = SmilesLSTMConfig(vocab_size=len(vocab), **asdict(cfg.model))
    model = SmilesLSTM(mcfg)
    fabric_model = fabric.setup_module(model)
    adam = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    optimizer = fabric.setup_optimizers(adam)
    precision = fabric.strategy.precision  # holds the gradient scaler of 16-bit mixed precision
    n_train = len(corpus.train)
    steps_per_epoch = math.ceil(n_train / cfg.optim.batch_size)
    total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    lrs = _lr_schedule(cfg.optim, total)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"device {device_name}; {n_params:,} parameters; {n_train} train molecules; "
        f"{total} steps ({steps_per_epoch} per epoch)")

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
        payload = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": adam.state_dict(),
            "precision": precision.state_dict(),  # {} but with a gradient scaler
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "vocab": vocab.to_dict(),
            "window": window,
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
    with Progress(total, "pretrain", "steps") as bar:
        while step < total:
            epoch, i = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = _epoch_order(cfg.seed, epoch, n_train), epoch
            idx = order[i * cfg.optim.batch_size : (i + 1) * cfg.optim.batch_size]
            tokens = batch_tokens(corpus.train, idx, device)  # (b, T)
            for group in adam.param_groups:
                group["lr"] = lrs[step]
            with fabric.autocast():
                loss = fabric_model.loss(tokens)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {float(loss)} at step {step}; lower optim.lr or keep "
                    "optim.grad_clip at 1.0"
                )
            gradient_step(fabric_model, loss, optimizer, cfg.optim.grad_clip, fabric=fabric)
            step += 1
            n_tok = int((tokens[:, 1:] != 0).sum())
            tokens_seen += n_tok
            tok_window += n_tok
            window["loss_sum"] += float(loss.detach())
            window["n"] += 1

            if step % cfg.trainer.log_every_n_steps == 0 or step == total:
                last_train_loss = window["loss_sum"] / window["n"]
                now = time.perf_counter()
                row = {"step": step, "epoch": epoch, "train_loss": last_train_loss,
                       "lr": lrs[step - 1], "tokens_per_s": tok_window / max(now - t_window, 1e-9)}
                run.log_metrics(row)
                say(f"step {step}/{total} loss {last_train_loss:.4f} "
                    f"{row['tokens_per_s']:.0f} tok/s")
                window = {"loss_sum": 0.0, "n": 0}
                t_window, tok_window = now, 0
            if step % cfg.eval.val_every_n_steps == 0 or step == total:
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
    """Start a new pretraining run from a config file and ``key=value`` overrides."""
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
    """

    def check(run: Run, cfg: PretrainConfig) -> dict[str, Any] | None:
        _check(cfg)
        return run.read_checkpoint("last.ckpt", "step")

    def go_on(run: Run, cfg: PretrainConfig, state: dict[str, Any] | None) -> dict[str, Any]:
        run.trim_metrics(int(state["step"]) if state is not None else -1)
        return _run_fit(run, cfg, state, console)

    return resume_run("chem.pretrain", PretrainConfig, run_path, go_on, check=check,
                      overrides=overrides)
