"""Budgeted, caching oracle for molecular optimisation, with PMO metrics.

An :class:`Oracle` wraps an objective (a :class:`~selfsup.chem.objectives.Objective`, a registry
name, or any Python callable) and scores batches of SMILES:

* every SMILES is canonicalised with RDKit; a molecule seen before is answered from the cache and
  costs no call (``'OCC'`` and ``'CCO'`` are one call);
* the budget counts UNIQUE valid canonical molecules (the PMO convention, Gao et al., NeurIPS
  2022 Datasets & Benchmarks: 10k oracle calls);
* invalid SMILES are not scored, score ``objective.invalid_score`` and are counted in
  ``n_invalid`` (every occurrence), never against the budget;
* with ``max_length``, a molecule whose canonical SMILES has more characters is handled like an
  invalid one (not scored, ``invalid_score``, counted in ``n_too_long``, never against the
  budget): the size limit of GEGL's reference code (100 characters), which keeps unbounded
  objectives such as penalized logP from rewarding ever longer chains;
* with ``max_heavy_atoms``, a molecule with more heavy atoms is handled the same way (counted in
  ``n_too_large``); it is counted on the parsed molecule before the SMILES is canonicalised, so a
  huge input costs a parse, not a scoring (one pharmacophore fingerprint of a 300-carbon chain
  takes minutes) nor a canonicalisation (RDKit's writer overflows the stack near 20,000 chain
  atoms). A molecule with more heavy atoms than ``max_length`` is too long without being written.
  See :data:`DEFAULT_MAX_HEAVY_ATOMS` for the limit ``selfsup chem score`` uses;
* every unique call is recorded in order as :class:`OracleCall` ``(index, smiles, score)``.

Budget policy (chosen and documented here): a batch that straddles the budget is scored up to
the budget, in input order; the new molecules beyond it are not scored, get ``nan`` and are
flagged in :attr:`OracleBatch.over_budget`, and :attr:`Oracle.exhausted` becomes True. Cached
and invalid molecules are still answered after exhaustion. With ``on_exhausted="raise"`` the
oracle instead raises :class:`BudgetExhausted` after scoring what fits; the exception carries the
partial :class:`OracleBatch` in ``.batch``.

Metrics (:func:`pmo_metrics`): top-1, mean of the top-10 and top-100, and AUC of the running
top-10 mean against the number of calls (PMO): the running mean of the k best scores is taken
every ``freq_log`` (100) calls and at the last call, integrated by the trapezoid rule from
(0 calls, 0), held flat from the last call up to the budget if the run stopped early, and divided
by the budget. :class:`RunningMetrics` gives the same figures, bit for bit, for a stream of
scores at a constant cost per call (the oracle keeps one and :meth:`Oracle.metrics` reads it).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from bisect import insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from selfsup.chem.molecules import canonical_smiles, mol_from_smiles
from selfsup.chem.objectives.adapters import as_objective
from selfsup.chem.objectives.base import Objective
from selfsup.errors import InputError, SelfsupError
from selfsup.io import atomic_write_text, read_text_file

__all__ = [
    "DEFAULT_MAX_HEAVY_ATOMS",
    "BudgetExhausted",
    "Oracle",
    "OracleBatch",
    "OracleCall",
    "RunningMetrics",
    "auc_top_k",
    "load_record",
    "pmo_metrics",
    "save_record",
    "top_k_mean",
]


#: Heavy-atom limit of ``selfsup chem score`` (``--max-heavy-atoms``): more than twice the largest
#: ZINC250k molecule (38 heavy atoms), and what a 100-character SMILES can hold (GuacaMol's ChEMBL
#: set and GEGL keep SMILES of <= 100 characters), so no benchmark molecule is turned away, while
#: the cost of a scorer on one molecule stays bounded. An :class:`Oracle` has no limit unless
#: given one; optimisation runs are bounded by ``max_smiles_length`` (100 by default).
DEFAULT_MAX_HEAVY_ATOMS = 100


class BudgetExhausted(SelfsupError):
    """The oracle's budget of unique molecules is spent (only with ``on_exhausted='raise'``).

    ``batch`` holds the partial result of the call that hit the budget (``None`` if nothing of
    the call could be answered).
    """

    def __init__(self, message: str, batch: OracleBatch | None = None) -> None:
        super().__init__(message)
        self.batch = batch


# --------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class OracleCall:
    """One paid oracle call: 1-based call ``index``, canonical ``smiles``, ``score``."""

    index: int
    smiles: str
    score: float


@dataclass
class OracleBatch:
    """Per-item result of :meth:`Oracle.score_batch` (all lists have the input's length).

    ``canonical`` is None for an invalid SMILES and for a molecule turned away by its heavy-atom
    count before it was written (over ``max_heavy_atoms``, or over ``max_length`` atoms)."""

    scores: list[float]
    canonical: list[str | None]
    valid: list[bool]
    new: list[bool]
    over_budget: list[bool]
    n_new: int = field(default=0)

    @property
    def exhausted(self) -> bool:
        """True if some new molecule of this batch could not be scored."""
        return any(self.over_budget)


_RECORD_FIELDS = ("index", "smiles", "score")


def save_record(records: Sequence[OracleCall], path: str | os.PathLike) -> Path:
    """Write calls as CSV (``.csv``) or JSON lines (``.jsonl``/``.json``), atomically."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_RECORD_FIELDS)
        for r in records:
            writer.writerow([r.index, r.smiles, repr(float(r.score))])
        text = buf.getvalue()
    elif suffix in (".jsonl", ".json"):
        text = "".join(json.dumps({"index": r.index, "smiles": r.smiles,
                                   "score": _json_float(r.score)}) + "\n" for r in records)
    else:
        raise InputError(f"unknown record format {p.name!r}; use a .csv or .jsonl file name")
    return atomic_write_text(p, text)


def _json_float(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def load_record(path: str | os.PathLike) -> list[OracleCall]:
    """Read calls written by :func:`save_record` (format from the file name's suffix)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"oracle record {str(p)!r} does not exist; check the path")
    text = read_text_file(p, "oracle record", "Restore it, or start a new run.")
    rows: list[dict[str, Any]]
    try:
        if p.suffix.lower() == ".csv":
            reader = csv.DictReader(io.StringIO(text))
            if tuple(reader.fieldnames or ()) != _RECORD_FIELDS:
                raise ValueError(f"header {reader.fieldnames}, expected {list(_RECORD_FIELDS)}")
            rows = list(reader)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        records = [OracleCall(int(r["index"]), str(r["smiles"]), float(r["score"])) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"malformed oracle record {str(p)!r} ({exc}); it must be written by "
            "Oracle.save_record with columns index, smiles, score"
        ) from exc
    if [r.index for r in records] != list(range(1, len(records) + 1)):
        raise InputError(f"oracle record {str(p)!r}: call indices must run 1, 2, 3, ... in order")
    return records


# --------------------------------------------------------------------------------- metrics
def top_k_mean(scores: Iterable[float], k: int) -> float:
    """Mean of the ``k`` best scores (of all of them if fewer); 0.0 for no scores."""
    ordered = sorted((float(s) for s in scores), reverse=True)[:k]
    return float(np.mean(ordered)) if ordered else 0.0


def auc_top_k(scores: Sequence[float], k: int = 10, budget: int | None = None,
              freq_log: int = 100, finish: bool = True) -> float:
    """PMO AUC of the running top-``k`` mean versus oracle calls, divided by the budget.

    ``scores`` are in call order. Checkpoints at ``freq_log, 2 freq_log, ...`` below the number
    of calls n, and at n; the curve starts at (0, 0) and is integrated by trapezoids. If
    ``finish`` and n < budget the last value is carried flat to the budget. Calls beyond the
    budget are ignored. ``budget=None`` means the budget is n.
    """
    if freq_log <= 0 or k <= 0:
        raise InputError(f"freq_log and k must be positive, got {freq_log}, {k}")
    if budget is not None and budget <= 0:
        raise InputError(f"budget must be positive, got {budget}")
    values = [float(s) for s in scores]
    if budget is not None:
        values = values[:budget]
    n = len(values)
    if n == 0:
        return 0.0
    total_budget = budget if budget is not None else n
    checkpoints = list(range(freq_log, n, freq_log)) + [n]
    area, prev_x, prev_y = 0.0, 0, 0.0
    for x in checkpoints:
        y = top_k_mean(values[:x], k)
        area += (x - prev_x) * (y + prev_y) / 2.0
        prev_x, prev_y = x, y
    if finish and n < total_budget:
        area += (total_budget - n) * prev_y
    return area / total_budget


def pmo_metrics(scores: Sequence[float], budget: int | None = None,
                freq_log: int = 100) -> dict[str, float]:
    """top1, top10_mean, top100_mean, auc_top1/10/100 and n_calls for call-ordered scores."""
    values = [float(s) for s in scores]
    if budget is not None:
        values = values[:budget]
    return {
        "top1": max(values) if values else 0.0,
        "top10_mean": top_k_mean(values, 10),
        "top100_mean": top_k_mean(values, 100),
        "auc_top1": auc_top_k(values, 1, budget, freq_log),
        "auc_top10": auc_top_k(values, 10, budget, freq_log),
        "auc_top100": auc_top_k(values, 100, budget, freq_log),
        "n_calls": float(len(values)),
    }


class RunningMetrics:
    """:func:`pmo_metrics` of a stream of call-ordered scores, kept up to date as they arrive.

    Each :meth:`add` costs a constant amount of work (a binary search into the 100 best so far,
    and at every ``freq_log``-th call one mean of at most 100 numbers per AUC), and so does
    :meth:`metrics`, however many calls came before; :func:`pmo_metrics` re-sorts every score
    instead. The figures are equal bit for bit to ``pmo_metrics(scores, budget, freq_log)``: the
    same sorted top-k values (ties in call order, as Python's stable sort leaves them) are
    averaged by the same ``np.mean``, the trapezoids are added in the same order at the same
    checkpoints, and the trapezoid to the last call and the flat finish to the budget are added
    when the metrics are asked for. Scores past ``budget`` are ignored, as there. A ``nan`` score
    has no place in a sorted order (``sorted`` leaves it where the comparisons happen to put
    it), so once one is seen, :meth:`metrics` computes :func:`pmo_metrics` of the kept scores.
    """

    KEEP = 100  # the largest k of pmo_metrics
    KS = (1, 10, 100)  # the AUCs of pmo_metrics

    def __init__(self, budget: int | None = None, freq_log: int = 100) -> None:
        if not isinstance(freq_log, int) or isinstance(freq_log, bool) or freq_log <= 0:
            raise InputError(f"freq_log must be a positive integer, got {freq_log!r}")
        if budget is not None and budget <= 0:
            raise InputError(f"budget must be positive, got {budget}")
        self.budget = budget
        self.freq_log = freq_log
        self.n = 0  # scores taken (at most the budget)
        self.has_nan = False
        self._values: list[float] = []  # every score taken, for the nan case
        # the KEEP best as (-score, call number), ascending: best first, ties in call order
        self._top: list[tuple[float, int]] = []
        self._area = dict.fromkeys(self.KS, 0.0)  # trapezoids up to the last checkpoint
        self._last = dict.fromkeys(self.KS, (0, 0.0))  # (calls, top-k mean) at that checkpoint

    def add(self, score: float) -> None:
        """Take the next call's score."""
        if self.budget is not None and self.n >= self.budget:
            return
        v = float(score)
        self.n += 1
        self._values.append(v)
        if v != v:
            self.has_nan = True
            return
        top = self._top
        key = (-v, self.n)  # negation is exact: -key[0] is v, signed zeros included
        if len(top) < self.KEEP:
            insort(top, key)
        elif key < top[-1]:
            insort(top, key)
            top.pop()
        if self.n % self.freq_log == 0 and not self.has_nan:
            for k in self.KS:
                x0, y0 = self._last[k]
                y = self._mean(k)
                self._area[k] += (self.n - x0) * (y + y0) / 2.0
                self._last[k] = (self.n, y)

    def _mean(self, k: int) -> float:
        """:func:`top_k_mean` of the scores so far."""
        ordered = [-key[0] for key in self._top[:k]]
        return float(np.mean(ordered)) if ordered else 0.0

    def _auc(self, k: int, y: float) -> float:
        """:func:`auc_top_k` of the scores so far; ``y`` is the top-``k`` mean now."""
        n = self.n
        if n == 0:
            return 0.0
        area = self._area[k]
        x0, y0 = self._last[k]
        if x0 != n:  # the last call is a checkpoint of its own
            area += (n - x0) * (y + y0) / 2.0
            y0 = y
        total = self.budget if self.budget is not None else n
        if n < total:
            area += (total - n) * y0
        return area / total

    def metrics(self) -> dict[str, float]:
        """``pmo_metrics(scores, budget, freq_log)`` of the scores taken so far."""
        if self.has_nan:
            return pmo_metrics(self._values, self.budget, self.freq_log)
        means = {k: self._mean(k) for k in self.KS}
        return {
            "top1": -self._top[0][0] if self._top else 0.0,
            "top10_mean": means[10],
            "top100_mean": means[100],
            "auc_top1": self._auc(1, means[1]),
            "auc_top10": self._auc(10, means[10]),
            "auc_top100": self._auc(100, means[100]),
            "n_calls": float(self.n),
        }


# ---------------------------------------------------------------------------------- oracle
class Oracle:
    """Caching, budgeted scorer of SMILES batches (see the module docstring for the policy).

    Args:
        objective: an Objective, a registry name, or a callable ``f(smiles) -> float``.
        budget: maximum number of unique valid canonical molecules to score (None: unlimited).
        on_exhausted: ``"mark"`` (default: unscored molecules get ``nan`` and are flagged) or
            ``"raise"`` (raise :class:`BudgetExhausted` carrying the partial batch).
        keep_stereo: canonicalise with stereochemistry (True) or without.
        freq_log: logging interval of the AUC metric (PMO: 100).
        max_length: most characters of a canonical SMILES that is scored (None: no limit).
        max_heavy_atoms: most heavy atoms of a molecule that is scored (None: no limit).
    """

    def __init__(self, objective: Objective | str | Callable[..., Any],
                 budget: int | None = None, on_exhausted: str = "mark",
                 keep_stereo: bool = True, freq_log: int = 100,
                 max_length: int | None = None, max_heavy_atoms: int | None = None) -> None:
        if budget is not None and (not isinstance(budget, int) or budget <= 0):
            raise InputError(f"oracle budget must be a positive integer or None, got {budget!r}")
        for key, value in (("max_length", max_length), ("max_heavy_atoms", max_heavy_atoms)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise InputError(f"oracle {key} must be a positive integer or None, got "
                                 f"{value!r}")
        if on_exhausted not in ("mark", "raise"):
            raise InputError(f"on_exhausted must be 'mark' or 'raise', got {on_exhausted!r}")
        self.objective = as_objective(objective)
        self.budget = budget
        self.on_exhausted = on_exhausted
        self.keep_stereo = keep_stereo
        self.freq_log = freq_log
        self.max_length = max_length
        self.max_heavy_atoms = max_heavy_atoms
        self.n_too_long = 0
        self.n_too_large = 0
        self._cache: dict[str, float] = {}
        self._records: list[OracleCall] = []
        self._running = RunningMetrics(budget, freq_log)  # the PMO metrics, call by call
        self.n_invalid = 0
        self.n_cache_hits = 0
        self.n_over_budget = 0

    # -- state
    @property
    def n_calls(self) -> int:
        """Unique valid molecules scored so far (the budgeted quantity)."""
        return len(self._records)

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.n_calls

    @property
    def exhausted(self) -> bool:
        """True once the budget is fully spent."""
        return self.budget is not None and self.n_calls >= self.budget

    @property
    def records(self) -> list[OracleCall]:
        """Every paid call in order (a copy)."""
        return list(self._records)

    def records_since(self, start: int) -> list[OracleCall]:
        """The paid calls after the first ``start`` (a copy of those alone)."""
        return self._records[start:]

    def __len__(self) -> int:
        return self.n_calls

    def lookup(self, smiles: str) -> float | None:
        """Cached score of ``smiles`` (any writing of the molecule), or None if never scored."""
        can = canonical_smiles(smiles, keep_stereo=self.keep_stereo)
        return None if can is None else self._cache.get(can)

    def fits(self, canonical: str) -> bool:
        """True if a canonical SMILES is within ``max_length`` and ``max_heavy_atoms`` (always,
        without them)."""
        if self.max_length is not None and len(canonical) > self.max_length:
            return False
        if self.max_heavy_atoms is None:
            return True
        with BlockLogs():
            mol = Chem.MolFromSmiles(canonical, sanitize=False)
        return mol is not None and mol.GetNumHeavyAtoms() <= self.max_heavy_atoms

    def _size_check(self, mol: Chem.Mol) -> str | None:
        """``'too_large'``, ``'too_long'`` (more heavy atoms than ``max_length`` characters: each
        heavy atom takes at least one) or None, from the parsed molecule, before writing it."""
        n_heavy = mol.GetNumHeavyAtoms()
        if self.max_heavy_atoms is not None and n_heavy > self.max_heavy_atoms:
            return "too_large"
        if self.max_length is not None and n_heavy > self.max_length:
            return "too_long"
        return None

    def _canonical(self, mol: Chem.Mol) -> str | None:
        """What :func:`~selfsup.chem.molecules.canonical_smiles` writes for the parsed ``mol``."""
        if not self.keep_stereo:
            Chem.RemoveStereochemistry(mol)
        try:
            return Chem.MolToSmiles(mol) or None
        except Exception:  # noqa: BLE001 - as canonical_smiles: a molecule RDKit cannot write
            return None

    # -- scoring
    def __call__(self, smiles: str | Sequence[str]) -> Any:
        """Scores of a list of SMILES (``list[float]``; ``nan`` beyond the budget), or one
        float for a single SMILES string."""
        if isinstance(smiles, str):
            return self.score_batch([smiles]).scores[0]
        return self.score_batch(smiles).scores

    def score_batch(self, smiles_list: Sequence[str]) -> OracleBatch:
        """Score a batch; see :class:`OracleBatch` for the per-item flags."""
        if isinstance(smiles_list, str):
            raise InputError("score_batch expects a list of SMILES; wrap a single one as [smiles]")
        items = list(smiles_list)
        n = len(items)
        canonical: list[str | None] = [None] * n
        valid = [False] * n
        new = [False] * n
        over = [False] * n
        scores = [math.nan] * n
        pending: dict[str, list[int]] = {}  # new canonical SMILES -> positions, in input order
        # new molecules given as their canonical SMILES (a GA's children): the parse is reused
        parsed: dict[str, Chem.Mol] = {}
        for i, s in enumerate(items):
            mol = mol_from_smiles(s)
            size = None if mol is None else self._size_check(mol)
            if size == "too_large":  # not written: canonical stays None
                self.n_too_large += 1
                scores[i] = float(self.objective.invalid_score)
                continue
            if size == "too_long":
                self.n_too_long += 1
                scores[i] = float(self.objective.invalid_score)
                continue
            can = None if mol is None else self._canonical(mol)
            canonical[i] = can
            if can is None:
                self.n_invalid += 1
                scores[i] = float(self.objective.invalid_score)
                continue
            if self.max_length is not None and len(can) > self.max_length:
                self.n_too_long += 1
                scores[i] = float(self.objective.invalid_score)
                continue
            valid[i] = True
            if can in self._cache:
                self.n_cache_hits += 1
                scores[i] = self._cache[can]
            elif can in pending:
                pending[can].append(i)
            else:
                pending[can] = [i]
                if can == s and self.keep_stereo:  # mol is what parsing ``can`` gives
                    parsed[can] = mol
        to_score = list(pending)
        room = len(to_score) if self.remaining is None else max(self.remaining, 0)
        accepted, rejected = to_score[:room], to_score[room:]
        if accepted:
            values = self._score(accepted, parsed)
            if len(values) != len(accepted):
                raise InputError(
                    f"objective {self.objective.name!r} returned {len(values)} scores for "
                    f"{len(accepted)} molecules"
                )
            for can, v in zip(accepted, values):
                v = float(v)
                self._cache[can] = v
                self._records.append(OracleCall(len(self._records) + 1, can, v))
                self._running.add(v)
                new[pending[can][0]] = True
                self.n_cache_hits += len(pending[can]) - 1  # repeats within the batch
                for i in pending[can]:
                    scores[i] = v
        for can in rejected:
            for i in pending[can]:
                over[i] = True
        self.n_over_budget += len(rejected)
        batch = OracleBatch(scores, canonical, valid, new, over, n_new=len(accepted))
        if rejected and self.on_exhausted == "raise":
            raise BudgetExhausted(
                f"oracle budget of {self.budget} unique molecules is spent: {len(rejected)} new "
                f"molecule(s) of this batch were not scored (see .batch for the partial result); "
                "raise the budget or stop the run",
                batch,
            )
        return batch

    def _score(self, accepted: list[str], parsed: dict[str, Chem.Mol]) -> list[float]:
        """The objective's scores of ``accepted``; an objective that scores one parsed molecule
        at a time (``Objective``'s own ``__call__`` and ``score_list``) scores the molecules
        of ``parsed`` without parsing them again: the same numbers, one RDKit parse fewer."""
        obj = self.objective
        kind = type(obj)
        if (not parsed or kind.__call__ is not Objective.__call__
                or kind.score_list is not Objective.score_list):
            return obj.score_list(accepted)
        return [obj.score_parsed(parsed[s], s) if s in parsed else obj(s) for s in accepted]

    # -- metrics
    def metrics(self) -> dict[str, float]:
        """PMO metrics of the calls so far, plus n_calls, n_invalid, n_cache_hits (and
        n_too_long with ``max_length``, n_too_large with ``max_heavy_atoms``). Equal bit for
        bit to :func:`pmo_metrics` of the recorded scores, at a constant cost (see
        :class:`RunningMetrics`)."""
        out = self._running.metrics()
        out.update(n_invalid=float(self.n_invalid), n_cache_hits=float(self.n_cache_hits))
        if self.max_length is not None:
            out["n_too_long"] = float(self.n_too_long)
        if self.max_heavy_atoms is not None:
            out["n_too_large"] = float(self.n_too_large)
        return out

    def top(self, k: int = 10) -> list[OracleCall]:
        """The ``k`` best calls (ties: earlier call first)."""
        return sorted(self._records, key=lambda r: (-r.score, r.index))[:k]

    # -- persistence
    def save_record(self, path: str | os.PathLike) -> Path:
        """Write the call record to ``path`` (``.csv`` or ``.jsonl``) atomically."""
        return save_record(self._records, path)

    @classmethod
    def from_record(cls, objective: Objective | str | Callable[..., Any],
                    path: str | os.PathLike, budget: int | None = None,
                    **kwargs: Any) -> Oracle:
        """Resume: an oracle whose cache and call count come from a saved record."""
        oracle = cls(objective, budget=budget, **kwargs)
        for r in load_record(path):
            oracle._cache[r.smiles] = r.score
            oracle._records.append(r)
            oracle._running.add(r.score)
        return oracle

    def __repr__(self) -> str:
        return (f"Oracle({self.objective.name!r}, calls={self.n_calls}, budget={self.budget}, "
                f"invalid={self.n_invalid})")
