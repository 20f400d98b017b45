"""braintumor.stats and ``braintumor evaluate --against``: intervals and paired tests."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from braintumor import stats as S
from braintumor.cli import main
from braintumor.errors import InputError


def test_interval_matches_the_t_interval_on_a_large_normal_sample() -> None:
    x = np.random.default_rng(1).normal(0.7, 0.1, 300)
    ci = S.mean_ci(x)
    t_lo, t_hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert ci.n == 300 and ci.mean == pytest.approx(x.mean())
    assert ci.low == pytest.approx(t_lo, abs=0.003) and ci.high == pytest.approx(t_hi, abs=0.003)
    assert S.mean_ci(x) == ci  # seeded: the same table on every run


def test_interval_covers_the_true_mean_of_skewed_dice_like_scores() -> None:
    """Coverage over 150 draws of 14 cases from a skewed distribution with a known mean
    (Beta(5, 1.5): mean 0.769, a tail of failed cases like Dice scores)."""
    rng = np.random.default_rng(7)
    true = 5 / 6.5
    hits = []
    widths = []
    for i in range(150):
        x = rng.beta(5, 1.5, 14)
        ci = S.mean_ci(x, n_resamples=1000, seed=i)
        hits.append(ci.low <= true <= ci.high)
        widths.append(ci.high - ci.low)
    coverage = float(np.mean(hits))
    assert 0.85 <= coverage <= 0.99, coverage
    assert 0.08 < float(np.mean(widths)) < 0.25


def test_degenerate_inputs() -> None:
    same = S.mean_ci([0.8, 0.8, 0.8])
    assert (same.low, same.high) == (0.8, 0.8) and same.mean == pytest.approx(0.8)
    one = S.mean_ci([0.5, math.nan])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low) and one.text() == "0.500"
    assert S.mean_ci([]).n == 0 and S.mean_ci([]).text() == "-"


def test_paired_finds_a_consistent_gain_and_counts_cases() -> None:
    rng = np.random.default_rng(3)
    base = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0.5, 0.9, 14))}
    better = {c: v + 0.05 + float(rng.normal(0, 0.01)) for c, v in base.items()}
    p = S.paired(better, base, "WT", "dice")
    assert p.n == 14 and p.wins == 14 and p.losses == 0
    assert p.diff == pytest.approx(0.05, abs=0.01) and p.low > 0 and p.p < 0.001
    # HD95: lower is better, so the method with the larger distances loses
    q = S.paired(better, base, "WT", "hd95")
    assert q.wins == 0 and q.losses == 14 and q.diff > 0


def test_fewer_false_lesions_is_better() -> None:
    p = S.paired({"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, "WT", "lesion_fp")
    assert (p.wins, p.ties, p.losses) == (1, 1, 0)


def test_paired_without_a_difference() -> None:
    a = {"x": 0.8, "y": 0.6, "z": 0.7}
    p = S.paired(a, dict(a))
    assert p.p == 1.0 and p.ties == 3 and p.diff == 0.0 and p.low == p.high == 0.0
    noise = {"x": 0.81, "y": 0.59, "z": 0.71, "w": 0.5}
    p = S.paired(noise, {**a, "w": 0.52})
    assert p.n == 4 and p.p > 0.2 and p.low < 0 < p.high and p.wins == 2 and p.losses == 2
    with pytest.raises(InputError, match="share no scored case"):
        S.paired({"a": 1.0}, {"b": 1.0}, "WT", "dice")


def test_signed_rank_p_is_exact_and_ignores_ties() -> None:
    assert S.signed_rank_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)  # 2 / 2^3
    # 5 wins and 9 ties: the test is over the 5, and its floor is 2 / 2^5
    assert S.signed_rank_p([0.1, 0.2, 0.3, 0.4, 0.5] + [0.0] * 9) == pytest.approx(0.0625)
    assert S.signed_rank_p([0.0, 0.0]) == 1.0 and S.signed_rank_p([]) == 1.0
    rng = np.random.default_rng(5)
    for n in (4, 9, 17):
        d = rng.normal(0.3, 1.0, n)
        assert S.signed_rank_p(d) == pytest.approx(sps.wilcoxon(d, method="exact").pvalue)
    # equal magnitudes: midranks, against every one of the 2^10 sign flips
    import itertools

    d = np.array([1, 1, 2, -2, 3, 3, 3, -1, 4, 5.0])
    r = sps.rankdata(np.abs(d))
    centre, obs = r.sum() / 2, r[d > 0].sum()
    far = [abs(r[np.array(s, bool)].sum() - centre) >= abs(obs - centre) - 1e-9
           for s in itertools.product([0, 1], repeat=d.size)]
    assert S.signed_rank_p(d) == pytest.approx(np.mean(far))


def test_paired_counts_only_untied_cases_in_the_test() -> None:
    base = {f"c{i}": 0.5 for i in range(14)}
    better = {c: v + (0.1 * (i + 1) / 5 if i < 5 else 0.0)
              for i, (c, v) in enumerate(base.items())}
    p = S.paired(better, base, "WT", "dice")
    assert (p.cases, p.n, p.wins, p.ties, p.losses) == (14, 5, 5, 9, 0)
    assert p.p == pytest.approx(0.0625)  # not the normal approximation's 0.043
    assert "Wilcoxon p over 5 untied cases cannot fall below 0.0625" in S.rough_note(14, 5)
    assert S.rough_note(14, 14) == "" and "over 3 cases" in S.rough_note(3)


def test_scores_from_long_and_wide_rows() -> None:
    long = [{"case": "a", "method": "cnn", "region": "WT", "dice": "0.9", "hd95": "3"},
            {"case": "a", "method": "ws", "region": "WT", "dice": "0.8", "hd95": ""},
            {"case": "mean", "method": "cnn", "region": "WT", "dice": "0.9"}]
    s = S.scores_from_rows(long, method="cnn")
    assert s == {("a", "WT", "dice"): 0.9, ("a", "WT", "hd95"): 3.0}
    wide = [{"case": "a", "fold": "1", "WT_dice": "0.9", "TC_dice": "0.7", "seconds": "2"}]
    assert S.scores_from_rows(wide) == {("a", "WT", "dice"): 0.9, ("a", "TC", "dice"): 0.7}


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_module_command_on_a_study_csv(tmp_path: Path, capsys) -> None:
    rows = []
    for i in range(8):
        for method, d in (("combined", 0.85 + 0.01 * i), ("cnn", 0.80 + 0.01 * i)):
            rows.append({"case": f"c{i}", "fold": 0, "method": method, "region": "WT",
                         "dice": d, "hd95": 5.0})
    path = _write(tmp_path / "study.csv", rows)
    assert S.main([str(path), "--method", "combined", "--baseline", "cnn"]) == 0
    out = capsys.readouterr().out
    assert "| combined | WT | 8 | 0.885 [" in out
    assert "| WT | dice | 0.885 | 0.835 | +0.050 [+0.050, +0.050] |" in out
    assert "8 / 0 / 0" in out and "0 / 8 / 0" in out  # Dice: all better; HD95: all equal
    # without --method a table of several methods is refused, not silently merged
    assert S.main([str(path)]) == 2
    assert "several methods (combined, cnn); choose one with --method" in \
        capsys.readouterr().err
    # a study's cases.csv names its rows by run
    runs = _write(tmp_path / "cases.csv", [{**r, "run": r.pop("method")} for r in rows])
    assert S.main([str(runs), "--method", "cnn", "--metrics", "dice"]) == 0
    assert "| cnn | WT | 8 | 0.835 [" in capsys.readouterr().out
    assert S.main([str(tmp_path / "nope.csv")]) == 2
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    assert S.main([str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "no such results file" in err and "holds no per-case scores" in err
    assert "Traceback" not in err


def test_module_command_says_few_cases_are_rough(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "two.csv", [{"case": f"c{i}", "region": "WT", "dice": 0.8 + i / 10}
                                         for i in range(2)])
    assert S.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| two | WT | 2 | 0.850 [" in out
    assert "These are rough: a bootstrap interval over 2 cases is too narrow" in out
    with pytest.raises(SystemExit):
        S.main(["--help"])
    out = capsys.readouterr().out
    assert "95% bootstrap" in out and "%%" not in out


# ------------------------------------------------------------ evaluate --against

def labels2021(shift: int = 0) -> np.ndarray:
    lab = np.zeros((24, 24, 20), dtype=np.uint8)
    lab[5:19, 5:19, 4:16] = 2
    lab[8:16, 8:16, 6:14] = 4
    lab[10:14, 10:14, 8:12] = 1
    return np.roll(lab, shift, axis=0)


def save(lab: np.ndarray, path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), np.diag([1.0, 1.0, 1.5, 1.0])), str(path))


def _cases(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Six reference cases; ``good`` predictions equal them, ``poor`` ones are shifted
    by one to six voxels, so every case is worse in ``poor``."""
    ref, good, poor = tmp_path / "ref", tmp_path / "good", tmp_path / "poor"
    for i in range(6):
        case = f"case{i}"
        lab = labels2021(shift=i % 2)
        save(lab, ref / case / f"{case}_seg.nii.gz")
        save(lab, good / f"{case}.nii.gz")
        save(np.roll(lab, 1 + i, axis=1), poor / f"{case}.nii.gz")
    return ref, good, poor


def test_evaluate_against_a_baseline_folder_and_csv(tmp_path: Path, capsys) -> None:
    ref, good, poor = _cases(tmp_path)
    out = tmp_path / "res" / "good.csv"
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(poor), "--no-lesion-wise"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "good against poor" in text and "6 / 0 / 0" in text
    assert "These are rough: a bootstrap interval over 6 cases" in text and "CI low" in text
    assert text.count("a bootstrap interval over 6 cases") == 1  # said once, not per table
    assert "These are rough: the Wilcoxon p over 6 untied cases cannot fall below 0.0312" in text
    assert "95 % bootstrap interval of the mean" in text
    paired = list(csv.DictReader((tmp_path / "res" / "good_paired.csv").open()))
    assert [(r["region"], r["metric"]) for r in paired] == [
        (r, m) for r in ("WT", "TC", "ET") for m in ("dice", "hd95")]
    for r in paired:
        assert int(r["n"]) == 6
        if r["metric"] == "dice":
            assert float(r["mean_a"]) == 1.0 and float(r["diff"]) > 0.1
            assert int(r["wins"]) == 6 and float(r["low"]) > 0
            assert float(r["p"]) == pytest.approx(2 / 2 ** 6)  # exact two-sided minimum
    doc = json.loads((tmp_path / "res" / "good.json").read_text())
    assert doc["paired"]["against"] == str(poor) and len(doc["paired"]["rows"]) == 6
    lo, hi = doc["mean_ci95"]["WT"]["dice"]
    assert lo == hi == 1.0  # every case perfect: the interval is the value
    # the baseline as the CSV an earlier run wrote: the same comparison, reversed
    base = tmp_path / "res" / "poor.csv"
    assert main(["evaluate", "--pred", str(poor), "--ref", str(ref), "-o", str(base),
                 "--no-lesion-wise", "--quiet"]) == 0
    lo, hi = json.loads(base.with_suffix(".json").read_text())["mean_ci95"]["WT"]["dice"]
    assert 0 < lo < hi < 1
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o",
                 str(tmp_path / "again.csv"), "--against", str(base), "--quiet"]) == 0
    again = list(csv.DictReader((tmp_path / "again_paired.csv").open()))
    assert [r["diff"] for r in again] == [r["diff"] for r in paired]


def test_evaluate_against_bad_baselines(tmp_path: Path, capsys) -> None:
    ref, good, _ = _cases(tmp_path)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(tmp_path / "missing")]) == 2
    other = _write(tmp_path / "other.csv", [{"case": "zzz", "region": "WT", "dice": 0.5}])
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(other), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no such baseline folder or CSV" in err and "shares no scored case" in err
    assert "Traceback" not in err and not out.exists()


def test_evaluate_against_leaves_out_cases_neither_folder_predicts(tmp_path: Path,
                                                                  capsys) -> None:
    ref, good, poor = _cases(tmp_path)
    for i in (3, 4, 5):  # predicted by neither: no comparison, not three ties
        (good / f"case{i}.nii.gz").unlink()
        (poor / f"case{i}.nii.gz").unlink()
    out = tmp_path / "res" / "good.csv"
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(poor), "--no-lesion-wise"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "left out: 3 case(s) with no prediction in either folder" in text
    assert "Wilcoxon p over 3 untied cases cannot fall below 0.25" in text
    paired = list(csv.DictReader((tmp_path / "res" / "good_paired.csv").open()))
    for r in paired:
        assert (int(r["cases"]), int(r["n"]), int(r["ties"])) == (3, 3, 0)
        if r["metric"] == "dice":
            assert float(r["p"]) == pytest.approx(0.25)  # exact, three wins
            assert float(r["mean_a"]) == 1.0  # not diluted by the missing cases' zeros
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["paired"]["no_prediction_in_either"] == ["case3", "case4", "case5"]
    # a case only one side predicts is a comparison: the other side scores it missing
    (poor / "case2.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(poor), "--no-lesion-wise", "--quiet"]) == 0
    paired = list(csv.DictReader((tmp_path / "res" / "good_paired.csv").open()))
    assert all(int(r["cases"]) == 3 for r in paired)


def test_evaluate_against_a_csv_scored_otherwise_is_refused(tmp_path: Path, capsys) -> None:
    ref, good, poor = _cases(tmp_path)
    base = tmp_path / "poor.csv"
    assert main(["evaluate", "--pred", str(poor), "--ref", str(ref), "-o", str(base),
                 "--no-lesion-wise", "--quiet", "--hd95", "voxel"]) == 0
    capsys.readouterr()
    out = tmp_path / "good.csv"
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(base), "--no-lesion-wise", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "poor.csv was scored with hd95_method (--hd95) = voxel and these predictions " \
        "with surface" in err and "Traceback" not in err
    assert err.count("\n") == 1
    # scored the same way: compared
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(base), "--no-lesion-wise", "--quiet", "--hd95",
                 "voxel"]) == 0
    assert capsys.readouterr().err == ""
    # without the JSON beside it the settings cannot be checked: said, then compared
    base.with_suffix(".json").unlink()
    assert main(["evaluate", "--pred", str(good), "--ref", str(ref), "-o", str(out),
                 "--against", str(base), "--no-lesion-wise", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: poor.json") and "is not checked" in err


# ------------------------------------------------------------ the committed study

def test_significance_study_reproduces_the_committed_means(tmp_path: Path) -> None:
    from braintumor import significance_study as SS

    doc = SS.write(tmp_path)
    hybrid = json.loads((SS.EXPERIMENTS / "hybrid" / "summary.json").read_text())
    for method in ("cnn", "hybrid", "watershed", "combined"):
        for region in ("WT", "TC", "ET"):
            ci = doc["3d"]["methods"][method][region]["dice"]
            want = hybrid["methods"][method][region]["dice"]["mean"]
            assert ci["mean"] == pytest.approx(want, abs=1e-4) and ci["n"] == 14
            assert ci["low"] < ci["mean"] < ci["high"]
    lgg = json.loads((SS.EXPERIMENTS / "lgg2d" / "cv_results.json").read_text())
    for key in ("rgb", "grey", "jpeg50"):
        got = doc["2d"]["inputs"][key]["refined"]
        assert got["mean"] == pytest.approx(lgg["summary"][key]["refined"]["dice_mean"])
        assert got["n"] == 24
    text = (tmp_path / "README.md").read_text()
    stacked = json.loads((SS.EXPERIMENTS / "stacking" / "summary.json").read_text())
    assert doc["3d"]["methods"]["shipped"]["WT"]["dice"]["mean"] == pytest.approx(
        stacked["methods"]["learned"]["WT"]["dice"], abs=1e-4)
    assert "| combined, learned whole tumour (`--method hybrid`) | ET | 0.653 [" in text
    # the committed copy is what the committed results give
    assert text == (SS.OUT / "README.md").read_text()



def test_study_table_survives_runs_without_a_common_case() -> None:
    from braintumor.training.experiments import paired_section

    def run(name: str, cases: list[str], d: float) -> dict:
        return {"name": name, "cases": [{"case": c, "WT_dice": d, "TC_dice": d,
                                         "ET_dice": d} for c in cases]}

    results = [run("a", ["x", "y"], 0.8), run("b", ["z"], 0.6)]
    rows = [{"run": "a", "label": "A"}, {"run": "b", "label": "B"}]
    lines = paired_section(results, rows, "a")
    assert any(line.startswith("| A | 0.800") and "(best)" in line for line in lines)
    assert any(line.startswith("| B | 0.600") and "no common case yet" in line
               for line in lines)
