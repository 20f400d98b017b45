"""Bidimensional (RANO) diameters on shapes whose diameters are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from braintumor import labels as L
from braintumor.diameters import (
    MAX_TARGETS,
    describe,
    diameters_2d,
    measure,
    mm_text,
    rano,
    slice_axis,
    summarise,
)


def _ellipse(shape: tuple[int, int], spacing: tuple[float, float], centre: tuple[float, float],
             axes: tuple[float, float], angle_deg: float) -> np.ndarray:
    x, y = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1],
                       indexing="ij")
    x, y = x - centre[0], y - centre[1]
    th = np.deg2rad(angle_deg)
    u = x * np.cos(th) + y * np.sin(th)
    v = -x * np.sin(th) + y * np.cos(th)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1


def _ellipsoid(shape: tuple[int, int, int], spacing: tuple[float, float, float],
               centre: tuple[float, float, float], axes: tuple[float, float, float],
               angle_deg: float = 0.0) -> np.ndarray:
    g = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)],
                    indexing="ij")
    x, y, z = (g[i] - centre[i] for i in range(3))
    th = np.deg2rad(angle_deg)
    u = x * np.cos(th) + y * np.sin(th)
    v = -x * np.sin(th) + y * np.cos(th)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (z / axes[2]) ** 2 <= 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.0), (0.8, 0.8)])
@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0])
def test_an_ellipse_reads_its_axes(spacing: tuple[float, float], angle: float) -> None:
    m = _ellipse((200, 120), spacing, (50, 60), (20, 12), angle)
    longest, perp, ends, pends = diameters_2d(m, spacing)
    assert longest == pytest.approx(40, abs=1.5) and perp == pytest.approx(24, abs=1.5)
    # the end points are as far apart as the diameters say, and the two lines cross at
    # right angles
    sp = np.asarray(spacing)
    a, b = ends * sp
    c, d = pends * sp
    assert np.linalg.norm(b - a) == pytest.approx(longest, abs=1e-6)
    assert np.linalg.norm(d - c) == pytest.approx(perp, abs=0.6)
    assert abs(np.dot((b - a) / longest, (d - c) / np.linalg.norm(d - c))) < 1e-6
    # the longest runs along the ellipse's long axis
    along = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
    assert abs(np.dot((b - a) / longest, along)) > 0.99


def test_a_ring_is_measured_across_its_outer_edge_when_holes_are_filled() -> None:
    disc = _ellipsoid((80, 80, 30), (1, 1, 1), (40, 40, 15), (15, 15, 6))
    ring = disc & ~_ellipsoid((80, 80, 30), (1, 1, 1), (40, 40, 15), (11, 11, 4))
    filled = measure(ring, np.eye(4), fill_holes=True)[0]
    assert filled.longest_mm == pytest.approx(31, abs=1.5)
    assert filled.perpendicular_mm == pytest.approx(31, abs=1.5)
    # unfilled, the perpendicular chord still spans the outer edge (first to last pixel)
    assert measure(ring, np.eye(4))[0].perpendicular_mm == pytest.approx(31, abs=1.5)


def test_the_largest_slice_of_an_ellipsoid_on_any_axis_order() -> None:
    shape, spacing = (100, 90, 60), (1.0, 1.0, 2.0)
    m = _ellipsoid(shape, spacing, (50, 45, 60), (20, 12, 16), angle_deg=20)
    aff = np.diag([*spacing, 1.0])
    (les,) = measure(m, aff)
    assert les.axis == 2 and les.slice == 30  # z = 60 mm: the equator
    assert les.longest_mm == pytest.approx(40, abs=1.5)
    assert les.perpendicular_mm == pytest.approx(24, abs=1.5)
    assert les.measurable and les.product_mm2 == pytest.approx(
        les.longest_mm * les.perpendicular_mm)
    assert np.allclose(les.centre_mm, (50, 45, 60), atol=1.0)
    # the same brain stored sagittally (voxel axes z, x, y): the slices are still axial
    perm = np.transpose(m, (2, 0, 1))
    aff_p = np.zeros((4, 4))
    aff_p[2, 0], aff_p[0, 1], aff_p[1, 2], aff_p[3, 3] = 2.0, 1.0, 1.0, 1.0
    assert slice_axis(aff_p) == 0
    (same,) = measure(perm, aff_p)
    assert same.axis == 0 and same.slice == 30
    assert same.longest_mm == pytest.approx(les.longest_mm, abs=1e-6)
    assert same.perpendicular_mm == pytest.approx(les.perpendicular_mm, abs=1e-6)
    assert np.allclose(same.centre_mm, les.centre_mm, atol=1e-6)


def test_lesions_targets_and_sum_of_products() -> None:
    shape = (160, 160, 40)
    m = np.zeros(shape, bool)
    sizes = [(20, 14), (15, 10), (12, 9), (9, 7), (4, 3)]  # semi-axes, mm
    centres = [(30, 30), (90, 30), (30, 100), (100, 100), (130, 140)]
    for (a, b), (cx, cy) in zip(sizes, centres, strict=True):
        m |= _ellipsoid(shape, (1, 1, 1), (cx, cy, 20), (a, b, 6))
    m[150, 5, 5] = True  # a speck: not listed
    lesions = measure(m, np.eye(4))
    assert len(lesions) == 5
    products = [les.product_mm2 for les in lesions]
    assert products == sorted(products, reverse=True)
    assert [les.measurable for les in lesions] == [True, True, True, True, False]
    summ = summarise(lesions)
    assert summ["measurable"] == 4 and summ["targets"] == MAX_TARGETS == 3
    assert summ["spd_mm2"] == pytest.approx(sum(products[:3]), abs=0.5)
    assert summ["largest"] == (f"{mm_text(lesions[0].longest_mm)} x "
                               f"{mm_text(lesions[0].perpendicular_mm)} mm")
    assert summ["text"] == describe(summ) and "(3 targets)" in summ["text"]
    small = summarise(lesions[-1:])
    assert small["targets"] == 0 and "not measurable" in small["text"]
    assert describe(summarise([])) == "none"


def test_rano_reads_the_enhancing_tumour_and_the_whole_tumour() -> None:
    shape = (90, 90, 40)
    lab = np.zeros(shape, np.uint8)
    lab[_ellipsoid(shape, (1, 1, 1), (45, 45, 20), (30, 20, 12))] = L.ED
    lab[_ellipsoid(shape, (1, 1, 1), (45, 45, 20), (12, 12, 8))] = L.ET
    lab[_ellipsoid(shape, (1, 1, 1), (45, 45, 20), (8, 8, 5))] = L.NCR
    out = rano(lab, np.eye(4))
    assert out["ET"]["lesions"][0]["longest_mm"] == pytest.approx(25, abs=1.5)
    assert out["WT"]["lesions"][0]["longest_mm"] == pytest.approx(61, abs=1.5)
    assert out["WT"]["lesions"][0]["perpendicular_mm"] == pytest.approx(41, abs=1.5)
    json.dumps(out)  # JSON-ready
    assert rano(np.zeros(shape, np.uint8), np.eye(4))["ET"]["lesions"] == []


def test_predict_report_and_demo_show_the_diameters(tmp_path: Path) -> None:
    from braintumor.cli import main
    from test_web_support import small_case, write_case_files

    files = write_case_files(small_case(seed=3), tmp_path / "case" / "C")
    out = tmp_path / "out"
    assert main(["predict", str(files["t1"].parent), "-o", str(out), "--method",
                 "watershed", "--report"]) == 0
    (page,) = out.glob("*_report.html")
    doc = json.loads(page.with_suffix(".json").read_text())
    et = doc["diameters"]["ET"]
    assert et["lesions"] and et["lesions"][0]["longest_mm"] > 5
    html = page.read_text()
    assert "Diameters (RANO)" in html and et["text"] in html
    assert "the measured slices" in html and len(list(out.glob("*_diameters.png"))) == 1
    # --diameters: the same numbers in volumes.csv, before the warning column
    import csv

    assert main(["predict", str(files["t1"].parent), "-o", str(out), "--method",
                 "watershed", "--diameters"]) == 0
    with (out / "volumes.csv").open() as fh:
        reader = csv.DictReader(fh)
        (row,) = list(reader)
        header = list(reader.fieldnames or [])
    assert header[-5:] == ["ET_SPD_mm2", "ET_largest_mm", "WT_SPD_mm2", "WT_largest_mm",
                           "warning"]
    for region in ("ET", "WT"):
        summ = doc["diameters"][region]
        assert row[f"{region}_SPD_mm2"] == f"{summ['spd_mm2']:.0f}"
        assert row[f"{region}_largest_mm"] + " mm" == summ["largest"]


def test_the_measured_slice_shows_both_diameters_where_they_were_measured() -> None:
    """One lesion, stored in two axis orders: the picture holds the two line colours,
    and they cross at the lesion's centre, in the same place for both orders."""
    from braintumor.cases import MODALITIES
    from braintumor.report import (
        DIAMETER_VIEWS,
        LONGEST_RGB,
        PERPENDICULAR_RGB,
        diameter_pictures,
    )

    shape = (80, 70, 40)
    lab = np.zeros(shape, np.uint8)
    lab[_ellipsoid(shape, (1, 1, 1), (40, 30, 20), (18, 9, 6), angle_deg=30)] = L.ET
    image = np.zeros((4, *shape), np.float32)
    image[:, 5:75, 5:65, 5:35] = 100.0
    image[MODALITIES.index("t1ce")][lab > 0] = 300.0
    pics = {}
    for name, order, aff in (("axial", (0, 1, 2), np.eye(4)),
                             ("sagittal", (2, 0, 1), np.array([[0, 1, 0, 0], [0, 0, 1, 0],
                                                                [1, 0, 0, 0], [0, 0, 0, 1.]]))):
        lab_o = np.transpose(lab, order)
        img_o = np.transpose(image, (0, *(o + 1 for o in order)))
        d = rano(lab_o, aff)
        pics[name] = diameter_pictures(img_o, lab_o, aff, d, titles=False)["ET"]
        outline = np.argwhere((pics[name] == DIAMETER_VIEWS["ET"][1]).all(-1))
        assert len(outline) > 50
        for colour in (LONGEST_RGB, PERPENDICULAR_RGB):
            hits = np.argwhere((pics[name] == colour).all(-1))
            assert len(hits) > 20, (name, colour)
            # each line runs through the middle of the outline
            assert np.allclose(hits.mean(0), outline.mean(0), atol=3), \
                (name, hits.mean(0), outline.mean(0))
    assert pics["axial"].shape == pics["sagittal"].shape
    assert np.array_equal(pics["axial"], pics["sagittal"])
    # titled (as written to diameters.png): the same picture under a band of text
    titled = diameter_pictures(image, lab, np.eye(4), rano(lab, np.eye(4)))["ET"]
    band = titled.shape[0] - pics["axial"].shape[0]
    assert band > 20 and titled.shape[1] == pics["axial"].shape[1]
    np.testing.assert_array_equal(titled[band:], pics["axial"])
    top = titled[:band]
    for colour in ((255, 255, 255), LONGEST_RGB, PERPENDICULAR_RGB):  # title, two lengths
        assert (top == colour).all(-1).sum() > 10, colour


def test_a_narrow_pictures_title_is_wrapped_not_cut() -> None:
    """On a narrow picture (the axial view of a case of 5 mm sagittal slices, 140 pixels
    wide) the title at the smallest letters was wider than the picture and centred, so
    both of its ends were cut off; it is wrapped onto more lines, the band growing, and
    every letter lies inside the picture."""
    from braintumor.report import _titled

    lesion = {"slice": 6, "slices": 32, "longest_mm": 56.6, "perpendicular_mm": 56.2}
    wide = _titled(np.zeros((300, 700, 3), np.uint8), "WT", "flair", lesion, 8)
    wide_band = wide.shape[0] - 300
    assert wide_band == 2 * 8 + 8 // 2 + 8  # two lines at the smallest letters
    for width in (140, 60):
        narrow = _titled(np.zeros((300, width, 3), np.uint8), "WT", "flair", lesion, 18)
        band = narrow.shape[0] - 300
        assert band > wide_band and narrow.shape[1] == width
        ink = narrow[:band].astype(np.int64)
        # every title pixel lies inside the picture, clear of its edges
        assert ink[:, :3].sum() == 0 and ink[:, -3:].sum() == 0
        # and all of the text is there: as much ink as the wide picture's one-line title
        assert abs(ink.sum() - wide[:wide_band].astype(np.int64).sum()) < 0.02 * ink.sum()


def test_the_longest_diameter_agrees_with_scikit_image_feret_diameter() -> None:
    """An independent implementation: scikit-image's maximum Feret diameter (of the
    outline's marching-squares contour, so up to about a pixel shorter than the pixel
    squares' union measured here)."""
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(30):
        blobs = label(ndi_gauss(rng.random((80, 80))) > 0.52)
        if blobs.max() == 0:
            continue
        big = blobs == np.argmax(np.bincount(blobs.ravel())[1:]) + 1
        feret = regionprops(big.astype(int))[0].feret_diameter_max
        longest = diameters_2d(big, (1.0, 1.0))[0]
        assert -0.5 <= longest - feret <= 1.5, (longest, feret)
        compared += 1
    assert compared >= 20


def ndi_gauss(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return np.asarray(ndi.gaussian_filter(a, 4))


def test_the_agreement_study_table() -> None:
    from braintumor.diameter_study import measures, percent_diff, summary_rows

    assert percent_diff(120, 100) == pytest.approx(20) and percent_diff(5, 0) is None
    lab = np.zeros((60, 60, 30), np.uint8)
    lab[_ellipsoid(lab.shape, (1, 1, 1), (30, 30, 15), (15, 10, 6))] = L.ET
    m = measures(lab, np.eye(4))
    assert m["ET_measurable"] and m["ET_spd"] == pytest.approx(m["WT_spd"])
    assert m["ET_longest"] == pytest.approx(31, abs=1.5)
    rows = [{"method": "a", **m, **{f"expert_{k}": v for k, v in m.items()}},
            {"method": "a", **{**m, "ET_spd": 2 * m["ET_spd"], "ET_measurable": False},
             **{f"expert_{k}": v for k, v in m.items()}}]
    table = "\n".join(summary_rows(rows, ["a"]))
    # differences 0 % and +100 %: median 50 %, one case off by 25 % or more
    assert "| a | SPD, enhancing | 2 | 50.0 % | +50.0 % (" in table
    assert "| 1 of 2 |" in table and "| a | 1 of 2 |" in table


def test_picture_diameters_in_pixels_or_mm_and_over_a_stack() -> None:
    from braintumor.diameters import picture_diameters

    small = _ellipse((100, 100), (1, 1), (30, 30), (8, 5), 0)
    big = _ellipse((100, 100), (1, 1), (60, 50), (20, 12), 30)
    px = picture_diameters([small | big])
    assert px is not None and px["unit"] == "pixels" and px["measurable"] is None
    assert px["longest"] == pytest.approx(40, abs=1.5) and px["slice"] == 0
    mm = picture_diameters([small | big], pixel_mm=0.5)
    assert mm is not None and mm["unit"] == "mm" and mm["measurable"] is True
    assert mm["longest"] == pytest.approx(px["longest"] / 2, abs=0.1)
    assert mm["text"] == f"{mm_text(mm['longest'])} x {mm_text(mm['perpendicular'])} mm"
    stack = picture_diameters([small, np.zeros_like(small), big], pixel_mm=0.2)
    assert stack is not None and stack["slice"] == 2 and stack["measurable"] is False
    assert picture_diameters([np.zeros((9, 9), bool)]) is None


def test_the_lines_volume_draws_both_diameters_on_the_measured_slice() -> None:
    from braintumor.diameters import lines_volume

    shape = (100, 90, 60)
    m = _ellipsoid(shape, (1, 1, 1), (50, 45, 30), (20, 12, 8), angle_deg=20)
    lab = np.where(m, L.ED, 0).astype(np.uint8)
    d = rano(lab, np.eye(4))
    vol = lines_volume(shape, d)
    les = d["WT"]["lesions"][0]
    for value, key, length in ((1, "ends", les["longest_mm"]),
                               (2, "perpendicular_ends", les["perpendicular_mm"])):
        pts = np.argwhere(vol == value)
        assert set(pts[:, 2]) == {les["slice"]}  # on the measured slice only
        # a connected line one voxel wide: between its longer axis-aligned extent (a
        # diagonal of 8-connected steps) and the sum of both (4-connected steps)
        ends = np.asarray(les[key])
        span = np.abs(ends[1] - ends[0])[:2]
        assert span.max() - 2 <= len(pts) <= span.sum() + 2
        assert np.ptp(pts, axis=0)[:2].max() == pytest.approx(
            np.abs(ends[1] - ends[0])[:2].max(), abs=2)
        assert length > 0
    assert not lines_volume(shape, rano(np.zeros(shape, np.uint8), np.eye(4))).any()


def test_rano_refuses_brats_file_labels() -> None:
    from braintumor.errors import InputError

    lab = np.zeros((20, 20, 5), np.uint8)
    lab[5:15, 5:15, 2] = 4
    with pytest.raises(InputError, match="holds label 4; rano takes internal labels"):
        rano(lab, np.eye(4))


def test_a_thread_of_a_few_voxels_is_not_listed_as_a_lesion() -> None:
    """A 15-voxel thread 15 mm long (0.015 mL) passes the 5 mm length rule but not the
    lesion floor that the page's lesion count uses, so both list the same lesions."""
    from braintumor.diameters import measure
    from braintumor.lesions import LESION_FLOOR_ML

    m = np.zeros((60, 60, 40), bool)
    g = np.indices(m.shape)
    m |= ((g[0] - 20) ** 2 + (g[1] - 20) ** 2 + (g[2] - 20) ** 2) <= 64  # 2.1 mL ball
    m[45, 10:25, 20] = True  # the thread, apart from the ball
    assert 15 * 0.001 < LESION_FLOOR_ML
    found = measure(m, np.eye(4))
    assert len(found) == 1 and found[0].volume_ml > 2
    m[40:44, 40:44, 30:34] = True  # a 64-voxel cube (0.064 mL) is listed
    assert len(measure(m, np.eye(4))) == 2
