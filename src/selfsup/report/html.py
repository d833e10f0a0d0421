"""``selfsup report RUN``: one self-contained HTML page per run.

The page holds the run's status, results table, metric curves (PNG, embedded as base64),
every picture the run wrote under ``artefacts/`` (molecule grids, route trees, ...), the head of
every CSV table there, the resolved config and the environment. No external files or scripts.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_text, read_json_file, read_text_file
from ..runs import Run

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f4f4f4} pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.85em}
img{max-width:100%} .muted{color:#777}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return _esc(json.dumps(v))
    return _esc(v)


def _table(rows: list[dict[str, Any]], max_rows: int = 50) -> str:
    if not rows:
        return "<p class=muted>(empty)</p>"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
        for r in rows[:max_rows]
    )
    more = f"<p class=muted>{len(rows) - max_rows} more rows</p>" if len(rows) > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _kv_table(d: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in d.items())
    return f"<table>{body}</table>"


def _png_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def metric_curves_png(rows: list[dict[str, Any]]) -> bytes | None:
    """Plot every numeric metric against ``step``, one panel per metric prefix group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if "step" not in r:
            continue
        for k, v in r.items():
            if k in ("step", "epoch") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            series.setdefault(k, []).append((float(r["step"]), float(v)))
    if not series:
        return None
    names = sorted(series)
    n = len(names)
    cols = min(3, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs, ys = zip(*series[name])
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _read_csv(path: Path, limit: int = 50) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        rows = []
        for i, r in enumerate(csv.DictReader(fh)):
            if i >= limit:
                break
            rows.append(dict(r))
    return rows


def write_report(run_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Render the run at ``run_path`` to HTML; returns the written file."""
    run = Run.open(run_path)
    meta = run.meta
    parts = [f"<h1>selfsup run: {_esc(run.path.name)}</h1>"]
    parts.append(_kv_table({k: meta.get(k) for k in
                            ("name", "status", "seed", "started", "finished_at", "wall_seconds",
                             "resumed") if k in meta}))
    parts.append(f"<p class=muted>command: <code>{_esc(' '.join(meta.get('command', [])))}"
                 "</code></p>")
    results = run.read_results()
    if results:
        flat = {k: v for k, v in results.items() if not isinstance(v, (dict, list))}
        nested = {k: v for k, v in results.items() if isinstance(v, (dict, list))}
        parts.append("<h2>Results</h2>" + _kv_table(flat))
        for k, v in nested.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                parts.append(f"<h3>{_esc(k)}</h3>" + _table(v))
            else:
                parts.append(f"<h3>{_esc(k)}</h3><pre>{_esc(json.dumps(v, indent=1))}</pre>")
    evals = sorted(p.name for p in run.path.glob("eval_*.json"))
    for extra in ("eval.json", *evals, "data.json"):
        p = run.path / extra
        if p.is_file():
            obj = read_json_file(p, f"the run's {extra}", "Run the command that writes it again "
                                 "(e.g. `selfsup vision eval RUN`), or delete it.")
            parts.append(f"<h2>{_esc(extra)}</h2>" + _kv_table(obj))
    rows = run.read_metrics()
    if rows:
        png = metric_curves_png(rows)
        if png:
            parts.append("<h2>Metric curves</h2>" + _png_tag(png, "metric curves"))
    art = run.path / "artefacts"
    if art.is_dir():
        for img in sorted(art.glob("*.png")):
            parts.append(f"<h2>{_esc(img.stem)}</h2>" + _png_tag(img.read_bytes(), img.stem))
        for tab in sorted(art.glob("*.csv")):
            parts.append(f"<h2>{_esc(tab.name)} (first rows)</h2>" + _table(_read_csv(tab)))
    config = read_text_file(run.path / "config.yaml", "the run's config",
                            "Restore it from a copy of the run.")
    parts.append("<h2>Config</h2><pre>" + _esc(config) + "</pre>")
    envp = run.path / "env.json"
    if envp.is_file():
        env_text = envp.read_text(errors="replace")
        parts.append("<h2>Environment</h2><pre>" + _esc(env_text) + "</pre>")
    page = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{_esc(run.path.name)}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts) + "</body></html>"
    )
    return atomic_write_text(Path(out) if out else run.path / "report.html", page)
