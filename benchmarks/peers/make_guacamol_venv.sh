#!/usr/bin/env bash
# The GuacaMol peer's own virtual environment (issue 24), which
# benchmarks/gegl/guacamol_distribution.py and guacamol_goal_directed.py start as their worker
# (default /work/peers/guacamol-venv; --guacamol-python PATH elsewhere):
#   bash benchmarks/peers/make_guacamol_venv.sh [VENV]
# guacamol 0.5.5 declares rdkit-pypi (gone) and imports fcd at import time, so it goes in with
# --no-deps beside fcd and what it imports; the worker scripts set scipy.histogram themselves.
# torch 2.13.0 is the CPU build (a file on this machine's disk; elsewhere PyPI's CPU wheel via
# --index-url https://download.pytorch.org/whl/cpu).
set -euo pipefail
VENV=${1:-/work/peers/guacamol-venv}
python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q)
"${PIP[@]}" 'torch==2.13.0'
"${PIP[@]}" 'fcd==1.2.*' rdkit numpy scipy joblib tqdm
"${PIP[@]}" --no-deps 'guacamol==0.5.5'
"$VENV/bin/python" - <<'PY'
import numpy, scipy
scipy.histogram = numpy.histogram
import fcd, guacamol, torch
from guacamol.benchmark_suites import goal_directed_benchmark_suite
print("guacamol venv ready: torch", torch.__version__, "fcd", fcd.__version__ if hasattr(fcd, "__version__") else "?",
      len(goal_directed_benchmark_suite("v2")), "v2 goal-directed benchmarks")
PY
