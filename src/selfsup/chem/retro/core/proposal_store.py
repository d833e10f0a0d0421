"""A single-step model's proposals kept on disk and shared by the processes that plan with it.

A backward model's answer for ``(product, top_k)`` is a pure function of the model's weights, so
the searches of several benchmark units with the same model (Retro*-0, Retro* with a value
network, MCTS; one search process each, possibly at the same time) can share it. A
:class:`ProposalStore` is a folder per model (named by the model file's SHA-256) of JSON-lines
files, one per process that wrote to it; :meth:`ProposalStore.attach` loads every entry into the
model's in-memory cache (then unbounded) and appends what the model computes from then on to
this process's own file (flushed per line; a line cut by a kill is skipped on loading, and its
entry is simply computed again). Entries are written as the model returned them: the same
reactants, the same floating-point probabilities (JSON keeps them exactly), the same metadata
(a template model's ``template`` string is rebuilt from ``template_id`` on loading, so it is
not written). A search therefore sees exactly what it would have computed, and counts its
calls the same way (a cache hit is one call, as before): routes, iterations and success are
unchanged; only the time a search takes falls. The counters of work actually done
(``n_model_calls``, ``n_invalid``, template errors) count this process's work only.

No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from selfsup.errors import InputError

from .single_step import Proposal, SingleStepModel

__all__ = ["ProposalStore", "model_file_key"]


def model_file_key(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a model file: the store's folder name."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no model file at {str(p)!r} to key a proposal store by")
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class ProposalStore:
    """The proposals of one model (``key``, e.g. :func:`model_file_key`) under ``root/key/``."""

    def __init__(self, root: str | os.PathLike, key: str) -> None:
        if not key or "/" in key or key.startswith("."):
            raise InputError(f"proposal store key {key!r} must be a plain folder name")
        self.dir = Path(root) / key
        self._fh = None
        self._templates: list[str] | None = None
        self.n_loaded = 0
        self.n_written = 0
        self.n_skipped = 0  # lines that could not be read (cut by a kill)

    def attach(self, model: SingleStepModel) -> int:
        """Load every stored entry into ``model``'s cache (made unbounded), and append what it
        computes from now on; returns the number of entries loaded."""
        if not model.use_cache:
            raise InputError("a proposal store needs a model with use_cache=True")
        self.dir.mkdir(parents=True, exist_ok=True)
        templates = getattr(model, "templates", None)
        self._templates = list(templates) if templates is not None else None
        model.max_cache_size = None
        for f in sorted(self.dir.glob("*.jsonl")):
            with open(f, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    entry = self._read(line)
                    if entry is None:
                        self.n_skipped += bool(line.strip())
                        continue
                    key, props = entry
                    model._cache[key] = props
                    self.n_loaded += 1
        model._on_fresh = self._write
        return self.n_loaded

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- internals -----------------------------------------------------------------------
    def _read(self, line: str) -> tuple[tuple[str, int], list[Proposal]] | None:
        try:
            row = json.loads(line)
            product, top_k = str(row["p"]), int(row["k"])
            props = [Proposal(tuple(str(m) for m in reactants), float(prob), self._meta_in(meta))
                     for reactants, prob, meta in row["r"]]
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        return (product, top_k), props

    def _meta_in(self, meta: dict[str, Any]) -> dict[str, Any]:
        meta = dict(meta)
        if self._templates is not None and "template_id" in meta and "template" not in meta:
            meta["template"] = self._templates[int(meta["template_id"])]
        return meta

    def _meta_out(self, meta: Any) -> dict[str, Any]:
        meta = dict(meta)
        t = meta.get("template_id")
        if (self._templates is not None and isinstance(t, int) and 0 <= t < len(self._templates)
                and meta.get("template") == self._templates[t]):
            del meta["template"]  # rebuilt from the model's templates on loading
        return meta

    def _write(self, fresh: dict[str, list[Proposal]], top_k: int) -> None:
        if self._fh is None:
            self._fh = open(self.dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl", "a",
                            encoding="utf-8")
        for product, props in fresh.items():
            row = {"p": product, "k": top_k,
                   "r": [[list(p.reactants), p.probability, self._meta_out(p.metadata)]
                         for p in props]}
            self._fh.write(json.dumps(row, separators=(",", ":")) + "\n")
            self.n_written += 1
        self._fh.flush()
