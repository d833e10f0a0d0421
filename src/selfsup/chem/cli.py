"""``selfsup chem ...`` subcommands."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console
from rich.table import Table

OVERRIDES_HELP = ("key=value config overrides (e.g. graph_ga.population_size=200 seed=1); "
                  "unknown keys are errors listing the valid keys")


def _objectives(args: argparse.Namespace) -> int:
    from .objectives import get_objective, list_objectives

    t = Table(title=f"objectives ({args.suite or 'all'})")
    t.add_column("name")
    t.add_column("benchmark name")
    t.add_column("top-k aggregation")
    for name in list_objectives(args.suite):
        obj = get_objective(name)
        topk = getattr(obj, "topk", None)
        t.add_row(name, getattr(obj, "display_name", ""),
                  str(getattr(topk, "top_counts", "")) if topk else "")
    Console().print(t)
    return 0


def _max_heavy_atoms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0 (0: no limit)")
    return value


def _score(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io import read_text_file
    from .molecules import mol_from_smiles
    from .objectives import get_objective
    from .oracles import DEFAULT_MAX_HEAVY_ATOMS

    objs = [get_objective(n) for n in args.objective]  # an unknown name fails before any work
    items = [(s, f"argument {i}") for i, s in enumerate(args.smiles, 1)]
    if args.file:
        text = read_text_file(args.file, "--file", "Pass a UTF-8 text file of SMILES, one per "
                              "line (# comments and blank lines are skipped).")
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                items.append((line.split()[0], f"{args.file} line {n}"))
    if not items:
        raise InputError("no SMILES to score: pass SMILES as arguments or --file FILE with one "
                         "SMILES per line")
    limit = DEFAULT_MAX_HEAVY_ATOMS if args.max_heavy_atoms is None else args.max_heavy_atoms
    limit = limit or None  # 0: no limit
    print("smiles\t" + "\t".join(o.name for o in objs))
    n_bad = n_large = 0
    for s, where in items:
        mol = mol_from_smiles(s)
        if mol is None:
            n_bad += 1
            mark = "invalid"
            print(f"selfsup: {where}: invalid SMILES {s!r} (RDKit cannot parse or sanitise it); "
                  "marked invalid", file=sys.stderr)
        elif limit is not None and mol.GetNumHeavyAtoms() > limit:
            n_large += 1
            mark = "too-large"
            print(f"selfsup: {where}: {mol.GetNumHeavyAtoms()} heavy atoms, over the limit of "
                  f"{limit}; marked too-large, not scored (raise --max-heavy-atoms, 0: no limit)",
                  file=sys.stderr)
        else:
            print(s + "\t" + "\t".join(f"{o(s):.6g}" for o in objs))
            continue
        print(s + "\t" + "\t".join(mark for _ in objs))
    parts = ([f"{n_bad} invalid SMILES marked 'invalid'"] if n_bad else []) + (
        [f"{n_large} molecule(s) over {limit} heavy atoms marked 'too-large'"] if n_large else [])
    if parts:
        print(f"selfsup: {', '.join(parts)} (of {len(items)} inputs)", file=sys.stderr)
    return 0


def _start_or_resume(args: argparse.Namespace, start, resume, first: tuple[str, ...] = ()) -> int:
    """Run ``start(config, overrides)`` or, with --resume, ``resume(run)``; print the results
    (in the first process only, when data-parallel training launched others)."""
    from ..console import print_results as _print_results

    if getattr(args, "resume", None):
        run, res = resume(args.resume)
    else:
        run, res = start(args.config, [*first, *args.overrides])
    if os.environ.get("LOCAL_RANK", "0") == "0":
        _print_results(Console(), run.path, res)
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from .optimize import optimize, resume

    flags = ("objective", "budget", "optimizer", "seed")
    first = tuple(f"{k}={getattr(args, k)}" for k in flags if getattr(args, k) is not None)
    if not args.resume:
        first += _shipped_prior(args.config, [*first, *args.overrides])
    return _start_or_resume(args, optimize, resume, first)


# the optimisers that start from a pretrained SMILES LSTM (all registered ones but graph_ga)
PRIOR_OPTIMIZERS = ("gegl", "gegl_no_expert", "gegl_no_learning", "lstm_hc", "reinvent",
                    "prior_only")


def shipped_prior_file(data_root: str | None = None):
    """``model.pt`` of the shipped strong prior (dataset-registry entry
    ``smiles-lstm-zinc-strong``, fetched and checked by hash), or None when this version ships
    none; DataNotFoundError when it ships one that is not here."""
    from ..data import fetch, get_spec
    from ..data.catalog import STRONG_PRIOR

    if not get_spec(STRONG_PRIOR).fetchable:
        return None
    return fetch(STRONG_PRIOR, root=data_root) / "model.pt"


def _shipped_prior(config: str | None, overrides: list[str]) -> tuple[str, ...]:
    """``("prior=PATH",)`` of the shipped strong prior (dataset-registry entry
    ``smiles-lstm-zinc-strong``, fetched and checked by hash) when the run's optimiser needs a
    prior and none is given; ``()`` otherwise. ConfigError naming the fix when it is not there."""
    from ..config import load_config
    from ..data.catalog import STRONG_PRIOR
    from ..errors import ConfigError, DataNotFoundError
    from .optimize import OptimizeConfig

    cfg = load_config(OptimizeConfig, config, overrides)
    if cfg.optimizer not in PRIOR_OPTIMIZERS or cfg.prior is not None:
        return ()
    fix = ("pass prior=RUN/model.pt of `selfsup chem pretrain` (e.g. --config "
           "configs/chem/pretrain_zinc_strong.yaml, or pretrain_zinc_cpu.yaml for minutes)")
    try:
        path = shipped_prior_file(cfg.data_root)
    except DataNotFoundError as exc:
        raise ConfigError(f"optimizer '{cfg.optimizer}' needs a pretrained SMILES LSTM prior and "
                          f"none was given; the shipped prior is not available here:\n{exc}\n"
                          f"Or {fix}") from None
    if path is None:
        raise ConfigError(f"optimizer '{cfg.optimizer}' needs a pretrained SMILES LSTM prior and "
                          f"none was given; this version ships none yet (registry entry "
                          f"'{STRONG_PRIOR}'): {fix}")
    return (f"prior={path}",)


def _pretrain(args: argparse.Namespace) -> int:
    from .lstm import pretrain, resume

    return _start_or_resume(args, pretrain, lambda run: resume(run, args.overrides))


def _train_single_step(args: argparse.Namespace) -> int:
    from .retro.training.train_single_step import resume, train_single_step

    return _start_or_resume(args, train_single_step, resume)


def _plan(args: argparse.Namespace) -> int:
    from .retro.workflows.plan import plan, resume_plan

    first = (f"targets={args.targets}",) if args.targets else ()
    return _start_or_resume(args, plan, resume_plan, first)


def _self_improve(args: argparse.Namespace) -> int:
    from .retro.workflows.self_improve import resume_self_improve, self_improve

    return _start_or_resume(args, self_improve, resume_self_improve)


def add_commands(sc) -> None:
    o = sc.add_parser("objectives", help="list objectives (GuacaMol v2, PMO, penalized logP, ...)",
                      description="List the registered objectives with their benchmark names "
                      "and top-k aggregation.")
    o.add_argument("--suite", choices=["guacamol_v2", "pmo"], default=None)
    o.set_defaults(func=_objectives)

    s = sc.add_parser("score", help="score SMILES with one or more objectives",
                      description="Print a tab-separated table of scores. A row whose SMILES is "
                      "invalid reads 'invalid' in every score column, and one with more heavy "
                      "atoms than --max-heavy-atoms reads 'too-large' (not scored); each such "
                      "input is named on stderr (with its line number for --file).")
    s.add_argument("smiles", nargs="*")
    s.add_argument("--file", help="a UTF-8 text file of SMILES, one per line (first column; "
                   "# comment lines and blank lines are skipped)")
    s.add_argument("--max-heavy-atoms", type=_max_heavy_atoms, default=None, metavar="N",
                   help="molecules with more heavy atoms are marked too-large instead of scored "
                   "(default 100, selfsup.chem.oracles.DEFAULT_MAX_HEAVY_ATOMS: more than twice "
                   "the largest ZINC250k molecule, while a scorer such as deco_hop takes minutes "
                   "on a 300-atom chain); 0: no limit")
    s.add_argument("--objective", "-o", action="append", required=True,
                   help="objective name (repeatable); see `selfsup chem objectives`")
    s.set_defaults(func=_score)

    pt = sc.add_parser("pretrain", help="pretrain the SMILES LSTM apprentice (writes a run)",
                       description="Maximum-likelihood pretraining of the SMILES LSTM on "
                       "ZINC250k, MOSES or a SMILES file. Writes model.pt, vocab.json, "
                       "samples.csv and results.json (validity, uniqueness, novelty) into the "
                       "run; checkpoints every N steps and resumes with --resume.")
    pt.add_argument("--config", help="YAML recipe, e.g. configs/chem/pretrain_zinc_cpu.yaml")
    pt.add_argument("--resume", metavar="RUN", help="continue a killed run (overrides such as "
                    "optim.max_steps=N extend a finished one)")
    pt.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    pt.set_defaults(func=_pretrain)

    ts = sc.add_parser("train-single-step",
                       help="train the template MLP single-step retrosynthesis model",
                       description="Train Retro*'s template classifier (Morgan fingerprint -> "
                       "512 -> templates) on USPTO-50k; select on the valid split; report "
                       "template-level and exact-match top-1/5/10/50 accuracy on the test "
                       "split (templates applied with rdchiral). Writes model.pt, "
                       "checkpoints/last.pt, metrics and results.json into the run.")
    ts.add_argument("--config", help="YAML recipe, e.g. configs/retro/single_step_cpu.yaml")
    ts.add_argument("--resume", metavar="RUN", help="continue a killed run")
    ts.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    ts.set_defaults(func=_train_single_step)

    pl = sc.add_parser("plan", help="Retro* multi-step planning for many targets (writes a run)",
                       description="Plan routes with Retro* (value 0, or a trained value "
                       "network) and a single-step model, over worker processes (Ray with "
                       "executor=ray). Writes results.jsonl (one line per target), routes.json, "
                       "route pictures under artefacts/ and results.json (success within "
                       "10/25/50/100/... iterations, mean route length and iterations, the stock "
                       "used); --resume skips targets already done.")
    pl.add_argument("--config", help="YAML recipe, e.g. configs/retro/plan_cpu.yaml")
    pl.add_argument("--targets", help="file of target SMILES, one per line")
    pl.add_argument("--resume", metavar="RUN", help="continue a killed run")
    pl.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    pl.set_defaults(func=_plan)

    si = sc.add_parser("self-improve",
                       help="self-improved retrosynthetic planning (writes a run)",
                       description="Plan on training targets, keep reactions of successful "
                       "routes that the reference model ranks top-5 with p >= threshold "
                       "(optionally forward-augmented), fine-tune, repeat. Every iteration's "
                       "model, reactions and plan are kept under iterations/; one-step accuracy "
                       "before and after is reported. mode=random_control fine-tunes on random "
                       "true training reactions instead.")
    si.add_argument("--config", help="YAML recipe, e.g. configs/retro/self_improve_cpu.yaml")
    si.add_argument("--resume", metavar="RUN", help="continue a killed run: finished iterations "
                    "are kept, planning goes on from the targets already done")
    si.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    si.set_defaults(func=_self_improve)

    p = sc.add_parser("optimize", help="optimise molecules for an objective (writes a run)",
                      description="Run a molecular optimiser under a budget of unique oracle "
                      "calls. Writes oracle_calls.csv, artefacts/molecules.csv, "
                      "artefacts/learning_curve.png, artefacts/top_molecules.png and "
                      "results.json (PMO metrics: top1, top10_mean, auc_top10) into the run.")
    p.add_argument("--config", help="YAML recipe (configs/chem/...)")
    p.add_argument("--objective", help="objective name (`selfsup chem objectives`)")
    p.add_argument("--budget", type=int, help="unique oracle calls (PMO: 10000)")
    p.add_argument("--optimizer", help="graph_ga | gegl | gegl_no_expert | gegl_no_learning | "
                   "lstm_hc | reinvent | prior_only (all but graph_ga start from a prior: "
                   "prior=RUN/model.pt from `selfsup chem pretrain`, by default the shipped "
                   "one, dataset smiles-lstm-zinc-strong, once a release ships its weights)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", metavar="RUN", help="continue a killed run (replays from its "
                   "oracle record at no budget cost)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=_optimize)
