"""The demo's SelfPatch part: what it trains and evaluates, and its table with and without the
committed benchmark figures (training, evaluation and the report replaced by recorders; the real
part is timed by hand, ``selfsup demo --quick``)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from selfsup import demo


def _fake(monkeypatch, tmp_path):
    import selfsup.report
    import selfsup.vision.protocols
    import selfsup.vision.train
    from selfsup.data import registry

    calls = {}

    class Run:
        path = tmp_path / "demo-selfpatch"

    def train(config, overrides):
        calls["train"] = list(overrides)
        return Run(), {"steps": 4}

    def evaluate_protocol(run_path, protocol, **kw):
        calls["eval"] = (protocol, kw)
        return {"dense_miou": 0.1234, "dense_pixel_accuracy": 0.6543,
                "maps": "artefacts/dense_maps.png"}

    monkeypatch.setattr(registry, "fetch", lambda name, root=None, force=False: tmp_path)
    monkeypatch.setattr(selfsup.vision.train, "train", train)
    monkeypatch.setattr(selfsup.vision.protocols, "evaluate_protocol", evaluate_protocol)
    monkeypatch.setattr(selfsup.report, "write_report", lambda p: Path(p) / "report.html")
    monkeypatch.setenv("SELFSUP_BENCHMARKS", str(tmp_path / "benchmarks"))
    return calls


def test_selfpatch_part_without_benchmark_results(monkeypatch, tmp_path):
    calls = _fake(monkeypatch, tmp_path)
    console = Console(record=True, width=250)
    status, summary = demo._selfpatch_part(console, True, str(tmp_path))
    assert status == "done" and "dense mIoU 0.123" in summary and "0.654" in summary
    ov = calls["train"]
    assert {"method=selfpatch", "model.backbone=vit_pico", "model.cls_token=false",
            "data.name=fmnist-mosaic", "data.per_class=30", "optim.epochs=1",
            f"run_root={tmp_path}"} <= set(ov)
    assert calls["eval"] == ("dense", {"max_train": 1000, "max_test": 200, "n_grid": 3})
    text = console.export_text()
    assert text.count("not measured yet") == 4  # two arms x two metrics
    assert "cannot show" in text and "benchmarks/selfpatch/run.py" in text
    assert "dense_maps.png" in text
    assert ("vision: DINO + SelfPatch on mosaics, dense probe", demo._selfpatch_part) in demo.PARTS


def test_selfpatch_part_shows_committed_figures(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path)
    rows = [{"setting": demo.SELFPATCH_SETTING, "arm": arm, "metric": metric, "mean": mean,
             "std": 0.01, "seeds": [mean] * 3}
            for arm, base in (("dino", 0.30), ("dino_selfpatch", 0.35))
            for metric, mean in (("dense_miou", base), ("dense_pixel_accuracy", base + 0.4))]
    res = tmp_path / "benchmarks" / "results"
    res.mkdir(parents=True)
    (res / "selfpatch.json").write_text(json.dumps({"rows": rows}))
    console = Console(record=True, width=250)
    demo._selfpatch_part(console, False, None)
    text = console.export_text()
    assert "not measured yet" not in text
    assert "0.3000 +- 0.0100 (3 seeds)" in text and "0.7500 +- 0.0100 (3 seeds)" in text
