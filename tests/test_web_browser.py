"""The page in a real headless Chromium (Debian's, driven by Playwright's Python API).

A server runs on a free loopback port in this process, with the fast threshold
segmenter of ``test_web_support`` chosen in the page's method menu. The tests upload a
small synthetic case's four files, watch the job reach done, check that the viewer's
canvas shows the label colours, that the volumes table matches the label map, that the
download is a NIfTI with the input's affine, that a correction click changes the mask,
that the sample-case button works, and that a job is deleted from its page.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
                       reason="Debian chromium is not installed"),
]

pytest.importorskip("playwright")
pytest.importorskip("fastapi")

from braintumor.web import create_app  # noqa: E402
from test_web_support import (  # noqa: E402
    AFFINE,
    SHAPE,
    ServerThread,
    register_test_methods,
    small_case,
    write_case_files,
    write_dicom_zip,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with pytest.MonkeyPatch.context() as mp:
        register_test_methods(mp)
        app = create_app(tmp_path_factory.mktemp("data"), token="", warm=False,
                         sample_options={"shape": [64, 64, 48]})
        with ServerThread(app) as srv:
            yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    urls: list[str] = []
    pg.on("request", lambda r: urls.append(r.url))
    yield pg
    ctx.close()
    assert not errors, errors
    # the page works offline: it asks nothing of any host but the loopback server
    outside = [u for u in urls if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert not outside, outside


def _contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two CSS ``rgb(r, g, b)`` colours."""
    def lum(css: str) -> float:
        c = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback test server
        return bytes(r.read())


def _job(server: ServerThread, job_id: str) -> dict[str, Any]:
    return dict(json.loads(_fetch(f"{server.url}/api/jobs/{job_id}")))


def _post_job(server: ServerThread, job_id: str, path: str, body: Any = None
              ) -> dict[str, Any]:
    """POST ``body`` (JSON; ``{}`` when None) to one of the job's API paths, as another
    page or reader of the job would: its answer."""
    req = urllib.request.Request(f"{server.url}/api/jobs/{job_id}/{path}",
                                 data=json.dumps({} if body is None else body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback server
        return dict(json.loads(r.read()))


def _label_masks(png: bytes) -> dict[str, np.ndarray]:
    """Where the picture carries each label colour, blended on grey: necrotic core
    vermillion (213, 94, 0), edema sky blue (86, 180, 233), enhancing tumour yellow
    (240, 228, 66); the crosshair's bluish green (0, 158, 115) is none of them."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return {
        "NCR": ((r - g) > 45) & ((g - b) > 25),
        "ED": ((b - r) > 50) & ((b - g) > 15),
        "ET": ((np.minimum(r, g) - b) > 60) & (np.abs(r - g) < 30),
    }


def _label_pixels(png: bytes) -> dict[str, int]:
    """How many pixels of the picture carry each label colour (blended on grey)."""
    return {k: int(m.sum()) for k, m in _label_masks(png).items()}


def _coloured_point(png: bytes) -> tuple[float, float]:
    """Centre of the largest run of label-coloured pixels (canvas pixels)."""
    masks = _label_masks(png)
    ys, xs = np.nonzero(masks["NCR"] | masks["ET"])
    assert len(xs), "no label colour on the canvas"
    return float(np.median(xs)), float(np.median(ys))


def _values_near(url: str, mm: Any) -> set[float]:
    """The values of the NIfTI at ``url`` in the (up to 8) voxels around the scanner
    position ``mm`` (a viewer may round a point between voxels either way)."""
    content = _fetch(url)
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    img = nib.Nifti1Image.from_bytes(content)
    data = np.asarray(img.dataobj)
    ijk = (np.linalg.inv(img.affine) @ [*mm, 1.0])[:3]
    out = set()
    for corner in np.ndindex(2, 2, 2):
        v = np.where(corner, np.ceil(ijk), np.floor(ijk)).astype(int)
        if all(0 <= v[a] < data.shape[a] for a in range(3)):
            out.add(float(data[tuple(v)]))
    return out


def _wait_overlay(page: Any, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector("body[data-viewer='overlay']", timeout=timeout_ms)
    page.wait_for_timeout(600)  # a few frames for WebGL to draw


def _until(page: Any, expression: str, timeout_s: float = 30.0) -> None:
    """Wait until the page's ``expression`` is true (polled from here: the page's
    content security policy forbids the string predicates of ``wait_for_function``)."""
    t0 = time.monotonic()
    while not page.evaluate(expression):
        assert time.monotonic() - t0 < timeout_s, f"still false: {expression}"
        page.wait_for_timeout(100)


def _choose_files(page: Any, server: ServerThread, paths: list[str], method: str) -> None:
    """Open the page, pick ``method`` and choose the files ``paths``, up to the page's
    modality choices for them (before Segment is pressed)."""
    page.goto(server.url + "/")
    page.wait_for_selector(f"#method option[value='{method}']", state="attached")
    page.select_option("#method", method)
    page.set_input_files("#file-input", paths)
    page.wait_for_selector(".mod-select")


def _upload_case(server: ServerThread, page: Any, tmp_path: Path, method: str,
                 case: Any = None, uncertainty: bool = False, align: bool = False,
                 bias: bool = False) -> list[str]:
    """Upload the small case's (or ``case``'s) four files with ``method`` and wait for
    the job to finish; returns the modalities the page assigned to the files before
    submitting."""
    files = write_case_files(case if case is not None else small_case(), tmp_path / "case",
                             with_label=False)
    _choose_files(page, server, [str(p) for p in files.values()], method)
    chosen = list(page.eval_on_selector_all(".mod-select", "els => els.map(e => e.value)"))
    labels = page.eval_on_selector_all(".mod-select", "els => els.map(e => e.ariaLabel)")
    assert all(str(x).startswith("Modality of ") for x in labels), labels
    if uncertainty:
        page.check("#want-unc")
    if align:
        page.check("#want-align")
    if bias:
        page.check("#want-bias")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    return chosen


def _volumes_from_nifti(content: bytes) -> dict[str, float]:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(content))
    lab = np.asarray(img.dataobj)
    vox = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    ncr, ed, et = ((lab == v).sum() * vox for v in (1, 2, 4))
    return {"NCR": ncr, "ED": ed, "ET": et, "TC": ncr + et, "WT": ncr + ed + et}


def test_upload_progress_viewer_volumes_download_and_correction(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    chosen = _upload_case(server, page, tmp_path, "threshold")
    # modalities detected from the names, editable before submitting
    assert sorted(chosen) == ["flair", "t1", "t1ce", "t2"]
    from playwright.sync_api import expect

    expect(page.locator("#m-agree")).to_have_text(
        "CNN and watershed agree (Dice): WT 0.91 · TC 0.84 · ET 0.42")
    assert page.eval_on_selector("#job-progress", "e => e.value") == 1
    _wait_overlay(page)
    job_id = page.url.rsplit("/", 1)[1]
    assert page.url.endswith(f"/jobs/{job_id}")
    # the views open through the middle of the largest lesion, not of the volume
    _until(page, f"state.centredJob === '{job_id}'")
    lesion = _job(server, job_id)["result"]["summary"]["diameters"]["WT"]["lesions"][0]
    at = page.evaluate("Array.from(state.nv.frac2mm(state.nv.scene.crosshairPos)).slice(0, 3)")
    middle = page.evaluate("Array.from(state.nv.frac2mm([0.5, 0.5, 0.5])).slice(0, 3)")
    assert np.allclose(at, lesion["centre_mm"], atol=1.0), (at, lesion)
    # the arrow keys move the crosshair a voxel, as the viewer's label says (and back);
    # right on the screen is the patient's left in the radiological view (-x in RAS)
    page.focus("#gl")
    vox = "Array.from(state.nv.frac2vox(state.nv.scene.crosshairPos))"
    start = page.evaluate(vox)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowUp")
    moved = page.evaluate(vox)
    assert moved[0] == start[0] - 1 and moved[1] == start[1] + 1, (start, moved)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowDown")
    assert page.evaluate(vox) == start
    # ... on the outline as the viewer draws it (its own voxel order, reoriented to RAS)
    drawn = page.evaluate("""(() => {
      const nv = state.nv, v = nv.frac2vox(nv.scene.crosshairPos), d = nv.back.dims;
      return nv.drawBitmap[v[0] + v[1] * d[1] + v[2] * d[1] * d[2]]; })()""")
    assert drawn > 0, drawn
    assert not np.allclose(at, middle, atol=3.0), (at, middle)
    # the readout under the viewer: the crosshair in mm, what the number is (the shown
    # image's intensity) and the label there, as the files have them
    job = _job(server, job_id)
    readout = page.text_content("#location") or ""
    m = re.fullmatch(r"Crosshair at \((-?[\d.]+), (-?[\d.]+), (-?[\d.]+)\) mm, scanner RAS"
                     r" · FLAIR intensity (-?[\d.]+) · (.+)", readout)
    assert m, readout
    assert np.allclose([float(v) for v in m.groups()[:3]], at, atol=0.06), (readout, at)
    near = _values_near(server.url + job["urls"]["images"]["flair"], at)
    shown = float(m.group(4))
    assert any(abs(shown - v) <= max(0.5, 0.005 * abs(v)) for v in near), (readout, near)
    names = {0: "no tumour label", 1: "necrotic core (NCR)", 2: "edema (ED)",
             3: "enhancing tumour (ET)"}
    labels_near = _values_near(server.url + job["urls"]["overlay"], at)
    assert m.group(5) in {names[int(v)] for v in labels_near}, (readout, labels_near)
    assert m.group(5) != names[0]

    # the canvas shows the three label colours, and hiding them in the legend removes them
    page.select_option("#layout", "axial")
    page.wait_for_timeout(500)
    shot = page.locator("#gl").screenshot()
    px = _label_pixels(shot)
    assert px["NCR"] > 20 and px["ED"] > 20 and px["ET"] > 20, px
    for lab in (1, 2, 3):
        page.uncheck(f"#show-{lab}")
    page.wait_for_timeout(400)
    hidden = _label_pixels(page.locator("#gl").screenshot())
    assert sum(hidden.values()) < 0.05 * sum(px.values()), (hidden, px)
    for lab in (1, 2, 3):
        page.check(f"#show-{lab}")
    page.wait_for_timeout(400)

    # the volumes table matches the downloaded label map, which has the input's affine
    with page.expect_download() as dl:
        page.click("#dl-labels")
    path = dl.value.path()
    content = Path(path).read_bytes()
    img = nib.Nifti1Image.from_bytes(gzip.decompress(content))
    assert img.shape == SHAPE and np.allclose(img.affine, AFFINE)
    table = {k: float(v) for k, v in page.eval_on_selector_all(
        "#vol-table td[data-key]", "els => els.map(e => [e.dataset.key, e.textContent])")}
    expect = _volumes_from_nifti(content)
    assert set(table) == set(expect)
    for k, v in expect.items():
        assert table[k] == pytest.approx(v, abs=0.006), (k, table, expect)

    # the RANO diameters are the server's, and a click puts the crosshair on the slice
    # where the largest enhancing lesion was measured
    diam = _job(server, job_id)["result"]["summary"]["diameters"]
    from braintumor.report import slice_position

    for region, sel in (("ET", "#diam-et"), ("WT", "#diam-wt")):
        assert diam[region]["lesions"], diam
        assert page.text_content(sel) == diam[region]["text"]
        # ... on the slice the reports name ("17 of 32, S 4.0 mm")
        largest = diam[region]["lesions"][0]
        assert page.text_content(f"{sel}-slice") == f"slice {slice_position(largest)}"
    centre = diam["ET"]["lesions"][0]["centre_mm"]
    page.click("#diam-et")
    page.wait_for_timeout(300)
    at = page.evaluate("Array.from(state.nv.frac2mm(state.nv.scene.crosshairPos)).slice(0, 3)")
    assert np.allclose(at, centre, atol=1.0), (at, centre)
    # ... and lays the diameters over the scan (the toggle takes them off again)
    assert page.is_checked("#diam-toggle")
    has_lines = "state.nv.volumes.some((v) => v.__role === 'diam')"
    assert page.evaluate(has_lines)
    page.uncheck("#diam-toggle")
    _until(page, f"!({has_lines})")

    # the downloaded label map, given back as an earlier scan's: no change anywhere
    earlier = tmp_path / "visit1_seg.nii.gz"
    earlier.write_bytes(content)
    page.set_input_files("#cmp-file", str(earlier))
    page.wait_for_selector("#cmp-table:not([hidden])", timeout=30_000)
    rows = page.eval_on_selector_all(
        "#cmp-table tbody",
        "bs => bs.map(b => [...b.querySelectorAll('th, td')].map(c => c.textContent))")
    assert len(rows) == 7 and rows[0][0] == "Whole tumour (mL)"
    assert all(r[4] in ("within the thresholds", "none in either", "no RANO threshold")
               for r in rows), rows
    # every word of it on one line: lines break between words, never inside one
    # ("Meas ure", "tumo ur" in the narrow panel before)
    split = page.evaluate("""() => {
        const out = [];
        for (const cell of document.querySelectorAll('#cmp-table th, #cmp-table td')) {
          const text = cell.firstChild;
          if (!text) continue;
          for (const m of text.textContent.matchAll(/\\S+/g)) {
            const r = document.createRange();
            r.setStart(text, m.index);
            r.setEnd(text, m.index + m[0].length);
            const tops = new Set([...r.getClientRects()].map((q) => Math.round(q.top)));
            if (tops.size > 1) out.push(m[0]);
          }
        }
        return out;
    }""")
    assert split == [], split
    assert "Size only" in (page.text_content("#cmp-caveat") or "")
    # the five columns fit the side panel (they ran out of it at this width)
    assert page.evaluate("""() => {
        const t = document.getElementById('cmp-table').getBoundingClientRect();
        const panel = document.getElementById('cmp-table').closest('aside').getBoundingClientRect();
        return t.right <= panel.right + 0.5 && document.documentElement.scrollWidth <= innerWidth;
    }""")

    # switching the modality keeps the outline on the new image
    page.click("#mod-btns button[data-mod='t1ce']")
    page.wait_for_selector("#mod-btns button.on[data-mod='t1ce']")
    t0 = time.monotonic()
    while page.evaluate("() => window.braintumor.loadedBg || ''").split("/")[-1] != \
            "t1ce.nii.gz" or page.evaluate("() => window.braintumor.busy"):
        assert time.monotonic() - t0 < 30
        time.sleep(0.1)
    page.wait_for_timeout(500)
    assert sum(_label_pixels(page.locator("#gl").screenshot()).values()) > 0.5 * sum(px.values())
    assert " · T1ce intensity " in (page.text_content("#location") or "")

    # a correction click ("outside" on the tumour) changes the mask; undo restores it
    pytest.importorskip("braintumor.correction")
    x, y = _coloured_point(page.locator("#gl").screenshot())
    page.check("#correct-toggle")
    assert page.is_enabled("#correct-region")
    page.check("input[name=seed-kind][value=outside]")
    assert page.is_disabled("#correct-region")  # an outside seed removes any label
    t0 = time.monotonic()
    page.locator("#gl").click(position={"x": x, "y": y})
    page.wait_for_selector("body[data-result='v1']", timeout=30_000)
    correction_s = time.monotonic() - t0
    after = _fetch(f"{server.url}/api/jobs/{job_id}/download/labels.nii.gz")
    before_lab = np.asarray(img.dataobj)
    after_lab = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(after)).dataobj)
    assert (after_lab > 0).sum() < (before_lab > 0).sum()
    print(f"correction click to updated page: {correction_s:.2f} s")
    page.wait_for_timeout(500)
    assert float(page.eval_on_selector("td[data-key='WT']", "e => e.textContent")) < table["WT"]
    # the comparison shown was of the outline before the correction: it is withdrawn
    assert page.is_hidden("#cmp-table")
    assert "The outline changed" in (page.text_content("#cmp-msg") or "")
    page.click("#undo-btn")
    page.wait_for_selector("body[data-result='v0']", timeout=30_000)
    undone = _fetch(f"{server.url}/api/jobs/{job_id}/download/labels.nii.gz")
    assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(
        gzip.decompress(undone)).dataobj), before_lab)
    # the same correction without a mouse: the crosshair (moved there) and a button
    page.evaluate(f"() => {{ const nv = window.braintumor.nv; "
                  f"nv.scene.crosshairPos = nv.canvasPos2frac([{x}, {y}]); nv.drawScene(); }}")
    page.focus("#seed-here-btn")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-result='v1']", timeout=30_000)
    keyed = _fetch(f"{server.url}/api/jobs/{job_id}/download/labels.nii.gz")
    keyed_lab = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(keyed)).dataobj)
    assert (keyed_lab > 0).sum() < (before_lab > 0).sum()

    # the job survives a reload (the URL is the job's)
    page.reload()
    page.wait_for_selector("body[data-status='done']", timeout=30_000)
    _wait_overlay(page)


def test_sample_button(server: ServerThread, page: Any) -> None:
    failed: list[str] = []  # requests the page made that the server refused
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    # the page asks for the accurate mode unless the user unticks it
    assert page.is_checked("#want-accurate")
    # before a result the downloads are not links, and say so to a screen reader
    assert page.get_attribute("#dl-labels", "href") is None
    assert page.get_attribute("#dl-labels", "aria-disabled") == "true"
    t0 = time.monotonic()
    with page.expect_request("**/api/sample") as req:
        page.click("#sample-btn")
    assert req.value.post_data_json["accurate"] is True
    # the button is disabled while the job starts: focus goes to the job's status, a
    # polite live region, instead of dropping to the page
    _until(page, "document.activeElement && document.activeElement.id === 'job-status-line'")
    assert page.get_attribute("#job-status-line", "role") == "status"
    _wait_overlay(page, timeout_ms=120_000)
    assert page.get_attribute("#mod-btns button[data-mod='flair']", "aria-pressed") == "true"
    assert page.get_attribute("#dl-labels", "aria-disabled") is None
    seconds = time.monotonic() - t0
    print(f"sample click to overlay (threshold stand-in, 64x64x48): {seconds:.1f} s")
    page.wait_for_selector("body[data-status='done']", timeout=60_000)
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert job["inputs"]["source"] == "sample"
    assert job["result"]["summary"]["metrics"] is not None
    assert page.is_visible("#metrics-box")
    shot = page.locator("#gl").screenshot()
    assert sum(_label_pixels(shot).values()) > 50
    assert not page.is_visible("#m-grid")  # a 1 mm case needs no resampling
    assert failed == []
    # the HTML report shows its pictures under the server's content security policy,
    # from the page itself: nothing more is fetched, so a saved copy keeps them
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    refused: list[str] = []
    page.on("console", lambda m: refused.append(f"{m.text} {m.location}") if m.type == "error"
            else None)
    page.goto(server.url + job["urls"]["report_html"])
    widths = page.eval_on_selector_all(
        "img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert len(widths) >= 3 and min(widths) > 10, widths
    assert fetched == [server.url + job["urls"]["report_html"]], fetched
    assert refused == [] and failed == [], (refused, failed)


def _lesion_side(page: Any) -> float:
    """Where the outline lies across the axial slice on the screen: its centre's
    distance from the canvas's middle, as a fraction of the canvas's width (> 0: to the
    right)."""
    shot = page.locator("#gl").screenshot()
    x, _ = _coloured_point(shot)
    from PIL import Image

    width = Image.open(io.BytesIO(shot)).width
    return (x - width / 2) / width


def test_viewer_shows_the_radiological_view_unless_chosen_otherwise(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """The small case's tumour lies in the patient's left half (its voxel x runs to the
    left, and the tumour sits 4 voxels past the middle): the radiological view, the
    reports' and the default, draws it right of the middle, the neurological view left
    of it, and a reload keeps the reader's choice."""
    _upload_case(server, page, tmp_path, "threshold")
    _wait_overlay(page)
    job_id = page.url.rsplit("/", 1)[1]
    lesion = _job(server, job_id)["result"]["summary"]["diameters"]["WT"]["lesions"][0]
    middle = page.evaluate("Array.from(state.nv.frac2mm([0.5, 0.5, 0.5])).slice(0, 3)")
    assert lesion["centre_mm"][0] < middle[0] - 2, (lesion, middle)  # the patient's left
    assert page.input_value("#convention") == "radiological"
    page.select_option("#layout", "axial")
    page.wait_for_timeout(400)
    assert page.evaluate("state.nv.opts.isRadiologicalConvention") is True
    assert _lesion_side(page) > 0.03
    page.select_option("#convention", "neurological")
    page.wait_for_timeout(400)
    assert _lesion_side(page) < -0.03
    # the choice is the reader's habit: kept across a reload of the job's page
    page.reload()
    _wait_overlay(page)
    assert page.input_value("#convention") == "neurological"
    assert page.evaluate("state.nv.opts.isRadiologicalConvention") is False
    page.select_option("#convention", "radiological")


def test_every_correction_click_places_a_seed_and_the_viewer_keeps_its_place(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """A click on the point where the crosshair already is (NiiVue reports no location
    change then) places a seed as any other, a click beside the slices says why none
    was placed; neither the crosshair's readout nor ticking the correction box moves or
    resizes the viewer; the slice panes lie apart, so that their edge letters do not
    meet."""
    pytest.importorskip("braintumor.correction")
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    # the viewer's place in its panel and its size (the panel stays in view as the page
    # scrolls)
    place = """() => {
        const g = document.getElementById('gl').getBoundingClientRect();
        const c = document.getElementById('centre').getBoundingClientRect();
        return [g.top - c.top, g.width, g.height]; }"""
    before = page.evaluate(place)
    _upload_case(server, page, tmp_path, "threshold")
    _wait_overlay(page)
    assert page.text_content("#location")
    assert page.evaluate(place) == before
    # each slice pane a letter's height and width apart from the next
    gaps = page.evaluate("""() => {
        const nv = state.nv;
        const tiles = nv.screenSlices.filter((s) => s.axCorSag <= 2)
          .map((s) => s.leftTopWidthHeight);
        let least = Infinity;
        for (const a of tiles) for (const b of tiles) {
          if (a === b) continue;
          const h = b[0] - (a[0] + a[2]), v = b[1] - (a[1] + a[3]);
          if (h >= -0.5 && b[1] < a[1] + a[3] && a[1] < b[1] + b[3]) least = Math.min(least, h);
          if (v >= -0.5 && b[0] < a[0] + a[2] && a[0] < b[0] + b[2]) least = Math.min(least, v);
        }
        return [least, nv.fontPx];
    }""")
    assert gaps[0] >= gaps[1], gaps
    page.select_option("#layout", "axial")
    page.wait_for_timeout(500)
    x, y = _coloured_point(page.locator("#gl").screenshot())
    page.locator("#gl").click(position={"x": x, "y": y})  # the crosshair there first
    page.wait_for_timeout(300)
    page.check("#correct-toggle")
    assert page.evaluate(place) == before
    page.evaluate("document.getElementById('location').textContent = 'a long line '.repeat(60)")
    assert page.evaluate(place) == before
    page.check("input[name=seed-kind][value=outside]")
    seeds: list[Any] = []
    page.on("request", lambda r: seeds.append(r.post_data_json)
            if r.url.endswith("/corrections") else None)
    page.locator("#gl").click(position={"x": x, "y": y})
    page.wait_for_selector("body[data-result='v1']", timeout=30_000)
    from playwright.sync_api import expect

    expect(page.locator("#m-corr")).to_have_text("1")
    page.locator("#gl").click(position={"x": x, "y": y})  # the same point again
    # ... which finds no tumour left to take away: said as a plain fact where the seed
    # is, in scanner mm as the line under the viewer says it, not as an update; it is no
    # correction (not counted, no step to undo)
    expect(page.locator("#correct-msg")).to_contain_text("Nothing changed: the background "
                                                         "seed at (", timeout=30_000)
    msg = page.text_content("#correct-msg") or ""
    assert re.search(r"at \(-?\d+\.\d, -?\d+\.\d, -?\d+\.\d\) mm", msg), msg
    assert "Updated" not in msg and "nothing changed there" not in msg  # said once
    assert page.eval_on_selector("#correct-msg", "e => e.className") == "msg info"
    assert len(seeds) == 2 and seeds[0]["seeds"] == seeds[1]["seeds"], seeds
    assert [s["version"] for s in seeds] == [0, 1]  # each on the outline shown
    assert seeds[0]["seeds"][0]["label"] == 0
    assert page.evaluate("document.body.dataset.result") == "v1"
    expect(page.locator("#m-corr")).to_have_text("1")
    # beside the slice (the axial view leaves black margins left and right): no seed, and
    # the page says why
    page.locator("#gl").click(position={"x": 3, "y": before[2] / 2})
    expect(page.locator("#correct-msg")).to_contain_text("No seed: click on one of the slices")
    assert len(seeds) == 2
    assert page.evaluate(place) == before
    # at 1280 x 800 a long note stays inside the viewer's card, in the window (it ran out
    # of the card, below the fold)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("window.scrollTo(0, 0)")
    note = ("the seed at (-24.0, 14.0, 75.0) mm (voxel 24, 225, 75) lies outside the brain "
            "(every modality is 0 there); nothing changed there")
    page.evaluate(f"setMsg('correct-msg', 'Nothing changed: {note}; {note}.', 'info')")
    page.wait_for_timeout(200)
    fits = page.evaluate("""() => {
        const m = document.getElementById('correct-msg').getBoundingClientRect();
        const c = document.getElementById('centre').getBoundingClientRect();
        return [m.top >= c.top, m.bottom <= c.bottom, c.bottom <= innerHeight, m.height];
    }""")
    assert fits[:3] == [True, True, True], fits


def test_after_a_correction_the_page_says_what_it_changed(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """What the method said of its own outline (the hybrid's agreement, a warning) is
    said, once the outline is corrected, as said of the outline before the corrections."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    job_id, centre = _lesion_job(server, page, tmp_path)
    expect(page.locator("#m-agree")).to_have_text(
        "CNN and watershed agree (Dice): WT 0.91 · TC 0.84 · ET 0.42")
    # with "outside" chosen, the greyed region menu says what the seed does, not the
    # region an inside seed would take; that one comes back with "inside"
    page.check("#correct-toggle")
    page.select_option("#correct-region", "2")
    page.check("input[name=seed-kind][value=outside]")
    assert page.is_disabled("#correct-region")
    assert page.eval_on_selector(
        "#correct-region", "e => e.selectedOptions[0].textContent") == \
        "any tumour label: removed"
    page.check("input[name=seed-kind][value=inside]")
    assert page.eval_on_selector("#correct-region", "e => e.value") == "2"
    page.check("input[name=seed-kind][value=outside]")
    before = _job(server, job_id)["result"]["summary"]["volumes_ml"]["WT"]
    _outside_seed(page, centre)
    page.wait_for_selector("body[data-result='v1']", timeout=30_000)
    # the message says what the edit did, in mL
    after = _job(server, job_id)["result"]["summary"]["volumes_ml"]["WT"]
    assert after < before
    expect(page.locator("#correct-msg")).to_contain_text(
        f"Whole tumour {before:.2f} → {after:.2f} mL (−{before - after:.2f} mL). Updated in")
    page.click("#undo-btn")
    page.wait_for_selector("body[data-result='v0']", timeout=30_000)
    expect(page.locator("#correct-msg")).to_have_text(
        f"Undone. Whole tumour {after:.2f} → {before:.2f} mL (+{before - after:.2f} mL).")
    _outside_seed(page, centre)
    page.wait_for_selector("body[data-result='v1']", timeout=30_000)
    expect(page.locator("#m-agree")).to_have_text(
        "Before the corrections, CNN and watershed agreed (Dice): WT 0.91 · TC 0.84 · ET 0.42")
    page.evaluate("showJob({...state.job, result: {...state.job.result, "
                  "warning: 'the scan is thick; the fast mode found 27.5 mL', "
                  "method_warning: 'the fast mode found 27.5 mL.'}}, false)")
    expect(page.locator("#m-warn")).to_have_text(
        "Note: the scan is thick; before the corrections: the fast mode found 27.5 mL")
    page.evaluate("showJob({...state.job, result: {...state.job.result, "
                  "warning: 'the scan is thick', method_warning: null}}, false)")
    expect(page.locator("#m-warn")).to_have_text("Note: the scan is thick")
    # a relabelling leaves the whole tumour as it was: the region it changed is said
    said = page.evaluate("""() => {
      const j = (v) => ({result: {summary: {volumes_ml: v}}});
      return [volumeChange(j({WT: 20, TC: 8, ET: 3}), j({WT: 20, TC: 8, ET: 5.5})),
              volumeChange(j({WT: 20, TC: 8, ET: 3}), j({WT: 20, TC: 8, ET: 3}))];
    }""")
    assert said == ["Enhancing tumour 3.00 → 5.50 mL (+2.50 mL). ", "Volumes unchanged. "]


def test_a_second_tab_on_the_job_follows_what_the_first_did(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Two tabs on one job: the second shows what the first corrected or undid when it
    comes back into view, and after a refused undo (undone in the first already) it
    shows the job as it is: its count, its Undo off, its outline."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    _upload_case(server, page, tmp_path, "threshold")
    _wait_overlay(page)
    url = page.url
    job_id = url.rsplit("/", 1)[1]
    lesion = _job(server, job_id)["result"]["summary"]["diameters"]["WT"]["lesions"][0]
    seed = {"seeds": [{"mm": lesion["centre_mm"], "label": 0}]}

    def post(path: str, body: Any = None) -> dict[str, Any]:
        return _post_job(server, job_id, path, body)

    other = page.context.new_page()
    other.goto(url)
    _wait_overlay(other)
    assert post("corrections", seed)["label_version"] == 1  # "the first tab" corrects
    expect(other.locator("#m-corr")).to_have_text("0")  # not told yet
    other.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # back in view
    expect(other.locator("#m-corr")).to_have_text("1")
    expect(other.locator("#undo-btn")).to_be_enabled()
    _until(other, "document.body.dataset.result === 'v1'")
    assert post("corrections/undo")["label_version"] == 0  # ... and undoes it
    other.click("#undo-btn")  # still on: refused, and the job shown as it is
    expect(other.locator("#correct-msg")).to_contain_text(
        "The outline changed since this page showed it (version 1, now 0: another page or "
        "reader corrected or undid it), so nothing was undone")
    expect(other.locator("#m-corr")).to_have_text("0")
    expect(other.locator("#undo-btn")).to_be_disabled()
    # the outline as it is now: version 0 again, by its own address (its revision)
    outline = _job(server, job_id)["urls"]["overlay"]
    assert outline.endswith("/overlay/v0/labels.nii.gz?r=2"), outline
    _until(other, f"state.loadedOverlay && state.loadedOverlay.endsWith('{outline[-30:]}')")
    other.close()


def test_a_page_that_has_not_seen_another_s_correction_neither_undoes_nor_corrects_it(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Two pages on one job, both in view: page B's Undo, pressed to take back the
    correction B shows, does not take back one that page A made since (here through the
    API, so that B is not brought back into view and refreshed), nor does a seed B
    places land on A's outline: B says the server's sentence where corrections are said
    and shows the outline as it is now, and A's correction stays on the server. Two
    quick seeds of one page are two corrections, neither refused."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    _upload_case(server, page, tmp_path, "threshold")
    _wait_overlay(page)
    url = page.url
    job_id = url.rsplit("/", 1)[1]
    centre = _job(server, job_id)["result"]["summary"]["diameters"]["WT"]["lesions"][0][
        "centre_mm"]

    def correct(label: int, version: int) -> dict[str, Any]:
        return _post_job(server, job_id, "corrections",
                         {"seeds": [{"mm": centre, "label": label}], "version": version})

    # page B, opened second, stays the page in front; its correction (version 1) is shown
    other = page.context.new_page()
    other.goto(url)
    _wait_overlay(other)
    assert correct(0, 0)["label_version"] == 1
    other.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    _until(other, "document.body.dataset.result === 'v1'")
    _until(other, "!!state.loadedOverlay && state.loadedOverlay.includes('/overlay/v1/')")
    expect(other.locator("#undo-btn")).to_be_enabled()
    # page A corrects again: version 2, which B has not seen
    assert correct(3, 1)["label_version"] == 2
    outline = _fetch(f"{server.url}/api/jobs/{job_id}/overlay/v2/labels.nii.gz")
    expect(other.locator("#m-corr")).to_have_text("1")
    asked: list[Any] = []
    other.on("request", lambda r: asked.append(r.post_data_json)
             if r.url.endswith("/corrections/undo") else None)
    # the refusal itself carries the job as it is now: B asks nothing more to show it
    other.route(f"**/api/jobs/{job_id}", lambda route: route.abort())
    other.click("#undo-btn")
    expect(other.locator("#correct-msg")).to_have_text(
        "The outline changed since this page showed it (version 1, now 2: another page or "
        "reader corrected or undid it), so nothing was undone: check the outline as it is "
        "now and undo again if need be.")
    assert asked == [{"version": 1, "revision": 1}], asked
    assert other.eval_on_selector("#correct-msg", "e => e.className") == "msg"  # refused
    # B shows the outline as it is now, A's correction on top of B's
    expect(other.locator("#m-corr")).to_have_text("2")
    _until(other, "document.body.dataset.result === 'v2'")
    _until(other, "!!state.loadedOverlay && state.loadedOverlay.includes('/overlay/v2/')")
    other.unroute(f"**/api/jobs/{job_id}")
    # ... and A's correction is still the server's outline
    job = _job(server, job_id)
    assert job["label_version"] == 2 and job["result"]["corrections"] == 2
    assert _fetch(f"{server.url}/api/jobs/{job_id}/overlay/v2/labels.nii.gz") == outline
    # B, now shown version 2, undoes it when asked again
    other.click("#undo-btn")
    expect(other.locator("#correct-msg")).to_have_text(re.compile(r"^Undone\. Whole tumour "))
    assert asked[-1] == {"version": 2, "revision": 2}
    assert _job(server, job_id)["label_version"] == 1
    # two quick seeds of one page are two corrections, the second sent once the first is
    # answered, on its outline: neither is refused
    other.click("#undo-btn")
    expect(other.locator("#correct-msg")).to_have_text(re.compile(r"^Undone\. Whole tumour "))
    sent: list[Any] = []
    other.on("request", lambda r: sent.append(r.post_data_json)
             if r.url.endswith("/corrections") else None)
    other.evaluate("""(c) => {
        const kind = (k) => { document.querySelector(`input[name=seed-kind][value=${k}]`)
                                .checked = true; };
        document.getElementById("correct-region").value = "3";
        kind("outside");
        placeSeed(c);
        kind("inside");
        placeSeed(c);
    }""", centre)
    _until(other, "document.body.dataset.result === 'v2'")
    expect(other.locator("#correct-msg")).to_contain_text("Updated in")
    assert [(b["seeds"][0]["label"], b["version"]) for b in sent] == [(0, 0), (3, 1)], sent
    assert _job(server, job_id)["label_version"] == 2
    # a seed B places on version 2 after A made version 3 is not applied to 3
    assert correct(0, 2)["label_version"] == 3
    outline = _fetch(f"{server.url}/api/jobs/{job_id}/overlay/v3/labels.nii.gz")
    other.evaluate("(c) => placeSeed(c)", centre)
    expect(other.locator("#correct-msg")).to_have_text(
        "The outline changed since this page showed it (version 2, now 3: another page or "
        "reader corrected or undid it), so this correction was not applied: check the "
        "outline as it is now and correct again.")
    assert sent[-1]["version"] == 2, sent
    _until(other, "document.body.dataset.result === 'v3'")
    assert _job(server, job_id)["label_version"] == 3
    assert _fetch(f"{server.url}/api/jobs/{job_id}/overlay/v3/labels.nii.gz") == outline
    other.close()


def _lesion_job(server: ServerThread, page: Any, tmp_path: Path) -> tuple[str, Any]:
    """A case uploaded from the page and segmented by the threshold stand-in, its outline
    shown: the job's id and its first whole-tumour lesion's centre (mm)."""
    _upload_case(server, page, tmp_path, "threshold")
    _wait_overlay(page)
    job_id = page.url.rsplit("/", 1)[1]
    centre = _job(server, job_id)["result"]["summary"]["diameters"]["WT"]["lesions"][0][
        "centre_mm"]
    return job_id, centre


def _corrections_sent(page: Any) -> list[Any]:
    """The bodies of the corrections the page sends from now on, in order."""
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r.post_data_json)
            if r.url.endswith("/corrections") else None)
    return sent


def _slow_first_correction(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The server's next correction takes ``seconds`` longer (a slow server); later ones
    run at their usual speed."""
    correction = pytest.importorskip("braintumor.correction")
    real = correction.correct
    calls: list[int] = []

    def slow(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(seconds)
        return real(*a, **k)

    monkeypatch.setattr(correction, "correct", slow)


def _outside_seed(page: Any, centre: Any) -> None:
    page.evaluate("""(c) => {
        document.querySelector("input[name=seed-kind][value=outside]").checked = true;
        placeSeed(c);
    }""", centre)


def _inside_seed(page: Any, centre: Any) -> None:
    page.evaluate("""(c) => {
        document.getElementById("correct-region").value = "3";
        document.querySelector("input[name=seed-kind][value=inside]").checked = true;
        placeSeed(c);
    }""", centre)


def _give_up_a_slow_correction(page: Any, monkeypatch: pytest.MonkeyPatch, centre: Any,
                               seconds: float, said: str | None = None) -> None:
    """An outside seed at ``centre`` that the server, ``seconds`` slower this once,
    answers past the page's time limit (1.5 s): the page gives it up and says so (the
    sentence ``said`` when given)."""
    from playwright.sync_api import expect

    _slow_first_correction(monkeypatch, seconds)
    page.evaluate("state.correctionTimeoutMs = 1500")
    _outside_seed(page, centre)
    if said is None:
        expect(page.locator("#correct-msg")).to_contain_text("did not answer within 2 s",
                                                             timeout=20_000)
    else:
        expect(page.locator("#correct-msg")).to_have_text(said, timeout=20_000)


def test_a_correction_the_server_does_not_answer_is_given_up(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """A correction the server does not answer (stalled, or the network dropped) holds
    up the seeds clicked after it only until the page's time limit: it is given up, the
    seed queued behind it is not sent, the page says so in one sentence and shows the
    outline as the server has it (corrected meanwhile by another reader), and the next
    click is sent as usual, on that outline."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    job_id, centre = _lesion_job(server, page, tmp_path)
    sent = _corrections_sent(page)
    stalled: list[Any] = []
    page.route("**/corrections", lambda route: stalled.append(route))  # never answered
    page.evaluate("state.correctionTimeoutMs = 2000")
    page.evaluate("""(c) => {
        document.querySelector("input[name=seed-kind][value=outside]").checked = true;
        placeSeed(c);
        placeSeed(c);
    }""", centre)
    _until(page, "document.getElementById('correct-msg').textContent === 'Correcting…'")
    assert _post_job(server, job_id, "corrections", {"seeds": [{"mm": centre, "label": 0}],
                                                      "version": 0})["label_version"] == 1
    expect(page.locator("#correct-msg")).to_have_text(
        "The server did not answer within 2 s, so nothing more was sent; the outline is "
        "shown as the server has it now: check it and correct again.", timeout=20_000)
    assert page.eval_on_selector("#correct-msg", "e => e.className") == "msg"
    _until(page, "document.body.dataset.result === 'v1'")
    expect(page.locator("#m-corr")).to_have_text("1")
    page.wait_for_timeout(500)
    assert len(sent) == 1 and sent[0]["version"] == 0, sent  # the second seed not sent
    page.unroute("**/corrections")
    _inside_seed(page, centre)
    expect(page.locator("#correct-msg")).to_contain_text("Updated in", timeout=30_000)
    _until(page, "document.body.dataset.result === 'v2'")
    assert sent[-1]["version"] == 1 and len(sent) == 2, sent
    assert _job(server, job_id)["label_version"] == 2
    # a connection dropped (no answer at all) is said likewise, not as "Failed to fetch"
    page.route("**/corrections", lambda route: route.abort())
    page.evaluate("(c) => placeSeed(c)", centre)
    expect(page.locator("#correct-msg")).to_have_text(
        "The server could not be reached, so nothing more was sent; the outline is shown "
        "as the server has it now, and this page shows the correction if the server "
        "applies it after all.")
    page.unroute("**/corrections")
    assert page.evaluate("document.body.dataset.result") == "v2"


def test_a_correction_given_up_but_applied_late_is_shown_as_this_page_s(
        server: ServerThread, page: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A correction the page gave up on (past its time limit) that the slow server
    applies later: the page follows the job, shows the corrected outline once the server
    has it, says the correction was applied after all, and the next click is made on it
    (not refused as another reader's change)."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    job_id, centre = _lesion_job(server, page, tmp_path)
    sent = _corrections_sent(page)
    _give_up_a_slow_correction(
        page, monkeypatch, centre, 4.0,
        said="The server did not answer within 2 s, so nothing more was sent; the outline "
             "is shown as the server has it now, and this page shows the correction if the "
             "server applies it after all.")
    assert page.evaluate("document.body.dataset.result") == "v0"
    expect(page.locator("#correct-msg")).to_have_text(
        "The correction given up was applied by the server after all; the outline is "
        "shown with it.", timeout=20_000)
    _until(page, "document.body.dataset.result === 'v1'")
    expect(page.locator("#m-corr")).to_have_text("1")
    page.evaluate("state.correctionTimeoutMs = 30000")
    _inside_seed(page, centre)
    expect(page.locator("#correct-msg")).to_contain_text("Updated in", timeout=30_000)
    _until(page, "document.body.dataset.result === 'v2'")
    assert [b["version"] for b in sent] == [0, 1], sent
    assert _job(server, job_id)["label_version"] == 2


def test_a_click_made_while_the_server_applies_one_given_up_goes_on_it(
        server: ServerThread, page: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The next click made while the slow server is still applying the correction the
    page gave up on reaches the server after it: refused there as made on the outline
    before, it is this page's own correction that moved it, so the seed is sent again
    on the new outline and said so, instead of the refusal blaming another reader."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    job_id, centre = _lesion_job(server, page, tmp_path)
    sent = _corrections_sent(page)
    _give_up_a_slow_correction(page, monkeypatch, centre, 5.0)
    page.evaluate("state.correctionTimeoutMs = 30000")
    _inside_seed(page, centre)  # the server is still busy with the first
    expect(page.locator("#correct-msg")).to_have_text(re.compile(
        r"The correction given up was applied by the server after all, and this one made "
        r"on it\. (Whole tumour|Tumour core|Enhancing tumour) .* mL\)\. Updated in "),
        timeout=30_000)
    _until(page, "document.body.dataset.result === 'v2'")
    expect(page.locator("#m-corr")).to_have_text("2")
    assert [b["version"] for b in sent] == [0, 0, 1], sent
    assert _job(server, job_id)["label_version"] == 2


def test_an_answer_the_page_cannot_read_is_not_taken_for_a_lost_connection(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """A correction answered with something that is not the job (a proxy's page) says
    so and shows the job as the server has it. The clicks queued behind it were made on
    the outline it was to make: they are sent only when the server's outline is that one
    (the correction applied, known by its name); otherwise (not applied, or another
    reader's outline meanwhile) they are not sent, and the one sentence that says so
    stays."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    job_id, centre = _lesion_job(server, page, tmp_path)
    sent = _corrections_sent(page)
    answered: list[int] = []
    other: list[bool] = []  # another reader corrects while the proxy answers
    applied: list[bool] = []  # the server applies it, the proxy's page answers

    def proxy_page_first(route: Any) -> None:
        answered.append(1)
        if len(answered) > 1:
            route.continue_()
            return
        if other:
            _post_job(server, job_id, "corrections",
                      {"seeds": [{"mm": centre, "label": 0}], "version": 0})
        if applied:
            route.fetch()
        route.fulfill(status=200, content_type="text/html", body="<p>Welcome</p>")

    def two_clicks(kinds: tuple[str, str] = ("outside", "inside")) -> None:
        page.evaluate("""([c, kinds]) => {
            document.getElementById("correct-region").value = "3";
            for (const k of kinds) {
                document.querySelector(`input[name=seed-kind][value=${k}]`).checked = true;
                placeSeed(c);
            }
        }""", [centre, list(kinds)])

    page.route("**/corrections", proxy_page_first)
    _outside_seed(page, centre)
    expect(page.locator("#correct-msg")).to_have_text(
        "The server's answer could not be read; the outline is shown as the server has it "
        "now: check it.")
    dropped = ("The server's answer could not be read, so the clicks made after it were "
               "not sent; the outline is shown as the server has it now: check it and "
               "correct again.")
    # not applied (the proxy kept it): the click behind it, meant for its outline, is
    # not sent alone on the one before
    answered.clear()
    two_clicks()
    expect(page.locator("#correct-msg")).to_have_text(dropped, timeout=30_000)
    page.wait_for_timeout(1500)
    expect(page.locator("#correct-msg")).to_have_text(dropped)
    assert len(sent) == 2, sent
    assert _job(server, job_id)["label_version"] == 0
    # another reader's outline meanwhile: not sent on it either
    answered.clear()
    other.append(True)
    two_clicks()
    expect(page.locator("#correct-msg")).to_have_text(dropped, timeout=30_000)
    _until(page, "document.body.dataset.result === 'v1'")
    page.wait_for_timeout(1500)
    expect(page.locator("#correct-msg")).to_have_text(dropped)
    assert len(sent) == 3, sent
    job = _job(server, job_id)
    assert job["label_version"] == 1 and job["result"]["corrections"] == 1
    # applied, though its answer could not be read: the click behind it goes on its outline
    answered.clear()
    other.clear()
    applied.append(True)
    two_clicks(("inside", "outside"))  # the outline has nothing at the centre now
    expect(page.locator("#correct-msg")).to_contain_text("Updated in", timeout=30_000)
    page.unroute("**/corrections")
    assert [(b["version"], b["revision"]) for b in sent[3:]] == [(1, 1), (2, 2)], sent
    assert _job(server, job_id)["label_version"] == 3


def test_a_page_still_showing_an_outline_undone_and_made_anew_is_refused(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """The page shows version 1 (its own correction); another reader undoes it and
    corrects again: version 1 once more, another outline. The page's next seed names the
    outline it shows by its revision, so it is refused, not laid on the other's outline
    the reader never saw, and the page shows the outline as it is now."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    job_id, centre = _lesion_job(server, page, tmp_path)
    sent = _corrections_sent(page)
    _outside_seed(page, centre)
    expect(page.locator("#correct-msg")).to_contain_text("Updated in", timeout=30_000)
    _until(page, "document.body.dataset.result === 'v1'")
    assert _post_job(server, job_id, "corrections/undo", {"version": 1})["label_version"] == 0
    again = _post_job(server, job_id, "corrections",
                      {"seeds": [{"mm": centre, "label": 3}], "version": 0})
    assert (again["label_version"], again["label_revision"]) == (1, 3)
    _inside_seed(page, centre)
    expect(page.locator("#correct-msg")).to_have_text(
        "The outline changed since this page showed it (revision 1, now 3: another page or "
        "reader corrected or undid it), so this correction was not applied: check the "
        "outline as it is now and correct again.", timeout=30_000)
    assert [(b["version"], b["revision"]) for b in sent] == [(0, 0), (1, 1)], sent
    _until(page, "!!state.loadedOverlay && state.loadedOverlay.endsWith('/overlay/v1/"
                 "labels.nii.gz?r=3')")
    assert _job(server, job_id)["label_revision"] == 3


@pytest.mark.parametrize("deleted", [False, True], ids=["applied", "deleted"])
def test_a_correction_followed_does_not_bring_back_the_job_the_page_left(
        server: ServerThread, page: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, deleted: bool) -> None:
    """A correction given up is followed on its own job only: when the page goes on to
    another job while the following's request is under way, its answer (the correction
    applied late, or the old job deleted meanwhile) neither shows the old job again nor
    stops the new one's polling, nor says the new one is gone."""
    pytest.importorskip("braintumor.correction")
    from playwright.sync_api import expect

    old, centre = _lesion_job(server, page, tmp_path)
    _give_up_a_slow_correction(page, monkeypatch, centre, 5.0)
    # the following's requests for the old job take 6 s from now on
    page.evaluate("""(old) => {
        const real = window.fetch;
        window.fetch = async (url, opts) => {
            if (String(url).endsWith('/api/jobs/' + old) && !(opts && opts.method)) {
                await new Promise((r) => setTimeout(r, 6000));
            }
            return real(url, opts);
        };
    }""", old)
    page.wait_for_timeout(1500)  # a request of the following is under way
    page.evaluate("startSample()")
    _until(page, f"!!state.job && state.job.id !== '{old}'")
    new = page.evaluate("state.job.id")
    if deleted:
        _delete(server, old)
    _until(page, "!!state.job && state.job.status === 'done'", timeout_s=90)
    page.wait_for_timeout(6000)  # the following's answer (404) has come
    assert page.evaluate("state.job.id") == new
    assert page.url.endswith(f"/jobs/{new}")
    assert page.evaluate("state.gone") is False
    expect(page.locator("#gone-msg")).to_be_hidden()
    expect(page.locator("#correct-toggle")).to_be_enabled()
    assert page.evaluate("state.late") is None
    # what the page said of the old job's correction is not said of the new one
    assert "did not answer" not in page.locator("#correct-msg").inner_text()


def test_coarse_voxels_are_explained(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """A case of 1.2 x 1 x 1.5 mm voxels run by the watershed: segmented on the 1 mm
    grid, and the page says so next to the measurements."""
    _upload_case(server, page, tmp_path, "watershed")
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert job["result"]["info"]["resampled_to_mm"] == 1.0
    assert job["result"]["shape"] == list(SHAPE)
    from playwright.sync_api import expect

    note = page.locator("#m-grid")
    expect(note).to_be_visible()
    expect(note).to_contain_text("1.2 × 1 × 1.5 mm")
    expect(note).to_contain_text("1 mm resampling")


def test_a_diameter_of_no_lesion_is_not_a_link(server: ServerThread, page: Any,
                                               tmp_path: Path) -> None:
    """An outline without enhancing tumour: its diameter "none" is plain text (it was a
    link reached by Tab, said to show a slice, that did nothing); the T2/FLAIR one
    stays a link to its slice."""
    from playwright.sync_api import expect

    case = small_case()
    case.image[1] = np.minimum(case.image[1], 600)  # no T1ce bright enough: no ET
    _upload_case(server, page, tmp_path, "threshold", case=case)
    et, wt = page.locator("#diam-et"), page.locator("#diam-wt")
    expect(et).to_have_text("none")
    expect(page.get_by_role("link", name="none")).to_have_count(0)
    expect(et).to_have_accessible_description("")
    assert not page.evaluate("""(() => { const e = document.getElementById('diam-et');
        e.focus(); return document.activeElement === e; })()""")
    expect(wt).to_have_role("link")
    expect(wt).to_have_accessible_description(
        "shows this slice in the viewer, with the diameters drawn")


def test_the_uncertainty_map_is_laid_over_and_taken_off(server: ServerThread, page: Any,
                                                        tmp_path: Path) -> None:
    _upload_case(server, page, tmp_path, "threshold", uncertainty=True)
    _wait_overlay(page)
    assert _job(server, page.url.rsplit("/", 1)[1])["result"]["has_uncertainty"]
    layer = "state.nv.volumes.some((v) => v.__role === 'unc')"
    page.wait_for_selector("#unc-toggle:not([disabled])")
    assert not page.evaluate(layer)
    page.check("#unc-toggle")
    _until(page, layer)
    # in its own blue-violet colour map, not a ramp through the labels' red and yellow
    assert page.evaluate("state.nv.volumes.find((v) => v.__role === 'unc').colormap") == \
        "uncertainty"
    # the readout under the viewer names it at once, without a move of the crosshair
    _until(page, "document.getElementById('location').textContent.includes('uncertainty')")
    page.uncheck("#unc-toggle")
    _until(page, f"!({layer})")
    # the map written after the outline was shown (as a full-size case's is): the next
    # poll's job enables the toggle, though the image and outline need no reload
    _until(page, "!state.busy")
    page.evaluate("""async () => {
        window.doneJob = state.job;
        state.job = {...state.job, urls: {...state.job.urls}};
        delete state.job.urls.uncertainty;
        await loadViewer(state.job);
    }""")
    assert page.is_disabled("#unc-toggle")
    page.evaluate("async () => { state.job = window.doneJob; await loadViewer(state.job); }")
    assert page.is_enabled("#unc-toggle")


def test_a_scan_that_is_not_skull_stripped_is_flagged(server: ServerThread, page: Any,
                                                      tmp_path: Path) -> None:
    """Noise in the background and 4 mm voxels: 3.6 L of non-zero voxels, more than a
    brain. The outline is still shown, with one sentence saying why to doubt it."""
    from playwright.sync_api import expect

    from braintumor.cases import case_from_arrays

    base = small_case()
    noisy = base.image + np.random.default_rng(0).integers(1, 20, base.image.shape)
    case = case_from_arrays("Head001", noisy.astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))
    _upload_case(server, page, tmp_path, "threshold", case)
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert "skull-stripped" in job["result"]["warning"]
    note = page.locator("#m-warn")
    expect(note).to_be_visible()
    expect(note).to_contain_text("does not look skull-stripped (3.6 L")
    # the next, skull-stripped case clears it
    _upload_case(server, page, tmp_path / "b", "threshold")
    expect(page.locator("#m-warn")).to_be_hidden()


def test_a_patient_who_moved_is_aligned_and_told(server: ServerThread, page: Any,
                                                 tmp_path: Path) -> None:
    """The FLAIR moved 6 mm between series: with the box ticked the page aligns it and
    says so next to the result."""
    import math

    import SimpleITK as sitk
    from playwright.sync_api import expect

    from braintumor.phantom import make_case
    from braintumor.register import resample

    case = make_case(shape=(96, 96, 72), seed=4, spacing=(2.0, 2.0, 2.0), case_id="Move001")
    t = sitk.Euler3DTransform()
    t.SetCenter([95.0, 95.0, 71.0])
    t.SetRotation(0.0, 0.0, math.radians(4.0))
    t.SetTranslation([6.0, 0.0, 0.0])
    case.image[3] = resample(case.image[3], t, case.spacing)
    _upload_case(server, page, tmp_path, "threshold", case, align=True)
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert job["inputs"]["options"]["align"] is True
    expect(page.locator("#m-warn")).to_contain_text("the FLAIR was aligned to the T1")


def test_bias_correction_box(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Ticking the box sends the option with the job, and the result says it was done."""
    _upload_case(server, page, tmp_path, "threshold", bias=True)
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert job["inputs"]["options"]["bias_correct"] is True
    assert job["result"]["info"]["bias_corrected"] is True


def test_a_scan_without_t1_in_the_page(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Three files: the page takes them, says the watershed segmented the scan and why,
    and its T1 button is off."""
    from playwright.sync_api import expect

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    _choose_files(page, server, [str(p) for m, p in files.items() if m != "t1"], "threshold")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    _wait_overlay(page)
    # the method that ran, and why it is not the one asked for
    expect(page.locator("#m-method")).to_have_text("watershed (T1 missing; threshold asked for)")
    expect(page.locator("#m-warn")).to_contain_text("the scan has no T1 image")
    expect(page.locator("#mod-btns button[data-mod='t1']")).to_be_disabled()
    expect(page.locator("#mod-btns button[data-mod='t2']")).to_be_enabled()
    page.click("#mod-btns button[data-mod='t2']")  # the other images still show
    expect(page.locator("#mod-btns button[data-mod='t2']")).to_have_class("on")


def test_a_t2_on_a_grid_of_its_own_in_the_page(server: ServerThread, page: Any,
                                               tmp_path: Path) -> None:
    """A T2 of 3 mm slices: the viewer shows it on the T1's grid with the outline over
    it, and no error."""
    from playwright.sync_api import expect

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    t2 = np.asarray(nib.load(str(files["t2"])).dataobj, dtype=np.float32)
    z = t2.shape[2] // 2 * 2
    aff = AFFINE.copy()
    aff[:3, 2] *= 2
    aff[:3, 3] += AFFINE[:3, 2] * 0.5
    nib.save(nib.Nifti1Image(t2[:, :, :z].reshape(*t2.shape[:2], z // 2, 2).mean(3), aff),
             str(files["t2"]))
    _choose_files(page, server, [str(p) for p in files.values()], "threshold")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    _wait_overlay(page)
    with page.expect_response("**/images/t2*") as shown:
        page.click("#mod-btns button[data-mod='t2']")
    assert shown.value.status == 200
    page.wait_for_timeout(1500)
    expect(page.locator("#job-msg")).not_to_contain_text("could not show")
    assert sum(_label_pixels(page.locator("#gl").screenshot()).values()) > 50


def test_a_cancelled_job_says_so(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Cancel in the page while the job runs: the badge says cancelled, and neither the
    stage it had reached nor a part-filled progress bar is left on show."""
    from playwright.sync_api import expect

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    _choose_files(page, server, [str(p) for p in files.values()], "slow")
    page.click("#submit-btn")
    expect(page.locator("#job-stage")).to_have_text("waiting", timeout=60_000)
    expect(page.locator("#job-progress")).to_be_visible()
    page.focus("#cancel-btn")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-status='cancelled']", timeout=30_000)
    expect(page.locator("#job-status")).to_have_text("cancelled")
    # Cancel, disabled once the job stopped, hands the focus to the line saying so
    assert page.evaluate("document.activeElement.id") == "job-status-line"
    expect(page.locator("#job-stage")).to_have_text("")
    expect(page.locator("#job-progress")).to_be_hidden()
    expect(page.locator("#job-msg")).to_have_text("Cancelled while running.")
    expect(page.locator("#cancel-btn")).to_be_disabled()
    # ... and so does the page opened afresh at the job's address
    page.reload()
    page.wait_for_selector("body[data-status='cancelled']", timeout=30_000)
    expect(page.locator("#job-stage")).to_have_text("")
    expect(page.locator("#job-progress")).to_be_hidden()


def test_a_zipped_case_then_an_earlier_map_of_another_patient(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """A case's folder zipped is listed as a zip archive and runs as its files would;
    compared with a label map named for another case, the page shows the warning above
    the table, and labels the columns and dates as it knows them (a NIfTI case: none);
    a map named for this case brings no warning."""
    import zipfile

    from playwright.sync_api import expect

    from braintumor.io import strip_nifti_suffix

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    z = tmp_path / "Web000.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for path in files.values():
            zf.write(path, f"Web000/{path.name}")
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    page.set_input_files("#file-input", [str(z)])
    expect(page.locator("#file-list td").nth(1)).to_have_text("zip archive")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert job["inputs"]["case_id"] == "Web000"
    page.wait_for_selector("#followup:not([hidden])")
    lab = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(
        _fetch(server.url + job["urls"]["download"]))).dataobj)
    lab[(lab == 0) & (np.roll(lab, 1, axis=0) > 0)] = 2  # the tumour a voxel larger
    for name in ("Brats18_2013_11_1_seg.nii.gz", "Web000_seg.nii.gz"):
        earlier = tmp_path / name
        nib.save(nib.Nifti1Image(lab, AFFINE), str(earlier))
        page.set_input_files("#cmp-file", str(earlier))
        expect(page.locator("#cmp-msg")).to_contain_text(f"Earlier file: {name}")
        expect(page.locator("#cmp-table")).to_be_visible()
        assert page.eval_on_selector_all("#cmp-table thead th", "ths => ths.map(t => "
                                         "t.textContent)")[:2] == ["earlier file", "this scan"]
        expect(page.locator("#cmp-msg")).to_contain_text(
            f"Earlier file: {name} (date not known). This scan: Web000, date not known.")
        if name.startswith("Web000"):
            expect(page.locator("#cmp-warn")).to_be_hidden()
            continue
        warn = page.locator("#cmp-warn")
        expect(warn).to_be_visible()
        expect(warn).to_contain_text(f"Warning: Check that both are one patient's: the "
                                     f"earlier file, {name}, and this case, Web000, are "
                                     "named for different cases.")
        assert strip_nifti_suffix(name) in (warn.text_content() or "")
        # above the table, where it is read first
        assert page.evaluate("""() => document.getElementById('cmp-warn').getBoundingClientRect()
            .bottom <= document.getElementById('cmp-table').getBoundingClientRect().top""")
    # the scans' dates typed after the file was chosen: compared again, the time said
    page.fill("#cmp-before-date", "2024-01-15")
    page.fill("#cmp-after-date", "2024-04-14")
    page.dispatch_event("#cmp-after-date", "change")
    expect(page.locator("#cmp-msg")).to_contain_text(
        "(2024-01-15). This scan: Web000, 2024-04-14. 90 days apart.")


def _in_view(page: Any, selector: str) -> bool:
    """Whether the element is shown whole within the window as it is scrolled now."""
    return bool(page.eval_on_selector(selector, """(e) => {
        const r = e.getBoundingClientRect();
        return r.height > 0 && r.top >= -1 && r.bottom <= innerHeight + 1; }"""))


def test_a_job_shows_its_case_and_state_at_once_and_runs_once(
        server: ServerThread, page: Any, tmp_path: Path, browser: Any) -> None:
    """Segment pressed at the foot of a long form: the job's state comes into view at the
    top of the panel with the case's name, in the tab's title too, and Segment stays off
    while the job runs (a second press sent the case twice), until it ends. The job's
    link on a phone opens on the case and its state, not on the empty upload form, and
    an unknown job's sentence is the first thing seen."""
    from playwright.sync_api import expect

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    _choose_files(page, server, [str(p) for p in files.values()], "slow")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST"
            and r.url.endswith("/api/jobs") else None)
    page.locator("#submit-btn").scroll_into_view_if_needed()
    page.click("#submit-btn")
    expect(page.locator("#job-stage")).to_have_text("waiting", timeout=60_000)
    assert _in_view(page, "#job-status-line") and _in_view(page, "#cancel-btn")
    _until(page, "document.activeElement && document.activeElement.id === 'job-status-line'")
    expect(page.locator("#job-case")).to_have_text("Web000")
    assert page.title() == "Web000 · running · braintumor"
    expect(page.locator("#submit-btn")).to_be_disabled()
    page.click("#submit-btn", force=True)  # a second press sends nothing
    page.wait_for_timeout(300)
    assert len(posts) == 1, posts
    link = page.url

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True)
    try:
        pg = phone.new_page()
        pg.goto(link)
        pg.wait_for_selector("body[data-status='running']", timeout=30_000)
        assert _in_view(pg, "#job-case") and _in_view(pg, "#job-status-line")
        assert pg.text_content("#job-case") == "Web000"
        assert pg.title() == "Web000 · running · braintumor"
        # the empty upload form gives way to a link for another case
        assert pg.is_hidden("#start") and pg.is_visible("#start-again a[href='/']")
        pg.goto(server.url + "/jobs/nosuchjob0000")
        pg.wait_for_selector("#job-msg:has-text('This job is no longer on the server')",
                             timeout=30_000)
        assert _in_view(pg, "#job-msg")
        assert pg.is_hidden("#job-state") and pg.is_visible("#start")
        assert pg.title() == "No such job · braintumor"
    finally:
        phone.close()

    page.click("#cancel-btn")
    page.wait_for_selector("body[data-status='cancelled']", timeout=30_000)
    assert page.title() == "Web000 · cancelled · braintumor"
    expect(page.locator("#submit-btn")).to_be_enabled()  # the job ended: send again


def test_a_case_named_in_another_script_downloads_under_its_name(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Files named ``Müller_ü_<modality>.nii.gz``, sent by the browser itself: the case
    keeps its name, and the browser saves the label map and the report under it."""
    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    named = []
    for mod, path in files.items():
        named.append(path.rename(path.with_name(f"Müller_ü_{mod}.nii.gz")))
    _choose_files(page, server, [str(p) for p in named], "threshold")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    page.wait_for_selector("#dl-labels[href]")
    assert _job(server, page.url.rsplit("/", 1)[1])["inputs"]["case_id"] == "Müller_ü"
    for link, name in (("#dl-labels", "Müller_ü_braintumor.nii.gz"),
                       ("#dl-report-pdf", "Müller_ü_report.pdf")):
        with page.expect_download() as dl:
            page.click(link)
        assert dl.value.suggested_filename == name


def test_bad_upload_shows_one_sentence(server: ServerThread, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.set_viewport_size({"width": 390, "height": 844})  # Segment at the screen's foot
    page.goto(server.url + "/")
    page.wait_for_selector("#method option", state="attached")
    # a file of a kind the page does not take cannot run: Segment is off, the reason
    # beside it (it was on, and the server refused the upload)
    page.set_input_files("#file-input", [str(text)])
    page.wait_for_selector("#file-list td:has-text('not supported')")
    expect(page.locator("#submit-btn")).to_be_disabled()
    expect(page.locator("#submit-why")).to_have_text(re.compile(
        r"^Segment is off: notes\.txt is not a file this page takes"))
    # a file the page takes but the server finds unreadable: refused in one sentence
    bad = tmp_path / "notes.nii"
    bad.write_bytes(b"not an image at all" * 40)
    page.set_input_files("#file-input", [str(bad)])
    expect(page.locator("#submit-btn")).to_be_enabled()
    expect(page.locator("#submit-why")).to_have_text("")
    page.evaluate("""window.__focused = [];
        document.addEventListener('focusin', (e) => __focused.push(e.target.id))""")
    page.focus("#submit-btn")
    page.keyboard.press("Enter")
    page.wait_for_selector("#upload-err:has-text('notes')", timeout=30_000)
    msg = page.text_content("#upload-err")
    assert msg is not None and "not a readable NIfTI" in msg and "Traceback" not in msg
    # ... said at once (an alert, not the polite status of the upload's progress)
    assert page.get_attribute("#upload-err", "role") == "alert"
    assert page.text_content("#upload-msg") == ""
    # ... under the button, brought into view (it was below the screen's edge)
    page.wait_for_timeout(300)
    assert _in_view(page, "#upload-err")
    # Segment, off while the files went, did not drop the focus to the page: it went to
    # the upload's status, then to the sentence why it was refused
    _until(page, "document.activeElement.id === 'upload-err'")
    assert page.evaluate("__focused") == ["submit-btn", "upload-msg", "upload-err"]


def test_files_of_no_modality_are_not_sent(server: ServerThread, page: Any,
                                           tmp_path: Path) -> None:
    """Files whose names say no modality ("?" in the list) could be sent, and were refused
    after the whole upload, naming only the first: Segment is off, the sentence beside it
    naming every file still to be given one (and a modality chosen twice, or T1ce or
    FLAIR left out). Names that say it still fill the choices in."""
    from playwright.sync_api import expect

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    scans = []
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        scans.append(tmp_path / f"scan{i + 1}.nii.gz")
        shutil.copy(files[m], scans[-1])
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST"
            and r.url.endswith("/api/jobs") else None)
    _choose_files(page, server, [str(p) for p in scans], "threshold")
    assert page.eval_on_selector_all(".mod-select", "els => els.map(e => e.value)") == [""] * 4
    why = page.locator("#submit-why")
    expect(page.locator("#submit-btn")).to_be_disabled()
    expect(why).to_have_text("Segment is off: choose the modality of scan1.nii.gz, "
                             "scan2.nii.gz, scan3.nii.gz and scan4.nii.gz (T1, T1ce, T2 or "
                             "FLAIR).")
    page.evaluate("submitUpload()")
    for i, m in enumerate(("t1", "t1ce", "t2")):
        page.select_option(f".mod-select[data-name='scan{i + 1}.nii.gz']", m)
    expect(why).to_have_text(re.compile(r"^Segment is off: choose the modality of "
                                        r"scan4\.nii\.gz \("))
    expect(page.locator("#submit-btn")).to_be_disabled()
    page.select_option(".mod-select[data-name='scan4.nii.gz']", "t1")
    expect(why).to_have_text("Segment is off: scan1.nii.gz and scan4.nii.gz are both T1; "
                             "choose each modality once.")
    expect(page.locator("#submit-btn")).to_be_disabled()
    page.select_option(".mod-select[data-name='scan4.nii.gz']", "flair")
    expect(why).to_have_text("")
    expect(page.locator("#submit-btn")).to_be_enabled()
    page.wait_for_timeout(300)
    assert sent == []
    # three files named for what they are: guessed, and the FLAIR is found missing
    page.set_input_files("#file-input", [str(files[m]) for m in ("t1", "t1ce", "t2")])
    _until(page, "document.querySelectorAll('.mod-select').length === 3")
    assert sorted(page.eval_on_selector_all(".mod-select", "els => els.map(e => e.value)")) \
        == ["t1", "t1ce", "t2"]
    expect(why).to_have_text(re.compile(r"^Segment is off: no file is FLAIR; "))
    expect(page.locator("#submit-btn")).to_be_disabled()
    # ... and the four, guessed likewise, can be sent
    page.set_input_files("#file-input", [str(p) for p in files.values()])
    _until(page, "document.querySelectorAll('.mod-select').length === 4")
    expect(why).to_have_text("")
    expect(page.locator("#submit-btn")).to_be_enabled()


def test_a_case_over_the_upload_limit_is_not_sent(server: ServerThread, page: Any,
                                                  tmp_path: Path) -> None:
    """The page knows the files' size and the server's limit (/api/info): a case over it
    is refused in one sentence before anything is sent (it was sent whole, then
    refused). A lone NIfTI is labelled by what its header says it holds."""
    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST"
            and r.url.endswith("/api/jobs") else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#method option", state="attached")
    info = json.loads(_fetch(server.url + "/api/info"))
    assert page.evaluate("state.info.max_upload_bytes") == info["max_upload_bytes"]
    page.evaluate("state.info.max_upload_bytes = 20000")  # a server of a small limit
    total = sum(p.stat().st_size for p in files.values())
    assert total > 20000
    page.set_input_files("#file-input", [str(p) for p in files.values()])
    page.wait_for_selector(".mod-select")
    msg = page.text_content("#upload-err") or ""
    assert msg.startswith("The files come to ") and "upload limit of 20 KiB" in msg, msg
    assert page.is_disabled("#submit-btn")
    page.evaluate("submitUpload()")
    page.wait_for_timeout(300)
    assert sent == []
    # a lone 3D file is one modality, a 4D file of four volumes a whole case, and what
    # cannot be read is said neutrally
    page.evaluate(f"state.info.max_upload_bytes = {info['max_upload_bytes']}")
    stack = np.stack([np.asarray(nib.load(str(p)).dataobj) for p in files.values()], -1)
    four = tmp_path / "case4d.nii.gz"
    nib.save(nib.Nifti1Image(stack, AFFINE), str(four))
    plain = tmp_path / "case4d.nii"
    plain.write_bytes(gzip.decompress(four.read_bytes()))
    odd = tmp_path / "odd.nii.gz"
    odd.write_bytes(b"not a NIfTI at all" * 40)
    for path, label in ((files["flair"], "one 3D image (one modality; the case needs all "
                         "four)"), (four, "4D (all four)"), (plain, "4D (all four)"),
                        (odd, "NIfTI: a 4D case or one modality")):
        page.set_input_files("#file-input", [str(path)])
        page.wait_for_selector(f"#file-list td:has-text('{path.name}')")
        assert page.text_content("#file-list tbody td:nth-child(2)") == label, path
        assert page.is_enabled("#submit-btn") and page.text_content("#upload-err") == ""


def test_a_4d_file_s_channel_order_is_chosen_in_the_form(server: ServerThread, page: Any,
                                                        tmp_path: Path) -> None:
    """A lone 4D file: the form asks the order of its channels (the Decathlon's unless
    told), a doubt about the order taken is said on its own at the head of the
    measurements with advice the page can follow, the order chosen is sent and followed;
    Segment is off for a channel order that names a modality twice and for the same
    files sent again with the same options, the reason beside it."""
    from playwright.sync_api import expect

    from braintumor.phantom import make_case

    img = make_case((48, 48, 40), seed=1).image
    path = tmp_path / "brats_order.nii.gz"  # T1, T1ce, T2, FLAIR: BraTS's order
    nib.save(nib.Nifti1Image(np.stack(list(img), -1).astype(np.float32), AFFINE), str(path))
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    assert page.is_hidden("#channels-box")
    page.set_input_files("#file-input", [str(path)])
    page.wait_for_selector("#channels-box:not([hidden])")
    expect(page.locator("#channels")).to_have_accessible_name(
        re.compile("^Channel order of the 4D file"))
    submit, why = page.locator("#submit-btn"), page.locator("#submit-why")
    page.select_option("#channels", "custom")
    expect(page.locator(".channel-select").nth(0)).to_have_accessible_name("Channel 1")
    page.locator(".channel-select").nth(1).select_option("flair")  # FLAIR twice
    expect(submit).to_be_disabled()
    expect(why).to_contain_text("name each of T1, T1ce, T2 and FLAIR once")
    page.select_option("#channels", "")  # the Decathlon's order, checked by the server
    expect(submit).to_be_enabled()
    expect(why).to_have_text("")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    first = page.url.rsplit("/", 1)[1]
    channels = page.locator("#m-channels")
    expect(channels).to_be_visible()
    expect(channels).to_contain_text("brats_order.nii.gz: its channels do not look like")
    expect(channels).to_contain_text("the upload form's Channel order of the 4D file")
    assert "--channels" not in (channels.text_content() or "")
    assert "channels do not look like" not in (page.text_content("#m-warn") or "")
    # an alert: drawn again with the job (a focus, a poll), it is not said again
    page.evaluate("""() => { window.channelWrites = 0;
        new MutationObserver(() => { window.channelWrites += 1; })
            .observe(document.getElementById('m-channels'),
                     {childList: true, characterData: true, subtree: true}); }""")
    for _ in range(3):
        page.evaluate("render(state.job)")
    assert page.evaluate("window.channelWrites") == 0
    # the same file with the same options again would be the same job
    expect(submit).to_be_disabled()
    expect(why).to_contain_text("these files were sent with these options")
    page.select_option("#channels", "t1,t1ce,t2,flair")  # an option changed: on again
    expect(submit).to_be_enabled()
    page.click("#submit-btn")
    _until(page, f"state.job && state.job.id !== '{first}' && state.job.status === 'done'",
           90)
    job = _job(server, page.url.rsplit("/", 1)[1])
    assert job["inputs"]["channels"] == ["t1", "t1ce", "t2", "flair"]
    expect(channels).to_be_hidden()


def test_api_docs_page_renders_offline(server: ServerThread, page: Any) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/docs")
    page.wait_for_selector("#ops .op >> nth=10")
    assert page.locator("#ops .op").count() >= 15
    assert "/api/jobs/{job_id}/corrections" in (page.text_content("#ops") or "")
    # the example's address is this server's, whatever its port
    assert page.text_content("#origin") == server.url
    # a main landmark; each operation's heading a level under the page's h1; every
    # schema block (which scrolls sideways when wide) reachable by the keyboard, named
    assert page.locator("main#doc #ops").count() == 1
    assert page.locator("#ops h3").count() == 0
    assert page.locator("#ops .op h2").count() == page.locator("#ops .op").count()
    blocks = page.eval_on_selector_all(
        "#ops pre", "ps => ps.map(p => [p.tabIndex, p.getAttribute('aria-label')])")
    assert blocks and all(t == 0 and label for t, label in blocks), blocks
    # the verbs' colours readable on white (4.5:1, WCAG AA for text of this size)
    for verb in ("get", "post"):
        rgb = page.eval_on_selector(f"#ops .verb.{verb}", "e => getComputedStyle(e).color")
        assert _contrast(rgb, "rgb(255, 255, 255)") >= 4.5, (verb, rgb)
    # nothing but this server was asked for anything
    assert all(u.startswith(server.url) for u in requests), requests


@pytest.mark.parametrize("packed", ["zip", "loose files"])
def test_dicom_series_are_assigned_in_the_page(server: ServerThread, page: Any,
                                               tmp_path: Path, packed: str) -> None:
    pytest.importorskip("pydicom")
    import zipfile

    from braintumor.io import dcm2niix_executable

    if dcm2niix_executable() is None:
        pytest.skip("dcm2niix is not installed")
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    sent = [str(z)]
    if packed == "loose files":  # the study's folder of .dcm files, dropped as it is
        with zipfile.ZipFile(z) as zf:
            zf.extractall(tmp_path / "study")
        sent = [str(f) for f in sorted((tmp_path / "study").rglob("*.dcm"))]
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    page.set_input_files("#file-input", sent)
    page.click("#submit-btn")
    page.wait_for_selector("#series-box:not([hidden]) .series-select >> nth=3", timeout=60_000)
    guesses = page.eval_on_selector_all(".series-select", "els => els.map(e => e.value)")
    assert sorted(guesses) == ["flair", "t1", "t1ce", "t2"]
    assert "Check the modality of each DICOM series" in page.inner_text("#placeholder")
    # a scanner's long names and full-size series still fit the side panel
    fits = """() => {
        const box = document.getElementById('series-box');
        return box.scrollWidth <= box.clientWidth;
    }"""
    assert page.evaluate(fits)
    page.evaluate("""() => renderSeries({...state.job, id: 'long', inputs: {...state.job.inputs,
        series: state.job.inputs.series.map((s) => ({...s, shape: [240, 240, 155],
            description: 't1_mprage_tra_p2_iso_post_contrast'}))}})""")
    assert "t1_mprage_tra_p2_iso_post_contrast" in page.inner_text("#series-table")
    assert page.evaluate(fits)
    page.evaluate("() => renderSeries(state.job)")
    page.click("#series-btn")
    page.wait_for_selector("body[data-status='done']", timeout=60_000)
    _wait_overlay(page)
    assert sum(_label_pixels(page.locator("#gl").screenshot()).values()) > 20


def _cd_export(tmp_path: Path, name: str) -> Path:
    """A small case's DICOM study as a CD or PACS export holds it: every series' files in
    one folder ``tmp_path/name``, named IM00000 ... without an extension."""
    import zipfile

    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "unzipped")
    folder = tmp_path / name
    folder.mkdir()
    for i, f in enumerate(sorted((tmp_path / "unzipped").rglob("*.dcm"))):
        f.rename(folder / f"IM{i:05d}")
    return folder


def test_segment_is_off_while_chosen_files_are_looked_at(
        server: ServerThread, page: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of no known extension have their headers read before the list is shown;
    meanwhile Segment was left as the files chosen before had it (on, with nothing
    listed), and an option changed meanwhile turned it on: it is off until the new
    files are judged."""
    from PIL import Image
    from playwright.sync_api import expect

    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / "slice.png")
    (tmp_path / "IM00000").write_bytes(b"not DICOM either" * 20)
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.set_input_files("#file-input", [str(tmp_path / "slice.png")])
    expect(page.locator("#submit-btn")).to_be_enabled()
    # a header read that takes its time, as a large file's on a slow disk
    page.evaluate("""() => {
        const read = sniffDicom;
        window.sniffDicom = (f) => new Promise((r) => setTimeout(() => r(read(f)), 1500));
    }""")
    page.set_input_files("#file-input", [str(tmp_path / "IM00000")])
    assert page.evaluate("document.getElementById('submit-btn').disabled")
    expect(page.locator("#submit-why")).to_contain_text("IM00000 is not a file this page "
                                                        "takes", timeout=10000)
    # three modalities and a label map, their modalities still being guessed: an option
    # changed meanwhile judged them as four images (Segment on, the label map sent as an
    # image); it leaves them to be judged once looked at
    import time

    import braintumor.web.app as web_app

    files = write_case_files(small_case(), tmp_path / "case", with_label=True)
    guess = web_app.detect_modality

    def slow(name: str) -> str | None:  # the server slow to answer, as on a busy day
        time.sleep(0.5)
        return guess(name)

    monkeypatch.setattr(web_app, "detect_modality", slow)
    page.set_input_files("#file-input", [str(p) for m, p in files.items() if m != "t1"])
    page.check("#want-unc")
    assert page.evaluate("document.getElementById('submit-btn').disabled")
    _until(page, "document.querySelectorAll('.mod-select').length === 3")
    expect(page.locator("#submit-btn")).to_be_enabled()


def test_dicom_files_named_without_an_extension_are_taken(server: ServerThread, page: Any,
                                                          tmp_path: Path) -> None:
    """A CD's or PACS export's DICOM files have names of no extension (IM00000 ...): the
    page knows them by their header, as the server does (they were "not supported" and
    Segment was off), lists them as DICOM, and sends them as a study to be checked. A
    dropped folder brings its files, its subfolders' too."""
    pytest.importorskip("pydicom")

    from playwright.sync_api import expect

    from braintumor.io import dcm2niix_executable

    if dcm2niix_executable() is None:
        pytest.skip("dcm2niix is not installed")
    export = _cd_export(tmp_path, "export")
    sent = sorted(str(f) for f in export.iterdir())
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    page.set_input_files("#file-input", sent)
    page.wait_for_selector("#file-list:not([hidden])")
    kinds = page.eval_on_selector_all("#file-list tbody td:nth-child(2)",
                                      "els => els.map(e => e.textContent)")
    assert kinds == ["DICOM (series or slices)"] * len(sent), set(kinds)
    expect(page.locator("#submit-why")).to_have_text("")
    expect(page.locator("#submit-btn")).to_be_enabled()
    # a data set written without the preamble is DICOM too; text is not
    assert page.evaluate("""async () => {
        const bare = new Uint8Array([2, 0, 0, 0, 85, 76, 4, 0, 0, 0, 0, 0]);
        const kinds = [];
        for (const f of [new File([bare], 'I1'), new File(['not an image'], 'README')]) {
            await sniffDicom(f);
            kinds.push(kindOf(f));
        }
        return kinds; }""") == ["image", "other"]
    # the export's folder dropped, the files in a subfolder beside a hidden file: the
    # files found in it (a drop read only the files dropped themselves)
    page.evaluate("""() => {
        const given = [...document.getElementById('file-input').files];
        const file = (f) => ({ isFile: true, isDirectory: false, name: f.name,
                               file: (ok) => ok(f) });
        const folder = (name, entries) => ({ isFile: false, isDirectory: true, name,
            createReader: () => {
                const left = [entries.slice(0, 50), entries.slice(50), []];
                return { readEntries: (ok) => ok(left.shift()) };
            } });
        const hidden = new File(['x'], '.DS_Store');
        const drop = new Event('drop', { bubbles: true, cancelable: true });
        Object.defineProperty(drop, 'dataTransfer', { value: { files: [],
            items: [{ webkitGetAsEntry: () => folder('CD', [file(hidden),
                folder('DICOM', given.map(file))]) }] } });
        document.getElementById('file-list').hidden = true;
        document.getElementById('drop').dispatchEvent(drop); }""")
    page.wait_for_selector("#file-list:not([hidden])")
    kinds = page.eval_on_selector_all("#file-list tbody td:nth-child(2)",
                                      "els => els.map(e => e.textContent)")
    assert kinds == ["DICOM (series or slices)"] * len(sent), set(kinds)
    expect(page.locator("#submit-btn")).to_be_enabled()
    # sent as a study whose series are checked before the job runs, as .dcm files are
    page.evaluate("""() => {
        const append = FormData.prototype.append;
        window.__fields = [];
        FormData.prototype.append = function (k, ...v) {
            __fields.push(k);
            return append.call(this, k, ...v);
        }; }""")
    page.click("#submit-btn")
    assert "confirm_series" in page.evaluate("__fields")
    page.wait_for_selector("#series-box:not([hidden]) .series-select >> nth=3", timeout=60_000)
    guesses = page.eval_on_selector_all(".series-select", "els => els.map(e => e.value)")
    assert sorted(guesses) == ["flair", "t1", "t1ce", "t2"]


#: a folder dropped on the page, of the files the file input holds (``given``), read by
#: the page's walk of ``webkitGetAsEntry()`` entries; each file is handed over after
#: ``delay`` ms (a CD's files are many, and slow to read)
_DROP_FOLDER = """([folderName, subName, delay]) => {
    const given = [...document.getElementById('file-input').files];
    const file = (f) => ({ isFile: true, isDirectory: false, name: f.name,
                           file: (ok) => setTimeout(() => ok(f), delay) });
    const folder = (name, entries) => ({ isFile: false, isDirectory: true, name,
        createReader: () => {
            const left = [entries, []];
            return { readEntries: (ok) => ok(left.shift()) };
        } });
    const drop = new Event('drop', { bubbles: true, cancelable: true });
    Object.defineProperty(drop, 'dataTransfer', { value: { files: [],
        items: [{ webkitGetAsEntry: () => folder(folderName,
                                                 [folder(subName, given.map(file))]) }] } });
    document.getElementById('file-list').hidden = true;
    document.getElementById('drop').dispatchEvent(drop); }"""


def test_a_dropped_cd_folder_leaves_out_what_is_not_dicom(server: ServerThread, page: Any,
                                                          tmp_path: Path) -> None:
    """A CD's study folder holds, beside its DICOM files (IM00000 ...), JPEG previews and
    a viewer's files (Thumbs.db, desktop.ini, README.TXT, autorun.inf, index.htm), which
    turned Segment off ("Thumbs.db is not a file this page takes; choose other files")
    though a folder dropped whole cannot be chosen otherwise: they are left out, said in
    one line. Files picked one by one are still told apart: a text file among them is
    named as not taken."""
    pytest.importorskip("pydicom")

    from PIL import Image
    from playwright.sync_api import expect

    cd = _cd_export(tmp_path, "CD")
    dicoms = sorted(cd.iterdir())
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(cd / "preview.jpg")
    extra = {"Thumbs.db": b"\xd0\xcf\x11\xe0" + bytes(60), "desktop.ini": b"[.ShellClassInfo]",
             "README.TXT": b"Open the viewer", "autorun.inf": b"[autorun]",
             "index.htm": b"<html></html>"}
    for name, raw in extra.items():
        (cd / name).write_bytes(raw)
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    page.set_input_files("#file-input", sorted(str(f) for f in cd.iterdir()))
    page.wait_for_selector("#file-list:not([hidden])")
    expect(page.locator("#submit-btn")).to_be_disabled()
    expect(page.locator("#submit-why")).to_have_text(re.compile(
        r"^Segment is off: \S+ is not a file this page takes"))
    expect(page.locator("#files-note")).to_have_text("")
    page.evaluate(_DROP_FOLDER, ["CD", "DICOM", 0])
    page.wait_for_selector("#file-list:not([hidden])")
    kinds = page.eval_on_selector_all("#file-list tbody td:nth-child(2)",
                                      "els => els.map(e => e.textContent)")
    assert kinds == ["DICOM (series or slices)"] * len(dicoms), set(kinds)
    expect(page.locator("#files-note")).to_have_text(
        "6 files of the folder that are not DICOM were left out: autorun.inf, desktop.ini, "
        "index.htm, preview.jpg and 2 more.")
    expect(page.locator("#submit-why")).to_have_text("")
    expect(page.locator("#submit-btn")).to_be_enabled()
    # a folder of pictures (not DICOM) leaves out the files a system adds, and only them
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in (1, 2):
        Image.fromarray(np.full((16, 16), 90, np.uint8)).save(pics / f"pat_{i}.png")
    (pics / "Thumbs.db").write_bytes(extra["Thumbs.db"])
    page.set_input_files("#file-input", sorted(str(f) for f in pics.iterdir()))
    page.evaluate(_DROP_FOLDER, ["pics", "slices", 0])
    page.wait_for_selector("#file-list:not([hidden])")
    expect(page.locator("#files-note")).to_have_text(
        "1 file of the folder that is not a scan was left out: Thumbs.db.")
    assert page.evaluate("state.files.map((f) => f.name)") == ["pat_1.png", "pat_2.png"]
    # files picked are as they were picked: the note goes
    page.set_input_files("#file-input", [str(pics / "pat_1.png")])
    _until(page, "state.files.length === 1 && "
                 "document.querySelectorAll('#file-list tbody tr').length === 1")
    expect(page.locator("#files-note")).to_have_text("")


def test_files_chosen_while_a_folder_is_read_are_kept(server: ServerThread, page: Any,
                                                      tmp_path: Path) -> None:
    """A folder dropped is read file by file; files chosen in the picker meanwhile were
    replaced by the folder's once it had been read (the last read to end won, not the
    user's last choice): the later choice stands, the folder's files are passed over."""
    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    others = tmp_path / "other"
    others.mkdir()
    for m in ("t1ce", "flair"):
        shutil.copy(files[m], others / f"other_{m}.nii.gz")
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.set_input_files("#file-input", sorted(str(f) for f in others.iterdir()))
    _until(page, "document.querySelectorAll('.mod-select').length === 2")
    page.evaluate(_DROP_FOLDER, ["slow", "folder", 700])
    page.set_input_files("#file-input", [str(p) for p in files.values()])
    _until(page, "document.querySelectorAll('.mod-select').length === 4")
    page.wait_for_timeout(2500)  # the folder's two files read by now (700 ms each)
    assert sorted(page.evaluate("state.files.map((f) => f.name)")) == sorted(
        p.name for p in files.values())
    assert page.evaluate("document.querySelectorAll('.mod-select').length") == 4
    # a second drop made while the first is read wins in the same way
    page.evaluate(_DROP_FOLDER, ["first", "folder", 700])  # the case's four: 2.8 s
    page.evaluate("""() => { const dt = new DataTransfer();  // no change event
        dt.items.add(new File(['x'], 'second_flair.nii.gz'));
        document.getElementById('file-input').files = dt.files; }""")
    page.evaluate(_DROP_FOLDER, ["second", "folder", 0])
    page.wait_for_timeout(3500)
    assert page.evaluate("state.files.map((f) => f.name)") == ["second_flair.nii.gz"]


def test_a_brats_folder_s_label_map_is_the_reference(server: ServerThread, page: Any,
                                                      tmp_path: Path) -> None:
    """A BraTS case's folder holds its four modalities and its label map
    (<case>_seg.nii.gz): the five files chosen or dropped left Segment off for good
    ("choose the modality of Web000_seg.nii.gz"), while a zip of the folder was taken
    with the label map as the reference. The label map is the reference, listed so and
    sent so, unless one is chosen on its own. More modality files than a case has, or
    NIfTI files among DICOM files, say so rather than ask for a modality."""
    pytest.importorskip("pydicom")
    import zipfile

    from playwright.sync_api import expect

    files = write_case_files(small_case(), tmp_path / "case", with_label=True)
    why = page.locator("#submit-why")
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    page.set_input_files("#file-input", [str(p) for p in files.values()])
    _until(page, "document.querySelectorAll('.mod-select').length === 4")
    rows = page.eval_on_selector_all(
        "#file-list tbody tr", "els => els.map(e => e.children[0].textContent.split(' ')[0]"
        " + ' ' + (e.querySelector('select') ? e.querySelector('select').value"
        " : e.children[1].textContent))")
    assert rows == ["Web000_flair.nii.gz flair", "Web000_seg.nii.gz reference label map",
                    "Web000_t1.nii.gz t1", "Web000_t1ce.nii.gz t1ce", "Web000_t2.nii.gz t2"]
    expect(why).to_have_text("")
    expect(page.locator("#submit-btn")).to_be_enabled()
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    job = _job(server, page.evaluate("state.job.id"))
    assert job["inputs"]["reference_name"] == "Web000_seg.nii.gz"
    assert sorted(job["inputs"]["file_modalities"]) == sorted(
        p.name for m, p in files.items() if m != "seg")
    assert "dice" in json.dumps(job["result"]).lower()
    # a reference chosen on its own is sent instead; the list says the folder's is not
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.set_input_files("#file-input", [str(p) for p in files.values()])
    _until(page, "document.querySelectorAll('.mod-select').length === 4")
    other_ref = tmp_path / "ref.nii.gz"
    shutil.copy(files["seg"], other_ref)
    page.set_input_files("#ref-input", [str(other_ref)])
    expect(page.locator("#file-list .label-map")).to_have_text(
        "label map (not sent: the reference label map chosen below is)")
    page.evaluate("""() => {
        const append = FormData.prototype.append;
        window.__fields = [];
        FormData.prototype.append = function (k, v, ...rest) {
            __fields.push(k + '=' + (v && v.name ? v.name : v));
            return append.call(this, k, v, ...rest);
        }; }""")
    page.route("**/api/jobs", lambda route: route.abort())
    page.click("#submit-btn")
    sent = page.evaluate("__fields")
    assert "reference=ref.nii.gz" in sent and "files=Web000_seg.nii.gz" not in sent, sent
    assert sum(f.startswith("files=") for f in sent) == 4, sent
    page.unroute("**/api/jobs")
    # five modality files: more than a case has
    extra = tmp_path / "more" / "Web000_t1_again.nii.gz"
    extra.parent.mkdir()
    shutil.copy(files["t1"], extra)
    page.set_input_files("#file-input", [str(p) for p in files.values()] + [str(extra)])
    _until(page, "document.querySelectorAll('.mod-select').length === 5")
    expect(why).to_have_text(re.compile(r"^Segment is off: 5 NIfTI images are chosen; send "
                                        r"four NIfTI files, one per modality "))
    expect(page.locator("#submit-btn")).to_be_disabled()
    # NIfTI files among DICOM files
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "unzipped")
    dcm = sorted(str(f) for f in (tmp_path / "unzipped").rglob("*.dcm"))[:2]
    page.set_input_files("#file-input", [str(files["t1ce"]), str(files["flair"]), *dcm])
    _until(page, "document.querySelectorAll('#file-list tbody tr').length === 4")
    expect(why).to_have_text(re.compile(r"^Segment is off: the files mix kinds \(DICOM and "
                                        r"NIfTI\); send four NIfTI files"))
    expect(page.locator("#submit-btn")).to_be_disabled()


def test_2d_slice_stack_with_pixel_size(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """The numbered slices of one patient, uploaded together: one job, a slider through
    the slices, areas in mm^2 from the pixel size typed in, every mask in one zip."""
    from PIL import Image

    info = json.loads(_fetch(server.url + "/api/info"))
    if not info["image2d_available"]:
        pytest.skip("this build has no 2D model")
    yy, xx = np.mgrid[:96, :96]
    head = ((yy - 48) / 38) ** 2 + ((xx - 48) / 32) ** 2 < 1
    paths = []
    for num in (3, 1, 2):
        a = np.zeros((96, 96, 3), np.uint8)
        a[head] = (90, 80, 100)
        a[((yy - 40) ** 2 + (xx - 58) ** 2) < (4 * num) ** 2, 1] = 220
        paths.append(tmp_path / f"pat_{num}.png")
        Image.fromarray(a).save(paths[-1])
    page.goto(server.url + "/")
    page.wait_for_selector("#method option", state="attached")
    page.set_input_files("#file-input", [str(p) for p in paths])
    page.fill("#pixel-mm", "0.8")
    page.click("#submit-btn")
    page.wait_for_selector("body[data-status='done']", timeout=90_000)
    from playwright.sync_api import expect  # assertions that wait for the page to update

    page.wait_for_selector("#slice2d-nav:not([hidden])")
    expect(page.locator("#slice2d")).to_have_attribute("max", "2")
    step = "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }"
    page.eval_on_selector("#slice2d", step, "0")
    expect(page.locator("#slice2d-name")).to_contain_text("pat_1.png")
    # the slider is named "Slice" whatever slice it is on, which its value's text says;
    # the picture's text says which slice and what is drawn on it
    expect(page.locator("#slice2d")).to_have_accessible_name("Slice")
    expect(page.locator("#slice2d")).to_have_attribute("aria-valuetext",
                                                       "slice 1 of 3, pat_1.png")
    expect(page.locator("#img2d")).to_have_attribute(
        "alt", "Slice 1 of 3, pat_1.png, with the outline")
    expect(page.locator("#img2d")).to_have_attribute(
        "src", re.compile(r"/image2d/slice/0/overlay\.png$"))
    # the outline can be taken off to see the picture under it (its FLAIR, grey), and put
    # back, on the slice shown
    assert page.eval_on_selector("#show2d option[value='reference']", "o => o.hidden")
    page.select_option("#show2d", "input")
    expect(page.locator("#img2d")).to_have_attribute(
        "src", re.compile(r"/image2d/slice/0/input\.png$"))
    expect(page.locator("#img2d")).to_have_attribute(
        "alt", "Slice 1 of 3, pat_1.png, without the outline")
    page.eval_on_selector("#slice2d", step, "2")
    expect(page.locator("#img2d")).to_have_attribute(
        "src", re.compile(r"/image2d/slice/2/input\.png$"))
    page.select_option("#show2d", "overlay")
    expect(page.locator("#img2d")).to_have_attribute(
        "src", re.compile(r"/image2d/slice/2/overlay\.png$"))
    expect(page.locator("#slice2d-name")).to_contain_text("pat_3.png")
    expect(page.locator("#slice2d")).to_have_attribute("aria-valuetext",
                                                       "slice 3 of 3, pat_3.png")
    expect(page.locator("#slice2d")).to_have_accessible_name("Slice")
    table = page.locator("#vol-table")
    expect(table).to_contain_text("mm²")
    expect(table).to_contain_text("of 3")
    expect(table).not_to_contain_text("unknown")
    # the largest lesion's diameters, as the result gives them
    d = _job(server, page.url.rsplit("/", 1)[1])["result"]["diameters"]
    expect(page.locator("#diam2d")).to_have_text(d["text"] if d else "none")
    page.wait_for_function("document.getElementById('img2d').naturalWidth === 96")
    expect(page.locator("#dl-labels")).to_have_attribute(
        "href", re.compile(r"/image2d/masks\.zip$"))
    expect(page.locator("#dl-report-pdf")).to_have_attribute("href", re.compile(r"/report\.pdf$"))
    # the outline is in the picture: no 3D legend or correction tools beside it
    assert page.is_hidden("#legend") and page.is_hidden("#correct-tools")
    # ... nor a count of corrections, which a picture is not offered
    assert page.is_hidden("#m-corr-line")
    assert "Corrections" not in (page.inner_text("#measure") or "")
    assert "disabled" not in (page.get_attribute("#dl-report-html", "class") or "")


def _axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (the engine that the
    axe-playwright-python package ships, run in the page)."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    return list(axe.Axe().run(page).response["violations"])


def test_accessibility_axe(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """axe-core on the empty page, on a finished sample job (metrics and a follow-up
    comparison shown) and on its printable report: no finding of moderate impact or
    worse, and none of the two rules the page once broke (``landmark-unique``, and
    ``empty-table-header``, whose impact axe calls minor)."""
    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    found = [("start", v) for v in _axe_violations(page)]
    page.select_option("#method", "threshold")
    page.click("#sample-btn")
    page.wait_for_selector("body[data-status='done']", timeout=120_000)
    _wait_overlay(page, timeout_ms=120_000)
    page.wait_for_selector("#metrics-box:not([hidden])")
    job = _job(server, page.url.rsplit("/", 1)[1])
    earlier = tmp_path / "visit1_seg.nii.gz"
    earlier.write_bytes(_fetch(server.url + job["urls"]["download"]))
    page.set_input_files("#cmp-file", str(earlier))
    page.wait_for_selector("#cmp-table:not([hidden])", timeout=30_000)
    found += [("done", v) for v in _axe_violations(page)]
    page.goto(server.url + job["urls"]["report_html"])
    found += [("report", v) for v in _axe_violations(page)]
    bad = [(when, v["id"], v["impact"], [n["target"] for n in v["nodes"]])
           for when, v in found
           if v["id"] in ("landmark-unique", "empty-table-header")
           or v["impact"] in ("moderate", "serious", "critical")]
    assert not bad, bad


def test_on_a_phone_the_result_comes_into_view_when_the_job_ends(
        server: ServerThread, browser: Any, tmp_path: Path) -> None:
    """In one column the viewer lies below the upload form: when the job started from
    the page is done, the viewer is scrolled into view, not left below the fold."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    try:
        _upload_case(server, page, tmp_path, "threshold")
        _wait_overlay(page)
        _until(page, "Math.abs(document.getElementById('centre')"
                     ".getBoundingClientRect().top) < 2")
    finally:
        ctx.close()


def test_the_method_menu_s_words_fit_the_side_panel(server: ServerThread, page: Any) -> None:
    """Each method's name in full in the Method menu of the 290-pixel side panel (the
    hybrid's was cut off at "most accurate" on a 1366 x 768 screen)."""
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(server.url + "/")
    page.wait_for_selector("#method option", state="attached")
    widths = page.evaluate("""() => {
        const sel = document.getElementById('method');
        const free = document.createElement('select');  // as wide as its words
        free.style.maxWidth = 'none';
        free.style.width = 'max-content';
        sel.after(free);
        const out = state.info.methods.map((m) => {
            free.replaceChildren(new Option(m.label));
            return [m.label, free.offsetWidth, sel.parentElement.clientWidth];
        });
        free.remove();
        return out; }""")
    assert any(label.startswith("Hybrid") for label, _, _ in widths), widths
    for label, width, room in widths:
        assert width <= room, (label, width, room)


def test_the_empty_page_names_its_parts_and_keeps_idle_controls_out_of_reach(
        server: ServerThread, page: Any) -> None:
    """Before a case: the viewer's controls are disabled (out of the tab order, they did
    nothing), the upload form and the viewer are landmarks named by their headings, the
    drop zone is named by its short text (the list of file kinds is its description),
    the seed radios and the diameter links say what they are; the upload's status is
    rewritten every tenth of the way, not at every progress event; in forced colours the
    legend keeps its colours, the pressed modality stands out and the correction frame
    shows only while correction is on."""
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    idle = page.eval_on_selector_all(
        "#toolbar button, #toolbar select, #toolbar input, #legend input, #correct-tools input,"
        " #correct-tools select, #correct-tools button",
        "els => els.filter(e => e.checkVisibility() && !e.disabled).map(e => e.id || e.value)")
    assert idle == [], idle
    for sel, name in (("#start", "New case"), ("#centre", "Viewer")):
        expect(page.locator(sel)).to_have_role("region")
        expect(page.locator(sel)).to_have_accessible_name(name)
    drop = page.locator("#drop")
    expect(drop).to_have_accessible_name("Drop MRI files here")
    expect(drop).to_have_accessible_description(re.compile(r"^four NIfTI files .* one patient$"))
    expect(page.locator("[role=radiogroup]:has(input[name=seed-kind])")).to_have_accessible_name(
        "Seed kind")
    for link in ("#diam-et", "#diam-wt"):
        expect(page.locator(link)).to_have_accessible_description(
            "shows this slice in the viewer, with the diameters drawn")
    gl = page.locator("#gl")
    expect(gl).to_have_role("application")
    assert gl.get_attribute("aria-roledescription") == "MRI viewer"
    label = gl.get_attribute("aria-label") or ""
    assert "Page Up" in label and "Ctrl" not in label, label
    assert page.get_attribute("#location-live", "role") == "status"
    # small volumes read as the reports give them (report.ml_text)
    from braintumor.report import ml_text

    for v in (0.0, 0.0004, 0.004, 0.0449, 0.1, 45.556):
        assert page.evaluate(f"mlText({v})") == ml_text(v), v

    # the upload's progress: a polite status rewritten each tenth of the way
    page.evaluate("""window.__said = 0; state.uploadStep = 0;
        new MutationObserver(() => __said++).observe(document.getElementById('upload-msg'),
                                                     {childList: true, characterData: true,
                                                      subtree: true})""")
    page.evaluate("""() => { for (let k = 0; k <= 1000; k += 7) uploadProgress(k, 1000);
                             uploadProgress(1000, 1000); }""")
    _until(page, "__said > 0")
    assert page.evaluate("__said") <= 10, page.evaluate("__said")
    assert page.text_content("#upload-msg") == "Uploading… 100 %"

    page.emulate_media(forced_colors="active")
    assert page.evaluate("matchMedia('(forced-colors: active)').matches")
    style = "(e, p) => getComputedStyle(e)[p]"
    for sw, rgb in (("ncr", "rgb(213, 94, 0)"), ("ed", "rgb(86, 180, 233)"),
                    ("et", "rgb(240, 228, 66)")):
        assert page.eval_on_selector(f".sw.{sw}", style, "backgroundColor") == rgb, sw
    assert "gradient" in page.eval_on_selector(".sw.unc", style, "backgroundImage")
    on = page.eval_on_selector("#mod-btns button.on", style, "backgroundColor")
    off = page.eval_on_selector("#mod-btns button:not(.on)", style, "backgroundColor")
    assert on != off, (on, off)
    assert page.eval_on_selector("#mod-btns button.on", style, "textDecorationLine") == "underline"
    assert page.eval_on_selector("#correct-tools", style, "outlineStyle") == "none"
    page.evaluate("document.getElementById('correct-tools').classList.add('active')")
    assert page.eval_on_selector("#correct-tools", style, "outlineStyle") == "solid"


def test_the_viewer_from_the_keyboard(server: ServerThread, page: Any, tmp_path: Path) -> None:
    """With the viewer focused (the mouse over it too, where NiiVue reads keys): Page Up
    and Page Down move the crosshair a slice, with no browser default; H, J, K, L move it
    as the arrow keys do, left and right as the radiological view shows them; the
    readout is said (a live region) when the crosshair comes to rest, not at every step.
    The viewer's controls come on with the case. Undo, disabled after the last undo, hands
    the focus to the message saying so. In one column a diameter link brings the viewer
    into view."""
    _upload_case(server, page, tmp_path, "threshold")
    _wait_overlay(page)
    assert page.is_enabled("#layout") and page.is_enabled("#show-1")
    assert page.is_enabled("#opacity") and page.is_enabled("input[name=seed-kind] >> nth=1")
    page.hover("#gl")
    page.focus("#gl")
    vox = "Array.from(state.nv.frac2vox(state.nv.scene.crosshairPos))"
    page.evaluate("""window.__keys = [];
        window.addEventListener('keydown', (e) => __keys.push(e), {capture: true})""")
    start = page.evaluate(vox)
    page.keyboard.press("PageUp")
    assert page.evaluate(vox) == [start[0], start[1], start[2] + 1]
    page.keyboard.press("PageDown")
    assert page.evaluate(vox) == start
    moves = {"ArrowRight": -1, "KeyL": -1, "ArrowLeft": 1, "KeyH": 1}  # radiological
    for key, dx in moves.items():
        page.keyboard.press(key)
        assert page.evaluate(vox) == [start[0] + dx, start[1], start[2]], key
        page.keyboard.press({-1: "ArrowLeft", 1: "ArrowRight"}[dx])
    page.keyboard.press("KeyK")
    assert page.evaluate(vox) == [start[0], start[1] + 1, start[2]]
    page.keyboard.press("KeyJ")
    assert page.evaluate(vox) == start
    assert page.evaluate("__keys.every((e) => e.defaultPrevented)"), page.evaluate(
        "__keys.map((e) => [e.code, e.defaultPrevented])")
    # the readout said at most twice a second while a key is held, then where it rests
    page.wait_for_timeout(700)
    page.evaluate("""window.__said = 0;
        new MutationObserver(() => __said++).observe(document.getElementById('location-live'),
                                                     {childList: true, characterData: true,
                                                      subtree: true})""")
    t0 = time.monotonic()
    for _ in range(12):
        page.keyboard.press("ArrowUp")
    held_s = time.monotonic() - t0
    page.wait_for_timeout(700)
    said = page.evaluate("__said")
    assert 1 <= said <= 2 + held_s / 0.5, (said, held_s)
    assert page.text_content("#location-live") == page.text_content("#location")
    assert page.get_attribute("#location", "aria-hidden") == "true"

    # Undo from the keyboard, the last one: the focus goes to the message, not the page
    pytest.importorskip("braintumor.correction")
    page.select_option("#layout", "axial")
    page.wait_for_timeout(400)
    x, y = _coloured_point(page.locator("#gl").screenshot())
    page.evaluate(f"() => {{ const nv = window.braintumor.nv; "
                  f"nv.scene.crosshairPos = nv.canvasPos2frac([{x}, {y}]); nv.drawScene(); }}")
    page.check("#correct-toggle")
    page.focus("#seed-here-btn")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-result='v1']", timeout=30_000)
    page.focus("#undo-btn")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-result='v0']", timeout=30_000)
    assert page.is_disabled("#undo-btn")
    assert page.evaluate("document.activeElement.id") == "correct-msg"
    assert re.match(r"Undone\. (Whole tumour|Tumour core|Enhancing tumour) .* mL\)\.$",
                    page.text_content("#correct-msg") or "")

    # 200 % zoom (one column): the diameter link, below the viewer, brings it into view
    page.set_viewport_size({"width": 640, "height": 800})
    page.wait_for_timeout(300)
    page.click("#diam-et")
    _until(page, "Math.abs(document.getElementById('centre').getBoundingClientRect().top) < 2")


def _delete(server: ServerThread, job_id: str) -> None:
    req = urllib.request.Request(f"{server.url}/api/jobs/{job_id}", method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback test server
        assert r.status == 204


def test_a_job_deleted_while_its_page_is_open_says_so(server: ServerThread, page: Any,
                                                     tmp_path: Path) -> None:
    """A job deleted (or expired) while its page is open: a download says why in the
    page instead of replacing it; a queued job stops waiting and offers no Cancel."""
    from playwright.sync_api import expect

    gone = re.compile(r"^This job is no longer on the server \(deleted or expired\)")
    page.set_viewport_size({"width": 1280, "height": 800})
    _upload_case(server, page, tmp_path, "threshold")
    job_id = page.url.rsplit("/", 1)[1]
    _delete(server, job_id)
    page.locator("#dl-labels").scroll_into_view_if_needed()
    page.click("#dl-labels")
    expect(page.locator("#job-msg")).to_have_text(gone)
    # ... said where the reader is, not only at the top of the left panel, scrolled away
    expect(page.locator("#gone-text")).to_have_text(gone)
    # the research-use notice of the header stays seen above it
    page.evaluate("window.scrollTo(0, 0)")
    notice = page.locator("header .notice").bounding_box()
    msg = page.locator("#gone-msg").bounding_box()
    assert notice and msg and msg["y"] >= notice["y"] + notice["height"], (notice, msg)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert _in_view(page, "#gone-msg")
    assert page.get_attribute("#gone-msg", "role") == "alert"
    # the same files may be segmented again: their job is no more
    expect(page.locator("#submit-btn")).to_be_enabled()
    assert page.url.endswith(f"/jobs/{job_id}")
    expect(page.locator("#dl-labels")).to_have_class(re.compile("disabled"))
    expect(page.locator("#correct-toggle")).to_be_disabled()
    # a queued job behind a slow one, deleted while its page polls
    files = write_case_files(small_case(), tmp_path / "queued", with_label=False)
    ids = []
    for method in ("slow", "threshold"):
        _choose_files(page, server, [str(p) for p in files.values()], method)
        page.click("#submit-btn")
        page.wait_for_selector("body[data-status='queued'], body[data-status='running']")
        _until(page, "location.pathname.startsWith('/jobs/')")
        ids.append(page.url.rsplit("/", 1)[1])
    expect(page.locator("#cancel-btn")).to_be_visible()
    _delete(server, ids[1])
    expect(page.locator("#job-msg")).to_have_text(gone, timeout=10_000)
    expect(page.locator("#cancel-btn")).to_be_hidden()
    expect(page.locator("#gone-msg")).to_be_visible()
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/api/jobs/" in r.url else None)
    page.wait_for_timeout(4500)
    assert polls == []  # it stopped asking
    _delete(server, ids[0])


def _jobs_root(server: ServerThread) -> Path:
    """The folder the server keeps each job's files in (one folder a job)."""
    return Path(server.server.config.app.state.store.jobs_root)


DELETED = ("The job was deleted: its uploaded scans, outline, corrections and reports are "
           "no longer on this server.")


def _confirm(page: Any, accept: bool, said: list[str]) -> None:
    """Answer the page's next dialog, a confirm(), as a reader would; its type and text
    to ``said``."""
    def answer(dialog: Any) -> None:
        said.append(f"{dialog.type}: {dialog.message}")
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", answer)


def _asked(page: Any, said: list[str], count: int) -> None:
    """Wait until the page has asked its ``count``-th question."""
    t0 = time.monotonic()
    while len(said) < count:
        assert time.monotonic() - t0 < 10, said
        page.wait_for_timeout(50)


def test_a_job_is_deleted_from_its_page(server: ServerThread, page: Any) -> None:
    """Delete job asks first, saying what goes and what does not; dismissed, nothing is
    deleted; accepted, the job's folder is gone from the server, the page says so in one
    sentence on a fresh upload form at /, nothing of the job is left on the screen or
    asked for again, and the job's own address says it is gone."""
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    page.select_option("#method", "threshold")
    page.click("#sample-btn")
    page.wait_for_selector("body[data-status='done']", timeout=120_000)
    _wait_overlay(page, timeout_ms=120_000)
    job_id = page.url.rsplit("/", 1)[1]
    folder = _jobs_root(server) / job_id
    assert folder.is_dir()
    button = page.locator("#delete-btn")
    expect(button).to_be_visible()
    expect(button).to_have_accessible_name("Delete job")
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)

    said: list[str] = []
    _confirm(page, False, said)
    button.click()
    _asked(page, said, 1)
    case = page.text_content("#job-case")
    assert len(said) == 1 and said[0].startswith(f"confirm: Delete this job ({case}) "), said
    for words in ("uploaded scans", "outline", "corrections", "reports",
                  "files already downloaded are not affected"):
        assert words in said[0], (words, said[0])
    page.wait_for_timeout(300)
    assert deletes == []
    assert folder.is_dir() and _job(server, job_id)["status"] == "done"
    assert page.url.endswith(f"/jobs/{job_id}")
    expect(page.locator("body")).to_have_attribute("data-viewer", "overlay")

    _confirm(page, True, said)
    button.click()
    page.wait_for_url(server.url + "/", timeout=30_000)
    assert deletes == [f"{server.url}/api/jobs/{job_id}"]
    expect(page.locator("#job-msg")).to_have_text(DELETED)
    assert page.get_attribute("#job-msg", "role") == "alert"
    assert not folder.exists()
    with pytest.raises(urllib.error.HTTPError) as err:
        _job(server, job_id)
    assert err.value.code == 404
    # a fresh upload form, and nothing of the job: no state, viewer, result or download
    expect(page.locator("#start")).to_be_visible()
    expect(page.locator("#sample-btn")).to_be_enabled()
    expect(page.locator("#job-state")).to_be_hidden()
    expect(page.locator("#placeholder")).to_be_visible()
    assert page.get_attribute("body", "data-viewer") is None
    assert page.get_attribute("body", "data-status") is None
    assert page.get_attribute("#dl-labels", "href") is None
    expect(page.locator("#vol-table tbody tr")).to_have_count(0)
    expect(page.locator("#lesion-count")).to_have_text("-")
    assert job_id not in page.content()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if job_id in r.url else None)
    page.wait_for_timeout(1500)
    assert asked == []  # nothing more is polled
    # reloaded, the form is a fresh one without the sentence
    page.reload()
    page.wait_for_selector("#method option[value='threshold']", state="attached")
    expect(page.locator("#job")).to_be_hidden()
    # the job's own address says it is no longer there
    page.goto(f"{server.url}/jobs/{job_id}")
    expect(page.locator("#job-msg")).to_have_text(
        re.compile(r"^This job is no longer on the server \(deleted or expired\)"))


def test_a_job_that_could_not_be_deleted_stays_as_it_was(
        server: ServerThread, page: Any, tmp_path: Path) -> None:
    """Delete job while the job runs, refused: with no server reached, the page says so
    and the job runs on; with files the server could not delete, its sentence is said and
    the job (stopped first) is kept, on the page and on the server; with the job gone
    already (expired, deleted elsewhere), the page says it is gone."""
    from playwright.sync_api import expect

    import braintumor.web.store as web_store

    files = write_case_files(small_case(), tmp_path / "case", with_label=False)
    _choose_files(page, server, [str(p) for p in files.values()], "slow")
    page.click("#submit-btn")
    expect(page.locator("#job-stage")).to_have_text("waiting", timeout=60_000)
    job_id = page.url.rsplit("/", 1)[1]
    folder = _jobs_root(server) / job_id
    case = page.text_content("#job-case")
    assert case
    button = page.locator("#delete-btn")
    expect(button).to_be_visible()
    said: list[str] = []

    # the server out of reach for every request about the job (a network drop), the
    # delete and the polls after it: the page keeps trying and follows the job once back
    page.route(f"**/api/jobs/{job_id}", lambda route: route.abort())
    _confirm(page, True, said)
    button.click()
    expect(page.locator("#delete-msg")).to_have_text(re.compile(
        r"^The job could not be deleted: the server could not be reached"))
    assert "It is stopped" in said[0], said
    page.unroute(f"**/api/jobs/{job_id}")
    assert page.url.endswith(f"/jobs/{job_id}") and folder.is_dir()
    progress = float(page.get_attribute("#job-progress", "value") or 0)
    _until(page, f"document.getElementById('job-progress').value > {progress}")  # polled on
    expect(page.locator("body")).to_have_attribute("data-status", "running")

    # files the server cannot delete: the job is stopped and kept
    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(web_store.shutil, "rmtree", refuse)
        _confirm(page, True, said)
        button.click()
        expect(page.locator("#delete-msg")).to_have_text(re.compile(
            r"^The job's files could not all be deleted \(Permission denied\); the job is "
            r"kept"), timeout=30_000)
    assert folder.is_dir() and _job(server, job_id)["status"] == "cancelled"
    expect(page.locator("body")).to_have_attribute("data-status", "cancelled", timeout=10_000)
    assert page.url.endswith(f"/jobs/{job_id}")
    expect(page.locator("#job-case")).to_have_text(case)
    expect(button).to_have_text("Delete job")
    assert button.get_attribute("aria-disabled") is None
    expect(page.locator("#gone-msg")).to_be_hidden()

    # gone already: said as a job gone while its page is open
    _delete(server, job_id)
    _confirm(page, True, said)
    button.click()
    gone = re.compile(r"^This job is no longer on the server \(deleted or expired\)")
    expect(page.locator("#job-msg")).to_have_text(gone)
    expect(page.locator("#gone-text")).to_have_text(gone)
    expect(button).to_be_hidden()
    assert page.url.endswith(f"/jobs/{job_id}")


def test_a_job_is_deleted_from_its_page_on_a_server_with_a_token(
        browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With BRAINTUMOR_TOKEN set, the page's delete carries the token (its cookie) as its
    other requests do: a sample job deleted while it runs is gone."""
    from playwright.sync_api import expect

    register_test_methods(monkeypatch)
    app = create_app(tmp_path / "data", token="s3cret-token", warm=False,
                     sample_options={"shape": [64, 64, 48]})
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    try:
        with ServerThread(app) as srv:
            req = urllib.request.Request(f"{srv.url}/api/jobs/none", method="DELETE")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)  # noqa: S310 - loopback test server
            assert err.value.code == 401
            page.goto(srv.url + "/?token=s3cret-token")
            page.wait_for_selector("#method option[value='slow']", state="attached")
            page.select_option("#method", "slow")
            page.click("#sample-btn")
            page.wait_for_selector("body[data-status='running']", timeout=60_000)
            job_id = page.url.rsplit("/", 1)[1]
            folder = _jobs_root(srv) / job_id
            assert folder.is_dir()
            answers: list[int] = []
            page.on("response", lambda r: answers.append(r.status)
                    if r.request.method == "DELETE" else None)
            _confirm(page, True, [])
            page.click("#delete-btn")
            page.wait_for_url(srv.url + "/", timeout=30_000)
            assert answers == [204]
            expect(page.locator("#job-msg")).to_have_text(DELETED)
            assert not folder.exists()
    finally:
        ctx.close()
