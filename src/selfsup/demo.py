"""``selfsup demo`` (what ``make demo`` runs): a short real run of each capability built so far.

Every part writes a run directory and its HTML report; the closing table lists each part, what
it showed, and what is not built yet. Nothing here is simulated: where real data cannot be
fetched the part says so and stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import SelfsupError

NOT_BUILT: list[tuple[str, str]] = []


def committed_figure(benchmark: str, setting: str, arm: str, metric: str) -> str | None:
    """``mean +- std (n seeds)`` of a committed benchmark row, or None when it is not there."""
    import json

    from .bench import benchmarks_dir

    p = benchmarks_dir() / "results" / f"{benchmark}.json"
    try:
        rows = json.loads(p.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for r in rows:
        if (r.get("setting"), r.get("arm"), r.get("metric")) == (setting, arm, metric):
            return f"{r['mean']:.4f} +- {r['std']:.4f} ({len(r.get('seeds', []))} seeds)"
    return None
NOT_IN_DEMO = [  # built, but longer than the demo's few minutes on 2 CPU cores
    ("chem", "selfsup chem pretrain at benchmark size (2 x 256 LSTM, 2400 steps: about 20 "
             "minutes on 2 cores; the demo's prior trains for 2 minutes)"),
    ("chem", "selfsup chem train-single-step with the CPU recipe (8 epochs: about 7 minutes "
             "on 2 cores; the demo trains 2), plan and self-improve at benchmark size"),
    ("vision", "rotation prediction and masked image modelling (method=rotnet, method=mae; "
               "configs/rotnet, configs/mae), DINO with a CLS token "
               "(configs/selfpatch/fmnist_mosaic_dino_cpu.yaml): their CPU recipes take 40 "
               "minutes (MAE) to an hour (DINO, SelfPatch) on 2 cores"),
    ("all", "the benchmarks in benchmarks/ (selfsup bench list): minutes in --quick mode, "
            "hours in full mode"),
]


def _vision_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    from .data import registry
    from .report import write_report
    from .vision.train import train

    dataset = None
    for name in ("fashion-mnist", "mnist"):
        try:
            registry.fetch(name)
            dataset = name
            break
        except SelfsupError as exc:
            console.print(f"[yellow]could not fetch {name}: {str(exc).splitlines()[0]}")
    if dataset is None:
        return "skipped", "no image dataset could be fetched (see the messages above)"
    per_class, epochs = (30, 2) if quick else (100, 12)
    common = [
        f"data.name={dataset}", f"data.per_class={per_class}", "data.val_size=1000",
        "model.backbone=resnet20", "model.width=0.5", "optim.batch_size=64",
        f"optim.epochs={epochs}", "trainer.eval_batch_size=1000", "trainer.log_every_n_steps=5",
    ]
    if run_root:
        common.append(f"run_root={run_root}")
    rows = []
    for mode in ("baseline", "sla_sd"):
        console.rule(f"vision: {mode} on {dataset}, {per_class} images per class")
        run, res = train(None, common + [f"sla.mode={mode}", f"name=demo-{mode}"])
        report = write_report(run.path)
        rows.append((mode, res, report))
    base, sla = rows[0][1], rows[1][1]
    table = Table(title=f"SLA demo: {dataset}, {per_class} train images/class, "
                        f"ResNet-20 (x0.5), {epochs} epochs, test accuracy")
    for col in ("mode", "single/SI", "AG", "SD", "s/epoch", "report"):
        table.add_column(col)
    for mode, res, report in rows:
        table.add_row(mode, f"{res.get('test_single_acc', float('nan')):.4f}",
                      f"{res.get('test_aggregated_acc', float('nan')):.4f}",
                      f"{res.get('test_distilled_acc', float('nan')):.4f}",
                      f"{res['epoch_seconds']:.1f}", str(report))
    console.print(table)
    setting = "fashion-mnist/100-per-class/resnet32"
    ref = {arm: committed_figure("sla", setting, arm, "test_accuracy")
           for arm in ("baseline", "sla_ag")}
    if all(ref.values()):
        console.print(f"This run is too short and its network too narrow to show SLA's effect. "
                      f"The benchmark setting {setting} (ResNet-32, 30 epochs) shows it: "
                      f"baseline {ref['baseline']}, SLA+AG {ref['sla_ag']} "
                      "(benchmarks/results/sla.md).")
    summary = (f"{dataset}: baseline {base['test_acc']:.4f}, SLA+SD {sla['test_acc']:.4f}, "
               f"SLA+AG {sla['test_aggregated_acc']:.4f} (one seed; see benchmarks/ for seeds)")
    return "done", summary


def _fashion_mnist_missing() -> str | None:
    """Why the Fashion-MNIST parts must be skipped (it cannot be fetched), or None."""
    from .data import registry

    try:
        registry.fetch("fashion-mnist")
    except SelfsupError as exc:
        return f"Fashion-MNIST could not be fetched: {str(exc).splitlines()[0]}"
    return None


AUGSELF_SETTING = "tinted-fashion-mnist/resnet20-3ep"  # the benchmark setting the demo points at


def _augself_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    from .report import write_report
    from .vision.protocols import evaluate_protocol
    from .vision.train import train

    missing = _fashion_mnist_missing()
    if missing:
        return "skipped", missing
    per_class, epochs = (20, 1) if quick else (200, 3)
    common = [
        "data.name=tinted-fashion-mnist", f"data.per_class={per_class}", "data.val_size=500",
        "method=simsiam", "model.backbone=resnet20", "model.width=0.5", "optim.batch_size=128",
        "optim.schedule=cosine", "optim.lr=0.06", "optim.weight_decay=5e-4",
        f"optim.epochs={epochs}", "simsiam.proj_dim=256", "simsiam.proj_layers=2",
        "simsiam.pred_hidden=64", "trainer.eval_batch_size=1000", "trainer.log_every_n_steps=5",
    ]
    if run_root:
        common.append(f"run_root={run_root}")
    targets = ("class", "item_colour", "background_colour", "position")
    rows = []
    for arm, extra in (("simsiam", ["augself.kinds=[]"]),
                       ("simsiam_augself", ["augself.kinds=[crop,colour]"])):
        console.rule(f"vision: {arm} on tinted Fashion-MNIST, {per_class} images per class, "
                     f"{epochs} epochs")
        run, _ = train(None, common + extra + [f"name=demo-{arm}"])
        # a coarser L2 grid than the benchmark's 45 values keeps the demo short
        res = evaluate_protocol(run.path, "linear", target=list(targets), max_test=2000,
                                n_grid=12)
        probes = {t: res[t]["top1"] for t in targets}
        report = write_report(run.path)
        rows.append((arm, probes, report))
    table = Table(title=f"AugSelf demo: SimSiam on tinted Fashion-MNIST ({per_class} images per "
                        f"class, ResNet-20 x0.5, {epochs} epochs), linear probe top-1 on frozen "
                        "features (12 L2 values; the benchmark tries 23)")
    for col in ("arm", *targets, "report"):
        table.add_column(col)
    for arm, probes, report in rows:
        table.add_row(arm, *(f"{probes[t]:.4f}" for t in targets), str(report))
    for arm in ("simsiam", "simsiam_augself"):
        figs = [committed_figure("augself", AUGSELF_SETTING, arm, f"linear_{t}")
                for t in targets]
        table.add_row(f"{arm} (benchmark)", *(f or "not measured yet" for f in figs),
                      "benchmarks/results/augself.md")
    console.print(table)
    console.print("A run of a few minutes shows the pipeline, not AugSelf's effect; the "
                  f"benchmark setting {AUGSELF_SETTING} (3 seeds, ResNet-20, 3 epochs on 25,000 "
                  "images) is where the effect is measured (rows marked benchmark).")
    (a, pa, _), (b, pb, _) = rows
    summary = ("linear probe class / item colour / position: "
               f"{a} {pa['class']:.3f} / {pa['item_colour']:.3f} / {pa['position']:.3f}, "
               f"{b} {pb['class']:.3f} / {pb['item_colour']:.3f} / {pb['position']:.3f}")
    return "done", summary


SELFPATCH_SETTING = "fmnist-mosaic/vit_pico-4ep"  # the benchmark setting the demo points at


def _selfpatch_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    from .report import write_report
    from .vision.protocols import evaluate_protocol
    from .vision.train import train

    missing = _fashion_mnist_missing()
    if missing:
        return "skipped", missing
    # quick: 300 mosaics, 4 steps; full: 1,000 mosaics, 2 epochs of batch 64 (30 steps; the whole
    # part took 3.6 min here with a one-thread benchmark running beside it, 4.7 s per step)
    per_class, epochs = (30, 1) if quick else (100, 2)
    patches, n_test, n_grid = (1000, 200, 3) if quick else (5000, 1000, 6)
    # the CPU recipe (configs/selfpatch/fmnist_mosaic_selfpatch_cpu.yaml) with smaller heads and
    # 2 local views instead of 4
    overrides = [
        "data.name=fmnist-mosaic", f"data.per_class={per_class}", "data.val_size=500",
        "method=selfpatch", "model.backbone=vit_pico", "model.patch_size=4",
        "model.cls_token=false", "optim.optimizer=adamw", "optim.schedule=cosine",
        "optim.lr=5e-4", "optim.weight_decay=0.04", "optim.warmup=0.1", "optim.batch_size=64",
        f"optim.epochs={epochs}", "selfpatch.out_dim=1024", "selfpatch.hidden=256",
        "selfpatch.bottleneck=128", "selfpatch.patch_out_dim=512", "selfpatch.global_size=32",
        "selfpatch.local_size=16", "selfpatch.n_local=2", "selfpatch.global_scale=[0.25,1.0]",
        "selfpatch.local_scale=[0.05,0.25]", "trainer.eval_batch_size=1000",
        "monitor.knn=false", "trainer.log_every_n_steps=5", "name=demo-selfpatch",
    ]
    if run_root:
        overrides.append(f"run_root={run_root}")
    console.rule(f"vision: DINO + SelfPatch (vit_pico, no CLS token) on fmnist-mosaic, "
                 f"{10 * per_class} mosaics, {epochs} epoch(s); dense probe")
    run, res = train(None, overrides)
    dense = evaluate_protocol(run.path, "dense", max_train=patches, max_test=n_test,
                              n_grid=n_grid)
    report = write_report(run.path)
    steps = res.get("steps", "?")
    table = Table(title=f"SelfPatch demo: fmnist-mosaic, dense linear probe on the frozen patch "
                        f"tokens ({patches} training patches, {n_test} test mosaics, {n_grid} L2 "
                        "values; the benchmark uses 20,000, 10,000 and 23)")
    for col in ("run", "dense mIoU", "pixel accuracy", "report"):
        table.add_column(col)
    table.add_row(f"DINO + SelfPatch, this run ({steps} steps)", f"{dense['dense_miou']:.4f}",
                  f"{dense['dense_pixel_accuracy']:.4f}", str(report))
    for arm, label in (("dino", "DINO"), ("dino_selfpatch", "DINO + SelfPatch")):
        figs = [committed_figure("selfpatch", SELFPATCH_SETTING, arm, m)
                for m in ("dense_miou", "dense_pixel_accuracy")]
        table.add_row(f"{label} (benchmark {SELFPATCH_SETTING})",
                      *(f or "not measured yet" for f in figs), "benchmarks/results/selfpatch.md")
    console.print(table)
    console.print(f"A demo run of {steps} steps on {10 * per_class} mosaics cannot show "
                  "SelfPatch's effect on the dense probe: it shows the pipeline (training, the "
                  "dense protocol, the maps figure, the report). The effect is measured by "
                  "benchmarks/selfpatch/run.py (DINO against DINO + SelfPatch, 3 seeds, 4 epochs "
                  "on 55,000 mosaics), results in benchmarks/results/selfpatch.md (rows marked "
                  "benchmark).")
    if dense.get("maps"):
        console.print(f"maps figure (masks, the probe's prediction, the aggregation head's "
                      f"attention, patch similarity): {run.path / dense['maps']}")
    summary = (f"DINO + SelfPatch, {steps} steps on {10 * per_class} mosaics: dense mIoU "
               f"{dense['dense_miou']:.3f}, pixel accuracy {dense['dense_pixel_accuracy']:.3f} "
               "(too short to show the effect; see benchmarks/results/selfpatch.md)")
    return "done", summary


def _chem_optimize_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    from .chem.optimize import optimize
    from .report import write_report

    budget = 300 if quick else 2000
    objective = "celecoxib_rediscovery"
    console.rule(f"chemistry: graph GA on {objective}, {budget} oracle calls, ZINC250k start")
    ov = [f"objective={objective}", f"budget={budget}", "optimizer=graph_ga", "name=demo-graph-ga"]
    if run_root:
        ov.append(f"run_root={run_root}")
    run, res = optimize(None, ov)
    report = write_report(run.path)
    console.print(f"top-1 {res['top1']:.3f}, top-10 mean {res['top10_mean']:.3f}, "
                  f"AUC top-10 {res['auc_top10']:.3f}; best {res['best_smiles']}; report {report}")
    return "done", (f"graph GA, {objective}, {budget} calls: top-1 {res['top1']:.3f}, "
                    f"AUC top-10 {res['auc_top10']:.3f}")


# The demo's apprentice: a small SMILES LSTM pretrained for about two minutes on 2 CPU cores.
# A weak prior (a minority of its samples are valid SMILES), enough to run GEGL's loop end to
# end; the benchmark's prior is configs/chem/pretrain_zinc_bench.yaml (validity 0.69).
DEMO_PRIOR = ["data.dataset=zinc250k", "data.max_train_molecules=20000", "data.val_size=500",
              "model.embed_dim=32", "model.hidden_dim=192", "model.n_layers=2",
              "model.dropout=0.0", "optim.lr=0.004", "optim.batch_size=64",
              "optim.schedule=cosine", "eval.n_samples=500", "eval.sample_batch_size=500",
              "trainer.accelerator=cpu", "trainer.log_every_n_steps=50"]


def _shipped_prior() -> tuple[Path, dict] | None:
    """``(model.pt, its results)`` of the shipped strong prior when this version ships one and
    it is here (fetched from the repository copy and checked by hash), else None."""
    import json

    from .chem.cli import shipped_prior_file
    from .data import get_spec
    from .data.catalog import STRONG_PRIOR
    from .errors import DataNotFoundError

    try:
        path = shipped_prior_file()
    except DataNotFoundError:
        return None
    if path is None:
        return None
    # its pretraining results (validity of 10,000 samples) sit beside the repository copy
    dirs = [Path(d) for src in get_spec(STRONG_PRIOR).sources for d in getattr(src, "dirs", ())]
    results = [p / "results.json" for p in (path.parent, *dirs)]
    info = next((json.loads(r.read_text()) for r in results if r.is_file()), {})
    return path, {"validity": float(info.get("validity", float("nan"))),
                  "n_samples": info.get("n_samples", 0)}


def _gegl_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    from .chem.lstm import pretrain
    from .chem.optimize import optimize
    from .report import write_report

    steps, budget = (60, 300) if quick else (600, 1000)
    objective = "osimertinib_mpo"
    root = [f"run_root={run_root}"] if run_root else []
    shipped = _shipped_prior()
    if shipped is not None:  # the shipped strong prior (registry entry, checked by hash)
        prior_path, prior = shipped
        console.rule(f"chemistry: GEGL vs the prior alone on {objective}, {budget} oracle calls, "
                     "from the shipped SMILES LSTM prior")
    else:
        console.rule(f"chemistry: SMILES LSTM prior ({steps} steps on ZINC250k), then GEGL vs "
                     f"the prior alone on {objective}, {budget} oracle calls")
        prior_run, prior = pretrain(None, DEMO_PRIOR + root + [
            f"optim.max_steps={steps}", f"eval.val_every_n_steps={steps}",
            f"trainer.checkpoint_every_n_steps={steps}", "name=demo-prior"])
        write_report(prior_run.path)
        prior_path = prior_run.path / "model.pt"
        console.print(f"prior: validity {prior['validity']:.3f} of {prior['n_samples']} "
                      f"samples, {prior['train_seconds']:.0f} s (the shipped prior is not in "
                      "this version yet)")
    rows = []
    for opt in ("gegl", "prior_only"):
        run, res = optimize(None, root + [
            f"objective={objective}", f"budget={budget}", f"optimizer={opt}",
            f"prior={prior_path}", "gegl.device=cpu", f"name=demo-{opt}"])
        rows.append((opt, res, write_report(run.path)))
    table = Table(title=f"GEGL demo: {objective}, {budget} unique oracle calls, one seed")
    for col in ("optimizer", "top-1", "top-10 mean", "AUC top-10", "seconds", "report"):
        table.add_column(col)
    for opt, res, report in rows:
        table.add_row(opt, f"{res['top1']:.3f}", f"{res['top10_mean']:.3f}",
                      f"{res['auc_top10']:.3f}", f"{res['wall_seconds']:.0f}", str(report))
    console.print(table)
    g, p = rows[0][1], rows[1][1]
    return "done", (f"GEGL on {objective}, {budget} calls, prior validity "
                    f"{prior['validity']:.2f}: top-10 mean {g['top10_mean']:.3f} vs "
                    f"{p['top10_mean']:.3f} sampling the prior alone")


def _retro_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    import numpy as np

    from .chem.retro.training.train_single_step import train_single_step
    from .chem.retro.workflows.plan import plan
    from .chem.retro.workflows.route_benchmark import build_route_benchmark, load_uspto_reactions
    from .chem.retro.workflows.self_improve import self_improve
    from .io import atomic_write_text
    from .report import write_report

    epochs, n_test, n_train, max_it = (1, 5, 10, 30) if quick else (2, 20, 40, 50)
    root = [f"run_root={run_root}"] if run_root else []
    console.rule(f"retrosynthesis: template MLP on USPTO-50k ({epochs} epochs), Retro*-0 on "
                 f"{n_test} held-out multi-step targets, one self-improvement iteration")
    ss_run, ss = train_single_step(None, root + [
        f"optim.epochs={epochs}", "eval.n_test=100", "eval.top_k=[1,10,50]",
        "trainer.device=cpu", "name=demo-single-step"])
    write_report(ss_run.path)
    console.print(f"single-step model: exact top-1 {ss['test_exact_top1']:.3f}, top-10 "
                  f"{ss['test_exact_top10']:.3f} on 100 held-out reactions")
    bench = build_route_benchmark(load_uspto_reactions())
    pool = bench.smiles("test", min_length=2)
    pick = sorted(np.random.default_rng(0).choice(len(pool), n_test, replace=False))
    targets = atomic_write_text(ss_run.artefact_dir / "demo_targets.smi",
                                "".join(pool[i] + "\n" for i in pick))
    train_targets = atomic_write_text(ss_run.artefact_dir / "demo_train_targets.smi",
                                      "".join(t + "\n" for t in bench.smiles("train", 2)))
    model0 = ss_run.path / "model.pt"
    search = [f"search.max_iterations={max_it}", f"targets={targets}", "n_draw=4"]
    p0_run, p0 = plan(None, root + search + [f"model={model0}", "name=demo-plan-retro-star-0"])
    r0 = write_report(p0_run.path)
    si_run, si = self_improve(None, root + [
        f"model={model0}", "n_iterations=1", f"targets.file={train_targets}",
        f"targets.n={n_train}",
        f"search.max_iterations={max_it}", "eval.n_test=100", "eval.top_k=[1,10]",
        "name=demo-self-improve"])
    write_report(si_run.path)
    p1_run, p1 = plan(None, root + search + [f"model={si['models'][0]}",
                                             "name=demo-plan-self-improved"])
    r1 = write_report(p1_run.path)
    it = si["iterations"][0]
    table = Table(title=f"Retro*-0 on {n_test} held-out USPTO-50k targets with a known route of "
                        f">= 2 steps, <= {max_it} iterations, USPTO-50k leaf stock")
    for col in ("single-step model", "solved", "mean iterations", "one-step top-1", "report"):
        table.add_column(col)
    table.add_row("trained", f"{p0['n_solved']}/{n_test}", f"{p0['mean_iterations']:.1f}",
                  f"{si['onestep_before']['top1']:.2f}", str(r0))
    table.add_row(f"self-improved (kept {it['n_kept']} of {it['n_route_reactions']} route "
                  f"reactions from {it['n_solved']}/{n_train} train targets)",
                  f"{p1['n_solved']}/{n_test}", f"{p1['mean_iterations']:.1f}",
                  f"{si['onestep_after']['top1']:.2f}", str(r1))
    console.print(table)
    return "done", (f"Retro*-0 solved {p0['n_solved']}/{n_test} held-out targets, "
                    f"{p1['n_solved']}/{n_test} after one self-improvement iteration "
                    f"({it['n_kept']} reactions kept); one-step top-1 "
                    f"{si['onestep_before']['top1']:.2f} -> {si['onestep_after']['top1']:.2f}")


def _retro_toy_part(console: Console, quick: bool, run_root: str | None) -> tuple[str, str]:
    from .chem.retro.core.routes import draw_route
    from .chem.retro.core.search import RetroStar
    from .chem.retro.core.toy import toy_worlds
    from .report import write_report
    from .runs import Run

    console.rule("retrosynthesis: Retro*-0 on the hand-made reaction worlds (known optima)")
    worlds = toy_worlds()
    run = Run.create("demo-retro-toy", {"worlds": sorted(worlds)}, seed=0, root=run_root,
                     kind="demo")
    rows, found = [], []
    for name, world in sorted(worlds.items()):
        res = RetroStar(world.model(), world.stock(), max_iterations=50).run(world.target)
        ok = res.success and abs(res.best_cost - world.optimal_cost) < 1e-9
        found.append(ok)
        rows.append({"world": name, "success": res.success, "iterations": res.iterations,
                     "best_cost": round(res.best_cost, 4),
                     "optimal_cost": round(world.optimal_cost, 4), "optimal_found": ok})
        if res.best_route is not None:
            draw_route(res.best_route, run.artefact_dir / f"route_{name}.png")
    run.finish({"worlds": rows, "stock": "toy stocks (hand-made)"})
    report = write_report(run.path)
    console.print(f"{sum(found)}/{len(found)} optimal routes found; report {report}")
    return "done", (f"Retro*-0 found the known optimal route in {sum(found)}/{len(found)} "
                    "hand-made worlds")


PARTS: list[tuple[str, Callable[[Console, bool, str | None], tuple[str, str]]]] = [
    ("vision: SLA vs baseline", _vision_part),
    ("vision: SimSiam with and without AugSelf", _augself_part),
    ("vision: DINO + SelfPatch on mosaics, dense probe", _selfpatch_part),
    ("chemistry: graph GA optimisation", _chem_optimize_part),
    ("chemistry: GEGL (apprentice + genetic expert)", _gegl_part),
    ("chemistry: Retro* search core", _retro_toy_part),
    ("chemistry: self-improved Retro* on USPTO-50k", _retro_part),
]


def run_demo(quick: bool = False, run_root: str | None = None) -> int:
    console = Console()
    console.rule("[bold]selfsup demo")
    outcomes = []
    for title, part in PARTS:
        t0 = time.perf_counter()
        try:
            status, summary = part(console, quick, run_root)
        except SelfsupError as exc:
            status, summary = "failed", str(exc).splitlines()[0]
        outcomes.append((title, status, summary, time.perf_counter() - t0))
    table = Table(title="selfsup demo: what ran")
    for col in ("part", "status", "result", "seconds"):
        table.add_column(col)
    for title, status, summary, secs in outcomes:
        table.add_row(title, status, summary, f"{secs:.0f}")
    console.print(table)
    for title, rows in (("built, not in the demo (longer runs)", NOT_IN_DEMO),
                        ("not built yet", NOT_BUILT)):
        if not rows:
            continue
        nb = Table(title=title)
        nb.add_column("domain")
        nb.add_column("capability")
        for dom, what in rows:
            nb.add_row(dom, what)
        console.print(nb)
    console.print(f"runs are in {Path(run_root or 'runs').resolve()}; open each report.html")
    return 0 if all(o[1] != "failed" for o in outcomes) else 1
