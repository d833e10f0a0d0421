"""Device and precision choice: CPU by default, CUDA or Apple MPS when present.

Nothing in selfsup assumes CUDA; training code asks this module what to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from lightning.fabric import Fabric

# Lightning's precision strings (lightning 2.x), plus auto; fp8 (transformer-engine) is left out:
# it needs NVIDIA's transformer-engine package and Hopper GPUs, and selfsup does not support it.
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


@dataclass(frozen=True)
class DeviceChoice:
    accelerator: str  # "cpu" | "cuda" | "mps"
    precision: str  # a Lightning precision string
    description: str


def check_precision(precision: str) -> None:
    """Raise ConfigError, listing the valid values, for a precision selfsup cannot train with."""
    if precision not in PRECISIONS:
        from .errors import ConfigError

        raise ConfigError(
            f"trainer.precision={precision!r} is not a precision selfsup can train with; "
            f"valid: {', '.join(PRECISIONS)} (auto: bf16/16 mixed on CUDA, 32-true elsewhere)"
        )


def choose_device(accelerator: str = "auto", precision: str = "auto") -> DeviceChoice:
    """Pick the accelerator and a precision that helps on it.

    ``auto`` precision: bf16 mixed precision on CUDA devices that support it, fp16 mixed on
    older CUDA devices, 32-bit on CPU and MPS (mixed precision does not pay off there).
    """
    check_precision(precision)
    import torch

    acc = accelerator
    if acc == "auto":
        if torch.cuda.is_available():
            acc = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            acc = "mps"
        else:
            acc = "cpu"
    if acc == "gpu":
        acc = "cuda"
    if acc == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError(
            "trainer.accelerator=cuda was asked for but no CUDA device is visible; "
            "use trainer.accelerator=auto (or cpu)."
        )
    prec = precision
    if prec == "auto":
        if acc == "cuda":
            prec = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            prec = "32-true"
    if acc == "cuda":
        desc = f"cuda:{torch.cuda.get_device_name(0)}"
    elif acc == "mps":
        desc = "Apple MPS"
    else:
        desc = f"cpu ({torch.get_num_threads()} threads)"
    return DeviceChoice(accelerator=acc, precision=prec, description=desc)


STRATEGIES = ("auto", "ddp")


def check_parallel(devices: int, strategy: str) -> None:
    """Raise ConfigError for a ``trainer.devices`` / ``trainer.strategy`` pair selfsup cannot
    train with (devices < 1, a strategy other than auto or ddp)."""
    from .errors import ConfigError

    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"trainer.devices={devices!r}: use 1 or more.")
    if strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={strategy!r}: use {' or '.join(STRATEGIES)}.")


def setup_fabric(accelerator: str = "auto", precision: str = "auto",
                 device_index: int | None = None, devices: int = 1, strategy: str = "auto"):
    """A Lightning Fabric (``lightning.fabric.Fabric``) on ``accelerator`` with ``precision``,
    both resolved by :func:`choose_device`; returns ``(fabric, the DeviceChoice)``.

    ``devices=1`` with ``strategy="auto"`` (the default): one device; ``device_index`` picks the
    GPU (``cuda:1``: 1; default the first). Lightning's notes (the precision in use, tips) stay
    off the user's terminal, as in vision's Trainer runs.

    ``devices > 1`` (``strategy`` auto or ddp), or ``strategy="ddp"``: data-parallel training
    over ``devices`` processes of this machine (PyTorch DDP through Fabric: gradients averaged
    over the processes at every backward pass; the process group on gloo on CPUs, nccl on CUDA
    GPUs). The fabric is launched here (``fabric.launch()``): in the first process that starts
    the other ``devices - 1`` processes, each re-running this command line (``python -m
    selfsup.cli ...``, the script launcher vision's Trainer uses too) with ``LOCAL_RANK`` set,
    and every process then joins the process group; so the caller sets up, before this call,
    whatever the other processes need to find (see :func:`selfsup.runs.ddp_child_run`).
    ``fabric.global_rank`` and ``fabric.world_size`` tell each process its shard
    (:func:`shard_order`); only ``fabric.is_global_zero`` writes files. Because the launcher
    re-runs ``sys.argv``, start such runs from the command line (or a script that, re-run, calls
    the same training), not from a notebook or a test process; GPUs are ``cuda:0..devices-1``
    (``device_index`` is for one device).
    """
    import logging

    from lightning.fabric import Fabric

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    check_parallel(devices, strategy)
    dev = choose_device(accelerator, precision)
    if devices == 1 and strategy == "auto":
        one: int | list[int] = 1
        if device_index is not None and dev.accelerator != "cpu":
            one = [int(device_index)]
        return Fabric(accelerator=dev.accelerator, devices=one, precision=dev.precision), dev
    if dev.accelerator == "mps":
        from .errors import ConfigError

        raise ConfigError("trainer.strategy=ddp / trainer.devices>1 needs CPU processes or CUDA "
                          "GPUs; Apple MPS is one device: use trainer.devices=1 (or "
                          "trainer.accelerator=cpu).")
    from lightning.fabric.strategies import DDPStrategy

    backend = "nccl" if dev.accelerator == "cuda" else "gloo"
    fabric = Fabric(accelerator=dev.accelerator, devices=devices, precision=dev.precision,
                    strategy=DDPStrategy(process_group_backend=backend))
    fabric.launch()
    return fabric, dev


def shard_order(order, rank: int, world_size: int):
    """The part of an epoch's ``order`` (a 1-d torch tensor or numpy array of row indices) that
    process ``rank`` of ``world_size`` trains on, as ``torch.utils.data.DistributedSampler``
    splits a permutation: padded to a multiple of ``world_size`` by repeating its first rows,
    then every ``world_size``-th row from position ``rank``. So the shards have the same length
    (``ceil(n / world_size)``: the processes take the same number of steps, as DDP needs), are
    disjoint when ``world_size`` divides ``n``, and together hold every row. ``world_size=1``
    returns ``order`` itself."""
    import numpy as np

    if world_size == 1:
        return order
    n = len(order)
    per = -(-n // world_size)
    return order[np.arange(rank, per * world_size, world_size) % n]


def gradient_step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                  grad_clip: float = 0.0, fabric: Fabric | None = None) -> None:
    """One optimiser step on ``loss``: clear the gradients, backpropagate, clip the gradient norm
    of ``model``'s parameters to ``grad_clip`` (0: no clipping), step.

    With ``fabric`` (a Lightning Fabric that set up ``model`` and ``optimizer``), backpropagation
    and clipping go through it, so its precision plugin scales and unscales the gradients (16-bit
    mixed precision); in 32-bit precision the step is the same arithmetic as without it."""
    import torch

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


def record_shard(epoch: int, rows, rank: int) -> None:
    """Test hook: with ``$SELFSUP_RECORD_ROWS`` naming a folder, append the training rows
    (``rows``, a 1-d tensor or array) that process ``rank`` takes in ``epoch`` to
    ``<folder>/rows-<rank>.jsonl`` as ``{"epoch", "rank", "rows"}``; else nothing. (The template
    MLP's :func:`train_epoch` passes its epoch's seed as ``epoch``: the epoch itself at seed 0.)"""
    import os

    folder = os.environ.get("SELFSUP_RECORD_ROWS")
    if folder:
        import json

        with open(os.path.join(folder, f"rows-{rank}.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"epoch": int(epoch), "rank": int(rank),
                                 "rows": [int(r) for r in rows]}) + "\n")
