"""``selfsup vision train`` / ``eval``: SLA and its baselines with Lightning.

Reads top to bottom: config, Lightning module, callbacks (atomic checkpoints, metrics into the
run directory, best-on-validation), then ``train`` / ``resume`` / ``evaluate``.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import load_config, to_dict
from ..errors import ConfigError, InputError
from ..io import atomic_torch_save, atomic_write_json, safe_torch_load
from ..runs import Run

# ============================================================================ config


@dataclass
class DataConfig:
    # synthetic | mnist | fashion-mnist | cifar10 | cifar100 | stl10 | imagefolder
    name: str = "fashion-mnist"
    root: str | None = None  # data cache (default $SELFSUP_DATA or ~/.cache/selfsup/data)
    path: str | None = None  # imagefolder: a folder of class subfolders
    image_size: int | None = None  # imagefolder: resize to this square size
    val_size: int = 5000  # held-out training images for model selection
    per_class: int | None = None  # low-data setting: K training images per class
    imbalance_ratio: float = 1.0  # long-tailed setting: largest / smallest class size
    crop_padding: int = 2  # random crop after zero padding (0 = off)
    hflip: bool = True  # random horizontal flips
    synthetic_size: int = 2000  # number of training images of the synthetic set


@dataclass
class ModelConfig:
    backbone: str = "resnet32"  # resnet20/32/44/56/110 (CIFAR), resnet18/50 (torchvision)
    width: float = 1.0  # CIFAR ResNets: channel multiplier of 16/32/64
    small_image_stem: bool = True  # torchvision ResNets: 3x3 stride-1 stem, no max-pool


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    batch_size: int = 128
    epochs: int = 10
    max_steps: int | None = None  # overrides epochs when set (the paper: 80k iterations)
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of steps
    gamma: float = 0.1
    # linear warm-up over this fraction of the steps (0: none, the paper's recipe). Short CPU
    # recipes need it: at lr 0.1 a few hundred steps from scratch can stall near chance.
    warmup: float = 0.0


@dataclass
class SLAConfig:
    mode: str = "sla_sd"  # baseline | da | mt | sla | sla_sd
    transform: str = "rotation"  # rotation | rotation2 | color_perm | color_perm_cyclic | a+b
    tau: float = 1.0  # self-distillation temperature


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed
    eval_batch_size: int = 512
    log_every_n_steps: int = 20
    checkpoint_every_n_epochs: int = 1
    # also save last.ckpt in the middle of an epoch, after this many minutes since the last save
    # (0: off) or every N steps (0: off), so a killed long epoch loses at most that much work
    checkpoint_every_minutes: float = 10.0
    checkpoint_every_n_steps: int = 0
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    progress: bool = True


@dataclass
class VisionTrainConfig:
    name: str = "sla"
    seed: int = 0
    run_root: str | None = None  # default $SELFSUP_RUNS or ./runs
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sla: SLAConfig = field(default_factory=SLAConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ============================================================================ module


def _lightning():
    import logging
    import warnings

    import lightning as L

    # Lightning's banner, tips and advice go to the run's log, not the user's terminal
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (".*weights_only.*", ".*LeafSpec.*", ".*smaller than the logging interval.*",
                ".*does not have many workers.*", ".*num_workers.*"):
        warnings.filterwarnings("ignore", message=msg)
    return L


def build_model(cfg: VisionTrainConfig, n_classes: int, in_channels: int):
    from .backbones import build_backbone
    from .label_transforms import build_label_transform
    from .methods.sla import SLAModel

    kwargs: dict[str, Any] = {"in_channels": in_channels}
    if cfg.model.backbone in ("resnet18", "resnet50"):  # torchvision ResNets
        kwargs["small_image_stem"] = cfg.model.small_image_stem
    else:
        kwargs["width"] = cfg.model.width
    backbone = build_backbone(cfg.model.backbone, **kwargs)
    transform = build_label_transform(cfg.sla.transform)
    return SLAModel(backbone, n_classes, transform, cfg.sla.mode)


def make_lit_module(cfg: VisionTrainConfig, n_classes: int, in_channels: int,
                    mean: list[float], std: list[float], total_steps: int):
    L = _lightning()
    from .augment import random_crop, random_hflip, step_generator

    class SLALit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model(cfg, n_classes, in_channels)
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
            self._eval: dict[str, list] = {}

        def on_train_epoch_start(self) -> None:
            # the data order of epoch e is drawn from (seed, e), also right after a resume
            self.trainer.train_dataloader.sampler.set_epoch(self.current_epoch)

        def _normalise(self, x: torch.Tensor) -> torch.Tensor:
            return (x.float() / 255.0 - self.mean) / self.std

        def training_step(self, batch, batch_idx):
            x, y = batch
            g = step_generator(cfg.seed, self.global_step)
            x = self._normalise(x)
            x, _ = random_crop(x, cfg.data.crop_padding, generator=g)
            if cfg.data.hflip:
                x, _ = random_hflip(x, generator=g)
            loss, logs = self.model.loss(x, y, tau=cfg.sla.tau)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Non-finite training loss at step {self.global_step}; lower optim.lr."
                )
            self.log("train_loss", loss.detach(), prog_bar=True)
            for k, v in logs.items():
                self.log(k, v)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            return loss

        # evaluation: count correct predictions of every inference rule
        def _eval_step(self, batch, prefix: str):
            x, y = batch
            preds = self.model.predict(self._normalise(x))
            stats = self._eval.setdefault(prefix, [])
            row = {"n": y.numel()}
            for rule, logits in preds.items():
                if rule == "joint":
                    from .methods.sla import joint_labels

                    tgt = joint_labels(y, self.model.m)
                    row["joint"] = (logits.argmax(1) == tgt).float().sum().item() / self.model.m
                else:
                    row[rule] = (logits.argmax(1) == y).sum().item()
            if "single" in preds:
                row["loss"] = F.cross_entropy(preds["single"].float(), y, reduction="sum").item()
            stats.append(row)

        def _eval_end(self, prefix: str) -> dict[str, float]:
            rows = self._eval.pop(prefix, [])
            n = sum(r["n"] for r in rows)
            out = {}
            for key in rows[0] if rows else []:
                if key == "n":
                    continue
                total = sum(r[key] for r in rows)
                out[f"{prefix}_{'loss' if key == 'loss' else key + '_acc'}"] = total / max(n, 1)
            rule = self.model.primary_rule()
            if f"{prefix}_{rule}_acc" in out:
                out[f"{prefix}_acc"] = out[f"{prefix}_{rule}_acc"]
            return out

        def validation_step(self, batch, batch_idx):
            self._eval_step(batch, "val")

        def on_validation_epoch_end(self):
            for k, v in self._eval_end("val").items():
                self.log(k, v)

        def test_step(self, batch, batch_idx):
            self._eval_step(batch, "test")

        def on_test_epoch_end(self):
            self.test_results = self._eval_end("test")
            for k, v in self.test_results.items():
                self.log(k, v)

        def configure_optimizers(self):
            o = cfg.optim
            opt = torch.optim.SGD(
                self.parameters(), lr=o.lr, momentum=o.momentum,
                weight_decay=o.weight_decay, nesterov=o.nesterov,
            )
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: lr_factor(step, total_steps, o.milestones, o.gamma, o.warmup))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return SLALit()


# ============================================================================ callbacks


def _callbacks(run: Run, cfg: VisionTrainConfig):
    L = _lightning()

    class RunMetrics(L.Callback):
        """Writes logged values into the run's metrics.jsonl (train every N steps, val/epoch)."""

        def __init__(self) -> None:
            self.epoch_start: float | None = None
            self.epoch_seconds: list[float] = []
            self.partial: float | None = None  # seconds of the epoch in progress at a resume

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % cfg.trainer.log_every_n_steps == 0:
                row = {"step": step, "epoch": trainer.current_epoch}
                for k, v in trainer.callback_metrics.items():
                    if k.startswith(("train", "loss", "lr")):
                        row[k] = float(v)
                run.log_metrics(row)

        def on_train_epoch_start(self, trainer, pl_module):
            self.epoch_start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.epoch_start is None:  # resumed in the middle of an epoch: count what it had
                self.epoch_start = time.perf_counter() - (self.partial or 0.0)
                self.partial = None

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            row = {"step": trainer.global_step, "epoch": trainer.current_epoch}
            row.update({k: float(v) for k, v in trainer.callback_metrics.items()
                        if k.startswith("val")})
            run.log_metrics(row)

        def on_train_epoch_end(self, trainer, pl_module):
            # after a resume Lightning may close the restored epoch without starting it; its
            # time until the checkpoint is in the checkpoint
            if self.epoch_start is not None:
                self.epoch_seconds.append(time.perf_counter() - self.epoch_start)
            elif self.partial is not None:
                self.epoch_seconds.append(self.partial)
            self.epoch_start, self.partial = None, None

        def state_dict(self):
            running = (None if self.epoch_start is None
                       else time.perf_counter() - self.epoch_start)
            return {"epoch_seconds": list(self.epoch_seconds), "partial": running}

        def load_state_dict(self, state):
            self.epoch_seconds = list(state["epoch_seconds"])
            self.partial = state.get("partial")

    class BestOnValidation(L.Callback):
        """Keeps the weights with the best validation accuracy (model selection)."""

        def __init__(self) -> None:
            self.best = -math.inf
            self.best_epoch = -1

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            score = float(trainer.callback_metrics.get("val_acc", -math.inf))
            if score > self.best:
                self.best, self.best_epoch = score, trainer.current_epoch
                atomic_torch_save(pl_module.model.state_dict(), run.checkpoint_dir / "best.pt")

        def state_dict(self):
            return {"best": self.best, "best_epoch": self.best_epoch}

        def load_state_dict(self, state):
            self.best, self.best_epoch = state["best"], state["best_epoch"]

    class AtomicCheckpoint(L.Callback):
        """Saves last.ckpt (temporary file, then rename) after each N-th epoch's validation, and
        within an epoch every ``checkpoint_every_n_steps`` steps or ``checkpoint_every_minutes``
        minutes after the previous save (the data loader's position goes into the file, so a
        resume goes on with the next batch)."""

        def __init__(self) -> None:
            self.last_save = time.monotonic()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx + 1 >= trainer.num_training_batches:
                return  # the epoch's own checkpoint follows its validation
            t = cfg.trainer
            by_steps = t.checkpoint_every_n_steps > 0 and (
                trainer.global_step % t.checkpoint_every_n_steps == 0)
            by_time = t.checkpoint_every_minutes > 0 and (
                time.monotonic() - self.last_save >= 60.0 * t.checkpoint_every_minutes)
            if by_steps or by_time:
                self._save(trainer)

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            if (trainer.current_epoch + 1) % cfg.trainer.checkpoint_every_n_epochs:
                return
            self._save(trainer)

        def _save(self, trainer) -> None:
            self.last_save = time.monotonic()
            final = run.checkpoint_dir / "last.ckpt"
            tmp = final.with_suffix(".ckpt.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)  # full state: resumable
            os.replace(tmp, final)
            if os.environ.get("SELFSUP_FAULT_INJECT") == "kill_after_checkpoint":
                # Test hook: die like a killed job, right after the first checkpoint.
                os.kill(os.getpid(), signal.SIGKILL)

    return RunMetrics(), BestOnValidation(), AtomicCheckpoint()


# ============================================================================ entry points


def _loaders(data, cfg: VisionTrainConfig):
    from torch.utils.data import DataLoader, TensorDataset

    from .data import EpochSeededSampler, ResumableLoader

    bs = min(cfg.optim.batch_size, len(data.train_y))
    train = ResumableLoader(
        TensorDataset(data.train_x, data.train_y), batch_size=bs,
        sampler=EpochSeededSampler(len(data.train_y), cfg.seed), drop_last=True,
    )
    ebs = cfg.trainer.eval_batch_size
    val = DataLoader(TensorDataset(data.val_x, data.val_y), batch_size=ebs)
    test = DataLoader(TensorDataset(data.test_x, data.test_y), batch_size=ebs)
    return train, val, test


def _prepare(cfg: VisionTrainConfig):
    from .data import load_vision_data

    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    d = cfg.data
    data = load_vision_data(
        d.name, root=d.root, path=d.path, image_size=d.image_size, val_size=d.val_size,
        per_class=d.per_class, imbalance_ratio=d.imbalance_ratio, seed=cfg.seed,
        synthetic_size=d.synthetic_size,
    )
    if cfg.sla.mode != "baseline":
        from .label_transforms import build_label_transform

        t = build_label_transform(cfg.sla.transform)
        t.expand(data.train_x[:1].float())  # fail early: e.g. colour permutations on grey images
    return data


def _run_fit(run: Run, cfg: VisionTrainConfig, ckpt_path: Path | None, console=None) -> dict:
    L = _lightning()
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..device import choose_device

    t = cfg.trainer
    if t.checkpoint_every_minutes < 0 or t.checkpoint_every_n_steps < 0:
        raise ConfigError(
            f"trainer.checkpoint_every_minutes={t.checkpoint_every_minutes}, "
            f"trainer.checkpoint_every_n_steps={t.checkpoint_every_n_steps}: use 0 (off) or a "
            "positive number.")
    data = _prepare(cfg)
    train_dl, val_dl, test_dl = _loaders(data, cfg)
    steps_per_epoch = len(train_dl)
    total_steps = cfg.optim.max_steps or steps_per_epoch * cfg.optim.epochs
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = make_lit_module(cfg, data.n_classes, data.in_channels, data.mean, data.std,
                             total_steps)
    dev = choose_device(cfg.trainer.accelerator, cfg.trainer.precision)
    metrics_cb, best_cb, ckpt_cb = _callbacks(run, cfg)
    callbacks = [metrics_cb, best_cb, ckpt_cb]
    if cfg.trainer.progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    trainer = L.Trainer(
        accelerator=dev.accelerator,
        devices=1,
        precision=dev.precision,
        max_epochs=-1 if cfg.optim.max_steps else cfg.optim.epochs,
        max_steps=total_steps,
        logger=TensorBoardLogger(run.path, name="tensorboard", version=""),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=cfg.trainer.progress,
        enable_model_summary=False,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        num_sanity_val_steps=0,
        deterministic=True,
        default_root_dir=str(run.path),
    )
    log = run.logger()
    log.info("device %s precision %s; data %s", dev.description, dev.precision, data.summary())
    atomic_write_json(run.path / "data.json", data.summary())
    trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path, weights_only=True)
    # model selection: test the weights with the best validation accuracy
    if (run.checkpoint_dir / "best.pt").is_file():
        module.model.load_state_dict(safe_torch_load(run.checkpoint_dir / "best.pt"))
    trainer.test(module, test_dl, verbose=False)
    results = {k: round(float(v), 6) for k, v in module.test_results.items()}
    results.update(
        best_val_acc=round(best_cb.best, 6),
        best_epoch=best_cb.best_epoch,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        epoch_seconds=round(sum(metrics_cb.epoch_seconds) / max(len(metrics_cb.epoch_seconds), 1),
                            4),
        mode=cfg.sla.mode,
        transform=cfg.sla.transform,
        dataset=cfg.data.name,
        device=dev.description,
        data=data.summary(),
    )
    run.finish(results)
    log.info("finished: %s", results)
    return results


def lr_factor(step: int, total_steps: int, milestones: list[float], gamma: float,
              warmup: float = 0.0) -> float:
    """Learning-rate multiplier at ``step``: step decay by ``gamma`` at each milestone (fractions
    of ``total_steps``), times a linear warm-up from 1/w to 1 over the first w = warmup x
    total_steps steps."""
    if not 0.0 <= warmup < 1.0:
        raise ConfigError(f"optim.warmup={warmup}: use a fraction of the steps in [0, 1).")
    bounds = [int(f * total_steps) for f in milestones]
    decay = gamma ** sum(step >= b for b in bounds)
    w = int(warmup * total_steps)
    return decay * min(1.0, (step + 1) / w) if w > 0 else decay


def train(config_path: str | None, overrides: list[str], console=None) -> tuple[Run, dict]:
    """Start a new run from a config file and overrides."""
    cfg = load_config(VisionTrainConfig, config_path, overrides)
    from ..device import check_precision

    check_precision(cfg.trainer.precision)  # before a run folder is made
    run = Run.create(cfg.name, to_dict(cfg), seed=cfg.seed, root=cfg.run_root,
                     kind="vision.train")
    with run.marks_failure():
        return run, _run_fit(run, cfg, None, console)


def resume(run_path: str | os.PathLike, console=None) -> tuple[Run, dict]:
    """Continue a killed run from its last checkpoint; metrics after it are dropped first.

    A finished run, a run of another command, a damaged config or checkpoint: nothing in the run
    changes (all is checked before the run is marked as running again)."""
    run = Run.reopen(run_path, "vision.train")
    if run.finished:
        return run, run.unchanged()
    cfg = run.load_config(VisionTrainConfig)
    ckpt = run.path / "checkpoints" / "last.ckpt"
    state = None
    if ckpt.is_file():
        state = safe_torch_load(ckpt, fix=f"Delete '{ckpt}' to train this run again from its "
                                "first step, or start a new run.")
        if not isinstance(state, dict) or "global_step" not in state:
            raise InputError(f"'{ckpt}' is not a Lightning training checkpoint (no "
                             "global_step); delete it to train this run again from its first "
                             "step.")
    run.mark_resumed()
    if state is not None:
        run.trim_metrics(int(state["global_step"]))
        ckpt_path: Path | None = ckpt
    else:
        run.trim_metrics(-1)
        ckpt_path = None
    with run.marks_failure():
        return run, _run_fit(run, cfg, ckpt_path, console)


def load_selected(run_path: str | os.PathLike):
    """``(run, cfg, model, data)``: a run's selected (best-on-validation) weights in eval mode,
    with its config and data."""
    run = Run.open(run_path)
    cfg = load_config(VisionTrainConfig, base=run.config)
    weights = run.path / "checkpoints" / "best.pt"
    if not weights.is_file():
        raise InputError(f"Run '{run.path}' has no checkpoints/best.pt; train or resume it first.")
    state = safe_torch_load(weights, fix="Train the run again (a new run) to get its weights.")
    data = _prepare(cfg)
    model = build_model(cfg, data.n_classes, data.in_channels)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"'{weights}' does not hold weights of this run's model "
                         f"({str(exc).splitlines()[0]}); it was replaced or damaged. Train the "
                         "run again (a new run).") from None
    model.eval()
    return run, cfg, model, data


def eval_batches(data, split: str, batch_size: int):
    """``(normalised images, labels)`` of the test or val split, batch by batch."""
    x_all, y_all = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    for i in range(0, len(y_all), batch_size):
        yield (x_all[i : i + batch_size].float() / 255.0 - mean) / std, y_all[i : i + batch_size]


def evaluate(run_path: str | os.PathLike, split: str = "test") -> dict:
    """Evaluate a run's selected (best-on-validation) weights; writes eval.json into the run."""
    if split not in ("test", "val"):
        raise ConfigError(f"Unknown split '{split}'; use test or val.")
    run, cfg, model, data = load_selected(run_path)
    correct: dict[str, float] = {}
    n = 0
    for x, y in eval_batches(data, split, cfg.trainer.eval_batch_size):
        n += len(y)
        with torch.no_grad():
            preds = model.predict(x)
        for rule, logits in preds.items():
            if rule == "joint":
                from .methods.sla import joint_labels

                c = (logits.argmax(1) == joint_labels(y, model.m)).float().sum().item() / model.m
            else:
                c = (logits.argmax(1) == y).sum().item()
            correct[rule] = correct.get(rule, 0.0) + c
    out = {f"{split}_{rule}_acc": round(c / n, 6) for rule, c in correct.items()}
    out[f"{split}_acc"] = out[f"{split}_{model.primary_rule()}_acc"]
    atomic_write_json(run.path / "eval.json", out)
    return out
