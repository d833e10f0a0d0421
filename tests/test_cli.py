"""The command line: help at every level, clear errors with exit code 2, data and report."""

import json

import pytest

from selfsup.cli import build_parser, main


def _groups():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    for name, p in sub.items():
        yield [name]
        if p._subparsers is not None:
            for cmd in p._subparsers._group_actions[0].choices:
                yield [name, cmd]


@pytest.mark.parametrize("argv", [[]] + list(_groups()), ids=lambda a: " ".join(a) or "top")
def test_help_at_every_level(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: selfsup" in out and len(out) > 100


def test_every_group_is_there():
    groups = {a[0] for a in _groups()}
    assert {"vision", "chem", "data", "demo", "bench", "report"} <= groups
    cmds = {tuple(a) for a in _groups() if len(a) == 2}
    assert {("vision", "train"), ("vision", "eval"), ("data", "list"), ("data", "fetch"),
            ("chem", "optimize"), ("chem", "objectives"), ("chem", "score")} <= cmds


def test_group_without_command_prints_its_help(capsys):
    assert main(["data"]) == 2
    assert "fetch" in capsys.readouterr().out


def test_unknown_config_key_is_a_clear_error(capsys):
    assert main(["vision", "train", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'optim.lrr'" in err and "optim.lr" in err


def test_unknown_dataset_lists_valid_names(capsys):
    assert main(["data", "fetch", "imagenet-22k"]) == 2
    err = capsys.readouterr().err
    assert "mnist" in err and "zinc250k" in err


def test_unknown_objective(capsys):
    assert main(["chem", "score", "CCO", "-o", "nope"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_score_prints_table_and_counts_invalid(capsys):
    assert main(["chem", "score", "CCO", "c1ccccc1O", "C1CC", "-o", "qed"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "smiles\tqed" and len(lines) == 4
    assert abs(float(lines[1].split("\t")[1]) - 0.406790) < 1e-4  # RDKit QED of ethanol
    assert "1 invalid SMILES" in err


def test_data_list_and_path(tmp_path, capsys):
    assert main(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "cifar10", "zinc250k", "uspto50k"):
        assert name in out
    assert main(["data", "path", "mnist", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "mnist")


def test_report_of_a_run(tmp_path, capsys):
    from selfsup.runs import Run

    run = Run.create("r", {"a": 1}, seed=0, root=tmp_path)
    for s in range(5):
        run.log_metrics({"step": s, "train_loss": 1.0 / (s + 1), "val_acc": s / 10})
    (run.artefact_dir / "picture.png").write_bytes(_tiny_png())
    (run.artefact_dir / "table.csv").write_text("smiles,score\nCCO,0.4\n")
    run.finish({"test_acc": 0.5, "rows": [{"a": 1}]})
    assert main(["report", str(run.path)]) == 0
    html = (run.path / "report.html").read_text()
    assert "test_acc" in html and "0.5" in html
    assert html.count("data:image/png;base64,") == 2  # curves + the artefact picture
    assert "CCO" in html and "<script" not in html
    assert json.loads((run.path / "run.json").read_text())["status"] == "finished"


def test_report_rejects_non_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a selfsup run directory" in capsys.readouterr().err


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()
