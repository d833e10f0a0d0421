"""Max-reward priority queue: the ``K`` best unique molecules seen so far (GEGL, Ahn et al. 2020).

GEGL keeps two such queues (apprentice samples, expert children) and imitates their union;
SMILES-LSTM hill climbing keeps one (the top-k it fine-tunes on) and REINVENT one (its replay
memory). A molecule is keyed by its canonical SMILES, so two writings of it are one entry.

Order: higher score first; ties by first insertion (earlier first), so the queue depends only on
the sequence of ``add`` calls. Non-finite scores (``nan`` past an oracle budget) and invalid
SMILES are dropped. Light module: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from selfsup.chem.molecules import canonical_smiles
from selfsup.errors import InputError

__all__ = ["MaxRewardQueue"]


class MaxRewardQueue:
    """The ``size`` highest-scoring unique canonical SMILES added so far.

    Args:
        size: capacity ``K`` (>= 1).
        canonicalize: canonicalise added SMILES with RDKit (invalid ones are dropped). Pass False
            when the caller already holds canonical SMILES (e.g. from the oracle), to save time.
        keep_stereo: keep stereo marks when canonicalising (match the oracle's setting).
    """

    def __init__(self, size: int, *, canonicalize: bool = True, keep_stereo: bool = True) -> None:
        if size < 1:
            raise InputError(f"queue size must be >= 1, got {size}")
        self.size = int(size)
        self.canonicalize = canonicalize
        self.keep_stereo = keep_stereo
        self._items: list[tuple[str, float, int]] = []  # (smiles, score, insertion tick), ranked
        self._tick = 0

    def add(self, smiles: Sequence[str], scores: Sequence[float]) -> int:
        """Offer molecules with their scores; returns how many new molecules entered the queue.

        A molecule already queued keeps its first score and place (oracle scores are cached, so
        a repeat carries the same score).
        """
        if isinstance(smiles, str):
            raise InputError("MaxRewardQueue.add expects a list of SMILES; wrap one as [smiles]")
        if len(smiles) != len(scores):
            raise InputError(f"add got {len(smiles)} SMILES but {len(scores)} scores")
        held = {s for s, _, _ in self._items}
        fresh: list[tuple[str, float, int]] = []
        for s, v in zip(smiles, scores):
            v = float(v)
            if not math.isfinite(v):
                continue
            key = canonical_smiles(s, keep_stereo=self.keep_stereo) if self.canonicalize else s
            if not key or key in held:
                continue
            held.add(key)
            fresh.append((key, v, self._tick))
            self._tick += 1
        if not fresh:
            return 0
        ranked = sorted(self._items + fresh, key=lambda it: (-it[1], it[2]))[: self.size]
        kept = {s for s, _, _ in ranked}
        self._items = ranked
        return sum(s in kept for s, _, _ in fresh)

    def items(self) -> list[tuple[str, float]]:
        """``(smiles, score)`` pairs, best first."""
        return [(s, v) for s, v, _ in self._items]

    def smiles(self) -> list[str]:
        return [s for s, _, _ in self._items]

    def scores(self) -> list[float]:
        return [v for _, v, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, smiles: str) -> bool:
        return any(s == smiles for s, _, _ in self._items)

    def state_dict(self) -> dict[str, Any]:
        """Plain data (for logs and checkpoints): size, insertion counter and ranked items."""
        return {"size": self.size, "tick": self._tick,
                "items": [[s, v, t] for s, v, t in self._items]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.size = int(state["size"])
        self._tick = int(state["tick"])
        self._items = [(str(s), float(v), int(t)) for s, v, t in state["items"]]

    def __repr__(self) -> str:
        best = f", best={self._items[0][1]:.4g}" if self._items else ""
        return f"MaxRewardQueue(size={self.size}, len={len(self)}{best})"
