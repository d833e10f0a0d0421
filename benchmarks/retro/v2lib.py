"""Helpers of the retro v2 benchmark (``run_v2.py``) and the value-network check
(``value_si.py``): names, per-target planning that resumes, compact per-target records, the
comparison over the targets two arms both solve, and the success-within-N curves."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.io import atomic_write_text, dumps_json

SUCCESS_AT = (10, 25, 50, 100, 200, 500)


def stock_label(spec: str | None) -> str:
    """The short name of a stock spec in a setting: ``None`` -> ``uspto50k-leaves``, a
    ``molbloom:CATALOG`` -> ``CATALOG``, a file -> its stem (``.gz`` and ``.smi`` dropped)."""
    if spec is None:
        return "uspto50k-leaves"
    if spec.startswith("molbloom:"):
        return spec.split(":", 1)[1]
    if spec.startswith("toy:"):
        return spec.replace(":", "-")
    name = Path(spec).name
    for ext in (".gz", ".smi", ".txt", ".csv"):
        name = name.removesuffix(ext)
    return name


def setting_name(target_set: str, stock: str, n_targets: int, max_iterations: int) -> str:
    """``<target set>/<stock>/<n targets>/<max iterations>it`` (issue 23)."""
    return f"{target_set}/{stock}/{n_targets}/{max_iterations}it"


def file_key(key: str) -> str:
    """A unit key (``setting|seed|arm``) as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", key.replace("|", "__")).strip("-")


def text_hash(lines: Sequence[str]) -> str:
    """A short hash of a target list (the cache refuses units planned on other targets)."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def compact(rec: dict[str, Any]) -> dict[str, Any]:
    """A per-target result without its route tree: what the table is computed from."""
    return {"index": rec["index"], "target": rec.get("target_input", rec.get("target")),
            "success": bool(rec.get("success")),
            "first_solution_iteration": rec.get("first_solution_iteration"),
            "iterations": rec.get("iterations"), "best_cost": rec.get("best_cost"),
            "route_length": rec.get("best_route_length"),
            "stop_reason": rec.get("stop_reason"), "seconds": rec.get("time_s"),
            **({"error": rec["error"]} if "error" in rec else {})}


def write_compact(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(dumps_json(compact(r)) + "\n" for r in records))


def success_curve(records: Sequence[dict[str, Any]], max_iterations: int) -> list[float]:
    """Share of targets solved within ``n`` iterations, for ``n = 0..max_iterations``."""
    n = len(records)
    counts = [0] * (max_iterations + 1)
    for r in records:
        f = r.get("first_solution_iteration")
        if f is not None and f <= max_iterations:
            counts[int(f)] += 1
    out, run = [], 0
    for c in counts:
        run += c
        out.append(run / n if n else 0.0)
    return out


def both_solved(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Two arms on the same targets (records matched by index): success rates, and over the
    targets both solve, the mean iterations to the first route of each and their paired
    difference (``b - a``; negative: ``b`` needs fewer)."""
    ia = {r["index"]: r for r in a}
    ib = {r["index"]: r for r in b}
    if set(ia) != set(ib):
        raise ValueError("the two arms were planned on different targets")
    common = [i for i in sorted(ia) if ia[i].get("success") and ib[i].get("success")]
    fa = [float(ia[i]["first_solution_iteration"]) for i in common]
    fb = [float(ib[i]["first_solution_iteration"]) for i in common]
    n = len(ia)
    diff = [y - x for x, y in zip(fa, fb)]
    mean = (sum(diff) / len(diff)) if diff else math.nan
    sd = (math.sqrt(sum((d - mean) ** 2 for d in diff) / (len(diff) - 1))
          if len(diff) > 1 else math.nan)
    return {"n_targets": n,
            "success_rate_a": sum(bool(r.get("success")) for r in a) / n if n else math.nan,
            "success_rate_b": sum(bool(r.get("success")) for r in b) / n if n else math.nan,
            "n_both_solved": len(common),
            "mean_iterations_both_a": sum(fa) / len(fa) if fa else math.nan,
            "mean_iterations_both_b": sum(fb) / len(fb) if fb else math.nan,
            "mean_difference_b_minus_a": mean,
            "stderr_difference": sd / math.sqrt(len(diff)) if len(diff) > 1 else math.nan,
            "n_b_fewer": sum(d < 0 for d in diff), "n_b_more": sum(d > 0 for d in diff),
            "n_only_a": sum(bool(ia[i].get("success")) and not ib[i].get("success")
                            for i in ia),
            "n_only_b": sum(bool(ib[i].get("success")) and not ia[i].get("success")
                            for i in ia)}


def draw_curves(curves: dict[str, dict[str, list[list[float]]]], path: Path,
                marks: Sequence[int] = SUCCESS_AT) -> Path:
    """One panel per setting: per arm the success-within-N curve, mean over its seeds (line)
    and their range (band); ``curves[setting][arm]`` = one curve (index = N) per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = list(curves)
    fig, axes = plt.subplots(1, len(settings), figsize=(7.5 * len(settings), 5.2),
                             squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for arm, seeds in curves[setting].items():
            arr = np.asarray(seeds, dtype=float)  # (n_seeds, max_iterations + 1)
            x = np.arange(arr.shape[1])
            (line,) = ax.plot(x[1:], arr.mean(0)[1:], label=f"{arm} ({len(seeds)} seed"
                              f"{'s' if len(seeds) > 1 else ''})", lw=1.4,
                              drawstyle="steps-post")
            if len(seeds) > 1:
                ax.fill_between(x[1:], arr.min(0)[1:], arr.max(0)[1:], alpha=0.12,
                                color=line.get_color(), lw=0, step="post")
        top = max(len(s[0]) - 1 for s in curves[setting].values())
        ax.set_xscale("log")
        ticks = [1, 2, 5] + [m for m in marks if m <= top]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlim(1, top)
        ax.set_ylim(0, 1)
        ax.set_xlabel("iterations (single-step model calls)")
        ax.set_ylabel("share of targets solved within N iterations")
        ax.set_title(setting, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


# ------------------------------------------------------- prepared files made again elsewhere
# A run's prepared models (self-improvement iterations, the random control, value networks)
# live in its run folder, which another machine does not have. The benchmark then makes them
# again, deterministically, and keeps the cached units only when the new files are the same
# work: these compare what the cache recorded of the old files with the new ones.

SI_FIGURES = ("n_targets", "n_solved", "n_route_reactions", "n_kept", "n_not_top1",
              "n_forward_augmented", "n_replay", "n_finetune_examples", "finetune_loss_last",
              "onestep")
PATH_KEYS = ("models", "model", "run", "path", "model_sha256")


def _differ(what: str, old: Any, new: Any, diffs: list[str], checked: list[str]) -> None:
    if old is None:
        return
    checked.append(what)
    if old != new:
        diffs.append(f"{what}: cached {old!r}, made now {new!r}")


def compare_iterations(old: dict[str, Any], new: dict[str, Any]) -> tuple[list, list]:
    """(what was compared, what differs) between a cached self-improvement entry and one made
    again: its files' hashes where the cache has them, and each iteration's deterministic
    figures (solved, kept, not top-1, forward-augmented, fine-tuning examples and last loss,
    one-step accuracy)."""
    diffs: list[str] = []
    checked: list[str] = []
    _differ("model_sha256", old.get("model_sha256"), new.get("model_sha256"), diffs, checked)
    its_old, its_new = old.get("iterations") or [], new.get("iterations") or []
    if len(its_old) != len(its_new):
        diffs.append(f"iterations: cached {len(its_old)}, made now {len(its_new)}")
    for a, b in zip(its_old, its_new):
        for f in SI_FIGURES:
            _differ(f"iteration {a.get('iteration')} {f}", a.get(f), b.get(f), diffs, checked)
    return checked, diffs


def compare_control(old: dict[str, Any], new: dict[str, Any],
                    unit: dict[str, Any] | None) -> tuple[list, list]:
    """As :func:`compare_iterations` for the random control: its file's hash, last fine-tuning
    loss and one-step accuracy where the cache has them, else the one-step top-1 that its
    cached unit reported."""
    diffs: list[str] = []
    checked: list[str] = []
    _differ("n_reactions", old.get("n_reactions"), new.get("n_reactions"), diffs, checked)
    for f in ("model_sha256", "finetune_loss_last", "onestep"):
        _differ(f, old.get(f), new.get(f), diffs, checked)
    if old.get("onestep") is None and unit is not None:
        _differ("onestep top1 of its unit", unit.get("onestep_top1"),
                (new.get("onestep") or {}).get("top1"), diffs, checked)
    return checked, diffs


def compare_value(old: dict[str, Any], new: dict[str, Any]) -> tuple[list, list]:
    """As :func:`compare_iterations` for a value network: examples, final losses, hash."""
    diffs: list[str] = []
    checked: list[str] = []
    for f in ("n_routes", "n_examples", "final", "model_sha256"):
        _differ(f, old.get(f), new.get(f), diffs, checked)
    return checked, diffs


def remade_entry(key: str, cached: dict[str, Any], new: dict[str, Any], compare) -> dict:
    """The cached entry ``key`` with the paths (and hashes) of the files made again, when
    ``compare(cached, new)`` finds them the same work; else SystemExit naming the differences
    (the cached units were made with the lost files and must not be mixed with new ones).
    The entry's ``remade`` lists each time it was made again, with what was compared."""
    checked, diffs = compare(cached, new)
    if diffs:
        raise SystemExit(f"{key}: made again on this machine, it differs from the cached one "
                         f"({'; '.join(diffs)}). The cached units used the lost files: move "
                         "the cache aside (or pass another --out) to start this setting over")
    if not checked:
        raise SystemExit(f"{key}: made again on this machine, but the cache records nothing "
                         "to check it against; move the cache aside to start over")
    out = {**cached, **{k: new[k] for k in PATH_KEYS if k in new}}
    out["remade"] = [*(cached.get("remade") or []),
                     {"seconds": new.get("seconds"), "checked": checked,
                      "provenance": new.get("provenance")}]
    return out


def check_same_search(records: Sequence[dict[str, Any]], per_target: Path) -> int:
    """SystemExit unless ``records`` planned afresh give, target by target, what the per-target
    file ``per_target`` (:func:`compact`) holds, timings aside; returns the targets compared."""
    import json

    if not per_target.is_file():
        raise SystemExit(f"{per_target} is missing: no first-seed results to check against")
    want = {r["index"]: r for r in map(json.loads, per_target.read_text().splitlines())}
    have = {c["index"]: c for c in map(compact, records)}
    if set(want) != set(have):
        raise SystemExit(f"planned afresh, the targets differ from {per_target}")
    keys = ("success", "first_solution_iteration", "iterations", "route_length", "best_cost")
    bad = [i for i in sorted(want) if any(want[i].get(k) != have[i].get(k) for k in keys)]
    if bad:
        raise SystemExit(f"planned afresh, {len(bad)} targets (first: index {bad[0]}) differ "
                         f"from {per_target}: the base model is not the one the cached units "
                         "were made with")
    return len(want)
