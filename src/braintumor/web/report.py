"""A job's report: key slices with the outline, volumes, the RANO diameters (the picture
of the measured slices and a table of lesions per region), method, model version,
metrics and the not-for-clinical-use notice, as printable HTML and as PDF (matplotlib,
offline), both saying the same facts (:mod:`braintumor.report` words the RANO section
for both, each lesion's slice as a reader finds it, :func:`braintumor.report.
slice_position`).

Slices are shown in the radiological convention, as every report picture is
(:mod:`braintumor.report`): the patient's right on the picture's left, whatever the
file's voxel order, with the patient's direction lettered at each edge of each picture
and the convention said under them. The HTML report is one self-contained file: its
pictures are embedded as ``data:`` URIs and its style inline, so a saved copy keeps
them after the job has expired and offline.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import fonts
from braintumor.diameters import describe
from braintumor.errors import join_warnings
from braintumor.report import (
    DIAMETERS_CAPTION,
    LABEL_RGB,
    NOTICE,
    RANO_HEAD,
    VIEW_NOTE,
    VIEWS,
    analysis_time,
    diameters_html,
    ml_text,
    outline_warning,
    rano_intro,
    rano_regions,
    rano_verdict,
)
from braintumor.web.measure import VOLUME_ROWS
from braintumor.web.store import Job

#: internal label -> RGB (0-255), the same colours as the viewer's legend
COLOURS = LABEL_RGB
#: the style of the HTML reports, put inline so that a saved report keeps it
STYLE = Path(__file__).parent / "static" / "report.css"


#: part of the names of the pictures and PDF written once per label version, changed
#: whenever the way they are drawn changes, so that a job's files written before (the
#: neurological view, without letters; squashed along thick slices, unnamed) are not
#: served under the present caption
DRAWING = "rad2"


def report_file(job: Job, name: str) -> str:
    """The file name (in the job's ``output`` folder) of a report file of ``job``'s
    present label version, as drawn now (:data:`DRAWING`)."""
    return f"report_v{job.label_version}_{DRAWING}_{name}"


#: the key slices are enlarged this many times (nearest neighbour), so that their letters
#: of :data:`LETTER_SIZE` pixels stay sharp in print
SCALE = 2
LETTER_SIZE = 32


def _key_indices(lab: np.ndarray) -> dict[str, int]:
    """The slice of each view :func:`key_slices` shows, of a display-grid label map."""
    wt = lab > 0
    if wt.any():
        z = int(np.argmax(wt.sum(axis=(0, 1))))
        cx, cy, _ = (int(round(c)) for c in np.argwhere(wt).mean(axis=0))
    else:
        cx, cy, z = (s // 2 for s in lab.shape)
    return {"axial": z, "coronal": cy, "sagittal": cx}


def key_slice_names(labels: np.ndarray, affine: np.ndarray) -> dict[str, str]:
    """The slice :func:`key_slices` shows in each view, named as the command line's
    overlay and the RANO tables name slices (:func:`braintumor.report.
    display_slice_name`): ``"83 of 155, A 12.0 mm"``."""
    from braintumor.report import display_grid, display_slice_name

    lab, shown = display_grid(np.asarray(labels, dtype=np.uint8), affine)
    return {v: display_slice_name(shown, affine, lab.shape, k, v)
            for v, k in _key_indices(lab).items()}


def key_slices(image: np.ndarray, labels: np.ndarray, affine: np.ndarray,
               alpha: float = 0.45) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal RGB pictures ``(H, W, 3)`` uint8 with the outline, in
    the radiological view with the orientation letters around each
    (:func:`braintumor.report.plane`, :func:`~braintumor.report.plane_letters`), at the
    true aspect of the voxels (:func:`braintumor.report.true_aspect`: a coronal slice of
    5 mm slices is drawn five times as tall as it is stored), enlarged :data:`SCALE`
    times.

    ``image``: ``(X, Y, Z)`` one modality; ``labels``: ``(X, Y, Z)`` internal labels, both
    on the grid of ``affine``. The axial slice is the one with the largest whole-tumour
    area; the other two pass through the tumour's centre (the volume's centre when there
    is no tumour); :func:`key_slice_names` names them.
    """
    from braintumor.report import (
        display_grid,
        label_edges,
        plane,
        plane_letters,
        plane_spacing,
        true_aspect,
    )

    img, shown = display_grid(np.asarray(image, dtype=np.float32), affine)
    lab = display_grid(np.asarray(labels, dtype=np.uint8), affine)[0]
    nz = img[img > 0]
    lo, hi = (np.percentile(nz, [1, 99]) if nz.size else (0.0, 1.0))
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255.0

    def compose(view: str, index: int) -> np.ndarray:
        spacing = plane_spacing(shown, view)
        g = true_aspect(plane(grey, view, index), spacing, 1)
        lb = true_aspect(plane(lab, view, index), spacing, 0)
        rgb = np.repeat(g[..., None], 3, axis=2)
        for value, colour in COLOURS.items():
            m = lb == value
            rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(colour, dtype=np.float32)
        big = np.kron(np.clip(np.round(rgb), 0, 255).astype(np.uint8),
                      np.ones((SCALE, SCALE, 1), np.uint8))
        return label_edges(big, plane_letters(shown, view), size=LETTER_SIZE)

    return {v: compose(v, k) for v, k in _key_indices(lab).items()}


#: the key PNG's text chunk that names its slice (:func:`key_slice_names`)
SLICE_NAME_KEY = "Slice"


def slice_name(picture: Path) -> str:
    """The slice a key-slice PNG of :func:`slice_pictures` shows, as named there ("" for
    a picture that does not say)."""
    from PIL import Image

    try:
        with Image.open(picture) as im:
            return str(getattr(im, "text", {}).get(SLICE_NAME_KEY, ""))
    except OSError:
        return ""


def slice_caption(view: str, picture: Path) -> str:
    """A key slice's caption: its view and, where its PNG names it, the slice."""
    name = slice_name(picture)
    return f"{view}, {name}" if name else view


def _case_reader(job_dir: Path, job: Job) -> Callable[[], Any]:
    """The job's case (its four volumes on the label map's grid), read on the first call
    only, so that the pictures of one report read it once."""
    from braintumor.web.inputs import load_job_case

    held: list[Any] = []

    def read() -> Any:
        if not held:
            held.append(load_job_case(job_dir, job.inputs, with_reference=False))
        return held[0]

    return read


def report_pictures(job_dir: Path, job: Job, labels: np.ndarray, into: Path | None = None
                    ) -> tuple[dict[str, Path], Path | None]:
    """:func:`slice_pictures` and :func:`diameter_picture` of one report, the job's case
    read at most once for both (four full volumes), and not at all once they are made."""
    read = _case_reader(job_dir, job)
    return (slice_pictures(job_dir, job, labels, case=read, into=into),
            diameter_picture(job_dir, job, labels, case=read, into=into))


def slice_pictures(job_dir: Path, job: Job, labels: np.ndarray, modality: str = "flair",
                   case: Callable[[], Any] | None = None, into: Path | None = None
                   ) -> dict[str, Path]:
    """Write (once per label version) and return the three key-slice PNGs of a job,
    drawn on the case's grid, the label map's (a modality sent on a grid of its own is
    shown resampled onto it, as the segmentation read it). ``case``: where to read the
    job's case from (:func:`_case_reader`); ``into``: a folder to draw them in instead of
    the job's own (one that cannot be written), when they were not drawn there before."""
    from braintumor.cases import MODALITIES

    out = {v: job_dir / "output" / report_file(job, f"{v}.png") for v in VIEWS}
    if all(p.exists() for p in out.values()):
        return out
    if into is not None:
        out = {v: into / p.name for v, p in out.items()}
    c = (case or _case_reader(job_dir, job))()
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    pics = key_slices(c.image[MODALITIES.index(modality)], labels, c.affine)
    names = key_slice_names(labels, c.affine)
    for v, p in out.items():
        info = PngInfo()
        info.add_text(SLICE_NAME_KEY, names[v])  # the slice's name travels with it
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pics[v]).save(p, pnginfo=info)
    return out


def diameter_picture(job_dir: Path, job: Job, labels: np.ndarray,
                     case: Callable[[], Any] | None = None, into: Path | None = None
                     ) -> Path | None:
    """Write (once per label version) and return the PNG of the slices on which the
    largest lesions' RANO diameters were measured (:func:`braintumor.report.
    diameter_pictures`, shown as the other key slices are); None without a lesion.
    ``case``: where to read the job's case from (:func:`_case_reader`); ``into``: as
    :func:`slice_pictures` has it."""
    from braintumor.report import diameter_pictures, diameters_png

    out = job_dir / "output" / report_file(job, "diameters.png")
    if out.exists():
        return out
    if into is not None:
        out = into / out.name
    summ = (job.result.get("summaries") or [{}])[-1]
    if not summ.get("diameters"):
        return None
    c = (case or _case_reader(job_dir, job))()
    pics = diameter_pictures(c.image, labels, c.affine, summ["diameters"])
    return diameters_png(pics, out)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _metric_rows(metrics: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    if not metrics:
        return [], []
    cols = ["dice", "sensitivity", "specificity", "hd95"]
    rows = []
    for region in ("WT", "TC", "ET"):
        m = metrics.get(region)
        if isinstance(m, dict):
            rows.append([region, *(_fmt(m.get(c)) for c in cols)])
    return ["Region", "Dice", "Sensitivity", "Specificity", "HD95 (mm)"], rows


#: how what the method said of its own outline is said once the outline was corrected:
#: it was said of the outline before the corrections (a volume found, say), which no
#: longer holds it; what was said of the scan (its voxels, its skull) still holds
BEFORE_CORRECTIONS = "before the corrections: "


def said_before(warning: str | None, method_warning: str | None,
                corrections: int) -> str | None:
    """``warning`` (every note of the job, joined) as said after ``corrections``
    corrections: the part that is the method's own, ``method_warning``, marked as said of
    the outline before them; the notes on the scan as they are. A job stored before the
    method's part was kept apart has none, and is said as it is."""
    if not warning or not corrections or not method_warning:
        return warning
    own = method_warning.rstrip(".")
    at = warning.find(own)
    if at < 0:
        return warning
    mark = BEFORE_CORRECTIONS[0].upper() + BEFORE_CORRECTIONS[1:] if at == 0 \
        else BEFORE_CORRECTIONS
    return warning[:at] + mark + warning[at:]


def report_facts(job: Job) -> dict[str, Any]:
    """The facts every report shows (shared by the HTML and the PDF)."""
    res = job.result
    summ = (res.get("summaries") or [{}])[-1]
    vols = summ.get("volumes_ml", {})
    corrections = len(res.get("corrections", []))
    return {
        "case": job.inputs.get("case_id", "case"),
        "job": job.id,
        "date": analysis_time(job.finished or time.time()),
        "method": res.get("method", job.method),
        "model_version": res.get("model_version", "-"),
        "volumes": [(name, key, vols.get(key)) for key, name, _ in VOLUME_ROWS],
        "lesion_count": summ.get("lesion_count", 0),
        "measure_failed": bool(summ.get("measure_failed")),
        "diameters": summ.get("diameters"),
        "metrics": summ.get("metrics"),
        "corrections": corrections,
        # an empty or implausibly large outline is said first (of the outline as it is);
        # the method's, said of its own outline, as such once it was corrected
        "warning": join_warnings(outline_warning(vols),
                                 said_before(res.get("warning"), res.get("method_warning"),
                                             corrections)),
        "outlined": None if vols.get("WT") is None else float(vols["WT"]) > 0,
        "agreement": (res.get("info") or {}).get("agreement"),
    }


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI, to embed in a page."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_page(case: str, job_id: str, facts: list[tuple[str, str]], body: str) -> str:
    """The report page around ``body`` (HTML): title, notice, the facts table, footer;
    the style inline (:data:`STYLE`) and an empty icon, so the page asks for no other
    file."""
    e = html.escape
    rows = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>braintumor report: {e(case)}</title>
<link rel="icon" href="data:,">
<style>
{STYLE.read_text()}</style></head>
<body>
<header><h1>Tumour segmentation report</h1>
<p class="notice">{e(NOTICE)}</p></header>
<main>
<table class="facts">
{rows}
</table>
{body}
</main>
<footer><p>Job {e(job_id)}. {e(NOTICE)}</p></footer>
</body></html>
"""


class PdfFlow:
    """A PDF report laid out down A4 pages, top to bottom: each line of text and each
    block (pictures, a table) goes under the one before, wrapped to the page's width,
    and onto a new page when it does not fit on this one, so nothing overlaps whatever
    the number and length of the facts. ``figures``: the pages (matplotlib figures);
    positions are figure fractions."""

    WIDTH_IN, HEIGHT_IN = 8.27, 11.69
    LEFT, RIGHT, TOP, BOTTOM = 0.06, 0.94, 0.965, 0.05
    #: the facts' value column: labels wrap left of it
    VALUE_X = 0.36
    GAP = 0.008

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        self.figures: list[Any] = []
        self.y = 0.0
        self.new_page()

    def new_page(self) -> None:
        import matplotlib.pyplot as plt

        self.figures.append(plt.figure(figsize=(self.WIDTH_IN, self.HEIGHT_IN)))
        self.y = self.TOP

    @property
    def figure(self) -> Any:
        return self.figures[-1]

    def room(self, height: float) -> None:
        """Start a new page unless ``height`` (a fraction of the page) fits under the
        last line (a block taller than a page gets a page of its own)."""
        if self.y - height < self.BOTTOM and self.y < self.TOP:
            self.new_page()

    def _line_height(self, fontsize: float) -> float:
        return fontsize * 1.3 / 72.0 / self.HEIGHT_IN

    def wrap(self, text: str, width: float, fontsize: float, weight: str = "normal"
             ) -> list[str]:
        """``text`` in lines no wider than ``width`` (a fraction of the page's width) as
        the renderer measures them, in the fonts :meth:`_place` draws them with (a word
        too long for a line is cut into pieces; a character no installed font has is
        written as its code point, :func:`braintumor.fonts.drawable`)."""
        text = fonts.drawable(str(text), weight)
        fits = self._fits(text, width, fontsize, weight)
        lines: list[str] = []
        for para in text.splitlines() or [""]:
            line = ""
            for word in para.split():
                while not fits(word):  # cut a word wider than the line
                    k = len(word) - 1
                    while k > 1 and not fits(word[:k]):
                        k -= 1
                    if line:
                        lines.append(line)
                        line = ""
                    lines.append(word[:k])
                    word = word[k:]
                trial = f"{line} {word}" if line else word
                if fits(trial):
                    line = trial
                else:
                    lines.append(line)
                    line = word
            lines.append(line)
        return lines

    def _fits(self, text: str, width: float, fontsize: float, weight: str = "normal"
              ) -> Callable[[str], bool]:
        """Whether a piece of ``text`` (drawable) fits ``width`` (a fraction of the page's
        width), measured in the fonts it is drawn with (:func:`braintumor.fonts.
        family_for`)."""
        from matplotlib.font_manager import FontProperties

        renderer = self.figure.canvas.get_renderer()
        prop = FontProperties(family=fonts.family_for(text, weight), size=fontsize,
                              weight=weight)
        room_pt = width * self.WIDTH_IN * 72.0 / 1.06  # the PDF's metrics differ a little

        def fits(s: str) -> bool:
            w, _, _ = renderer.get_text_width_height_descent(s, prop, ismath=False)
            return bool(w * 72.0 / self.figure.dpi <= room_pt)

        return fits

    def clip(self, text: str, width: float, fontsize: float) -> str:
        """The longest beginning of ``text`` (drawable) that fits ``width`` (a fraction of
        the page's width) on one line: a name in a table cell or over a picture, where a
        character count would let wide (CJK) characters run over."""
        text = fonts.drawable(" ".join(str(text).split()))
        fits = self._fits(text, width, fontsize)
        k = len(text)
        while k > 1 and not fits(text[:k]):
            k -= 1
        return text[:k]

    def _place(self, x: float, y: float, lines: list[str], fontsize: float, **kw: Any
               ) -> None:
        step = self._line_height(fontsize)
        family = fonts.family_for("".join(lines), kw.get("weight", "normal"))
        for k, line in enumerate(lines):
            if line:
                self.figure.text(x, y - k * step, line, fontsize=fontsize, va="top",
                                 parse_math=False, fontfamily=family, **kw)

    def text(self, text: str, fontsize: float = 9, gap: float | None = None, **kw: Any
             ) -> None:
        """A paragraph across the page, wrapped; lines that do not fit go on the next
        page."""
        step = self._line_height(fontsize)
        for line in self.wrap(text, self.RIGHT - self.LEFT, fontsize, kw.get("weight",
                                                                             "normal")):
            self.room(step)
            self._place(self.LEFT, self.y, [line], fontsize, **kw)
            self.y -= step
        self.y -= self.GAP if gap is None else gap

    def fact(self, label: str, value: str, fontsize: float = 9) -> None:
        """One row of the facts: the label (bold) left of :attr:`VALUE_X`, the value right
        of it, each wrapped, the row kept on one page."""
        left = self.wrap(f"{label}:", self.VALUE_X - self.LEFT - 0.01, fontsize, "bold")
        right = self.wrap(value, self.RIGHT - self.VALUE_X, fontsize)
        step = self._line_height(fontsize)
        self.room(max(len(left), len(right)) * step)
        self._place(self.LEFT, self.y, left, fontsize, weight="bold")
        self._place(self.VALUE_X, self.y, right, fontsize)
        self.y -= max(len(left), len(right)) * step + 0.003

    def block(self, height: float, title_size: float = 0.0) -> tuple[float, float]:
        """Room for ``height`` (a fraction of the page) under a title of font size
        ``title_size`` (drawn by the caller above the block): -> (bottom, top) of the
        block, after which the flow goes on."""
        # an axes' title sits 6 pt above it
        title = (title_size * 1.3 + 8.0) / 72.0 / self.HEIGHT_IN if title_size else 0.0
        self.room(height + title)
        top = self.y - title
        self.y = top - height - self.GAP
        return top - height, top

    def table_height(self, rows: int) -> float:
        """The height (a fraction of the page) of a :meth:`table` of ``rows`` rows and its
        heading, without its title."""
        from matplotlib.table import Table

        return (rows + 1) * Table.FONTSIZE * 1.2 / 72.0 / self.HEIGHT_IN

    def table(self, title: str, rows: list[list[str]], head: list[str],
              col_widths: list[float] | None = None, fontsize: float = 9) -> Any:
        """A table across the page under ``title`` (none when empty), as tall as its rows
        (matplotlib gives each row the height of its default 10 pt text): -> the table."""
        bottom, top = self.block(self.table_height(len(rows)), title_size=11 if title else 0)
        ax = self.figure.add_axes((self.LEFT, bottom, self.RIGHT - self.LEFT, top - bottom))
        ax.axis("off")
        ax.set_title(title, fontsize=11, loc="left")
        t = ax.table(cellText=rows, colLabels=head, loc="upper left", colWidths=col_widths)
        t.set_fontsize(fontsize)
        for cell in t.get_celld().values():  # names in any script, as the facts
            shown = fonts.drawable(cell.get_text().get_text())
            cell.get_text().set_text(shown)
            cell.get_text().set_fontfamily(fonts.family_for(shown))
            cell.get_text().set_parse_math(False)  # a "$" in a name is a dollar sign
        # words read from the left, a column of numbers (and its heading) aligns right
        numeric = [bool(rows) and all(_is_number(r[c]) for r in rows) for c in range(len(head))]
        for (_, c), cell in t.get_celld().items():
            side = "right" if numeric[c] else "left"
            cell.get_text().set_horizontalalignment(side)  # where a cell places its text
            cell._loc = side  # the same, for matplotlib before 3.9
            cell.PAD = 0.04
        return t

    def close(self, job_id: str) -> list[Any]:
        """Number the pages (and the job) at their feet; -> the figures."""
        n = len(self.figures)
        for k, fig in enumerate(self.figures):
            fig.text(self.LEFT, 0.02, f"Job {job_id}" + (f", page {k + 1} of {n}" if n > 1
                                                        else ""),
                     fontsize=7, color="#555555", parse_math=False)
        return self.figures


def _pdf_page(facts: list[tuple[str, str]], names: list[str] | None = None) -> PdfFlow:
    """The report's title, notice and facts on A4 (a warning, too long for a facts row,
    whole and in red under the notice); the caller's pictures and tables follow.

    When a fact or one of ``names`` (the other texts the caller will draw: file names)
    holds a character no installed font can draw, one line under the notice says that it
    is written as its code point (:data:`braintumor.fonts.MISSING_NOTE`) rather than as
    an empty box."""
    flow = PdfFlow()
    flow.text("Tumour segmentation report", fontsize=18, weight="bold", gap=0.006)
    flow.text(NOTICE, fontsize=8, color="#a00000", gap=0.004)
    if any(fonts.missing(str(s)) for s in [*(v for _, v in facts), *(names or [])]):
        flow.text(fonts.MISSING_NOTE, fontsize=7, color="#a00000", gap=0.004)
    warning = " ".join(str(v) for k, v in facts if k == "Warning")
    if warning:
        # as large as the body text: a warning is read first, not skipped as small print
        flow.text(f"Warning: {warning}", fontsize=9, color="#a00000")
    flow.y -= 0.006
    for k, v in facts:
        if k != "Warning":
            flow.fact(k, str(v))
    flow.y -= 0.01
    return flow


def _save_pdf(flow: PdfFlow, job_id: str, out: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    out.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(out) as pdf:
        for fig in flow.close(job_id):
            pdf.savefig(fig)
            plt.close(fig)
    return out


def render_html(job: Job, pictures: dict[str, Path], diameters: Path | None = None
                ) -> str:
    """A printable, self-contained HTML report (no script, the style inline): the key
    slices ``pictures`` (:func:`slice_pictures`) and ``diameters``, the picture of
    :func:`diameter_picture` when there is one, embedded as ``data:`` URIs, so that a
    saved copy keeps them after the job has gone and offline."""
    f = report_facts(job)
    e = html.escape
    vol_rows = "".join(f"<tr><td>{e(n)}</td><td>{e(k)}</td><td class=num>{e(ml_text(v))}"
                       "</td></tr>" for n, k, v in f["volumes"])
    head, mrows = _metric_rows(f["metrics"])
    metrics_html = ""
    if mrows:
        metrics_html = ("<h2>Agreement with the reference</h2><table><tr>"
                        + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                                  for r in mrows) + "</table>")
    pics = "".join(f'<figure><img src="{data_uri(p)}" alt="{e(v)} slice"><figcaption>'
                   f"{e(slice_caption(v, p))}</figcaption></figure>"
                   for v, p in pictures.items())
    return _html_page(f["case"], f["job"], _facts(f), f"""<h2>Key slices</h2>
<div class="slices">{pics}</div>
<p class="legend"><span class="sw ncr"></span> necrotic / non-enhancing core
<span class="sw ed"></span> edema <span class="sw et"></span> enhancing tumour</p>
<p class="legend">{e(VIEW_NOTE)}</p>
<h2>Volumes</h2>
<table><tr><th>Region</th><th>Abbreviation</th><th>Volume (mL)</th></tr>{vol_rows}</table>
{diameters_html(f["diameters"], None if diameters is None else data_uri(diameters),
                f["outlined"])
   if f.get("diameters") is not None else
   f"<h2>Diameters (RANO)</h2><p>{e(not_measured(f))}</p>"}
{metrics_html}""")


def lesions_text(count: Any, failed: bool = False) -> str:
    """The lesion count as the reports say it: still being counted when not known yet,
    or not counted when the counting failed."""
    if count is None:
        return "not counted: measuring the outline failed" if failed else \
            "still being counted"
    return str(count)


def _facts(f: dict[str, Any]) -> list[tuple[str, str]]:
    return [("Case", str(f["case"])), ("Segmented", f["date"]), ("Method", str(f["method"])),
            ("Model version", str(f["model_version"])),
            ("Lesions", lesions_text(f["lesion_count"], bool(f.get("measure_failed"))))] + \
        ([(f"Diameters, {name} (RANO)", describe(f["diameters"][region]))
          for region, name in (("ET", "enhancing"), ("WT", "T2/FLAIR"))
          if region in f["diameters"]] if f.get("diameters") else []) + \
        [("Manual corrections", str(f["corrections"]))] + \
        ([("CNN and watershed agreed before the corrections (Dice)"
           if f["corrections"] else "CNN and watershed agree (Dice)", ", ".join(
            f"{k} {float(v):.2f}" for k, v in f["agreement"].items()))]
         if f.get("agreement") else []) + \
        ([("Warning", str(f["warning"]))] if f.get("warning") else [])


def render_pdf(job: Job, pictures: dict[str, Path], out: Path,
               diameters: Path | None = None) -> Path:
    """An A4 PDF report (matplotlib's PdfPages; works offline) with what the HTML report
    has (:func:`render_html`), the RANO section and ``diameters``' picture
    (:func:`diameter_picture`) included: one page, or more when the facts leave the
    pictures and tables no room (:class:`PdfFlow`)."""
    return _save_pdf(pdf_layout(job, pictures, diameters), job.id, out)


#: the most of a page the picture of the measured slices takes
DIAMETERS_HEIGHT = 0.3
def not_measured(facts: dict[str, Any]) -> str:
    """What every report says in place of the RANO section when the job has no diameters
    (``facts``: :func:`report_facts`'): not yet, or not at all."""
    if facts.get("lesion_count") is None:
        if facts.get("measure_failed"):
            return "Not measured: measuring the outline failed (the server's log says why)."
        return "Not measured yet: the lesions are still being counted; open the report again."
    return "Not measured: the scan's geometry, which the diameters need, is unknown."


def _pdf_rano(flow: PdfFlow, facts: dict[str, Any], picture: Path | None) -> None:
    """The RANO section of the PDF, as :func:`braintumor.report.diameters_html` gives
    the HTML's: heading, what is measured, the verdict when nothing is measurable, the
    picture of the measured slices and its caption, and a table of lesions per region."""
    from PIL import Image

    diameters = facts.get("diameters")
    img = (np.asarray(Image.open(picture)) if diameters is not None and picture is not None
           and Path(picture).exists() else None)
    width = flow.RIGHT - flow.LEFT
    height = 0.0
    if img is not None:  # its height on the page at the full width, capped (then narrower)
        height = width * flow.WIDTH_IN * img.shape[0] / img.shape[1] / flow.HEIGHT_IN
        if height > DIAMETERS_HEIGHT:
            width, height = width * DIAMETERS_HEIGHT / height, DIAMETERS_HEIGHT
    flow.room(0.1 + height)  # the heading and what it measures with the picture
    flow.text("Diameters (RANO)", fontsize=12, weight="bold", gap=0.004)
    if diameters is None:
        flow.text(not_measured(facts), fontsize=9)
        return
    flow.text(rano_intro(), fontsize=8)
    verdict = rano_verdict(diameters, facts.get("outlined"))
    if verdict:
        flow.text(verdict, fontsize=9, weight="bold")
    if img is not None:
        bottom, top = flow.block(height)
        ax = flow.figure.add_axes((0.5 - width / 2, bottom, width, top - bottom))
        ax.imshow(img, interpolation="nearest")
        ax.axis("off")
        flow.text(f"{DIAMETERS_CAPTION} {VIEW_NOTE}", fontsize=8)
    for name, text, rows in rano_regions(diameters):
        flow.y -= 0.006
        # the region's line on the page of its table (when the table fits on one)
        flow.room(0.03 + min(flow.table_height(len(rows)), 0.5) if rows else 0.03)
        flow.text(f"{name}: {text}", fontsize=9, weight="bold", gap=0.002)
        if rows:
            flow.table("", rows, list(RANO_HEAD),
                       [0.06, 0.2, 0.19, 0.1, 0.13, 0.11, 0.11, 0.1], fontsize=7)


def pdf_layout(job: Job, pictures: dict[str, Path], diameters: Path | None = None
               ) -> PdfFlow:
    """The pages of :func:`render_pdf`, laid out and not yet saved."""
    from matplotlib.patches import Rectangle
    from PIL import Image

    f = report_facts(job)
    flow = _pdf_page(_facts(f))
    bottom, top = flow.block(0.26, title_size=9)
    for i, view in enumerate(VIEWS):
        ax = flow.figure.add_axes((0.04 + i * 0.32, bottom, 0.3, top - bottom))
        ax.imshow(np.asarray(Image.open(pictures[view])), interpolation="nearest")
        ax.set_title(flow.clip(slice_caption(view, pictures[view]), 0.3, 8), fontsize=8)
        ax.axis("off")
    # swatches with the names in black: a light colour (the yellow) is no colour for text
    y, _ = flow.block(0.012)
    for x, (value, name) in zip((0.06, 0.36, 0.48), ((1, "necrotic / non-enhancing core"),
                                                     (2, "edema"), (3, "enhancing tumour")),
                                strict=True):
        flow.figure.add_artist(Rectangle((x, y + 0.0015), 0.012, 0.0085,
                                         transform=flow.figure.transFigure,
                                         facecolor=np.array(COLOURS[value]) / 255,
                                         edgecolor="#333333", linewidth=0.5))
        flow.figure.text(x + 0.017, y + 0.002, name, fontsize=8)
    flow.text(VIEW_NOTE, fontsize=8)
    flow.y -= 0.01
    flow.table("Volumes", [[n, k, ml_text(v)] for n, k, v in f["volumes"]],
               ["Region", "Abbr.", "Volume (mL)"], [0.6, 0.1, 0.3])
    flow.y -= 0.01
    _pdf_rano(flow, f, diameters)
    head, rows = _metric_rows(f["metrics"])
    if rows:
        flow.y -= 0.02
        flow.table("Agreement with the reference", rows, head)
    return flow


# -- 2D jobs -----------------------------------------------------------------------------
def _area(px: int, pixel_mm: float | None) -> str:
    return f"{px} pixels" if not pixel_mm else f"{px * pixel_mm * pixel_mm:.1f} mm² ({px} pixels)"


def report_facts_2d(job: Job) -> dict[str, Any]:
    """What a 2D job's report shows: the picture(s), the outlined area (mm^2 when the
    pixel size was given), per slice for a stack. A stack's ``area`` is its largest
    slice's (which slice, said), and ``summed`` the sum over its slices with tumour, said
    for what it is: slices' areas added up are neither an area nor a volume."""
    res = job.result
    n = int(res.get("slices", 1))
    px = res.get("pixel_mm")
    names = res.get("slice_names") or job.inputs.get("files") or ["picture"]
    areas = res.get("slice_area_px") or [res.get("area_px", 0)]
    with_tumour = sum(int(a) > 0 for a in areas)
    area = _area(int(res.get("area_px", 0)), px)
    summed = ""
    if n > 1:
        k = int(np.argmax(areas))
        name = f", {names[k]}" if k < len(names) else ""
        area = f"{_area(int(areas[k]), px)}, slice {k + 1} of {n}{name}"
        summed = (f"{_area(int(res.get('area_px', 0)), px)}, summed over {with_tumour} "
                  f"slice{'s' if with_tumour != 1 else ''} with tumour")
    return {
        "case": job.inputs.get("case_id", "picture"),
        "job": job.id,
        "date": analysis_time(job.finished or time.time()),
        "method": "2D model" + (f", {n} slices segmented as one volume" if n > 1 else
                                ", one picture"),
        "model_version": res.get("model_version", "-"),
        "pixel": (f"{px:g} mm" + (f" ({res['pixel_source']})" if res.get("pixel_source")
                                   else "")) if px else "not given: areas in pixels",
        "area": area,
        "summed": summed,
        "tumour_slices": f"{res.get('tumour_slices', int(res.get('area_px', 0) > 0))} of {n}",
        "shown": names[int(res.get("show_slice", 0))] if n > 1 else names[0],
        "slices": [(k + 1, str(nm), _area(int(a), px))
                   for k, (nm, a) in enumerate(zip(names, areas, strict=False))] if n > 1 else [],
        "warning": res.get("warning") or "",
        "metrics": res.get("metrics_2d"),
        "diameters": _picture_diameters_text(res.get("diameters"), names, n),
    }


def _picture_diameters_text(d: dict[str, Any] | None, names: list[Any], n: int) -> str:
    """The largest lesion's diameters of a 2D job in words (and its slice, for a stack)."""
    if not d:
        return "none"
    where = f" (slice {d['slice'] + 1}, {names[d['slice']]})" if n > 1 else ""
    note = ("" if d.get("measurable") is None else
            "; measurable (both at least 10 mm)" if d["measurable"] else
            "; under 10 x 10 mm, not measurable")
    return f"{d['text']}{where}{note}"


def _facts_2d(f: dict[str, Any]) -> list[tuple[str, str]]:
    out = [("Case", str(f["case"])), ("Segmented", f["date"]), ("Method", f["method"]),
           ("Model version", str(f["model_version"])), ("Pixel size", f["pixel"]),
           *([("Tumour area, largest slice", f["area"]),
              ("Tumour area, slices added up", f["summed"])] if f.get("summed") else
             [("Tumour area", f["area"])]),
           ("Largest lesion, longest x perpendicular diameter", f["diameters"]),
           ("Slices with tumour", f["tumour_slices"])]
    m = f.get("metrics")
    if m:
        out.append(("Dice (uploaded masks)", f"{m['dice']:.3f}"))
        if m.get("slices", 1) > 1:
            sd = m.get("slice_dice_mean")
            out += [("Dice per tumour slice", "-" if sd is None else f"{sd:.3f}"),
                    ("Tumour-free slices outlined",
                     f"{m['fp_slices']} of {m['tumour_free_slices']}"),
                    ("Tumour slices missed", f"{m['missed_slices']} of {m['tumour_slices']}")]
    return out + ([("Warning", str(f["warning"]))] if f["warning"] else [])


def render_html_2d(job: Job, picture: Path) -> str:
    """A printable, self-contained HTML report of a 2D job (no script; the outlined
    ``picture`` embedded as a ``data:`` URI, the style inline)."""
    f = report_facts_2d(job)
    e = html.escape
    rows = "".join(f"<tr><td>{k}</td><td>{e(n)}</td><td class=num>{e(a)}</td></tr>"
                   for k, n, a in f["slices"])
    per_slice = ("<h2>Per slice</h2><table><tr><th>Slice</th><th>Picture</th>"
                 f"<th>Tumour area</th></tr>{rows}</table>") if rows else ""
    return _html_page(f["case"], f["job"], _facts_2d(f), f"""<h2>Outline</h2>
<div class="slices"><figure><img src="{data_uri(picture)}" alt="outline on {e(f['shown'])}">
<figcaption>{e(f['shown'])}</figcaption></figure></div>
{per_slice}""")


def render_pdf_2d(job: Job, picture: Path, out: Path) -> Path:
    """An A4 PDF report of a 2D job (the per-slice table lists up to 30 slices with
    tumour; the HTML report lists every slice): one page, or more when the facts leave
    the picture and table no room (:class:`PdfFlow`)."""
    return _save_pdf(pdf_layout_2d(job, picture), job.id, out)


def pdf_layout_2d(job: Job, picture: Path) -> PdfFlow:
    """The pages of :func:`render_pdf_2d`, laid out and not yet saved."""
    from PIL import Image

    f = report_facts_2d(job)
    rows = [r for r in f["slices"] if not r[2].startswith("0 pixels")
            and not r[2].startswith("0.0 mm")][:30]
    flow = _pdf_page(_facts_2d(f), [str(f["shown"])[:80], *(str(n)[:50] for _, n, _ in rows)])
    bottom, top = flow.block(0.34, title_size=9)
    ax = flow.figure.add_axes((0.2, bottom, 0.6, top - bottom))
    ax.imshow(np.asarray(Image.open(picture)), interpolation="nearest")
    shown = flow.clip(str(f["shown"])[:80], 0.6, 9)
    ax.set_title(shown, fontsize=9, fontfamily=fonts.family_for(shown), parse_math=False)
    ax.axis("off")
    if rows:
        flow.y -= 0.01
        # the picture's column: 0.55 of the table, less the cell's padding
        room = 0.55 * (flow.RIGHT - flow.LEFT) * 0.9
        flow.table("Slices with tumour", [[str(k), flow.clip(str(n)[:50], room, 7), a]
                                          for k, n, a in rows],
                   ["Slice", "Picture", "Tumour area"], [0.1, 0.55, 0.35], fontsize=7)
    return flow
