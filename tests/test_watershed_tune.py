"""braintumor.watershed_tune's native enhancing-tumour and FLAIR edema tools on real
cases (skipped without the shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from braintumor import labels as L
from braintumor import watershed_tune as T
from braintumor.watershed import DEFAULT_PARAMS

CASES = ("Brats18_TCIA02_606_1", "Brats18_TCIA13_623_1")


@pytest.fixture(scope="module")
def prepared(brats_dir: Path, tmp_path_factory) -> dict[str, T.Prepared]:
    src = tmp_path_factory.mktemp("brats")
    for c in CASES:
        (src / c).symlink_to(brats_dir / c)
    cache = tmp_path_factory.mktemp("cache")
    paths = T.cache_cases(src, cache)
    return {p.stem: T.Prepared(p, 2) for p in paths}


@pytest.mark.realdata
def test_native_step_only_redraws_the_enhancing_tumour(prepared) -> None:
    pc = prepared["Brats18_TCIA02_606_1"]
    grid, full = pc.run_grid(DEFAULT_PARAMS), pc.run(DEFAULT_PARAMS)
    assert not np.array_equal(grid, full)
    changed = grid != full
    # only ET and necrosis trade places, plus ET at most one voxel outside the core
    assert set(np.unique(full[changed])) <= {L.NCR, L.ET}
    core_before = np.isin(grid, [L.NCR, L.ET])
    assert (core_before & ~np.isin(full, [L.NCR, L.ET])).sum() == 0
    ref = pc.label == L.ET

    def dice(a: np.ndarray) -> float:
        return 2 * float((a & ref).sum()) / float(a.sum() + ref.sum())

    assert dice(full == L.ET) > dice(grid == L.ET)  # its thin rim is the step's case
    off = pc.run(DEFAULT_PARAMS.replace(et_native=99.0))
    assert np.array_equal(off, grid)


@pytest.mark.realdata
def test_round_trip_and_reference_enhancement(prepared, tmp_path, monkeypatch) -> None:
    rt = T.round_trip(prepared, list(CASES))
    for c in CASES:
        assert rt[c]["WT"] > 0.9 and rt[c]["ET"] < rt[c]["WT"]
    monkeypatch.setattr(T, "_prepare_all", lambda factor: (list(CASES), prepared))
    rows = T.reference_enhancement(out=tmp_path)
    # the expert ET of Brats18_TCIA13_623_1 does not enhance; that of 606 does
    assert rows["Brats18_TCIA13_623_1"]["passing"] < 0.2 < 0.8 < \
        rows["Brats18_TCIA02_606_1"]["passing"]
    assert (tmp_path / "reference_et.md").read_text().count("| Brats18_") == 2


@pytest.mark.realdata
def test_flair_growing_only_adds_edema_and_the_cv_shortcut_is_exact(prepared) -> None:
    pc = prepared["Brats18_TCIA13_623_1"]
    off = DEFAULT_PARAMS.replace(flair_grow=99.0)
    before, after = pc.run(off), pc.run(DEFAULT_PARAMS)
    # what the CV scores each candidate with is what --method watershed computes
    short = pc.native_et(pc.to_native(pc.grow_edema(pc.run_work(off), DEFAULT_PARAMS)),
                         DEFAULT_PARAMS)
    assert np.array_equal(short, after)
    added = (after > 0) & (before == 0)
    # edema, bar a few native voxels at the core's edge (a working-grid voxel's label
    # comes back by a smooth upsampling of its neighbours)
    assert added.sum() > 1000 and (after[added] == L.ED).mean() > 0.99
    core = np.isin(before, [L.NCR, L.ET])
    assert (core != np.isin(after, [L.NCR, L.ET])).sum() < 0.01 * core.sum()
    ref = pc.label > 0

    def dice(a: np.ndarray) -> float:
        return 2 * float((a & ref).sum()) / float(a.sum() + ref.sum())

    assert dice(after > 0) > dice(before > 0)  # its faint edema is the step's case


@pytest.mark.realdata
def test_flair_cv_chooses_on_training_cases_and_writes_its_tables(
        prepared, tmp_path, monkeypatch) -> None:
    import json

    from braintumor.watershed import params_from

    real = json.loads((T.NATIVE_OUT / "cv_params.json").read_text())
    folds = {"0": {"test": [CASES[0]], "params": real["0"]["params"]},
             "1": {"test": [CASES[1]], "params": real["1"]["params"]}}
    (tmp_path / "native_et").mkdir()
    (tmp_path / "native_et" / "cv_params.json").write_text(json.dumps(folds))
    monkeypatch.setattr(T, "EXPERIMENTS", tmp_path)
    monkeypatch.setattr(T, "_prepare_all", lambda factor, missing=(): (list(CASES), prepared))
    monkeypatch.setattr(T, "flair_candidates", lambda: [
        {"flair_grow": 99.0}, {"flair_grow": 1.4, "flair_asym": 0.5, "flair_reach": 24}])
    summary = T.run_flair_cv()
    out = tmp_path / "flair_edema"
    chosen = json.loads((out / "cv_params.json").read_text())
    assert set(chosen) == {"0", "1"} and chosen["0"]["test"] == [CASES[0]]
    # fold 0 chose on case 1 only: its training gain is that case's gain
    pc1 = prepared[CASES[1]]
    base = params_from(real["0"]["params"]).replace(flair_grow=99.0)
    on = base.replace(flair_grow=1.4, flair_asym=0.5, flair_reach=24)

    def mean_dice(pc: T.Prepared, p) -> float:
        sc = T.score_labels(pc.run(p), pc.label, pc.spacing, pc.total, hd=False)
        return float(np.mean([sc[r]["dice"] for r in L.REGIONS]))

    gain = mean_dice(pc1, on) - mean_dice(pc1, base)
    assert chosen["0"]["train_gain"] == pytest.approx(max(gain, 0.0), abs=1e-9)
    assert (chosen["0"]["flair"]["flair_grow"] < 50) == (gain > 0)
    rows = (out / "cv_watershed.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith(CASES[0])
    # without the step, held out, is the fold's own watershed
    without = (out / "cv_without_step.csv").read_text().splitlines()[1].split(",")
    pc0 = prepared[CASES[0]]
    sc = T.score_labels(pc0.run(base), pc0.label, pc0.spacing, pc0.total, hd=False)
    assert float(without[2]) == pytest.approx(sc["WT"]["dice"], abs=1e-4)
    # the summary's means are the tables' rows
    for stem, key in (("cv_watershed", "with"), ("cv_without_step", "without")):
        lines = (out / f"{stem}.csv").read_text().splitlines()[1:]
        wt = [float(line.split(",")[2]) for line in lines]
        assert summary[key]["WT"]["dice"] == pytest.approx(np.mean(wt), abs=1e-4)
    for name in ("cv_without_step.md", "summary.json", "params.json"):
        assert (out / name).exists()


@pytest.mark.realdata
def test_prepared_bias_correction_is_what_the_watershed_runs(prepared, brats_dir) -> None:
    """The CV's cached case with ``n4`` corrects the same modalities as
    :func:`segment_watershed` does, and scores the labels it would give."""
    from braintumor.cases import load_case
    from braintumor.preprocess import bounding_box, brain_mask
    from braintumor.watershed import segment_watershed

    pc = prepared["Brats18_TCIA02_606_1"]
    plain, two = pc.inputs(0), pc.inputs(2)
    assert np.array_equal(plain[0][2:], two[0][2:])  # T2 and FLAIR untouched
    assert not np.array_equal(plain[1], two[1])  # native T1 and T1ce corrected
    p = DEFAULT_PARAMS.replace(n4=2)
    ours = pc.run(p)
    case = load_case(brats_dir / "Brats18_TCIA02_606_1")
    full = segment_watershed(case, params=p).labels
    box = bounding_box(brain_mask(case.image), margin=2)
    # the cache is the brain's box (2 voxels of margin); N4 fits on every 3rd voxel of
    # the brain's own box there too, so the two agree up to a few boundary voxels
    crop = full[box]
    assert crop.shape == ours.shape
    assert (crop != ours).mean() < 0.001
    assert not np.array_equal(ours, pc.run(p.replace(n4=0)))


def test_tune_reads_the_published_runs_config(monkeypatch, tmp_path: Path, capsys) -> None:
    """``tune --config configs/watershed.yaml`` runs the README's published command; flags
    override the file; a bad file is one sentence."""
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(T, "run_cv_shared", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(T, "run_cv", lambda *a, **k: calls.append((("per-fold", *a), k)))
    config = T.ROOT / "configs" / "watershed.yaml"
    assert T.main(["tune", "--config", str(config)]) == 0
    (folds, trials, factor), kw = calls.pop()
    assert (folds, trials, factor) == (7, 400, 2)
    assert (kw["local"], kw["minutes"], kw["study_name"], kw["missing"]) == \
        (3, 25, "shared_v5_rimfrac", ())
    readme = " ".join((T.ROOT / "README.md").read_text().split())
    assert ("watershed_tune tune --folds 7 \\ --trials 400 --local 3 --minutes 25 "
            "--study shared_v5_rimfrac") in readme
    assert T.main(["tune", "--config", str(config), "--trials", "5", "--minutes", "1",
                   "--without", "t1"]) == 0
    (_, trials, _), kw = calls.pop()
    assert trials == 5 and kw["minutes"] == 1 and kw["missing"] == ("t1",)
    assert kw["out"] == T.EXPERIMENTS / "without_t1"
    assert T.main(["tune"]) == 0  # no config: the built-in defaults
    (folds, trials, _), kw = calls.pop()
    assert (folds, trials, kw["local"], kw["minutes"]) == (7, 50, 0, None)
    bad = tmp_path / "w.yaml"
    for text, said in (("trials: many\n", "trials is 'many'; it should be a whole number"),
                       ("cache: x\n", "unknown keys cache"),
                       ("search: tpe\n", "use shared-random or per-fold")):
        bad.write_text(text)
        assert T.main(["tune", "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    assert T.main(["tune", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert not calls


@pytest.mark.realdata
def test_reference_step_writes_under_root_not_the_committed_results(
        prepared, tmp_path, monkeypatch) -> None:
    """``--root`` names the results folder a rerun writes, so the committed
    ``experiments/watershed`` is left as it is."""
    before = (T.NATIVE_OUT / "reference_et.md").stat().st_mtime_ns
    monkeypatch.setattr(T, "_prepare_all", lambda factor: (list(CASES), prepared))
    assert T.main(["reference", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "native_et" / "reference_et.md").read_text().count("| Brats18_") == 2
    assert (T.NATIVE_OUT / "reference_et.md").stat().st_mtime_ns == before
