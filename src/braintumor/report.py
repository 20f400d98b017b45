"""Pictures and a small report of one segmentation: overlay PNG, volumes, metrics.

Pure functions of arrays plus writers, shared by ``braintumor demo`` and the web app:

* :func:`volumes_ml` - mL per sub-region (NCR, ED, ET) and region (WT, TC, ET);
* :func:`pick_slices` - axial slices through the tumour;
* :func:`overlay_png` - FLAIR and T1ce slices in grey with the sub-regions coloured and
  a legend;
* :func:`write_report` - ``report.json`` and a self-contained ``report.html`` (picture
  embedded), with a metrics table when a reference exists.

Display orientation: every picture of a report (these, the measured slices, the web
page's key slices) is drawn in the radiological convention, the one radiology reports
and most PACS use: the patient's right on the picture's left, anterior up on an axial
slice, superior up on coronal and sagittal ones, anterior on the left of a sagittal
one, whatever the file's voxel order (:func:`display_grid`, :func:`plane`). Each panel
carries the patient's direction at its four edges (:func:`plane_letters`, drawn by
:func:`label_edges`), read from the case's affine through the same reordering and
slicing that drew it, and the reports say the convention in words (:data:`VIEW_NOTE`).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import fonts
from braintumor import labels as L

#: RGB (0-255) of each internal label wherever labels are coloured: these pictures, the
#: web reports, and the web viewer and legends (``web/static/app.js``, ``style.css`` and
#: ``report.css`` hold the same numbers; ``tests/test_colours.py`` checks they agree).
#: Okabe and Ito's colour-blind-safe palette: necrotic core vermillion, edema sky blue,
#: enhancing tumour yellow, told apart with deuteranopia and protanopia too, where the
#: red and green used before were not.
LABEL_RGB: dict[int, tuple[int, int, int]] = {
    L.NCR: (213, 94, 0),
    L.ED: (86, 180, 233),
    L.ET: (240, 228, 66),
}
#: the same colours as fractions 0-1 (matplotlib's)
COLOURS: dict[int, tuple[float, float, float]] = {
    v: (r / 255, g / 255, b / 255) for v, (r, g, b) in LABEL_RGB.items()
}
LEGEND = {L.ED: "edema (ED)", L.NCR: "necrotic core (NCR)", L.ET: "enhancing tumour (ET)"}


def volumes_ml(labels: np.ndarray, voxel_volume_ml: float) -> dict[str, float]:
    """Volumes (mL) of the sub-regions NCR, ED, ET and of the regions WT, TC, ET.

    ``labels``: internal ``(X, Y, Z)``; ``voxel_volume_ml``: mm^3 / 1000 of one voxel.
    The key ``ET`` is both a sub-region and a region (the same voxels).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=4)
    v = {name: float(counts[val]) * voxel_volume_ml
         for name, val in (("NCR", L.NCR), ("ED", L.ED), ("ET", L.ET))}
    v["TC"] = v["NCR"] + v["ET"]
    v["WT"] = v["TC"] + v["ED"]
    # to 1e-6 mL (a voxel of 0.5 mm is 1.25e-4 mL): a region present never rounds to 0
    return {k: round(v[k], 6) for k in ("WT", "TC", "ET", "NCR", "ED")}


#: the voxel order pictures are drawn from: the first axis runs to the patient's left, so
#: that columns drawn along it put the patient's right on the picture's left (the
#: radiological convention), the second to posterior (anterior at the top of an axial
#: slice), the third to superior
DISPLAY_AXCODES: tuple[str, str, str] = ("L", "P", "S")
#: the views :func:`plane` draws
VIEWS = ("axial", "coronal", "sagittal")
#: the edges of a picture, as :func:`plane_letters` names them
EDGES = ("left", "right", "top", "bottom")
#: the convention of the pictures, in words, where a picture is shown
VIEW_CONVENTION = "Radiological view: the patient's right is on the image's left."
#: the line each report shows with its pictures
VIEW_NOTE = (f"{VIEW_CONVENTION} Letters at the edges: R/L the patient's right/left, A/P "
             "anterior/posterior, S/I superior/inferior.")
#: what a picture says when its scan's header gave no orientation (its letters marked "?")
ASSUMED_NOTE = ("Orientation assumed (R?/L?): the scan's header gives none, so the side "
                "letters rest on BraTS's axes.")
#: colour of the orientation letters, on the black band around a picture
LETTER_RGB = (255, 255, 255)


def display_grid(volume: np.ndarray, affine: np.ndarray,
                 axcodes: Sequence[str] = DISPLAY_AXCODES) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` with its last three axes reordered (and flipped) to the voxel order
    ``axcodes``, the closest to the ``affine``'s axes, and the affine of the result."""
    import nibabel as nib

    src = nib.orientations.io_orientation(affine)
    tr = nib.orientations.ornt_transform(src, nib.orientations.axcodes2ornt(tuple(axcodes)))
    lead = volume.ndim - 3
    out = volume
    # apply_orientation works on the first axes; move spatial axes to the front
    if lead:
        out = np.moveaxis(out, list(range(lead)), list(range(-lead, 0)))
    out = nib.orientations.apply_orientation(out, tr)
    if lead:
        out = np.moveaxis(out, list(range(-lead, 0)), list(range(lead)))
    shown = np.asarray(affine, float) @ nib.orientations.inv_ornt_aff(tr, volume.shape[-3:])
    return np.ascontiguousarray(out), shown


def plane(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """Slice ``index`` of the 3D display-grid ``volume`` (:func:`display_grid`) in
    ``view`` as it is drawn: rows from the top of the picture, columns from its left.

    Axial: rows along the second axis, columns along the first; coronal: rows along the
    third axis reversed (superior at the top), columns along the first; sagittal: rows
    along the third reversed, columns along the second. With :data:`DISPLAY_AXCODES`
    that is the radiological view, and :func:`plane_letters` reads the letters of any
    grid through this same function."""
    if view == "axial":
        return volume[:, :, index].T
    if view == "coronal":
        return volume[:, index, :].T[::-1]
    if view == "sagittal":
        return volume[index, :, :].T[::-1]
    raise ValueError(f"unknown view {view!r}; one of {', '.join(VIEWS)}")


def _letter(direction: np.ndarray) -> str:
    """The patient's direction (R, L, A, P, S, I) closest to a vector in scanner
    coordinates (NIfTI's RAS+: x to the right, y anterior, z superior)."""
    k = int(np.argmax(np.abs(direction)))
    return ("LR", "PA", "IS")[k][int(direction[k] > 0)]


def plane_letters(affine: np.ndarray, view: str) -> dict[str, str]:
    """The patient's direction at each edge (``left``, ``right``, ``top``, ``bottom``)
    of :func:`plane`'s picture of a volume whose voxels lie at ``affine``.

    Read, not assumed: :func:`plane` slices a volume of voxel indices, which gives the
    voxel step one pixel to the right and one down, and ``affine`` turns each into a
    direction in scanner space, so the letters follow whatever voxel order the volume
    has and whatever transposes and flips the view uses."""
    right, down = _plane_steps(view)
    m = np.asarray(affine, float)[:3, :3]
    return {"left": _letter(-m @ right), "right": _letter(m @ right),
            "top": _letter(-m @ down), "bottom": _letter(m @ down)}


def _plane_steps(view: str) -> tuple[np.ndarray, np.ndarray]:
    """The voxel step (of the grid :func:`plane` slices) of one pixel to the right and of
    one pixel down in its picture of ``view``."""
    grids = np.indices((2, 2, 2))
    steps = np.stack([plane(g, view, 0) for g in grids]).astype(float)  # (3, rows, cols)
    return steps[:, 0, 1] - steps[:, 0, 0], steps[:, 1, 0] - steps[:, 0, 0]


def plane_spacing(affine: np.ndarray, view: str) -> tuple[float, float]:
    """The distance (mm) between two rows and between two columns of :func:`plane`'s
    picture of ``view`` of a volume whose voxels lie at ``affine``."""
    right, down = _plane_steps(view)
    m = np.asarray(affine, float)[:3, :3]
    return float(np.linalg.norm(m @ down)), float(np.linalg.norm(m @ right))


def true_aspect(picture: np.ndarray, spacing: Sequence[float], order: int) -> np.ndarray:
    """A 2D ``picture`` (rows, columns; further axes kept) whose pixels are ``spacing``
    (row, column) mm apart, resampled to square pixels of the finer of the two, so that
    it is drawn at its true aspect: a 1 x 1 x 5 mm scan's coronal slice five times as
    tall as it is stored. ``order``: 0 (nearest) for labels, 1 (linear) for an image."""
    from scipy import ndimage as ndi

    fine = max(min(float(spacing[0]), float(spacing[1])), 1e-6)
    zoom = [float(spacing[0]) / fine, float(spacing[1]) / fine]
    if abs(zoom[0] - 1) < 1e-3 and abs(zoom[1] - 1) < 1e-3:
        return picture
    zoom += [1.0] * (picture.ndim - 2)
    return ndi.zoom(picture, zoom, order=order, mode="nearest", grid_mode=True)


def letter_band(size: int) -> int:
    """Width (pixels) of the black band :func:`label_edges` puts around a picture."""
    return size + size // 2 + 2


def _letter_font(size: int) -> Any:
    from matplotlib import font_manager as fm
    from PIL import ImageFont

    path = fm.findfont(fm.FontProperties(family="DejaVu Sans", weight="bold"))
    return ImageFont.truetype(path, size)


def label_edges(rgb: np.ndarray, letters: Mapping[str, str], size: int = 14) -> np.ndarray:
    """``rgb`` (``(H, W, 3)`` uint8) in a black band :func:`letter_band` wide with
    ``letters`` (:func:`plane_letters`) in :data:`LETTER_RGB`, each in the middle of its
    edge's band, outside the picture so that no anatomy is covered."""
    from PIL import Image, ImageDraw

    band = letter_band(size)
    h, w = rgb.shape[:2]
    canvas = Image.new("RGB", (w + 2 * band, h + 2 * band))
    canvas.paste(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), (band, band))
    draw = ImageDraw.Draw(canvas)
    font = _letter_font(size)
    middle = {"left": (band / 2, band + h / 2), "right": (band + w + band / 2, band + h / 2),
              "top": (band + w / 2, band / 2), "bottom": (band + w / 2, band + h + band / 2)}
    for edge in EDGES:
        draw.text(middle[edge], letters[edge], fill=LETTER_RGB, font=font, anchor="mm")
    return np.asarray(canvas)


def pick_slices(labels: np.ndarray, n: int = 4) -> list[int]:
    """``n`` axial (last-axis) slice indices through the tumour, spread over its extent
    and always holding the slice of largest tumour area; the middle slices of the volume
    when there is no tumour."""
    lab = np.asarray(labels)
    depth = lab.shape[2]
    area = (lab > 0).sum(axis=(0, 1))
    if not area.any():
        return sorted({int(round(x)) for x in np.linspace(depth * 0.3, depth * 0.7, n)})
    zs = np.nonzero(area)[0]
    lo, hi = int(zs[0]), int(zs[-1])
    picks = {int(np.argmax(area))}
    for q in np.linspace(0.15, 0.85, n):
        if len(picks) >= n:
            break
        picks.add(int(round(lo + q * (hi - lo))))
    return sorted(picks)[:n]


def _grey(slice2d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((slice2d - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def overlay_png(image: np.ndarray, labels: np.ndarray | None, affine: np.ndarray,
                path: str | Path, slices: Sequence[int] | None = None,
                channels: Sequence[tuple[str, int]] = (("FLAIR", 3), ("T1ce", 1)),
                title: str | None = None, alpha: float = 0.45,
                orientation_assumed: bool = False) -> Path:
    """Write a PNG grid: rows = ``channels`` of ``image`` ``(4, X, Y, Z)`` (MODALITIES
    order), columns = axial ``slices`` (display-grid indices; default
    :func:`pick_slices`), regions of internal ``labels`` coloured, each panel in the
    radiological view with its orientation letters (:func:`overlay_panel`), the legend
    and :data:`VIEW_CONVENTION` below. ``orientation_assumed``: the header gave no
    orientation, so the letters rest on an assumed one: each is marked "?" and
    :data:`ASSUMED_NOTE` is said on the picture itself, which may be seen alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    img, shown = display_grid(np.asarray(image, dtype=np.float32), affine)
    lab = None if labels is None else display_grid(np.asarray(labels, np.uint8), affine)[0]
    letters = plane_letters(shown, "axial")
    if orientation_assumed:
        letters = {k: f"{v}?" for k, v in letters.items()}
    spacing = plane_spacing(shown, "axial")  # square pixels for any in-plane voxel size
    if slices is None:
        slices = pick_slices(lab if lab is not None else np.zeros(img.shape[1:], np.uint8))
    slices = [int(min(max(s, 0), img.shape[3] - 1)) for s in slices]
    # crop every panel to the brain (plus a margin) so the tumour is large enough to see
    brain = np.any(img != 0, axis=(0, 3))
    if brain.any():
        xs, ys = np.nonzero(brain.any(axis=1))[0], np.nonzero(brain.any(axis=0))[0]
        bx = slice(max(int(xs[0]) - 4, 0), int(xs[-1]) + 5)
        by = slice(max(int(ys[0]) - 4, 0), int(ys[-1]) + 5)
    else:
        bx = by = slice(None)
    rows, cols = len(channels), len(slices)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows + 0.5),
                             squeeze=False, facecolor="black")
    for r, (name, ch) in enumerate(channels):
        vol = img[ch]
        inside = vol[vol != 0]
        lo, hi = (np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0))
        for c, z in enumerate(slices):
            ax = axes[r][c]
            # radiological: anterior at the top, the patient's right on the left
            g = _grey(true_aspect(plane(vol[bx, by], "axial", z), spacing, 1),
                      float(lo), float(hi))
            rgb = np.repeat(g[..., None], 3, axis=-1)
            if lab is not None:
                ls = true_aspect(plane(lab[bx, by], "axial", z), spacing, 0)
                for val, col in COLOURS.items():
                    m = ls == val
                    rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(col)
            ax.imshow(overlay_panel(rgb, letters), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}, {display_slice_name(shown, affine, img.shape[1:], z)}",
                         color="white", fontsize=8)
    handles = [Patch(color=COLOURS[v], label=LEGEND[v]) for v in (L.ED, L.NCR, L.ET)]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False,
               labelcolor="white", fontsize=9, bbox_to_anchor=(0.5, 0.035))
    fig.text(0.5, 0.008, VIEW_CONVENTION + (f" {ASSUMED_NOTE}" if orientation_assumed
                                            else ""),
             color="#ffcc00" if orientation_assumed else "white", fontsize=7, ha="center",
             va="bottom", wrap=True)
    if title:
        # a case name in any script: CJK from an installed CJK font, a character no
        # installed font has as its code point rather than an empty box (braintumor.fonts)
        title = fonts.drawable(title)
        fig.suptitle(title, color="white", fontsize=11, fontfamily=fonts.family_for(title),
                     parse_math=False)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # room between the rows for the titles, which tight_layout does not leave an image
    # scaled to its axes
    fig.tight_layout(rect=(0, 0.1, 1, 0.95 if title else 1), h_pad=2.0)
    from braintumor.io import write_replacing

    try:  # beside its place, then renamed in: a cut-short picture never stands
        write_replacing(out, lambda tmp: fig.savefig(tmp, dpi=90, facecolor="black",
                                                      format="png"))
    finally:
        plt.close(fig)
    return out


def overlay_panel(rgb: np.ndarray, letters: Mapping[str, str]) -> np.ndarray:
    """One panel of :func:`overlay_png`: ``rgb`` (``(H, W, 3)``, 0-1) as uint8 with the
    orientation ``letters`` around it (:func:`label_edges`)."""
    return label_edges(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), letters, size=11)


def score(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """Per-region metrics of internal ``pred`` against ``ref`` (``braintumor.metrics``)."""
    from braintumor.metrics import score_case

    return score_case(pred, ref, tuple(spacing))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return html.escape(str(v))


#: the notice every report carries (command line, web, follow-up), in the same words
NOTICE = ("Research software: not a medical device and not for clinical use. Every "
          "outline and measurement is an automatic estimate and must be checked by a "
          "qualified reader.")
#: what a report says when nothing was outlined
NO_TUMOUR = ("No tumour was outlined; an automatic result without tumour does not rule "
             "one out.")
#: a whole tumour larger than this (mL) is implausible: the largest gliomas of BraTS
#: (2018-2021) reach about 300 mL of whole tumour, and an adult brain is 1100-1400 mL, so
#: past 400 mL the outline has most likely taken in healthy brain (or the skull) and is
#: to be checked before any of its figures is read
IMPLAUSIBLE_WT_ML = 400.0


def outline_warning(volumes: Mapping[str, Any]) -> str | None:
    """A sentence for an outline whose figures should not be read as they stand: none at
    all (:data:`NO_TUMOUR`), or a whole tumour over :data:`IMPLAUSIBLE_WT_ML`; None
    otherwise or when the whole tumour's volume is not known. ``volumes``: mL by region
    (:func:`volumes_ml`)."""
    wt = volumes.get("WT")
    if wt is None:
        return None
    if float(wt) <= 0:
        return NO_TUMOUR
    return implausible_warning(volumes)


def implausible_warning(volumes: Mapping[str, Any]) -> str | None:
    """The sentence for a whole tumour over :data:`IMPLAUSIBLE_WT_ML` (None otherwise),
    which ``predict`` also says on stderr and in ``volumes.csv``."""
    wt = volumes.get("WT")
    if wt is not None and float(wt) > IMPLAUSIBLE_WT_ML:
        return (f"The whole tumour outlined is {float(wt):.0f} mL, more than "
                f"{IMPLAUSIBLE_WT_ML:.0f} mL, which no tumour in the data this tool was "
                "checked on reaches: the outline is implausible (it has likely taken in "
                "healthy brain) and should be checked before any figure is read.")
    return None


def analysis_time(when: float | None = None) -> str:
    """A moment (seconds since the epoch; now by default) as every report dates its
    analysis: local time with its offset from UTC, ``"2026-11-28 20:43 UTC+01:00"``, so
    that it reads the same wherever the report is opened."""
    import datetime as dt
    import time

    moment = dt.datetime.fromtimestamp(time.time() if when is None else when).astimezone()
    offset = moment.strftime("%z") or "+0000"
    return f"{moment:%Y-%m-%d %H:%M} UTC{offset[:3]}:{offset[3:]}"


def ml_text(value: float | None) -> str:
    """A volume (mL) as shown: to 0.01 mL, to 0.001 mL under 0.1 mL so that a small
    region neither looks absent nor makes the shown sums disagree (TC = NCR + ET), and
    "< 0.001" for one present that rounds to 0."""
    if value is None:
        return "-"
    v = float(value)
    if v == 0 or v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3f}" if round(v, 3) > 0 else "< 0.001"


def write_report(out_dir: str | Path, case_id: str, labels: np.ndarray,
                 voxel_volume_ml: float, metrics: Mapping[str, Mapping[str, Any]] | None = None,
                 picture: str | Path | None = None, info: Mapping[str, Any] | None = None,
                 stem: str = "report", diameters: Mapping[str, Any] | None = None,
                 diameter_picture: str | Path | None = None,
                 spacing: Sequence[float] | None = None) -> dict[str, Path]:
    """Write ``<stem>.json`` and a self-contained ``<stem>.html`` into ``out_dir``.

    ``labels``: internal ``(X, Y, Z)``; ``metrics``: region -> metric -> value (e.g. from
    :func:`score`); ``picture``: a PNG to embed; ``info``: method, timings, paths (a
    ``warning`` there is set apart, as a note); ``diameters``: the bidimensional
    measurements of :func:`braintumor.diameters.rano`, and ``diameter_picture`` the PNG of
    :func:`diameters_png` to embed with them; ``spacing``: the voxel size (mm), to give
    the lesion count and each lesion's volume, as the web page's measurements do
    (:func:`braintumor.web.measure.lesions`: touching lesions split at a narrow neck,
    none under :data:`braintumor.web.measure.LESION_FLOOR_ML`). The page carries
    :data:`NOTICE`. Returns ``{"json": path, "html": path}``.
    """
    from braintumor.io import write_replacing, written_together

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vols = volumes_ml(labels, voxel_volume_ml)
    analysed = analysis_time()
    doc: dict[str, Any] = {"case": case_id, "analysed": analysed, "volumes_ml": vols,
                           "metrics": {k: dict(v) for k, v in (metrics or {}).items()},
                           "info": dict(info or {})}
    found = None
    if spacing is not None:
        from braintumor.web.measure import lesions

        found = lesions(labels, (float(spacing[0]), float(spacing[1]), float(spacing[2])))
        doc["lesion_count"] = len(found)
        doc["lesions"] = found
    if diameters is not None:
        doc["diameters"] = dict(diameters)
    outline = outline_warning(vols)
    if outline:
        doc["outline_warning"] = outline
    if picture is not None:
        doc["picture"] = Path(picture).name
    jpath = out / f"{stem}.json"
    hpath = out / f"{stem}.html"
    # the page and its JSON go in together, the page last (what --skip-existing looks for),
    # each written beside its place: a full disk leaves the earlier pair, never a cut one
    with written_together(last=[hpath]):
        text = json.dumps(doc, indent=2, default=_json_default) + "\n"
        write_replacing(jpath, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        page = _report_page(case_id, analysed, vols, outline, info, picture, metrics,
                            diameters, diameter_picture, found)
        write_replacing(hpath, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return {"json": jpath, "html": hpath}


def _report_page(case_id: str, analysed: str, vols: Mapping[str, float], outline: str | None,
                 info: Mapping[str, Any] | None, picture: str | Path | None,
                 metrics: Mapping[str, Mapping[str, Any]] | None,
                 diameters: Mapping[str, Any] | None,
                 diameter_picture: str | Path | None,
                 lesions: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The HTML of :func:`write_report`'s page (pictures read where they are written,
    :func:`braintumor.io.pending`: a case's files go in together)."""
    from braintumor.io import pending

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(case_id)}"
             " - braintumor report</title><style>body{font-family:sans-serif;margin:2em;"
             "max-width:60em}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
             "padding:.25em .6em;text-align:right}th{background:#eee}</style></head><body>",
             f"<h1>Segmentation of {html.escape(case_id)}</h1>",
             f"<p><strong>{NOTICE}</strong></p>", f"<p>Analysed: {analysed}</p>"]
    shown = {k: v for k, v in (info or {}).items() if k != "warning"}
    if shown:
        parts.append("<p>" + ", ".join(f"{html.escape(str(k))}: {_fmt(v)}"
                                       for k, v in shown.items()) + "</p>")
    for warning in (outline, (info or {}).get("warning")):
        if warning:
            parts.append("<p style='background:#fff3cd;padding:.5em'><strong>Warning:"
                         f"</strong> {html.escape(str(warning))}</p>")
    if picture is not None and pending(picture).exists():
        b64 = base64.b64encode(pending(picture).read_bytes()).decode("ascii")
        parts.append(f"<p><img alt='overlay' style='max-width:100%' "
                     f"src='data:image/png;base64,{b64}'><br>{html.escape(VIEW_NOTE)}</p>")
    parts.append("<h2>Volumes (mL)</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in vols)
                 + "</tr><tr>" + "".join(f"<td>{ml_text(v)}</td>" for v in vols.values())
                 + "</tr></table>")
    parts.append("<p>WT whole tumour = NCR + ED + ET; TC tumour core = NCR + ET; "
                 "ET enhancing tumour.</p>")
    if lesions is not None:
        parts.append(lesions_html(lesions))
    if diameters is not None:
        uri = None
        if diameter_picture is not None and pending(diameter_picture).exists():
            uri = "data:image/png;base64," + base64.b64encode(
                pending(diameter_picture).read_bytes()).decode("ascii")
        parts.append(diameters_html(diameters, uri, outlined=vols["WT"] > 0))
    if metrics:
        cols = ["dice", "sensitivity", "specificity", "hd95"]
        extra = [c for c in ("lesion_dice", "lesion_hd95")
                 if any(c in m for m in metrics.values())]
        parts.append("<h2>Agreement with the reference</h2><table><tr><th>region</th>"
                     + "".join(f"<th>{c}{' (mm)' if 'hd95' in c else ''}</th>"
                               for c in cols + extra) + "</tr>")
        for region, m in metrics.items():
            parts.append(f"<tr><th>{html.escape(region)}</th>"
                         + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in cols + extra)
                         + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def lesions_html(lesions: Sequence[Mapping[str, Any]]) -> str:
    """The report's lesion count and each lesion's volume (mL), largest first."""
    from braintumor.web.measure import LESION_FLOOR_ML

    n = len(lesions)
    text = (f"<h2>Lesions</h2><p>{n} lesion{'' if n == 1 else 's'} of the whole tumour "
            f"({LESION_FLOOR_ML:g} mL or more; touching lesions are split at a narrow "
            "neck).</p>")
    if not n:
        return text
    return (text + "<table><tr><th>lesion</th><th>volume (mL)</th></tr>"
            + "".join(f"<tr><td>{int(les['id'])}</td>"
                      f"<td>{ml_text(float(les['volume_ml']))}</td></tr>" for les in lesions)
            + "</table>")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


#: the modality each region's diameters are drawn on, and the region's outline colour
#: (the enhancing tumour's label colour; the whole tumour's is edema's, most of it)
DIAMETER_VIEWS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "ET": ("t1ce", LABEL_RGB[L.ET]),
    "WT": ("flair", LABEL_RGB[L.ED]),
}
#: colours of the longest diameter (Okabe and Ito's blue) and of the perpendicular one
#: (vermillion): apart from each other, from both outlines and from grey, also with
#: deuteranopia and protanopia
LONGEST_RGB = (0, 114, 178)
PERPENDICULAR_RGB = (213, 94, 0)


def diameter_pictures(image: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                      diameters: Mapping[str, Any], axcodes: Sequence[str] = DISPLAY_AXCODES,
                      scale: int = 2, titles: bool = True) -> dict[str, np.ndarray]:
    """The slice on which each region's largest lesion was measured, with the region's
    outline and the two diameters drawn: ``{"ET": rgb, "WT": rgb}`` (``(H, W, 3)`` uint8;
    a region without a lesion is left out).

    ``image``: ``(4, X, Y, Z)`` in MODALITIES order (ET on the T1ce, WT on the FLAIR);
    ``labels``: internal; ``diameters``: :func:`braintumor.diameters.rano`'s. Shown as
    :func:`plane` draws an axial slice of the grid ``axcodes`` (the default,
    :data:`DISPLAY_AXCODES`, is the radiological view of every picture), enlarged
    ``scale`` times so the lines stay thin, with the orientation letters around it
    (:func:`label_edges`) and, with ``titles``, what it shows above it (:func:`_titled`).
    """
    import nibabel as nib
    from scipy import ndimage as ndi
    from skimage.draw import line

    from braintumor.cases import MODALITIES

    lab = np.asarray(labels)
    tr = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                         nib.orientations.axcodes2ornt(tuple(axcodes)))
    shown_lab, shown = display_grid(lab, affine, axcodes)
    letters = plane_letters(shown, "axial")

    def to_display(points: Sequence[Sequence[float]]) -> np.ndarray:
        out = np.zeros((len(points), 3))
        for a, (new, flip) in enumerate(tr):
            for i, pt in enumerate(points):
                out[i, int(new)] = pt[a] if flip > 0 else lab.shape[a] - 1 - pt[a]
        return out

    pictures: dict[str, np.ndarray] = {}
    for region, (modality, colour) in DIAMETER_VIEWS.items():
        summ = diameters.get(region) or {}
        if not summ.get("lesions"):
            continue
        les = summ["lesions"][0]
        pts = to_display([*les["ends"], *les["perpendicular_ends"]])
        z = int(round(pts[0, 2]))
        vol = display_grid(np.asarray(image[MODALITIES.index(modality)], dtype=np.float32),
                           affine, axcodes)[0]
        if not 0 <= z < vol.shape[2] or abs(pts[0, 2] - pts[2, 2]) > 0.5:
            continue  # the measured slice is not an axial one of this display
        values = (L.ET,) if region == "ET" else (L.NCR, L.ED, L.ET)
        # rows along the display's y and columns along its x (plane's axial view), as
        # the diameters' ends are placed below
        grey_slice = plane(vol, "axial", z)
        mask = np.isin(plane(shown_lab, "axial", z), values)
        brain = grey_slice != 0
        if brain.any():
            ys, xs = np.nonzero(brain.any(1))[0], np.nonzero(brain.any(0))[0]
            x0, x1, y0, y1 = max(xs[0] - 4, 0), xs[-1] + 5, max(ys[0] - 4, 0), ys[-1] + 5
        else:
            x0, x1, y0, y1 = 0, grey_slice.shape[1], 0, grey_slice.shape[0]
        inside = grey_slice[brain]
        lo, hi = np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0)
        g = _grey(grey_slice[y0:y1, x0:x1], float(lo), float(hi))
        rgb = (np.repeat(g[..., None], 3, axis=-1) * 255).astype(np.uint8)
        m = mask[y0:y1, x0:x1]
        rgb = np.kron(rgb, np.ones((scale, scale, 1), np.uint8))
        m = np.kron(m, np.ones((scale, scale), bool))
        rgb[m & ~ndi.binary_erosion(m)] = colour
        h, w = m.shape
        for (a, b), col in (((0, 1), LONGEST_RGB), ((2, 3), PERPENDICULAR_RGB)):
            ra, ca = ((pts[a, 1] - y0 + 0.5) * scale - 0.5, (pts[a, 0] - x0 + 0.5) * scale - 0.5)
            rb, cb = ((pts[b, 1] - y0 + 0.5) * scale - 0.5, (pts[b, 0] - x0 + 0.5) * scale - 0.5)
            rr, cc = line(int(round(ra)), int(round(ca)), int(round(rb)), int(round(cb)))
            for dr, dc in ((0, 0), (1, 0), (0, 1)):
                ok = (rr + dr >= 0) & (rr + dr < h) & (cc + dc >= 0) & (cc + dc < w)
                rgb[rr[ok] + dr, cc[ok] + dc] = col
        pictures[region] = label_edges(rgb, letters, size=12 * scale)
        if titles:
            pictures[region] = _titled(pictures[region], region, modality, les, 9 * scale)
    return pictures


#: how a diameter picture's title names its region
DIAMETER_TITLES = {"ET": "Enhancing tumour", "WT": "T2/FLAIR abnormality"}


def _titled(rgb: np.ndarray, region: str, modality: str, lesion: Mapping[str, Any],
            size: int) -> np.ndarray:
    """``rgb`` under a black band that says what it shows, so the picture can be read on
    its own (the demo's ``diameters.png``, a cohort's ``<case>_diameters.png``): the
    region, the image and the slice, then the two diameters in their lines' colours.
    The letters are as large as fit the picture's width, down to 8 pixels; on a picture
    narrower still (the axial view of a case of thick sagittal slices) a line is wrapped
    onto more, the band growing with them: no word is cut off at the picture's edges."""
    from PIL import Image, ImageDraw

    from braintumor.cases import MODALITY_NAMES

    h, w = rgb.shape[:2]
    first = (f"{DIAMETER_TITLES.get(region, region)} on {MODALITY_NAMES[modality]}, "
             f"slice {int(lesion['slice']) + 1}")
    if lesion.get("slices"):
        first += f" of {int(lesion['slices'])}"
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    room = max(w - 8, 1)
    while True:  # as large as fits the picture's width
        font = _letter_font(size)
        if probe.textlength(first, font=font) <= room or size <= 8:
            break
        size -= 1
    second = [(f"{float(lesion['longest_mm']):.1f}", LONGEST_RGB), ("mm", LONGEST_RGB),
              ("x", LETTER_RGB),
              (f"{float(lesion['perpendicular_mm']):.1f}", PERPENDICULAR_RGB),
              ("mm", PERPENDICULAR_RGB)]
    lines = (_wrap([(word, LETTER_RGB) for word in first.split(" ")], room, font, probe)
             + _wrap(second, room, font, probe))
    step = size + size // 2
    band = (len(lines) - 1) * step + size + 8
    canvas = Image.new("RGB", (w, h + band))
    canvas.paste(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), (0, band))
    draw = ImageDraw.Draw(canvas)
    space = draw.textlength(" ", font=font)
    for i, words in enumerate(lines):
        x = (w - _line_length(words, font, draw)) / 2
        for text, colour in words:
            draw.text((x, 4 + i * step), text, fill=colour, font=font, anchor="la")
            x += draw.textlength(text, font=font) + space
    return np.asarray(canvas)


def _line_length(words: Sequence[tuple[str, Any]], font: Any, draw: Any) -> float:
    """Pixels ``words`` take in ``font``, a space between each two."""
    return (sum(draw.textlength(t, font=font) for t, _ in words)
            + max(len(words) - 1, 0) * draw.textlength(" ", font=font))


def _wrap(words: Sequence[tuple[str, Any]], room: float, font: Any, draw: Any
          ) -> list[list[tuple[str, Any]]]:
    """``words`` (each with its colour) in lines at most ``room`` pixels wide in ``font``:
    broken between words, and within a word only where it alone is wider."""
    lines: list[list[tuple[str, Any]]] = []
    line: list[tuple[str, Any]] = []
    for text, colour in words:
        if line and _line_length([*line, (text, colour)], font, draw) <= room:
            line.append((text, colour))
            continue
        if line:
            lines.append(line)
        while len(text) > 1 and draw.textlength(text, font=font) > room:
            cut = max([n for n in range(1, len(text))
                       if draw.textlength(text[:n], font=font) <= room], default=1)
            lines.append([(text[:cut], colour)])
            text = text[cut:]
        line = [(text, colour)]
    return [*lines, line] if line else lines


def diameters_png(pictures: Mapping[str, np.ndarray], path: str | Path) -> Path | None:
    """The pictures of :func:`diameter_pictures` side by side in one PNG (None when
    there are none)."""
    from braintumor.io import write_png

    if not pictures:
        return None
    h = max(p.shape[0] for p in pictures.values())
    gap = np.zeros((h, 8, 3), np.uint8)
    row = []
    for p in pictures.values():
        pad = np.zeros((h - p.shape[0], p.shape[1], 3), np.uint8)
        row += [np.concatenate([p, pad]), gap]
    return write_png(np.concatenate(row[:-1], axis=1), path)


#: the regions of the RANO section of every report, in its order, by name
RANO_REGIONS = {"ET": "Enhancing tumour (holes filled)", "WT": "T2/FLAIR abnormality (WT)"}
#: the heading of a RANO table's columns
RANO_HEAD = ("Lesion", "Axial slice", "Centre (mm)", "Longest (mm)", "Perpendicular (mm)",
             "Product (mm²)", "Measurable", "Target")
#: what the picture of the measured slices shows (:func:`diameters_png`)
DIAMETERS_CAPTION = ("Largest lesion of each region (lesion 1 of its table), on the slice "
                     "where it was measured: enhancing tumour on the T1ce, T2/FLAIR "
                     "abnormality on the FLAIR; the longest diameter in blue, the "
                     "perpendicular one in vermillion (orange-red).")


def rano_intro() -> str:
    """What the RANO section measures and how its slices are named (every report)."""
    from braintumor.diameters import MAX_TARGETS, MEASURABLE_MM

    return ("On the axial slice where each lesion is largest: the longest diameter and the "
            "longest one perpendicular to it. A lesion is measurable when both reach "
            f"{MEASURABLE_MM:.0f} mm; SPD is the sum of the products of up to {MAX_TARGETS} "
            "measurable target lesions (RANO 2.0). Slices are the scan's axial slices "
            "numbered from 1 in the file's order (\"88 of 155\"), with the position of "
            "the measured diameters along the scanner's foot-to-head axis (S above, I below "
            "the scanner's origin, in mm), as a viewer shows it; each lesion's centre is given "
            "in scanner coordinates (R/L, A/P, S/I of the origin, in mm), and the target "
            "lesions summed in the SPD are marked. Touching lesions are measured here as "
            "one outline, as RANO measures confluent lesions; the lesion count splits them "
            "at a narrow neck, so it may name more lesions than this table lists.")


def display_slice_name(shown: np.ndarray, affine: np.ndarray, shape: Sequence[int],
                       z: int, view: str = "axial") -> str:
    """Slice ``z`` of a display grid (affine ``shown``, :func:`display_grid`; 3D
    ``shape``) in ``view`` (:func:`plane`) named as :func:`slice_position` names a
    measured lesion's: its number along the file's own axis, from 1, of how many, and
    where it lies (an axial slice S/I, a coronal one A/P, a sagittal one R/L of the
    scanner's origin, in mm). The overlay's titles, the web report's key slices and the
    RANO tables then name one slice the same way."""
    from braintumor.diameters import slice_axis

    fixed = VIEWS.index(view)  # the display axis the view's slices step along: 2, 1, 0
    fixed = 2 - fixed
    point = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1.0]
    point[fixed] = z
    centre = np.asarray(shown, float) @ point
    ijk = np.linalg.solve(np.asarray(affine, float), centre)[:3]
    if view == "axial":
        axis = slice_axis(affine)
    else:  # the file's axis along which the display's slices of this view step
        point[fixed] = z + 1
        step = np.linalg.solve(np.asarray(affine, float), np.asarray(shown, float) @ point)
        axis = int(np.argmax(np.abs(step[:3] - ijk)))
    return slice_position({"slice": int(round(float(ijk[axis]))),
                           "slices": int(shape[fixed]),
                           "centre_mm": [float(v) for v in centre[:3]]}, coordinate=fixed)


def slice_position(lesion: Mapping[str, Any], coordinate: int = 2) -> str:
    """The slice a lesion was measured on, as a reader finds it: ``"88 of 155, S 12.0
    mm"`` (numbered from 1; the number of slices and the position in scanner coordinates
    when the measurement has them, as older ones do not). ``coordinate``: which scanner
    coordinate places the slice (2, S/I, for an axial slice; 1, A/P, coronal; 0, R/L,
    sagittal)."""
    text = f"{int(lesion['slice']) + 1}"
    if lesion.get("slices"):
        text += f" of {int(lesion['slices'])}"
    centre = lesion.get("centre_mm")
    if centre is not None and len(centre) == 3:
        text += f", {_coordinate(float(centre[coordinate]), coordinate, 1)} mm"
    return text


def _coordinate(value: float, k: int, digits: int = 0) -> str:
    """Scanner coordinate ``k`` (RAS+) in a reader's words: ``"R 23"``, ``"A 10.0"``."""
    return f"{('LR', 'PA', 'IS')[k][int(value >= 0)]} {abs(value):.{digits}f}"


def centre_position(centre_mm: Sequence[float]) -> str:
    """A point in scanner coordinates as a reader finds it: ``"R 23 A 10 S 70"`` (mm;
    R/L, A/P, S/I of the scanner's origin)."""
    return " ".join(_coordinate(float(centre_mm[k]), k) for k in range(3))


def rano_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """One region's lesions (:func:`braintumor.diameters.summarise`) as rows of text under
    :data:`RANO_HEAD`, the same in every report: each lesion's centre in scanner
    coordinates (:func:`centre_position`), which tells apart two lesions on one slice,
    and whether it is one of the target lesions summed in the SPD (the first
    :data:`~braintumor.diameters.MAX_TARGETS` measurable ones, largest product first)."""
    from braintumor.diameters import MAX_TARGETS

    rows = []
    targets = 0
    for n, les in enumerate(summary.get("lesions") or [], start=1):
        target = bool(les["measurable"]) and targets < MAX_TARGETS
        targets += target
        centre = les.get("centre_mm")
        rows.append([str(n), slice_position(les),
                     centre_position(centre) if centre is not None and len(centre) == 3
                     else "-",
                     f"{les['longest_mm']:.1f}", f"{les['perpendicular_mm']:.1f}",
                     f"{les['product_mm2']:.0f}", "yes" if les["measurable"] else "no",
                     "yes" if target else "no"])
    return rows


def rano_regions(diameters: Mapping[str, Any]) -> list[tuple[str, str, list[list[str]]]]:
    """The RANO section's regions: ``(name, the measurement in a few words
    (:func:`braintumor.diameters.describe`), rows (:func:`rano_rows`))`` each."""
    from braintumor.diameters import describe

    out = []
    for region, summ in diameters.items():
        text = describe(summ) if summ.get("lesions") else "no lesion (none 5 mm or longer)"
        out.append((RANO_REGIONS.get(region, region), text, rano_rows(summ)))
    return out


def rano_verdict(diameters: Mapping[str, Any], outlined: bool | None = None) -> str | None:
    """The sentence every report says when no region has a measurable lesion (no target,
    no SPD to follow); None when one has. ``outlined`` False (nothing outlined at all):
    :data:`NO_TUMOUR` is said first, plainly, rather than only that nothing is
    measurable."""
    from braintumor.diameters import MEASURABLE_MM

    if outlined is False:
        return f"{NO_TUMOUR} No target lesion and no SPD."
    if any((summ or {}).get("measurable") for summ in diameters.values()):
        return None
    found = any((summ or {}).get("lesions") for summ in diameters.values())
    return (f"No measurable lesion (both diameters at least {MEASURABLE_MM:.0f} mm): no "
            "target lesion and no SPD." + (" The lesions below are listed as "
                                           "non-measurable." if found else ""))


def diameters_html(diameters: Mapping[str, Any], picture: str | None = None,
                   outlined: bool | None = None) -> str:
    """The bidimensional measurements (:func:`braintumor.diameters.rano`) as a section of
    a report page: one row per lesion, the measured slice named by :func:`slice_position`;
    ``picture``: the URL (or data URI) of :func:`diameters_png`'s picture, shown above;
    ``outlined``: whether anything was outlined (:func:`rano_verdict`)."""
    e = html.escape
    rows = []
    for name, text, lesions in rano_regions(diameters):
        rows.append(f"<tr><th style='text-align:left' colspan='{len(RANO_HEAD)}'>"
                    f"{e(name)}: {e(text)}</th></tr>")
        rows += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in lesions]
    verdict = rano_verdict(diameters, outlined)
    return ("<h2>Diameters (RANO)</h2>"
            f"<p>{e(rano_intro())}</p>"
            + (f"<p class='verdict'><strong>{e(verdict)}</strong></p>" if verdict else "")
            + (f"<p><img alt='the measured slices' style='max-width:100%' "
               f"src='{e(picture, quote=True)}'>"
               f"<br>{e(DIAMETERS_CAPTION)} {e(VIEW_NOTE)}</p>"
               if picture else "")
            + "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in RANO_HEAD) + "</tr>"
            + "".join(rows) + "</table>")
