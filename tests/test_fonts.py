"""Case names in any script in what matplotlib draws: the PDF reports and the overlay
picture's title take CJK glyphs from an installed CJK font after DejaVu Sans
(``braintumor.fonts``), and write a character no installed font has as its code point,
never as an empty box."""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from braintumor import fonts

#: a Chinese (and Japanese) name, a Korean one in Hangul, a Japanese one in kana
NAMES = ["患者1", "김민준_2", "さくら_カナ3"]



@pytest.fixture
def cjk_font() -> None:
    """Skips the test where no CJK-capable font is installed."""
    if not fonts.fallback_families():
        pytest.skip("no CJK-capable font installed (Debian: apt-get install "
                    "fonts-wqy-microhei)")


@pytest.fixture
def no_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    """The font lookup finds no CJK-capable font, as on a system without one."""
    monkeypatch.setattr(fonts, "fallback_families", lambda: ())


@pytest.fixture
def no_boxes() -> Iterator[None]:
    """matplotlib's warning that it draws a glyph as a box is an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph .* missing from font")
        yield


def _report_job(result: dict[str, Any], case_id: str) -> Any:
    from braintumor.web.store import Job

    return Job(id="a1b2c3d4e5f6a7b8", kind="upload", method="hybrid", status="done",
               finished=1.7e9, inputs={"case_id": case_id}, result=result)


RESULT_3D = {"kind": "3d", "method": "threshold", "model_version": "-",
             "summaries": [{"volumes_ml": {"WT": 80.0, "TC": 30.0, "ET": 12.0, "NCR": 5.0,
                                           "ED": 50.0}, "lesion_count": 1}]}


def _result_2d(name: str) -> dict[str, Any]:
    names = [f"{name}_{i}.png" for i in range(3)]
    return {"kind": "2d", "slices": 3, "pixel_mm": 0.5, "slice_names": names,
            "slice_area_px": [100, 0, 120], "area_px": 220, "tumour_slices": 2,
            "show_slice": 2, "model_version": "-", "diameters": None}


def _pictures(tmp_path: Path) -> dict[str, Path]:
    from braintumor.io import write_png
    from braintumor.web.report import VIEWS

    return {v: write_png(np.full((60, 50, 3), 90, np.uint8), tmp_path / f"{v}.png")
            for v in VIEWS}


def _texts(flow: Any) -> list[Any]:
    """Every text artist with text on the pages: the facts, titles, table cells."""
    from matplotlib.text import Text

    cells = [c.get_text() for fig in flow.figures for ax in fig.axes for tb in ax.tables
             for c in tb.get_celld().values()]
    return [t for fig in flow.figures for t in [*fig.findobj(Text), *cells] if t.get_text()]


def _pdf_characters(pdf: bytes) -> set[str]:
    """The characters the PDF's fonts map their glyphs to (their ToUnicode maps: what a
    reader copies or searches as text)."""
    out: set[str] = set()
    for raw in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            data = zlib.decompress(raw)
        except zlib.error:
            data = raw
        text = data.decode("latin-1")

        def char(hex_: str) -> str:
            return bytes.fromhex(hex_).decode("utf-16-be")

        for block in re.findall(r"beginbfrange(.*?)endbfrange", text, re.S):
            for lo, hi, dst in re.findall(r"<(\w+)>\s*<(\w+)>\s*(\[[^\]]*\]|<\w+>)", block):
                if dst.startswith("["):
                    out.update(char(h) for h in re.findall(r"<(\w+)>", dst))
                else:
                    first = ord(char(dst[1:-1]))
                    out.update(chr(first + k) for k in range(int(hi, 16) - int(lo, 16) + 1))
        for block in re.findall(r"beginbfchar(.*?)endbfchar", text, re.S):
            out.update(char(dst) for _, dst in re.findall(r"<(\w+)>\s*<(\w+)>", block))
    return out


def _boxes_in_pdf(pdf: bytes) -> list[str]:
    """The embedded fonts and glyphs that stand for a missing glyph: matplotlib's last
    resort font, a .notdef glyph."""
    return [m.decode() for m in re.findall(rb"/BaseFont\s*/\w+\+(LastResort[\w-]*)", pdf)
            + re.findall(rb"/(\.notdef|lastresort\w*)", pdf)]



def _render_pdf(kind: str, job: Any, pictures: dict[str, Path], out: Path) -> Path:
    """The job's PDF report, 3D or 2D, written to ``out``."""
    from braintumor.web import report

    if kind == "3d":
        report.render_pdf(job, pictures, out)
    else:
        report.render_pdf_2d(job, pictures["axial"], out)
    return out

def test_font_list_puts_dejavu_first() -> None:
    fams = fonts.families()
    assert fams[0] == "DejaVu Sans" and len(set(fams)) == len(fams)
    assert set(fams[1:]) <= set(fonts.CJK_FAMILIES)
    assert fonts.family_for("Müller_ü") == ["DejaVu Sans"]  # no CJK font for Latin text
    assert fonts.drawable("Müller_ü") == "Müller_ü"


@pytest.mark.usefixtures("cjk_font")
def test_a_font_installed_after_matplotlib_built_its_cache_is_found(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib's font cache, written on its first use, does not list a font installed
    since (a CJK font added to a machine that already plotted): the lookup then looks
    through the system's fonts itself."""
    from matplotlib import font_manager as fm

    found = fonts.fallback_families()
    files = {f.fname for f in fm.fontManager.ttflist if f.name in fonts.CJK_FAMILIES}
    monkeypatch.setattr(fm.fontManager, "ttflist", [
        f for f in fm.fontManager.ttflist if f.fname not in files])
    assert fonts.fallback_families.__wrapped__() == found


@pytest.mark.usefixtures("cjk_font")
@pytest.mark.parametrize("name", NAMES)
def test_cjk_names_have_glyphs(name: str) -> None:
    assert fonts.missing(name) == []
    assert fonts.drawable(name) == name
    assert fonts.family_for(name) == fonts.families()


def test_without_a_cjk_font_names_are_written_as_code_points(no_cjk_font: None) -> None:
    assert fonts.families() == ["DejaVu Sans"]
    assert fonts.missing("患者1 Müller") == ["患", "者"]
    assert fonts.drawable("患者1") == "[U+60A3 U+8005]1"
    assert fonts.drawable("김 민") == "[U+AE40] [U+BBFC]"
    assert fonts.drawable("a\U00020000b") == "a[U+20000]b"  # beyond the BMP too
    assert fonts.drawable("Müller_ü") == "Müller_ü"


def test_a_script_no_listed_font_covers_is_written_as_code_points() -> None:
    """Devanagari: neither DejaVu Sans nor a CJK font has it (and matplotlib does not
    shape it), whatever is installed."""
    assert fonts.drawable("राम_1") == "[U+0930 U+093E U+092E]_1"


@pytest.mark.usefixtures("cjk_font")
@pytest.mark.parametrize("name", NAMES)
def test_pdf_reports_draw_cjk_case_names(tmp_path: Path, name: str, no_boxes: None) -> None:
    """The 3D and 2D PDF reports of a case named in Chinese, Korean, Japanese: every
    character of every text has a glyph in the fonts it is drawn with, the PDF embeds
    the CJK font's glyphs with their characters (a reader extracts the name), and no
    glyph is a box."""
    import matplotlib.pyplot as plt

    pytest.importorskip("fastapi")
    from braintumor.web import report

    pictures = _pictures(tmp_path)
    for kind, job in (("3d", _report_job(RESULT_3D, name)),
                      ("2d", _report_job(_result_2d(name), name))):
        flow = (report.pdf_layout(job, pictures) if kind == "3d"
                else report.pdf_layout_2d(job, pictures["axial"]))
        try:
            texts = _texts(flow)
            assert any(name in t.get_text() for t in texts), kind
            if kind == "2d":
                assert any(t.get_text() == f"{name}_2.png" for t in texts)  # the title
                assert any(t.get_text() == f"{name}_0.png" for t in texts)  # a table cell
            for t in texts:
                assert fonts.missing(t.get_text(), t.get_fontproperties()) == [], t.get_text()
            assert fonts.MISSING_NOTE not in [t.get_text() for t in texts]
        finally:
            for fig in flow.figures:
                plt.close(fig)
        out = _render_pdf(kind, job, pictures, tmp_path / f"{kind}.pdf")
        pdf = out.read_bytes()
        assert set(name) <= _pdf_characters(pdf), kind
        assert _boxes_in_pdf(pdf) == [], kind
        embedded = re.findall(rb"/BaseFont\s*/\w+\+(\S+)", pdf)
        assert any(f.replace(" ", "").encode() in b for f in fonts.fallback_families()
                   for b in embedded), embedded


@pytest.mark.usefixtures("cjk_font")
def test_a_long_cjk_name_wraps_inside_the_page() -> None:
    """A CJK name has no spaces to break at: it is cut where the measured line is full,
    and measured in the fonts it is drawn with, so no line runs past the right margin."""
    import matplotlib.pyplot as plt

    pytest.importorskip("fastapi")
    from braintumor.web import report

    name = "患者김민준さくら" * 12
    job = _report_job(RESULT_3D, name)
    flow = report._pdf_page(report._facts(report.report_facts(job)))
    try:
        fig = flow.figures[0]
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        lines = [t for t in fig.texts if t.get_text() and t.get_text() in name]
        assert len(lines) > 1 and "".join(t.get_text() for t in lines) == name
        for t in fig.texts:
            box = t.get_window_extent(r)
            assert box.x1 <= report.PdfFlow.RIGHT * fig.bbox.width, t.get_text()
    finally:
        for fig in flow.figures:
            plt.close(fig)


def test_pdf_without_a_cjk_font_says_so_and_draws_no_boxes(
        tmp_path: Path, no_cjk_font: None, no_boxes: None) -> None:
    """No CJK-capable font installed: the name is written as its code points, a line
    under the notice says why and that the HTML report shows it as written, and the
    PDF has no box glyphs."""
    import matplotlib.pyplot as plt

    pytest.importorskip("fastapi")
    from braintumor.web import report

    pictures = _pictures(tmp_path)
    for kind, job in (("3d", _report_job(RESULT_3D, "患者1")),
                      ("2d", _report_job(_result_2d("患者1"), "患者1"))):
        flow = (report.pdf_layout(job, pictures) if kind == "3d"
                else report.pdf_layout_2d(job, pictures["axial"]))
        try:
            texts = [t.get_text() for t in _texts(flow)]
            assert "[U+60A3 U+8005]1" in texts, kind  # the Case fact
            page = " ".join(t.get_text() for t in flow.figures[0].texts)
            assert " ".join(fonts.MISSING_NOTE.split()) in page, kind
            if kind == "2d":
                assert "[U+60A3 U+8005]1_2.png" in texts
        finally:
            for fig in flow.figures:
                plt.close(fig)
        out = _render_pdf(kind, job, pictures, tmp_path / f"{kind}.pdf")
        assert _boxes_in_pdf(out.read_bytes()) == [], kind
    # a Latin name needs no note
    flow = report.pdf_layout(_report_job(RESULT_3D, "Müller_ü"), pictures)
    try:
        texts = [t.get_text() for t in _texts(flow)]
        assert "Müller_ü" in texts and not any("[U+" in t for t in texts)
    finally:
        for fig in flow.figures:
            plt.close(fig)


def _overlay_title(tmp_path: Path, title: str) -> Any:
    """The overlay picture's figure, kept open, after :func:`overlay_png` wrote it."""
    import matplotlib.pyplot as plt

    from braintumor import report

    kept: list[Any] = []
    lab = np.zeros((20, 20, 10), np.uint8)
    lab[5:10, 5:10, 3:6] = 2
    img = np.random.default_rng(0).random((4, 20, 20, 10)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt, "close", kept.append)
        png = report.overlay_png(img, lab, np.diag([-1.0, -1.0, 1.0, 1.0]),
                                 tmp_path / "o.png", title=title)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(kept) == 1
    return kept[0]


@pytest.mark.usefixtures("cjk_font")
@pytest.mark.parametrize("name", NAMES)
def test_overlay_picture_title_draws_cjk_names(tmp_path: Path, name: str,
                                               no_boxes: None) -> None:
    import matplotlib.pyplot as plt

    fig = _overlay_title(tmp_path, f"{name}: watershed segmentation")
    try:
        title = fig._suptitle
        assert title.get_text() == f"{name}: watershed segmentation"
        assert fonts.missing(title.get_text(), title.get_fontproperties()) == []
    finally:
        plt.close(fig)


def test_overlay_picture_title_without_a_cjk_font(tmp_path: Path, no_cjk_font: None,
                                                 no_boxes: None) -> None:
    import matplotlib.pyplot as plt

    fig = _overlay_title(tmp_path, "患者1: watershed segmentation")
    try:
        assert fig._suptitle.get_text() == "[U+60A3 U+8005]1: watershed segmentation"
    finally:
        plt.close(fig)
