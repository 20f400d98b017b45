"""The web API, endpoint by endpoint, with every kind of malformed upload.

Jobs run through the real worker pool (a child process) with a fast threshold
segmenter registered for the tests (``test_web_support.segment_threshold``), chosen
through the API's ``method`` field, on a small synthetic case.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from braintumor.web import create_app  # noqa: E402
from test_web_support import (  # noqa: E402
    AFFINE,
    SHAPE,
    cut_short,
    restamp_series,
    small_case,
    wait_done,
    write_case_files,
    write_dicom_zip,
)

#: how a request about a job deleted or expired (or never made) begins
GONE = "This job is no longer on the server (deleted or expired)"

#: a voxel in the middle of the tumour of ``small_case`` (its indices)
TUMOUR_VOXEL = tuple(int(v) for v in (np.array(SHAPE) / 2 + np.array([4, -3, 2])).astype(int))


@pytest.fixture(scope="module")
def client(methods: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(tmp_path_factory.mktemp("data"), token="", warm=False,
                     max_upload_bytes=50 * 2**20, sample_options={"shape": [48, 48, 48]})
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def done_job(client: TestClient, case_files: dict[str, Path]) -> dict[str, Any]:
    r = client.post("/api/jobs", files=_four(case_files, ref=True),
                    data={"method": "threshold", "uncertainty": "true"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    return job


def _four(files: dict[str, Path], ref: bool = False, names: dict[str, str] | None = None
          ) -> list[tuple[str, tuple[str, bytes]]]:
    out = [("files", ((names or {}).get(m, p.name), p.read_bytes()))
           for m, p in files.items() if m != "seg"]
    if ref:
        out.append(("reference", (files["seg"].name, files["seg"].read_bytes())))
    return out


def _nifti_bytes(data: np.ndarray, affine: np.ndarray = AFFINE, gz: bool = True) -> bytes:
    img = nib.Nifti1Image(data, affine)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def _load(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def _detail(r: Any) -> str:
    d = r.json()["detail"]
    assert isinstance(d, str) and d.endswith((".", ")")) and "Traceback" not in d, d
    return d


# -- info, page, docs, headers -----------------------------------------------------------
def test_info_lists_methods_and_limits(client: TestClient) -> None:
    info = client.get("/api/info").json()
    names = {m["name"]: m["available"] for m in info["methods"]}
    assert names["threshold"] is True
    assert info["max_upload_bytes"] == 50 * 2**20
    assert info["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert info["token_required"] is False
    # the page starts on the most accurate installed method
    best = next((m for m in ("hybrid", "cnn") if names.get(m)), None)
    if best is not None:
        assert info["default_method"] == best
    else:
        assert info["default_method"] in {m for m, ok in names.items() if ok}


def test_a_job_without_a_method_runs_the_one_info_names(
        methods: None, case_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from braintumor import segment as seg
    from braintumor.web import app as web_app

    for name in ("cnn", "hybrid"):  # stand-ins, so the job is quick if it starts
        monkeypatch.setitem(seg.METHODS, name, "test_web_support:segment_threshold")
    monkeypatch.setattr(web_app, "_ready_methods", lambda: ["threshold", "cnn", "hybrid"])
    app = create_app(tmp_path / "data", token="", warm=False)
    with TestClient(app) as c:
        assert c.get("/api/info").json()["default_method"] == "hybrid"
        r = c.post("/api/jobs", files=_four(case_files))
        assert r.status_code == 202, r.text
        assert r.json()["method"] == "hybrid"
        assert wait_done(c.get, r.json()["id"])["status"] == "done"


def test_page_static_and_security_headers(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "Try the sample case" in r.text
    assert "<script>" not in r.text and "onclick" not in r.text  # no inline script
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/jobs/anything").status_code == 200  # shareable job URL -> page
    v = client.get("/static/vendor/niivue.umd.js")
    assert v.status_code == 200 and len(v.content) > 1_000_000
    for page in ("/", "/docs"):  # each names its icon, so no browser asks /favicon.ico
        icon = client.get(page).text.split('<link rel="icon" href="')[1].split('"')[0]
        got = client.get(icon)
        assert got.status_code == 200 and got.content.startswith(b"<svg")
    api = client.get("/api/info")
    assert api.headers["cache-control"] == "no-store"
    assert api.headers["x-content-type-options"] == "nosniff"


def test_docs_are_offline_and_openapi_lists_every_endpoint(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text.replace("http://127.0.0.1", "")
    assert "https://" not in page.text and "cdn" not in page.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/info", "/api/jobs", "/api/sample", "/api/jobs/{job_id}",
              "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/corrections",
              "/api/jobs/{job_id}/corrections/undo", "/api/jobs/{job_id}/series",
              "/api/jobs/{job_id}/download/labels.nii.gz", "/api/jobs/{job_id}/report.pdf",
              "/api/jobs/{job_id}/report.html", "/api/detect-modalities"):
        assert p in paths, p
    body = paths["/api/jobs"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    # align registers to the modality whose grid the case lies on, as register.reference_of
    align = body["multipart/form-data"]["schema"]["properties"]["align"]["description"]
    assert "whose grid the case lies on" in align and "the first" not in align


def test_detect_modalities(client: TestClient) -> None:
    names = ["P1_t1.nii.gz", "P1_t1ce.nii.gz", "x-t2f.nii.gz", "AX T1 POST GAD.nii",
             "scan_T2w.nii.gz", "notes.nii.gz"]
    got = client.post("/api/detect-modalities", json={"names": names}).json()["modalities"]
    assert got == {"P1_t1.nii.gz": "t1", "P1_t1ce.nii.gz": "t1ce", "x-t2f.nii.gz": "flair",
                   "AX T1 POST GAD.nii": "t1ce", "scan_T2w.nii.gz": "t2",
                   "notes.nii.gz": None}


# -- a whole job -------------------------------------------------------------------------------
def test_upload_runs_to_done_with_measurements(done_job: dict[str, Any]) -> None:
    case = small_case()
    res = done_job["result"]
    assert res["method"] == "threshold" and res["model_version"] == "threshold-test-1"
    vox_ml = 1.2 * 1.0 * 1.5 / 1000
    vols = res["summary"]["volumes_ml"]
    # the threshold segmenter recovers the synthetic truth exactly
    for key, values in (("NCR", [1]), ("ED", [2]), ("ET", [3]), ("TC", [1, 3]),
                        ("WT", [1, 2, 3])):
        assert vols[key] == pytest.approx(np.isin(case.label, values).sum() * vox_ml, abs=1e-3)
    assert res["summary"]["lesion_count"] == 1
    m = res["summary"]["metrics"]
    assert m is not None and m["WT"]["dice"] == pytest.approx(1.0)
    assert done_job["progress"] == 1.0 and done_job["stage"] == "done"
    assert res["has_uncertainty"] is True


def test_a_scan_without_t1_is_segmented_by_the_watershed(client: TestClient,
                                                         case_files: dict[str, Path]) -> None:
    """Three files (no T1): the job runs the watershed tuned for that, whatever method was
    asked, says so, and offers no T1 image to the viewer."""
    files = [f for f in _four(case_files, ref=True) if "_t1." not in f[1][0]]
    assert len(files) == 4  # T1ce, T2, FLAIR and the reference
    r = client.post("/api/jobs", files=files, data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    res = job["result"]
    assert res["method"] == "watershed" and "no T1 image" in res["warning"]
    assert "threshold method needs all four" in res["warning"]
    assert sorted(job["urls"]["images"]) == ["flair", "t1ce", "t2"]
    assert client.get(f"/api/jobs/{job['id']}/images/t1.nii.gz").status_code == 404
    # the synthetic tumour is found without the T1
    assert res["summary"]["metrics"]["WT"]["dice"] > 0.8


def test_a_t2_on_a_grid_of_its_own_is_resampled(client: TestClient,
                                                case_files: dict[str, Path]) -> None:
    """A T2 of 3 mm slices (a scanner's own grid) is brought onto the T1's and the
    result says so; the outline keeps the T1's grid."""
    t2 = np.asarray(nib.load(str(case_files["t2"])).dataobj, dtype=np.float32)
    z = t2.shape[2] // 2 * 2
    coarse = t2[:, :, :z].reshape(*t2.shape[:2], z // 2, 2).mean(3)
    aff = AFFINE.copy()
    aff[:3, 2] *= 2
    aff[:3, 3] += AFFINE[:3, 2] * 0.5
    files = _four(case_files, ref=True)
    files[2] = ("files", (case_files["t2"].name, _nifti_bytes(coarse, aff)))
    r = client.post("/api/jobs", files=files, data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    assert "the T2 lay on a grid of its own" in job["result"]["warning"]
    lab = _load(client.get(job["urls"]["download"]).content)
    assert lab.shape == SHAPE and np.allclose(lab.affine, AFFINE)
    # the viewer gets the T2 on the T1's grid, so the outline fits it; the others as sent
    for _ in range(2):  # made once, then served again
        shown = _load(client.get(job["urls"]["images"]["t2"]).content)
        assert shown.shape == SHAPE and np.allclose(shown.affine, AFFINE)
        inside = np.asarray(shown.dataobj)[:, :, 2:-2]
        assert np.abs(inside - t2[:, :, 2:-2]).mean() < 0.2 * np.abs(t2).mean()
    flair = client.get(job["urls"]["images"]["flair"]).content
    assert flair == case_files["flair"].read_bytes()


def _thick_t1(case_files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The T1 as 3 mm slices (pairs of 1.5 mm slices averaged) and their affine."""
    t1 = np.asarray(nib.load(str(case_files["t1"])).dataobj, dtype=np.float32)
    z = t1.shape[2] // 2 * 2
    aff = AFFINE.copy()
    aff[:3, 2] *= 2
    aff[:3, 3] += AFFINE[:3, 2] * 0.5
    return t1[:, :, :z].reshape(*t1.shape[:2], z // 2, 2).mean(3), aff


def test_a_thick_slice_t1_goes_onto_the_t1ces_grid(client: TestClient,
                                                   case_files: dict[str, Path]) -> None:
    """A T1 of 3 mm slices beside 1.2-1.5 mm T1ce, T2 and FLAIR: the case lies on the
    T1ce's grid, as a DICOM study's would, the result says so, and the viewer shows the
    T1 on that grid, where the outline is."""
    thick, aff = _thick_t1(case_files)
    files = _four(case_files)
    files[0] = ("files", (case_files["t1"].name, _nifti_bytes(thick, aff)))
    r = client.post("/api/jobs", files=files, data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    assert job["inputs"]["grid"] == "t1ce"
    assert "the T1 lay on a grid of its own and was resampled onto the T1ce's (finer" in \
        job["result"]["warning"]
    lab = _load(client.get(job["urls"]["download"]).content)
    assert lab.shape == SHAPE and np.allclose(lab.affine, AFFINE)
    shown = _load(client.get(job["urls"]["images"]["t1"]).content)
    assert shown.shape == SHAPE and np.allclose(shown.affine, AFFINE)
    assert client.get(job["urls"]["images"]["t1ce"]).content == case_files["t1ce"].read_bytes()


def test_on_case_grid_picks_the_cases_grid(tmp_path: Path, case_files: dict[str, Path]) -> None:
    """The viewer's grid from the files' headers is load_case's: the T1ce's beside a thick
    T1, the T1's where the reference label map lies on it, ``grid`` where the job says."""
    from braintumor.web.inputs import load_job_case, on_case_grid

    thick, aff = _thick_t1(case_files)
    (tmp_path / "input").mkdir()
    mods = {}
    for m in ("t1", "t1ce", "t2", "flair"):
        mods[m] = f"input/{m}.nii.gz"
        shutil.copyfile(case_files[m], tmp_path / mods[m])
    (tmp_path / mods["t1"]).write_bytes(_nifti_bytes(thick, aff))
    seg = np.asarray(nib.load(str(case_files["seg"])).dataobj)[:, :, 1::2].astype(np.uint8)
    (tmp_path / "input/reference.nii.gz").write_bytes(_nifti_bytes(seg, aff))

    inputs = {"modalities": mods, "reference": "input/reference.nii.gz"}
    case = load_job_case(tmp_path, inputs)  # the reference keeps the T1's grid
    assert case.grid == "t1" and case.shape == thick.shape and case.label is not None
    assert load_job_case(tmp_path, inputs, with_reference=False).grid == "t1"
    assert load_job_case(tmp_path, {"modalities": mods}).grid == "t1ce"

    assert on_case_grid(tmp_path, mods, "t1ce") == tmp_path / mods["t1ce"]
    view = on_case_grid(tmp_path, mods, "t1")
    assert nib.load(str(view)).shape == SHAPE
    shutil.rmtree(tmp_path / "view")
    assert on_case_grid(tmp_path, mods, "t1", reference="input/reference.nii.gz") == \
        tmp_path / mods["t1"]
    view = on_case_grid(tmp_path, mods, "t1ce", reference="input/reference.nii.gz")
    assert nib.load(str(view)).shape == thick.shape
    assert np.allclose(nib.load(str(view)).affine, aff)
    shutil.rmtree(tmp_path / "view")
    assert on_case_grid(tmp_path, mods, "t1", grid="t1") == tmp_path / mods["t1"]


def test_on_case_grid_turns_a_modality_stored_flipped(
        tmp_path: Path, case_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A T2 stored flipped on the T1's grid is shown turned voxel for voxel, as load_case
    reads it, not interpolated."""
    from braintumor import io as bio
    from braintumor.web.inputs import on_case_grid

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("interpolated")

    monkeypatch.setattr(bio, "resample_onto", refuse)

    (tmp_path / "input").mkdir()
    mods = {m: f"input/{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")}
    for m, p in mods.items():
        shutil.copyfile(case_files[m], tmp_path / p)
    t2 = nib.load(str(case_files["t2"]))
    values = np.asarray(t2.dataobj, dtype=np.float32)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, values.shape[0] - 1
    (tmp_path / mods["t2"]).write_bytes(
        _nifti_bytes(np.ascontiguousarray(values[::-1]), t2.affine @ flip))
    view = nib.load(str(on_case_grid(tmp_path, mods, "t2")))
    assert np.allclose(view.affine, nib.load(str(case_files["t1"])).affine)
    np.testing.assert_array_equal(np.asarray(view.dataobj, dtype=np.float32), values)


def test_download_is_native_geometry_in_chosen_convention(client: TestClient,
                                                          done_job: dict[str, Any]) -> None:
    case = small_case()
    r = client.get(done_job["urls"]["download"])
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    img = _load(r.content)
    assert img.shape == SHAPE
    assert np.allclose(img.affine, AFFINE)
    data = np.asarray(img.dataobj)
    assert set(np.unique(data)) <= {0, 1, 2, 4}
    assert (data == 4).sum() == (case.label == 3).sum()
    r23 = client.get(done_job["urls"]["download"], params={"convention": "brats2023"})
    assert (np.asarray(_load(r23.content).dataobj) == 3).sum() == (case.label == 3).sum()
    bad = client.get(done_job["urls"]["download"], params={"convention": "nope"})
    assert bad.status_code == 400 and "convention" in _detail(bad)


def test_viewer_files(client: TestClient, done_job: dict[str, Any]) -> None:
    urls = done_job["urls"]
    for m in ("t1", "t1ce", "t2", "flair"):
        r = client.get(urls["images"][m])
        assert r.status_code == 200 and _load(r.content).shape == SHAPE
    ov = _load(client.get(urls["overlay"]).content)
    assert set(np.unique(np.asarray(ov.dataobj))) == {0, 1, 2, 3}
    assert client.get(urls["uncertainty"]).status_code == 200
    assert client.get(urls["self"] + "/images/t9.nii.gz").status_code == 404
    assert client.get(urls["self"] + "/overlay/v7/labels.nii.gz").status_code == 404


def test_reports(client: TestClient, done_job: dict[str, Any]) -> None:
    html = client.get(done_job["urls"]["report_html"])
    assert html.status_code == 200
    case_id = done_job["inputs"]["case_id"]  # opens in the browser, saved under the case
    assert html.headers["content-disposition"] == f'inline; filename="{case_id}_report.html"'
    assert "not for clinical use" in html.text and "threshold-test-1" in html.text
    assert "<script" not in html.text
    assert "<th>CNN and watershed agree (Dice)</th><td>WT 0.91, TC 0.84, ET 0.42</td>" \
        in html.text
    # the RANO diameters of the result, in the facts and as a table per lesion
    diam = done_job["result"]["summary"]["diameters"]
    # each lesion's slice in the reports' words, for the page to say the same
    from braintumor.report import slice_position

    for region in ("ET", "WT"):
        for les in diam[region]["lesions"]:
            assert les["position"] == slice_position(les)
            assert f"<td>{les['position']}</td>" in html.text
    assert f"<th>Diameters, enhancing (RANO)</th><td>{diam['ET']['text']}</td>" in html.text
    assert f"<th>Diameters, T2/FLAIR (RANO)</th><td>{diam['WT']['text']}</td>" in html.text
    assert "<h2>Diameters (RANO)</h2>" in html.text
    version = done_job["label_version"]
    measured = f"/api/jobs/{done_job['id']}/report/v{version}/diameters.png"
    png = client.get(measured)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    # the same diameters as a volume for the viewer, on the label map's grid
    lines = client.get(done_job["urls"]["diameters"])
    assert lines.status_code == 200
    vol = _load(lines.content)
    labels = _load(client.get(done_job["urls"]["download"]).content)
    assert vol.shape == labels.shape and np.allclose(vol.affine, labels.affine)
    assert set(np.unique(np.asarray(vol.dataobj)).tolist()) == {0, 1, 2}
    assert client.get(done_job["urls"]["diameters"].replace(f"/v{version}/", "/v9/")
                      ).status_code == 404
    _assert_self_contained(html.text, pictures=4)  # three key slices, the measured slice
    assert html.headers["content-security-policy"].count("img-src 'self' data:") == 1
    assert "Radiological view: the patient&#x27;s right is on the image&#x27;s left." \
        in html.text
    for v in ("axial", "coronal", "sagittal"):  # the pictures' own links stay
        png = client.get(f"/api/jobs/{done_job['id']}/report/v{version}/{v}.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    pdf = client.get(done_job["urls"]["report_pdf"])
    assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
    assert pdf.headers["content-type"] == "application/pdf"


def _assert_self_contained(page: str, pictures: int) -> list[Any]:
    """A report page needs nothing from the server: no link to an /api/ or /static/
    file, the style inline, and ``pictures`` PNGs embedded as data: URIs that decode;
    -> the pictures."""
    import base64

    from PIL import Image

    assert "/api/" not in page and "/static/" not in page
    assert re.findall(r"<link[^>]*>", page) == ['<link rel="icon" href="data:,">']
    assert "<style>" in page and ".slices img" in page
    srcs = re.findall(r"<img\b[^>]*\bsrc=[\"']([^\"']*)", page)
    assert len(srcs) == pictures and all(s.startswith("data:image/png;base64,") for s in srcs)
    out = []
    for s in srcs:
        raw = base64.b64decode(s.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(raw))
        img.load()
        assert img.size[0] > 10 and img.size[1] > 10
        out.append(img)
    return out


def _report_job(result: dict[str, Any], case_id: str) -> Any:
    from braintumor.web.store import Job

    return Job(id="a1b2c3d4e5f6a7b8", kind="upload", method="hybrid", status="done",
               finished=1.7e9, inputs={"case_id": case_id}, result=result)


def _overlaps_on_pdf_pages(flow: Any) -> list[str]:
    """Every way the laid-out PDF pages break: a text (fact, warning, title, legend, a
    table's title) over a picture's axes, over a table or over another text, or off the
    page; matplotlib's renderer gives the boxes."""
    from matplotlib.text import Text

    bad = []
    for k, fig in enumerate(flow.figures):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        pictures = [a.get_window_extent(r) for a in fig.axes if a.images]
        tables = [t.get_window_extent(r) for a in fig.axes for t in a.tables]
        titles = [c for a in fig.axes for c in a.get_children()
                  if isinstance(c, Text) and c.get_text()]
        texts = [(t.get_text()[:30], t.get_window_extent(r))
                 for t in [*fig.texts, *titles] if t.get_text()]
        for name, box in texts:
            if not fig.bbox.contains(box.x0, box.y0) or not fig.bbox.contains(box.x1, box.y1):
                bad.append(f"page {k + 1}: {name!r} off the page")
            for other in pictures + tables:
                if box.overlaps(other):
                    bad.append(f"page {k + 1}: {name!r} over a picture or table")
        for i, (name, box) in enumerate(texts):
            for name2, box2 in texts[i + 1:]:
                if box.overlaps(box2):
                    bad.append(f"page {k + 1}: {name!r} over {name2!r}")
        for i, box in enumerate(pictures + tables):
            for box2 in (pictures + tables)[i + 1:]:
                if box.overlaps(box2):
                    bad.append(f"page {k + 1}: a picture or table over another")
    return bad


def _rano_tables(flow: Any) -> list[list[list[str]]]:
    """The rows (text) of the laid-out PDF's RANO tables, page after page."""
    from braintumor.report import RANO_HEAD

    out = []
    for fig in flow.figures:
        for ax in fig.axes:
            for t in ax.tables:
                cells = t.get_celld()
                n_rows, n_cols = (max(k[i] for k in cells) + 1 for i in (0, 1))
                grid = [[cells[r, c].get_text().get_text() for c in range(n_cols)]
                        for r in range(n_rows)]
                if tuple(grid[0]) == RANO_HEAD:
                    out.append(grid[1:])
    return out


def test_pdf_report_has_the_rano_section_of_the_html(client: TestClient,
                                                    done_job: dict[str, Any]) -> None:
    """The PDF says what the HTML report says about the RANO diameters: the heading, the
    picture of the measured slices (embedded, the same file), a table per region whose
    rows are the job's lesions, and each lesion's slice named the same way in both, as
    a reader finds it ("88 of 155" and its position in mm), not as a voxel index."""
    import matplotlib.pyplot as plt

    from braintumor.report import RANO_REGIONS, centre_position, rano_rows, slice_position
    from braintumor.web import report

    store = client.app.state.store  # type: ignore[attr-defined]
    job = store.get(done_job["id"])
    diam = done_job["result"]["summary"]["diameters"]
    assert any(diam[r]["measurable"] for r in ("ET", "WT")), diam
    page = client.get(done_job["urls"]["report_html"]).text  # writes the pictures
    out = store.job_dir(job.id) / "output"
    pictures = {v: out / report.report_file(job, f"{v}.png") for v in report.VIEWS}
    measured = out / report.report_file(job, "diameters.png")
    assert measured.exists() and all(p.exists() for p in pictures.values())
    want = [rano_rows(diam[r]) for r in ("ET", "WT") if diam[r]["lesions"]]
    for rows, region in zip(want, ("ET", "WT"), strict=False):
        for row, les in zip(rows, diam[region]["lesions"], strict=True):
            assert row[3:7] == [f"{les['longest_mm']:.1f}", f"{les['perpendicular_mm']:.1f}",
                                f"{les['product_mm2']:.0f}",
                                "yes" if les["measurable"] else "no"]
            assert row[2] == centre_position(les["centre_mm"])
            assert row[1] == slice_position(les)
            assert row[1].startswith(f"{les['slice'] + 1} of {les['slices']}, ")
            assert row[1].endswith(f" {abs(les['centre_mm'][2]):.1f} mm")
            assert f"<td>{row[1]}</td>" in page  # the HTML names it the same way
    assert " = " not in "".join(re.findall(r"<td>[^<]*</td>", page))  # no "k = 87"
    flow = report.pdf_layout(job, pictures, measured)
    flow.close(job.id)
    try:
        assert _overlaps_on_pdf_pages(flow) == []
        flat = "".join("".join(t.get_text() for fig in flow.figures for t in fig.texts
                               ).split())
        assert "Diameters(RANO)" in flat
        for region in ("ET", "WT"):
            assert "".join(f"{RANO_REGIONS[region]}: {diam[region]['text']}".split()) in flat
        assert _rano_tables(flow) == want
        shown = [a.images[0].get_array() for fig in flow.figures for a in fig.axes
                 if a.images]
        from PIL import Image

        picture = np.asarray(Image.open(measured))
        assert len(shown) == 4 and any(np.array_equal(np.asarray(s), picture) for s in shown)
    finally:
        for fig in flow.figures:
            plt.close(fig)
    pdf = client.get(done_job["urls"]["report_pdf"]).content
    assert pdf[:5] == b"%PDF-" and len(re.findall(rb"/Subtype\s*/Image\b", pdf)) == 4


@pytest.mark.parametrize("lesions", ["small", "none"])
def test_reports_say_when_no_lesion_is_measurable(tmp_path: Path, lesions: str) -> None:
    """Lesions all under 10 x 10 mm, or none at all: both reports say that nothing is
    measurable (no target, no SPD), and the PDF still lists the small lesions."""
    import matplotlib.pyplot as plt

    from braintumor.diameters import describe
    from braintumor.io import write_png
    from braintumor.web import report

    small = {"axis": 2, "slice": 40, "slices": 155, "centre_mm": [0.0, 0.0, -7.3],
             "longest_mm": 8.2, "perpendicular_mm": 6.0, "product_mm2": 49.2,
             "measurable": False}
    summ = {"lesions": [small] if lesions == "small" else [], "measurable": 0,
            "targets": 0, "spd_mm2": 0.0, "largest": "8 x 6 mm" if lesions == "small" else ""}
    summ["text"] = describe(summ)
    result = {"kind": "3d", "method": "threshold", "model_version": "-",
              "summaries": [{"volumes_ml": {"WT": 1.0}, "lesion_count": 1,
                             "diameters": {"ET": summ, "WT": summ}}]}
    job = _report_job(result, "Small")
    pictures = {v: write_png(np.full((60, 50, 3), 90, np.uint8), tmp_path / f"{v}.png")
                for v in report.VIEWS}
    verdict = "No measurable lesion (both diameters at least 10 mm): no target lesion and no SPD."
    page = report.render_html(job, pictures)
    assert verdict in page
    flow = report.pdf_layout(job, pictures)
    flow.close(job.id)
    try:
        assert _overlaps_on_pdf_pages(flow) == []
        flat = "".join("".join(t.get_text() for fig in flow.figures for t in fig.texts
                               ).split())
        assert "".join(verdict.split()) in flat
        tables = _rano_tables(flow)
    finally:
        for fig in flow.figures:
            plt.close(fig)
    if lesions == "small":
        row = ["1", "41 of 155, I 7.3 mm", "R 0 A 0 I 7", "8.2", "6.0", "49", "no", "no"]
        assert tables == [[row], [row]] and "<td>41 of 155, I 7.3 mm</td>" in page
        assert "notmeasurable(under10x10mm)" in flat
    else:
        assert tables == [] and "nolesion(none5mmorlonger)" in flat
        assert "no lesion (none 5 mm or longer)" in page


def test_reports_of_a_job_not_yet_measured_say_so(tmp_path: Path) -> None:
    """Lesions still being counted: both reports say the diameters are not measured yet,
    rather than leaving the section out."""
    import matplotlib.pyplot as plt

    from braintumor.io import write_png
    from braintumor.web import report

    result = {"kind": "3d", "summaries": [{"volumes_ml": {}, "lesion_count": None,
                                           "diameters": None}]}
    job = _report_job(result, "Quick")
    pictures = {v: write_png(np.full((60, 50, 3), 90, np.uint8), tmp_path / f"{v}.png")
                for v in report.VIEWS}
    page = report.render_html(job, pictures)
    assert "Not measured yet" in page
    # never "None" to a reader
    assert "None" not in page and "<th>Lesions</th><td>still being counted</td>" in page
    flow = report.pdf_layout(job, pictures)
    try:
        text = " ".join(t.get_text() for fig in flow.figures for t in fig.texts)
        assert "Not measured yet" in text and "None" not in text
    finally:
        for fig in flow.figures:
            plt.close(fig)


def test_the_method_s_warning_is_said_of_the_outline_before_the_corrections(
        tmp_path: Path) -> None:
    """A volume the method found (its warning) and the hybrid's agreement were said of
    the outline before the corrections: once corrected, the reports say so."""
    from braintumor.io import write_png
    from braintumor.web import report

    said = "the fast mode (one model) found 27.5 mL of tumour, check it"
    scan = "the voxels are 5.0 mm along one axis"
    summ = {"volumes_ml": {"WT": 9.34}, "lesion_count": 1, "diameters": None}
    result = {"kind": "3d", "summaries": [summ, summ], "warning": f"{said}; {scan}",
              "method_warning": said,
              "info": {"agreement": {"WT": 0.9, "TC": 0.8, "ET": 0.7}}, "corrections": []}
    pictures = {v: write_png(np.full((60, 50, 3), 90, np.uint8), tmp_path / f"{v}.png")
                for v in report.VIEWS}
    page = report.render_html(_report_job(result, "Warned"), pictures)
    assert f"<td>{said}; {scan}</td>" in page
    assert "<th>CNN and watershed agree (Dice)</th>" in page
    result["corrections"] = [{"seeds": [[1, 2, 3, 0]], "id": "x"}]
    page = report.render_html(_report_job(result, "Warned"), pictures)
    # the method's words were said of the outline before; the scan's still hold
    assert f"<td>Before the corrections: {said}; {scan}</td>" in page
    assert "<th>CNN and watershed agreed before the corrections (Dice)</th>" in page
    result["warning"] = f"{scan}; {said}"
    page = report.render_html(_report_job(result, "Warned"), pictures)
    assert f"<td>{scan}; before the corrections: {said}</td>" in page
    # a note on the scan alone (the method said nothing) is not marked
    result["warning"], result["method_warning"] = scan, None
    page = report.render_html(_report_job(result, "Warned"), pictures)
    assert f"<td>{scan}</td>" in page


@pytest.mark.parametrize("extra_facts", [0, 45])
def test_pdf_report_facts_never_overlap_the_pictures(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     extra_facts: int) -> None:
    """A job with every fact a report can have (RANO diameters of ET and WT, the
    hybrid's CNN/watershed agreement, corrections, a long model name, long warnings,
    metrics), and then many more rows: the facts wrap and push the key slices and
    tables down, onto a second page when they must; nothing overlaps, nothing is cut."""
    import matplotlib.pyplot as plt

    from braintumor.io import write_png
    from braintumor.web import report

    lesion = {"axis": 2, "slice": 40, "longest_mm": 41.2, "perpendicular_mm": 33.0,
              "product_mm2": 1353.0, "measurable": True}
    diam = {"lesions": [lesion] * 3, "targets": 3, "spd_mm2": 4059.0,
            "largest": "41 x 33 mm"}
    warning = "; ".join([
        "series 2 (AX T1 SE), the study's T1, could not be read, so the case goes without "
        "it: 1 of its 28 files is cut short (their pixel data ends early)",
        "no T1 image: the watershed tuned for three modalities segmented the case",
        "the scan does not look skull-stripped (bright tissue around the brain), so the "
        "outline may reach into the scalp"] * 4)
    version = ("segresnet-ensemble-5fold-brats2021-v3.2.1+watershed-tuned-2024-11 (fast "
               "mode, test-time augmentation off, CNN-guided refinement on the enhancing "
               "core)_" + "x" * 120)
    result = {"kind": "3d", "method": "hybrid", "model_version": version, "warning": warning,
              "info": {"agreement": {"WT": 0.91, "TC": 0.84, "ET": 0.42}},
              "corrections": [{}, {}],
              "summaries": [{"volumes_ml": {"WT": 80.0, "TC": 30.0, "ET": 12.0, "NCR": 5.0,
                                            "ED": 50.0},
                             "lesion_count": 3, "diameters": {"ET": diam, "WT": diam},
                             "metrics": {r: {"dice": 0.9, "sensitivity": 0.9,
                                             "specificity": 0.99, "hd95": 3.2}
                                         for r in ("WT", "TC", "ET")}}]}
    job = _report_job(result, "BraTS-GLI-00000-000_" + "long_name_" * 6)
    facts = report._facts(report.report_facts(job))
    assert [k for k, _ in facts] == [
        "Case", "Segmented", "Method", "Model version", "Lesions", "Diameters, enhancing (RANO)",
        "Diameters, T2/FLAIR (RANO)", "Manual corrections",
        "CNN and watershed agreed before the corrections (Dice)", "Warning"]
    more = [(f"Extra fact number {i} with a label long enough to wrap", "value " * 20)
            for i in range(extra_facts)]
    monkeypatch.setattr(report, "_facts", lambda f: [*facts[:-1], *more, facts[-1]])
    pictures = {v: write_png(np.full((60, 50, 3), 90, np.uint8), tmp_path / f"{v}.png")
                for v in report.VIEWS}
    measured = write_png(np.full((70, 150, 3), 120, np.uint8), tmp_path / "diameters.png")
    flow = report.pdf_layout(job, pictures, measured)
    flow.close(job.id)  # the pages' feet
    try:
        assert _overlaps_on_pdf_pages(flow) == []
        shown = "".join(t.get_text() for fig in flow.figures for t in fig.texts)
        flat = "".join(shown.split())
        for piece in (warning, version, facts[5][1], "WT 0.91, TC 0.84, ET 0.42",
                      "Diameters (RANO)", "T2/FLAIR abnormality (WT): 41 x 33 mm"):
            assert "".join(piece.split()) in flat, piece[:40]  # whole, wrapped, not cut
        assert len(flow.figures) > (1 if extra_facts else 0)  # a second page when needed
        # the key slices and the measured slices
        assert sum(bool(a.images) for fig in flow.figures for a in fig.axes) == 4
        # a lesion measured before slices were counted: its slice numbered alone
        rows = [[str(n), "41", "-", "41.2", "33.0", "1353", "yes", "yes"] for n in (1, 2, 3)]
        assert _rano_tables(flow) == [rows, rows]
        if len(flow.figures) > 1:
            assert f"Job {job.id}, page 2 of {len(flow.figures)}" in shown
    finally:
        for fig in flow.figures:
            plt.close(fig)
    pdf = report.render_pdf(job, pictures, tmp_path / "r.pdf", measured).read_bytes()
    assert pdf[:5] == b"%PDF-" and len(re.findall(rb"/Type\s*/Page\b", pdf)) == len(
        flow.figures)
    assert len(re.findall(rb"/Subtype\s*/Image\b", pdf)) == 4

    # a 2D stack's report: the same rule
    names = [f"slice_{i}_{'x' * 30}.png" for i in range(40)]
    result2d = {"kind": "2d", "slices": 40, "pixel_mm": 0.5, "pixel_source": "given",
                "slice_names": names, "slice_area_px": [100 + i for i in range(40)],
                "area_px": 5000, "tumour_slices": 40, "show_slice": 3, "warning": warning,
                "model_version": version, "diameters": None,
                "metrics_2d": {"dice": 0.8, "slices": 40, "slice_dice_mean": 0.7,
                               "fp_slices": 1, "tumour_free_slices": 3, "missed_slices": 2,
                               "tumour_slices": 37}}
    flow = report.pdf_layout_2d(_report_job(result2d, "stack"), pictures["axial"])
    flow.close("a1b2c3d4e5f6a7b8")
    try:
        assert _overlaps_on_pdf_pages(flow) == []
    finally:
        for fig in flow.figures:
            plt.close(fig)


def test_a_scan_that_is_not_skull_stripped_is_flagged_in_result_and_reports(
        client: TestClient, tmp_path: Path) -> None:
    """A noisy background in 4 mm voxels: segmented, and the warning travels with the
    result into the HTML and PDF reports."""
    from braintumor.cases import case_from_arrays

    base = small_case()
    noisy = base.image + np.random.default_rng(0).integers(1, 20, base.image.shape)
    head = case_from_arrays("Head002", noisy.astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))
    files = write_case_files(head, tmp_path / "head", with_label=False)
    r = client.post("/api/jobs", files=_four(files), data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    assert "does not look skull-stripped" in job["result"]["warning"]
    page = client.get(job["urls"]["report_html"]).text
    assert "<th>Warning</th>" in page and "does not look skull-stripped" in page
    assert client.get(job["urls"]["report_pdf"]).content[:5] == b"%PDF-"
    # the PDF page gives the sentence whole (wrapped), not cut like a facts row
    import matplotlib.pyplot as plt

    from braintumor.web.report import _pdf_page

    flow = _pdf_page([("Case", "Head002"), ("Warning", job["result"]["warning"])])
    shown = "".join("".join(t.get_text() for fig in flow.figures for t in fig.texts).split())
    for fig in flow.figures:
        plt.close(fig)
    assert "".join(job["result"]["warning"].split()) in shown


def test_correction_changes_mask_and_undo_restores(client: TestClient,
                                                   case_files: dict[str, Path]) -> None:
    pytest.importorskip("braintumor.correction")
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    url = job["urls"]["corrections"]
    before = np.asarray(_load(client.get(job["urls"]["download"]).content).dataobj)
    # an "outside" seed in the middle of the tumour (voxel indices)
    cx, cy, cz = TUMOUR_VOXEL
    r = client.post(url, json={"seeds": [{"x": int(cx), "y": int(cy), "z": int(cz),
                                          "label": 0}]})
    assert r.status_code == 200, r.text
    j1 = r.json()
    assert j1["label_version"] == 1 and j1["result"]["corrections"] == 1
    got = client.get(j1["urls"]["download"])
    after = np.asarray(_load(got.content).dataobj)
    assert (after > 0).sum() < (before > 0).sum()
    # saved beside the first download, the corrected one keeps a name of its own
    case_id = job["inputs"]["case_id"]
    assert _download_name(got.headers["content-disposition"]) == \
        f"{case_id}_braintumor_corrected1.nii.gz"
    other = client.get(j1["urls"]["download"] + "?convention=brats2023")
    assert _download_name(other.headers["content-disposition"]) == \
        f"{case_id}_braintumor_corrected1_brats2023.nii.gz"
    assert after[cx, cy, cz] == 0
    assert "last_correction_note" not in j1["result"]
    assert j1["changed"] is True and j1["note"] == ""
    # a seed that changes nothing is said so, placed in scanner mm as the page's line
    # under the viewer says it; it is no correction: no new version, not counted, nothing
    # to undo, not in the report
    r = client.post(url, json={"seeds": [{"x": 0, "y": 0, "z": 0, "label": 2}]})
    nothing = r.json()
    assert r.status_code == 200 and nothing["changed"] is False
    origin = ", ".join(f"{v:.1f}" for v in AFFINE[:3, 3])
    assert nothing["note"].startswith(f"the seed at ({origin}) mm (voxel 0, 0, 0) lies "
                                      "outside the brain"), nothing["note"]
    assert nothing["label_version"] == 1 and nothing["result"]["corrections"] == 1
    assert "last_correction_note" not in nothing["result"]
    report_html = client.get(j1["urls"]["report_html"])
    assert "<th>Manual corrections</th><td>1</td>" in report_html.text
    # the reports carry the download's suffix: those before and after keep both
    assert report_html.headers["content-disposition"] == \
        f'inline; filename="{case_id}_corrected1_report.html"'
    assert _download_name(client.get(j1["urls"]["report_pdf"]).headers[
        "content-disposition"]) == f"{case_id}_corrected1_report.pdf"
    assert j1["result"]["summary"]["volumes_ml"]["WT"] < \
        job["result"]["summary"]["volumes_ml"]["WT"]
    # lesions are counted again in the background
    t0 = time.monotonic()
    while client.get(job["urls"]["self"]).json()["result"]["summary"]["lesion_count"] is None:
        assert time.monotonic() - t0 < 30
        time.sleep(0.1)
    # the same place given in millimetres gives the same voxel
    mm = (AFFINE @ np.array([cx, cy, cz, 1.0]))[:3].tolist()
    r = client.post(url, json={"seeds": [{"mm": mm, "label": 3}]})
    assert r.status_code == 200 and r.json()["label_version"] == 2
    again = np.asarray(_load(client.get(job["urls"]["download"]).content).dataobj)
    assert again[cx, cy, cz] == 4
    u = client.post(url + "/undo")
    assert u.status_code == 200 and u.json()["label_version"] == 1
    u = client.post(url + "/undo")
    assert u.json()["label_version"] == 0
    got = client.get(job["urls"]["download"])
    restored = np.asarray(_load(got.content).dataobj)
    assert np.array_equal(restored, before)
    assert _download_name(got.headers["content-disposition"]) == f"{case_id}_braintumor.nii.gz"
    nothing = client.post(url + "/undo")
    assert nothing.status_code == 400 and "no correction" in _detail(nothing)


def _corrected_then_stopped(data: Path, case_files: dict[str, Path]
                            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job corrected once, in a server over ``data`` stopped as a stop within the
    correction's measurement leaves it (the volumes only); the job and the summary it
    had once measured."""
    app = create_app(data, token="", warm=False, workers=1)
    cx, cy, cz = TUMOUR_VOXEL
    with TestClient(app) as c:
        job = wait_done(c.get, c.post("/api/jobs", files=_four(case_files, ref=True),
                                      data={"method": "threshold"}).json()["id"])
        r = c.post(job["urls"]["corrections"],
                   json={"seeds": [{"x": cx, "y": cy, "z": cz, "label": 0}]})
        assert r.status_code == 200, r.text
        measured = _measured(c, job)["result"]["summary"]
        store = app.state.store
        res = store.get(job["id"]).result
        quick = {**res["summaries"][-1], "lesion_count": None, "lesions": [],
                 "diameters": None, "metrics": None}
        store.update(job["id"], result={**res, "summaries": [*res["summaries"][:-1], quick]})
    return job, measured


def test_a_correction_s_measurements_cut_short_by_a_stop_are_taken_after_it(
        methods: None, tmp_path: Path, case_files: dict[str, Path]) -> None:
    """A server stopped before a correction's lesions and metrics were measured (in the
    background) measures them when the job is read again, rather than leaving them
    unknown for good."""
    pytest.importorskip("braintumor.correction")
    data = tmp_path / "data"
    job, measured = _corrected_then_stopped(data, case_files)
    with TestClient(create_app(data, token="", warm=False, workers=1)) as c:
        again = _measured(c, job)["result"]["summary"]
        assert again["lesion_count"] == measured["lesion_count"] is not None
        assert again["diameters"] == measured["diameters"]
        assert again["metrics"] == measured["metrics"] is not None
        page = c.get(job["urls"]["report_html"]).text
        assert "Not measured yet" not in page and "None" not in page


def test_a_measurement_that_fails_is_tried_once_and_said(
        methods: None, tmp_path: Path, case_files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring a correction's outline again after a stop, when it fails, is not tried
    again at every reading of the job (the page reads it every 400 ms while the lesions
    are uncounted): once, and the summary says it failed, so the page stops waiting and
    the reports say the lesions were not counted."""
    pytest.importorskip("braintumor.correction")
    from braintumor.web import measure

    data = tmp_path / "data"
    job, _ = _corrected_then_stopped(data, case_files)
    calls = []
    real = measure.summary

    def failing(*a: Any, **k: Any) -> Any:
        if k.get("quick"):
            return real(*a, **k)
        calls.append(1)
        raise RuntimeError("disk error")

    monkeypatch.setattr(measure, "summary", failing)
    with TestClient(create_app(data, token="", warm=False, workers=1)) as c:
        t0 = time.monotonic()
        while not (now := c.get(job["urls"]["self"]).json()["result"]["summary"]).get(
                "measure_failed"):
            assert time.monotonic() - t0 < 30
            time.sleep(0.05)
        for _ in range(5):
            c.get(job["urls"]["self"])
        time.sleep(0.3)
        assert len(calls) == 1 and now["lesion_count"] is None
        page = c.get(job["urls"]["report_html"]).text
        assert "<th>Lesions</th><td>not counted: measuring the outline failed</td>" in page
        assert "Not measured: measuring the outline failed" in page


def test_a_correction_made_after_an_undo_is_what_downloads_and_reports_show(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """Files made from a version that was undone are not served for the version written
    anew under its number."""
    pytest.importorskip("braintumor.correction")
    job = _threshold_job(client, case_files)
    url = job["urls"]["corrections"]
    cx, cy, cz = TUMOUR_VOXEL
    first = client.post(url, json={"seeds": [{"x": int(cx), "y": int(cy), "z": int(cz),
                                              "label": 0}]}).json()
    assert first["label_version"] == 1
    assert client.get(first["urls"]["download"]).status_code == 200
    assert client.get(f"/api/jobs/{job['id']}/report/v1/axial.png").status_code == 200
    assert client.get(first["urls"]["report_pdf"]).status_code == 200
    assert client.post(url + "/undo").json()["label_version"] == 0
    output = client.app.state.store.job_dir(job["id"]) / "output"  # type: ignore[attr-defined]
    assert not [p.name for p in output.iterdir() if "_v1" in p.name]
    again = client.post(url, json={"seeds": [{"x": int(cx), "y": int(cy), "z": int(cz),
                                              "label": 3}]}).json()
    assert again["label_version"] == 1
    shown = np.asarray(_load(client.get(again["urls"]["overlay"]).content).dataobj)
    got = np.asarray(_load(client.get(again["urls"]["download"]).content).dataobj)
    assert got[cx, cy, cz] == 4
    assert np.array_equal(got, np.where(shown == 3, 4, shown))


def test_an_undo_on_a_job_deleted_meanwhile_is_404(client: TestClient,
                                                   case_files: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("braintumor.correction")
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    app: Any = client.app
    undo = app.state.corrector.undo

    def expiring(j: Any, **kw: Any) -> None:  # the job goes between the request's check
        app.state.store.delete(j.id)            # and the undo
        undo(j, **kw)

    monkeypatch.setattr(app.state.corrector, "undo", expiring)
    r = client.post(job["urls"]["corrections"] + "/undo")
    assert r.status_code == 404 and _detail(r).startswith(GONE)


def test_a_report_of_a_job_expiring_meanwhile_is_404(client: TestClient,
                                                     case_files: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from braintumor.web import report

    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    app: Any = client.app
    render = report.render_pdf

    def expiring(*args: Any, **kw: Any) -> Any:  # the job expires while its PDF is drawn
        # as the janitor's delete leaves it midway: the folder gone, the row going (a
        # folder gone under a row that stays is another matter: files removed by hand)
        app.state.store._deleting.add(job["id"])
        shutil.rmtree(app.state.store.job_dir(job["id"]))
        return render(*args, **kw)

    monkeypatch.setattr(report, "render_pdf", expiring)
    r = client.get(job["urls"]["report_pdf"])
    assert r.status_code == 404 and _detail(r).startswith(GONE)


def test_a_report_link_of_a_deleted_job_opened_in_a_tab_is_a_page(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """The report and download links open in a new tab: once the job is gone, the tab
    shows the sentence on a page, not the API's JSON; the page's own fetches keep JSON."""
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    assert client.delete(job["urls"]["self"]).status_code == 204
    tab = {"sec-fetch-dest": "document", "accept": "text/html,*/*;q=0.8"}
    for url in (job["urls"]["report_html"], job["urls"]["report_pdf"]):
        r = client.get(url, headers=tab)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert GONE in r.text and 'href="/"' in r.text and "{" not in r.text
        r = client.get(url, headers={"sec-fetch-dest": "empty"})  # the page's fetch
        assert r.status_code == 404 and _detail(r).startswith(GONE)
    # without Sec-Fetch-Dest (older browsers), a request for HTML is a navigation
    r = client.get(job["urls"]["report_html"], headers={"accept": "text/html"})
    assert r.headers["content-type"].startswith("text/html") and GONE in r.text
    assert client.get(job["urls"]["report_html"]).json()["detail"].startswith(GONE)


def test_a_correction_racing_a_delete_leaves_nothing_and_says_no_path(
        client: TestClient, case_files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A correction under way when the job is deleted finishes first; one asked for while
    it is deleted is a 404 in one sentence; nothing is written into the deleted folder."""
    import threading

    correction = pytest.importorskip("braintumor.correction")
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    folder = client.app.state.store.job_dir(job["id"])  # type: ignore[attr-defined]
    slow_correct = correction.correct

    def slow(*args: Any, **kw: Any) -> Any:
        time.sleep(1.0)
        return slow_correct(*args, **kw)

    monkeypatch.setattr(correction, "correct", slow)
    cx, cy, cz = TUMOUR_VOXEL
    seeds = {"seeds": [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]}
    answers: dict[str, Any] = {}

    def ask(name: str, call: Any) -> threading.Thread:
        t = threading.Thread(target=lambda: answers.__setitem__(name, call()))
        t.start()
        return t

    first = ask("first", lambda: client.post(job["urls"]["corrections"], json=seeds))
    time.sleep(0.4)
    gone = ask("delete", lambda: client.delete(job["urls"]["self"]))
    time.sleep(0.2)
    late = ask("late", lambda: client.post(job["urls"]["corrections"], json=seeds))
    for t in (first, gone, late):
        t.join(30)
    assert answers["delete"].status_code == 204
    assert answers["first"].status_code in (200, 404)
    assert answers["late"].status_code == 404
    assert _detail(answers["late"]).startswith(GONE)
    assert not folder.exists()


@pytest.mark.parametrize("seeds, words", [
    ([], "at least one seed"),
    ([{"x": 1, "y": 2, "z": 3, "label": 7}], "label"),
    ([{"x": 999, "y": 2, "z": 3, "label": 1}], "outside the image"),
    ([{"x": -1, "y": 2, "z": 3, "label": 1}], "outside the image"),
    ([{"mm": [1, 2], "label": 1}], "three"),
    ([{"mm": ["nan", "nan", "nan"], "label": 1}], "finite"),
    ([{"mm": [float("nan"), 0, 0], "label": 1}], "finite"),
    ([{"mm": [float("inf"), 0, 0], "label": 1}], "finite"),
    ([{"label": 1}], "x, y and z"),
    # pydantic's coercion would read true as 1 (NCR) and 2.0 or "2" as 2: a label and a
    # voxel index are whole numbers
    ([{"x": 1, "y": 2, "z": 3, "label": True}], "label: Input should be a valid integer"),
    ([{"x": 1, "y": 2, "z": 3, "label": 2.0}], "label: Input should be a valid integer"),
    ([{"x": 1, "y": 2, "z": 3, "label": "2"}], "label: Input should be a valid integer"),
    ([{"x": True, "y": 2, "z": 3, "label": 1}], "x: Input should be a valid integer"),
    # a misspelt field is refused, not ignored
    ([{"x": 1, "y": 2, "z": 3, "label": 1, "lable": 1}], "unknown field, 'seeds.0.lable'"),
    # far outside: said so without a voxel index hundreds of digits long
    ([{"mm": [1e308, 1e308, 1e308], "label": 1}], "lies far outside the image"),
    ([{"mm": [1e308, -1e308, 1e308], "label": 1}], "lies far outside the image"),
    ([{"x": 10**40, "y": 2, "z": 3, "label": 1}], "lies far outside the image"),
])
def test_bad_seeds_are_4xx(client: TestClient, done_job: dict[str, Any], seeds: list,
                           words: str) -> None:
    pytest.importorskip("braintumor.correction")
    # NaN and Infinity as JavaScript's JSON.stringify never sends them, but a client may
    r = client.post(done_job["urls"]["corrections"], content=json.dumps({"seeds": seeds}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert words in _detail(r)
    assert len(_detail(r)) < 300


def test_a_correction_of_many_seeds_that_changed_nothing_keeps_its_note_short(
        client: TestClient, done_job: dict[str, Any]) -> None:
    """2000 seeds outside the brain: the first few are said, the rest counted, rather
    than a note of 100 KB kept with the job and sent on every poll."""
    pytest.importorskip("braintumor.correction")
    seeds = [{"x": i % 10, "y": i // 10 % 10, "z": i // 100, "label": 2} for i in range(2000)]
    r = client.post(done_job["urls"]["corrections"], json={"seeds": seeds})
    assert r.status_code == 200, r.text
    note = r.json()["note"]
    assert len(note) < 1000, len(note)
    assert note.startswith("the seed at (") and note.count("the seed at (") == 3
    more = re.search(r"; and (\d+) more seeds changed nothing$", note)
    assert more and int(more[1]) > 1000, note


@pytest.mark.parametrize("path, body, words", [
    # a misspelt version: ignored, the undo would take back whatever is current
    ("/undo", {"verison": 3}, "it has an unknown field, 'verison'"),
    ("/undo", {"version": -3}, "version: Input should be greater than or equal to 0"),
    ("/undo", {"revision": -3}, "revision: Input should be greater than or equal to 0"),
    ("/undo", {"version": True}, "version: Input should be a valid integer"),
    ("", {"seeds": [{"x": 1, "y": 2, "z": 3, "label": 0}], "revison": 3},
     "it has an unknown field, 'revison'"),
    ("", {"seeds": [{"x": 1, "y": 2, "z": 3, "label": 0}], "revision": -3},
     "revision: Input should be greater than or equal to 0"),
    ("/undo?version=-1", None, "version: Input should be greater than or equal to 0"),
])
def test_correction_and_undo_bodies_are_checked(client: TestClient, done_job: dict[str, Any],
                                                path: str, body: Any, words: str) -> None:
    """A misspelt or impossible version or revision is refused with 400 and changes
    nothing, rather than acting on whatever outline is current."""
    pytest.importorskip("braintumor.correction")
    before = client.get(done_job["urls"]["self"]).json()
    r = client.post(done_job["urls"]["corrections"] + path, json=body)
    assert r.status_code == 400, r.text
    assert _detail(r) == f"The request is malformed: {words}."
    after = client.get(done_job["urls"]["self"]).json()
    assert after["label_revision"] == before["label_revision"]


def test_correction_body_must_be_json(client: TestClient, done_job: dict[str, Any]) -> None:
    r = client.post(done_job["urls"]["corrections"], content=b"nonsense",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and _detail(r).startswith("The request is malformed")


def _measured(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    """The job once the lesions of its current outline are counted (a correction's are
    counted in the background, which would change the job under a comparison)."""
    t0 = time.monotonic()
    while (now := client.get(job["urls"]["self"]).json())["result"]["summary"][
            "lesion_count"] is None:
        assert time.monotonic() - t0 < 30
        time.sleep(0.05)
    return dict(now)


def _threshold_job(client: TestClient, case_files: dict[str, Path]) -> dict[str, Any]:
    """A job of the case segmented by the threshold stand-in, waited for."""
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    return wait_done(client.get, r.json()["id"])


def _outline_files(client: TestClient, job_id: str) -> dict[str, bytes]:
    """Every label map version of a job on disk, by name, with its bytes."""
    out = client.app.state.store.job_dir(job_id) / "output"  # type: ignore[attr-defined]
    return {p.name: p.read_bytes() for p in sorted(out.glob("labels_v*"))}


def test_a_correction_or_undo_made_on_an_outline_changed_since_is_refused(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """A correction or undo names the label version it was made on: the right one is
    applied; another (a page that has not seen what another page or reader did since) is a
    409 in one sentence that changes nothing, neither the label map files nor the
    version; without one, the current version is corrected or undone, as before."""
    pytest.importorskip("braintumor.correction")
    job = _threshold_job(client, case_files)
    url = job["urls"]["corrections"]
    cx, cy, cz = TUMOUR_VOXEL
    outside = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]
    inside = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 3}]
    r = client.post(url, json={"seeds": outside, "version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["label_version"] == 1 and r.json()["changed"] is True
    files = _outline_files(client, job["id"])
    state = _measured(client, job)
    # seeds placed on version 0, which the outline no longer is
    r = client.post(url, json={"seeds": inside, "version": 0})
    assert r.status_code == 409
    assert _detail(r) == (
        "The outline changed since this page showed it (version 0, now 1: another page or "
        "reader corrected or undid it), so this correction was not applied: check the "
        "outline as it is now and correct again.")
    assert _outline_files(client, job["id"]) == files
    now = client.get(job["urls"]["self"]).json()
    assert now["label_version"] == 1 and now["result"]["corrections"] == 1
    assert now["result"]["summary"] == state["result"]["summary"]
    # without a version: on whatever is current, as before
    r = client.post(url, json={"seeds": inside})
    assert r.status_code == 200 and r.json()["label_version"] == 2
    files = _outline_files(client, job["id"])
    # an undo asked on version 1 (in the body or the query) takes back nothing of 2
    for asked in ({"json": {"version": 1}}, {"params": {"version": 1}}):
        r = client.post(url + "/undo", **asked)  # type: ignore[arg-type]
        assert r.status_code == 409
        assert _detail(r).startswith("The outline changed since this page showed it "
                                     "(version 1, now 2: ")
        assert "so nothing was undone" in _detail(r)
        assert _outline_files(client, job["id"]) == files
        assert client.get(job["urls"]["self"]).json()["label_version"] == 2
    r = client.post(url + "/undo", params={"version": 2}, json={"version": 1})
    assert r.status_code == 400 and "different versions" in _detail(r)
    assert client.get(job["urls"]["self"]).json()["label_version"] == 2
    r = client.post(url + "/undo", params={"version": 2})
    assert r.status_code == 200 and r.json()["label_version"] == 1
    r = client.post(url + "/undo", json={"version": 1})
    assert r.status_code == 200 and r.json()["label_version"] == 0
    # an undo with nothing to undo, on the version shown, says so as before
    r = client.post(url + "/undo", json={"version": 0})
    assert r.status_code == 400 and "no correction" in _detail(r)
    # without a version (no body at all, or an empty one): the last correction, as before
    assert client.post(url, json={"seeds": outside}).json()["label_version"] == 1
    r = client.post(url + "/undo")
    assert r.status_code == 200 and r.json()["label_version"] == 0
    assert client.post(url, json={"seeds": outside}).json()["label_version"] == 1
    r = client.post(url + "/undo", json={})
    assert r.status_code == 200 and r.json()["label_version"] == 0
    # the API's description names the version and the refusal
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/jobs/{job_id}/corrections", "/api/jobs/{job_id}/corrections/undo"):
        post = paths[path]["post"]
        assert "409" in post["summary"] and "409" in post["responses"]
    undo = paths["/api/jobs/{job_id}/corrections/undo"]["post"]
    assert [q["name"] for q in undo["parameters"] if q["in"] == "query"] == ["version"]


def test_a_correction_s_name_is_kept_so_its_client_knows_it_applied(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """The ``request`` name a client gives a correction is the job's
    ``result.last_correction_request`` once applied (a page that gave up waiting for the
    answer tells its own late correction from another reader's), until the next."""
    pytest.importorskip("braintumor.correction")
    job = _threshold_job(client, case_files)
    url = job["urls"]["corrections"]
    cx, cy, cz = TUMOUR_VOXEL
    seeds = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]
    r = client.post(url, json={"seeds": seeds, "version": 0, "request": "page-1"})
    assert r.status_code == 200 and r.json()["label_version"] == 1, r.text
    assert r.json()["result"]["last_correction_request"] == "page-1"
    assert client.get(job["urls"]["self"]).json()["result"]["last_correction_request"] == \
        "page-1"
    r = client.post(url, json={"seeds": [dict(seeds[0], label=3)], "version": 1})
    assert r.status_code == 200 and r.json()["label_version"] == 2, r.text
    assert "last_correction_request" not in r.json()["result"]  # another's, unnamed
    r = client.post(url + "/undo", json={"version": 2})
    assert r.json()["result"]["last_correction_request"] == "page-1"
    r = client.post(url, json={"seeds": seeds, "request": "x" * 65})
    assert r.status_code in (400, 422), r.text
    fields = client.get("/openapi.json").json()["components"]["schemas"][
        "CorrectionRequest"]["properties"]
    assert "last_correction_request" in fields["request"]["description"]


def test_a_refused_correction_or_undo_carries_the_job_as_it_is_now(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """A 409 for a stale ``version`` carries the job's version now and the job as
    ``GET /api/jobs/{id}`` answers it, so a client redraws without asking again; the
    API's description names both."""
    pytest.importorskip("braintumor.correction")
    job = _threshold_job(client, case_files)
    url = job["urls"]["corrections"]
    cx, cy, cz = TUMOUR_VOXEL
    seeds = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]
    assert client.post(url, json={"seeds": seeds, "version": 0}).json()["label_version"] == 1
    _measured(client, job)
    for r in (client.post(url, json={"seeds": seeds, "version": 0}),
              client.post(url + "/undo", json={"version": 0}),
              client.post(url + "/undo", params={"version": 0})):
        assert r.status_code == 409, r.text
        body = r.json()
        assert set(body) == {"detail", "label_version", "label_revision", "job"}
        assert body["detail"].startswith("The outline changed since this page showed it")
        assert body["label_version"] == 1 and body["label_revision"] == 1
        assert body["job"] == client.get(job["urls"]["self"]).json()
    stale = client.get("/openapi.json").json()["components"]["schemas"]["StaleOut"]
    assert set(stale["properties"]) == {"detail", "label_version", "label_revision",
                                        "job"}  # when present
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/jobs/{job_id}/corrections", "/api/jobs/{job_id}/corrections/undo"):
        answer = paths[path]["post"]["responses"]["409"]
        assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/StaleOut")
        assert "`label_version`" in answer["description"]


def test_an_outline_undone_and_made_anew_is_another_revision(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """``label_version`` is the depth of the corrections: correct (1), undo (0) and
    correct again (1) names two outlines by one version. ``label_revision`` counts every
    change and is never lowered, so a page still showing the first 1 (its revision) is
    refused, correcting or undoing, where its version alone would pass; a client that
    sends only ``version`` is checked by it, as before. The viewer's address of the
    outline differs too, so no viewer takes the second for the first it holds."""
    pytest.importorskip("braintumor.correction")
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    assert job["label_version"] == 0 and job["label_revision"] == 0
    url = job["urls"]["corrections"]
    cx, cy, cz = TUMOUR_VOXEL
    outside = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]
    first = client.post(url, json={"seeds": outside, "version": 0, "revision": 0}).json()
    assert (first["label_version"], first["label_revision"]) == (1, 1)
    # one that changes nothing is no change of the outline: no revision either
    again = client.post(url, json={"seeds": outside, "version": 1, "revision": 1}).json()
    assert again["changed"] is False and again["label_revision"] == 1
    undone = client.post(url + "/undo", json={"version": 1, "revision": 1}).json()
    assert (undone["label_version"], undone["label_revision"]) == (0, 2)
    second = client.post(url, json={"seeds": [dict(outside[0], label=3)], "version": 0,
                                    "revision": 2}).json()
    assert (second["label_version"], second["label_revision"]) == (1, 3)
    assert second["urls"]["overlay"] != first["urls"]["overlay"]
    files = _outline_files(client, job["id"])
    # the page that still shows the first version 1 (revision 1)
    for r in (client.post(url, json={"seeds": outside, "version": 1, "revision": 1}),
              client.post(url, json={"seeds": outside, "revision": 1}),
              client.post(url + "/undo", json={"version": 1, "revision": 1})):
        assert r.status_code == 409, r.text
        assert _detail(r).startswith("The outline changed since this page showed it "
                                     "(revision 1, now 3: ")
        assert r.json()["label_revision"] == 3 and r.json()["label_version"] == 1
        assert r.json()["job"]["label_revision"] == 3
        assert _outline_files(client, job["id"]) == files
    now = client.get(job["urls"]["self"]).json()
    assert (now["label_version"], now["label_revision"]) == (1, 3)
    # an older client, sending only the version: checked by it, as before
    r = client.post(url + "/undo", json={"version": 1})
    assert r.status_code == 200 and r.json()["label_revision"] == 4, r.text
    r = client.post(url, json={"seeds": outside, "version": 1})
    assert r.status_code == 409 and r.json()["label_revision"] == 4
    # the right revision passes
    r = client.post(url, json={"seeds": outside, "version": 0, "revision": 4})
    assert r.status_code == 200 and r.json()["label_revision"] == 5, r.text
    fields = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("CorrectionRequest", "UndoRequest"):
        assert "revision" in fields[name]["properties"]
    assert "label_revision" in fields["JobOut"]["properties"]


def test_a_job_s_revision_survives_a_restart_and_older_stores_gain_one(
        methods: None, tmp_path: Path, case_files: dict[str, Path]) -> None:
    """The revision is kept with the job, so a restarted server counts on from it; the
    jobs table keeps the columns an earlier release reads, so a server of that release
    started on the same folder still reads every job; a job it corrected in between
    gets a revision no page has seen, and a job from before revisions counts from its
    version."""
    import sqlite3

    pytest.importorskip("braintumor.correction")
    data = tmp_path / "data"
    app = create_app(data, token="", warm=False, workers=1)
    cx, cy, cz = TUMOUR_VOXEL
    outside = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]
    with TestClient(app) as c:
        job = wait_done(c.get, c.post("/api/jobs", files=_four(case_files),
                                      data={"method": "threshold"}).json()["id"])
        url = job["urls"]["corrections"]
        assert c.post(url, json={"seeds": outside}).json()["label_revision"] == 1
        assert c.post(url + "/undo").json()["label_revision"] == 2
    app.state.store.close()
    with TestClient(create_app(data, token="", warm=False)) as c:
        now = c.get(job["urls"]["self"]).json()
        assert (now["label_version"], now["label_revision"]) == (0, 2)
        r = c.post(url, json={"seeds": outside, "revision": 0})
        assert r.status_code == 409
        assert c.post(url, json={"seeds": outside, "revision": 2}).json()[
            "label_revision"] == 3
        c.app.state.store.close()  # type: ignore[attr-defined]
    # the jobs table keeps the columns an earlier release builds its jobs from (every
    # one of them): the revision lies in a table of its own
    db = sqlite3.connect(str(data / "jobs.sqlite3"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
    assert "label_revision" not in cols and "label_version" in cols
    # an earlier release undoes the correction (v1 -> v0) without counting the revision:
    # the job's revision is then one past the recorded, which no page has seen
    db.execute("UPDATE jobs SET label_version = 0 WHERE id = ?", (job["id"],))
    db.commit()
    with TestClient(create_app(data, token="", warm=False)) as c:
        now = c.get(job["urls"]["self"]).json()
        assert (now["label_version"], now["label_revision"]) == (0, 4)
        assert c.post(url, json={"seeds": outside, "revision": 3}).status_code == 409
        c.app.state.store.close()  # type: ignore[attr-defined]

    def earlier_release_corrects(version: int) -> None:
        """What that release's correction writes: the version and a new correction id."""
        import json
        import secrets

        result = json.loads(db.execute("SELECT result FROM jobs WHERE id = ?",
                                       (job["id"],)).fetchone()[0])
        result["corrections"][-1]["id"] = secrets.token_hex(8)
        db.execute("UPDATE jobs SET label_version = ?, result = ? WHERE id = ?",
                   (version, json.dumps(result), job["id"]))
        db.commit()

    # its undo then a correction bring the version back, not the outline: counted too,
    # each time, also when the version is the one recorded
    for version, revision in ((1, 5), (1, 6)):
        earlier_release_corrects(version)
        with TestClient(create_app(data, token="", warm=False)) as c:
            now = c.get(job["urls"]["self"]).json()
            assert (now["label_version"], now["label_revision"]) == (version, revision)
            c.app.state.store.close()  # type: ignore[attr-defined]
    # a store from before revisions were recorded: each job's counts from its version
    db.execute("DROP TABLE revisions")
    db.execute("UPDATE jobs SET label_version = 1 WHERE id = ?", (job["id"],))
    db.commit()
    db.close()
    with TestClient(create_app(data, token="", warm=False)) as c:
        now = c.get(job["urls"]["self"]).json()
        assert (now["label_version"], now["label_revision"]) == (1, 1)
        r = c.post(url + "/undo", json={"version": 1, "revision": 1})
        assert r.status_code == 200 and r.json()["label_revision"] == 2, r.text


def test_the_declared_409_of_a_correction_fits_both_refusals(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """A correction or undo answers 409 both for an outline changed since its
    ``version`` (``detail``, ``label_version``, ``job``) and for a job not done yet
    (``detail`` only): the schema the API declares for its 409 takes both bodies."""
    import jsonschema
    pytest.importorskip("braintumor.correction")
    spec = client.app.openapi()  # type: ignore[attr-defined]
    stale = spec["components"]["schemas"]["StaleOut"]
    assert stale["required"] == ["detail"]
    for name in ("label_version", "label_revision", "job"):
        assert "absent when the job is not done" in stale["properties"][name]["description"]
    running = client.post("/api/jobs", files=_four(case_files), data={"method": "slow"}).json()
    url = f"/api/jobs/{running['id']}/corrections"
    seeds = [{"x": 1, "y": 1, "z": 1, "label": 0}]
    bodies = [client.post(url, json={"seeds": seeds, "version": 0}),
              client.post(url + "/undo", json={"version": 0})]
    client.post(f"/api/jobs/{running['id']}/cancel")
    job = wait_done(client.get, client.post("/api/jobs", files=_four(case_files),
                                            data={"method": "threshold"}).json()["id"])
    done = job["urls"]["corrections"]
    cx, cy, cz = TUMOUR_VOXEL
    outside = [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}]
    assert client.post(done, json={"seeds": outside, "version": 0}).status_code == 200
    bodies += [client.post(done, json={"seeds": outside, "version": 0}),
               client.post(done + "/undo", json={"version": 0})]
    assert [r.status_code for r in bodies] == [409] * 4, [r.text for r in bodies]
    assert "label_version" not in bodies[0].json() and "job" in bodies[2].json()
    for path in ("/api/jobs/{job_id}/corrections", "/api/jobs/{job_id}/corrections/undo"):
        declared = spec["paths"][path]["post"]["responses"]["409"]
        assert "not done" in declared["description"]
        schema = {**declared["content"]["application/json"]["schema"],
                  "components": spec["components"]}
        for r in bodies:
            jsonschema.validate(r.json(), schema)


def test_a_file_that_is_no_nifti_is_one_sentence_without_nibabel_s_lines(
        client: TestClient, done_job: dict[str, Any], case_files: dict[str, Path],
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """A user's file named .nii.gz that is no NIfTI, as a scan of an upload or as the
    earlier label map of a comparison, is refused in one sentence (400, not 500), and the
    server's log holds none of nibabel's lines about its header: every NIfTI the web
    app takes from a user is read by ``braintumor.io``'s quiet reader (the web code's
    own ``nib.load`` calls read only label maps it wrote, or scans that passed it)."""
    bad = {"garbage": b"this is not a NIfTI file" * 40,
           "zeros": gzip.compress(b"\x00" * 400)}
    capfd.readouterr()
    for what, data in bad.items():
        files = [("files", (p.name, data if m == "t1" else p.read_bytes()))
                 for m, p in case_files.items() if m != "seg"]
        r = client.post("/api/jobs", files=files, data={"method": "threshold"})
        assert r.status_code == 400, (what, r.text)
        assert _detail(r).startswith("Web000_t1.nii.gz: not a readable NIfTI file"), _detail(r)
        r = client.post(done_job["urls"]["self"] + "/compare",
                        files=[("before", ("before.nii.gz", data))])
        assert r.status_code == 400, (what, r.text)
        assert _detail(r).startswith("before.nii.gz: not a readable NIfTI file"), _detail(r)
    said = capfd.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    for line in ("sizeof_hdr", "data code", "not supported", "not recognized"):
        assert line not in said, said


def test_two_corrections_made_on_one_version_at_once_apply_one(
        client: TestClient, case_files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two readers correct the same outline version at the same moment: one correction
    is applied, the other is refused (409), not applied on top of an outline its reader
    has not seen; likewise two undos asked on one version undo one correction."""
    import threading

    correction = pytest.importorskip("braintumor.correction")
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    job = wait_done(client.get, r.json()["id"])
    url = job["urls"]["corrections"]
    slow_correct = correction.correct

    def slow(*args: Any, **kw: Any) -> Any:  # both requests are under way at once
        time.sleep(0.5)
        return slow_correct(*args, **kw)

    monkeypatch.setattr(correction, "correct", slow)
    cx, cy, cz = TUMOUR_VOXEL
    seeds = [[{"x": int(cx), "y": int(cy), "z": int(cz), "label": 0}],
             [{"x": int(cx), "y": int(cy), "z": int(cz), "label": 3}]]
    start = threading.Barrier(2)
    answers: list[Any] = [None, None]

    def ask(i: int, call: Any) -> None:
        start.wait()
        answers[i] = call()

    threads = [threading.Thread(target=ask, args=(i, lambda i=i: client.post(
        url, json={"seeds": seeds[i], "version": 0}))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409], [a.text for a in answers]
    now = client.get(job["urls"]["self"]).json()
    assert now["label_version"] == 1 and now["result"]["corrections"] == 1
    assert len(_outline_files(client, job["id"])) == 2  # version 0 and 1, no 2
    # the one applied is the one answered 200
    won = next(i for i in range(2) if answers[i].status_code == 200)
    got = np.asarray(_load(client.get(job["urls"]["download"]).content).dataobj)
    assert (got[cx, cy, cz] == 0) == (won == 0)
    assert client.post(url, json={"seeds": seeds[1 - won]}).json()["label_version"] == 2
    threads = [threading.Thread(target=ask, args=(i, lambda: client.post(
        url + "/undo", json={"version": 2}))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert client.get(job["urls"]["self"]).json()["label_version"] == 1


def test_a_long_file_name_keeps_its_end(client: TestClient,
                                        case_files: dict[str, Path]) -> None:
    """A name over 200 characters is shortened in its middle: the modality and the file
    type at its end still count."""
    from braintumor.web.upload import safe_display_name

    long = "P" * 230 + "_flair.nii.gz"
    short = safe_display_name("C:\\scans\\" + long)
    assert len(short) == 200 and short.endswith("_flair.nii.gz") and short.startswith("PPP")
    r = client.post("/api/jobs", files=_four(case_files, names={"flair": long}),
                    data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done"
    found = sorted(job["inputs"]["file_modalities"].values())
    assert found == sorted(["t1", "t1ce", "t2", "flair"])
    assert long[:150] in str(job["inputs"]["file_modalities"])
    # a name of exactly the limit, 1,024 characters (of 3 UTF-8 bytes each), is taken
    longest = "患" * (1024 - len("_t2.nii.gz")) + "_t2.nii.gz"
    r = client.post("/api/jobs", files=_four(case_files, names={"t2": longest}),
                    data={"method": "threshold"})
    assert r.status_code == 202, r.text
    assert wait_done(client.get, r.json()["id"])["status"] == "done"


@pytest.mark.parametrize(("name", "case_id"), [
    ("Müller_ü.nii.gz", "Müller_ü"),
    ("Mu\u0308ller.nii.gz", "Müller"),  # decomposed, as a Mac may send it
    ("患者1.nii.gz", "患者1"),
    ("राम_1.png", "राम_1"),  # the vowel sign is a mark, not a letter
    ("Jane Doe\u202e\x07.nii.gz", "Jane_Doe"),  # right-to-left override, a bell
    ("..\\a/b.nii.gz", "a_b"),
    ("∅.nii.gz", "case"),
])
def test_case_ids_keep_letters_of_any_script(name: str, case_id: str) -> None:
    from braintumor.web.inputs import case_id_from_name

    assert case_id_from_name(name) == case_id


def _download_name(disposition: str) -> str:
    """The file name a client takes from a Content-Disposition header: RFC 5987's
    ``filename*`` when there is one, else ``filename``."""
    import re
    from urllib.parse import unquote

    assert disposition.isascii() and disposition.startswith("attachment;"), disposition
    full = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition)
    if full:
        return unquote(full.group(1), errors="strict")
    plain = re.search(r'filename="([^"]+)"', disposition)
    assert plain, disposition
    return plain.group(1)


@pytest.mark.parametrize(("stem", "case_id", "ascii_name"), [
    ("Müller_ü", "Müller_ü", "Muller_u"), ("患者1", "患者1", "1")])
def test_a_case_named_in_another_script_keeps_its_name(
        client: TestClient, case_files: dict[str, Path], stem: str, case_id: str,
        ascii_name: str) -> None:
    names = {m: f"{stem}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")}
    r = client.post("/api/jobs", files=_four(case_files, names=names),
                    data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done" and job["inputs"]["case_id"] == case_id
    # not the expert outline's <case>_seg.nii.gz, which a saved download would replace
    for url, suffix in ((job["urls"]["download"], "_braintumor.nii.gz"),
                        (job["urls"]["report_pdf"], "_report.pdf")):
        d = client.get(url)
        assert d.status_code == 200
        disposition = d.headers["content-disposition"]
        assert _download_name(disposition) == case_id + suffix
        # and a plain name for a client that does not read filename*
        assert f'filename="{ascii_name}{suffix}"' in disposition
    assert case_id in client.get(job["urls"]["report_html"]).text


# -- other inputs --------------------------------------------------------------------------------
def test_modalities_given_for_unnamed_files(client: TestClient,
                                            case_files: dict[str, Path]) -> None:
    names = {"t1": "a.nii.gz", "t1ce": "b.nii.gz", "t2": "c.nii.gz", "flair": "d.nii.gz"}
    files = _four(case_files, names=names)
    r = client.post("/api/jobs", files=files, data={"method": "threshold"})
    assert r.status_code == 400 and "cannot be told" in _detail(r)
    choice = json.dumps({v: k for k, v in names.items()})
    r = client.post("/api/jobs", files=files, data={"method": "threshold", "modalities": choice})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done"
    assert job["result"]["summary"]["lesion_count"] == 1
    # no uncertainty map unless asked for
    assert job["result"]["has_uncertainty"] is False and "uncertainty" not in job["urls"]
    # a wrong choice (T1 and T1ce swapped) is followed, and shows in the result
    swapped = json.dumps({"a.nii.gz": "t1ce", "b.nii.gz": "t1", "c.nii.gz": "t2",
                          "d.nii.gz": "flair"})
    r = client.post("/api/jobs", files=files, data={"method": "threshold",
                                                    "modalities": swapped})
    job2 = wait_done(client.get, r.json()["id"])
    assert job2["inputs"]["file_modalities"]["a.nii.gz"] == "t1ce"
    assert job2["result"]["summary"]["volumes_ml"] != job["result"]["summary"]["volumes_ml"]


def test_modalities_naming_a_file_not_uploaded_are_refused(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """A choice of modality for a file that is not in the upload (a stray space in its
    name) is refused in one sentence naming the files there are, not passed over with
    the files read by their names alone; a name as the browser sent it (its folder, its
    spaces) is the file's."""
    names = {"t1": "p_t1.nii.gz", "t1ce": "p_t1ce.nii.gz", "t2": "p_t2.nii.gz",
             "flair": "p_flair.nii.gz"}
    files = _four(case_files, names=names)
    swapped = json.dumps({"p_t1 .nii.gz": "flair", "p_flair.nii.gz": "t1"})
    before = len(list(client.app.state.store.jobs_root.iterdir()))  # type: ignore
    r = client.post("/api/jobs", files=files, data={"method": "threshold",
                                                    "modalities": swapped})
    assert r.status_code == 400
    assert _detail(r) == ("The modalities field names 'p_t1 .nii.gz', which is not a file "
                          "of this upload (its files are p_t1.nii.gz, p_t1ce.nii.gz, "
                          "p_t2.nii.gz, p_flair.nii.gz).")
    # the same files zipped: said of the zip
    z = _zip_bytes({n: case_files[m].read_bytes() for m, n in names.items()})
    r = client.post("/api/jobs", files=[("files", ("case.zip", z))],
                    data={"method": "threshold", "modalities": swapped})
    assert r.status_code == 400
    assert _detail(r).startswith("The modalities field names 'p_t1 .nii.gz', which is not "
                                 "a file of case.zip (its files are ")
    assert len(list(client.app.state.store.jobs_root.iterdir())) == before  # type: ignore
    as_sent = json.dumps({"C:\\scans\\p_t1.nii.gz ": "t1"})
    r = client.post("/api/jobs", files=files, data={"method": "threshold",
                                                    "modalities": as_sent})
    assert r.status_code == 202, r.text
    assert r.json()["inputs"]["file_modalities"]["p_t1.nii.gz"] == "t1"
    client.delete(r.json()["urls"]["self"])
    # a choice with one 4D file or with 2D pictures has no files to choose among: said
    four = _nifti_bytes(np.zeros(SHAPE + (4,), np.float32))
    picture = _png(np.zeros((32, 32), np.uint8))
    for upload, said in (([("files", ("x.nii.gz", four))], "one 4D NIfTI file"),
                         ([("files", ("s_1.png", picture))], "of 2D pictures")):
        r = client.post("/api/jobs", files=upload, data={"method": "threshold",
                                                         "modalities": as_sent})
        assert r.status_code == 400 and said in _detail(r) and "leave it out" in _detail(r)
    assert len(list(client.app.state.store.jobs_root.iterdir())) == before  # type: ignore


def test_4d_nifti(client: TestClient) -> None:
    case = small_case()
    # Decathlon order FLAIR, T1, T1gd, T2
    data = np.stack([case.image[3], case.image[0], case.image[1], case.image[2]], axis=-1)
    r = client.post("/api/jobs", files=[("files", ("BRATS_001.nii.gz", _nifti_bytes(data)))],
                    data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done" and job["inputs"]["source"] == "nifti4d"
    assert job["inputs"]["case_id"] == "BRATS_001"
    vols = job["result"]["summary"]["volumes_ml"]
    assert vols["ET"] == pytest.approx((case.label == 3).sum() * 1.8e-3, abs=1e-3)
    img = _load(client.get(job["urls"]["download"]).content)
    assert np.allclose(img.affine, AFFINE)


def test_nan_outside_the_brain_is_background_said_by_the_users_name(
        client: TestClient) -> None:
    """A modality whose outside-the-brain voxels are NaN (as brain-masking tools write
    them): the job runs, its warning names the uploaded file, and the image the viewer
    loads holds no NaN; the same in a 4D file."""
    from braintumor.phantom import make_case

    case = make_case((48, 48, 40), seed=2)
    img = case.image.copy()
    img[img == 0] = np.nan  # every channel: NaN wherever the phantom has no head
    names = ["P_t1.nii.gz", "P_t1ce.nii.gz", "P_t2.nii.gz", "P_flair.nii.gz"]
    files = [("files", (n, _nifti_bytes(ch))) for n, ch in zip(names, img, strict=True)]
    r = client.post("/api/jobs", files=files, data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    warning = job["result"]["warning"] or ""
    assert "P_flair.nii.gz: " in warning and "NaN (not a number)" in warning, warning
    assert "flair.nii.gz: " not in warning.replace("P_flair.nii.gz: ", "")
    flair = _load(client.get(job["urls"]["images"]["flair"]).content).get_fdata()
    assert np.isfinite(flair).all() and np.allclose(flair, case.image[3], atol=1e-3)
    r = client.post("/api/jobs", files=[("files", ("four.nii.gz", _nifti_bytes(
        np.stack([img[3], img[0], img[1], img[2]], axis=-1))))], data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    assert "four.nii.gz: " in (job["result"]["warning"] or "")


def test_4d_nifti_in_another_channel_order_is_warned_of(client: TestClient) -> None:
    from braintumor.phantom import make_case

    img = make_case((48, 48, 40), seed=1).image
    # stacked in BraTS's order (T1, T1ce, T2, FLAIR), which the page reads as FLAIR, T1, ...
    data = np.stack(list(img), axis=-1)
    r = client.post("/api/jobs", files=[("files", ("case.nii.gz", _nifti_bytes(data)))],
                    data={"method": "threshold"})
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done"
    warning = job["result"]["warning"] or ""
    assert "case.nii.gz: its channels do not look like FLAIR, T1, T1ce and T2" in warning
    # ... and on its own, from the upload on, with advice the page can follow (not the
    # command line's)
    alone = job["inputs"]["channel_warning"]
    assert alone.startswith("case.nii.gz: its channels do not look like") and alone in warning
    assert "Channel order of the 4D file" in alone and "channels field" in alone
    assert "--channels" not in alone and "upload the four modalities as separate files" in alone
    # the order stated in the upload's channels field is followed, as predict --channels
    # follows it: the T1 is the file's first channel, and nothing is doubted
    r = client.post("/api/jobs", files=[("files", ("case.nii.gz", _nifti_bytes(data)))],
                    data={"method": "threshold", "channels": "t1,t1ce,t2,flair"})
    assert r.status_code == 202, r.text
    stated = wait_done(client.get, r.json()["id"])
    assert stated["status"] == "done", stated
    assert stated["inputs"]["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert "channel_warning" not in stated["inputs"]
    assert "channels do not look like" not in (stated["result"]["warning"] or "")
    t1 = _load(client.get(stated["urls"]["images"]["t1"]).content).get_fdata()
    assert np.allclose(t1, img[0], atol=1e-3)
    # an order that does not name the four once each, or one given with files that are no
    # 4D file, is refused in one sentence
    for fields, files, said in (
            ({"channels": "t1,t1,t2,flair"}, [("files", ("case.nii.gz", _nifti_bytes(data)))],
             "The 'channels' field 't1,t1,t2,flair' does not name T1, T1ce, T2 and FLAIR "
             "once each in the 4D file's order (e.g. t1,t1ce,t2,flair)."),
            ({"channels": "t1,t1ce,t2,flair"},
             [("files", (f"c_{m}.nii.gz", _nifti_bytes(img[i])))
              for i, m in enumerate(("t1", "t1ce", "t2", "flair"))],
             "The 'channels' field gives the channel order of one 4D NIfTI file; this upload "
             "is 4 NIfTI files, one per modality.")):
        bad = client.post("/api/jobs", files=files, data={"method": "threshold", **fields})
        assert bad.status_code == 400 and _detail(bad) == said, bad.text
    # the API's description names the field
    spec = client.get("/openapi.json").json()
    props = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]["properties"]
    assert "t1,t1ce,t2,flair" in props["channels"]["description"]


def _need_dcm2niix() -> None:
    from braintumor.io import dcm2niix_executable

    if dcm2niix_executable() is None:
        pytest.skip("dcm2niix is not installed")


@pytest.mark.slow
def test_dicom_zip_is_converted_matched_and_anonymised(client: TestClient,
                                                       tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    _need_dcm2niix()
    case = small_case(shape=(32, 36, 24))
    z = write_dicom_zip(case, tmp_path / "study.zip")
    r = client.post("/api/jobs", files=[("files", ("study.zip", z.read_bytes()))],
                    data={"method": "threshold", "confirm_series": "true"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "awaiting_input"
    series = job["inputs"]["series"]
    guesses = {s["description"]: s["guess"] for s in series}
    assert guesses == {"AX T1 SE": "t1", "AX T1 SE POST GAD": "t1ce", "AX T2 TSE": "t2",
                       "AX T2 FLAIR": "flair"}
    job_dir = client.app.state.store.job_dir(job["id"])  # type: ignore[attr-defined]
    assert not (job_dir / "dicom").exists()
    for f in job_dir.rglob("*"):
        if f.is_file():
            raw = f.read_bytes()
            if f.suffix == ".gz":
                raw = gzip.decompress(raw)
            assert b"Doe" not in raw and b"PID-778899" not in raw, f
            assert not f.name.endswith((".dcm", ".json")), f
    # a bad assignment is refused, a good one queues the job
    sids = [s["id"] for s in series]
    bad = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": {sids[0]: "t1"}})
    assert bad.status_code == 400 and "No series was chosen" in _detail(bad)
    choice = {s["id"]: s["guess"] for s in series}
    r = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": choice})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["summary"]["volumes_ml"]["ET"] > 0
    again = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": choice})
    assert again.status_code == 409
    # the study's date is kept (no identifier is), and a follow-up comparison gives it;
    # the case is named by nothing the label map's name could be checked against
    assert done["inputs"]["study_date"] == "2024-01-01"
    labels = client.get(done["urls"]["download"]).content
    cmp = client.post(f"/api/jobs/{job['id']}/compare",
                      files=[("before", ("visit1_seg.nii.gz", labels))]).json()
    assert cmp["dates"] == {"before": None, "after": "2024-01-01", "days": None}
    assert cmp["names"]["same"] is None


def _dicom_job_to_assign(client: TestClient, tmp_path: Path) -> dict[str, Any]:
    """A small four-series DICOM study uploaded as a zip, its job awaiting the user's
    assignment of the series."""
    pytest.importorskip("pydicom")
    _need_dcm2niix()
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    r = client.post("/api/jobs", files=[("files", ("study.zip", z.read_bytes()))],
                    data={"method": "threshold", "confirm_series": "true"})
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_a_dicom_upload_choosing_a_series_it_lacks_is_refused(client: TestClient,
                                                                tmp_path: Path) -> None:
    """A series id in the upload's modalities field that the study has not is refused as
    the series call refuses it, not passed over."""
    pytest.importorskip("pydicom")
    _need_dcm2niix()
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    r = client.post("/api/jobs", files=[("files", ("study.zip", z.read_bytes()))],
                    data={"method": "threshold", "modalities": json.dumps({"999": "t1"})})
    assert r.status_code == 400
    assert _detail(r) == "Series '999' is not part of this upload (it has 2, 3, 4, 5)."


def test_dicom_study_without_its_t1(client: TestClient, tmp_path: Path) -> None:
    """Leaving the T1 series out of the assignment runs the watershed on the other three,
    on the T1ce's grid."""
    job = _dicom_job_to_assign(client, tmp_path)
    choice = {s["id"]: s["guess"] for s in job["inputs"]["series"] if s["guess"] != "t1"}
    r = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": choice})
    assert r.status_code == 200, r.text
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["method"] == "watershed"
    assert "no T1 image" in done["result"]["warning"]
    assert sorted(done["urls"]["images"]) == ["flair", "t1ce", "t2"]


def test_a_series_given_against_its_reading_is_warned(client: TestClient,
                                                       tmp_path: Path) -> None:
    """The page's assignment stands as the user gives it, but a series given as another
    modality than it reads as is named in the result's warning, as on the command line."""
    job = _dicom_job_to_assign(client, tmp_path)
    swap = {"t2": "flair", "flair": "t2"}
    choice = {s["id"]: swap.get(s["guess"], s["guess"]) for s in job["inputs"]["series"]}
    r = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": choice})
    assert r.status_code == 200, r.text
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done", done
    warning = done["result"]["warning"]
    assert "series 4 (AX T2 TSE) was given as the FLAIR but reads as T2" in warning
    assert "series 5 (AX T2 FLAIR) was given as the T2 but reads as FLAIR" in warning


@pytest.mark.parametrize("suffix", [".dcm", ""])
def test_loose_dicom_files_of_several_series_are_a_study(client: TestClient,
                                                        tmp_path: Path, suffix: str) -> None:
    """The DICOM files of a study sent as they are (no zip; named IM0001.dcm, or without
    an extension as on a CD) are converted and matched as the zip would be, not read as
    a stack of 2D slices mixing four series."""
    pytest.importorskip("pydicom")
    _need_dcm2niix()
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    with zipfile.ZipFile(z) as zf:
        files = [("files", (Path(n).parent.name + "_" + Path(n).stem + suffix, zf.read(n)))
                 for n in zf.namelist()]
    r = client.post("/api/jobs", files=files, data={"method": "threshold",
                                                    "confirm_series": "true"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "awaiting_input"
    guesses = sorted((s["description"], s["guess"]) for s in job["inputs"]["series"])
    assert guesses == [("AX T1 SE", "t1"), ("AX T1 SE POST GAD", "t1ce"), ("AX T2 FLAIR", "flair"),
                       ("AX T2 TSE", "t2")]
    job_dir = client.app.state.store.job_dir(job["id"])  # type: ignore[attr-defined]
    for f in job_dir.rglob("*"):
        assert not f.name.endswith(".dcm"), f
        if f.is_file():
            raw = f.read_bytes()
            raw = gzip.decompress(raw) if f.suffix == ".gz" else raw
            assert b"Doe" not in raw and b"PID-778899" not in raw, f
    # the files of one series stay what they were: the slices of one 2D stack
    if client.get("/api/info").json()["image2d_available"]:
        flair = [f for f in files if f[1][0].startswith("flair_")][:3]
        one = client.post("/api/jobs", files=flair)
        assert one.status_code == 202, one.text
        assert one.json()["status"] != "awaiting_input" and "series" not in one.json()["inputs"]


@pytest.mark.parametrize("extra", [["preview.jpg"], ["Thumbs.db", "preview.jpg"]])
def test_a_study_beside_its_previews_is_a_study(client: TestClient, tmp_path: Path,
                                                extra: list[str]) -> None:
    """A CD's study folder: each series' files named IM00000 ... (the same names in every
    series), a JPEG preview and a viewer's Thumbs.db beside them. The picture made the
    upload 2D pictures, refused as "Two uploaded pictures are both named IM00000.dcm",
    and Thumbs.db a file not taken: the DICOM files are the study, the others passed
    over and named in the job's notes."""
    from PIL import Image

    pytest.importorskip("pydicom")
    _need_dcm2niix()
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    with zipfile.ZipFile(z) as zf:
        series: dict[str, list[str]] = {}
        for n in sorted(zf.namelist()):
            series.setdefault(Path(n).parent.name, []).append(n)
        files = [("files", (f"IM{i:05d}", zf.read(n)))
                 for names in series.values() for i, n in enumerate(names)]
    jpg = io.BytesIO()
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(jpg, "JPEG")
    others = {"preview.jpg": jpg.getvalue(), "Thumbs.db": b"\xd0\xcf\x11\xe0" + bytes(60)}
    files += [("files", (n, others[n])) for n in extra]
    r = client.post("/api/jobs", files=files, data={"method": "threshold",
                                                    "confirm_series": "true"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "awaiting_input"
    assert sorted(s["guess"] for s in job["inputs"]["series"]) == ["flair", "t1", "t1ce", "t2"]
    assert len(job["inputs"]["files"]) == len(files) - len(extra)
    assert job["inputs"]["notes"][0] == (
        f"{len(extra)} file{'s' if len(extra) > 1 else ''} beside the DICOM files "
        f"{'were' if len(extra) > 1 else 'was'} passed over, not being DICOM "
        f"({', '.join(extra)})")
    # a text file among them is not passed over: a file sent by name is refused for what
    # it is
    r = client.post("/api/jobs", files=[*files[:-len(extra)], ("files", ("README.TXT", b"CD"))],
                    data={"method": "threshold"})
    assert r.status_code in (400, 415), r.text
    assert "README.TXT" in r.json()["detail"]
    # one series' files beside the preview: its slices, the preview passed over and said
    if extra == ["preview.jpg"] and client.get("/api/info").json()["image2d_available"]:
        one = files[:len(series[sorted(series)[0]])][:3] + files[-1:]
        r = client.post("/api/jobs", files=one)
        assert r.status_code == 202, r.text
        assert r.json()["inputs"]["files"] == [f"{f[1][0]}.dcm" for f in one[:-1]]
        job = wait_done(client.get, r.json()["id"])
        assert job["status"] == "done", job
        assert ("1 file beside the DICOM files was passed over, not being DICOM "
                "(preview.jpg)") in (job["result"]["warning"] or "")
    # numbered pictures beside one series' files may be slices of its stack: kept
    from braintumor.web.inputs import _beside_study
    from braintumor.web.upload import UploadedFile

    stack = []
    for name, raw in [(f"slice_{i}.dcm", files[i][1][1]) for i in (7, 8)] + [
            (f"slice_{i}.png", jpg.getvalue()) for i in range(1, 7)]:
        (tmp_path / name).write_bytes(raw)
        stack.append(UploadedFile("files", name, tmp_path / name, len(raw)))
    assert _beside_study(stack) == []
    assert [f.name for f in _beside_study([*stack[:2], UploadedFile(
        "files", "preview.jpg", tmp_path / "slice_1.png", 1)])] == ["preview.jpg"]


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, str(f.relative_to(folder)))
    return buf.getvalue()


def test_a_dicom_upload_says_what_the_command_line_says(client: TestClient,
                                                        tmp_path: Path) -> None:
    """A study whose T1 series has three files cut short (more than the one in ten it may
    do without), whose FLAIR shares its T2's series
    number and is named as a T2 (its inversion time tells): the page lists the series as
    the command line does (labels 2, 3, 4a, 4b; the T1 unreadable, and why), the
    descriptions and acquisition read the FLAIR, and the job's warning says which series
    was lost and why, with no patient identifier and no server path."""
    from braintumor import dicom
    from braintumor.errors import InputError

    pytest.importorskip("pydicom")
    _need_dcm2niix()
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    folder = tmp_path / "exam"
    zipfile.ZipFile(z).extractall(folder)
    for k in (5, 10, 15):
        cut_short(folder / "study" / "t1" / f"IM{k:04d}.dcm")
    restamp_series(folder / "study" / "flair", SeriesNumber=4, SeriesDescription="AX T2",
                   ProtocolName=None, InversionTime=2200, RepetitionTime=9000, EchoTime=120,
                   ScanningSequence=["SE", "IR"])
    why = ("at least 3 of its 24 files are cut short (their pixel data ends early), too many "
           "to leave out (a series may lack one file in ten at most)")
    lost = ("series 2 (AX T1 SE), the study's T1, could not be read, so the case goes "
            f"without it: {why}")
    # the command line, for comparison
    with pytest.raises(InputError) as err:
        dicom.study_source(folder, tmp_path / "cli", choice={"9": "t1"})
    cli_listing = str(err.value).split("it holds ", 1)[1].rstrip(".")
    cli = dicom.study_source(folder, tmp_path / "cli")
    assert cli.notes == [lost]

    # confirmed on the page: the series list in the command line's words
    r = client.post("/api/jobs", files=[("files", ("exam.zip", _zip_folder(folder)))],
                    data={"method": "threshold", "confirm_series": "true"})
    assert r.status_code == 202, r.text
    job = r.json()
    series = job["inputs"]["series"]
    assert [(s["id"], s["description"], s["guess"], s["usable"]) for s in series] == [
        ("2", "AX T1 SE", "t1", False), ("3", "AX T1 SE POST GAD", "t1ce", True),
        ("4a", "AX T2", "flair", True), ("4b", "AX T2 TSE", "t2", True)]
    assert all(set(s) == {"id", "description", "shape", "guess", "usable", "remarks"}
               for s in series)  # no server path
    page_listing = "; ".join(f"{s['id']}: {s['description']}"
                             + (f" ({'; '.join(s['remarks'])})" if s["remarks"] else "")
                             for s in series)
    assert page_listing == cli_listing
    assert series[0]["remarks"] == [f"could not be read: {why}"]
    assert series[2]["remarks"] == ["one of 2 sharing series number 4"]
    bad = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": {
        "2": "t1", "3": "t1ce", "4b": "t2", "4a": "flair"}})
    assert bad.status_code == 400
    assert f"series 2 (AX T1 SE), given as the T1, could not be read: {why}" in _detail(bad)
    r = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": {
        "3": "t1ce", "4b": "t2", "4a": "flair"}})
    assert r.status_code == 200, r.text
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["warning"].startswith(lost), done["result"]["warning"]

    # matched without asking: the same warning, the same volumes as the command line's
    r = client.post("/api/jobs", files=[("files", ("exam.zip", _zip_folder(folder)))],
                    data={"method": "threshold"})
    assert r.status_code == 202, r.text
    auto = wait_done(client.get, r.json()["id"])
    assert auto["status"] == "done", auto
    warning = auto["result"]["warning"]
    assert warning.startswith(lost) and "no T1 image" in warning
    assert auto["inputs"]["series_modalities"] == {"3": "t1ce", "4b": "t2", "4a": "flair"}
    job_dir = client.app.state.store.job_dir(auto["id"])  # type: ignore[attr-defined]
    for m in ("t1ce", "t2", "flair"):
        got = nib.load(str(job_dir / "input" / f"{m}.nii.gz"))
        assert np.array_equal(np.asarray(got.dataobj),
                              np.asarray(nib.load(str(cli.modality_paths[m])).dataobj)), m
    text = json.dumps(auto)
    assert "Doe" not in text and "PID-778899" not in text
    assert str(job_dir) not in text and str(tmp_path) not in text
    for f in job_dir.rglob("*"):
        assert not f.name.endswith((".dcm", ".json")), f

    # the T1ce unreadable: refused, saying which series and why, as the command line does
    for k in (7, 9, 11):
        cut_short(folder / "study" / "t1ce" / f"IM{k:04d}.dcm")
    r = client.post("/api/jobs", files=[("files", ("exam.zip", _zip_folder(folder)))],
                    data={"method": "threshold"})
    assert r.status_code == 400
    assert ("exam.zip: series 3 (AX T1 SE POST GAD), the T1ce, could not be read: at least 3 "
            "of its 24 files are cut short (their pixel data ends early), too many to leave "
            "out") in _detail(r)


def test_a_dicom_upload_with_a_file_cut_short_is_converted_without_it(
        client: TestClient, tmp_path: Path) -> None:
    """The T1's first file and the T1ce's last cut short: the page's series list says
    each was converted without it, the T1ce is not refused, and the job's warning says
    each series ends a slice short, as the command line says it."""
    from braintumor import dicom

    pytest.importorskip("pydicom")
    _need_dcm2niix()
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    folder = tmp_path / "exam"
    zipfile.ZipFile(z).extractall(folder)
    cut_short(folder / "study" / "t1" / "IM0000.dcm")
    cut_short(folder / "study" / "t1ce" / "IM0023.dcm")
    r = client.post("/api/jobs", files=[("files", ("exam.zip", _zip_folder(folder)))],
                    data={"method": "threshold", "confirm_series": "true"})
    assert r.status_code == 202, r.text
    job = r.json()
    series = job["inputs"]["series"]
    assert [(s["id"], s["usable"], s["remarks"]) for s in series[:2]] == [
        (label, True, ["1 of its 24 files cut short and left out: ends a slice short"])
        for label in ("2", "3")]
    r = client.post(f"/api/jobs/{job['id']}/series", json={"modalities": {
        "2": "t1", "3": "t1ce", "4": "t2", "5": "flair"}})
    assert r.status_code == 200, r.text
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done", done
    said = [f"series {label}, the {m}: 1 of its 24 files is cut short and was left out, so "
            "the series ends a slice short"
            for label, m in (("2 (AX T1 SE)", "T1"), ("3 (AX T1 SE POST GAD)", "T1ce"))]
    assert done["result"]["warning"].startswith("; ".join(said)), done["result"]["warning"]
    assert dicom.study_source(folder, tmp_path / "cli").notes == said


def test_2d_picture(client: TestClient) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(
        buf, format="PNG")
    r = client.post("/api/jobs", files=[("files", ("slice.png", buf.getvalue()))])
    info = client.get("/api/info").json()
    if not info["image2d_available"]:
        assert r.status_code == 415 and "2D model" in _detail(r)
        return
    assert r.status_code == 202, r.text
    job = wait_done(client.get, r.json()["id"], timeout=300)
    assert job["status"] == "done", job
    assert job["result"]["kind"] == "2d"
    png = client.get(job["urls"]["download"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_a_zip_of_a_nifti_case_is_its_files(client: TestClient,
                                            case_files: dict[str, Path]) -> None:
    """A case's folder zipped (BraTS names, its label map, the files macOS adds) is read
    as its files sent as they are: modalities from the names, the label map as the
    reference, no DICOM series to confirm even when the page asks; files named only by
    modality take the zip's name as the case's."""
    entries = {f"Web000/{p.name}": p.read_bytes() for p in case_files.values()}
    entries.update({"__MACOSX/Web000/._Web000_t1.nii.gz": b"\0" * 300,
                    "Web000/.DS_Store": b"\0" * 30})
    r = client.post("/api/jobs", files=[("files", ("case.zip", _zip_bytes(entries)))],
                    data={"method": "threshold", "confirm_series": "true"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["inputs"]["case_id"] == "Web000"
    assert job["inputs"]["files"] == ["case.zip"]
    assert job["inputs"]["file_modalities"] == {f"Web000{SUFFIX}.nii.gz": m for m, SUFFIX in
                                                 (("t1", "_t1"), ("t1ce", "_t1ce"),
                                                  ("t2", "_t2"), ("flair", "_flair"))}
    assert job["inputs"]["reference_name"] == "Web000_seg.nii.gz"
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["summary"]["metrics"]["WT"]["dice"] > 0.5
    named = {"t1": "T1.nii.gz", "t1ce": "t1_gd.nii.gz", "t2": "T2.nii.gz", "flair": "flair.nii.gz"}
    r = client.post("/api/jobs", data={"method": "threshold"}, files=[(
        "files", ("Patient 7.zip", _zip_bytes({f"p7/{named[m]}": p.read_bytes()
                                               for m, p in case_files.items() if m != "seg"})))])
    assert r.status_code == 202, r.text
    assert r.json()["inputs"]["case_id"] == "Patient_7"
    assert sorted(r.json()["inputs"]["file_modalities"].values()) == ["flair", "t1", "t1ce",
                                                                       "t2"]
    assert wait_done(client.get, r.json()["id"])["status"] == "done"


def test_a_zip_is_told_by_what_it_holds_not_by_dcm2niix(
        client: TestClient, case_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without dcm2niix a zip of NIfTI files is still a case, while a zipped DICOM study
    is refused (501) with nothing of it kept."""
    import braintumor.io as bio

    monkeypatch.setattr(bio, "dcm2niix_executable", lambda: None)
    jobs = client.app.state.store.jobs_root  # type: ignore[attr-defined]
    r = client.post("/api/jobs", data={"method": "threshold"}, files=[(
        "files", ("case.zip", _zip_bytes({p.name: p.read_bytes() for m, p in case_files.items()
                                          if m != "seg"})))])
    assert r.status_code == 202, r.text
    assert wait_done(client.get, r.json()["id"])["status"] == "done"
    pytest.importorskip("pydicom")
    z = write_dicom_zip(small_case(shape=(32, 36, 24)), tmp_path / "study.zip")
    before = len(list(jobs.iterdir()))
    r = client.post("/api/jobs", files=[("files", ("study.zip", z.read_bytes()))])
    assert r.status_code == 501 and "dcm2niix" in _detail(r)
    assert len(list(jobs.iterdir())) == before


# -- malformed uploads: one sentence, 4xx, never 500 -----------------------------------------
def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _truncated(files: dict[str, Path]) -> list:
    out = _four(files)
    name, data = out[0][1]
    out[0] = ("files", (name, data[: len(data) // 2]))
    return out


def _shape_mismatch(files: dict[str, Path]) -> list:
    out = _four(files)
    out[1] = ("files", (out[1][1][0], _nifti_bytes(np.zeros((10, 10, 10), np.float32))))
    return out


def _inf(files: dict[str, Path]) -> list:
    out = _four(files)
    d = np.ones(SHAPE, np.float32)
    d[0, 0, 0] = np.inf
    out[2] = ("files", (out[2][1][0], _nifti_bytes(d)))
    return out


def _bad_ref_values(files: dict[str, Path]) -> list:
    return _four(files) + [("reference", ("ref_seg.nii.gz",
                                          _nifti_bytes(np.full(SHAPE, 7, np.uint8))))]


def _bad_ref_shape(files: dict[str, Path]) -> list:
    return _four(files) + [("reference", ("ref.nii.gz",
                                          _nifti_bytes(np.zeros((5, 5, 5), np.uint8))))]


MALFORMED = {
    "no files": (lambda f: [("method", (None, b"threshold"))], 400, "No image"),
    "no FLAIR": (lambda f: _four(f)[:3], 400, "lacks the FLAIR image"),
    "one of two": (lambda f: _four(f)[1:2] + [("method", (None, b"cnn"))], 400, "one 3D image"),
    "five files": (lambda f: _four(f) + [_four(f)[0]], 400, "Got 5"),
    "duplicate modality": (lambda f: _four(f, names={"t1": "x_t1.nii.gz",
                                                     "t1ce": "y_t1.nii.gz"}), 400, "both T1"),
    "flair twice": (lambda f: _four(f, names={"t1": "a_flair.nii.gz"}), 400, "both FLAIR"),
    "unknown extension": (lambda f: [("files", ("scan.doc", b"hello"))], 415, "scan.doc"),
    "empty file": (lambda f: [("files", ("a_t1.nii.gz", b""))], 400, "empty"),
    "not a nifti": (lambda f: _four(f, names={})[:3] + [("files", ("P_flair.nii.gz",
                                                                    b"not nifti" * 50))],
                    400, "P_flair.nii.gz"),
    "truncated": (_truncated, 400, "truncated"),
    "shape mismatch": (_shape_mismatch, 400, "co-registered"),
    "infinite voxels": (_inf, 400, "NaN or infinite"),
    "3D single file": (lambda f: [("files", ("one.nii.gz", f["t1"].read_bytes()))], 400,
                       "one 3D image"),
    "4D with 3 channels": (lambda f: [("files", ("x.nii.gz", _nifti_bytes(
        np.zeros(SHAPE + (3,), np.float32))))], 400, "4 channels"),
    "mixed kinds": (lambda f: _four(f)[:3] + [("files", ("a.zip", _zip_bytes({"a": b"1"})))],
                    400, "mixes"),
    "bad reference values": (_bad_ref_values, 400, "label values"),
    "bad reference shape": (_bad_ref_shape, 400, "differs"),
    "reference not nifti": (lambda f: _four(f) + [("reference", ("r.png", b"x"))], 400,
                            "must be a NIfTI"),
    "zip slip": (lambda f: [("files", ("evil.zip", _zip_bytes({"../../etc/x.dcm": b"1"})))],
                 400, "leaves the archive"),
    "absolute zip path": (lambda f: [("files", ("evil.zip", _zip_bytes({"/tmp/x": b"1"})))],
                          400, "leaves the archive"),
    "corrupt zip": (lambda f: [("files", ("bad.zip", b"PK\x03\x04 garbage" * 10))], 400,
                    "not a readable zip"),
    "empty zip": (lambda f: [("files", ("e.zip", _zip_bytes({})))], 400, "no files"),
    "zip of neither": (lambda f: [("files", ("t.zip", _zip_bytes({"a.txt": b"hi" * 100})))],
                       400, "t.zip: holds 1 file (a.txt), neither NIfTI images nor DICOM files; a "
                            "zip must hold one case's NIfTI files (T1, T1ce, T2, FLAIR) or one "
                            "DICOM study."),
    "zip of two cases": (lambda f: [("files", ("t.zip", _zip_bytes(
        {f"{c}/{c}_{m}.nii.gz": b"1" for c in ("A1", "B2") for m in ("t1ce", "flair")})))],
        400, "t.zip: holds the NIfTI files of 2 cases (A1, B2); send one case at a time."),
    "zip of unnamed niftis": (lambda f: [("files", ("t.zip", _zip_bytes(
        {"a.nii.gz": b"1", "b.nii.gz": b"2"})))], 400,
        "t.zip: the modality of a.nii.gz, b.nii.gz cannot be told from their names"),
    "two zips": (lambda f: [("files", ("a.zip", b"1")), ("files", ("b.zip", b"2"))], 400,
                 "one zip"),
    "bad modalities json": (lambda f: _four(f) + [("modalities", (None, b"{nope"))], 400,
                            "not valid JSON"),
    "modalities not object": (lambda f: _four(f) + [("modalities", (None, b"[1]"))], 400,
                              "JSON object"),
    "unknown modality": (lambda f: _four(f) + [("modalities", (None, b'{"a": "pd"}'))], 400,
                         "not one of"),
    "unknown method": (lambda f: _four(f) + [("method", (None, b"magic"))], 400,
                       "not available"),
    "unknown field": (lambda f: [("photo", ("a_t1.nii.gz", b"x"))], 400, "Unknown upload field"),
    # a misspelt field or switch would otherwise run the default silently
    "misspelt text field": (lambda f: _four(f) + [("methd", (None, b"watershed"))], 400,
                            "Unknown upload field 'methd'; the text fields are method, "
                            "modalities,"),
    "switch that is neither": (lambda f: _four(f) + [("accurate", (None, b"tru"))], 400,
                               "The 'accurate' field is 'tru'; give true or false"),
    "files as text": (lambda f: [("files", (None, b"scan.nii.gz"))], 400,
                      "The 'files' field must be a file"),
    # a name far over what a file system allows: said so, not "a malformed form"
    "file name of 5000 characters": (
        lambda f: _four(f, names={"flair": "A" * 5000 + "_flair.nii.gz"}), 400,
        "is 5,013 characters long, over this server's limit of 1,024; rename the file"),
    "file name over the header limit": (
        lambda f: _four(f, names={"flair": "患" * 6000 + "_flair.nii.gz"}), 400,
        "A file name in the upload is over 1,024 characters long"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_upload_is_one_sentence_4xx(client: TestClient,
                                              case_files: dict[str, Path], name: str) -> None:
    build, status, words = MALFORMED[name]
    before = len(list((client.app.state.store.jobs_root).iterdir()))  # type: ignore
    r = client.post("/api/jobs", files=build(case_files))
    assert r.status_code == status, (name, r.status_code, r.text)
    assert words in _detail(r), (name, r.text)
    # nothing of a refused upload is kept
    after = len(list((client.app.state.store.jobs_root).iterdir()))  # type: ignore
    assert after == before


def test_not_multipart_and_empty_body(client: TestClient) -> None:
    r = client.post("/api/jobs", json={"files": []})
    assert r.status_code == 415 and "multipart/form-data" in _detail(r)
    r = client.post("/api/jobs", content=b"", headers={
        "content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and _detail(r)
    r = client.post("/api/jobs", content=b"--xyz\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and _detail(r)
    # a whole file part, the form's closing boundary cut off: said so, not "no image"
    cut = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a_t1.nii.gz"'
           b"\r\n\r\n" + b"x" * 100 + b"\r\n--xyz\r\nContent-Disposition: form-data; "
           b'name="files"; filename="a_t2.nii.gz"\r\n\r\n' + b"y" * 50)
    before = len(list(client.app.state.store.jobs_root.iterdir()))  # type: ignore
    for body in (cut, cut[:cut.index(b"\r\n--xyz")]):
        r = client.post("/api/jobs", content=body, headers={
            "content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 400
        assert _detail(r) == ("The upload ends before its form does (its closing boundary "
                              "is missing): it was cut off or is not a well-formed multipart "
                              "form; send it again.")
    assert len(list(client.app.state.store.jobs_root.iterdir())) == before  # type: ignore


def test_upload_over_limit_is_413(methods: None, tmp_path: Path,
                                  case_files: dict[str, Path]) -> None:
    app = create_app(tmp_path / "d", token="", max_upload_bytes=20_000, warm=False)
    with TestClient(app) as c:
        r = c.post("/api/jobs", files=_four(case_files))
        assert r.status_code == 413 and "limit" in _detail(r)
        # also when the client hides the size (no Content-Length: chunked body)
        body = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.nii\"" \
               b"\r\n\r\n" + b"x" * 50_000 + b"\r\n--b--\r\n"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096]

        r = c.post("/api/jobs", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        assert list((tmp_path / "d" / "jobs").iterdir()) == []
        big_zip = _zip_bytes({"a.dcm": b"\0" * 200_000})  # compresses to < 20 kB
        r = c.post("/api/jobs", files=[("files", ("bomb.zip", big_zip))])
        assert r.status_code == 413 and "unpacks to more than" in _detail(r)


# -- jobs: ids, cancel, delete, crash, restart, TTL ------------------------------------------
def test_unknown_and_malformed_job_ids(client: TestClient) -> None:
    for jid in ("x" * 24, "nope", "..%2F..%2Fjobs.sqlite3", "%2e%2e"):
        r = client.get(f"/api/jobs/{jid}")
        assert r.status_code == 404, jid
    r = client.get("/api/jobs/..%2F..%2Fjobs.sqlite3/download/labels.nii.gz")
    assert r.status_code == 404


def test_job_ids_are_random(client: TestClient) -> None:
    ids = {client.post("/api/jobs", files=[("files", ("a.zip", b"1"))]).status_code
           for _ in range(2)}
    assert ids == {400}
    from braintumor.web.store import new_job_id

    many = {new_job_id() for _ in range(1000)}
    assert len(many) == 1000 and all(len(i) == 24 for i in many)


def test_cancel_running_job_and_results_409(client: TestClient,
                                            case_files: dict[str, Path]) -> None:
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "slow"})
    jid = r.json()["id"]
    t0 = time.monotonic()
    while client.get(f"/api/jobs/{jid}").json()["status"] != "running":
        assert time.monotonic() - t0 < 60
        time.sleep(0.1)
    assert client.get(f"/api/jobs/{jid}/report.pdf").status_code == 409
    c = client.post(f"/api/jobs/{jid}/cancel")
    assert c.status_code == 200
    # from the request on, the job says it is being cancelled, not the stage it was at
    # (the segmenter goes on reporting "waiting" until its process is stopped)
    assert c.json()["stage"] in ("cancelling", "cancelled"), c.json()
    assert client.get(f"/api/jobs/{jid}").json()["stage"] in ("cancelling", "cancelled")
    job = wait_done(client.get, jid, timeout=30)
    assert job["status"] == "cancelled"
    assert job["stage"] == "cancelled" and job["message"] == "Cancelled while running."
    # the pool goes on: a new job still runs
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    assert wait_done(client.get, r.json()["id"])["status"] == "done"


def test_cancel_queued_and_delete(client: TestClient, case_files: dict[str, Path]) -> None:
    slow = client.post("/api/jobs", files=_four(case_files), data={"method": "slow"}).json()
    queued = client.post("/api/jobs", files=_four(case_files),
                         data={"method": "threshold"}).json()
    assert queued["status"] == "queued"
    c = client.post(f"/api/jobs/{queued['id']}/cancel").json()
    assert c["status"] == "cancelled" and c["stage"] == "cancelled"
    d = client.delete(f"/api/jobs/{slow['id']}")
    assert d.status_code == 204
    assert client.get(f"/api/jobs/{slow['id']}").status_code == 404
    store = client.app.state.store  # type: ignore[attr-defined]
    assert not (store.jobs_root / slow["id"]).exists()


def test_a_job_cancelled_while_its_series_are_assigned_stays_cancelled(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel answered while the series call checks the assignment is not undone by
    it: the series call is refused (409) and the job is never queued or run."""
    from braintumor.web import inputs as web_inputs

    store = client.app.state.store  # type: ignore[attr-defined]
    job = store.create("upload", "threshold", status="awaiting_input",
                       inputs={"source": "dicom", "series": [], "needs_confirmation": True})

    def cancelled_meanwhile(job_dir: Path, inputs: dict[str, Any],
                            choice: dict[str, str], given: bool = True) -> dict[str, Any]:
        c = client.post(f"/api/jobs/{job.id}/cancel")
        assert c.status_code == 200 and c.json()["status"] == "cancelled"
        return {**inputs, "modalities": {"t1ce": "input/t1ce.nii.gz"}}

    monkeypatch.setattr(web_inputs, "confirm_series", cancelled_meanwhile)
    r = client.post(f"/api/jobs/{job.id}/series", json={"modalities": {"2": "t1ce"}})
    assert r.status_code == 409
    assert _detail(r) == ("This job was cancelled while its series were being assigned, "
                          "so it stays cancelled.")
    time.sleep(0.5)  # a job put back in the queue would be started by now
    now = client.get(f"/api/jobs/{job.id}").json()
    assert now["status"] == "cancelled" and now["stage"] == "cancelled", now
    # the store's check and write are one step: a job no longer awaiting is left alone
    assert store.update_if(job.id, "awaiting_input", status="queued") is False
    assert store.get(job.id).status == "cancelled"


def test_crash_in_a_job_fails_only_that_job(client: TestClient,
                                            case_files: dict[str, Path]) -> None:
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "crash"})
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "failed"
    assert "stopped unexpectedly" in job["message"]
    assert client.get("/api/info").status_code == 200
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    assert wait_done(client.get, r.json()["id"])["status"] == "done"


_KILLED_SERVER = """
import sys, time
from pathlib import Path
from braintumor.web.worker import _Child
from test_web_support import small_case, write_case_files
job = Path(sys.argv[1])
files = write_case_files(small_case(), job / "input", with_label=False)
child = _Child(None, warm=False)
child.conn.send({"job_dir": str(job), "kind": "upload", "method": "silent", "options": {},
                 "inputs": {"modalities": {m: str(p) for m, p in files.items()}},
                 "methods": {"silent": "test_web_support:segment_silent"}})
child.conn.recv()  # reading the images: the job is under way
print(child.proc.pid, flush=True)
time.sleep(120)
"""


def test_a_killed_server_takes_its_worker_process_with_it(tmp_path: Path) -> None:
    """A server killed outright (kill -9) must not leave its worker computing a job that
    the next server runs again in the same folder."""
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    server = subprocess.Popen([sys.executable, "-c", _KILLED_SERVER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        time.sleep(1.5)  # the worker is busy with the job
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        t0 = time.monotonic()
        while _process_alive(child):
            assert time.monotonic() - t0 < 5, "the worker outlived its server"
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait(10)


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent counts as ended)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state not in ("Z", "X")


def test_jobs_survive_a_restart_and_expire(methods: None, tmp_path: Path,
                                           case_files: dict[str, Path]) -> None:
    data = tmp_path / "data"
    app = create_app(data, token="", warm=False, workers=1)
    with TestClient(app) as c:
        done = c.post("/api/jobs", files=_four(case_files), data={"method": "threshold"}).json()
        wait_done(c.get, done["id"])
    # a job left running by a stopped server is queued again by the next one
    store1 = app.state.store
    left = store1.create("upload", "threshold", status="running",
                         inputs=store1.get(done["id"]).inputs)
    shutil.copytree(store1.job_dir(done["id"]) / "input", store1.job_dir(left.id) / "input")
    app2 = create_app(data, token="", warm=False)
    with TestClient(app2) as c:
        assert c.get(f"/api/jobs/{done['id']}").json()["status"] == "done"
        assert c.get(f"/api/jobs/{done['id']}/download/labels.nii.gz").status_code == 200
        store = app2.state.store
        t0 = time.monotonic()
        while store.count("running") or store.count("queued"):
            assert time.monotonic() - t0 < 60
            time.sleep(0.1)
        assert store.count("done") == 2
    # time-to-live: past it, the job and its files are gone
    app3 = create_app(data, token="", warm=False, ttl_s=0.5, janitor_interval_s=0.2)
    with TestClient(app3) as c:
        j = c.post("/api/jobs", files=_four(case_files), data={"method": "threshold"}).json()
        folder = app3.state.store.job_dir(j["id"])
        assert folder.exists()
        t0 = time.monotonic()
        while folder.exists():
            assert time.monotonic() - t0 < 30
            time.sleep(0.1)
        assert c.get(f"/api/jobs/{j['id']}").status_code == 404
        # the time-to-live in force governs the jobs already there too: the two older
        # jobs, made under 24 h, are older than 0.5 s
        assert c.get(f"/api/jobs/{done['id']}").status_code == 404


@pytest.mark.slow
def test_ten_jobs_at_once_all_finish(client: TestClient, case_files: dict[str, Path]) -> None:
    ids = [client.post("/api/jobs", files=_four(case_files),
                       data={"method": "threshold"}).json()["id"] for _ in range(10)]
    jobs = [wait_done(client.get, i, timeout=300) for i in ids]
    assert [j["status"] for j in jobs] == ["done"] * 10


def test_sample_button_endpoint(client: TestClient) -> None:
    info = client.get("/api/info").json()
    r = client.post("/api/sample", json={"method": "threshold"})
    if not info["sample_available"]:
        assert r.status_code == 501
        return
    assert r.status_code == 202
    job = wait_done(client.get, r.json()["id"])
    assert job["status"] == "done", job
    assert job["inputs"]["source"] == "sample"
    assert job["result"]["summary"]["metrics"] is not None  # the sample has its truth
    assert client.post("/api/sample", json={"method": "nope"}).status_code == 400


def test_a_sample_job_runs_again_after_a_restart(tmp_path: Path) -> None:
    """A sample job cut short by a server restart is run again from the start: its case
    files, linked from the kept sample on the first run, are already in the job folder."""
    pytest.importorskip("braintumor.phantom")
    from braintumor.web import worker

    spec = {"sample": {"shape": [40, 40, 40]}, "sample_cache": str(tmp_path / "cache")}
    job_dir = tmp_path / "job"
    first, inputs = worker._make_sample(job_dir, spec, lambda *a: None)
    again, inputs2 = worker._make_sample(job_dir, spec, lambda *a: None)
    assert inputs2 == inputs and np.array_equal(again.image, first.image)
    # a partial copy left by a stopped server (a cache on another file system) is replaced
    t1 = job_dir / inputs["modalities"]["t1"]
    t1.unlink()
    t1.write_bytes(b"partial")
    worker._make_sample(job_dir, spec, lambda *a: None)
    assert nib.load(str(t1)).shape == (40, 40, 40)


# -- access token -----------------------------------------------------------------------------
def test_token_is_required_on_every_request(methods: None, tmp_path: Path) -> None:
    app = create_app(tmp_path / "d", token="s3cret-token", warm=False)
    with TestClient(app) as c:
        for path in ("/", "/api/info", "/static/app.js", "/docs", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.headers["x-content-type-options"] == "nosniff"
        wrong = c.get("/api/info", headers={"authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        # the scheme a client is to answer with, as HTTP asks of a 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/info",
                     headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        assert c.get("/api/info", headers={"x-braintumor-token": "s3cret-token"}
                     ).status_code == 200
        r = c.get("/?token=s3cret-token", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "httponly" in r.headers["set-cookie"].lower()
        # the cookie now carries the token
        assert c.get("/api/info").status_code == 200
        assert c.get("/api/info").json()["token_required"] is True


def test_2d_job_end_to_end_in_thread_mode(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """The 2D path (upload, job, pictures, download) with a stand-in 2D model, run in the
    server's own thread so the stand-in is seen."""
    from PIL import Image

    from braintumor import slices2d

    def fake_segment(image: np.ndarray) -> Any:
        grey = image[..., 0] if image.ndim == 3 else image
        return slices2d.SliceResult(grey > 128, (grey > 128).astype(np.float32),
                                    {"model_version": "fake-2d"})

    monkeypatch.setattr(slices2d, "segment_image", fake_segment)
    monkeypatch.setattr(slices2d, "model_available", lambda: True)
    pic = np.zeros((40, 50), np.uint8)
    pic[10:20, 10:30] = 200
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG")
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        assert c.get("/api/info").json()["image2d_available"] is True
        r = c.post("/api/jobs", files=[("files", ("slice.png", buf.getvalue()))])
        assert r.status_code == 202, r.text
        job = wait_done(c.get, r.json()["id"])
        assert job["status"] == "done", job
        assert job["result"]["area_px"] == 200
        assert job["result"]["model_version"] == "fake-2d"
        saved = c.get(job["urls"]["download"])
        mask = np.asarray(Image.open(io.BytesIO(saved.content)))
        assert mask.shape == (40, 50) and (mask > 0).sum() == 200
        # the download is a file saved under the picture's name, as the command line
        # names it, while the page's own picture of the mask is shown, not saved
        assert saved.headers["content-disposition"] == 'attachment; filename="slice_mask.png"'
        assert "content-disposition" not in c.get(job["urls"]["image2d"]["mask"]).headers
        for k in ("input", "overlay"):
            assert c.get(job["urls"]["image2d"][k]).status_code == 200
        bad = c.post("/api/jobs", files=[("files", ("broken.png", b"\x89PNG garbage"))])
        assert bad.status_code == 400 and "broken.png" in _detail(bad)


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _fake_2d(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in 2D model: a picture's pixels over 128 are the tumour, its grey values
    the probabilities, one picture or a stack."""
    from braintumor import slices2d

    def fake_segment(image: np.ndarray) -> Any:
        return slices2d.SliceResult(image[..., 0] > 128, image[..., 0].astype(np.float32),
                                    {"model_version": "fake-2d"})

    def fake_stack(images: list[np.ndarray]) -> Any:
        return [fake_segment(i) for i in images]

    monkeypatch.setattr(slices2d, "segment_image", fake_segment)
    monkeypatch.setattr(slices2d, "segment_stack", fake_stack)
    monkeypatch.setattr(slices2d, "model_available", lambda: True)


def test_2d_stack_and_pixel_size_in_thread_mode(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """Several pictures are the slices of one patient: put in slice order, segmented as
    a volume, shown slice by slice, areas in mm^2 when the pixel size is given, every
    mask in one zip; mask files are left out; sizes must agree."""
    import zipfile

    from PIL import Image

    from braintumor import slices2d

    seen: list[list[int]] = []

    def fake_stack(images: list[np.ndarray]) -> Any:
        seen.append([int((np.asarray(i) > 128).sum()) for i in images])
        return [slices2d.SliceResult(i[..., 0] > 128, (i[..., 0] > 128).astype(np.float32),
                                     {"model_version": "fake-2d"}) for i in images]

    _fake_2d(monkeypatch)
    monkeypatch.setattr(slices2d, "segment_stack", fake_stack)
    pics = {}
    for num, area in ((10, 0), (2, 40), (1, 10)):
        a = np.zeros((30, 36), np.uint8)
        a[2:2 + area // 10, 5:15] = 200
        pics[f"p_{num}.png"] = _png(a)
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        files = [("files", (n, b)) for n, b in pics.items()]
        files.append(("files", ("p_1_mask.png", pics["p_1.png"])))
        r = c.post("/api/jobs", files=files, data={"pixel_mm": "0,5"})
        assert r.status_code == 202, r.text
        job = wait_done(c.get, r.json()["id"])
        assert job["status"] == "done", job
        res = job["result"]
        assert seen[-1] == [10, 40, 0]  # slice order by number, the mask file left out
        assert res["slices"] == 3 and res["slice_names"] == ["p_1.png", "p_2.png", "p_10.png"]
        assert job["inputs"]["case_id"] == "p"  # the patient's stem, not the first slice's
        assert res["slice_area_px"] == [10, 40, 0] and res["show_slice"] == 1
        assert res["largest_slice"] == 1 and res["largest_slice_area_px"] == 40
        assert res["area_px"] == 50 and res["tumour_slices"] == 2
        assert res["pixel_mm"] == 0.5 and res["area_mm2"] == 12.5
        # the largest lesion: the 4 x 10 pixel block of slice p_2, its diagonal longest
        d = res["diameters"]
        assert d["slice"] == 1 and d["unit"] == "mm" and d["measurable"] is False
        assert d["longest"] == pytest.approx(0.5 * np.hypot(4, 10), abs=0.05)
        assert "p_1_mask.png" in res["warning"]
        mid = c.get(job["urls"]["slice2d"] + "1/mask.png")
        assert mid.status_code == 200
        assert (np.asarray(Image.open(io.BytesIO(mid.content))) > 0).sum() == 40
        assert c.get(job["urls"]["slice2d"] + "3/overlay.png").status_code == 404
        assert c.get(job["urls"]["slice2d"] + "0/photo.png").status_code == 404
        z = zipfile.ZipFile(io.BytesIO(c.get(job["urls"]["download"]).content))
        assert sorted(z.namelist()) == ["p_10_mask.png", "p_1_mask.png", "p_2_mask.png"]
        assert (np.asarray(Image.open(z.open("p_1_mask.png"))) > 0).sum() == 10
        # the report: area in mm^2, every slice, the picture with the largest outline
        page = c.get(job["urls"]["report_html"])
        assert page.status_code == 200
        for text in ("12.5 mm²", "p_10.png", "10.0 mm² (40 pixels)", "2 of 3", "0.5 mm",
                     "not a medical device", f"{d['text']} (slice 2, p_2.png); under 10 x 10"):
            assert text in page.text, text
        (shown,) = _assert_self_contained(page.text, pictures=1)
        overlay = Image.open(io.BytesIO(c.get(job["urls"]["image2d"]["overlay"]).content))
        assert np.array_equal(np.asarray(shown), np.asarray(overlay))
        pdf = c.get(job["urls"]["report_pdf"])
        assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
        # one picture with a pixel size: mm^2 as well
        r = c.post("/api/jobs", files=[("files", ("one.png", pics["p_2.png"]))],
                   data={"pixel_mm": "0.25"})
        one = wait_done(c.get, r.json()["id"])["result"]
        assert one["slices"] == 1 and one["area_px"] == 40 and one["area_mm2"] == 2.5
        # without: pixels only
        r = c.post("/api/jobs", files=[("files", ("one.png", pics["p_2.png"]))])
        plain = wait_done(c.get, r.json()["id"])
        assert "area_mm2" not in plain["result"]
        assert "not given: areas in pixels" in c.get(plain["urls"]["report_html"]).text
        assert c.get(plain["urls"]["report_pdf"]).content[:5] == b"%PDF-"
        # every picture with its mask: the outline is scored as one volume
        ref = {k: np.zeros((30, 36), np.uint8) for k in (1, 2, 10)}
        ref[1][2:3, 5:15] = 255  # = the outline (10 pixels)
        ref[2][2:4, 5:15] = 255  # half of the outline's 40 pixels
        with_masks = [f for f in files if "_mask" not in f[1][0]] + [
            ("files", (f"p_{k}_mask.png", _png(v))) for k, v in ref.items()]
        r = c.post("/api/jobs", files=with_masks)
        scored = wait_done(c.get, r.json()["id"])
        m = scored["result"]["metrics_2d"]
        assert m["dice"] == pytest.approx(2 * 30 / (50 + 30))
        assert m["slice_dice_mean"] == pytest.approx((1.0 + 2 * 20 / 60) / 2)
        assert (m["tumour_slices"], m["tumour_free_slices"], m["fp_slices"],
                m["missed_slices"]) == (2, 1, 0, 0)
        # p_1, p_2, p_10: their numbers skip 3-9, which is said and nothing else
        assert scored["result"]["has_reference"]
        assert scored["result"]["warning"].startswith("the slice numbering has gaps")
        assert "0.750" in c.get(scored["urls"]["report_html"]).text
        # the reference's outline is drawn over the model's, in its own colour, where the
        # reference mask lies (slice p_2: its rows 2-3)
        from braintumor.slices2d import REFERENCE_COLOUR

        order = scored["result"]["slice_names"]
        k = order.index("p_2.png")
        got = c.get(f"{scored['urls']['slice2d']}{k}/reference.png")
        assert got.status_code == 200
        pic = np.asarray(Image.open(io.BytesIO(got.content)).convert("RGB"))
        blue = np.all(pic == REFERENCE_COLOUR, axis=2)
        assert blue.any() and not blue[ref[2] == 0].any()
        # a job without a reference has no such picture: one sentence, 404
        none = c.get(plain["urls"]["image2d"]["reference"])
        assert none.status_code == 404 and "no reference mask" in _detail(none)
        # a real patient's stack: dozens of slices with their masks in one upload
        many = [("files", (f"s_{k}.png", pics["p_2.png"])) for k in range(1, 41)] + \
            [("files", (f"s_{k}_mask.png", _png(ref[2]))) for k in range(1, 41)]
        r = c.post("/api/jobs", files=many)
        assert r.status_code == 202, r.text
        big = wait_done(c.get, r.json()["id"])["result"]
        assert big["slices"] == 40 and big["metrics_2d"]["dice"] == pytest.approx(2 * 20 / 60)
        # one picture with its mask
        r = c.post("/api/jobs", files=[("files", ("q.png", pics["p_2.png"])),
                                       ("files", ("q_mask.tif", _png(ref[2])))])
        one_m = wait_done(c.get, r.json()["id"])["result"]["metrics_2d"]
        assert one_m["dice"] == pytest.approx(2 * 20 / 60)
        # faults: one sentence, 400
        odd = _png(np.zeros((20, 20), np.uint8))
        bad = c.post("/api/jobs", files=[("files", ("q.png", pics["p_2.png"])),
                                         ("files", ("q_mask.png", odd))])
        assert bad.status_code == 400 and "q_mask.png is 20x20" in _detail(bad)
        bad = c.post("/api/jobs", files=files[:1] + [("files", ("p_3.png", odd))])
        assert bad.status_code == 400 and "p_3.png is 20x20" in _detail(bad)
        assert "same size" in _detail(bad)
        for px in ("abc", "0", "-1", "100"):
            bad = c.post("/api/jobs", files=files[:2], data={"pixel_mm": px})
            assert bad.status_code == 400 and "pixel size" in _detail(bad), px
        only_masks = [("files", ("a_mask.png", odd)), ("files", ("b_mask.png", odd))]
        bad = c.post("/api/jobs", files=only_masks)
        assert bad.status_code == 400 and "mask" in _detail(bad)


def test_a_0_1_reference_mask_is_read_as_the_command_line_reads_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A ``<name>_mask.png`` of only 0 and 1 uploaded with its picture is the reference
    where it is 1, not an empty one (Dice 1 against the same outline)."""
    _fake_2d(monkeypatch)
    pic = np.zeros((30, 36), np.uint8)
    pic[5:15, 5:15] = 200
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        r = c.post("/api/jobs", files=[("files", ("q.png", _png(pic))),
                                       ("files", ("q_mask.png", _png((pic > 0).astype(np.uint8))))])
        assert r.status_code == 202, r.text
        m = wait_done(c.get, r.json()["id"])["result"]["metrics_2d"]
        assert m["dice"] == pytest.approx(1.0)


def test_2d_uploads_that_are_no_one_patients_stack_are_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pictures that are not the numbered slices of one patient (two unnumbered pictures,
    two patients' slices), a picture under 8x8 pixels, and an unknown method are refused
    at upload (400, one sentence), as the command line would not stack or read them; a
    stack whose numbers skip or repeat one is made, with a note naming those numbers."""
    _fake_2d(monkeypatch)
    pic = _png(np.full((30, 36), 90, np.uint8))
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        for names in (("real.png", "grey.png"), ("A_1.png", "A_2.png", "B_1.png", "B_2.png")):
            bad = c.post("/api/jobs", files=[("files", (n, pic)) for n in names])
            assert bad.status_code == 400, names
            assert "one picture, or the numbered slices of one patient" in _detail(bad)
        thin = c.post("/api/jobs",
                      files=[("files", ("thin.png", _png(np.zeros((50, 1), np.uint8))))])
        assert thin.status_code == 400 and "thin.png: the picture is 1x50 pixels" in _detail(thin)
        bogus = c.post("/api/jobs", files=[("files", ("one.png", pic))], data={"method": "bogus"})
        assert bogus.status_code == 400 and "'bogus' method" in _detail(bogus)
        r = c.post("/api/jobs", files=[("files", (n, pic)) for n in
                                       ("pt_1.png", "pt_2.png", "pt_4.png", "pt_04.png")])
        assert r.status_code == 202, r.text
        warning = wait_done(c.get, r.json()["id"])["result"]["warning"]
        assert "number 3 is missing" in warning and "number 4 is given twice" in warning


def test_2d_slices_of_one_name_keep_each_mask_in_the_zip(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two pictures of one name are refused at upload (400, one sentence), as two NIfTI
    files of one name are; pictures of one stem but not one type (slice1.png and
    slice1.jpg) are a stack whose masks.zip keeps each mask under a name of its own,
    so unzipping it loses none."""
    from PIL import Image

    from braintumor.web.worker import mask_entry_names

    _fake_2d(monkeypatch)
    pic = np.zeros((30, 36), np.uint8)
    pic[5:15, 5:15] = 200
    jpg = io.BytesIO()
    Image.fromarray(pic).save(jpg, format="JPEG")
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        bad = c.post("/api/jobs", files=[("files", ("s1.png", _png(pic))),
                                         ("files", ("s1.png", _png(255 - pic)))])
        assert bad.status_code == 400
        assert _detail(bad) == ("Two uploaded pictures are both named s1.png; give each "
                                "slice its own file name.")
        r = c.post("/api/jobs", files=[("files", ("slice1.png", _png(pic))),
                                       ("files", ("slice1.jpg", jpg.getvalue()))])
        assert r.status_code == 202, r.text
        job = wait_done(c.get, r.json()["id"])
        assert job["status"] == "done", job
        z = zipfile.ZipFile(io.BytesIO(c.get(job["urls"]["download"]).content))
        assert sorted(z.namelist()) == ["slice1.jpg_mask.png", "slice1.png_mask.png"]
    # the command line's names while no two stems meet; letter case aside as well
    assert mask_entry_names(["p_1.png", "p_2.tif"]) == ["p_1_mask.png", "p_2_mask.png"]
    assert mask_entry_names(["S1.png", "s1.png", "s2.png"]) == [
        "S1.png_mask.png", "s1.png_2_mask.png", "s2_mask.png"]
    assert mask_entry_names(["a.png", "a.png"]) == ["a.png_mask.png", "a.png_2_mask.png"]
    # a numbered name that another picture's name already is: numbered further
    got = mask_entry_names(["a.png_3.png", "a.png", "A.png"])
    assert len({g.casefold() for g in got}) == 3, got


def test_2d_dicom_slice_keeps_pixels_and_spacing_not_identifiers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A single-slice DICOM file is a 2D picture: its PixelSpacing gives areas in mm^2
    (a pixel size typed in wins), and the DICOM file, with the patient's name, is gone."""
    pytest.importorskip("pydicom")
    from braintumor import slices2d
    from test_web_support import write_dicom_slice

    _fake_2d(monkeypatch)
    px = np.zeros((32, 32), np.uint16)
    px[4:14, 4:12] = 900  # 80 pixels
    dcm = write_dicom_slice(tmp_path / "IM0001.dcm", px, (0.5, 0.5)).read_bytes()
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        r = c.post("/api/jobs", files=[("files", ("IM0001.dcm", dcm))])
        assert r.status_code == 202, r.text
        job = wait_done(c.get, r.json()["id"])
        res = job["result"]
        assert res["area_px"] == 80 and res["area_mm2"] == 20.0
        assert res["pixel_source"] == "DICOM PixelSpacing"
        assert "0.5 mm (DICOM PixelSpacing)" in c.get(job["urls"]["report_html"]).text
        kept = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
        assert not [p for p in kept if p.suffix == ".dcm"]
        assert not any(b"Doe^Jane" in p.read_bytes() for p in kept)
        r = c.post("/api/jobs", files=[("files", ("IM0001.dcm", dcm))], data={"pixel_mm": "1"})
        given = wait_done(c.get, r.json()["id"])["result"]
        assert given["area_mm2"] == 80.0 and given["pixel_source"] == "given"
        # a stack of DICOM slices named by UIDs: ordered by InstanceNumber, not name
        seen: list[list[int]] = []

        def fake_stack(images: list[np.ndarray]) -> Any:
            seen.append([int((np.asarray(i) > 128).sum()) for i in images])
            return [slices2d.SliceResult(i[..., 0] > 128, i[..., 0].astype(np.float32),
                                         {"model_version": "fake-2d"}) for i in images]

        monkeypatch.setattr(slices2d, "segment_stack", fake_stack)
        stack = []
        uids = ((2, "1.2.3.9.dcm", 4), (1, "1.2.3.7.dcm", 2), (3, "1.2.3.8.dcm", 6))
        for inst, name, rows in uids:
            a = np.zeros((32, 32), np.uint16)
            a[2:2 + rows, 4:12] = 900
            a[31, 31] = 1  # not all-zero outside, so the scaling is the same
            path = write_dicom_slice(tmp_path / name, a, (0.5, 0.5), instance=inst)
            stack.append(("files", (name, path.read_bytes())))
        r = c.post("/api/jobs", files=stack)
        res = wait_done(c.get, r.json()["id"])["result"]
        assert res["slice_names"] == ["1.2.3.7.dcm", "1.2.3.9.dcm", "1.2.3.8.dcm"]
        assert seen[-1] == [16, 32, 48] and res["pixel_source"] == "DICOM PixelSpacing"
        bad = c.post("/api/jobs", files=[("files", ("x.dcm", b"DICM? no"))])
        assert bad.status_code == 400 and "x.dcm: not a readable DICOM" in _detail(bad)


def test_store_ttl_spares_work_in_progress(tmp_path: Path) -> None:
    from braintumor.web.store import JobStore

    store = JobStore(tmp_path, ttl_s=0.0)
    up = store.create("upload", "pending", status="uploading")
    run = store.create("upload", "threshold", status="running")
    old = store.create("upload", "threshold", status="done")
    assert set(store.purge_expired()) == {old.id}
    assert store.get(up.id) is not None and store.get(run.id) is not None
    assert not store.job_dir(old.id).exists()
    store.update(run.id, status="done")
    assert store.get(run.id) is None  # expired once it is no longer running
    with pytest.raises(KeyError):
        store.job_dir("../../etc")
    store.close()


def test_the_time_to_live_runs_from_when_a_job_finished(tmp_path: Path) -> None:
    """A job waiting its turn is not deleted before it ran, nor one that ran long the
    moment it finishes: it is kept the time-to-live after it finished."""
    from braintumor.web.store import JobStore

    store = JobStore(tmp_path, ttl_s=0.5)
    queued = store.create("upload", "threshold", status="queued")
    waiting = store.create("upload", "threshold", status="queued")
    time.sleep(0.7)
    assert store.purge_expired() == []
    assert store.get(queued.id) is not None and store.get(waiting.id) is not None
    assert store.claim_next() is not None  # the older one runs
    time.sleep(0.7)  # longer than the time-to-live
    store.finish(queued.id, "done", result={})
    store.request_cancel(waiting.id)
    assert store.purge_expired() == []
    assert store.get(queued.id).status == "done"  # type: ignore[union-attr]
    assert store.get(waiting.id).status == "cancelled"  # type: ignore[union-attr]
    time.sleep(0.7)
    assert set(store.purge_expired()) == {queued.id, waiting.id}
    store.close()
    # a server started with a shorter time-to-live counts it from the end too
    store = JobStore(tmp_path, ttl_s=3600.0)
    old = store.create("upload", "threshold", status="running")
    store.update(old.id, created=time.time() - 7200)
    store.finish(old.id, "failed", "The segmentation failed.")
    store.close()
    store = JobStore(tmp_path, ttl_s=1800.0)
    store.claim()
    assert store.get(old.id) is not None
    store.release()
    store.close()


def test_a_failed_job_does_not_keep_the_stage_it_had_reached(tmp_path: Path) -> None:
    from braintumor.web.store import JobStore

    store = JobStore(tmp_path)
    job = store.create("upload", "cnn", status="running")
    store.set_progress(job.id, 0.4, "CNN, 1 model")
    store.finish(job.id, "failed", "The segmentation process stopped unexpectedly.")
    assert store.get(job.id).stage == "failed"  # type: ignore[union-attr]
    store.close()


def test_cnn_fast_mode_is_the_default_and_accurate_turns_it_off(
        client: TestClient, case_files: dict[str, Path]) -> None:
    from braintumor.web.app import _job_options

    assert _job_options(False) == {"fast": True}
    assert _job_options(True, accurate=True) == {"uncertainty": True}
    fast = client.post("/api/jobs", files=_four(case_files),
                       data={"method": "threshold"}).json()
    accurate = client.post("/api/jobs", files=_four(case_files),
                           data={"method": "threshold", "accurate": "true"}).json()
    jobs = [wait_done(client.get, j["id"]) for j in (fast, accurate)]
    assert [j["status"] for j in jobs] == ["done", "done"]
    assert jobs[0]["inputs"]["options"].get("fast") is True
    assert "fast" not in jobs[1]["inputs"]["options"]


def test_align_is_passed_to_the_job_and_reported(client: TestClient,
                                                  case_files: dict[str, Path]) -> None:
    from braintumor.web.app import _job_options

    assert _job_options(False, align=True) == {"fast": True, "align": True}
    job = client.post("/api/jobs", files=_four(case_files),
                      data={"method": "threshold", "align": "true"}).json()
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done" and done["inputs"]["options"]["align"] is True
    assert "by rigid registration" in json.dumps(done["result"]) or \
        "kept as acquired" in json.dumps(done["result"])


def test_bias_correction_is_passed_to_the_job_and_reported(
        client: TestClient, case_files: dict[str, Path]) -> None:
    from braintumor.web.app import _job_options

    assert _job_options(False, bias_correct=True) == {"fast": True, "bias_correct": True}
    job = client.post("/api/jobs", files=_four(case_files),
                      data={"method": "threshold", "bias_correct": "true"}).json()
    done = wait_done(client.get, job["id"])
    assert done["status"] == "done" and done["inputs"]["options"]["bias_correct"] is True
    assert '"bias_corrected": true' in json.dumps(done["result"])


def test_compare_with_an_earlier_scan(client: TestClient, done_job: dict[str, Any]) -> None:
    """The job's outline against an earlier label map: itself is no change, a larger
    earlier tumour a shrinkage; a file that is no label map is one 400 sentence."""
    url = f"/api/jobs/{done_job['id']}/compare"
    now = client.get(done_job["urls"]["download"]).content
    same = client.post(url, files=[("before", ("visit1_seg.nii.gz", now))])
    assert same.status_code == 200, same.text
    doc = same.json()
    assert all(c["percent"] in (0, None) for c in doc["volumes"].values())
    assert doc["rows"][0][0] == "Whole tumour (mL)" and "Size only" in doc["caveat"]
    assert doc["files"]["before"] == "visit1_seg.nii.gz"
    # an earlier outline twice as large in every direction (same centre, 2023 labels)
    lab = np.asarray(_load(now).dataobj)
    grown = np.zeros_like(lab)
    idx = np.argwhere(lab > 0)
    c = idx.mean(0)
    for v_old, v_new in ((2, 2), (1, 1), (4, 3)):
        pts = np.argwhere(lab == v_old)
        for d in np.ndindex(2, 2, 2):
            q = np.clip(np.rint(c + 2 * (pts - c)).astype(int) + d, 0,
                        np.array(lab.shape) - 1)
            grown[q[:, 0], q[:, 1], q[:, 2]] = v_new
    bigger = client.post(url, files=[("before", ("old-seg.nii.gz", _nifti_bytes(grown)))])
    assert bigger.status_code == 200, bigger.text
    assert bigger.json()["volumes"]["WT"]["reading"] == "decrease of 65 % or more"
    for name, content, says in (
            ("notes.txt", b"hello", "must be a NIfTI file"),
            ("img.nii.gz", _nifti_bytes(np.full((8, 8, 8), 0.5, np.float32)),
             "is not a label map")):
        r = client.post(url, files=[("before", (name, content))])
        assert r.status_code == 400 and says in r.json()["detail"], r.text
        assert r.json()["detail"].startswith(name) and "/jobs/" not in r.text
    # a name that is legal on the client but too long for the server's disk as it is
    for name in ("\u00e9" * 150 + ".nii.gz", "\u8111\u80bf\u7624" * 30 + "_seg.nii"):
        raw = now if name.endswith(".gz") else gzip.decompress(now)
        r = client.post(url, files=[("before", (name, raw))])
        assert r.status_code == 200, r.text
        assert r.json()["files"]["before"] == name
    r = client.post(url, files=[("files", ("a.nii.gz", now))])
    assert r.status_code == 400 and "field 'before'" in r.json()["detail"]
    assert client.post("/api/jobs/nope/compare",
                       files=[("before", ("a.nii.gz", now))]).status_code == 404


def _grown(lab: np.ndarray) -> np.ndarray:
    """A label map (BraTS 2021 values) with its tumour one voxel larger all round."""
    from scipy import ndimage

    out = lab.copy()
    out[(out == 0) & ndimage.binary_dilation(lab > 0)] = 2
    return out


def test_compare_warns_when_the_earlier_file_is_not_this_patients(
        client: TestClient, done_job: dict[str, Any]) -> None:
    """A label map named for another case, whose field of view lies elsewhere, or that is
    this outline itself gets a warning before the comparison (shown, never refused); one
    named for this case (Web000) on its grid gets none. A label map has no date and this
    job's NIfTI files none either: both said unknown, none made up."""
    url = f"/api/jobs/{done_job['id']}/compare"
    assert done_job["inputs"]["case_id"] == "Web000"
    now = client.get(done_job["urls"]["download"]).content
    earlier = _nifti_bytes(_grown(np.asarray(_load(now).dataobj)).astype(np.uint8))

    def post(name: str, content: bytes) -> dict[str, Any]:
        r = client.post(url, files=[("before", (name, content))])
        assert r.status_code == 200, r.text
        return dict(r.json())

    other = post("Brats18_2013_11_1_seg.nii.gz", earlier)
    assert other["warnings"] == [
        "Check that both are one patient's: the earlier file, Brats18_2013_11_1_seg.nii.gz, "
        "and this case, Web000, are named for different cases. Names often differ for one "
        "patient, so the comparison is shown; between two patients it means nothing."]
    assert other["names"]["same"] is False and other["rows"][0][0] == "Whole tumour (mL)"
    assert other["dates"] == {"before": None, "after": None, "days": None}
    # dates the reader types: the time between the scans; one that is none, lies ahead or
    # reverses the order is one sentence
    dated = client.post(url, files=[("before", ("Web000_seg.nii.gz", earlier))],
                        data={"before_date": "2024-01-15", "after_date": "2024-04-14"})
    assert dated.status_code == 200, dated.text
    assert dated.json()["dates"] == {"before": "2024-01-15", "after": "2024-04-14",
                                     "days": 90}
    for data, words in (({"before_date": "15.01.2024"}, "is not a date"),
                        ({"before_date": "2999-01-01"}, "lies ahead of today"),
                        ({"before_date": "2024-05-01", "after_date": "2024-04-14"},
                         "is not before this scan's"),
                        ({"beforedate": "2024-01-15"}, "Unknown field 'beforedate'")):
        bad = client.post(url, files=[("before", ("Web000_seg.nii.gz", earlier))], data=data)
        assert bad.status_code == 400 and words in _detail(bad), (data, bad.text)
    for name in ("Web000_seg.nii.gz", "Web000_braintumor (1).nii.gz",
                 "web000-visit2_labels.nii.gz"):
        same = post(name, earlier)
        assert same["warnings"] == [] and same["names"]["same"] is True, (name, same)
        assert same["grids"]["same"] is True and same["notes"] == []
    # a name that names no one: not checked, and said so
    unnamed = post("seg.nii.gz", earlier)
    assert unnamed["warnings"] == [] and unnamed["names"]["same"] is None
    assert "not checked" in unnamed["notes"][0]
    # this outline given as the earlier one
    itself = post("Web000_braintumor.nii.gz", now)
    assert len(itself["warnings"]) == 1 and "one outline" in itself["warnings"][0]
    # another grid in the same place: a note; a field of view elsewhere: a warning
    lab = np.asarray(_load(earlier).dataobj)
    fine = np.repeat(lab, 2, axis=0)
    aff = AFFINE.copy()
    aff[:3, 0] /= 2
    regrid = post("Web000_seg.nii.gz", _nifti_bytes(fine, aff))
    assert regrid["warnings"] == [] and regrid["grids"]["same"] is False
    assert regrid["notes"] == [
        "The two lie on different grids (earlier 80 x 44 x 32 voxels of 0.6 x 1 x 1.5 mm, "
        "this one 40 x 44 x 32 voxels of 1.2 x 1 x 1.5 mm), as two scans often do; each is "
        "measured on its own."]
    away = AFFINE.copy()
    away[:3, 3] += [0, 500, 0]
    moved = post("Web000_seg.nii.gz", _nifti_bytes(lab, away))
    assert len(moved["warnings"]) == 1 and "do not overlap in scanner space" in \
        moved["warnings"][0]


def test_compare_reads_an_earlier_map_of_the_other_convention(
        client: TestClient, done_job: dict[str, Any]) -> None:
    """An earlier BraTS 2023 map named as BraTS 2021's (``_seg``) is read by its values,
    with a note; the field ``labels`` chooses a convention, and one that does not fit is
    one 400 sentence naming the way out."""
    url = f"/api/jobs/{done_job['id']}/compare"
    now = client.get(done_job["urls"]["download"]).content
    lab = np.asarray(_load(now).dataobj)
    assert 4 in lab
    as2023 = _nifti_bytes(np.where(lab == 4, 3, lab).astype(np.uint8))
    r = client.post(url, files=[("before", ("Web000_seg.nii.gz", as2023))])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["notes"][0].startswith("Web000_seg.nii.gz was read as BraTS 2023 labels")
    assert doc["volumes"]["ET"]["before"] == doc["volumes"]["ET"]["after"] > 0
    r = client.post(url, files=[("before", ("Web000_seg.nii.gz", as2023))],
                    data={"labels": "brats2023"})
    assert r.status_code == 200 and r.json()["notes"] == [], r.text
    for labels, says in (("brats2021", "labels=auto"), ("msd2", "is no label convention")):
        r = client.post(url, files=[("before", ("Web000_seg.nii.gz", as2023))],
                        data={"labels": labels})
        assert r.status_code == 400 and says in _detail(r), r.text


def test_one_server_per_data_folder_and_cut_uploads_go(methods: None, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """A second server on a data folder would run the first one's jobs again: refused.
    An upload cut off by a stopped server is deleted when the next one starts."""
    from braintumor.cli import main as cli
    from braintumor.errors import InputError
    from braintumor.web.store import JobStore

    data = tmp_path / "data"
    store = JobStore(data)
    cut = store.create("upload", "pending", status="uploading")
    (store.job_dir(cut.id) / "upload").mkdir()
    (store.job_dir(cut.id) / "upload" / "0000.part").write_bytes(b"half a scan")
    store.close()
    first = create_app(data, token="", warm=False)
    with TestClient(first) as c:
        assert c.get(f"/api/jobs/{cut.id}").status_code == 404
        assert not (data / "jobs" / cut.id).exists()
        second = create_app(data, token="", warm=False)
        with pytest.raises(InputError, match="another braintumor server"):
            with TestClient(second):
                pass
        assert cli(["serve", "--data-dir", str(data), "--port", "8799"]) == 2
        assert "another braintumor server is using this data folder" in capsys.readouterr().err
    with TestClient(create_app(data, token="", warm=False)) as c:  # the first has stopped
        assert c.get("/api/info").status_code == 200


def test_serve_holds_the_data_folder_from_its_check_to_its_stop(
        methods: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers started at the same moment on one data folder: the one that checked
    first keeps the folder, so the other is refused in one sentence before its link,
    not with a traceback once its link is printed."""
    import uvicorn

    from braintumor.cli import main as cli
    from braintumor.errors import InputError
    from braintumor.web.store import claim_data_dir

    data = tmp_path / "data"
    seen: list[str] = []

    def serving(server: Any, *_: Any) -> None:
        app = server.config.app
        server.started = True
        try:  # a second server starting now
            claim_data_dir(data.resolve()).close()
            seen.append("taken by another")
        except InputError:
            seen.append("held")
        with TestClient(app, base_url="http://127.0.0.1") as c:  # on the lock it holds
            assert c.get("/api/info").status_code == 200

    monkeypatch.setattr(uvicorn.Server, "run", serving)
    assert cli(["serve", "--data-dir", str(data), "--port", str(_free_port())]) == 0
    assert seen == ["held"]
    claim_data_dir(data.resolve()).close()  # and let go when it stopped


def _free_port() -> int:
    from test_web_support import free_port

    return free_port()


def test_a_stop_answers_an_upload_still_arriving_at_once(methods: None,
                                                        tmp_path: Path) -> None:
    """Stopping the server (SIGTERM) while an upload streams in answers it with a 503 in
    one sentence at once, keeps nothing of it, and the stop takes well under 10 s."""
    import signal
    import socket
    import threading

    import uvicorn

    from braintumor.commands.serve import GRACEFUL_STOP_S, _stopping_server
    from test_web_support import free_port

    app = create_app(tmp_path / "data", token="", warm=False)
    port = free_port()
    server = _stopping_server()(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_STOP_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert time.monotonic() - t0 < 30
        time.sleep(0.05)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a_t1.nii.gz\""
            b"\r\n\r\n" + b"x" * (1 << 20) + b"\r\n--B--\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"multipart/form-data; boundary=B\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body[: len(body) // 2])
        time.sleep(0.5)  # the upload is under way, and stalls
        t0 = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    thread.join(15)
    took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
    assert b"The server is stopping" in reply
    assert not thread.is_alive() and took < 5, took
    assert list((tmp_path / "data" / "jobs").iterdir()) == []


def test_head_requests_and_one_cache_header(client: TestClient,
                                            done_job: dict[str, Any]) -> None:
    for url in ("/", f"/api/jobs/{done_job['id']}", done_job["urls"]["images"]["t1"]):
        got, head = client.get(url), client.head(url)
        assert head.status_code == 200 and head.content == b"", url
        assert head.headers.get("content-type") == got.headers.get("content-type")
    image = client.get(done_job["urls"]["images"]["t1"])
    # a patient's scans are not kept in the browser's cache: a deleted job leaves nothing
    assert image.headers.get_list("cache-control") == ["no-store"]


def test_a_full_disk_is_one_sentence_and_leaves_nothing(client: TestClient,
                                                       case_files: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    import errno

    from braintumor.web import upload

    before = client.app.state.store.count("uploading")  # type: ignore[attr-defined]

    async def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload, "read_multipart", full)
    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    assert r.status_code == 507 and "disk is full" in _detail(r)
    assert client.app.state.store.count("uploading") == before  # type: ignore[attr-defined]


def test_pdf_tables_align_words_left_and_numbers_right() -> None:
    """A PDF table reads as a table: names from the left, a column of numbers (and its
    heading) aligned on the right, so that digits of the same place stand above each
    other."""
    import matplotlib.pyplot as plt

    from braintumor.web.report import PdfFlow

    flow = PdfFlow()
    try:
        t = flow.table("Volumes", [["Edema", "ED", "89.28"], ["Whole tumour (all)", "WT",
                                                            "131.94"]],
                       ["Region", "Abbr.", "Volume (mL)"])
        cells = t.get_celld()
        sides = {(r, c): cells[r, c].get_text().get_horizontalalignment()
                 for r in range(3) for c in range(3)}
        assert all(sides[r, 0] == "left" and sides[r, 1] == "left" for r in range(3))
        assert all(sides[r, 2] == "right" for r in range(3))  # heading included
    finally:
        for fig in flow.figures:
            plt.close(fig)


def test_switch_fields_take_the_usual_spellings_of_yes_and_no() -> None:
    from braintumor.errors import InputError
    from braintumor.web.inputs import check_fields, switch

    for text, value in (("true", True), ("ON", True), ("1", True), ("yes", True),
                        ("false", False), ("off", False), ("0", False), ("No", False),
                        ("", False)):
        assert switch({"accurate": text}, "accurate") is value, text
    assert switch({}, "accurate") is False
    check_fields({"method": "watershed", "uncertainty": "yes", "pixel_mm": "0.5"})
    with pytest.raises(InputError, match="give true or false"):
        check_fields({"align": "2"})


# -- limits, hostile requests, a full disk -------------------------------------------------
def _claiming_huge(shape: tuple[int, ...] = (30000, 30000, 30000)) -> bytes:
    """A gzipped NIfTI header claiming ``shape`` float32 voxels, with no voxels."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    return gzip.compress(hdr.binaryblock + b"\0" * 4)


def test_a_file_claiming_a_huge_volume_is_413_not_read(client: TestClient,
                                                       done_job: dict[str, Any]) -> None:
    before = len(list(client.app.state.store.jobs_root.iterdir()))  # type: ignore
    for shape in ((30000, 30000, 30000), (512, 512, 2048)):
        r = client.post("/api/jobs", files=[("files", ("huge_t1.nii.gz",
                                                       _claiming_huge(shape)))],
                        data={"method": "threshold"})
        assert r.status_code == 413 and "claims" in _detail(r), r.text
        assert _detail(r).startswith("huge_t1.nii.gz")
        r = client.post(f"/api/jobs/{done_job['id']}/compare",
                        files=[("before", ("old_seg.nii.gz", _claiming_huge(shape)))])
        assert r.status_code == 413 and "claims" in _detail(r), r.text
    assert len(list(client.app.state.store.jobs_root.iterdir())) == before  # type: ignore


def test_running_out_of_memory_is_one_sentence(client: TestClient,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import braintumor.web.app as web_app

    def no_memory(name: str) -> str:
        raise MemoryError

    monkeypatch.setattr(web_app, "detect_modality", no_memory)
    r = client.post("/api/detect-modalities", json={"names": ["a_t1.nii.gz"]})
    assert r.status_code == 507 and "memory" in _detail(r)


def test_a_2d_stack_over_the_pixel_budget_is_413(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """Pictures each within the per-picture limit but too many pixels together are
    refused in one sentence at upload, before the worker holds them."""
    import braintumor.web.inputs as web_inputs

    _fake_2d(monkeypatch)
    monkeypatch.setattr(web_inputs, "MAX_STACK_PIXELS", 3 * 30 * 36 - 1)
    pics = [("files", (f"p_{k}.png", _png(np.full((30, 36), 40 * k, np.uint8))))
            for k in (1, 2, 3)]
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        r = c.post("/api/jobs", files=pics)
        assert r.status_code == 413 and "pixels in all" in _detail(r), r.text
        assert list((tmp_path / "d" / "jobs").iterdir()) == []
        r = c.post("/api/jobs", files=pics[:2])  # within the budget
        assert r.status_code == 202, r.text


def test_a_dicom_reference_mask_is_kept_as_pixels_not_as_dicom(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A DICOM slice's DICOM mask, like the slice, is kept only as a PNG: no file with
    the patient's name stays on the server."""
    pytest.importorskip("pydicom")
    from test_web_support import write_dicom_slice

    _fake_2d(monkeypatch)
    px = np.zeros((32, 32), np.uint16)
    px[4:14, 4:12] = 900
    mask = (px > 0).astype(np.uint16)
    files = [("files", (name, write_dicom_slice(tmp_path / name, a, (0.5, 0.5)).read_bytes()))
             for name, a in (("slice_1.dcm", px), ("slice_1_mask.dcm", mask))]
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    with TestClient(app) as c:
        r = c.post("/api/jobs", files=files)
        assert r.status_code == 202, r.text
        job = wait_done(c.get, r.json()["id"])
        assert job["status"] == "done", job
        kept = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
        assert not [p for p in kept if p.suffix == ".dcm"], kept
        assert not any(b"Doe^Jane" in p.read_bytes() for p in kept)
        assert c.get(job["urls"]["image2d"]["reference"]).status_code == 200


def test_another_website_cannot_make_the_browser_change_anything(
        client: TestClient, case_files: dict[str, Path]) -> None:
    """A page elsewhere can make the reader's browser send a form or a no-cors fetch; with
    no token set that would start jobs or upload files. Such requests carry an Origin
    that is not this server's, or Sec-Fetch-Site: cross-site, and are refused; so is a
    body that is no JSON (the text/plain a no-cors fetch sends). Clients that are no
    browser send neither header and are served as before."""
    jobs = client.app.state.store.jobs_root  # type: ignore[attr-defined]
    before = len(list(jobs.iterdir()))
    evil = {"origin": "http://evil.example"}
    for headers in (evil, {"origin": "null"}, {"sec-fetch-site": "cross-site"},
                    {"origin": "http://testserver.evil.example"}):
        r = client.post("/api/sample", json={}, headers=headers)
        assert r.status_code == 403 and "another website" in _detail(r), headers
        r = client.post("/api/jobs", files=_four(case_files), headers=headers)
        assert r.status_code == 403, headers
    r = client.post("/api/sample", content=b'{"method": "threshold"}',
                    headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "JSON" in _detail(r)
    assert len(list(jobs.iterdir())) == before
    # the page itself (same origin), and reading, are served
    for headers in ({"origin": "http://testserver"}, {"sec-fetch-site": "same-origin"}, {}):
        r = client.post("/api/detect-modalities", json={"names": ["a_flair.nii.gz"]},
                        headers=headers)
        assert r.status_code == 200, (headers, r.text)
    assert client.get("/api/info", headers=evil).status_code == 200
    # behind a proxy that passes the name it was reached by
    r = client.post("/api/detect-modalities", json={"names": []},
                    headers={"origin": "https://brain.example.org",
                             "x-forwarded-host": "brain.example.org"})
    assert r.status_code == 200, r.text
    # the same address written with its default port, or a trailing dot, is the same
    for origin, host in (("https://brain.example.org", "brain.example.org:443"),
                         ("http://testserver", "testserver:80"),
                         ("http://testserver.", "testserver")):
        r = client.post("/api/detect-modalities", json={"names": []},
                        headers={"origin": origin, "host": host})
        assert r.status_code == 200, (origin, host, r.text)


def test_the_page_behind_a_reverse_proxy_may_change_things(methods: None,
                                                           tmp_path: Path) -> None:
    """A proxy such as nginx passes its own upstream Host (or its name with another port)
    and no X-Forwarded-Host; the page it serves sends the public name as its Origin. With
    that name given (``--allow-host``), the page's uploads and jobs are taken; other
    sites still are not."""
    from braintumor.commands.serve import served_hosts

    names = ["brain.example.org", "Pacs.Example.org:8443"]
    app = create_app(tmp_path / "d", token="", warm=False,
                     hosts=served_hosts("127.0.0.1", names), proxies=names)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        for origin, host in (("https://brain.example.org", "127.0.0.1:8000"),
                             ("https://brain.example.org", "brain.example.org:443"),
                             ("https://pacs.example.org:8443", "pacs.example.org"),
                             ("https://brain.example.org.", "localhost.:8000")):
            r = c.post("/api/detect-modalities", json={"names": []},
                       headers={"origin": origin, "host": host})
            assert r.status_code == 200, (origin, host, r.text)
        for origin in ("https://evil.example", "https://pacs.example.org",
                       "http://brain.example.org:8080"):
            r = c.post("/api/detect-modalities", json={"names": []},
                       headers={"origin": origin, "host": "127.0.0.1:8000"})
            assert r.status_code == 403, origin


def test_only_the_names_the_server_was_started_for_are_answered(methods: None,
                                                                tmp_path: Path) -> None:
    """A name rebound to this machine's address (DNS rebinding) makes another site's
    page same-origin with the server: the Host it sends is refused."""
    from braintumor.commands.serve import served_hosts

    hosts = served_hosts("127.0.0.1", ["brain.example.org"])
    assert hosts is not None and {"127.0.0.1", "localhost", "brain.example.org"} <= set(hosts)
    assert served_hosts("0.0.0.0") is None and served_hosts("::") is None
    app = create_app(tmp_path / "d", token="", warm=False, hosts=hosts)
    with TestClient(app, base_url="http://rebound.evil.example:8000") as c:
        r = c.get("/api/info")
        assert r.status_code == 400 and "does not answer to the name" in _detail(r)
        assert c.post("/api/sample", json={}).status_code == 400
        for base in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                     "https://brain.example.org"):
            assert c.get(f"{base}/api/info").status_code == 200, base


def test_the_token_link_redirects_only_within_the_server(methods: None,
                                                         tmp_path: Path) -> None:
    app = create_app(tmp_path / "d", token="s3cret-token", warm=False)
    with TestClient(app) as c:
        for path in ("//evil.example/", "///evil.example/", "/\\evil.example/",
                     "/\\/evil.example/"):
            r = c.get(f"http://testserver{path}?token=s3cret-token", follow_redirects=False)
            assert r.status_code == 303, path
            loc = r.headers["location"]
            assert loc.startswith("/") and not loc.startswith(("//", "/\\")), (path, loc)


def test_a_request_body_that_is_no_upload_is_capped(client: TestClient,
                                                    done_job: dict[str, Any]) -> None:
    from braintumor.web.app import MAX_JSON_BYTES

    big = b'{"names": ["' + b"a" * MAX_JSON_BYTES + b'"]}'
    for url in ("/api/detect-modalities", done_job["urls"]["corrections"]):
        r = client.post(url, content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "MiB" in _detail(r), url

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    r = client.post("/api/detect-modalities", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/detect-modalities", json={"names": ["x_t2.nii.gz"]})
    assert r.status_code == 200 and r.json()["modalities"]["x_t2.nii.gz"] == "t2"


def _disk_full(written: list[Path], arg: int) -> Any:
    """A writer of the file named by its argument ``arg`` that leaves it empty, as a
    full disk does, and fails."""
    import errno

    def write(*args: Any, **_: Any) -> None:
        out = Path(args[arg])
        out.write_bytes(b"")
        written.append(out)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_a_full_disk_leaves_no_empty_download_or_label_version(
        client: TestClient, done_job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A download that cannot be kept when the disk is full is sent from memory, a
    correction written then is a 507; nothing half-written stays to be served once there
    is room again."""
    import nibabel

    import braintumor.cases

    job_dir = client.app.state.store.job_dir(done_job["id"])  # type: ignore[attr-defined]
    url = done_job["urls"]["download"] + "?convention=brats2023"
    for f in (job_dir / "output").glob("download_*brats2023*"):
        f.unlink()
    written: list[Path] = []
    with monkeypatch.context() as mp:
        mp.setattr(nibabel, "save", _disk_full(written, 1))  # the download's save
        r = client.get(url)
        assert r.status_code == 200 and _load(r.content).shape == SHAPE
    assert written and not any(p.exists() for p in written)
    assert not list((job_dir / "output").glob("*download_*brats2023*"))
    r = client.get(url)
    assert r.status_code == 200 and _load(r.content).shape == SHAPE
    pytest.importorskip("braintumor.correction")
    job = client.get(f"/api/jobs/{done_job['id']}").json()
    version = job["label_version"]
    x, y, z = (s // 2 for s in SHAPE)
    with monkeypatch.context() as mp:
        mp.setattr(braintumor.cases, "write_label_map", _disk_full(written, 2))
        r = client.post(done_job["urls"]["corrections"],
                        json={"seeds": [{"x": x, "y": y, "z": z, "label": 0}]})
        assert r.status_code == 507 and "disk is full" in _detail(r)
    assert not (job_dir / "output" / f"labels_v{version + 1}.nii.gz").exists()
    assert not [p for p in (job_dir / "output").iterdir() if ".part" in p.name]
    assert client.get(f"/api/jobs/{done_job['id']}").json()["label_version"] == version


def test_a_full_disk_while_unzipping_an_upload_is_507(client: TestClient,
                                                      case_files: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import braintumor.io as bio
    from test_web_support import FullDiskFile

    jobs = client.app.state.store.jobs_root  # type: ignore[attr-defined]
    before = len(list(jobs.iterdir()))
    zipped = _zip_bytes({p.name: p.read_bytes() for m, p in case_files.items() if m != "seg"})
    monkeypatch.setattr(bio, "open", FullDiskFile, raising=False)
    r = client.post("/api/jobs", files=[("files", ("case.zip", zipped))],
                    data={"method": "threshold"})
    assert r.status_code == 507 and "disk is full" in _detail(r), r.text
    assert len(list(jobs.iterdir())) == before


def test_a_job_whose_files_cannot_be_deleted_is_kept(
        client: TestClient, case_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE answers an error and keeps the job when its folder cannot be removed (no
    204 for files still on the server); a job whose row cannot be written leaves no
    folder behind."""
    import sqlite3
    from contextlib import contextmanager

    import braintumor.web.store as web_store

    r = client.post("/api/jobs", files=_four(case_files), data={"method": "threshold"})
    jid = r.json()["id"]
    wait_done(client.get, jid)

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as mp:
        mp.setattr(web_store.shutil, "rmtree", refuse)
        r = client.delete(f"/api/jobs/{jid}")
        assert r.status_code == 500 and "could not all be deleted" in _detail(r)
    assert client.get(f"/api/jobs/{jid}").status_code == 200
    assert client.delete(f"/api/jobs/{jid}").status_code == 204
    assert client.get(f"/api/jobs/{jid}").status_code == 404
    store = client.app.state.store  # type: ignore[attr-defined]
    before = sorted(p.name for p in store.jobs_root.iterdir())

    @contextmanager
    def full() -> Iterator[Any]:
        raise sqlite3.OperationalError("database or disk is full")
        yield

    with monkeypatch.context() as mp:
        mp.setattr(store, "_tx", full)
        r = client.post("/api/sample", json={"method": "threshold"})
        assert r.status_code == 507 and "disk is full" in _detail(r)
    assert sorted(p.name for p in store.jobs_root.iterdir()) == before
