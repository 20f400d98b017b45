"""Studies on tiny synthetic data: folds, held-out-only scoring, tables, resume, the
Optuna search with pruning hook, MLflow tracking."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

from braintumor.cli import main  # noqa: E402
from braintumor.errors import InputError  # noqa: E402
from braintumor.training.experiments import (  # noqa: E402
    aggregate,
    config_key,
    load_study,
    study_folds,
)

BASE = {
    "synthetic": 4,
    "synthetic_shape": [48, 48, 32],
    "network": "compact_unet",
    "network_args": {"channels": [4, 8, 16, 32]},
    "patch": [32, 32, 32],
    "batch_size": 1,
    "steps_per_epoch": 2,
    "epochs": 2,
    "warmup_steps": 1,
    "threads": 1,
}


def _write(tmp: Path, kind: str = "compare", **extra: object) -> Path:
    doc: dict = {
        "study": {"name": f"tiny-{kind}", "kind": kind, "folds": 2, "run_folds": [0],
                  "parallel": 1, "out": str(tmp / "out"), "runs_dir": str(tmp / "runs")},
        "base": dict(BASE),
        "runs": [{"name": "a", "set": {"lr": 0.002}},
                 {"name": "ref", "reference": True,
                  "set": {"optimizer": "adam", "loss": "dice_sq",
                          "augment.scale_shift": 0.1, "augment.rotate": False}}],
    }
    doc.update(extra)
    p = tmp / f"{kind}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_load_study_applies_changes_and_overrides(tmp_path: Path) -> None:
    st = load_study(_write(tmp_path), budget_min=1.5, folds=[1])
    assert st.run_folds == [1] and st.budget_min == 1.5
    a, ref = st.runs
    assert a.cfg.lr == 0.002 and a.cfg.time_budget_min == 1.5
    assert ref.reference and ref.cfg.optimizer == "adam" and ref.cfg.loss == "dice_sq"
    assert ref.cfg.augment.scale_shift == 0.1 and not ref.cfg.augment.rotate
    assert ref.cfg.augment.flips  # untouched fields keep the base's value
    assert config_key(a.cfg) != config_key(ref.cfg)
    assert config_key(a.cfg) == config_key(a.cfg.replace(threads=2))  # threads: neutral


def test_load_study_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_study(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="fold 5"):
        load_study(_write(tmp_path), folds=[5])
    bad = _write(tmp_path)
    doc = yaml.safe_load(bad.read_text())
    doc["runs"][0]["set"] = {"no_such_field": 1}
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="no_such_field"):
        load_study(bad)


def test_a_study_file_not_in_utf8_is_one_sentence(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(_write(tmp_path).read_bytes().replace(b"tiny-compare", b"\xe9t\xe9"))
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not a text file in UTF-8" in err and "Traceback" not in err, err


def test_folds_are_patient_wise_and_cover_every_case(tmp_path: Path) -> None:
    st = load_study(_write(tmp_path))
    folds = study_folds(st)
    assert len(folds) == 2
    held = [c for f in folds for c in f["val"]]
    assert sorted(held) == sorted(set(held)) and len(held) == 4
    for f in folds:
        assert not set(f["train"]) & set(f["val"])


@pytest.mark.slow
def test_compare_study_end_to_end_and_resume(tmp_path: Path) -> None:
    path = _write(tmp_path)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["experiment", "--config", str(path), "--tracking-uri", uri]) == 0
    out = tmp_path / "out"
    for name in ("results.md", "results.csv", "cases.csv", "folds.json", "best.json",
                 "boxplot.png", "curves.png"):
        assert (out / name).exists(), name
    folds = json.loads((out / "folds.json").read_text())
    held_out = set(folds["folds"][0]["val"])
    with open(out / "cases.csv") as fh:
        cases = list(csv.DictReader(fh))
    # only held-out cases are scored, once per run
    assert {c["case"] for c in cases} == held_out
    assert len(cases) == 2 * len(held_out)
    for c in cases:
        for r in ("WT", "TC", "ET"):
            assert 0.0 <= float(c[f"{r}_dice"]) <= 1.0
            assert float(c[f"{r}_hd95"]) >= 0.0
    # the trainer never saw a held-out case
    saved = yaml.safe_load((tmp_path / "runs" / "a" / "fold0" / "config.yaml").read_text())
    assert not set(saved["split"]["train"]) & held_out and saved["split"]["val"] == []
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["a", "ref"]
    md = (out / "results.md").read_text()
    assert "(reference)" in md and "WT Dice" in md
    # intervals per run, and the best run against the reference on the same cases
    assert "Intervals and paired tests" in md and "| a | " in md and "(best)" in md
    ref_line = [line for line in md.splitlines() if line.startswith("| ref | ")][-1]
    assert ref_line.count("[") == 4  # three regions' intervals and the difference's
    wins, ties, losses = (int(x) for x in ref_line.rstrip(" |").split("|")[-1].split("/"))
    assert wins + ties + losses == len(held_out)
    best = json.loads((out / "best.json").read_text())
    assert best["name"] == "a"  # reference rows are never "best"
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["braintumor-tiny-compare"])
    assert len(runs) == 2 and "metrics.WT_dice" in runs.columns

    # rerun: finished runs are skipped (no retraining, nothing logged twice)
    before = (tmp_path / "runs" / "a" / "fold0" / "last.pt").stat().st_mtime
    assert main(["experiment", "--config", str(path), "--tracking-uri", uri]) == 0
    assert (tmp_path / "runs" / "a" / "fold0" / "last.pt").stat().st_mtime == before
    assert len(mlflow.search_runs(experiment_names=["braintumor-tiny-compare"])) == 2


def test_aggregate_uses_fold_sd_when_several_folds(tmp_path: Path) -> None:
    st = load_study(_write(tmp_path))

    def res(fold: int, d: float) -> dict:
        case = {"case": f"c{fold}", "infer_s": 1.0,
                **{f"{r}_{m}": d for r in ("WT", "TC", "ET")
                   for m in ("dice", "sensitivity", "specificity", "hd95")}}
        return {"name": "a", "fold": fold, "params": 10, "train_s": 60.0, "steps": 4,
                "cases": [case, dict(case)], "run_dir": str(tmp_path)}

    rows = aggregate(st, [res(0, 0.4), res(1, 0.8)])
    assert len(rows) == 1 and rows[0]["sd_over"] == "folds"
    assert rows[0]["WT_dice_mean"] == pytest.approx(0.6)
    assert rows[0]["WT_dice_sd"] == pytest.approx(0.2828, abs=1e-3)  # sd of 0.4, 0.8


@pytest.mark.slow
def test_search_runs_trials_prunes_and_retrains_best(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    path = _write(tmp_path, kind="search", runs=[], search={
        "trials": 3, "fold": 0, "inner_folds": 2, "startup_trials": 1,
        "storage": str(tmp_path / "optuna.db"),
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                  "augment.strength": {"low": 0.0, "high": 2.0},
                  "patch": {"choices": [32, 48]}}})
    doc = yaml.safe_load(path.read_text())
    doc["base"]["val_every"] = 1
    path.write_text(yaml.safe_dump(doc))
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none"]) == 0
    st = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done = [t for t in st.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 3
    assert st.trials[0].params["lr"] == pytest.approx(2e-3)  # the starting point first
    assert all(t.intermediate_values for t in done)  # validations were reported
    out = tmp_path / "out"
    assert (out / "trials.md").exists() and (out / "search.png").exists()
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["run"] == "search_best"
    # rerun: the study is complete, nothing more is trained
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none"]) == 0
    st = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(st.trials) == len(done) + sum(t.state.name == "FAIL" for t in st.trials)


def test_replace_accepts_dotted_and_nested_augment_changes() -> None:
    from braintumor.config import TrainConfig

    cfg = TrainConfig().replace(**{"augment.strength": 0.5, "augment": {"noise": False}})
    assert cfg.augment.strength == 0.5 and not cfg.augment.noise


def test_interrupted_trial_is_requeued_with_its_run_folder(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from braintumor.training.search import _requeue_interrupted, _trial_dir

    st = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    t = st.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    first = _trial_dir(tmp_path, t)
    t.set_user_attr("run_dir", str(first))  # left RUNNING, as after an interruption
    assert _requeue_interrupted(st) == 1
    states = [x.state.name for x in st.trials]
    assert states == ["FAIL", "WAITING"]
    again = st.ask()
    assert again.suggest_float("lr", 1e-4, 1e-2, log=True) == t.params["lr"]
    assert _trial_dir(tmp_path, again) == first  # resumes from the same last.pt


def test_compare_study_on_a_dask_cluster(tmp_path: Path) -> None:
    """The same study with its runs as tasks of a local Dask cluster: every run trained
    once, the same tables, and a rerun skips what is done."""
    pytest.importorskip("distributed")
    path = _write(tmp_path)
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none",
                 "--scheduler", "local:2"]) == 0
    out = tmp_path / "out"
    with open(out / "results.csv") as fh:
        assert [r["run"] for r in csv.DictReader(fh)] == ["a", "ref"]
    for run in ("a", "ref"):
        res = json.loads((tmp_path / "runs" / run / "fold0" / "result.json").read_text())
        assert res["name"] == run and res["cases"]
    before = (tmp_path / "runs" / "a" / "fold0" / "last.pt").stat().st_mtime
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none",
                 "--scheduler", "local:2"]) == 0
    assert (tmp_path / "runs" / "a" / "fold0" / "last.pt").stat().st_mtime == before


@pytest.mark.slow
def test_search_workers_on_a_dask_cluster(tmp_path: Path) -> None:
    """Two search workers as Dask tasks share one Optuna storage: the trials add up."""
    pytest.importorskip("distributed")
    optuna = pytest.importorskip("optuna")
    path = _write(tmp_path, kind="search", runs=[], search={
        "trials": 3, "fold": 0, "inner_folds": 2, "startup_trials": 1,
        "storage": str(tmp_path / "optuna.db"),
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    doc = yaml.safe_load(path.read_text())
    doc["study"]["parallel"] = 2
    path.write_text(yaml.safe_dump(doc))
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none",
                 "--scheduler", "local:2"]) == 0
    st = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done = [t for t in st.trials if t.state.name in ("COMPLETE", "PRUNED")]
    # each worker stops once the study holds 3 finished trials; one may still be running
    # its last when the other finishes the third (Optuna's MaxTrialsCallback)
    assert 3 <= len(done) <= 4
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)
    assert (tmp_path / "out" / "trials.md").exists()


def test_a_changed_run_is_trained_again_not_relabelled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study run whose config changed since it was trained (a new lr, a new budget) is
    trained afresh; its old folder is set aside, not deleted, and said so with what
    changed; the old weights are never scored under the new config."""
    import torch

    from braintumor.config import to_dict
    from braintumor.training.experiments import make_jobs, run_job

    st = load_study(_write(tmp_path))
    folds = study_folds(st)
    job = next(j for j in make_jobs(st, folds, "cpu") if j["name"] == "a")
    first = run_job(job)
    changed = dict(job, cfg=to_dict(st.runs[0].cfg.replace(
        lr=0.01, case_ids=tuple(folds[0]["train"]), fold=-1)))
    capsys.readouterr()
    second = run_job(changed)
    assert second["config_key"] != first["config_key"] and not second.get("skipped")
    run_dir = Path(job["run_dir"])
    assert capsys.readouterr().err == (
        f"{run_dir}: trained under another config (lr 0.002 -> 0.01); set aside as "
        "fold0.replaced-1 (nothing deleted), this run trains afresh\n")
    ck = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["lr"] == 0.01
    aside = run_dir.with_name(run_dir.name + ".replaced-1")
    old = torch.load(aside / "last.pt", map_location="cpu", weights_only=False)
    assert old["config"]["lr"] == 0.002
    assert run_job(changed)["skipped"]  # the same config again: nothing to do


def test_a_result_or_summary_cut_short_is_done_again_not_a_traceback(tmp_path: Path) -> None:
    """A result.json or summary.json cut short (a kill or a full disk while it was
    written) stopped every rerun of the study with a JSONDecodeError traceback: the fold
    is scored again (its summary rewritten from its checkpoint), with no retraining."""
    from braintumor.training.experiments import make_jobs, run_job

    st = load_study(_write(tmp_path))
    job = next(j for j in make_jobs(st, study_folds(st), "cpu") if j["name"] == "a")
    first = run_job(job)
    run_dir = Path(job["run_dir"])
    last = (run_dir / "last.pt").read_bytes()
    for name in ("result.json", "summary.json"):
        (run_dir / "result.json").unlink()
        text = (run_dir / name).read_text() if name == "summary.json" else ""
        (run_dir / name).write_text(text[:40] if text else json.dumps(first)[:40])
        again = run_job(job)
        assert not again.get("skipped"), name
        assert [{**c, "infer_s": 0} for c in again["cases"]] == \
            [{**c, "infer_s": 0} for c in first["cases"]]
        assert again["epochs"] == first["epochs"] and again["steps"] == first["steps"]
        assert (run_dir / "last.pt").read_bytes() == last  # not trained again
        for done in ("result.json", "summary.json"):
            json.loads((run_dir / done).read_text())  # whole again
    assert run_job(job)["skipped"]


@pytest.mark.parametrize("edit, says", [
    (lambda d: d["study"].update(budget_minutes=3), "unknown 'study:' settings: budget_minutes"),
    (lambda d: d["study"].update(folds="x"), "wrong kind"),
    (lambda d: d.update(runs={"a": 1}), "'runs:' must be a list"),
    (lambda d: d["runs"][0].update(set=[1]), "'set:' must be a mapping"),
    (lambda d: d["runs"][0]["set"].update(lr="fast"), "lr must be a number"),
    (lambda d: d["study"].update(folds=1), "2 folds or more"),
])
def test_study_mistakes_are_one_sentence(tmp_path: Path, edit: object, says: str) -> None:
    path = _write(tmp_path)
    doc = yaml.safe_load(path.read_text())
    edit(doc)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=says):
        load_study(path)
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none"]) == 2


@pytest.mark.parametrize("space, says", [
    ({"learning_rate": {"low": 0.001, "high": 0.01}}, "not a config field"),
    ({"lr": {"high": 0.01}}, "needs 'choices"),
    ({"dropout": {"low": 0.5, "high": 1.5}}, "dropout high 1.5 cannot be trained: dropout "
                                             "and label_smoothing must be under 1"),
    ({"patch": {"choices": [32, 24, 40]}}, r"patch choice 24 cannot be trained: patch "
                                           r"\[24, 24, 24\] does not fit network compact_unet"),
    ({"lr": {"low": 0.01, "high": 0.001}}, "lr low 0.01 is above high 0.001"),
    ({"lr": {"low": 0, "high": 0.01, "log": True}}, "low must be above 0"),
])
def test_search_space_mistakes_are_one_sentence(tmp_path: Path, space: dict,
                                                says: str) -> None:
    from braintumor.training.search import search_settings

    path = _write(tmp_path, kind="search", search={"space": space, "trials": 1})
    with pytest.raises(InputError, match=says):
        search_settings(load_study(path))


def test_search_choices_are_checked_together(tmp_path: Path) -> None:
    """A patch that fits the base network but not another network the search may pick
    with it is refused before the search starts."""
    from braintumor.training.search import search_settings

    path = _write(tmp_path, kind="search", base={**BASE, "patch": [64, 64, 64]}, search={
        "trials": 1, "space": {
            "patch": {"choices": [64, 48]},
            "network_args": {"choices": [{"channels": [4, 8, 16, 32]},
                                         {"channels": [2, 4, 8, 16, 32]}]}}})
    with pytest.raises(InputError, match=r"network_args \{'channels': \[2, 4, 8, 16, 32\]\} "
                                         r"with patch 48 cannot be trained: .* multiple of 32"):
        search_settings(load_study(path))


def test_more_folds_than_cases_is_one_sentence() -> None:
    from braintumor.training.data import kfold_split

    with pytest.raises(InputError, match="5 folds need at least 5 cases; there are 3"):
        kfold_split(["a", "b", "c"], 5)


def test_a_run_that_does_not_fit_its_network_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["runs"][0]["set"]["network_args"] = {"chanels": [4, 8, 16, 32]}
    doc["runs"][1]["set"]["patch"] = [24, 24, 24]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="run a: network_args chanels: not an argument"):
        load_study(path)
    doc["runs"][0]["set"].pop("network_args")
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"run ref: patch \[24, 24, 24\] does not fit"):
        load_study(path)


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan")])
def test_a_budget_must_be_above_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     budget: float) -> None:
    """--budget 0 or below would train for the file's epochs (100000 in the shipped
    studies) and set the finished runs aside: refused in one sentence."""
    path = _write(tmp_path)
    with pytest.raises(InputError, match="--budget must be a number of minutes above 0"):
        load_study(path, budget_min=budget)
    assert main(["experiment", "--config", str(path), "--budget", str(budget),
                 "--tracking-uri", "none"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    doc = yaml.safe_load(path.read_text())
    doc["study"]["budget_min"] = -1
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="budget_min must be a number of minutes above 0"):
        load_study(path)


def test_reproduce_line_gives_the_overrides(tmp_path: Path) -> None:
    from braintumor.training.experiments import markdown_table

    st = load_study(_write(tmp_path), budget_min=0.05, folds=[1])
    md = markdown_table(st, [])
    assert f"Reproduce: `braintumor experiment --config {st.path} --budget 0.05 --folds 1`" in md


def test_base_from_an_unfinished_study_is_refused(tmp_path: Path) -> None:
    done = tmp_path / "done"
    done.mkdir()
    (done / "best.json").write_text(json.dumps({"name": "a", "complete": False,
                                                "config": {"lr": 0.001}}))
    path = _write(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["study"]["base_from"] = str(done)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="that study has not finished"):
        load_study(path)


def test_a_search_interrupted_by_ctrl_c_is_requeued(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a trial leaves it as SIGTERM does (RUNNING, not FAIL, which Optuna
    never runs again), without a traceback; the next session re-queues it with its run
    folder, so it resumes from its last.pt."""
    import os
    import signal

    optuna = pytest.importorskip("optuna")
    from braintumor.training.search import _requeue_interrupted, _trial_dir
    from braintumor.training.trainer import Trainer

    def ctrl_c(self: Trainer) -> dict:
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the signal did not stop the trial")

    monkeypatch.setattr(Trainer, "fit", ctrl_c)
    path = _write(tmp_path, kind="search", runs=[], search={
        "trials": 2, "fold": 0, "inner_folds": 2, "storage": str(tmp_path / "optuna.db"),
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    assert main(["experiment", "--config", str(path), "--tracking-uri", "none"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "re-queued" in err and err.count("\n") == 1
    st = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    (t,) = st.trials
    assert t.state.name == "RUNNING"
    assert _requeue_interrupted(st) == 1
    again = st.ask()
    assert again.suggest_float("lr", 1e-4, 1e-2, log=True) == t.params["lr"]
    assert _trial_dir(tmp_path / "runs", again) == Path(t.user_attrs["run_dir"])


def _search(tmp_path: Path, **search: object) -> Path:
    return _write(tmp_path, kind="search", runs=[], search={
        "trials": 2, "fold": 0, "inner_folds": 2, "storage": str(tmp_path / "optuna.db"),
        "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                  "patch": {"choices": [32, 48]}}, **search})


def test_a_search_resumes_only_with_its_own_settings(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The storage keeps what defines a trial; a rerun with another space (Optuna's raw
    'dynamic value space' error), budget (trials of two budgets mixed silently) or outer
    fold is refused in one sentence that says what changed and how to start afresh."""
    pytest.importorskip("optuna")
    from braintumor.training.search import _open, check_storage, search_settings

    path = _search(tmp_path)
    st = load_study(path, budget_min=0.1)
    settings = search_settings(st)
    check_storage(st, settings, _open(st, settings))  # the first session records them
    check_storage(st, settings, _open(st, settings))  # the same settings: resumed
    doc = yaml.safe_load(path.read_text())
    doc["search"]["space"]["patch"]["choices"] = [32, 64]
    path.write_text(yaml.safe_dump(doc))
    for args, says in [([], "search space patch {choices: [32, 48]} -> {choices: [32, 64]}"),
                       (["--budget", "0.2"], "budget_min 0.1 -> 0.2"),
                       (["--folds", "1"], "fold 0 -> 1")]:
        if args:
            path.write_text(_search(tmp_path).read_text())
        assert main(["experiment", "--config", str(path), "--tracking-uri", "none",
                     *(args or ["--budget", "0.1"])]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert f"give another 'search: storage' or delete {tmp_path / 'optuna.db'}" in err
    assert not (tmp_path / "runs").exists()  # refused before any training


def test_search_folds_option_picks_the_outer_fold(tmp_path: Path) -> None:
    from braintumor.training.search import search_settings

    path = _search(tmp_path)
    assert search_settings(load_study(path, folds=[1]))["fold"] == 1
    with pytest.raises(InputError, match="a search runs on one outer fold; give one --folds "
                                         "value, not 0 1"):
        search_settings(load_study(path, folds=[0, 1]))


def test_failed_search_workers_fail_the_command_once(tmp_path: Path) -> None:
    """Worker processes that fail make the search fail with their error said once (a
    crashed worker used to end with exit 0)."""
    from braintumor.errors import RunFailed
    from braintumor.training.search import _run_processes

    err = [str(tmp_path / f"w{i}.txt") for i in range(2)]
    bad_input = ("from braintumor.errors import InputError\n"
                 "raise InputError('init_from: no checkpoint at x.pt.')",)
    with pytest.raises(InputError) as exc:
        _run_processes(exec, [bad_input, bad_input], err, stagger_s=0)
    assert str(exc.value) == ("search worker 0 failed: init_from: no checkpoint at x.pt (so "
                              "did 1 other search worker).")
    with pytest.raises(RunFailed, match=r"search worker 0 failed: stopped with exit status 3 "
                                        r"\(1 other search worker failed otherwise\)"):
        _run_processes(exec, [("import os; os._exit(3)",), ("1/0",)], err, stagger_s=0)
    with pytest.raises(RunFailed, match=r"search worker 1 failed: failed unexpectedly "
                                        r"\(ZeroDivisionError: division by zero\) \(traceback"):
        _run_processes(exec, [("pass",), ("1/0",)], err, stagger_s=0)
    assert "ZeroDivisionError" in Path(err[1]).read_text()


def test_a_fold_given_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--folds 0 0`` would score fold 0's held-out cases twice (n_cases doubled, an SD
    over folds of 0): one sentence, before any training."""
    with pytest.raises(InputError, match="fold 0 is given twice"):
        load_study(_write(tmp_path), folds=[0, 0])
    assert main(["experiment", "--config", str(_write(tmp_path)), "--folds", "0", "1", "0",
                 "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err
    assert "fold 0 is given twice" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_search_log_says_when_trials_have_no_time_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optuna")
    from braintumor.training import search

    monkeypatch.setattr(search, "_run_workers", lambda *a, **k: None)  # no trial runs
    lines: list[str] = []
    search.run_search(load_study(_search(tmp_path)), tracking_uri=None, log=lines.append)
    assert "2 trials, no time budget (each run trains for its epochs)" in lines[0], lines
    lines.clear()
    (tmp_path / "b").mkdir()
    search.run_search(load_study(_search(tmp_path / "b"), budget_min=0.5), tracking_uri=None,
                      log=lines.append)
    assert "2 trials, 0.5 min each" in lines[0], lines


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_study_workers_end_when_the_study_is_killed_outright(tmp_path: Path) -> None:
    """``kill -9`` of ``experiment --parallel N`` left its workers training on (parent 1),
    and a rerun trained the same run folders beside them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, time\n"
        "from braintumor.training.experiments import worker_pool\n"
        "if __name__ == '__main__':\n"
        "    ex = worker_pool(1)\n"
        "    print(ex.submit(os.getpid).result(), flush=True)\n"
        "    ex.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env=env)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        end = time.monotonic() + 10
        while _alive(child) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_rerun_with_other_folds_keeps_the_earlier_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A rerun with other --folds or --budget overwrote results.md/csv, cases.csv and
    best.json with a partial table: the earlier ones are kept aside, said in one line."""
    from braintumor.training import experiments as E

    monkeypatch.setattr(E, "execute", lambda *a, **k: [])  # no training here
    path = _write(tmp_path)
    out = tmp_path / "out"
    E.run_study(load_study(path), tracking_uri=None, log=lambda s: None)
    for name in E.OUTPUT_FILES:  # as a finished study with fold 0 left them
        (out / name).write_text(f"earlier {name}")
    E.run_study(load_study(path), tracking_uri=None, log=lambda s: None)  # same: kept
    assert (out / "results.md").read_text() == "earlier results.md"
    assert not list(out.glob("*.prev-*"))
    capsys.readouterr()
    E.run_study(load_study(path, folds=[1]), tracking_uri=None, log=lambda s: None)
    err = capsys.readouterr().err
    assert "the earlier tables (folds [0], no time budget) are kept as results.prev-1.md" in err
    assert "this run (folds [1], no time budget)" in err and err.count("\n") == 1
    assert (out / "results.prev-1.md").read_text() == "earlier results.md"
    assert (out / "cases.prev-1.csv").read_text() == "earlier cases.csv"
    assert (out / "best.prev-1.json").exists() and not (out / "best.json").exists()
    (out / "results.md").write_text("fold 1's")
    E.run_study(load_study(path, folds=[1], budget_min=0.5), tracking_uri=None,
                log=lambda s: None)
    assert (out / "results.prev-2.md").read_text() == "fold 1's"
    assert "0.5 min/run" in capsys.readouterr().err


def test_a_rerun_naming_the_same_folds_in_another_order_keeps_its_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--folds 1 0 after --folds 0 1 runs the same folds: nothing is moved aside."""
    from braintumor.training import experiments as E

    monkeypatch.setattr(E, "execute", lambda *a, **k: [])  # no training here
    path = _write(tmp_path)
    out = tmp_path / "out"
    E.run_study(load_study(path, folds=[0, 1]), tracking_uri=None, log=lambda s: None)
    for name in E.OUTPUT_FILES:
        (out / name).write_text(f"earlier {name}")
    capsys.readouterr()
    E.run_study(load_study(path, folds=[1, 0]), tracking_uri=None, log=lambda s: None)
    assert not list(out.glob("*.prev-*"))
    assert "earlier tables" not in capsys.readouterr().err


def test_a_held_out_reference_stored_in_another_orientation_is_scored_on_the_cases_grid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The held-out reference is read as the cache was made: a label map stored flipped
    beside images that are not is turned onto their grid, not compared mirrored."""
    import nibabel as nib
    import numpy as np

    from braintumor.config import TrainConfig
    from braintumor.phantom import make_case, write_case
    from braintumor.training import data as D
    from braintumor.training.experiments import held_out_case

    case = make_case(shape=(40, 44, 36), seed=5, case_id="flip_1")
    folder = write_case(case, tmp_path / "data")
    seg = folder / "flip_1_seg.nii.gz"
    img = nib.load(str(seg))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = img.shape[0] - 1  # voxel i stored at n-1-i: the same grid, flipped
    aff = img.affine @ flip
    out = nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), aff)
    out.set_sform(aff, 1)
    out.set_qform(aff, 1)
    nib.save(out, str(seg))
    monkeypatch.setattr(D, "load_prepared", lambda path: "prepared")
    cfg = TrainConfig().replace(data=str(tmp_path / "data"), cache=str(tmp_path / "cache"))
    prep, ref, spacing = held_out_case(cfg, "flip_1")
    assert prep == "prepared" and ref.shape == case.label.shape
    assert np.array_equal(ref, case.label)  # not its mirror image
    assert not np.array_equal(ref[::-1], case.label)


def test_trials_sharing_a_run_folder_are_each_logged_once(tmp_path: Path) -> None:
    """An interrupted trial and the trial that repeats it share a run folder; its marker
    held one trial, so each rerun of the search logged both again (two more MLflow runs
    every time). Each is logged once however often the search is rerun."""
    pytest.importorskip("mlflow")
    from types import SimpleNamespace

    import mlflow

    from braintumor.training.tracking import Tracker

    def trial(number: int, state: str, value: float | None) -> SimpleNamespace:
        return SimpleNamespace(number=number, state=SimpleNamespace(name=state),
                               params={"lr": 0.001}, intermediate_values={1: 0.2},
                               value=value)

    run_dir = tmp_path / "runs" / "trials" / "trial001"
    run_dir.mkdir(parents=True)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    failed, repeated = trial(1, "FAIL", None), trial(3, "COMPLETE", 0.4)
    for _ in range(3):  # the session that finished, then two unchanged reruns
        tracker = Tracker(uri, "tiny-search")
        for t in (failed, repeated):
            tracker.log_trial(t, run_dir, "tiny-search")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["braintumor-tiny-search"])
    assert sorted(runs["tags.mlflow.runName"]) == ["trial-1", "trial-3"]
    # a folder whose marker names one trial, as markers were written before they kept
    # every trial: that trial is not logged again when the other is
    old = tmp_path / "runs" / "trials" / "trial002"
    old.mkdir()
    (old / "tracked.json").write_text(json.dumps({"uri": uri, "key": "trial4-COMPLETE",
                                                  "run_id": "earlier"}))
    tracker = Tracker(uri, "tiny-search")
    for t in (trial(2, "FAIL", None), trial(4, "COMPLETE", 0.5)):
        tracker.log_trial(t, old, "tiny-search")
    tracker.log_trial(trial(4, "COMPLETE", 0.5), old, "tiny-search")
    runs = mlflow.search_runs(experiment_names=["braintumor-tiny-search"])
    assert sorted(runs["tags.mlflow.runName"]) == ["trial-1", "trial-2", "trial-3"]
