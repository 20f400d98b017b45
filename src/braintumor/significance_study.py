"""How far to trust the committed held-out results: intervals and paired tests.

    python -m braintumor.significance_study [--out experiments/significance]

Reads only the per-case results already committed under ``experiments/`` (no data, no
model, a few seconds) and writes ``README.md`` and ``significance.json`` under ``--out``:

* the 3D methods of the hybrid study (CNN alone, refinement, watershed alone, combined;
  14 BraTS cases, every case scored by what did not see it): mean Dice and HD95 with
  95 % bootstrap intervals (:func:`braintumor.stats.mean_ci`), each against its
  accuracy target, and the paired comparisons behind the README's claims;
* the watershed alone as ``--method watershed`` runs it (with the native
  enhancing-tumour step and the FLAIR edema growing), against its targets, and each of
  those two steps against the same folds without it;
* the 2D model's patient-wise cross-validation (24 LGG patients): per-patient Dice with
  intervals per input kind, against the targets, and the refinement's paired effect;
* the CNN studies (architectures, regularisation, search): each run's held-out Dice,
  and the study's best run against every other on the same cases: can these cases tell
  them apart?
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from braintumor import stats as S
from braintumor.errors import guarded
from braintumor.labels import REGIONS

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
OUT = EXPERIMENTS / "significance"

#: the issues' accuracy targets, mean Dice per region
TARGETS_3D = {"cnn": {"WT": 0.90, "TC": 0.85, "ET": 0.80},
              "shipped": {"WT": 0.90, "TC": 0.85, "ET": 0.80}}
TARGET_WATERSHED = {"WT": 0.90, "TC": 0.80, "ET": 0.75}
TARGETS_2D = {"rgb": 0.85, "grey": 0.80}
METHODS_3D = (("cnn", "CNN alone"), ("hybrid", "refinement alone"),
              ("watershed", "watershed alone, working grid (as the hybrid fuses it)"),
              ("combined", "combined, rule-based whole tumour"),
              ("shipped", "combined, learned whole tumour (`--method hybrid`)"))
PAIRS_3D = (("shipped", "cnn"), ("shipped", "watershed"), ("shipped", "combined"),
            ("combined", "cnn"), ("hybrid", "cnn"), ("watershed", "cnn"))
INPUTS_2D = (("rgb", "colour"), ("grey", "greyscale"), ("jpeg50", "colour as JPEG q50"))
STUDIES = ("architectures", "regularisation", "search")


def _target_cell(ci: S.MeanCI, target: float | None) -> str:
    if target is None:
        return ""
    if ci.high < target:
        return f"{target:.2f}: above the interval"
    if ci.low > target:
        return f"{target:.2f}: below the interval"
    return f"{target:.2f}: inside the interval"


def _ci_json(ci: S.MeanCI) -> dict[str, Any]:
    return {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}


def section_3d(path: Path, stacked: Path, doc: dict[str, Any]) -> list[str]:
    scores = {m: S.read_scores(path, m) for m, _ in METHODS_3D if m != "shipped"}
    scores["shipped"] = S.read_scores(stacked, "learned")
    lines = ["## 3D: CNN, refinement, watershed and combined (14 BraTS cases, held out)", "",
             f"Sources: `{path.relative_to(ROOT)}` (`python -m braintumor.hybrid_study "
             f"--probs cache/cv_probs_mix`) and, for the shipped hybrid, "
             f"`{stacked.relative_to(ROOT)}` (`python -m braintumor.stack_study --probs "
             "cache/cv_probs_mix`; whole tumour from trees learned on the other cases, "
             "core and enhancing tumour as the rule-based combination).", "",
             "| method | region | Dice, mean [95% CI] | HD95 mm, mean [95% CI] | target Dice |",
             "|---|---|---|---|---|"]
    doc["3d"] = {"source": [str(path.relative_to(ROOT)), str(stacked.relative_to(ROOT))],
                 "methods": {}, "paired": []}
    for m, name in METHODS_3D:
        cis = S.summary_ci(scores[m], REGIONS, ("dice", "hd95"))
        doc["3d"]["methods"][m] = {r: {k: _ci_json(v) for k, v in cis[r].items()}
                                   for r in REGIONS}
        for r in REGIONS:
            target = TARGETS_3D.get(m, {}).get(r)
            lines.append(f"| {name} | {r} | {cis[r]['dice'].text()} | "
                         f"{cis[r]['hd95'].text(1)} | {_target_cell(cis[r]['dice'], target)} |")
    lines += ["", "Paired over the same 14 cases (difference = mean of the per-case "
              "differences, first minus second; HD95: lower is better):", ""]
    for a, b in PAIRS_3D:
        rows = S.compare(scores[a], scores[b], REGIONS, ("dice", "hd95"))
        doc["3d"]["paired"] += [{"a": a, "b": b, **p.as_row()} for p in rows]
        lines += [f"**{a} against {b}**", "", S.paired_markdown(rows, a, b), ""]
    return lines


def section_watershed(root: Path, doc: dict[str, Any]) -> list[str]:
    """``--method watershed`` held out (``root/flair_edema``), and what its last two steps
    each did on the same folds: the FLAIR edema growing (against ``root/native_et``'s
    watershed) and the native enhancing-tumour step (against the working grid alone)."""
    shipped = S.read_scores(root / "flair_edema" / "cv_watershed.csv")
    native = S.read_scores(root / "native_et" / "cv_watershed.csv")
    grid = S.read_scores(root / "native_et" / "cv_without_step.csv")
    cis = S.summary_ci(shipped, REGIONS, ("dice", "hd95"))
    folder = root / "flair_edema"
    lines = ["## 3D: the watershed alone, `--method watershed` (14 BraTS cases, held out)", "",
             f"Source: `{folder.relative_to(ROOT)}` (`python -m braintumor.watershed_tune "
             "flair`): each fold's parameters from the watershed's own CV, plus the native "
             "enhancing-tumour step and then the FLAIR edema growing, each chosen on its "
             "training cases (HD95 here: border voxels, as the watershed's CV tables).", "",
             "| region | Dice, mean [95% CI] | HD95 mm, mean [95% CI] | target Dice |",
             "|---|---|---|---|"]
    for r in REGIONS:
        lines.append(f"| {r} | {cis[r]['dice'].text()} | {cis[r]['hd95'].text(1)} | "
                     f"{_target_cell(cis[r]['dice'], TARGET_WATERSHED[r])} |")
    flair_rows = S.compare(shipped, native, REGIONS, ("dice", "hd95"))
    native_rows = S.compare(native, grid, REGIONS, ("dice", "hd95"))
    doc["watershed"] = {"source": str(folder.relative_to(ROOT)),
                        "ci": {r: {k: _ci_json(v) for k, v in cis[r].items()} for r in REGIONS},
                        "paired_flair_edema": [p.as_row() for p in flair_rows],
                        "paired_native_et": [p.as_row() for p in native_rows]}
    lines += ["", "**with the FLAIR edema growing against without** (both with the native "
              "step; the same folds' parameters)", "",
              S.paired_markdown(flair_rows, "with", "without"), "",
              "**with the native enhancing-tumour step against without** (both without the "
              "FLAIR edema growing; `native_et/`)", "",
              S.paired_markdown(native_rows, "with", "without"), ""]
    return lines


def section_2d(path: Path, doc: dict[str, Any]) -> list[str]:
    data = json.loads(path.read_text())
    pats = data["patients"]
    lines = ["## 2D: per-patient Dice (24 LGG patients, patient-wise 4-fold CV)", "",
             f"Source: `{path.relative_to(ROOT)}` (`python -m braintumor.training2d report`); "
             "`refined`: stacks with the rule, threshold and refinement chosen on the other "
             "folds (the README's bold rows), `selected`: the same without the refinement.",
             "", "| input | post-processing | Dice per patient, mean [95% CI] | target |",
             "|---|---|---|---|"]
    doc["2d"] = {"source": str(path.relative_to(ROOT)), "inputs": {}, "paired": []}
    for key, name in INPUTS_2D:
        doc["2d"]["inputs"][key] = {}
        for rule in ("refined", "selected"):
            vals = {p: m["dice"] for p, m in pats[key][rule].items()}
            ci = S.mean_ci(vals.values())
            doc["2d"]["inputs"][key][rule] = _ci_json(ci)
            target = TARGETS_2D.get(key) if rule == "refined" else None
            lines.append(f"| {name} | {rule} | {ci.text()} | {_target_cell(ci, target)} |")
    lines += ["", "The refinement (refined against selected), paired over the 24 patients:", "",
              "| input | Dice difference [95% CI] | Wilcoxon p | patients better / equal / "
              "worse |", "|---|---|---|---|"]
    for key, name in INPUTS_2D:
        a = {p: m["dice"] for p, m in pats[key]["refined"].items()}
        b = {p: m["dice"] for p, m in pats[key]["selected"].items()}
        p = S.paired(a, b, key, "dice")
        doc["2d"]["paired"].append(p.as_row())
        lines.append(f"| {name} | {p.diff:+.3f} [{p.low:+.3f}, {p.high:+.3f}] | "
                     f"{S.fmt_p(p.p)} | {p.wins} / {p.ties} / {p.losses} |")
    return lines


def section_studies(doc: dict[str, Any]) -> list[str]:
    lines = ["## CNN studies: is the best run distinguishable from the others?", "",
             "Each study's held-out cases (`experiments/<study>/cases.csv`, `braintumor "
             "experiment`); mean Dice over the three regions per case, best run (highest "
             "mean) against each other run on the same cases. With n untied cases the "
             "two-sided Wilcoxon p cannot fall below 2 / 2^n (0.0625 with 5), so a study "
             "that held out 5 cases can rank runs but cannot show a difference at the "
             "0.05 level.", ""]
    doc["studies"] = {}
    for study in STUDIES:
        path = EXPERIMENTS / study / "cases.csv"
        if not path.exists():
            continue
        runs = _runs(path)
        means = {r: _mean_dice(path, r) for r in runs}
        best = max(runs, key=lambda r: S.mean_ci(means[r].values()).mean)
        lines += [f"**{study}** ({len(means[best])} held-out cases; best: `{best}`)", "",
                  "| run | mean Dice [95% CI] | best minus run [95% CI] | Wilcoxon p | "
                  "cases the best wins / ties / loses |", "|---|---|---|---|---|"]
        doc["studies"][study] = {"best": best, "runs": {}}
        for r in sorted(runs, key=lambda r: -S.mean_ci(means[r].values()).mean):
            ci = S.mean_ci(means[r].values())
            row: dict[str, Any] = {"mean_dice": _ci_json(ci)}
            if r == best:
                lines.append(f"| {r} | {ci.text()} | | | |")
            else:
                p = S.paired(means[best], means[r], "mean", "dice")
                row["best_minus_run"] = p.as_row()
                lines.append(f"| {r} | {ci.text()} | {p.diff:+.3f} [{p.low:+.3f}, "
                             f"{p.high:+.3f}] | {S.fmt_p(p.p)} | {p.wins} / {p.ties} / "
                             f"{p.losses} |")
            doc["studies"][study]["runs"][r] = row
        lines.append("")
    return lines


def _runs(path: Path) -> list[str]:
    import csv

    with path.open(newline="") as fh:
        return list(dict.fromkeys(r["run"] for r in csv.DictReader(fh)))


def _mean_dice(path: Path, run: str) -> dict[str, float]:
    scores = S.read_scores(path, run, method_key="run")
    cols = [S.column(scores, r, "dice") for r in REGIONS]
    return {c: sum(col[c] for col in cols) / len(cols) for c in cols[0]
            if all(c in col for col in cols)}


def write(out: Path = OUT) -> dict[str, Any]:
    """Write ``README.md`` and ``significance.json`` under ``out``; returns the JSON."""
    doc: dict[str, Any] = {"level": S.LEVEL, "resamples": S.RESAMPLES, "seed": S.SEED,
                           "interval": "BCa bootstrap of the mean over cases",
                           "test": "Wilcoxon signed-rank, two-sided, exact, over the cases "
                                   "that differ (ties left out)"}
    lines = ["# How far to trust the held-out results", "",
             "Intervals: 95 % BCa bootstrap of the mean over cases (9,999 resamples, "
             "seeded); paired tests: Wilcoxon signed-rank, two-sided, exact over the cases that "
             "differ (tied cases carry no sign). A target 'above the "
             "interval' is not reached even at the interval's optimistic end. With 14 cases "
             "these intervals are wide, and a bootstrap interval of so few values tends to "
             "be somewhat too narrow, so read them as lower bounds on the uncertainty.",
             "", "Reproduce: `python -m braintumor.significance_study` (reads the committed "
             "per-case results only).", ""]
    lines += section_3d(EXPERIMENTS / "hybrid" / "hybrid_cv.csv",
                        EXPERIMENTS / "stacking" / "stack_cv.csv", doc)
    lines += section_watershed(EXPERIMENTS / "watershed", doc)
    lines += [""] + section_2d(EXPERIMENTS / "lgg2d" / "cv_results.json", doc)
    lines += [""] + section_studies(doc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(lines).rstrip() + "\n")
    (out / "significance.json").write_text(json.dumps(_safe(doc), indent=1))
    return doc


def _safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m braintumor.significance_study",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    write(args.out)
    print((args.out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
