"""How far the automatic RANO diameters agree with the expert outline's.

    python -m braintumor.diameter_study [--runs runs/compact_gpu] [--out experiments/diameters]

For every shared BraTS case, the bidimensional measurements of :mod:`braintumor.diameters`
are taken on the expert label map and on each method's outline, held out:

* ``cnn``: the fold model of ``--runs`` that did not train on the case, fast-mode
  settings, the shipped postprocessing;
* ``watershed``: the parameters its 7-fold cross-validation chose without the case
  (``experiments/watershed/cv_params.json``);
* ``hybrid``: the same fold model's maps refined by the watershed, rule-based whole
  tumour; its refinement parameters were chosen on all 14 cases, so it is not strictly
  held out.

Per method: the SPD of the enhancing tumour and of the whole tumour, and the longest
diameter of the largest lesion of each, against the expert's: the median absolute
difference (%), the mean difference with its 95 % limits of agreement (Bland-Altman,
in %), how many cases differ by 25 % or more (on its own, a change RANO would read as
progression), and how often the method and the expert agree that measurable enhancing
disease is present. Writes ``cases.json`` and ``table.md`` under ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import discover, load_case
from braintumor.diameters import rano
from braintumor.errors import InputError, guarded

QUANTITIES = (("ET_spd", "SPD, enhancing"), ("WT_spd", "SPD, T2/FLAIR (WT)"),
              ("ET_longest", "longest diameter, largest enhancing lesion"),
              ("WT_longest", "longest diameter, largest WT lesion"))


def measures(labels: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """The quantities compared, for one label map."""
    d = rano(labels, affine)
    out: dict[str, Any] = {}
    for region in ("ET", "WT"):
        les = d[region]["lesions"]
        out[f"{region}_spd"] = d[region]["spd_mm2"]
        out[f"{region}_longest"] = les[0]["longest_mm"] if les else 0.0
        out[f"{region}_measurable"] = d[region]["measurable"] > 0
    return out


def percent_diff(method: float, expert: float) -> float | None:
    """(method - expert) / expert in %, or None where the expert has none."""
    return None if expert <= 0 else 100.0 * (method - expert) / expert


def summary_rows(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """The markdown table: one row per method and quantity."""
    lines = ["| method | quantity | cases | median abs. difference | mean difference "
             "(95 % limits) | cases off by 25 % or more |", "|---|---|---|---|---|---|"]
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        for key, name in QUANTITIES:
            d = [p for p in (percent_diff(r[key], r[f"expert_{key}"]) for r in sel)
                 if p is not None]
            if not d:
                continue
            arr = np.asarray(d)
            mean, sd = float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
            lines.append(
                f"| {method} | {name} | {len(arr)} | {np.median(np.abs(arr)):.1f} % | "
                f"{mean:+.1f} % ({mean - 1.96 * sd:+.0f} to {mean + 1.96 * sd:+.0f} %) | "
                f"{int((np.abs(arr) >= 25).sum())} of {len(arr)} |")
    lines.append("")
    lines.append("| method | measurable enhancing disease: agrees with the expert |")
    lines.append("|---|---|")
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        agree = sum(r["ET_measurable"] == r["expert_ET_measurable"] for r in sel)
        lines.append(f"| {method} | {agree} of {len(sel)} |")
    return lines


@guarded
def main(argv: list[str] | None = None) -> int:
    from braintumor.missing_study import fold_params
    from braintumor.resolution_study import study_cases, study_parser, write_study
    from braintumor.segment import segment
    from braintumor.watershed import HybridParams, cnn_postprocess

    ap = study_parser(__doc__, "experiments/diameters", watershed=True,
                      prog="python -m braintumor.diameter_study")
    ap.add_argument("--methods", default="cnn,watershed,hybrid")
    args = ap.parse_args(argv)
    held = study_cases(args.runs, args.data, args.methods)
    ws_params = fold_params((), Path(args.watershed))
    if "watershed" in args.methods.split(","):
        unfolded = sorted(set(held) - set(ws_params))
        if unfolded:
            raise InputError(f"{', '.join(unfolded[:3])}{' ...' if len(unfolded) > 3 else ''}"
                             f": in no fold of {Path(args.watershed) / 'cv_params.json'} (the "
                             "watershed's held-out parameters are chosen per case); "
                             "--watershed names the cross-validation that held them out.")
    sources = {s.case_id: s for s in discover(args.data)}
    methods = args.methods.split(",")
    post = cnn_postprocess(None)
    rows: list[dict[str, Any]] = []
    for cid in sorted(held):
        case = load_case(sources[cid])
        assert case.label is not None
        expert = measures(case.label, case.affine)
        run = held[cid]
        ck = run / "last.pt" if run is not None else None
        options: dict[str, dict[str, Any]] = {
            "cnn": {"model": ck, "device": "cpu", "fast": True, "post": post},
            "watershed": {"params": ws_params[cid]},
            "hybrid": {"model": ck, "device": "cpu", "fast": True, "post": post,
                       "params": HybridParams(wt_learned=False)}}
        for method in methods:
            res = segment(case, method, **options[method])
            row = {"case": cid, "method": method, **measures(res.labels, case.affine),
                   **{f"expert_{k}": v for k, v in expert.items()}}
            rows.append(row)
            print(row, flush=True)
    write_study(args.out, rows, summary_rows(rows, methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
