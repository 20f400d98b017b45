"""Accuracy on cases that are not on the 1 mm grid the methods were built on.

    python -m braintumor.resolution_study [--runs runs/compact_gpu] [--out experiments/resolution]

Each shared BraTS case is made coarser the way clinical scans are: ``thick``: 3 mm
slices (each run of three axial slices averaged, the label of the middle one kept), and
``2mm``: 2 mm voxels on every axis (each 2x2x2 block averaged, the label at the block's
centre voxel). Each method then segments it twice through
:func:`braintumor.segment.segment`: on the coarse grid as it is (``resample=False``) and
on the 1 mm grid with the labels brought back (the default); both are scored against the
coarse reference with :func:`braintumor.metrics.score_case`. The original 1 mm case is
scored too, as the ceiling.

* ``cnn``: held out: each case by the fold model of ``--runs`` that did not train on it,
  fast-mode settings (one model, overlap 0.25), the shipped model's postprocessing.
* ``watershed`` and ``hybrid`` (the fold model's maps, the rule-based whole tumour): their
  parameters were chosen on all 14 cases, these included, so compare their two rows with
  each other, not with held-out numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from braintumor.cases import Case, discover, load_case
from braintumor.errors import guarded

REGIONS = ("WT", "TC", "ET")


def coarsen(case: Case, factors: tuple[int, int, int]) -> Case:
    """Block-average the image by integer ``factors`` (x, y, z); the label is the one at
    each block's centre voxel (rounded down); the affine keeps the world position of the
    block centres."""
    fx, fy, fz = factors
    shp = tuple(n // f * f for n, f in zip(case.shape, factors, strict=True))
    img = case.image[:, :shp[0], :shp[1], :shp[2]]
    c = img.shape[0]
    img = img.reshape(c, shp[0] // fx, fx, shp[1] // fy, fy, shp[2] // fz, fz).mean((2, 4, 6))
    lab = None
    if case.label is not None:
        lab = case.label[fx // 2:shp[0]:fx, fy // 2:shp[1]:fy, fz // 2:shp[2]:fz]
    aff = case.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ np.array([(f - 1) / 2 for f in factors]) + aff[:3, 3]
    aff[:3, :3] = aff[:3, :3] * np.array(factors)[None, :]
    spacing = tuple(s * f for s, f in zip(case.spacing, factors, strict=True))
    hdr = case.header.copy()
    hdr.set_data_shape(img.shape[1:])
    hdr.set_zooms(spacing)
    return Case(case_id=case.case_id, image=img.astype(np.float32), affine=aff,
                spacing=spacing, header=hdr, label=lab)  # type: ignore[arg-type]


def scores(labels: np.ndarray, case: Case) -> dict[str, float]:
    """Dice and HD95 (mm) per region of ``labels`` against ``case``'s label, rounded."""
    from braintumor.metrics import score_case

    assert case.label is not None
    sc = score_case(labels, case.label, case.spacing)
    return {**{r: round(sc[r]["dice"], 4) for r in REGIONS},
            **{f"{r}_hd95": round(sc[r]["hd95"], 2) for r in REGIONS}}


def mean_cells(rows: list[dict[str, Any]]) -> str:
    """Table cells ``WT | TC | ET | HD95 WT / TC / ET`` of the rows' means."""
    m = {k: float(np.mean([r[k] for r in rows]))
         for k in [*REGIONS, *(f"{x}_hd95" for x in REGIONS)]}
    return (f"{m['WT']:.3f} | {m['TC']:.3f} | {m['ET']:.3f} | {m['WT_hd95']:.1f} / "
            f"{m['TC_hd95']:.1f} / {m['ET_hd95']:.1f}")


#: the repository checkout the studies read and write in (their defaults are in it, so a
#: study runs the same from any folder; paths given on the command line are the user's)
ROOT = Path(__file__).resolve().parents[2]


def study_parser(doc: str | None, out: str, watershed: bool = False,
                 prog: str | None = None) -> argparse.ArgumentParser:
    """The held-out studies' shared options: ``--runs`` (fold models), ``--data`` (the
    shared BraTS cases), ``--out`` and, with ``watershed``, the watershed CV folder; the
    defaults lie in the repository checkout, and the help keeps the docstring's
    paragraphs."""
    ap = argparse.ArgumentParser(prog=prog, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "compact_gpu"),
                    help="the fold runs (fold0, fold1, ...) whose models did not train on "
                         "each case (default: runs/compact_gpu of the repository)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brats2018"),
                    help="the shared BraTS cases (default: ../shared/data/brats2018 beside "
                         "the repository)")
    if watershed:
        ap.add_argument("--watershed", default=str(ROOT / "experiments" / "watershed"),
                        help="the watershed's cross-validation folder (its cv_params.json; "
                             "default: experiments/watershed)")
    ap.add_argument("--out", default=str(ROOT / out),
                    help=f"where the results go (default: {out} of the repository)")
    return ap


def write_study(out: str | Path, rows: list[dict[str, Any]], lines: list[str]) -> None:
    """A held-out study's results: ``out/cases.json`` (``rows``, one per case and
    condition) and ``out/table.md`` (``lines``), the table also printed."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cases.json").write_text(json.dumps(rows, indent=1))
    (folder / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


#: the header of a table of :func:`input_line` rows
INPUT_TABLE = ["| input | method | WT | TC | ET | HD95 WT / TC / ET (mm) | worst case WT / TC |",
               "|---|---|---|---|---|---|---|"]


def input_line(name: str, method: str, rows: list[dict[str, Any]]) -> str:
    """One row of :data:`INPUT_TABLE`: the rows' means and their worst WT and TC."""
    return (f"| {name} | {method} | {mean_cells(rows)} | "
            f"{min(r['WT'] for r in rows):.2f} / {min(r['TC'] for r in rows):.2f} |")


def segment_row(rows: list[dict[str, Any]], case: Case, name: str, method: str,
                image: Case, options: dict[str, Any], extra: dict[str, Any] | None = None
                ) -> None:
    """Segment ``image`` (a variant of ``case``) with ``method``, score it against
    ``case``'s label and add the row, printed, to ``rows``."""
    from braintumor.segment import segment

    res = segment(image, method, **options)
    row = {"case": case.case_id, "input": name, "method": method,
           **scores(res.labels, case), **(extra or {})}
    rows.append(row)
    print(row, flush=True)


def held_out_folds(runs: str | Path) -> dict[str, Path]:
    """case id -> the fold run folder of ``runs`` whose model did not train on it; one
    sentence when ``runs`` holds no fold runs."""
    from braintumor.training.package import fold_run_dirs

    return {cid: f for f in fold_run_dirs(runs)
            for cid in yaml.safe_load((f / "config.yaml").read_text())["split"]["val"]}


def study_cases(runs: str | Path, data: str | Path, methods: str) -> dict[str, Path | None]:
    """case id -> the fold run folder whose CNN did not train on it, for a study's
    ``--methods``; for the watershed alone (no CNN needed) every case under ``data``, with
    no run folder, so its rows are reproduced without the CNN's fold runs. A method not
    among cnn, watershed and hybrid is refused in one sentence."""
    from braintumor.errors import InputError

    asked = [m for m in methods.split(",") if m]
    unknown = [m for m in asked if m not in ("cnn", "watershed", "hybrid")]
    if unknown or not asked:
        raise InputError(f"--methods takes cnn, watershed and hybrid, comma-separated; not "
                         f"{methods!r}.")
    if {"cnn", "hybrid"} & set(asked):
        return dict(held_out_folds(runs))
    return {s.case_id: None for s in discover(data)}


@guarded
def main(argv: list[str] | None = None) -> int:
    from braintumor.segment import segment
    from braintumor.watershed import HybridParams, cnn_postprocess

    ap = study_parser(__doc__, "experiments/resolution",
                      prog="python -m braintumor.resolution_study")
    ap.add_argument("--methods", default="cnn,watershed,hybrid")
    args = ap.parse_args(argv)
    held = study_cases(args.runs, args.data, args.methods)
    sources = {s.case_id: s for s in discover(args.data)}
    conditions: dict[str, tuple[int, int, int]] = {"1mm": (1, 1, 1), "thick": (1, 1, 3),
                                                   "2mm": (2, 2, 2)}
    rows: list[dict[str, Any]] = []
    post = cnn_postprocess(None)
    for cid in sorted(held):
        case = load_case(sources[cid])
        run = held[cid]
        ck = run / "last.pt" if run is not None else None
        options: dict[str, dict[str, Any]] = {
            "cnn": {"model": ck, "device": "cpu", "fast": True, "post": post},
            "watershed": {},
            "hybrid": {"model": ck, "device": "cpu", "fast": True, "post": post,
                       "params": HybridParams(wt_learned=False)}}
        for cond, fac in conditions.items():
            c = case if cond == "1mm" else coarsen(case, fac)
            assert c.label is not None
            for method in args.methods.split(","):
                for rs in ((True,) if cond == "1mm" else (False, True)):
                    res = segment(c, method, resample=rs, **options[method])
                    row = {"case": cid, "condition": cond, "method": method, "resampled": rs,
                           **scores(res.labels, c)}
                    rows.append(row)
                    print(row, flush=True)
    lines = ["| method | input | segmented on | WT | TC | ET | HD95 WT / TC / ET (mm) |",
             "|---|---|---|---|---|---|---|"]
    for method, cond, rs in ((m, c, r) for m in args.methods.split(",") for c in conditions
                             for r in (False, True)):
        sel = [r for r in rows if r["condition"] == cond and r["resampled"] == rs
               and r["method"] == method]
        if not sel:
            continue
        how = "1 mm grid (resampled)" if rs and cond != "1mm" else (
            "its own grid" if cond != "1mm" else "1 mm (as is)")
        lines.append(f"| {method} | {cond} | {how} | {mean_cells(sel)} |")
    write_study(args.out, rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
