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


def setup_fabric(accelerator: str = "auto", precision: str = "auto",
                 device_index: int | None = None):
    """A Lightning Fabric (``lightning.fabric.Fabric``) on one device of ``accelerator`` with
    ``precision``, both resolved by :func:`choose_device`; returns ``(fabric, the DeviceChoice)``.

    ``device_index`` picks the GPU (``cuda:1``: 1; default the first). Lightning's notes (the
    precision in use, tips) stay off the user's terminal, as in vision's Trainer runs.
    """
    import logging

    from lightning.fabric import Fabric

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    dev = choose_device(accelerator, precision)
    devices: int | list[int] = 1
    if device_index is not None and dev.accelerator != "cpu":
        devices = [int(device_index)]
    return Fabric(accelerator=dev.accelerator, devices=devices, precision=dev.precision), dev


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
