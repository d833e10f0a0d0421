"""SMILES-LSTM hill climbing (Segler et al., ACS Cent. Sci. 2018; GuacaMol baseline), budgeted.

Each round: sample ``n_samples`` SMILES from the current model, score the valid ones, keep the
``keep_top`` best molecules of everything seen, and fine-tune the model on them by maximum
likelihood for ``epochs_per_round`` passes (batches of ``batch_size``, Adam ``lr`` kept across
rounds). It is GEGL without the expert and with one queue (the top-k), so it runs on GEGL's loop
(:func:`.gegl.run_gegl`) with the settings mapped below; the same pretrained ``prior`` starts it.

Defaults are sized for a 1k-10k call budget: 256 samples and the top 128 per round (4-40
rounds), 2 epochs x batch 64 (4 Adam steps per round). GuacaMol's baseline, with no budget,
samples 1024 and keeps 512 per round with batch 256.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from .base import GEGLConfig, LSTMHCConfig, OptimizationContext, OptimizeConfig, register
from .gegl import run_gegl

__all__ = ["LSTMHCConfig", "run_lstm_hc"]


@register("lstm_hc")
def run_lstm_hc(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator) -> None:
    h = cfg.lstm_hc
    if h.epochs_per_round <= 0 or h.batch_size < 1 or h.keep_top < 1:
        raise ConfigError("lstm_hc.epochs_per_round, lstm_hc.batch_size and lstm_hc.keep_top "
                          "must be positive")
    if h.precision not in ("32", "bf16") or h.length_groups < 1:
        raise ConfigError(f"lstm_hc.precision={h.precision!r} must be '32' or 'bf16' and "
                          f"lstm_hc.length_groups={h.length_groups} >= 1")
    steps = max(1, math.ceil(h.epochs_per_round * h.keep_top / h.batch_size))
    g = GEGLConfig(
        n_apprentice=h.n_samples, n_expert=0, queue_size=h.keep_top, imitation_steps=steps,
        imitation_batch=h.batch_size, lr=h.lr, sample_max_len=h.sample_max_len,
        temperature=h.temperature, use_expert=False, learn=True, patience=h.patience,
        stale_rounds=h.stale_rounds, imitation_precision=h.precision,
        imitation_length_groups=h.length_groups, device=h.device,
    )
    run_gegl(ctx, cfg, rng, g, name="lstm_hc")
