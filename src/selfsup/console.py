"""What the command line prints that several command groups share."""

from __future__ import annotations


def print_results(con, path, res: dict) -> None:
    """A table of the scalar results of a run, then where the run and its report are."""
    from rich.table import Table

    t = Table(title=f"results of {path}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in res.items():
        if isinstance(v, (dict, list)):
            continue
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    con.print(t)
    con.print(f"run directory: {path}  (HTML report: selfsup report {path})")
