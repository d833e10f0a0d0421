"""Chemistry speed beside the peers (issue 20): whole runs, repeats interleaved.

Graph GA against mol_ga (``ga_part.py``) and Retro* against syntheseus (``retro_part.py``).

Each part runs its arms in their own processes (peers in their own virtual environments) and
returns rows (setting, arm, metric, per-repeat values); this script adds mean and sample std and
writes ``benchmarks/results/chem_speed.{json,md}`` (full mode) or the same two files into
``runs/bench-chem_speed-quick-<time>/`` (``--quick``, minutes). The machine's load average is
recorded before and after each part (``load`` in the JSON). A run of some parts keeps the rows,
description, command and load of the other parts from the results file it writes over (each
row names its ``part``), so the parts can be run one at a time.

    python benchmarks/chem_speed/run.py                      # both parts, 3 repeats
    python benchmarks/chem_speed/run.py --parts ga           # graph GA only
    python benchmarks/chem_speed/run.py --quick
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import RESULTS, load_json, now, row, write_results  # noqa: E402

NAME = "chem_speed"
PARTS = {"ga": "ga_part", "retro": "retro_part"}


def _load(part: str):
    try:
        return importlib.import_module(PARTS[part])
    except ModuleNotFoundError as exc:
        if exc.name == PARTS[part]:
            raise SystemExit(f"part {part!r}: {PARTS[part]}.py is missing in {HERE}; run the "
                             "other parts with --parts") from exc
        raise


def _part_of(r: dict) -> str:
    return r.get("part") or ("ga" if r["setting"].startswith("graph-ga") else "retro")


def _previous(folder: Path) -> tuple[list[dict], dict]:
    """Rows (each with its ``part``) and per-part runs of the results file in ``folder``. A
    file written before the parts were recorded separately gets its part runs from its own
    fields, and their description from its Markdown notes."""
    old = load_json(folder / f"{NAME}.json")
    rows = [dict(r, part=_part_of(r)) for r in old.get("rows", [])]
    if "part_runs" in old or not rows:
        return rows, old.get("part_runs", {})
    md = folder / f"{NAME}.md"
    text = md.read_text() if md.is_file() else ""
    body = text.split("\n| setting |")[0].split("\n\n", 1)[-1].strip()
    body = "\n\n".join(b for b in body.split("\n\n")
                        if not b.startswith(("Load average", "Command:")))
    load = old.get("load", {})
    runs = {part: {"command": old.get("command", "?"), "started": old.get("started", "?"),
                   "minutes": round(old.get("wall_seconds", 0) / 60, 1),
                   "repeats": old.get("repeats"),
                   "load_before": load.get(f"{part}_before", []),
                   "load_after": load.get(f"{part}_after", []), "description": body}
            for part in old.get("parts", sorted({r["part"] for r in rows}))}
    return rows, runs


def parser(modules: dict) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--quick", action="store_true", help="minutes: smaller runs, 2 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 2)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch / OpenMP threads of every process (default 1)")
    ap.add_argument("--out", default=None, help="output folder (default: see the docstring)")
    for module in modules.values():
        module.add_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    chosen = pre.parse_known_args(argv)[0].parts
    modules = {p: _load(p) for p in chosen}
    args = parser(modules).parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    mode = "quick" if args.quick else "full"
    repeats = args.repeats or (2 if args.quick else 3)
    if args.out:
        out_dir, work = Path(args.out), Path(args.out)
    elif args.quick:
        out_dir = work = (HERE.parents[1] / "runs"
                          / f"bench-{NAME}-quick-{time.strftime('%Y%m%d-%H%M%S')}")
    else:
        out_dir, work = None, HERE.parents[1] / "runs" / f"bench-{NAME}-full"
    work.mkdir(parents=True, exist_ok=True)
    started, t0 = now(), time.perf_counter()
    command = ("python benchmarks/chem_speed/run.py " + " ".join(argv)).strip()
    rows, parts = [], {}
    for part, module in modules.items():
        before, part_started, p0 = os.getloadavg(), now(), time.perf_counter()
        for r in module.measure(args.quick, repeats, args, work):
            full = row(r["setting"], r["arm"], r["metric"], r["seeds"])
            full.update({k: v for k, v in r.items() if k not in full})
            full["part"] = part
            rows.append(full)
        parts[part] = {"command": command, "started": part_started,
                       "minutes": round((time.perf_counter() - p0) / 60, 1), "repeats": repeats,
                       "load_before": before, "load_after": os.getloadavg(),
                       "description": module.describe(args)}
    # the other parts' figures stay in the file this run writes over (read now: a part may have
    # been run beside this one)
    kept, old_parts = _previous(out_dir or RESULTS)
    kept = [r for r in kept if r["part"] not in chosen]
    parts = {**{k: v for k, v in old_parts.items() if k not in chosen}, **parts}
    notes = []
    for part in PARTS:
        if part in parts:
            info = parts[part]
            notes += [info["description"], (
                f"Part `{part}`: `{info['command']}`, started {info['started']}, "
                f"{info['minutes']} min; load average (1, 5, 15 min) before "
                f"{', '.join(f'{x:.2f}' for x in info['load_before'])}, after "
                f"{', '.join(f'{x:.2f}' for x in info['load_after'])}.")]
    order = {p: i for i, p in enumerate(PARTS)}
    rows = sorted(kept + rows, key=lambda r: order.get(r.get("part"), len(order)))
    jp, mp = write_results(NAME, mode, command, started, time.perf_counter() - t0, rows,
                           out_dir, "\n\n".join(notes),
                           {"parts": sorted(parts, key=order.get), "part_runs": parts,
                            "work_folder": str(work)})
    for r in rows:
        if r.get("part") in chosen and r["metric"] in (
                "ratio_to_peer", "wall_seconds", "top10_mean", "iterations_per_s"):
            print(f"{r['setting']:32s} {r['arm']:10s} {r['metric']:16s} {r['mean']:.4g} "
                  f"(per repeat {', '.join(f'{v:.4g}' for v in r['seeds'])})")
    print(f"wrote {jp} and {mp}" + ("" if out_dir is not None else f" (runs in {work})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
