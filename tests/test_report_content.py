"""The reports' pictures, words and figures say what the outline is, and nothing else."""

from __future__ import annotations

import numpy as np


def _thick_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1 x 1 x 5 mm scan (20 x 24 x 8 voxels) with a tumour in its middle."""
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    img = np.ones((20, 24, 8), np.float32)
    lab = np.zeros((20, 24, 8), np.uint8)
    lab[8:12, 10:14, 3:5] = 2
    return img, lab, aff


def test_key_slices_are_drawn_at_the_voxels_true_aspect() -> None:
    from braintumor.report import letter_band
    from braintumor.web.report import LETTER_SIZE, SCALE, key_slices

    img, lab, aff = _thick_case()
    pics = key_slices(img, lab, aff)
    band = letter_band(LETTER_SIZE)

    def size(view: str) -> tuple[int, int]:
        h, w = pics[view].shape[:2]
        return (h - 2 * band) // SCALE, (w - 2 * band) // SCALE

    assert size("axial") == (24, 20)  # 24 x 20 mm
    assert size("coronal") == (40, 20)  # 8 slices of 5 mm high, 20 mm wide
    assert size("sagittal") == (40, 24)


def test_key_slices_are_named_as_the_command_lines_overlay_names_its_slices() -> None:
    from braintumor.report import display_grid, display_slice_name
    from braintumor.web.report import key_slice_names

    img, lab, aff = _thick_case()
    names = key_slice_names(lab, aff)
    grid, shown = display_grid(lab, aff)
    z = int(np.argmax((grid > 0).sum(axis=(0, 1))))
    assert names["axial"] == display_slice_name(shown, aff, grid.shape, z)
    assert names["axial"].startswith("4 of 8, S 15.0 mm")
    assert names["coronal"].endswith("of 24, A 11.0 mm") or "of 24, A" in names["coronal"]
    assert " of 20, " in names["sagittal"] and names["sagittal"].split(", ")[1][0] in "RL"


def _job(result: dict, case_id: str = "Case") -> object:
    from braintumor.web.store import Job

    return Job(id="a1b2c3d4e5f6a7b8", kind="upload", method="hybrid", status="done",
               finished=1.7e9, inputs={"case_id": case_id}, result=result)


def _named_pictures(tmp_path) -> dict:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from braintumor.web import report

    out = {}
    for k, v in enumerate(report.VIEWS):
        info = PngInfo()
        info.add_text(report.SLICE_NAME_KEY, f"{k + 3} of 9, S {k}.0 mm")
        out[v] = tmp_path / f"{v}.png"
        Image.fromarray(np.full((60, 50, 3), 90, np.uint8)).save(out[v], pnginfo=info)
    return out


def _pdf_text(flow) -> str:
    import matplotlib.pyplot as plt

    try:
        return " ".join([t.get_text() for fig in flow.figures for t in fig.texts]
                        + [a.get_title() for fig in flow.figures for a in fig.axes])
    finally:
        for fig in flow.figures:
            plt.close(fig)


def test_web_reports_name_their_key_slices(tmp_path) -> None:
    from braintumor.web import report

    job = _job({"kind": "3d", "summaries": [{"volumes_ml": {"WT": 1.0}, "lesion_count": None,
                                             "diameters": None}]})
    pictures = _named_pictures(tmp_path)
    page = report.render_html(job, pictures)
    text = _pdf_text(report.pdf_layout(job, pictures))
    for k, v in enumerate(report.VIEWS):
        assert f"<figcaption>{v}, {k + 3} of 9, S {k}.0 mm</figcaption>" in page
        assert f"{v}, {k + 3} of 9, S {k}.0 mm" in text


def _lesion(longest: float, perpendicular: float):
    from braintumor.diameters import Lesion

    zero = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    return Lesion(longest_mm=longest, perpendicular_mm=perpendicular, axis=2, slice=3,
                  volume_ml=1.0, ends=zero, perpendicular_ends=zero,
                  centre_mm=(-23.4, 10.2, 70.0), slices=9)


def test_shown_diameters_never_contradict_the_measurability_verdict() -> None:
    from braintumor.diameters import summarise

    summ = summarise([_lesion(10.3, 9.8)])
    assert summ["text"] == "10.3 x 9.8 mm; not measurable (under 10 x 10 mm)"
    # one short of 10 mm is not shown as reaching it, in words or in the table's numbers
    summ = summarise([_lesion(12.0, 9.96)])
    assert summ["largest"] == "12.0 x 9.9 mm" and summ["lesions"][0]["perpendicular_mm"] == 9.9
    assert summarise([_lesion(41.2, 33.4)])["largest"] == "41 x 33 mm"
    assert summarise([_lesion(10.04, 10.0)])["text"].startswith("10.0 x 10.0 mm; SPD 100")


def test_a_2d_stacks_area_is_its_largest_slices_and_the_sum_is_named_for_what_it_is(
        tmp_path) -> None:
    from braintumor.web import report

    job = _job({"kind": "2d", "slices": 3, "pixel_mm": 0.5, "slice_names": ["a", "b", "c"],
                "slice_area_px": [0, 300, 100], "area_px": 400, "tumour_slices": 2,
                "show_slice": 1})
    facts = dict(report._facts_2d(report.report_facts_2d(job)))
    assert "Tumour area" not in facts
    assert facts["Tumour area, largest slice"] == "75.0 mm² (300 pixels), slice 2 of 3, b"
    assert facts["Tumour area, slices added up"] == ("100.0 mm² (400 pixels), summed over 2 "
                                                     "slices with tumour")
    one = _job({"kind": "2d", "slices": 1, "pixel_mm": 0.5, "area_px": 40})
    assert dict(report._facts_2d(report.report_facts_2d(one)))["Tumour area"] == (
        "10.0 mm² (40 pixels)")


def test_empty_and_implausible_outlines_are_said_plainly(tmp_path) -> None:
    import json

    from braintumor import report

    empty = report.write_report(tmp_path, "e", np.zeros((9, 9, 9), np.uint8), 0.001,
                                diameters={"ET": {"lesions": []}, "WT": {"lesions": []}})
    page = empty["html"].read_text()
    assert report.NO_TUMOUR in page and "No measurable lesion" not in page
    assert json.loads(empty["json"].read_text())["outline_warning"] == report.NO_TUMOUR
    big = np.ones((90, 90, 60), np.uint8)  # 486 mL of whole tumour at 1 mm
    page = report.write_report(tmp_path, "b", big, 0.001, stem="b")["html"].read_text()
    assert "<strong>Warning:</strong> The whole tumour outlined is 486 mL" in page
    assert "implausible" in page
    assert report.outline_warning({"WT": 350.0}) is None


def test_web_report_says_nothing_was_outlined(tmp_path) -> None:
    from braintumor import report as cli
    from braintumor.web import report

    empty = {"ET": {"lesions": [], "measurable": 0, "targets": 0, "spd_mm2": 0.0,
                    "largest": "", "text": "none"}}
    empty["WT"] = empty["ET"]
    job = _job({"kind": "3d", "summaries": [{"volumes_ml": {k: 0.0 for k in
                                                            ("NCR", "ED", "ET", "TC", "WT")},
                                             "lesion_count": 0, "diameters": empty}]})
    pictures = _named_pictures(tmp_path)
    page = report.render_html(job, pictures)
    assert cli.NO_TUMOUR in page and "No measurable lesion" not in page
    assert cli.NO_TUMOUR in _pdf_text(report.pdf_layout(job, pictures))


def test_one_notice_and_a_warning_box_in_every_report(tmp_path) -> None:
    from braintumor import report as cli
    from braintumor.web import report

    assert report.NOTICE == cli.NOTICE and "qualified reader" in cli.NOTICE
    page = cli.write_report(tmp_path, "c", np.zeros((4, 4, 4), np.uint8), 0.001,
                            info={"warning": "w"})["html"].read_text()
    assert cli.NOTICE in page and "<strong>Warning:</strong> w" in page and "Note:" not in page


def test_small_volumes_keep_their_precision_where_shown(tmp_path) -> None:
    from braintumor import report

    lab = np.zeros((10, 10, 10), np.uint8)
    lab.flat[:4] = 1  # NCR 4 voxels
    lab.flat[10:54] = 3  # ET 44 voxels
    page = report.write_report(tmp_path, "s", lab, 0.001)["html"].read_text()
    # TC = NCR + ET as shown, and the necrotic core does not look absent
    assert "<td>0.048</td><td>0.044</td><td>0.004</td>" in page
    assert report.ml_text(45.556) == "45.56" and report.ml_text(0.0) == "0.00"
    assert report.ml_text(0.0004) == "< 0.001"
    # one voxel of 0.5 mm (0.000125 mL) is there, in the volumes and as shown
    one = np.zeros((10, 10, 10), np.uint8)
    one[5, 5, 5] = 3
    vols = report.volumes_ml(one, 0.000125)
    assert vols["ET"] > 0 and report.ml_text(vols["WT"]) == "< 0.001"


def test_follow_up_changes_are_the_differences_of_the_values_shown() -> None:
    from braintumor.followup import change, table_rows

    vols = {k: change(1.0, 1.0, None) for k in ("WT", "TC", "ET", "NCR", "ED")}
    vols["WT"] = change(45.556, 27.504, (-0.65, 0.4), 0.01)
    vols["NCR"] = change(0.004, 0.05, None)
    spd = {k: change(100.4, 200.6, (-0.5, 0.25)) for k in ("ET", "WT")}
    rows = {r[0]: r for r in table_rows({"volumes": vols, "spd": spd})}
    assert rows["Whole tumour (mL)"][1:4] == ["45.56", "27.50", "-18.06"]
    assert rows["Necrotic / non-enhancing core (mL)"][1:4] == ["0.004", "0.050", "+0.046"]
    assert rows["SPD, Enhancing tumour (RANO) (mm²)"][1:4] == ["100", "201", "+101"]


def test_rano_rows_place_each_lesion_and_mark_the_targets() -> None:
    from braintumor.diameters import summarise
    from braintumor.report import RANO_HEAD, rano_rows

    lesions = [_lesion(30.0 - k, 20.0) for k in range(4)] + [_lesion(9.0, 8.0)]
    rows = rano_rows(summarise(lesions))
    assert RANO_HEAD[2] == "Centre (mm)" and RANO_HEAD[-1] == "Target"
    assert rows[0][2] == "L 23 A 10 S 70"
    assert [r[-1] for r in rows] == ["yes", "yes", "yes", "no", "no"]


def test_tied_slices_are_chosen_in_scanner_coordinates_not_storage_order() -> None:
    from braintumor.diameters import measure

    m = np.zeros((30, 30, 12), bool)
    m[5:20, 5:18, 3:7] = True  # four identical slices: their products tie
    up = np.diag([1.0, 1.0, 2.0, 1.0])
    down = up.copy()
    down[2, 2], down[2, 3] = -2.0, 22.0  # the same voxels' positions, stored head first
    a = measure(m, up)[0]
    b = measure(m[:, :, ::-1], down)[0]
    assert a.centre_mm[2] == b.centre_mm[2] == 10.0  # nearest the centre, then superior
    assert a.slice == 5 and b.slice == 6


def test_an_assumed_orientation_is_marked_on_the_overlay_itself(tmp_path, monkeypatch) -> None:
    from braintumor import report

    seen: list[dict] = []
    real = report.overlay_panel
    monkeypatch.setattr(report, "overlay_panel",
                        lambda rgb, letters: seen.append(dict(letters)) or real(rgb, letters))
    img = np.ones((4, 12, 12, 6), np.float32)
    lab = np.zeros((12, 12, 6), np.uint8)
    report.overlay_png(img, lab, np.eye(4), tmp_path / "a.png", slices=[3],
                       orientation_assumed=True)
    report.overlay_png(img, lab, np.eye(4), tmp_path / "b.png", slices=[3])
    assert seen[0]["left"] == "R?" and seen[0]["right"] == "L?"
    assert seen[-1]["left"] == "R"


def test_pdf_warnings_are_as_large_as_the_body_and_name_no_flags(tmp_path) -> None:
    from braintumor.preprocess import thick_slice_warning
    from braintumor.web import report

    warning = thick_slice_warning((1.0, 1.0, 6.0))
    assert warning is not None and "--" not in warning and "fast mode" in warning
    job = _job({"kind": "3d", "warning": warning,
                "summaries": [{"volumes_ml": {"WT": 1.0}, "lesion_count": None,
                               "diameters": None}]})
    flow = report.pdf_layout(job, _named_pictures(tmp_path))
    import matplotlib.pyplot as plt

    sizes = [t.get_fontsize() for fig in flow.figures for t in fig.texts
             if t.get_text().startswith("Warning:")]
    for fig in flow.figures:
        plt.close(fig)
    assert sizes and min(sizes) >= 9


def test_analysis_dates_carry_their_offset_from_utc(tmp_path) -> None:
    import json
    import re

    from braintumor import report
    from braintumor.web import report as web

    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC[+-]\d\d:\d\d"
    assert re.fullmatch(stamp, report.analysis_time(1.7e9))
    paths = report.write_report(tmp_path, "c", np.zeros((4, 4, 4), np.uint8), 0.001)
    doc = json.loads(paths["json"].read_text())
    assert re.fullmatch(stamp, doc["analysed"])
    assert f"Analysed: {doc['analysed']}" in paths["html"].read_text()
    job = _job({"kind": "3d", "summaries": [{}]})
    assert web.report_facts(job)["date"] == report.analysis_time(1.7e9)
    assert web.report_facts_2d(job)["date"] == report.analysis_time(1.7e9)


def _maps(tmp_path, n: int) -> list[str]:
    import nibabel as nib

    from braintumor import labels as L

    out = []
    for k in range(n):
        lab = np.zeros((40, 40, 30), np.uint8)
        lab[10:30 - 2 * k, 10:30, 8:20] = 2
        lab[14:24 - 2 * k, 14:26, 10:18] = 3
        path = tmp_path / f"p7_visit{k + 1}.nii.gz"
        nib.save(nib.Nifti1Image(L.from_internal(lab, "brats2021"), np.eye(4)), str(path))
        out.append(str(path))
    return out


def test_compare_takes_the_scans_dates(tmp_path, capsys) -> None:
    import json

    from braintumor.cli import main

    two = _maps(tmp_path, 3)
    assert main(["compare", *two[:2], "--dates", "2024-01-15,2024-04-20",
                 "-o", str(tmp_path / "fu")]) == 0
    doc = json.loads((tmp_path / "fu.json").read_text())
    assert doc["dates"] == {"before": "2024-01-15", "after": "2024-04-20", "days": 96}
    page = (tmp_path / "fu.html").read_text()
    assert "(2024-01-15)" in page and "96 days apart" in page
    assert "re-chosen by size at each scan" in page
    assert main(["compare", *two, "--dates", "2024-01-15,2024-04-20,2024-05-01",
                 "-o", str(tmp_path / "s")]) == 0
    visits = json.loads((tmp_path / "s.json").read_text())["visits"]
    assert [(v["date"], v["days"]) for v in visits] == [
        ("2024-01-15", 0), ("2024-04-20", 96), ("2024-05-01", 107)]
    capsys.readouterr()
    for dates, said in (("2024-01-15", "gives 1 date for 2 label maps"),
                        ("2024-01-15,15/04/2024", "'15/04/2024' is not a date"),
                        ("2024-04-20,2024-01-15", "is not after the scan before it"),
                        ("2024-01-15,2999-01-01", "lies ahead of today")):
        assert main(["compare", *two[:2], "--dates", dates]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and said in err and err.count("\n") == 1


def test_a_count_higher_than_the_diameter_rows_is_explained() -> None:
    """Two lesions touching at a neck: the count splits them, the RANO table measures
    one confluent outline, and every report's RANO section says why the two differ."""
    from braintumor.report import diameters_html, rano_intro
    from braintumor.web.measure import summary

    g = np.indices((80, 80, 60))
    lab = np.zeros((80, 80, 60), np.uint8)
    for c in ((28, 40, 30), (50, 40, 30)):
        lab[sum((g[i] - c[i]) ** 2 for i in range(3)) <= 121] = 2
    s = summary(lab, (1.0, 1.0, 1.0), affine=np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert s["lesion_count"] == 2
    assert len(s["diameters"]["WT"]["lesions"]) == 1
    assert "confluent" in rano_intro() and "lesion count splits them" in rano_intro()
    assert "lesion count splits them" in diameters_html(s["diameters"])


def test_the_command_lines_report_gives_the_lesion_count_it_speaks_of(tmp_path) -> None:
    """The RANO section says "the lesion count splits them at a narrow neck": the
    predict report (page and JSON) gives that count and each lesion's volume, the web
    page's measurements' (two balls touching at a neck: two lesions)."""
    import json

    from braintumor.cases import case_from_arrays
    from braintumor.scale import write_case_report
    from braintumor.segment import SegmentationResult
    from braintumor.web.measure import summary

    g = np.indices((80, 80, 60))
    lab = np.zeros((80, 80, 60), np.uint8)
    for c in ((28, 40, 30), (50, 40, 30)):
        lab[sum((g[i] - c[i]) ** 2 for i in range(3)) <= 121] = 2
    img = np.where(lab > 0, 200.0, 100.0)[None].repeat(4, 0).astype(np.float32)
    case = case_from_arrays("two", img, np.diag([-1.0, -1.0, 1.0, 1.0]))
    res = SegmentationResult(labels=lab, info={"method": "watershed"})
    page = write_case_report(case, res, tmp_path, "watershed").read_text()
    doc = json.loads((tmp_path / "two_report.json").read_text())
    want = summary(lab, case.spacing)
    assert doc["lesion_count"] == want["lesion_count"] == 2
    assert [les["volume_ml"] for les in doc["lesions"]] == \
        [les["volume_ml"] for les in want["lesions"]]
    assert "lesion count splits them" in page and "<h2>Lesions</h2><p>2 lesions" in page
    ml = f"{want['lesions'][0]['volume_ml']:.2f}"
    assert f"<tr><td>1</td><td>{ml}</td></tr>" in page
