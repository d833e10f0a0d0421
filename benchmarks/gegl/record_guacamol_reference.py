"""Record GuacaMol's own scores of a fixed molecule list, for tests/test_chem_objectives.py.

Runs in a separate virtual environment that holds the real GuacaMol package (never in the
selfsup environment):

    python3 -m venv /work/peers/guacamol-venv
    /work/peers/guacamol-venv/bin/pip install --no-deps guacamol==0.5.5
    /work/peers/guacamol-venv/bin/pip install rdkit numpy scipy joblib tqdm
    /work/peers/guacamol-venv/bin/python benchmarks/gegl/record_guacamol_reference.py

GuacaMol 0.5.5 imports two things this environment lacks at import time:
* ``from scipy import histogram`` (removed from SciPy): we set ``scipy.histogram =
  numpy.histogram`` first;
* ``import fcd`` (Frechet ChemNet distance, a torch model only the distribution-learning
  benchmarks use): if it is not installed we register an empty placeholder module, which the
  goal-directed scoring functions never touch.

It prints a Python literal: for every task of ``goal_directed_suite_v2()`` plus GuacaMol's
``isomers_c7h8n2o2()`` and ``qed_benchmark()`` (the two PMO extras), the benchmark name, its
top-k counts and the score of each molecule of ``MOLECULES`` rounded to 6 decimals, together
with the RDKit version used. Paste it into the test file.
"""

from __future__ import annotations

import json
import sys
import types

MOLECULES = [
    "CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F",  # celecoxib
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",  # caffeine
    "CCCCC(=O)N(Cc1ccc(-c2ccccc2-c2nn[nH]n2)cc1)[C@@H](C(C)C)C(=O)O",  # valsartan
    "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1S(=O)(=O)C(C)(C)C",  # deco/scaffold-hop start
    "CCCCCCCCC(C)C",  # 2-methyldecane, a C11H24 isomer
    "COc1ccc2[C@H]3CC[C@@]4(C)[C@@H](CC[C@@]4(O)C#C)[C@@H]3CCc2c1",  # mestranol
    "CCN(C(C)=O)c1cccc(-c2ccnc3c(C#N)cnn23)c1",  # zaleplon
    "O=C(O)c1ccc([N+](=O)[O-])cc1N",  # 2-amino-4-nitrobenzoic acid, near C7H8N2O2
    "CC(N)CN(C=O)Cc1ccc(-c2ccc(n3cncn3)cc2)cc1",  # has the Valsartan SMARTS
    "C1CC(",  # invalid
]


def main() -> None:
    import numpy
    import scipy

    scipy.histogram = numpy.histogram
    try:
        import fcd  # noqa: F401
    except ImportError:
        sys.modules["fcd"] = types.ModuleType("fcd")

    import rdkit
    from guacamol.benchmark_suites import goal_directed_suite_v2
    from guacamol.standard_benchmarks import isomers_c7h8n2o2, qed_benchmark
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    benchmarks = goal_directed_suite_v2() + [isomers_c7h8n2o2(), qed_benchmark()]
    out = {"rdkit": rdkit.__version__, "molecules": MOLECULES, "tasks": []}
    for b in benchmarks:
        scores = b.objective.score_list(MOLECULES)
        out["tasks"].append({
            "name": b.name,
            "top_counts": list(b.contribution_specification.top_counts),
            "scores": [round(float(s), 6) for s in scores],
        })
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
