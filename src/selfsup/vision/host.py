"""The training host: a LightningModule and callbacks that know no method.

:class:`VisionModule` wraps any :class:`~selfsup.vision.methods.base.Method`: each training step
hands the method the raw batch and a generator seeded by (seed, step) and optimises the loss it
returns; evaluation sums the method's ``eval_counts``. The callbacks write the run's metrics,
keep the best weights by a validation score, and save resumable checkpoints atomically.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import warnings
from typing import Any

import lightning as L
import torch

from ..io import atomic_torch_save
from ..runs import Run
from .augment import step_generator
from .methods.base import Method
from .schedules import cosine_factor, lr_factor

# Lightning's banner, tips and advice go to the run's log, not the user's terminal
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
for _msg in (".*weights_only.*", ".*LeafSpec.*", ".*smaller than the logging interval.*",
             ".*does not have many workers.*", ".*num_workers.*"):
    warnings.filterwarnings("ignore", message=_msg)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")


class VisionModule(L.LightningModule):
    """Trains ``method`` (kept as ``self.model``) with the optimiser and schedule of ``optim``.

    ``optim`` needs: optimizer (sgd | adamw), lr, momentum, weight_decay, nesterov, schedule
    (step | cosine), milestones, gamma, warmup. ``seed`` seeds each step's generator."""

    def __init__(self, method: Method, optim: Any, seed: int, total_steps: int) -> None:
        super().__init__()
        self.model = method
        self.optim_cfg = optim
        self.seed = int(seed)
        self.total_steps = int(total_steps)
        self._eval: dict[str, list[dict[str, float]]] = {}
        self.test_results: dict[str, float] = {}

    def on_train_epoch_start(self) -> None:
        # the data order of epoch e is drawn from (seed, e), also right after a resume
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if y is not None and y.numel() and bool((y < 0).all()):
            y = None  # an unlabelled split
        g = step_generator(self.seed, self.global_step)
        loss, logs = self.model.training_step(x, y, g)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite training loss at step {self.global_step}; lower optim.lr.")
        self.log("train_loss", loss.detach(), prog_bar=True)
        for k, v in logs.items():
            self.log(k, v)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        # the method's hook (gradient clipping, frozen layers, weight-decay schedules)
        self.model.before_optimizer_step(self.global_step, self.total_steps, optimizer)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.model.after_step(self.global_step, self.total_steps)

    # evaluation: sums of the method's counts, divided by the images at the end
    def _eval_step(self, batch, prefix: str) -> None:
        x, y = batch
        row = {"n": float(y.numel())}
        row.update(self.model.eval_counts(self.model.normalise(x), y))
        self._eval.setdefault(prefix, []).append(row)

    def _eval_end(self, prefix: str) -> dict[str, float]:
        rows = self._eval.pop(prefix, [])
        n = sum(r["n"] for r in rows)
        out: dict[str, float] = {}
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
        from ..errors import ConfigError

        o = self.optim_cfg
        groups = self.model.param_groups(o.weight_decay)
        if o.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                                  weight_decay=o.weight_decay, nesterov=o.nesterov)
        elif o.optimizer == "adamw":
            betas = tuple(getattr(o, "betas", (0.9, 0.999)))  # (beta1, beta2) of Adam
            opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay, betas=betas)
        else:
            raise ConfigError(f"optim.optimizer={o.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        total = self.total_steps
        if o.schedule == "step":
            def factor(step: int) -> float:
                return lr_factor(step, total, o.milestones, o.gamma, o.warmup)
        elif o.schedule == "cosine":
            def factor(step: int) -> float:
                return cosine_factor(step, total, o.warmup)
        else:
            raise ConfigError(f"optim.schedule={o.schedule!r}; valid: {', '.join(SCHEDULES)}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ================================================================================ callbacks


class RunMetrics(L.Callback):
    """Writes logged values into the run's metrics.jsonl (train every N steps, val per epoch)
    and times the epochs."""

    def __init__(self, run: Run, log_every_n_steps: int) -> None:
        self.run = run
        self.log_every = max(int(log_every_n_steps), 1)
        self.epoch_start: float | None = None
        self.epoch_seconds: list[float] = []
        self.partial: float | None = None  # seconds of the epoch in progress at a resume

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.log_every == 0 and trainer.is_global_zero:
            row: dict[str, Any] = {"step": step, "epoch": trainer.current_epoch}
            for k, v in trainer.callback_metrics.items():
                if k.startswith(("train", "loss", "lr")):
                    row[k] = float(v)
            self.run.log_metrics(row)

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.epoch_start is None:  # resumed in the middle of an epoch: count what it had
            self.epoch_start = time.perf_counter() - (self.partial or 0.0)
            self.partial = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()
                    if k.startswith("val")})
        self.run.log_metrics(row)

    def on_train_epoch_end(self, trainer, pl_module):
        # after a resume Lightning may close the restored epoch without starting it; its time
        # until the checkpoint is in the checkpoint
        if self.epoch_start is not None:
            self.epoch_seconds.append(time.perf_counter() - self.epoch_start)
        elif self.partial is not None:
            self.epoch_seconds.append(self.partial)
        self.epoch_start, self.partial = None, None

    def state_dict(self):
        running = None if self.epoch_start is None else time.perf_counter() - self.epoch_start
        return {"epoch_seconds": list(self.epoch_seconds), "partial": running}

    def load_state_dict(self, state):
        self.epoch_seconds = list(state["epoch_seconds"])
        self.partial = state.get("partial")


class BestOnValidation(L.Callback):
    """Keeps the weights with the best validation score ``monitor`` (model selection) in
    ``checkpoints/best.pt``."""

    def __init__(self, run: Run, monitor: str = "val_acc") -> None:
        self.run = run
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = -1

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        score = float(trainer.callback_metrics.get(self.monitor, -math.inf))
        if score > self.best:
            self.best, self.best_epoch = score, trainer.current_epoch
            if trainer.is_global_zero:
                atomic_torch_save(pl_module.model.state_dict(),
                                  self.run.checkpoint_dir / "best.pt")

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class AtomicCheckpoint(L.Callback):
    """Saves last.ckpt (temporary file, then rename) after each N-th epoch's validation, and
    within an epoch every ``every_n_steps`` steps or ``every_minutes`` minutes after the previous
    save (the data loader's position goes into the file, so a resume goes on with the next
    batch)."""

    def __init__(self, run: Run, every_n_epochs: int = 1, every_n_steps: int = 0,
                 every_minutes: float = 10.0) -> None:
        self.run = run
        self.every_n_epochs = max(int(every_n_epochs), 1)
        self.every_n_steps = int(every_n_steps)
        self.every_minutes = float(every_minutes)
        self.last_save = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch's own checkpoint follows its validation
        by_steps = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        by_time = self.every_minutes > 0 and (
            time.monotonic() - self.last_save >= 60.0 * self.every_minutes)
        if by_steps or by_time:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._save(trainer)

    def _save(self, trainer) -> None:
        self.last_save = time.monotonic()
        final = self.run.checkpoint_dir / "last.ckpt"
        tmp = final.with_suffix(".ckpt.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: resumable
        if trainer.is_global_zero:
            os.replace(tmp, final)
        trainer.strategy.barrier()
        if os.environ.get("SELFSUP_FAULT_INJECT") == "kill_after_checkpoint":
            # Test hook: die like a killed job, right after the first checkpoint.
            os.kill(os.getpid(), signal.SIGKILL)


class KNNMonitor(L.Callback):
    """After each validation, the kNN accuracy of the backbone's features: the validation images
    classified by their ``k`` nearest labelled training images (cosine similarity, votes
    weighted exp(sim / 0.07)); logged as ``val_knn_acc``. Model selection for methods without a
    classifier."""

    def __init__(self, bank_x: torch.Tensor, bank_y: torch.Tensor, val_x: torch.Tensor,
                 val_y: torch.Tensor, k: int = 20, batch_size: int = 512) -> None:
        self.bank_x, self.bank_y = bank_x, bank_y
        self.val_x, self.val_y = val_x, val_y
        self.k = int(k)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def _features(self, module: VisionModule, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i : i + self.batch_size].to(module.device)
            out.append(module.model.features(module.model.normalise(xb)).float().cpu())
        return torch.cat(out)

    def accuracy(self, module: VisionModule, x: torch.Tensor, y: torch.Tensor) -> float:
        """kNN top-1 accuracy of images ``x`` with labels ``y`` against the bank."""
        from .evaluate import knn_evaluate

        was_training = module.training
        module.eval()
        bank = self._features(module, self.bank_x)
        query = self._features(module, x)
        module.train(was_training)
        res = knn_evaluate(bank, self.bank_y, query, y, k=self.k, per_class=False)
        return float(res["top1"])

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or len(self.bank_y) == 0:
            return
        pl_module.log("val_knn_acc", self.accuracy(pl_module, self.val_x, self.val_y))
