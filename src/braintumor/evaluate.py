"""Score a folder of predictions against a folder of references.

3D (NIfTI label maps):

* predictions: ``<case>.nii.gz`` files (what ``braintumor predict`` writes) or
  BraTS-named label files (``<case>_seg.nii.gz``, ``<case>-seg.nii.gz``), flat or one
  folder per case;
* references: a BraTS dataset folder whose case folders hold ``*_seg.nii.gz`` or
  ``*-seg.nii.gz``, or a flat folder of label files named as above;
* cases are matched by case id (the file name without ``.nii[.gz]`` and without a
  ``_seg`` / ``-seg`` suffix). A reference without a prediction is scored as *missing*
  (Dice 0, sensitivity 0, specificity 0, HD95 374 mm, lesion-wise 0 / 374, flagged
  ``status = missing``) and counted in the summary rows; predictions without a
  reference are listed, not scored.

Label conventions are detected per file (file name, then the values; see
:func:`braintumor.labels.detect_convention`; a reference in a Decathlon task's
``labelsTr`` / ``labelsTs`` folder is the Decathlon's) unless given. Metrics are those of
:mod:`braintumor.metrics`, computed with the reference's voxel spacing.

2D (PNG/TIFF masks, 0 = background, anything > 127 = tumour, or anything above 0 in a
label mask whose values are all under 16, 0/1 or 0/1/2: :func:`read_mask_2d`):
:func:`evaluate_2d` matches ``<image>_mask.png`` to ``<image>_mask.tif`` (or equal stems)
by their paths under each folder and scores each picture as one region called
``tumour``, in pixel units.

Output: :func:`write_csv` writes long-form CSV (one row per case and region, then the
``mean`` and ``median`` rows per region) and :func:`write_json` the same plus the
definitions used.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor import metrics as M
from braintumor.errors import InputError, UnreadableFile
from braintumor.io import IMAGE_SUFFIXES, is_hidden, is_image_2d, is_nifti, strip_nifti_suffix

#: with ``diameters``: the RANO sum of products (mm^2) of prediction and reference and
#: their difference in % of the reference's (regions ET and WT; :mod:`braintumor.diameters`)
DIAMETER_KEYS: tuple[str, ...] = ("spd_pred_mm2", "spd_ref_mm2", "spd_diff_pct")
#: leading CSV columns, in order (the lesion-wise columns follow ``hd95``)
CSV_COLUMNS: tuple[str, ...] = ("case", "region") + M.SCORE_KEYS + DIAMETER_KEYS + ("status",)
#: scores given to a reference whose prediction is missing
MISSING_SCORES: dict[str, float] = {
    "dice": 0.0, "sensitivity": 0.0, "specificity": 0.0, "hd95": M.EMPTY_HD95,
    "lesion_dice": 0.0, "lesion_hd95": M.EMPTY_HD95,
}
SUMMARY_KEYS = ("mean", "median")
#: metrics whose mean gets a 95 % bootstrap interval (JSON ``mean_ci95``, printed summary)
CI_KEYS: tuple[str, ...] = ("dice", "sensitivity", "specificity", "hd95", "lesion_dice",
                            "lesion_hd95")
#: metrics of the paired comparison with ``--against``
PAIRED_KEYS: tuple[str, ...] = ("dice", "hd95")
_SEG_SUFFIX = re.compile(r"([_-]seg)$", re.IGNORECASE)
_MASK_SUFFIX = re.compile(r"_mask$", re.IGNORECASE)

Progress = Callable[[float, str], None]


@dataclass
class Evaluation:
    """Scores of a prediction folder.

    ``rows``: one dict per case and region (keys :data:`CSV_COLUMNS`; status ``ok``,
    ``missing`` or ``unreadable``); ``summary``: ``{"mean"|"median": {region: {metric:
    value}}}`` over every case including missing and unreadable ones; ``missing``: case
    ids without a prediction; ``unmatched``: prediction files without a reference;
    ``regions``: region names; ``unreadable``: one sentence per prediction file that
    could not be read or lies off its reference's grid (scored as missing, status
    ``unreadable``, the other cases still scored).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, float]]]
    missing: list[str]
    unmatched: list[str]
    regions: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    #: further reports written to the JSON (e.g. ``per_patient`` for 2D slice stacks)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_cases(self) -> int:
        return len({r["case"] for r in self.rows})


# ------------------------------------------------------------------ file matching


def case_id_from_name(name: str) -> str:
    """``BraTS-GLI-00001-000-seg.nii.gz`` -> ``BraTS-GLI-00001-000``;
    ``Brats18_x_seg.nii.gz`` -> ``Brats18_x``; ``case.nii.gz`` -> ``case``."""
    return _SEG_SUFFIX.sub("", strip_nifti_suffix(name))


def _label_files(folder: Path, seg_only: bool) -> list[Path]:
    """NIfTI label files in ``folder`` and its sub-folders (one level)."""
    out: list[Path] = []
    for f in sorted(folder.iterdir()):
        if is_hidden(f):  # macOS's ._ copies, .DS_Store: never a label map
            continue
        if f.is_dir():
            out.extend(g for g in sorted(f.iterdir())
                       if g.is_file() and is_nifti(g.name) and not is_hidden(g)
                       and _SEG_SUFFIX.search(strip_nifti_suffix(g.name)))
        elif f.is_file() and is_nifti(f.name):
            if not seg_only or _SEG_SUFFIX.search(strip_nifti_suffix(f.name)):
                out.append(f)
    return out


def _index(files: Iterable[Path], what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in files:
        cid = case_id_from_name(f.name)
        if cid in found:
            raise InputError(
                f"{f.parent}: two {what} files for case {cid} ({found[cid].name}, {f.name})."
            )
        found[cid] = f
    return found


def find_references(ref_dir: str | Path) -> dict[str, Path]:
    """Case id -> reference label file in a BraTS dataset folder or a flat folder."""
    d = _folder(ref_dir, "reference")
    segs = _label_files(d, seg_only=True)
    if not segs:  # a flat folder of plain <case>.nii.gz label maps
        segs = _label_files(d, seg_only=False)
    if not segs:  # a Decathlon task's own folder: its label folders hold the maps
        segs = [f for name in MSD_LABEL_FOLDERS if (d / name).is_dir()
                for f in _label_files(d / name, seg_only=False)]
    if not segs:
        raise InputError(
            f"{d}: holds no reference label maps (expected <case>/<case>_seg.nii.gz, "
            "<case>-seg.nii.gz or <case>.nii.gz files, or a Decathlon task's labelsTr "
            "folder)."
        )
    return _index(segs, "reference")


def find_predictions(pred_dir: str | Path) -> dict[str, Path]:
    """Case id -> prediction label file (``<case>.nii.gz`` or BraTS-named seg files)."""
    d = _folder(pred_dir, "prediction")
    return _index(_label_files(d, seg_only=False), "prediction")


def _folder(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such {what} folder.")
    if not p.is_dir():
        raise InputError(f"{p}: is not a folder; give the folder of {what} files.")
    return p


# ----------------------------------------------------------------------- scoring


#: the folders of a Medical Segmentation Decathlon task that hold its label maps
MSD_LABEL_FOLDERS = ("labelsTr", "labelsTs")


def load_label_map(path: Path, convention: str = "auto", reference: bool = False
                   ) -> tuple[np.ndarray, tuple[float, ...], str]:
    """Read a label map -> (internal labels ``(X, Y, Z)``, spacing in mm, convention).

    ``reference``: the map is a reference, so a Decathlon task's label folder
    (:data:`MSD_LABEL_FOLDERS`) says its convention when ``convention`` is auto. A
    prediction's folder says nothing: it is the user's choice of name (``predict -o
    Task/labelsTs`` writes BraTS values there), so its convention comes from its file
    name, then its values, unless given."""
    labels, spacing, conv, _ = _read_label_map(path, convention, reference)
    return labels, spacing, conv


def _read_label_map(path: Path, convention: str = "auto", reference: bool = False
                    ) -> tuple[np.ndarray, tuple[float, ...], str, np.ndarray]:
    """:func:`load_label_map`, and the file's affine as nibabel reads it (no orientation
    assumed for a file without one, unlike ``Volume.affine``: an identity stays one), from
    the header already read."""
    from braintumor.io import load_label_nifti

    vol = load_label_nifti(path)
    what = f"label map {path}"
    if convention == "auto":
        # a Decathlon label map (its values alike BraTS 2023's, its regions not) is known
        # by its folder, as the Decathlon lays it out
        hint = L.convention_from_name(path.name) or (
            "msd" if reference and path.parent.name in MSD_LABEL_FOLDERS else None)
        conv = L.detect_convention(vol.data, hint=hint, what=what)
    else:
        conv = L.detect_convention(vol.data, hint=convention, what=what, hint_given=True)
    affine = np.asarray(vol.header.get_best_affine(), float)
    return L.to_internal(vol.data, conv, what=what), vol.spacing, conv, affine


def evaluate_pair(
    pred_path: Path,
    ref_path: Path,
    pred_labels: str = "auto",
    ref_labels: str = "auto",
    hd95_method: str = "surface",
    lesions: bool = True,
    diameters: bool = False,
) -> dict[str, dict[str, float]]:
    """Scores of one prediction file against its reference: ``{region: {metric: value}}``
    (with ``diameters``, also :data:`DIAMETER_KEYS` for ET and WT)."""
    pred, _, _, pred_affine = _read_label_map(pred_path, pred_labels)
    ref, spacing, _, affine = _read_label_map(ref_path, ref_labels, reference=True)
    pred = on_reference_grid(pred, pred_path, ref.shape, ref_path, (pred_affine, affine))
    scores = M.score_case(pred, ref, spacing, lesions=lesions, hd95_method=hd95_method)
    if diameters:
        from braintumor.diameters import rano

        got, want = rano(pred, affine), rano(ref, affine)
        for region in ("ET", "WT"):
            a, b = got[region]["spd_mm2"], want[region]["spd_mm2"]
            scores[region].update(spd_pred_mm2=a, spd_ref_mm2=b,
                                  spd_diff_pct=100.0 * (a - b) / b if b > 0 else math.nan)
    return scores


class OffGrid(InputError):
    """A prediction that does not lie on its reference's grid (another shape, or an affine
    shifted, rotated or resampled against it): scored as a missing one, as an unreadable
    file is, while the other cases are scored."""


def on_reference_grid(pred: np.ndarray, pred_path: Path, ref_shape: tuple[int, ...],
                      ref_path: Path, affines: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> np.ndarray:
    """``pred`` voxel for voxel on its reference's grid: as it is when its file has the
    reference's shape and affine (or no geometry of its own: an identity affine, as a
    prediction saved from an array often has), its axes reordered or flipped when it is
    the same grid stored in another orientation (:func:`braintumor.io.label_onto_grid`,
    the rule :func:`braintumor.cases.label_on_grid` follows too); else
    :class:`OffGrid` (a prediction shifted or resampled would be scored against the wrong
    voxels). ``affines``: the two files' affines (prediction's, reference's) when the
    caller has read them; else they are read from the files' headers."""
    from braintumor.io import NotOnGrid, label_onto_grid, peek_nifti

    def affine(path: Path) -> np.ndarray:
        return np.asarray(peek_nifti(path).affine, float)  # read above: its lines said

    pred_affine, ref_affine = affines or (affine(pred_path), affine(ref_path))
    try:
        return label_onto_grid(pred, pred_affine, ref_shape, ref_affine)
    except NotOnGrid as exc:
        if exc.shape_differs:
            raise OffGrid(
                f"{pred_path}: the prediction's shape {pred.shape} differs from its "
                f"reference {ref_path.name}'s {tuple(ref_shape)}; predictions must be on "
                "the reference's grid.") from None
    raise OffGrid(
        f"{pred_path}: the prediction's voxel-to-world geometry (affine) differs from its "
        f"reference {ref_path.name}'s, as if shifted, rotated or resampled; predictions "
        "must be on the reference's grid.")


def _missing_scores(ref_path: Path, ref_labels: str, regions: Iterable[str],
                    lesions: bool = True) -> dict[str, dict]:
    """The worst-value scores of a reference without a (readable) prediction; without
    ``lesions`` the lesion-wise keys are left out, as they are for the scored cases (a
    summary of them would be the missing cases' penalties alone)."""
    ref, spacing, _ = load_label_map(ref_path, ref_labels, reference=True)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    masks = L.region_masks(ref)
    out = {}
    for region in regions:
        s: dict[str, float] = {k: math.nan for k in M.SCORE_KEYS}
        s.update(MISSING_SCORES)
        s.update(pred_volume_ml=0.0,
                 ref_volume_ml=int(np.count_nonzero(masks[region])) * voxel_ml)
        if lesions:
            # every reference lesion is missed, as by an empty prediction
            missed = M.lesion_wise(np.zeros_like(masks[region]), masks[region], spacing).fn
            s.update(lesion_tp=0, lesion_fp=0, lesion_fn=missed)
        else:
            s = {k: v for k, v in s.items() if not k.startswith("lesion_")}
        out[region] = s
    return out


def summarise(rows: list[dict[str, Any]], regions: Iterable[str],
              keys: Iterable[str] = M.SCORE_KEYS) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and median of every metric per region over ``rows`` (NaNs ignored)."""
    out: dict[str, dict[str, dict[str, float]]] = {k: {} for k in SUMMARY_KEYS}
    keys = tuple(keys)
    for region in regions:
        sel = [r for r in rows if r["region"] == region]
        for stat, fn in (("mean", np.nanmean), ("median", np.nanmedian)):
            vals = {}
            for k in keys:
                col = np.array([float(r.get(k, math.nan)) for r in sel], dtype=float)
                vals[k] = float(fn(col)) if np.isfinite(col).any() else math.nan
            out[stat][region] = vals
    return out


def mean_intervals(rows: list[dict[str, Any]], regions: Iterable[str],
                   keys: Iterable[str] = CI_KEYS) -> dict[str, dict[str, list[float]]]:
    """region -> metric -> ``[low, high]``: the 95 % bootstrap interval of the mean over
    the cases (:func:`braintumor.stats.mean_ci`; the same cases as the ``mean`` row)."""
    from braintumor.stats import mean_ci

    out: dict[str, dict[str, list[float]]] = {}
    for region in regions:
        sel = [r for r in rows if r["region"] == region]
        out[region] = {}
        for k in keys:
            if any(k in r for r in sel):
                ci = mean_ci(float(r.get(k, math.nan)) for r in sel)
                out[region][k] = [ci.low, ci.high]
    return out


#: settings of an evaluation that change its numbers: a CSV baseline scored otherwise
#: is not comparable (``hd95_unit``: 2D pictures are scored in pixels; ``empty_hd95``:
#: the HD95 of a 2D picture with one side empty)
SCORING_SETTINGS: tuple[str, ...] = ("hd95_method", "hd95_unit", "lesion_dilation",
                                     "lesion_min_volume_mm3", "empty_hd95_mm", "empty_hd95")
#: what a 2D baseline scored before ``empty_hd95`` was recorded gave a picture with
#: one side empty
EMPTY_HD95_2D_BEFORE = "374 (written before this setting was recorded)"
#: statuses of a case with no prediction to score (scored as missing)
UNPREDICTED = ("missing", "unreadable")


def _unpredicted(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {str(r["case"]) for r in rows if str(r.get("status", "")) in UNPREDICTED}


def baseline_settings(ev: Evaluation, csv_path: str | Path) -> str:
    """Check that a baseline CSV was scored as ``ev`` was, from the JSON an evaluate run
    writes beside it (its ``settings``). A scoring setting that differs raises
    :class:`InputError`; returns a warning when there is no such JSON to check (empty
    when the settings agree)."""
    path = Path(csv_path).with_suffix(".json")
    try:
        theirs = json.loads(path.read_text()).get("settings")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        theirs = None
    if not isinstance(theirs, dict):
        return (f"{path.name} (the JSON evaluate writes beside its CSV) is missing or "
                f"unreadable, so whether {Path(csv_path).name} was scored with the same "
                f"settings (HD95: {ev.settings.get('hd95_method', 'surface')}) is not "
                "checked.")
    if theirs.get("hd95_unit") == "pixel" and "empty_hd95" not in theirs:
        theirs = {**theirs, "empty_hd95": EMPTY_HD95_2D_BEFORE}  # 2D scored before it
    for key in SCORING_SETTINGS:
        if key in theirs and key in ev.settings and theirs[key] != ev.settings[key]:
            flag = {"hd95_method": " (--hd95)"}.get(key, "")
            raise InputError(f"{csv_path} was scored with {key}{flag} = {theirs[key]} and "
                             f"these predictions with {ev.settings[key]}: score both the "
                             "same way to compare them.")
    return ""


def paired_against(ev: Evaluation, baseline: Evaluation | str | Path,
                   keys: Iterable[str] = PAIRED_KEYS,
                   warn: Callable[[str], None] | None = None,
                   left_out: list[str] | None = None) -> list[Any]:
    """This evaluation against a baseline on the same cases, per region and metric
    (:func:`braintumor.stats.paired`: mean difference with its 95 % interval, Wilcoxon
    p, cases better / equal / worse). ``baseline``: another :class:`Evaluation` or the
    CSV an earlier ``braintumor evaluate`` wrote (checked against the JSON beside it:
    :func:`baseline_settings`; ``warn`` hears when that JSON is missing).

    A case neither side predicted (missing or unreadable in both) is no comparison: it
    is left out rather than counted as a tie of two missing scores (its id is added to
    ``left_out`` when given)."""
    from braintumor import stats as S

    a = S.scores_from_rows(ev.rows)
    if isinstance(baseline, (str, Path)):
        b = S.read_scores(baseline)
        said = baseline_settings(ev, baseline)
        if said and warn is not None:
            warn(said)
        with Path(baseline).open(newline="") as fh:
            b_rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    else:
        b = S.scores_from_rows(baseline.rows)
        b_rows = baseline.rows
    neither = _unpredicted(ev.rows) & _unpredicted(b_rows)
    if left_out is not None:
        left_out.extend(sorted(neither))
    a = {k: v for k, v in a.items() if k[0] not in neither}
    b = {k: v for k, v in b.items() if k[0] not in neither}
    keys = tuple(keys)
    rows = S.compare(a, b, ev.regions, keys)
    if not rows:
        why = (f" ({len(neither)} case(s) have no prediction in either)" if neither else "")
        raise InputError(f"The baseline shares no scored case and region with "
                         f"{ev.settings.get('pred_dir', 'the predictions')}{why}.")
    return rows


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    pred_labels: str = "auto",
    ref_labels: str = "auto",
    hd95_method: str = "surface",
    lesions: bool = True,
    progress: Progress | None = None,
    diameters: bool = False,
) -> Evaluation:
    """Score every reference case against its prediction (see the module docstring);
    ``diameters`` adds the RANO sums of products and their difference (ET, WT)."""
    for given in (pred_labels, ref_labels):
        if given not in ("auto",) + L.CONVENTIONS:
            raise InputError(f"Unknown label convention {given!r}; use auto, "
                             f"{', '.join(L.CONVENTIONS)}.")
    refs = find_references(ref_dir)
    preds = find_predictions(pred_dir)
    regions = L.REGIONS
    rows: list[dict[str, Any]] = []
    missing = sorted(c for c in refs if c not in preds)
    unmatched = sorted(str(preds[c]) for c in preds if c not in refs)
    if not set(refs) & set(preds):
        raise InputError(
            f"{pred_dir}: no prediction matches a reference case of {ref_dir} "
            f"(references: {', '.join(sorted(refs)[:3])}...; predictions: "
            f"{', '.join(sorted(preds)[:3]) or 'none'})."
        )
    unreadable: list[str] = []
    for i, cid in enumerate(sorted(refs)):
        if progress is not None:
            progress(i / len(refs), cid)
        status = "ok"
        if cid in preds:
            try:
                scores = evaluate_pair(preds[cid], refs[cid], pred_labels, ref_labels,
                                       hd95_method, lesions, diameters)
            except InputError as exc:
                if str(preds[cid]) not in str(exc):  # the reference's fault: said as it is
                    raise
                if pred_labels != "auto" and not isinstance(exc, (UnreadableFile, OffGrid)):
                    raise  # values that do not fit the convention asked for: the user's flag
                # one broken prediction file, one on another grid than its reference or one
                # whose values fit no convention: scored as a missing one, the others go on
                unreadable.append(str(exc))
                status = "unreadable"
        if status == "unreadable" or cid not in preds:
            scores = _missing_scores(refs[cid], ref_labels, regions, lesions)
            status = "missing" if cid not in preds else status
        for region in regions:
            rows.append({"case": cid, "region": region, **scores[region], "status": status})
    if progress is not None:
        progress(1.0, "done")
    def scored(k: str) -> bool:
        return lesions or not k.startswith("lesion_")

    keys = tuple(filter(scored, M.SCORE_KEYS)) + (("spd_diff_pct",) if diameters else ())
    return Evaluation(rows=rows, summary=summarise(rows, regions, keys), missing=missing,
                      extra={"mean_ci95": mean_intervals(rows, regions,
                                                         tuple(filter(scored, CI_KEYS)))},
                      unmatched=unmatched, regions=regions, unreadable=unreadable,
                      settings={"pred_dir": str(pred_dir), "ref_dir": str(ref_dir),
                                "pred_labels": pred_labels, "hd95_method": hd95_method,
                                "lesion_dilation": M.LESION_DILATION,
                                "lesion_min_volume_mm3": M.LESION_MIN_VOLUME_MM3,
                                "empty_hd95_mm": M.EMPTY_HD95, "diameters": diameters})


# ------------------------------------------------------------------------------ 2D


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root`` in name order, hidden files and folders passed over,
    linked folders followed as ``predict`` follows them (each real folder once, so a
    link back up the tree is no loop); a broken link, or anything else that is no
    regular file (a pipe), is passed over, as ``rglob`` and ``is_file`` did."""
    import os

    out: list[Path] = []
    seen: set[str] = set()
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        out.extend(Path(here) / f for f in sorted(files)
                   if not is_hidden(f) and os.path.isfile(os.path.join(here, f)))
    return out


def mask_files_2d(folder: Path, named_only: bool = False) -> dict[str, Path]:
    """The mask pictures under ``folder``, keyed by their path there without ``_mask``
    and suffix (``PA/slice_1`` for ``PA/slice_1_mask.png``), so that patients' folders
    may hold slices of one name. Pictures named ``*_mask`` when there are any (always
    with ``named_only``), else every picture."""
    files = [f for f in walk_files(folder) if is_image_2d(f.name)]
    masks = [f for f in files if _MASK_SUFFIX.search(f.stem)]
    out: dict[str, Path] = {}
    for f in masks if masks or named_only else files:
        rel = f.relative_to(folder)
        key = "/".join([*rel.parent.parts, _MASK_SUFFIX.sub("", f.stem)])
        if key in out:
            raise InputError(f"{f.parent}: two masks for image {key.rsplit('/', 1)[-1]} "
                             f"({out[key].name}, {f.name}).")
        out[key] = f
    return out


def _fits(a: str, b: str) -> bool:
    return a.endswith("/" + b) or b.endswith("/" + a)


def match_masks_2d(refs: Iterable[str], preds: Iterable[str]) -> dict[str, str]:
    """Reference key -> prediction key (keys of :func:`mask_files_2d`): the same path
    under both folders; else, when one folder is flat and the other holds patients'
    folders (or ``predict``'s ``out/<patient>/``), the one prediction whose path ends
    with the reference's or the other way round, when neither could be another's; else,
    for the pictures still unpaired, the prediction of the same file name, when that
    name is given once among all the references and once among all the predictions
    (prediction folders named otherwise than the reference's: ``ren/patient_A/x_1`` for
    ``lgg/TCGA_CS_4942/x_1``; :func:`paired_by_name` lists them)."""
    refs, preds = list(refs), list(preds)
    pairs = {k: k for k in refs if k in set(preds)}
    left = [k for k in preds if k not in pairs]
    cands = {k: [q for q in left if _fits(k, q)] for k in refs if k not in pairs}
    takers: dict[str, int] = {}
    for qs in cands.values():
        for q in qs:
            takers[q] = takers.get(q, 0) + 1
    for k, qs in cands.items():
        if len(qs) == 1 and takers[qs[0]] == 1:
            pairs[k] = qs[0]

    def once(keys: list[str]) -> dict[str, str]:
        names = Counter(_file_name(k) for k in keys)
        return {_file_name(k): k for k in keys if names[_file_name(k)] == 1}

    taken = set(pairs.values())
    by_name = once(preds)
    for name, k in once(refs).items():
        found = by_name.get(name)
        if k not in pairs and found is not None and found not in taken:
            pairs[k] = found
    return pairs


def _file_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def paired_by_name(pairs: dict[str, str]) -> list[str]:
    """The reference keys of :func:`match_masks_2d`'s pairs made by file name alone,
    their folders' paths unlike."""
    return sorted(k for k, q in pairs.items() if k != q and not _fits(k, q))


def by_name_note(pairs: dict[str, str]) -> str | None:
    """One sentence when some pictures were paired with their predictions by file name
    alone (the folders named otherwise), naming a folder pair; None when none were."""
    named = paired_by_name(pairs)
    if not named:
        return None
    k = named[0]
    ref_dir, pred_dir = k.rpartition("/")[0] or ".", pairs[k].rpartition("/")[0] or "."
    return (f"{len(named)} of {len(pairs)} picture(s) are paired with their prediction by "
            f"file name alone, the folders being named otherwise (e.g. {pred_dir} for "
            f"{ref_dir}).")


def case_names_2d(keys: Iterable[str]) -> dict[str, str]:
    """Key -> the name a picture is shown by: its file name without ``_mask`` when no
    other picture has it (as ever), else its path under the folder (``PB/slice_1``)."""
    keys = list(keys)
    names = [k.rsplit("/", 1)[-1] for k in keys]
    return {k: n if names.count(n) == 1 else k for k, n in zip(keys, names, strict=True)}


def read_mask_2d(path: Path) -> np.ndarray:
    """A 2D mask picture -> boolean ``(H, W)``, as every 2D path reads a mask (the
    command line's ``evaluate``, the web page's uploaded reference, a data set's masks):
    a mask whose values are all under :data:`LABEL_MASK_MAX` is a label mask, tumour
    where it is above 0 (a 0/1 PNG, labels 0/1/2, a 0/1 mask saved as JPEG); any other
    is tumour where a channel is above 127 (0/255 masks, a JPEG's noise around them, a
    mask drawn in colour)."""
    from braintumor.io import read_image_2d

    top = read_image_2d(path).max(axis=2)
    return top > (0 if top.size and int(top.max()) < LABEL_MASK_MAX else 127)


#: a 2D mask whose largest value is below this holds labels (0/1, 0/1/2), not grey
#: levels: :func:`read_mask_2d` reads it as tumour where it is above 0, where a 0/255
#: mask's threshold of 127 would read it as empty
LABEL_MASK_MAX = 16


def empty_hd95_2d(shape: tuple[int, ...]) -> float:
    """HD95 (pixels) of a 2D picture where exactly one of prediction and reference is
    empty, or the prediction is missing: the picture's diagonal, the farthest apart two
    of its pixels can lie (BraTS's 374 mm is a distance in a head, not in a picture)."""
    return float(math.hypot(shape[0], shape[1]))


def evaluate_2d(pred_dir: str | Path, ref_dir: str | Path,
                progress: Progress | None = None) -> Evaluation:
    """Per-picture Dice, sensitivity, specificity and HD95 (pixels) of 2D masks.

    Pictures are matched by their path under each folder (``PA/slice_1_mask.png`` to
    ``PA/slice_1_mask.tif``, or equal stems; a flat folder against patients' folders by
    name, :func:`match_masks_2d`); a reference without a prediction is scored as
    missing, as in 3D, its HD95 the picture's diagonal (:func:`empty_hd95_2d`), as is a
    picture whose prediction or reference alone is empty. The only region is
    ``tumour``; lesion-wise scores are not computed.
    """
    refs = mask_files_2d(_folder(ref_dir, "reference"))
    preds = mask_files_2d(_folder(pred_dir, "prediction"))
    if not refs:
        raise InputError(f"{ref_dir}: holds no mask pictures ({', '.join(IMAGE_SUFFIXES)}).")
    pairs = match_masks_2d(refs, preds)
    if not pairs:
        raise InputError(f"{pred_dir}: no prediction mask matches a reference mask of {ref_dir}.")
    names = case_names_2d(refs)
    keys = ("dice", "sensitivity", "specificity", "hd95")
    rows: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for i, key in enumerate(sorted(refs, key=lambda k: names[k])):
        if progress is not None:
            progress(i / len(refs), names[key])
        ref = read_mask_2d(refs[key])
        row: dict[str, Any] = {"case": names[key], "region": "tumour"}
        status = "missing"
        if key in pairs:
            found = preds[pairs[key]]
            try:
                pred = read_mask_2d(found)
                if pred.shape != ref.shape:
                    raise InputError(f"{found}: the mask's shape {pred.shape} differs "
                                     f"from its reference {refs[key].name}'s {ref.shape}.")
                s = M.score_masks(pred, ref, (1.0, 1.0), lesions=False)
                if pred.any() != ref.any():
                    s["hd95"] = empty_hd95_2d(ref.shape)
                row.update({k: s[k] for k in keys}, status="ok")
            except InputError as exc:  # one broken mask: scored as missing, the rest go on
                unreadable.append(str(exc))
                status = "unreadable"
        if "status" not in row:
            row.update({k: MISSING_SCORES[k] for k in keys}, status=status,
                       hd95=empty_hd95_2d(ref.shape))
        rows.append(row)
    if progress is not None:
        progress(1.0, "done")
    matched = set(pairs.values())
    note = by_name_note(pairs)
    return Evaluation(rows=rows, summary=summarise(rows, ("tumour",), keys),
                      unreadable=unreadable,
                      missing=sorted(names[k] for k in refs if k not in pairs),
                      unmatched=sorted(str(preds[k]) for k in preds if k not in matched),
                      regions=("tumour",),
                      settings={"pred_dir": str(pred_dir), "ref_dir": str(ref_dir),
                                "hd95_method": "surface", "hd95_unit": "pixel",
                                "empty_hd95": "the picture's diagonal (pixels)"},
                      extra={"mean_ci95": mean_intervals(rows, ("tumour",)),
                             **({"paired_by_name": note} if note else {}),
                             **_per_patient_2d(pred_dir, ref_dir)})


def _per_patient_2d(pred_dir: str | Path, ref_dir: str | Path) -> dict[str, Any]:
    """Per-patient scores of numbered slice stacks (Dice of each patient's volume, as
    the LGG literature reports it), from :func:`braintumor.slices2d.evaluate_2d` when
    that module is present; empty otherwise."""
    try:
        from braintumor.slices2d import evaluate_2d as by_patient
    except ImportError:
        return {}
    from braintumor.stats import mean_ci

    try:
        pp = by_patient(pred_dir, ref_dir)
    except InputError as exc:  # the per-picture rows stand alone, and the reason is said
        return {"per_patient_skipped": str(exc)}
    ci = mean_ci(m.get("dice", math.nan) for m in pp.get("patients", {}).values())
    pp.setdefault("summary", {})["dice_ci95"] = [ci.low, ci.high]
    return {"per_patient": pp}


def is_2d_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds 2D pictures and no NIfTI file."""
    p = Path(folder)
    if not p.is_dir():
        return False
    files = walk_files(p)
    return any(is_image_2d(f.name) for f in files) and not any(is_nifti(f.name) for f in files)


# ------------------------------------------------------------------------ output


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.6g}"
    return v


def table_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """The CSV rows: cases then the summary rows (case ``mean`` / ``median``)."""
    rows = list(ev.rows)
    for stat in SUMMARY_KEYS:
        for region in ev.regions:
            rows.append({"case": stat, "region": region, **ev.summary[stat][region],
                         "status": ""})
    return rows


def write_csv(ev: Evaluation, path: str | Path) -> Path:
    """Long-form CSV: ``case,region,dice,sensitivity,specificity,hd95,lesion_...``."""
    from braintumor.io import write_replacing

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = table_rows(ev)
    cols = [c for c in CSV_COLUMNS if any(c in r for r in rows)]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({c: _fmt(r.get(c, math.nan)) for c in cols})

    # beside its place, then renamed in: a full disk leaves the earlier table, not a cut one
    return write_replacing(out, write)


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_json(ev: Evaluation, path: str | Path) -> Path:
    """The same numbers as the CSV, nested per case, with the settings used."""
    from braintumor.io import write_replacing

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Any] = {}
    for r in ev.rows:
        c = cases.setdefault(r["case"], {"status": r["status"], "regions": {}})
        c["regions"][r["region"]] = {k: v for k, v in r.items()
                                     if k not in ("case", "region", "status")}
    doc = {"settings": ev.settings, "cases": cases, "summary": ev.summary,
           "missing": ev.missing, "unmatched_predictions": ev.unmatched,
           "unreadable_predictions": ev.unreadable, **ev.extra}
    text = json.dumps(_json_safe(doc), indent=2)
    return write_replacing(out, lambda tmp: tmp.write_text(text))  # as write_csv
