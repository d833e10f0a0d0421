"""False positives and hit rates of the general stock ``molbloom:zinc-instock-mini`` (issue 23).

    python benchmarks/retro/stock_fpr.py          # full: benchmarks/results/retro_stock_fpr.*
    python benchmarks/retro/stock_fpr.py --quick  # small: runs/bench-retro_stock_fpr-quick-*


The stock is :class:`selfsup.chem.retro.core.stock.BloomStock` over the ZINC20 in-stock Bloom
filter that the molbloom wheel ships (``zinc-instock-mini``; "FPR of 0.07" by molbloom's own
description), with molbloom's list of common reagents, exactly as ``stock:
molbloom:zinc-instock-mini`` plans with it. A Bloom filter answers "no" for sure and "yes" with
false positives, so the script measures the share of molecules that *cannot* be purchasable that
it calls in stock (``false_positive_share``), on three sets:

- ``isotope_labelled``: USPTO-50k leaves (reactants never produced) with one atom (atomic number
  < 60) given mass number 200, an isotope that does not exist: certain negatives that look like
  real building blocks to everything but the isotope label;
- ``odd_chains``: enumerated unbranched chains ``C{n}XC{m}`` (n 40..79 carbons, X one of 25
  groups, m 0..1): certain negatives (nothing that long is a stocked building block);
- ``ga_mutants``: USPTO-50k leaves (>= 8 heavy atoms) after three successive graph-GA
  mutations (``selfsup.chem.genetic.operators.mutate``), kept when the result is no USPTO-50k
  molecule: *probably* not purchasable, so their share is an upper bound of the false-positive
  rate (a mutant that happens to be a real ZINC in-stock molecule counts as a false positive).

and its hit rate (``hit_share``, true and false positives together) on USPTO-50k molecules:
``uspto50k_leaves`` (every reactant never produced: the project's default stock),
``route_leaves_test`` (distinct leaves of the known routes of the held-out targets, all lengths),
``route_leaves_test_multistep`` (the same for targets of >= 2 steps) and ``uspto50k_products``.
``est_true_share = (hit - fpr) / (1 - fpr)`` with the isotope set's rate gives the share of a set
that is really in the filter's catalogue (molecules whose canonical SMILES differs between the
RDKit that built the filter and ours are missed by it: counted as not in stock).

Random sets are drawn with seeds 0, 1, 2 (one row value per seed); the fixed sets have one value.
Every row also gives ``n`` (molecules) and the Wilson 95 % interval of a single seed's share
(``ci95_low``/``ci95_high``, of the pooled seeds where there are several).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import now, row, write_results  # noqa: E402

STOCK = "molbloom:zinc-instock-mini"
SETTING = "zinc-instock-mini"
ARM = "molbloom"
ODD_GROUPS = ["F", "Cl", "Br", "I", "O", "N", "S", "C(=O)O", "C#N", "[Si](C)(C)", "P", "OC(=O)",
              "C(F)(F)F", "N(C)C", "S(=O)(=O)", "C=C", "C#C", "B(O)O", "[Se]", "[Ge]", "OO",
              "N=[N+]=[N-]", "[N+](=O)[O-]", "C(=O)N", "OS(=O)(=O)O"]


def settings(quick: bool) -> dict:
    if quick:
        return {"n_isotope": 300, "n_ga": 200, "n_odd_lengths": 8, "seeds": [0]}
    return {"n_isotope": 3000, "n_ga": 2000, "n_odd_lengths": 40, "seeds": [0, 1, 2]}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def isotope_labelled(leaves: list[str], n: int, seed: int) -> list[str]:
    """``n`` leaves, each with one atom (Z < 60) given the impossible mass number 200."""
    from rdkit import Chem, rdBase

    rng = random.Random(seed)
    out: list[str] = []
    pool = list(leaves)
    rng.shuffle(pool)
    with rdBase.BlockLogs():
        for smi in pool:
            if len(out) >= n:
                break
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                continue
            atoms = [a for a in mol.GetAtoms() if a.GetAtomicNum() < 60]
            if not atoms:
                continue
            rng.choice(atoms).SetIsotope(200)
            out.append(Chem.MolToSmiles(mol))
    return out


def odd_chains(n_lengths: int) -> list[str]:
    """``C{n}XC{m}`` for n in 40..40+n_lengths-1, X in ODD_GROUPS, m in 0, 1 (valid ones)."""
    from rdkit import Chem, rdBase

    out = []
    with rdBase.BlockLogs():
        for n in range(40, 40 + n_lengths):
            for g in ODD_GROUPS:
                for m in (0, 1):
                    mol = Chem.MolFromSmiles("C" * n + g + "C" * m)
                    if mol is not None:  # a terminal group (F, Cl, ...) inside a chain is not
                        out.append(Chem.MolToSmiles(mol))
    return sorted(set(out))


def ga_mutants(leaves: list[str], known: set[str], n: int, seed: int) -> tuple[list[str], int]:
    """``n`` distinct 3-fold graph-GA mutants of leaves with >= 8 heavy atoms that are no
    USPTO-50k molecule; also the number of mutation chains that were dropped."""
    import numpy as np
    from rdkit import Chem, rdBase

    from selfsup.chem.genetic.operators import mutate

    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    with rdBase.BlockLogs():
        pool = [s for s in leaves if (m := Chem.MolFromSmiles(s)) is not None
                and m.GetNumHeavyAtoms() >= 8]
    pick.shuffle(pool)
    out: dict[str, None] = {}
    dropped = 0
    for smi in pool:
        if len(out) >= n:
            break
        child = smi
        for _ in range(3):
            child = mutate(child, rng, max_heavy_atoms=60).smiles
        if child in known or child in out or child == Chem.CanonSmiles(smi, useChiral=0):
            dropped += 1
            continue
        out[child] = None
    return list(out), dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="output folder (quick default: runs/...)")
    ap.add_argument("--data-root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--cache-dir", default=None, help="prepared USPTO-50k arrays")
    args = ap.parse_args(argv)
    started, t0 = now(), time.perf_counter()
    st = settings(args.quick)
    mode = "quick" if args.quick else "full"
    out_dir = Path(args.out) if args.out else None
    if args.quick and out_dir is None:
        out_dir = Path(__file__).resolve().parents[2] / "runs" / (
            f"bench-retro_stock_fpr-quick-{time.strftime('%Y%m%d-%H%M%S')}")

    from selfsup.chem.retro.workflows.plan import make_stock
    from selfsup.chem.retro.workflows.route_benchmark import (
        build_route_benchmark,
        default_stock,
        load_uspto_reactions,
    )

    stock = make_stock(STOCK)
    reactions = load_uspto_reactions(args.data_root, args.cache_dir)
    products = sorted({r.product for r in reactions})
    produced = set(products)
    leaves = sorted({m for r in reactions for m in r.reactants} - produced)
    known = produced | set(leaves)
    print(f"{len(reactions)} USPTO-50k reactions: {len(leaves)} leaves, {len(products)} "
          f"products; stock {stock.describe()}", flush=True)
    bench = build_route_benchmark(reactions, stock=default_stock(reactions))
    test = bench.targets["test"]
    route_leaves = sorted({leaf for t in test for leaf in t.route.leaves()})
    route_leaves_multi = sorted({leaf for t in test if t.length >= 2
                                 for leaf in t.route.leaves()})

    rows: list[dict] = []
    extra: dict[str, dict] = {}

    def measure(name: str, sets: list[list[str]], metric: str) -> float:
        ks = [sum(s in stock for s in mols) for mols in sets]
        ns = [len(mols) for mols in sets]
        shares = [k / n if n else math.nan for k, n in zip(ks, ns)]
        lo, hi = wilson(sum(ks), sum(ns))
        setting = f"{SETTING}/{name}"
        rows.append(row(setting, ARM, metric, shares))
        rows.append(row(setting, ARM, "n", [float(n) for n in ns]))
        rows.append(row(setting, ARM, "ci95_low", [lo]))
        rows.append(row(setting, ARM, "ci95_high", [hi]))
        extra[name] = {"metric": metric, "hits": ks, "n": ns, "shares": shares,
                       "pooled_share": sum(ks) / sum(ns) if sum(ns) else math.nan,
                       "ci95": [lo, hi], "examples": sets[0][:5]}
        print(f"{name}: {metric} {shares} (n {ns}; pooled 95% CI {lo:.4f}-{hi:.4f})", flush=True)
        return sum(ks) / sum(ns) if sum(ns) else math.nan

    iso = [isotope_labelled(leaves, st["n_isotope"], s) for s in st["seeds"]]
    fpr = measure("isotope_labelled", iso, "false_positive_share")
    measure("odd_chains", [odd_chains(st["n_odd_lengths"])], "false_positive_share")
    ga, dropped = [], []
    for s in st["seeds"]:
        mols, d = ga_mutants(leaves, known, st["n_ga"], s)
        ga.append(mols)
        dropped.append(d)
    measure("ga_mutants", ga, "false_positive_share")
    extra["ga_mutants"]["dropped_chains"] = dropped
    for name, mols in (("uspto50k_leaves", leaves), ("route_leaves_test", route_leaves),
                       ("route_leaves_test_multistep", route_leaves_multi),
                       ("uspto50k_products", products)):
        hit = measure(name, [mols], "hit_share")
        est = (hit - fpr) / (1 - fpr) if fpr < 1 else math.nan
        rows.append(row(f"{SETTING}/{name}", ARM, "est_true_share", [est]))
        extra[name]["est_true_share"] = est

    d = stock.describe()
    notes = "\n".join([
        f"Stock `{STOCK}`: {d['source']} (+ {d['common_reagents']} common reagents, as molbloom's "
        "`buy()`), looked up by RDKit canonical isomeric Kekulé SMILES "
        "(`selfsup.chem.retro.core.stock.BloomStock`).",
        "",
        "`false_positive_share`: share of molecules that cannot be (isotope_labelled, "
        "odd_chains) or are probably not (ga_mutants: an upper bound) purchasable that the "
        "filter calls in stock. `hit_share`: share of USPTO-50k molecules it calls in stock "
        "(true and false positives). `est_true_share` = (hit - fpr) / (1 - fpr) with the "
        "pooled isotope_labelled rate. `n`: molecules per seed; `ci95_low/high`: Wilson 95 % "
        "interval of the pooled share. See the script's docstring for how each set is made.",
    ])
    cmd = "python benchmarks/retro/stock_fpr.py" + (" --quick" if args.quick else "")
    jp, mp = write_results("retro_stock_fpr", mode, cmd, started, time.perf_counter() - t0,
                           rows, out_dir, notes=notes,
                           extra={"stock": d, "sets": extra, "settings": st})
    print(f"wrote {jp} and {mp}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
