"""``selfsup bench``: find and run the benchmark scripts of a source checkout.

Benchmarks live in ``benchmarks/<name>/run.py`` of the repository (not in the installed
package); a folder's ``speed.py`` is the benchmark ``<name>_speed``, and any other script of a
folder that is a command with a ``--quick`` mode is the benchmark ``<folder>/<script stem>``
(``gegl/guacamol_goal_directed``, ``retro/run_v2``, ...). Each writes
``benchmarks/results/<name>.json`` + ``.md`` in full mode and the same format into its run
directory in ``--quick`` mode (see benchmarks/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .errors import InputError


def benchmarks_dir() -> Path:
    """$SELFSUP_BENCHMARKS, else ./benchmarks, else the checkout this package was installed from."""
    env = os.environ.get("SELFSUP_BENCHMARKS")
    if env:
        return Path(env)
    here = Path.cwd() / "benchmarks"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "benchmarks"


def list_benchmarks() -> list[tuple[str, str]]:
    d = benchmarks_dir()
    out = []
    if d.is_dir():
        scripts = [(s.parent.name, s) for s in d.glob("*/run.py")]
        # a folder's speed script is the benchmark <folder>_speed (augself_speed, ...)
        scripts += [(f"{s.parent.name}_speed", s) for s in d.glob("*/speed.py")]
        scripts += [(f"{s.parent.name}/{s.stem}", s) for s in d.glob("*/*.py")
                    if s.stem not in ("run", "speed") and _is_quick_command(s)]
        for name, script in sorted(scripts):
            doc = script.read_text().split('"""')
            first = doc[1].strip().splitlines()[0] if len(doc) > 2 else ""
            out.append((name, first))
    return out


def _is_quick_command(script: Path) -> bool:
    """A script run as a command (``__main__``) that offers ``--quick``; helpers and workers
    that other scripts start are not benchmarks of their own."""
    text = script.read_text()
    return "__main__" in text and '"--quick"' in text


def _script(d: Path, name: str) -> Path:
    """``<d>/<name>/run.py``; for ``<folder>_speed`` without such a folder,
    ``<d>/<folder>/speed.py``; for ``<folder>/<stem>``, ``<d>/<folder>/<stem>.py``."""
    if "/" in name:
        folder, _, stem = name.partition("/")
        return d / folder / f"{stem}.py"
    script = d / name / "run.py"
    if not script.is_file() and name.endswith("_speed"):
        speed = d / name[: -len("_speed")] / "speed.py"
        if speed.is_file():
            return speed
    return script


def run_benchmark(name: str, quick: bool = False, extra: list[str] | None = None) -> int:
    d = benchmarks_dir()
    script = _script(d, name)
    if not script.is_file():
        names = ", ".join(n for n, _ in list_benchmarks()) or "none found"
        raise InputError(
            f"No benchmark '{name}' under {d} (available: {names}). Run from a source checkout "
            "or set SELFSUP_BENCHMARKS to its benchmarks/ folder."
        )
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else []) + list(extra or [])
    return subprocess.call(cmd)
