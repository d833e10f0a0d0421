"""GuacaMol's distribution-learning benchmarks on a pretrained SMILES LSTM prior (issue 24).

Our side (this repository's ``.venv``) loads a prior (the ``model.pt`` of ``selfsup chem
pretrain``) and samples SMILES with our sampler (:meth:`SmilesLSTM.sample`, seeded, temperature
1); the samples go as a JSON file to this same script run by the interpreter of the GuacaMol venv
(``--worker``, default ``/work/peers/guacamol-venv/bin/python``; recipe in
``benchmarks/peers/make_guacamol_venv.sh``), which scores them with GuacaMol 0.5.5's own
distribution-learning suite
(``guacamol.benchmark_suites.distribution_learning_benchmark_suite(..., "v2", n)``: Validity,
Uniqueness, Novelty, KL divergence, Fréchet ChemNet Distance) through a
``DistributionMatchingGenerator`` that hands out the sampled SMILES in order. Every benchmark
reads the file from its start (a benchmark that asks for more than the file holds gets fewer and
is flagged ``exhausted``): the same stream of samples, as a seeded model restarted per benchmark
would give. The script samples enough for GuacaMol's own sampling loops (at least twice
``--n-samples`` and ``1.05 x --n-samples`` valid ones; at most ten times ``--n-samples``).

Training set: GuacaMol's, ChEMBL 24, cannot be reached from this machine, so the suite is given
ZINC250k (``selfsup.data.fetch("zinc250k")``, all 249,456 SMILES) as its training file: novelty
is against ZINC250k (GuacaMol compares canonical SMILES without stereo), and the KL-divergence
and FCD reference distributions are GuacaMol's seeded subsets of ZINC250k of ``--n-samples``
molecules (``get_random_subset(..., seed=42)``). ``fcd`` is GuacaMol's FCD score
``exp(-0.2 * FCD)``; the raw FCD is kept in the JSON.

Two adaptations of GuacaMol 0.5.5 to current packages, both in the worker, none in
site-packages: ``scipy.histogram = numpy.histogram`` before importing guacamol (SciPy removed
the alias), and the FCD benchmark is told the ChemNet file that ``fcd`` 1.2 ships
(``ChemNet_v0.13_pretrained.pt``; GuacaMol names the Keras ``.h5`` of fcd 1.0).

Results: setting ``prior/<name>``, arm ``smiles_lstm``, metrics ``validity``, ``uniqueness``,
``novelty``, ``kl_divergence``, ``fcd`` in ``benchmarks/results/gegl_guacamol.{json,md}``
(``--out DIR``: there instead), merged into what the file already holds (rows of other settings
and arms stay). The Markdown notes are the sections kept under ``notes_sections`` in the JSON;
this script rewrites only its own (``distribution-learning``).

    python benchmarks/gegl/guacamol_distribution.py --prior benchmarks/results/gegl_prior/model.pt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
NAME = "gegl_guacamol"
ARM = "smiles_lstm"
SECTION = "distribution-learning"
DEFAULT_PEER = "/work/peers/guacamol-venv/bin/python"
# GuacaMol's benchmark names -> the metric names
METRICS = {"Validity": "validity", "Uniqueness": "uniqueness", "Novelty": "novelty",
           "KL divergence": "kl_divergence", "Frechet ChemNet Distance": "fcd"}
# GuacaMol's SMILES LSTM (Brown et al., J. Chem. Inf. Model. 2019, Table 1), trained on ChEMBL
ANCHOR = {"validity": 0.959, "uniqueness": 1.000, "novelty": 0.912, "kl_divergence": 0.991,
          "fcd": 0.913}
CHEMNET_FILE = "ChemNet_v0.13_pretrained.pt"


# ============================================================== worker (the GuacaMol venv)
def worker() -> int:
    """Read the job (JSON on stdin), run GuacaMol's suite on the samples, write the scores to
    ``job["out"]``. Imports only the standard library, numpy, scipy and guacamol."""
    job = json.loads(sys.stdin.read())
    import numpy
    import scipy

    if not hasattr(scipy, "histogram"):
        scipy.histogram = numpy.histogram  # GuacaMol 0.5.5 imports it; SciPy >= 1.12 lacks it
    import fcd
    import guacamol
    import torch
    from guacamol.benchmark_suites import distribution_learning_benchmark_suite
    from guacamol.distribution_matching_generator import DistributionMatchingGenerator
    from guacamol.frechet_benchmark import FrechetBenchmark

    torch.set_num_threads(int(job.get("threads", 1)))
    samples = json.loads(Path(job["samples"]).read_text())

    class SampleFile(DistributionMatchingGenerator):
        """Hands out ``samples`` in order; :meth:`restart` goes back to the first."""

        def __init__(self) -> None:
            self.pos, self.asked = 0, 0

        def restart(self) -> None:
            self.pos, self.asked = 0, 0

        def generate(self, number_samples: int) -> list[str]:
            out = samples[self.pos : self.pos + number_samples]
            self.pos += len(out)
            self.asked += number_samples
            return out

    t0 = time.perf_counter()
    suite = distribution_learning_benchmark_suite(
        chembl_file_path=job["training_set"], version_name="v2",
        number_samples=int(job["number_samples"]))
    setup_s = time.perf_counter() - t0
    gen = SampleFile()
    results = []
    for bench in suite:
        if isinstance(bench, FrechetBenchmark):
            bench.chemnet_model_filename = CHEMNET_FILE
        gen.restart()
        t = time.perf_counter()
        res = bench.assess_model(gen)
        results.append({"benchmark": res.benchmark_name, "score": float(res.score),
                        "metadata": res.metadata, "samples_read": gen.pos,
                        "samples_asked": gen.asked, "exhausted": gen.asked > gen.pos,
                        "seconds": round(time.perf_counter() - t, 2)})
    doc = {"results": results, "setup_seconds": round(setup_s, 2),
           "versions": {"guacamol": guacamol.__version__ if hasattr(guacamol, "__version__")
                        else _dist_version("guacamol"), "fcd": _dist_version("fcd"),
                        "torch": torch.__version__, "numpy": numpy.__version__,
                        "scipy": scipy.__version__, "rdkit": _dist_version("rdkit"),
                        "python": sys.version.split()[0]},
           "chemnet_file": CHEMNET_FILE, "fcd_module": getattr(fcd, "__file__", None)}
    Path(job["out"]).write_text(json.dumps(doc, default=_plain, indent=1))
    return 0


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _plain(v):
    """JSON for numpy scalars and arrays in GuacaMol's metadata."""
    return v.tolist() if hasattr(v, "tolist") else str(v)


# ============================================================== our side (this repository)
def sample_pool(prior: Path, n: int, seed: int, temperature: float, max_len: int,
                batch_size: int) -> tuple[list[str], dict]:
    """Sample the prior in batches of ``batch_size`` until the pool holds at least ``2 n``
    samples and ``1.05 n`` valid ones (RDKit parses them), or ``10 n`` samples. Returns the raw
    samples (invalid ones and empty strings included, in order) and counts."""
    import torch

    from selfsup.chem.lstm import SmilesLSTM
    from selfsup.chem.molecules import canonical_smiles

    model, vocab = SmilesLSTM.load(prior)
    g = torch.Generator().manual_seed(seed)
    pool: list[str] = []
    n_valid = 0
    t0 = time.perf_counter()
    while len(pool) < 10 * n and (len(pool) < 2 * n or n_valid < math.ceil(1.05 * n)):
        part = model.sample(batch_size, vocab, max_len=max_len, temperature=temperature,
                            generator=g)
        n_valid += sum(1 for s in part if s and canonical_smiles(s) is not None)
        pool += part
    return pool, {"n_sampled": len(pool), "n_valid": n_valid,
                  "sampling_seconds": round(time.perf_counter() - t0, 2),
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "model": {k: getattr(model.config, k) for k in
                            ("embed_dim", "hidden_dim", "n_layers", "vocab_size")}}


def run_guacamol(python: str, samples: Path, training_set: Path, n: int, out: Path,
                 threads: int) -> dict:
    """This script's ``--worker`` under ``python`` (the GuacaMol venv); its scores."""
    job = {"samples": str(samples), "training_set": str(training_set), "number_samples": n,
           "out": str(out), "threads": threads}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run([python, str(HERE), "--worker"], input=json.dumps(job), text=True,
                          capture_output=True, env=env, cwd=str(out.parent))
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"the GuacaMol worker ({python}) failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def notes_text(entries: dict) -> str:
    """The Markdown of the distribution-learning section: one table of every prior scored,
    beside GuacaMol's SMILES LSTM, then what each figure is measured against."""
    cols = list(ANCHOR)
    lines = ["## Distribution learning (GuacaMol's own benchmarks)", "",
             "| prior | samples | " + " | ".join(cols) + " | raw FCD |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for name, e in sorted(entries.items()):
        s = e["scores"]
        lines.append(f"| {name} ({e['size']}) | {e['number_samples']:,} | "
                     + " | ".join(f"{s[c]:.3f}" for c in cols) + f" | {e['fcd_raw']:.2f} |")
    lines.append("| GuacaMol's SMILES LSTM (paper, ChEMBL) | 10,000 | "
                 + " | ".join(f"{ANCHOR[c]:.3f}" for c in cols) + " | - |")
    lines += ["", "Scored by guacamol 0.5.5 itself (its `distribution_learning_benchmark_suite`, "
              "v2) in its own venv, on samples of our sampler (temperature 1, seeded). "
              "GuacaMol's training set (ChEMBL) is not reachable here: its place is taken by "
              "ZINC250k (249,456 SMILES), so `novelty` is against all of ZINC250k (a superset of "
              "a ZINC-trained prior's training molecules) and the `kl_divergence` and `fcd` "
              "reference sets are GuacaMol's seeded subsets of ZINC250k (as many molecules as "
              "`samples`, seed 42); the anchor row is against "
              "ChEMBL, so those three columns compare models trained and referenced on different "
              "corpora. `fcd` = exp(-0.2 x raw FCD). Every benchmark reads the sample file from "
              "its start."]
    for name, e in sorted(entries.items()):
        lines.append(f"- {name}: `{e['command']}` ({e['started']}; prior {e['prior']}, "
                     f"{e['n_sampled']:,} samples drawn, {e['n_valid']:,} valid; training "
                     f"set {e['training_set']}; "
                     f"benchmarks that ran out of samples: {e['exhausted'] or 'none'}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prior", default=str(ROOT / "benchmarks/results/gegl_prior/model.pt"),
                    help="model.pt of `selfsup chem pretrain`")
    ap.add_argument("--name", help="setting prior/<name> (default: the prior's folder name)")
    ap.add_argument("--n-samples", type=int, default=None,
                    help="GuacaMol's number_samples per benchmark (default 10000; quick 1000)")
    ap.add_argument("--quick", action="store_true",
                    help="1,000 samples, results into a run folder (a smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-len", type=int, default=100, help="most tokens per sample")
    ap.add_argument("--batch-size", type=int, default=1000, help="samples per sampling batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--training-set", help="GuacaMol's training-set file, one SMILES a line "
                    "(default: ZINC250k from the dataset registry)")
    ap.add_argument("--guacamol-python", default=DEFAULT_PEER,
                    help="python of the venv with guacamol 0.5.5 and fcd")
    ap.add_argument("--out", help="folder for the results (default: benchmarks/results; "
                    "quick: runs/bench-gegl_guacamol-dist-quick-<time>)")
    args = ap.parse_args(argv)
    if args.worker:
        return worker()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    from common import RESULTS, load_json, now, row, write_shared_results
    from selfsup.data import fetch

    torch.set_num_threads(args.threads)
    if not Path(args.guacamol_python).is_file():
        raise SystemExit(f"no GuacaMol venv at {args.guacamol_python}; build it with "
                         "benchmarks/peers/make_guacamol_venv.sh (or pass --guacamol-python)")
    started, t0 = now(), time.perf_counter()
    n = args.n_samples or (1000 if args.quick else 10000)
    prior = Path(args.prior).resolve()
    name = args.name or prior.parent.name
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else (
        ROOT / "runs" / f"bench-{NAME}-dist-quick-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.quick else RESULTS)
    # the samples and the worker's scores: beside the results, or in runs/ (never committed)
    scratch = ((ROOT / "runs" if out.resolve() == RESULTS.resolve() else out)
               / f"guacamol-dist-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    scratch.mkdir(parents=True, exist_ok=True)

    pool, info = sample_pool(prior, n, args.seed, args.temperature, args.max_len,
                             args.batch_size)
    (scratch / "samples.json").write_text(json.dumps(pool))
    print(f"sampled {info['n_sampled']} SMILES ({info['n_valid']} valid) from {prior} in "
          f"{info['sampling_seconds']:.0f}s", flush=True)
    training = (Path(args.training_set).resolve() if args.training_set
                else fetch("zinc250k") / "zinc250k.smiles")
    doc = run_guacamol(args.guacamol_python, scratch / "samples.json", training, n,
                       scratch / "guacamol_scores.json", args.threads)
    scores, fcd_raw, exhausted = {}, math.nan, []
    for r in doc["results"]:
        metric = METRICS[r["benchmark"]]
        scores[metric] = r["score"]
        if metric == "fcd":
            fcd_raw = float(r["metadata"]["FCD"])
        if r["exhausted"]:
            exhausted.append(metric)
        print(f"{metric}: {r['score']:.4f} ({r['seconds']:.0f}s, read {r['samples_read']} "
              f"samples)", flush=True)

    setting = f"prior/{name}"
    command = "python " + " ".join([os.path.relpath(HERE, ROOT), *sys.argv[1:]])
    old = load_json(out / f"{NAME}.json")
    rows = [row(setting, ARM, m, [scores[m]]) for m in ANCHOR]
    m = info["model"]
    entries = dict(old.get("distribution_learning", {}))
    entries[name] = {"setting": setting, "prior": os.path.relpath(prior, ROOT),
                     "size": f"{m['n_layers']} x {m['hidden_dim']}, {info['n_params']:,} "
                     "parameters", "number_samples": n, "seed": args.seed,
                     "temperature": args.temperature, "max_len": args.max_len,
                     "n_sampled": info["n_sampled"], "n_valid": info["n_valid"],
                     "sampling_seconds": info["sampling_seconds"], "scores": scores,
                     "fcd_raw": fcd_raw, "exhausted": exhausted,
                     "training_set": (str(training) if args.training_set else
                                      "ZINC250k (249,456 SMILES; GuacaMol's ChEMBL is not "
                                      "reachable)"), "guacamol": doc, "command": command,
                     "started": started}
    # the results file is shared with guacamol_goal_directed.py and constrained_plogp.py
    jp, mp = write_shared_results(
        NAME, mode, command, started, time.perf_counter() - t0,
        out if args.out or args.quick else None, rows,
        lambda r: r["setting"] == setting and r["arm"] == ARM and r["metric"] in ANCHOR,
        SECTION, notes_text(entries), {"distribution_learning": entries, "anchor": ANCHOR})
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
