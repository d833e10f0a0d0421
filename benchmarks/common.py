"""Shared helpers of the benchmark scripts: the one results format (JSON + Markdown)."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from selfsup.io import atomic_write_json, atomic_write_text  # noqa: E402
from selfsup.provenance import numeric_differences, provenance, summary  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = torch.get_num_threads()
    except Exception:  # pragma: no cover
        dev, threads = "unknown", "?"
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return (f"{os.cpu_count()} CPU cores{mem}, {platform.machine()}, {dev}, "
            f"torch threads {threads}")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def row(setting: str, arm: str, metric: str, values: list[float]) -> dict:
    # a JSON null (NaN/Infinity are written as null) reads back as nan; mean and std are over
    # the seeds with a number (e.g. no mean route length where a seed solved nothing)
    vals = [math.nan if v is None else float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    return {
        "setting": setting, "arm": arm, "metric": metric,
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "seeds": vals,
    }


def write_results(name: str, mode: str, command: str, started: str, wall: float,
                  rows: list[dict], out_dir: Path | None, notes: str = "",
                  extra: dict | None = None) -> tuple[Path, Path]:
    """Write <name>.json and <name>.md (full mode: benchmarks/results/; quick: out_dir)."""
    target = RESULTS if (mode == "full" and out_dir is None) else Path(out_dir or ".")
    doc = {"benchmark": name, "mode": mode, "command": command, "machine": machine(),
           "provenance": provenance(), "started": started, "wall_seconds": round(wall, 1),
           "rows": rows}
    if extra:
        doc.update(extra)
    jp = atomic_write_json(target / f"{name}.json", doc)
    md = [f"# Benchmark `{name}` ({mode} mode)", "",
          f"Command: `{command}`  ", f"Machine: {doc['machine']}  ",
          f"Provenance (the process that wrote this file): {summary(doc['provenance'])}  ",
          f"Started: {started}, wall time {wall / 60:.1f} min", ""]
    if notes:
        md += [notes, ""]
    md += ["| setting | arm | metric | mean | std | seeds |", "|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ", ".join(f"{v:.4g}" for v in r["seeds"])
        md.append(f"| {r['setting']} | {r['arm']} | {r['metric']} | {r['mean']:.4f} | "
                  f"{r['std']:.4f} | {seeds} |")
    mp = atomic_write_text(target / f"{name}.md", "\n".join(md) + "\n")
    return jp, mp


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------ --verify: old vs new figures
PROVENANCE_ORDER = ("commit", "dirty", "torch", "torch_git", "torch_cpu_capability", "mkl",
                    "onednn", "torch_blas", "torch_threads", "numpy", "rdkit", "python",
                    "cpu_model", "cpu_id", "isa_flags", "cpu_cores", "cpu_cores_usable", "arch",
                    "platform")


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def compare_units(units: list[dict], figures: list[str] | tuple,
                  timing: list[str] | tuple = ()) -> list[dict]:
    """Side-by-side rows for re-run units. ``units``: ``{"key", "old", "new"}`` each (the
    committed cache entry and the re-run's). One row per unit and metric that either side holds
    as a number: old, new, diff (new - old), rel_diff (diff / |old|), equal (bit for bit at the
    precision the cache stores; None where a side lacks the metric). ``timing`` metrics are
    listed with kind "timing": they are never expected to agree."""
    rows = []
    for u in units:
        old, new = u.get("old") or {}, u.get("new") or {}
        for kind, metrics in (("figure", figures), ("timing", timing)):
            for m in metrics:
                a, b = _number(old.get(m)), _number(new.get(m))
                if a is None and b is None:
                    continue
                both = a is not None and b is not None
                nan = both and math.isnan(a) and math.isnan(b)
                diff = None if not both or nan else b - a
                rows.append({"unit": u["key"], "metric": m, "kind": kind, "old": a, "new": b,
                             "diff": diff,
                             "rel_diff": diff / abs(a) if diff is not None and a else None,
                             "equal": (nan or a == b) if both else None})
    return rows


def comparison_summary(rows: list[dict]) -> dict:
    """How many figures (timing rows aside) agree bit for bit, and the largest difference."""
    figs = [r for r in rows if r["kind"] == "figure" and r["equal"] is not None]
    differ = [r for r in figs if not r["equal"]]
    worst = max(differ, key=lambda r: abs(r["diff"]) if r["diff"] is not None else math.inf,
                default=None)
    verdict = ("no figure to compare" if not figs else
               "bit-exact" if not differ else f"{len(differ)} of {len(figs)} figures differ")
    return {"figures": len(figs), "equal": len(figs) - len(differ), "verdict": verdict,
            "largest": None if worst is None else {k: worst[k] for k in
                                                   ("unit", "metric", "old", "new", "diff")}}


def _fmt(v, spec: str = ".10g") -> str:
    return "-" if v is None else format(v, spec)


def format_comparison(rows: list[dict]) -> str:
    """A Markdown table of ``compare_units`` rows (reads as plain text on a terminal too)."""
    lines = ["| unit | metric | committed | re-run | diff | rel. diff | same |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        same = ("(timing)" if r["kind"] == "timing" else "-" if r["equal"] is None
                else "yes" if r["equal"] else "NO")
        lines.append(f"| {r['unit']} | {r['metric']} | {_fmt(r['old'])} | {_fmt(r['new'])} | "
                     f"{_fmt(r['diff'], '+.4g')} | {_fmt(r['rel_diff'], '+.2%')} | {same} |")
    return "\n".join(lines)


def format_provenance_pair(old: dict | None, new: dict | None) -> str:
    """A Markdown table of two provenance records side by side; the keys that can change a
    torch-computed figure and differ are marked."""
    if not old and not new:
        return "Provenance: not recorded on either side."
    differ = set(numeric_differences(old, new))
    keys = [k for k in PROVENANCE_ORDER if k in (old or {}) or k in (new or {})]
    keys += sorted(k for k in {*(old or {}), *(new or {})} if k not in keys)

    def cell(p, k):
        if not p:
            return "not recorded"
        v = p.get(k)
        return " ".join(v) if isinstance(v, list) else "?" if v is None else str(v)

    lines = ["| | committed unit | re-run |", "|---|---|---|"]
    for k in keys:
        lines.append(f"| {k}{' **(differs)**' if k in differ else ''} | {cell(old, k)} | "
                     f"{cell(new, k)} |")
    return "\n".join(lines)


def verification_text(name: str, command: str, started: str, units: list[dict],
                      rows: list[dict]) -> str:
    """The Markdown report of a ``--verify`` run: summary, side-by-side figures, provenance."""
    s = comparison_summary(rows)
    worst = s["largest"]
    md = [f"# Verification of committed `{name}` units", "", f"Command: `{command}`  ",
          f"Started: {started}", "",
          f"**{s['verdict']}**: {s['equal']} of {s['figures']} figures equal bit for bit (at "
          "the precision the cache stores)"
          + (f"; largest difference {worst['unit']} {worst['metric']}: {_fmt(worst['old'])} -> "
             f"{_fmt(worst['new'])} ({_fmt(worst['diff'], '+.4g')})" if worst else "") + ".",
          "", format_comparison(rows), ""]
    for u in units:
        md += [f"## {u['key']}", ""]
        if u.get("old_context"):
            md += [f"Committed unit: {u['old_context']}", ""]
        md += [format_provenance_pair(u.get("old_provenance"), u.get("new_provenance")), ""]
    return "\n".join(md)


def write_verification(out: Path, name: str, command: str, started: str, units: list[dict],
                       rows: list[dict]) -> tuple[Path, Path, str]:
    """Write ``<out>/<name>_verify.{json,md}``; returns both paths and the Markdown text."""
    text = verification_text(name, command, started, units, rows)
    doc = {"benchmark": name, "command": command, "started": started,
           "provenance": provenance(), "summary": comparison_summary(rows), "rows": rows,
           "units": units}
    jp = atomic_write_json(Path(out) / f"{name}_verify.json", doc)
    mp = atomic_write_text(Path(out) / f"{name}_verify.md", text + "\n")
    return jp, mp, text


def select_cheapest(candidates: dict[str, float], group_of, per_group: int = 1) -> list[str]:
    """The ``per_group`` cheapest keys of each group: ``candidates`` maps unit keys to their
    estimated cost (seconds), ``group_of(key)`` names the group (arm, mode). Result in the
    order of the groups' first appearance, cheapest first within each."""
    groups: dict[str, list[str]] = {}
    for key in candidates:
        groups.setdefault(group_of(key), []).append(key)
    return [k for keys in groups.values()
            for k in sorted(keys, key=lambda k: candidates[k])[:per_group]]


def verify_folder(out: str | None, name: str) -> Path:
    """The scratch folder of a ``--verify`` run: ``out``, else runs/verify-<name>-<time>. Never
    the committed results folder (its caches must stay as they are)."""
    import time

    path = Path(out) if out else (Path("runs") / f"verify-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.resolve() == RESULTS.resolve() or RESULTS.resolve() in path.resolve().parents:
        raise SystemExit(f"--verify writes into a scratch folder, not {RESULTS}; pass another "
                         "--out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def provenance_census(units) -> str:
    """One sentence for a results file's notes: how many cached units ran on which torch build,
    CPU kernels, CPU and thread count (their recorded provenance), and how many recorded none."""
    counts: dict[str, int] = {}
    for u in units:
        p = u.get("provenance") if isinstance(u, dict) else None
        label = ("without provenance (finished before units recorded it)" if not p else
                 f"torch {p.get('torch')} ({p.get('torch_cpu_capability')} kernels) on "
                 f"{p.get('cpu_model')} [{p.get('cpu_id')}], {p.get('torch_threads')} thread(s)")
        counts[label] = counts.get(label, 0) + 1
    if not counts:
        return ""
    return "Units by provenance: " + "; ".join(
        f"{n} {label}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1])) + "."


def claim_unit(run_root: Path, key: str) -> Path | None:
    """A lock file for one unit, created atomically (O_EXCL) and holding this process's pid, so
    two runners sharing a cache never work on (or resume) the same unit at once. A lock whose
    process is gone is stale and taken over. None: a live runner holds the unit."""
    run_root.mkdir(parents=True, exist_ok=True)
    lock = run_root / (key.replace("|", "-").replace("/", "-") + ".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text = lock.read_text().strip()
                if not text:
                    return None  # just created by another runner, pid not written yet
                os.kill(int(text), 0)  # raises if no such process
                return None
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its runner was killed
                continue
            except PermissionError:  # a live process of another user
                return None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def previous_vision_run(run_root: Path, name: str, config: dict,
                        finished_files: tuple[str, ...] = ("results.json",)) -> Path | None:
    """The newest ``selfsup vision train`` run directory of a unit that a killed benchmark left
    behind: same run name and the same config (torch threads and checkpoint frequency aside),
    with a last checkpoint, or finished with every file of ``finished_files`` (paths relative to
    the run). None when there is none. Resuming it loses at most the work since the last
    checkpoint (10 minutes by default, see trainer.checkpoint_every_minutes)."""
    import json

    import yaml

    from selfsup.config import load_config, to_dict
    from selfsup.errors import ConfigError
    from selfsup.vision.train import VisionTrainConfig

    def key(cfg: dict) -> dict:
        # through the config schema, so a run saved before a key was added compares equal
        cfg = to_dict(load_config(VisionTrainConfig, base=cfg))
        for k in ("threads", "checkpoint_every_minutes", "checkpoint_every_n_steps"):
            cfg.get("trainer", {}).pop(k, None)  # they do not change what a run computes
        return cfg

    found = None
    for path in sorted(Path(run_root).glob(f"{name}-*")):
        try:
            meta = json.loads((path / "run.json").read_text())
            cfg = yaml.safe_load((path / "config.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue  # not a run directory, or one cut off while it was being created
        if meta.get("name") != name or not isinstance(cfg, dict):
            continue
        try:
            if key(cfg) != key(config):
                continue
        except ConfigError:  # a run of an older schema
            continue
        if ((path / "checkpoints" / "last.ckpt").is_file()
                or (meta.get("status") == "finished"
                    and all((path / f).is_file() for f in finished_files))):
            found = path
    return found
