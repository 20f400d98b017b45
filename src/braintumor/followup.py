"""Two outlines of one patient's tumour, at two dates: how much it changed.

A follow-up scan is judged against the earlier one by size: RANO reads the sum of the
products of the target lesions' bidimensional diameters (SPD,
:mod:`braintumor.diameters`), and RANO 2.0 also allows volumes. This module compares
two label maps by both, region by region. The two scans need not share a grid or be
co-registered: volumes and diameters are measured on each in its own geometry, so
nothing is said about where the tumour changed or whether a lesion is new.

Nothing in a label map says whose it is, so :func:`checks` looks for what tells two
patients apart: names that name different cases (:func:`case_key`: BraTS 2023's
timepoints, a visit or a date in the name, and words such as ``_seg`` aside), fields of
view that do not overlap in scanner space, and, the commonest slip, the same outline
given twice. It warns, never refuses: one patient's files are often named differently.
Grids that differ are said too, as a fact (follow-up scans often differ in resolution).

The thresholds quoted with each change are RANO's size criteria (bidimensional: a
decrease of 50 % or more, an increase of 25 % or more; volumetric, RANO 2.0: 65 % and
40 %). They are measurement thresholds only: a RANO response also rests on confirmation
by a later scan, new lesions, non-measurable disease, corticosteroid dose and clinical
state, which an outline does not know.

Python: :func:`compare`, :func:`compare_files`; command line: ``braintumor compare
BEFORE AFTER``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor.diameters import rano
from braintumor.errors import InputError
from braintumor.report import NOTICE, volumes_ml

#: size thresholds (fractional change): (decrease, increase) at or beyond which RANO
#: counts a response or a progression by size
SPD_THRESHOLDS = (-0.50, 0.25)
VOLUME_THRESHOLDS = (-0.65, 0.40)
#: volumes (mL) under this count as no tumour (a few stray voxels)
EMPTY_ML = 0.01


#: the volumes RANO 2.0 reads: the enhancing tumour's and, for a tumour that does not
#: enhance, the T2/FLAIR abnormality's (the whole tumour); the necrotic core, the edema
#: and the tumour core have no RANO threshold, so their changes carry no reading
RANO_VOLUMES = ("ET", "WT")


def change(before: float, after: float, thresholds: tuple[float, float] | None,
           empty: float = 0.0, present: tuple[bool, bool] | None = None) -> dict[str, Any]:
    """One quantity at two dates: ``{"before", "after", "change", "percent", "reading"}``.

    ``reading`` names where the change falls against ``thresholds`` (fractions, reached
    when the change equals them): "gone", "new", "none in either", "decrease of X % or
    more", "increase of Y % or more" or "within the thresholds". ``present``: for an SPD,
    whether the region is there at all at each date; an SPD of 0 then means no lesion
    large enough to measure, not no tumour, and the reading says so. ``percent`` is
    shown to 0.1, cut towards zero, so that it never reads past a threshold the change
    did not reach; a change cut to 0 keeps its direction's sign (-0.0 for a decrease,
    +0.0 for an increase; 0.0 for none), so that a decrease never reads as one.
    ``thresholds`` None: a quantity RANO sets none for; its reading is
    "no RANO threshold" wherever the change falls (new, gone and none in either are
    still said).
    """
    out: dict[str, Any] = {"before": round(before, 3), "after": round(after, 3),
                           "change": round(after - before, 3), "percent": None}
    if thresholds is None:
        out = change(before, after, (-1.0, math.inf), empty, present)
        if out["reading"] not in ("none in either", "new", "gone"):
            out["reading"] = "no RANO threshold"
        return out
    there = present or (before > empty, after > empty)
    if before <= empty and after <= empty:
        out["reading"] = "none in either"
    elif before <= empty:
        out["reading"] = ("new measurable lesion (there before, too small to measure)"
                          if there[0] else "new")
    elif after <= empty:
        out["percent"] = -100.0
        out["reading"] = (f"decrease of {-100 * thresholds[0]:.0f} % or more (no lesion "
                          "left large enough to measure; smaller tumour remains)"
                          if there[1] else "gone")
    else:
        frac = after / before - 1
        tol = 1e-9  # 1.4 / 1.0 - 1 is 0.39999999999999991 in floating point
        value = 100 * frac
        cut = abs(math.trunc(value * 10 + (1e-6 if value > 0 else -1e-6))) / 10
        out["percent"] = math.copysign(cut, value) if value else 0.0
        if frac <= thresholds[0] + tol:
            out["reading"] = f"decrease of {-100 * thresholds[0]:.0f} % or more"
        elif frac >= thresholds[1] - tol:
            out["reading"] = f"increase of {100 * thresholds[1]:.0f} % or more"
        else:
            out["reading"] = "within the thresholds"
    return out


def compare(before: np.ndarray, before_affine: np.ndarray, after: np.ndarray,
            after_affine: np.ndarray) -> dict[str, Any]:
    """Compare two internal label maps, each with its own affine.

    Returns ``{"volumes": {region: change}, "spd": {"ET"|"WT": change},
    "diameters": {"before": rano, "after": rano}}``, JSON-ready.
    """
    vox = [float(abs(np.linalg.det(np.asarray(a, dtype=float)[:3, :3]))) / 1000.0
           for a in (before_affine, after_affine)]
    vb, va = volumes_ml(before, vox[0]), volumes_ml(after, vox[1])
    db, da = rano(before, before_affine), rano(after, after_affine)
    return {
        "volumes": {k: change(vb[k], va[k],
                              VOLUME_THRESHOLDS if k in RANO_VOLUMES else None, EMPTY_ML)
                    for k in vb},
        "spd": {r: change(db[r]["spd_mm2"], da[r]["spd_mm2"], SPD_THRESHOLDS,
                          present=(vb[r] > EMPTY_ML, va[r] > EMPTY_ML))
                for r in ("ET", "WT")},
        "diameters": {"before": db, "after": da},
    }


def scan_dates(text: str, count: int) -> list[dt.date]:
    """``count`` scans' dates given as ``"2024-01-15,2024-04-20,..."`` (ISO, YYYY-MM-DD,
    one per label map, in the maps' order), each after the one before and none ahead of
    today; anything else is refused in one sentence."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise InputError(f"--dates gives {len(parts)} date{'s' if len(parts) != 1 else ''} "
                         f"for {count} label maps; give one per map, in their order, "
                         "separated by commas.")
    days: list[dt.date] = []
    for part in parts:
        try:
            day = dt.date.fromisoformat(part)
        except ValueError:
            raise InputError(f"--dates: {part!r} is not a date; give each as YYYY-MM-DD."
                             ) from None
        if day > dt.date.today():
            raise InputError(f"--dates: {day} lies ahead of today.")
        if days and day <= days[-1]:
            raise InputError(f"--dates: {day} is not after the scan before it ({days[-1]}); "
                             "give the maps and their dates in date order.")
        days.append(day)
    return days


def dated(before: dt.date | None, after: dt.date | None) -> dict[str, Any]:
    """Two scans' dates as a comparison carries them (the command line's and the web
    page's alike): ``{"before", "after"}`` ISO or None, and ``days`` between them where
    both are known."""
    return {"before": before.isoformat() if before else None,
            "after": after.isoformat() if after else None,
            "days": (after - before).days if before is not None and after is not None
            else None}


def dates_text(dates: dict[str, Any] | None) -> str:
    """A comparison's dates in words ("" when neither is known)."""
    if not dates or not (dates.get("before") or dates.get("after")):
        return ""
    text = f"Scans of {dates.get('before') or 'an unknown date'} and " \
           f"{dates.get('after') or 'an unknown date'}"
    if dates.get("days") is not None:
        text += f", {dates['days']} days apart"
    return text + "."


def series(visits: list[tuple[str, np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    """Several visits, in date order: ``(name, internal labels, affine)`` each.

    Per visit: its volumes and SPDs and, from the second on, each region's SPD against
    the baseline (the first visit) and against the nadir (the smallest SPD of the visits
    before it), as RANO reads them: a response by the decrease from baseline, a
    progression by the increase from the nadir. ``reading`` per region says which
    threshold the visit crosses, the progression first. JSON-ready.
    """
    rows: list[dict[str, Any]] = []
    for name, lab, aff in visits:
        vox = float(abs(np.linalg.det(np.asarray(aff, dtype=float)[:3, :3]))) / 1000.0
        d = rano(lab, aff)
        rows.append({"name": name, "volumes_ml": volumes_ml(lab, vox),
                     "spd_mm2": {r: d[r]["spd_mm2"] for r in ("ET", "WT")},
                     "largest": {r: d[r]["largest"] for r in ("ET", "WT")}})
    for k, row in enumerate(rows[1:], start=1):
        row["reading"] = {}
        for r in ("ET", "WT"):
            now = row["spd_mm2"][r]
            nadir = min(range(k), key=lambda j: rows[j]["spd_mm2"][r])
            there = row["volumes_ml"][r] > EMPTY_ML
            base = change(rows[0]["spd_mm2"][r], now, SPD_THRESHOLDS,
                          present=(rows[0]["volumes_ml"][r] > EMPTY_ML, there))
            low = change(rows[nadir]["spd_mm2"][r], now, SPD_THRESHOLDS,
                         present=(rows[nadir]["volumes_ml"][r] > EMPTY_ML, there))
            row[f"{r}_vs_baseline"] = base
            row[f"{r}_vs_nadir"] = {**low, "nadir": rows[nadir]["name"]}
            if low["reading"].startswith(("increase", "new")):
                row["reading"][r] = (f"{low['reading']} from the nadir "
                                     f"({rows[nadir]['name']})")
            elif base["reading"].startswith("decrease") or base["reading"] == "gone":
                row["reading"][r] = f"{base['reading']} from baseline"
            else:
                row["reading"][r] = base["reading"]
    return rows


#: what ends a label map's name without naming the patient: what the file is (BraTS's
#: ``_seg``, this package's ``_braintumor`` download, BIDS's ``_dseg`` and its
#: ``desc-tumor`` or ``space-T1w``, ...) ...
_KIND_WORDS = re.compile(r"(^|_)(seg|dseg|segmentation|labels?|labelmap|label_map|braintumor|"
                         r"pred|prediction|mask|outline|corrected|brats2021|brats2023|msd|"
                         r"(desc|space|rec|acq|run)_[a-z0-9]+)$")
#: ... which visit it is (``_visit2``, ``_v2``, ``_tp1``, ``_baseline``, ``_followup_3``,
#: ``_preop``, ``_pre-op``, ``_week12``, ``_month3``, ``_6months``; BIDS's ``ses-`` before
#: any of them; not a bare letter and number such as ``_m3`` or ``_3w``, which may be
#: what names the patient) ...
_VISIT_WORDS = re.compile(
    r"(^|_)((visit|v|tp|timepoint|time|scan|exam|session|ses|followup|follow_up|fu|baseline|"
    r"base|pre|post|before|after|earlier|later|old|new|previous|prior|current|now|"
    r"(pre|post)_?(op|operative|operatively|surgery|surgical|treatment|therapy|tx|rt|chemo)|"
    r"day|week|wk|month|mo|year|yr)_?\d*|"
    r"\d+_?(days?|weeks?|wks?|months?|mos?|years?|yrs?))$")
#: ... or its date (``_2018-03-14``, ``_20180314``, day first ``_14-03-2018`` or, after
#: a name, ``_14032018``; eight digits alone day first may be an identifier), with a time
#: of day after it or not (``_2018-03-14T10-30``)
_DATE_WORDS = re.compile(r"((^|_)((19|20)\d\d_?[01]\d_?[0-3]\d|[0-3]?\d_[01]?\d_(19|20)\d\d)|"
                         r"_[0-3]\d[01]\d(19|20)\d\d)((t|_)[0-2]\d_?[0-5]\d(_?[0-5]\d)?z?)?$")
#: BraTS 2023: ``BraTS-GLI-00005-001`` is patient 00005's timepoint 001
_BRATS_TIMEPOINT = re.compile(r"(brats_[a-z]+_\d{5})_\d{3}")
#: case names that name no one (this package's own for a case named by nothing)
_NAMELESS = {"", "case", "dicom_case", "image", "images", "scan", "patient", "unnamed",
             "untitled", "download", "file", "labels"}


def case_key(name: str) -> str:
    """What in a file's or case's name names the patient, to compare two names by: the
    name without folders, NIfTI suffix and a browser's copy mark (``x (1).nii.gz``), in
    lower case with every run of separators one ``_``, less the words at its end that say
    what the file is (``_seg``, ``_braintumor``, BIDS's ``_dseg``), which visit
    (``_visit2``, ``_v2``, ``_baseline``, ``_preop``, ``_week12``, BIDS's
    ``ses-baseline``) or when (``_2018-03-14``, ``_14-03-2018``, ``_2018-03-14T10-30``),
    and BraTS 2023's timepoint
    (``BraTS-GLI-00005-001`` -> ``brats_gli_00005``). Empty when nothing is left that
    names anyone (``seg.nii.gz``, ``visit1``, ``case``)."""
    from braintumor.io import strip_nifti_suffix

    base = re.split(r"[\\/]", name)[-1].strip()
    base = re.sub(r"\s*\(\d+\)$", "", strip_nifti_suffix(base))
    key = re.sub(r"[\W_]+", "_", unicodedata.normalize("NFKC", base).lower()).strip("_")
    before = None
    while key != before:
        before = key
        for words in (_KIND_WORDS, _VISIT_WORDS, _DATE_WORDS):
            key = words.sub("", key).strip("_")
    m = _BRATS_TIMEPOINT.fullmatch(key)
    key = m.group(1) if m else key
    return "" if key in _NAMELESS else key


def _grid(labels: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """A label map's grid: shape, voxel size (mm) and its field of view's corners in
    scanner space (mm), JSON-ready."""
    aff = np.asarray(affine, dtype=float)
    # the corners of the outer voxels' outer faces
    corners = np.array(list(np.ndindex(2, 2, 2)), float) * np.array(labels.shape[:3]) - 0.5
    mm = corners @ aff[:3, :3].T + aff[:3, 3]
    return {"shape": [int(n) for n in labels.shape[:3]],
            "voxel_mm": [round(float(v), 3) for v in np.linalg.norm(aff[:3, :3], axis=0)],
            "extent_mm": [[round(float(v), 1) for v in mm.min(0)],
                          [round(float(v), 1) for v in mm.max(0)]]}


def _grid_text(g: dict[str, Any]) -> str:
    return (" x ".join(str(n) for n in g["shape"]) + " voxels of "
            + " x ".join(f"{v:g}" for v in g["voxel_mm"]) + " mm")


def checks(before_name: str, after_name: str, before: np.ndarray, before_affine: np.ndarray,
           after: np.ndarray, after_affine: np.ndarray,
           said: tuple[str, str] = ("the earlier file", "the later file")) -> dict[str, Any]:
    """Whether two label maps look like one patient's at two dates. Returns
    ``{"warnings": [...], "notes": [...], "names": {...}, "grids": {...}}``, JSON-ready:
    ``warnings``, sentences to show before the comparison: the names name different cases
    (:func:`case_key`; not said when either names no one), the fields of view do not
    overlap in scanner space, or the two are one outline (same grid, same labels);
    ``notes``, facts: the grids differ (follow-up scans often do), a name that could not be
    checked. ``before_name``/``after_name``: the files' names, or a case's; ``said``: how
    the warnings call them."""
    from braintumor.io import on_grid

    warnings: list[str] = []
    notes: list[str] = []
    keys = case_key(before_name), case_key(after_name)
    same_name = None if not all(keys) else keys[0] == keys[1]
    if same_name is False:
        warnings.append(
            f"Check that both are one patient's: {said[0]}, {before_name}, and {said[1]}, "
            f"{after_name}, are named for different cases. Names often differ for one "
            "patient, so the comparison is shown; between two patients it means nothing.")
    elif same_name is None:
        notes.append("The names do not say which patient each file is, so they were not "
                     "checked against each other.")
    gb, ga = _grid(before, before_affine), _grid(after, after_affine)
    lo = np.maximum(gb["extent_mm"][0], ga["extent_mm"][0])
    hi = np.minimum(gb["extent_mm"][1], ga["extent_mm"][1])
    # one grid as the package means it everywhere (io.on_grid: voxel centres within
    # 0.01 mm), not affine entries within 1e-3 each
    same_grid = on_grid(before.shape, before_affine, after.shape, after_affine)
    outline = one_outline(before, before_affine, after, after_affine)
    if np.any(lo >= hi):
        warnings.append("The two label maps do not overlap in scanner space: they are not "
                        "of one head in one coordinate space. Check that the earlier file is "
                        "this patient's label map.")
    if outline:
        warnings.append("The two label maps are one outline (the same labels on the same "
                        "grid), so nothing changed; give the earlier scan's label map.")
    elif not same_grid and (gb["shape"] != ga["shape"] or
                            not np.allclose(gb["voxel_mm"], ga["voxel_mm"], atol=1e-3)):
        notes.append(f"The two lie on different grids (earlier {_grid_text(gb)}, this one "
                     f"{_grid_text(ga)}), as two scans often do; each is measured on its "
                     "own.")
    return {"warnings": warnings, "notes": notes,
            "names": {"before": before_name, "after": after_name, "same": same_name},
            "grids": {"before": gb, "after": ga, "same": bool(same_grid)}}


def one_outline(before: np.ndarray, before_affine: np.ndarray, after: np.ndarray,
                after_affine: np.ndarray) -> bool:
    """Whether two label maps are one outline: the same labels on one grid, however each
    file stores it (an axis reversed, say). Two maps without any tumour are not: two
    scans after a complete response look so, with no file given twice."""
    from braintumor.io import NotOnGrid, turned_onto

    if not before.any() and not after.any():
        return False
    try:
        return bool(np.array_equal(turned_onto(before, before_affine, after.shape,
                                               after_affine), after))
    except NotOnGrid:
        return False


#: how each convention is named in a sentence
_CONVENTION_WORDS = {"brats2021": "BraTS 2017-2021 labels (ET = 4)",
                     "brats2023": "BraTS 2023 labels (ET = 3)",
                     "msd": "MSD labels (edema = 1, ET = 3)"}
#: how the command line chooses a convention, named where a choice does not fit a map
CHOOSE_ON_COMMAND_LINE = "leave --labels out (auto) to read each map by its own values"


def map_convention(data: np.ndarray, labels: str, name: str, what: str,
                   choose: str = CHOOSE_ON_COMMAND_LINE) -> tuple[str, str | None]:
    """The convention to read one label map of a comparison by, and a note when its values
    overruled its name. ``labels``: the user's choice, or ``auto``: the values, where they
    fit one convention only (a 4: BraTS 2017-2021; a 3 without a 4: BraTS 2023, MSD being
    chosen only by name), else the name's (BraTS 2023's ``-seg``, 2017-2021's ``_seg``).

    A comparison's maps are often of two conventions (an earlier scan's BraTS 2021 file
    and a later BraTS 2023 one, both named ``*_seg``), so each is read by its own values;
    a name that says otherwise is only a hint, and the note says which convention was
    read. Values that fit no convention, or not the one chosen, are refused in one
    sentence that names the way out (``choose``: how the user leaves the choice to the
    values). Commands that read one map (``predict``'s, ``evaluate``'s) keep
    :func:`braintumor.labels.detect_convention`, where a name that contradicts the values
    is refused.
    """
    if labels != "auto":
        return L.detect_convention(data, labels, what, hint_given=True, way_out=choose), None
    # by the values alone (a 4: BraTS 2017-2021; a 3: 2023), or no convention at all
    read = L.detect_convention(data, what=what, way_out="give a label map in one of them")
    named = L.convention_from_name(name)
    if named is None:
        return read, None
    values = {int(v) for v in L.present_values(data)}
    if values <= L.allowed_values(named):
        return named, None  # values that fit the name are read by it (0, 1, 2 fit both)
    shown = ", ".join(str(v) for v in sorted(values))
    return read, (f"{name} was read as {_CONVENTION_WORDS[read]}: its label values "
                  f"({shown}) fit only that convention, not the "
                  f"{_CONVENTION_WORDS[named]} its name suggests.")


def read_label_map(path: str | Path, labels: str = "auto", name: str | None = None,
                   choose: str = CHOOSE_ON_COMMAND_LINE
                   ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A label map file as ``(internal labels, affine, note)``; ``labels``: its
    convention, or auto (:func:`map_convention`: the values, then ``name``, the file's
    own name by default); ``note``: the convention read, where the values overruled the
    name, else None."""
    from braintumor.io import load_label_nifti

    vol = load_label_nifti(path)
    what = f"label map {name or path}"
    conv, note = map_convention(vol.data, labels, name or Path(path).name, what, choose)
    return L.to_internal(vol.data, conv, what=what), vol.affine, note


def compare_files(before: str | Path, after: str | Path, labels: str = "auto"
                  ) -> dict[str, Any]:
    """:func:`compare` on two label map files (``labels``: their convention, or auto,
    each map by its own values), with :func:`checks`' warnings and notes (after a note on
    a map read against its name's convention)."""
    b, ab, nb = read_label_map(before, labels)
    a, aa, na = read_label_map(after, labels)
    out = compare(b, ab, a, aa)
    out["files"] = {"before": str(before), "after": str(after)}
    out.update(checks(Path(before).name, Path(after).name, b, ab, a, aa))
    out["notes"] = [n for n in (nb, na) if n] + out["notes"]
    return out


def series_from_files(paths: list[str | Path], labels: str = "auto") -> list[dict[str, Any]]:
    """:func:`series` on label map files, in date order; each visit after the first with
    the ``warnings`` and ``notes`` of :func:`checks` against the first (the baseline),
    and a warning where it is one outline with another visit before it; any visit with a
    note on a convention read against its name."""
    read = [(Path(p).name, *read_label_map(p, labels)) for p in paths]
    maps = [m[:3] for m in read]
    visits = series(maps)
    for k, (visit, m) in enumerate(zip(visits, read, strict=True)):
        notes = [m[3]] if m[3] else []
        if k:
            said = checks(read[0][0], m[0], read[0][1], read[0][2], m[1], m[2],
                          said=("the baseline", "this visit"))
            visit["warnings"] = said["warnings"]
            visit["warnings"] += [
                f"This visit (visit {k + 1}) and visit {j + 1}, {e[0]}, are one outline (the "
                "same labels on the same grid), so nothing changed between them; give each "
                "visit's own label map."
                for j, e in enumerate(read[:k]) if j and one_outline(e[1], e[2], m[1], m[2])]
            notes += said["notes"]
        if notes:
            visit["notes"] = notes
    return visits


def series_notes(visits: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """A series' ``(warnings, notes)``, each named by its visit, as the terminal, the
    JSON and the HTML say them."""
    return ([f"{v['name']}: {w}" for v in visits for w in v.get("warnings", [])],
            [f"{v['name']}: {n}" for v in visits for n in v.get("notes", [])])


def series_dates_text(visits: list[dict[str, Any]]) -> str:
    """The visits' dates in words ("" when none is given): each visit's date and its
    days after the baseline."""
    dated_visits = [v for v in visits if v.get("date")]
    if not dated_visits:
        return ""
    return "Dates: " + "; ".join(
        f"{v['name']} {v['date']}"
        + (f" ({v['days']} days after the baseline)" if v.get("days") else "")
        for v in dated_visits) + "."


def series_title(visits: list[dict[str, Any]]) -> str:
    """A series' title: the visits in date order, and the span of their dates where
    given."""
    days = [v for v in visits if v.get("date")]
    if len(days) < 2:
        return "Visits, in date order"
    span = (dt.date.fromisoformat(days[-1]["date"])
            - dt.date.fromisoformat(days[0]["date"])).days
    return f"Visits, in date order: {days[0]['date']} to {days[-1]['date']} ({span} days)"


def series_rows(visits: list[dict[str, Any]]) -> list[list[str]]:
    """The visits as rows: name, WT and ET volume (mL), ET and WT SPD (mm²), each SPD's
    change from baseline and from the nadir (%), and the readings."""
    def pct(c: dict[str, Any] | None) -> str:
        return "-" if c is None else _pct(c) if c["percent"] is not None else c["reading"]

    return [[v["name"], f"{v['volumes_ml']['WT']:.1f}", f"{v['volumes_ml']['ET']:.1f}",
             f"{v['spd_mm2']['ET']:.0f}", pct(v.get("ET_vs_baseline")),
             pct(v.get("ET_vs_nadir")), f"{v['spd_mm2']['WT']:.0f}",
             pct(v.get("WT_vs_baseline")), pct(v.get("WT_vs_nadir")),
             "; ".join(f"{r}: {t}" for r, t in v["reading"].items())
             if "reading" in v else "baseline"]
            for v in visits]


SERIES_HEADER = ("visit", "WT mL", "ET mL", "ET SPD mm²", "vs baseline", "vs nadir",
                 "WT SPD mm²", "vs baseline", "vs nadir", "size reading")

ROWS = (("WT", "Whole tumour"), ("TC", "Tumour core"), ("ET", "Enhancing tumour"),
        ("NCR", "Necrotic / non-enhancing core"), ("ED", "Edema"))
SPD_ROWS = (("ET", "Enhancing tumour (RANO)"), ("WT", "T2/FLAIR abnormality (RANO 2.0)"))


def _pct(c: dict[str, Any]) -> str:
    """A change's percent as :func:`change` cut it, signed by the change's direction (a
    decrease cut to 0 reads -0.0 %), unsigned where nothing changed."""
    if c["percent"] is None:
        return "-"
    if c["percent"] == 0 and c["before"] == c["after"]:
        return "0.0 %"
    return f"{c['percent']:+.1f} %"


def _shown_change(before: float, after: float, digits: int) -> tuple[str, str, str]:
    """Two values and their change to ``digits`` decimals, the change computed from the
    values as shown, so that the row adds up as read (45.56 -> 27.50 reads -18.06)."""
    b, a = round(float(before), digits), round(float(after), digits)
    diff = round(a - b, digits)
    return (f"{b:.{digits}f}", f"{a:.{digits}f}",
            f"{diff:+.{digits}f}" if diff else f"{0:.{digits}f}")


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The comparison as rows: quantity, before, after, change, percent, reading. Volumes
    to 0.01 mL, or 0.001 mL where either is under 0.1 mL (as :func:`braintumor.report.
    ml_text` shows them); each change is the difference of the values as shown."""
    rows = []
    for k, name in ROWS:
        c = result["volumes"][k]
        small = any(0 < float(c[w]) < 0.1 for w in ("before", "after"))
        rows.append([f"{name} (mL)", *_shown_change(c["before"], c["after"], 3 if small else 2),
                     _pct(c), c["reading"]])
    for k, name in SPD_ROWS:
        c = result["spd"][k]
        rows.append([f"SPD, {name} (mm²)", *_shown_change(c["before"], c["after"], 0),
                     _pct(c), c["reading"]])
    return rows


CAVEAT = ("Size only: thresholds are RANO's (SPD: -50 % / +25 %; volume, RANO 2.0: -65 % / "
          "+40 %). A response assessment also needs a confirming scan, new lesions, "
          "non-measurable disease, steroid dose and clinical state, and the two scans are "
          "not registered, so nothing here says where the tumour changed. Target lesions "
          "are re-chosen by size at each scan (the largest measurable ones), not followed "
          "from one scan to the next.")


def _table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def output_paths(out: str | Path) -> dict[str, Path]:
    """The two files ``-o OUT`` writes: ``OUT.json`` and ``OUT.html``, each suffix added
    to the whole name, so a name with dots keeps them (``pat_2024.03.15`` ->
    ``pat_2024.03.15.html``, not ``pat_2024.03.html``). A name that already ends in
    ``.html`` or ``.json`` (in any case) names the pair without it: ``report.html``
    writes ``report.html`` and ``report.json``."""
    base = Path(out)
    if base.suffix.lower() in (".html", ".json"):
        base = base.with_suffix("")
    return {"json": base.with_name(base.name + ".json"),
            "html": base.with_name(base.name + ".html")}


def _write(doc: dict[str, Any], body: str, out: str | Path) -> dict[str, Path]:
    """``<out>.json`` (``doc``) and a self-contained ``<out>.html`` around ``body``
    (:func:`output_paths`)."""
    paths = output_paths(out)
    jpath, hpath = paths["json"], paths["html"]
    from braintumor.io import write_replacing, written_together

    jpath.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>braintumor: follow-up"
        "</title><style>body{font-family:sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.25em .6em}"
        "th{background:#eee}</style></head><body><h1>Follow-up comparison</h1>"
        f"<p><strong>{NOTICE}</strong></p>"
        + "".join(f"<p><strong>Warning: {html.escape(w)}</strong></p>"
                  for w in doc.get("warnings", []))
        + f"{body}<p>{html.escape(CAVEAT)}</p>"
        "</body></html>\n")
    # each beside its place, the pair renamed in once both are written: a full disk
    # leaves the earlier pair, never a cut JSON beside the earlier page
    with written_together(last=[hpath]):
        write_replacing(jpath, lambda tmp: tmp.write_text(text))
        write_replacing(hpath, lambda tmp: tmp.write_text(page))
    return paths


def write_outputs(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """``<out>.json`` and a self-contained ``<out>.html`` of :func:`compare`'s result
    (:func:`output_paths`)."""
    from braintumor.report import diameters_html

    e = html.escape
    files = result.get("files", {})
    dates = result.get("dates") or {}
    body = (f"<p>Before: {e(files.get('before', '-'))}"
            + (f" ({e(dates['before'])})" if dates.get("before") else "")
            + f"<br>After: {e(files.get('after', '-'))}"
            + (f" ({e(dates['after'])})" if dates.get("after") else "") + "</p>"
            + (f"<p>{e(dates_text(dates))}</p>" if dates_text(dates) else "")
            + "".join(f"<p>{e(n)}</p>" for n in result.get("notes", []))
            + _table(("quantity", "before", "after", "change", "change (%)", "size reading"),
                     table_rows(result))
            + "<h2>Before</h2>" + diameters_html(result["diameters"]["before"])
            + "<h2>After</h2>" + diameters_html(result["diameters"]["after"]))
    return _write(result, body, out)


def write_series_outputs(visits: list[dict[str, Any]], out: str | Path) -> dict[str, Path]:
    """``<out>.json`` and ``<out>.html`` of :func:`series`'s visits (their warnings and
    notes gathered, each named by its visit, as the terminal says them)."""
    warnings, notes = series_notes(visits)
    dates = series_dates_text(visits)
    body = ("<p>Visits in date order; SPD changes from the baseline (the first visit) and "
            "from the nadir (the smallest SPD before each visit).</p>"
            + (f"<p>{html.escape(dates)}</p>" if dates else "")
            + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
            + _table(SERIES_HEADER, series_rows(visits)))
    return _write({"visits": visits, "warnings": warnings, "notes": notes}, body, out)
