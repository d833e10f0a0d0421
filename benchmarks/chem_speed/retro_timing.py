"""Where a planning run's time goes, measured the same way in both arms of `chem_speed`'s Retro*
part: wraps one loaded template MLP (``MLPSingleStepModel``) so that every call of its
``propose`` (the whole proposal function), of its ``_template_scores`` (fingerprints and the
forward pass) and of rdchiral's template application (``apply_retro_template`` as the template
model calls it) adds its wall time to a counter. Imports only the standard library and, when
wrapping, ``selfsup``."""

from __future__ import annotations

import time


class Timer:
    """Counts seconds spent in ``model.propose``, ``model._template_scores`` and rdchiral."""

    def __init__(self, model) -> None:
        from selfsup.chem.retro.core import single_step

        self.propose_s = self.model_s = self.rdchiral_s = 0.0
        self.n_propose = 0
        propose, scores = model.propose, model._template_scores
        apply = single_step.apply_retro_template

        def timed_propose(*a, **k):
            t = time.perf_counter()
            try:
                return propose(*a, **k)
            finally:
                self.propose_s += time.perf_counter() - t
                self.n_propose += 1

        def timed_scores(*a, **k):
            t = time.perf_counter()
            try:
                return scores(*a, **k)
            finally:
                self.model_s += time.perf_counter() - t

        def timed_apply(*a, **k):
            t = time.perf_counter()
            try:
                return apply(*a, **k)
            finally:
                self.rdchiral_s += time.perf_counter() - t

        model.propose = timed_propose
        model._template_scores = timed_scores
        single_step.apply_retro_template = timed_apply

    def take(self) -> dict:
        """The counters since the last ``take`` (then zeroed)."""
        out = {"propose_s": self.propose_s, "model_s": self.model_s,
               "rdchiral_s": self.rdchiral_s, "n_propose": self.n_propose}
        self.propose_s = self.model_s = self.rdchiral_s = 0.0
        self.n_propose = 0
        return out
