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
