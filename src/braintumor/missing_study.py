"""Held-out accuracy on scans without their T1 or T2.

    python -m braintumor.missing_study [--runs runs/compact_gpu] [--out experiments/missing]

For every shared BraTS case and every way of lacking modalities (none, T1, T2, both):

* ``watershed``: the watershed with the parameters that its own cross-validation for
  that input (``python -m braintumor.watershed_tune tune --without ...``, read from
  ``experiments/watershed[/without_*]/cv_params.json``) chose without this case, on the
  case with its missing channels ignored, as ``segment()`` runs it;
* ``cnn``: the fold model of ``--runs`` that did not train on the case, fast-mode
  settings, the shipped postprocessing, each missing modality filled in from its
  stand-in (:data:`braintumor.cases.STAND_IN`: T1 from T1ce, T2 from FLAIR), which is
  what running the CNN on such a scan would have to do.

Scored in native space with :func:`braintumor.metrics.score_case`; writes ``cases.json``
and ``table.md`` under ``--out``. ``--methods watershed`` reruns the watershed's rows
alone (no CNN fold runs needed) and keeps the CNN's from ``--out``'s ``cases.json``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from braintumor.cases import MODALITIES, STAND_IN, Case, discover, load_case
from braintumor.errors import InputError, guarded
from braintumor.resolution_study import (
    INPUT_TABLE,
    input_line,
    segment_row,
    study_cases,
    study_parser,
    write_study,
)

CONDITIONS: dict[str, tuple[str, ...]] = {"all four": (), "no T1": ("t1",),
                                           "no T2": ("t2",), "neither T1 nor T2": ("t1", "t2")}


def without(case: Case, missing: tuple[str, ...], flag: bool) -> Case:
    """``case`` with the ``missing`` channels replaced by their stand-ins; ``flag``: also
    mark them missing (so the watershed ignores them), else leave the CNN to read them."""
    image = case.image.copy()
    for m in missing:
        image[MODALITIES.index(m)] = image[MODALITIES.index(STAND_IN[m])]
    return replace(case, image=image, missing=missing if flag else ())


def fold_params(missing: tuple[str, ...], root: Path) -> dict[str, dict[str, Any]]:
    """case id -> the watershed parameters its CV fold chose without it."""
    from braintumor.watershed import saved_params

    folder = root / ("without_" + "_".join(missing)) if missing else root
    if not (folder / "cv_params.json").is_file():
        raise InputError(f"{folder}: holds no cv_params.json (the watershed's cross-"
                         "validation choices); --watershed names the folder that does.")
    chosen = json.loads((folder / "cv_params.json").read_text())
    return {cid: saved_params(f["params"]) for f in chosen.values() for cid in f["test"]}


@guarded
def main(argv: list[str] | None = None) -> int:
    from braintumor.watershed import cnn_postprocess

    ap = study_parser(__doc__, "experiments/missing", watershed=True,
                      prog="python -m braintumor.missing_study")
    ap.add_argument("--cases", default="", help="only these case ids (comma-separated)")
    ap.add_argument("--inputs", default=",".join(CONDITIONS),
                    help="only these inputs (comma-separated names of CONDITIONS)")
    ap.add_argument("--methods", default="watershed,cnn",
                    help="rerun these (watershed, cnn); the rows of the other are kept "
                         "from --out's cases.json")
    args = ap.parse_args(argv)
    conditions = {n: CONDITIONS[n] for n in args.inputs.split(",")}
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - {"watershed", "cnn"}:
        raise InputError(f"--methods takes watershed and cnn, comma-separated; not "
                         f"{args.methods!r}.")
    held = study_cases(args.runs, args.data, args.methods)
    kept: list[dict[str, Any]] = []
    if set(methods) != {"watershed", "cnn"}:
        table = Path(args.out) / "cases.json"
        if not table.is_file():
            raise InputError(f"{table}: no earlier rows to keep the other method's from; "
                             "run both methods first.")
        kept = [r for r in json.loads(table.read_text()) if r["method"] not in methods]
    sources = {s.case_id: s for s in discover(args.data)}
    params = {name: fold_params(miss, Path(args.watershed))
              for name, miss in conditions.items()}
    post = cnn_postprocess(None)
    rows: list[dict[str, Any]] = []
    for cid in sorted(c for c in held if not args.cases or c in args.cases.split(",")):
        case = load_case(sources[cid])
        assert case.label is not None
        run = held[cid]
        for name, miss in conditions.items():
            if "watershed" in methods:
                segment_row(rows, case, name, "watershed", without(case, miss, True),
                            {"params": params[name][cid]})
            if "cnn" in methods and run is not None:
                segment_row(rows, case, name, "cnn", without(case, miss, False),
                            {"model": run / "last.pt", "device": "cpu", "fast": True,
                             "post": post})
    # the rows of a method not rerun, as they were, in the order of the cases and inputs
    done = {(r["case"], r["input"], r["method"]) for r in rows}
    rows += [r for r in kept if (r["case"], r["input"], r["method"]) not in done]
    order = {n: i for i, n in enumerate(CONDITIONS)}
    rows.sort(key=lambda r: (r["case"], order.get(r["input"], 99),
                             ("watershed", "cnn").index(r["method"])
                             if r["method"] in ("watershed", "cnn") else 9))
    lines = list(INPUT_TABLE)
    for name in conditions:
        for method, label in (("watershed", "watershed tuned for it"),
                              ("cnn", "CNN, missing image filled in")):
            sel = [r for r in rows if r["input"] == name and r["method"] == method]
            lines.append(input_line(name, label if name != "all four" else method, sel))
    write_study(args.out, rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
