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
