"""The research modules run with ``python -m``: a wrong path is one sentence and a
non-zero exit wherever they are started from, and their help keeps the docstring's
paragraphs."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

STUDIES = ("diameter_study", "hybrid_study", "missing_study", "motion_study",
           "resolution_study", "significance_study", "stack_study", "training.package",
           "training.tta_maps", "training2d", "watershed_tune")


def _one_sentence(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("name", ["diameter_study", "resolution_study", "missing_study",
                                  "motion_study", "training.package", "training.tta_maps"])
def test_missing_runs_are_one_sentence(name: str, tmp_path: Path, monkeypatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    mod = importlib.import_module(f"braintumor.{name}")
    monkeypatch.chdir(tmp_path)  # not the repository root
    out = ["--out", str(tmp_path / "out")]
    if name == "training.package":
        out += ["--report", str(tmp_path / "report")]
    assert mod.main(["--runs", str(tmp_path / "nope"), *out]) == 2
    assert "nope: no such run folder" in _one_sentence(capsys)
    (tmp_path / "empty").mkdir()
    assert mod.main(["--runs", str(tmp_path / "empty"), *out]) == 2
    assert "empty: holds no fold runs (fold0, fold1, ..." in _one_sentence(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing written


def test_study_defaults_lie_in_the_repository(tmp_path: Path, monkeypatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from braintumor import diameter_study
    from braintumor.resolution_study import ROOT, study_parser

    monkeypatch.chdir(tmp_path)
    args = study_parser(None, "experiments/diameters", watershed=True).parse_args([])
    assert Path(args.watershed) == ROOT / "experiments" / "watershed"
    assert Path(args.out) == ROOT / "experiments" / "diameters"
    runs = tmp_path / "runs" / "fold0"
    runs.mkdir(parents=True)
    (runs / "config.yaml").write_text("split: {val: [c1]}\n")
    assert diameter_study.main(["--runs", str(runs.parent), "--watershed",
                                str(tmp_path / "ws")]) == 2
    assert "ws: holds no cv_params.json" in _one_sentence(capsys)


@pytest.mark.parametrize("name", STUDIES)
def test_help_keeps_the_paragraphs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    mod = importlib.import_module(f"braintumor.{name}")
    with pytest.raises(SystemExit) as exit_:
        mod.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "%%" not in text
    doc = mod.__doc__
    assert doc is not None
    paragraphs = [p for p in doc.strip().split("\n\n") if p.strip()]
    assert len(paragraphs) > 1
    for para in paragraphs[:3]:  # each starts its own line, as written
        first = para.splitlines()[0].rstrip()
        assert f"\n{first}\n" in f"\n{text}", (name, first)


def test_watershed_alone_needs_no_cnn_runs(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The diameter and resolution studies' watershed rows are reproduced without the
    CNN's fold runs (the cases come from the data folder); a method they lack is one
    sentence."""
    from braintumor import diameter_study
    from braintumor.phantom import make_case, write_case
    from braintumor.resolution_study import study_cases

    data = tmp_path / "data"
    write_case(make_case((48, 48, 32), case_id="pat1"), data)
    held = study_cases(tmp_path / "no_runs", data, "watershed")
    assert held == {"pat1": None}
    with pytest.raises(Exception, match="no such run folder"):
        study_cases(tmp_path / "no_runs", data, "watershed,hybrid")
    assert diameter_study.main(["--runs", str(tmp_path / "no_runs"), "--data", str(data),
                                "--methods", "watershed,cnnn",
                                "--out", str(tmp_path / "out")]) == 2
    assert "--methods takes cnn, watershed and hybrid" in _one_sentence(capsys)
    # a case the watershed's cross-validation did not hold out has no parameters
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "cv_params.json").write_text('{"0": {"test": ["other"], "params": {}}}')
    assert diameter_study.main(["--runs", str(tmp_path / "no_runs"), "--data", str(data),
                                "--methods", "watershed", "--watershed", str(ws),
                                "--out", str(tmp_path / "out")]) == 2
    assert "pat1: in no fold of" in _one_sentence(capsys)


def test_missing_study_reruns_the_watershed_alone_and_keeps_the_cnn_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``missing_study --methods watershed`` needs no CNN fold runs: it reruns the
    watershed's rows and keeps the CNN's from the earlier ``cases.json`` in ``--out``."""
    import json

    from braintumor import missing_study
    from braintumor.phantom import make_case, write_case

    data, out, ws = tmp_path / "data", tmp_path / "out", tmp_path / "ws"
    write_case(make_case((48, 48, 32), case_id="pat1"), data)
    ws.mkdir()
    (ws / "cv_params.json").write_text('{"0": {"test": ["pat1"], "params": {}}}')
    args = ["--runs", str(tmp_path / "no_runs"), "--data", str(data), "--watershed", str(ws),
            "--out", str(out), "--inputs", "all four", "--methods", "watershed"]
    assert missing_study.main(args) == 2
    assert "no earlier rows to keep" in _one_sentence(capsys)
    out.mkdir()
    cnn = {"case": "pat1", "input": "all four", "method": "cnn", "WT": 0.5, "TC": 0.4,
           "ET": 0.3, "WT_hd95": 9.0, "TC_hd95": 9.0, "ET_hd95": 9.0}
    old = {**cnn, "method": "watershed", "WT": 0.0}
    (out / "cases.json").write_text(json.dumps([old, cnn]))
    assert missing_study.main(args) == 0
    rows = json.loads((out / "cases.json").read_text())
    assert [r["method"] for r in rows] == ["watershed", "cnn"]
    assert rows[1] == cnn and rows[0]["WT"] > 0.5  # the watershed's row is new
    assert "| all four | cnn | 0.500 |" in (out / "table.md").read_text()
