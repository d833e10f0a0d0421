"""Shared helpers of the benchmark scripts: the one results format (JSON + Markdown)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from selfsup.io import atomic_write_json, atomic_write_text  # noqa: E402

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
    vals = [float(v) for v in values]
    return {
        "setting": setting, "arm": arm, "metric": metric,
        "mean": statistics.fmean(vals) if vals else float("nan"),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "seeds": vals,
    }


def write_results(name: str, mode: str, command: str, started: str, wall: float,
                  rows: list[dict], out_dir: Path | None, notes: str = "",
                  extra: dict | None = None) -> tuple[Path, Path]:
    """Write <name>.json and <name>.md (full mode: benchmarks/results/; quick: out_dir)."""
    target = RESULTS if (mode == "full" and out_dir is None) else Path(out_dir or ".")
    doc = {"benchmark": name, "mode": mode, "command": command, "machine": machine(),
           "started": started, "wall_seconds": round(wall, 1), "rows": rows}
    if extra:
        doc.update(extra)
    jp = atomic_write_json(target / f"{name}.json", doc)
    md = [f"# Benchmark `{name}` ({mode} mode)", "",
          f"Command: `{command}`  ", f"Machine: {doc['machine']}  ",
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
