"""Held-out accuracy when the patient moved between series, with and without alignment.

    python -m braintumor.motion_study [--runs runs/compact_gpu] [--out experiments/motion]

For every shared BraTS case the T1ce, T2 and FLAIR are each moved by their own rigid
motion (rotations drawn uniformly within +-``--degrees`` about each axis through the
volume's centre, shifts within +-``--mm`` along each axis; seeded per case), as if the
head had moved between series while the T1 stayed where it was. Four inputs are
segmented: the case as acquired, the moved case, and each of them after
:func:`braintumor.register.align_modalities`. Methods:

* ``cnn``: the fold model of ``--runs`` that did not train on the case, fast-mode
  settings, the shipped postprocessing;
* ``watershed``: the parameters its cross-validation chose without the case.

Scored in native space against the reference (which lies on the T1's grid) with
:func:`braintumor.metrics.score_case`. The alignment's error is measured too: for the
moved case, how far (mm, mean over brain voxels) the fitted transform lands from where
the alignment of the case as acquired lands once the known motion is undone; BraTS's
own co-registration is not perfect, so the case as acquired is the reference here, not
the identity. Writes ``cases.json`` and ``table.md`` under ``--out``.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import MODALITIES, Case, discover, load_case
from braintumor.errors import guarded
from braintumor.missing_study import fold_params
from braintumor.resolution_study import (
    INPUT_TABLE,
    held_out_folds,
    input_line,
    segment_row,
    study_parser,
    write_study,
)

MOVED = ("t1ce", "t2", "flair")


def motion(case: Case, seed: int, degrees: float, mm: float) -> tuple[Case, dict[str, Any]]:
    """``case`` with each of :data:`MOVED` moved by its own random rigid motion; returns
    the moved case and each modality's SimpleITK transform (fixed -> moving points)."""
    import SimpleITK as sitk

    from braintumor.register import resample

    rng = np.random.default_rng(seed)
    image = case.image.copy()
    truth = {}
    centre = [float(s * (n - 1) / 2) for s, n in zip(case.spacing, case.shape, strict=True)]
    for m in MOVED:
        t = sitk.Euler3DTransform()
        t.SetCenter(centre)
        t.SetRotation(*(math.radians(float(a)) for a in rng.uniform(-degrees, degrees, 3)))
        t.SetTranslation([float(v) for v in rng.uniform(-mm, mm, 3)])
        i = MODALITIES.index(m)
        image[i] = resample(case.image[i], t, case.spacing)
        truth[m] = t
    return replace(case, image=image), truth


def _brain_points(case: Case) -> np.ndarray:
    from braintumor.register import brain_points

    return brain_points(np.any(case.image != 0, axis=0), case.spacing, 0)


def applied_mm(case: Case, truth: dict[str, Any]) -> dict[str, float]:
    """Per modality, the mean displacement of brain voxels under the applied motion."""
    from braintumor.register import displacement

    pts = _brain_points(case)
    return {m: round(float(displacement(t, pts).mean()), 2) for m, t in truth.items()}


def residual_mm(case: Case, moved: list[Any], control: list[Any], truth: dict[str, Any],
                ) -> dict[str, float]:
    """Per modality, mean ``|T_true(T_moved(p)) - T_control(p)|`` over brain voxels."""
    pts = _brain_points(case)
    ctl = {a.modality: a for a in control}
    out = {}
    for a in moved:
        if not a.accepted or a.modality not in truth:
            continue
        d = [np.linalg.norm(np.subtract(
            truth[a.modality].TransformPoint(a.transform.TransformPoint(tuple(map(float, p)))),
            ctl[a.modality].transform.TransformPoint(tuple(map(float, p))))) for p in pts]
        out[a.modality] = round(float(np.mean(d)), 3)
    return out


@guarded
def main(argv: list[str] | None = None) -> int:
    from braintumor.register import align_modalities
    from braintumor.watershed import cnn_postprocess

    ap = study_parser(__doc__, "experiments/motion", watershed=True,
                      prog="python -m braintumor.motion_study")
    ap.add_argument("--degrees", type=float, default=5.0)
    ap.add_argument("--mm", type=float, default=5.0)
    ap.add_argument("--cases", default="", help="only these case ids (comma-separated)")
    args = ap.parse_args(argv)
    held = held_out_folds(args.runs)
    sources = {s.case_id: s for s in discover(args.data)}
    params = fold_params((), Path(args.watershed))
    post = cnn_postprocess(None)
    rows: list[dict[str, Any]] = []
    ids = sorted(c for c in held if not args.cases or c in args.cases.split(","))
    for k, cid in enumerate(ids):
        case = load_case(sources[cid])
        assert case.label is not None
        moved, truth = motion(case, 1000 + k, args.degrees, args.mm)
        t0 = time.perf_counter()
        case_al, control = align_modalities(case)
        moved_al, fitted = align_modalities(moved)
        align_s = (time.perf_counter() - t0) / 2
        inputs = {"as acquired": case, "as acquired, aligned": case_al, "moved": moved,
                  "moved, aligned": moved_al}
        extra: dict[str, dict[str, Any]] = {
            "as acquired, aligned": {"moved_mm": {a.modality: round(a.moved_mm, 2)
                                                  for a in control}},
            "moved": {"applied_mm": applied_mm(case, truth),
                      "moved_mm": {a.modality: round(a.moved_mm, 2) for a in fitted}},
            "moved, aligned": {"residual_mm": residual_mm(case, fitted, control, truth),
                               "align_seconds": round(align_s, 1)}}
        for name, c in inputs.items():
            for method, options in (
                    ("cnn", {"model": held[cid] / "last.pt", "device": "cpu", "fast": True,
                             "post": post}),
                    ("watershed", {"params": params[cid]})):
                segment_row(rows, case, name, method, c, options, extra.get(name))
    lines = list(INPUT_TABLE)
    for name in ("as acquired", "as acquired, aligned", "moved", "moved, aligned"):
        for method in ("cnn", "watershed"):
            lines.append(input_line(name, method, [r for r in rows if r["input"] == name
                                                   and r["method"] == method]))
    res_rows = [r for r in rows if r["input"] == "moved, aligned" and r["method"] == "cnn"]
    motion_mm = [v for r in rows if r["input"] == "moved" and r["method"] == "cnn"
                 for v in r["applied_mm"].values()]
    resid = [v for r in res_rows for v in r["residual_mm"].values()]
    lines += ["", f"Motion applied (mean displacement of the brain's voxels, T1ce, T2 and "
              f"FLAIR of {len(ids)} cases): median {np.median(motion_mm):.1f} mm, range "
              f"{min(motion_mm):.1f} to {max(motion_mm):.1f} mm. Alignment error (mm, mean "
              f"over brain voxels): median {np.median(resid):.2f}, worst {max(resid):.2f}. "
              f"Alignment time: {np.mean([r['align_seconds'] for r in res_rows]):.1f} s a "
              "case (three modalities) on this CPU."]
    write_study(args.out, rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
