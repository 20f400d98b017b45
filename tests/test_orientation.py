"""The report pictures' orientation: every picture is drawn in the radiological view
(the patient's right on the picture's left) and lettered at its edges, whatever the
voxel order the case is stored in.

A synthetic head is made in scanner (world, RAS+) coordinates, with one bright lesion
in the patient's left, anterior and superior part, and stored on grids of different
voxel orders: BraTS's L, P, S; R, A, S; a sagittally stored P, I, R; and an oblique
grid. On each, the lesion must appear on the side of every picture whose letter names
its direction, the letters being read back from the pictures' pixels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from braintumor import labels as L
from braintumor import report
from braintumor.report import (
    EDGES,
    LABEL_RGB,
    VIEW_CONVENTION,
    VIEW_NOTE,
    display_grid,
    label_edges,
    letter_band,
    plane,
    plane_letters,
)

#: half-axes of the head (mm), and the lesion's centre (mm) and radius: the patient's
#: left (x < 0 in RAS+), anterior (y > 0), superior (z > 0)
HEAD = (32.0, 38.0, 28.0)
LESION, RADIUS = np.array([-15.0, 14.0, 10.0]), 7.5
#: the side each view shows the lesion on: (letter of its column side, of its row side)
EXPECTED = {"axial": ("L", "A"), "coronal": ("L", "S"), "sagittal": ("A", "S")}
#: the radiological view's letters, left, right, top, bottom
RADIOLOGICAL = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}


def _rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


STORAGES: dict[str, tuple[tuple[str, str, str], np.ndarray]] = {
    "LPS (BraTS)": (("L", "P", "S"), np.eye(3)),
    "RAS": (("R", "A", "S"), np.eye(3)),
    "sagittal PIR": (("P", "I", "R"), np.eye(3)),
    "oblique RAS": (("R", "A", "S"), _rotation_z(12.0)),
}


def _case(codes: tuple[str, str, str], turn: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (4, X, Y, Z), labels, affine)`` of the synthetic head stored in voxel
    order ``codes`` (1 mm voxels, the head's centre at the grid's centre), the grid then
    turned by ``turn`` about that centre."""
    ornt = nib.orientations.axcodes2ornt(codes)
    m = np.zeros((3, 3))
    for i, (axis, sign) in enumerate(ornt):
        m[int(axis), i] = sign
    shape = tuple(int(2 * (HEAD[int(axis)] + 6)) for axis, _ in ornt)
    m = turn @ m
    centre = (np.array(shape) - 1) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = -m @ centre
    idx = np.indices(shape).reshape(3, -1).astype(float)
    world = (m @ idx + affine[:3, 3:4]).reshape(3, *shape)
    head = sum((world[k] / HEAD[k]) ** 2 for k in range(3)) <= 1.0
    lesion = sum((world[k] - LESION[k]) ** 2 for k in range(3)) <= RADIUS ** 2
    labels = np.zeros(shape, np.uint8)
    labels[lesion & head] = L.ET
    image = np.zeros((4, *shape), np.float32)
    rng = np.random.default_rng(0)
    image[:, head] = 100.0 + 10.0 * rng.random((4, int(head.sum())))
    image[:, lesion & head] = 300.0
    return image, labels, affine


@pytest.fixture(scope="module", params=list(STORAGES))
def case(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    name = request.param
    return (name, *_case(*STORAGES[name]))


def _side(mask: np.ndarray) -> tuple[str, str]:
    """Which side of a picture the ``True`` pixels lie on: (left or right, top or
    bottom), each by a clear margin from the middle."""
    rows, cols = np.nonzero(mask)
    assert rows.size > 10
    h, w = mask.shape
    dc, dr = cols.mean() - (w - 1) / 2, rows.mean() - (h - 1) / 2
    assert abs(dc) > 0.08 * w and abs(dr) > 0.08 * h, (dc, dr, mask.shape)
    return ("right" if dc > 0 else "left"), ("bottom" if dr > 0 else "top")


def _read_letter(picture: np.ndarray, edge: str, size: int) -> str:
    """The letter drawn in ``edge``'s band of a :func:`label_edges` picture, found by
    drawing each candidate there on a blank picture of the same size and comparing."""
    band = letter_band(size)
    h, w = picture.shape[0] - 2 * band, picture.shape[1] - 2 * band

    def strip(a: np.ndarray) -> np.ndarray:
        return {"left": a[:, :band], "right": a[:, -band:], "top": a[:band],
                "bottom": a[-band:]}[edge]

    found = [c for c in "RLAPSI"
             if np.array_equal(strip(picture[..., :3]), strip(label_edges(
                 np.zeros((h, w, 3), np.uint8), dict.fromkeys(EDGES, c), size)))]
    assert len(found) == 1, (edge, found)
    return found[0]


def _inner(picture: np.ndarray, size: int) -> np.ndarray:
    band = letter_band(size)
    return picture[band:-band, band:-band]


def _tinted(rgb: np.ndarray) -> np.ndarray:
    """Pixels tinted with the enhancing tumour's yellow (grey and white have R = B)."""
    return rgb[..., 0].astype(int) - rgb[..., 2].astype(int) > 40


def test_letters_are_read_from_the_affine_and_the_view() -> None:
    """The letters of the three views of a display grid follow its affine: BraTS's
    L, P, S grid is the radiological view; a grid in R, A, S order would be the
    neurological one, and a P, I, R grid the views turned about."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    for view, letters in RADIOLOGICAL.items():
        assert plane_letters(lps, view) == dict(zip(EDGES, letters, strict=True))
    ras = np.eye(4)
    assert plane_letters(ras, "axial") == {"left": "L", "right": "R", "top": "P",
                                           "bottom": "A"}
    assert plane_letters(ras, "sagittal") == {"left": "P", "right": "A", "top": "S",
                                              "bottom": "I"}
    pir = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
    assert nib.aff2axcodes(pir) == ("P", "I", "R")
    assert plane_letters(pir, "axial") == {"left": "A", "right": "P", "top": "S",
                                           "bottom": "I"}
    with pytest.raises(ValueError, match="unknown view"):
        plane(np.zeros((2, 2, 2)), "oblique", 0)


def test_the_displayed_slice_shows_the_lesion_where_its_letters_say(case: Any) -> None:
    """display_grid, plane and plane_letters together: on every stored grid, each view
    through the lesion shows it on the sides lettered with its direction, and the
    letters are the radiological view's."""
    name, _, labels, affine = case
    shown, shown_affine = display_grid(labels, affine)
    centre = np.argwhere(shown > 0).mean(axis=0).round().astype(int)
    for view, index in (("axial", centre[2]), ("coronal", centre[1]),
                        ("sagittal", centre[0])):
        letters = plane_letters(shown_affine, view)
        assert letters == dict(zip(EDGES, RADIOLOGICAL[view], strict=True)), (name, view)
        across, down = _side(plane(shown, view, int(index)) > 0)
        assert (letters[across], letters[down]) == EXPECTED[view], (name, view)


def test_web_key_slices_show_the_lesion_on_the_lettered_side(case: Any, tmp_path: Path
                                                              ) -> None:
    """The web report's key slices, as written to PNG and read back: the lesion lies on
    the sides whose drawn letters name its direction (left, anterior, superior), and the
    patient's right is on the picture's left in the axial and coronal views."""
    from braintumor.io import write_png
    from braintumor.web.report import LETTER_SIZE, key_slices

    name, image, labels, affine = case
    for view, rgb in key_slices(image[3], labels, affine).items():
        path = write_png(rgb, tmp_path / f"{view}.png")
        picture = np.asarray(Image.open(path).convert("RGB"))
        drawn = {e: _read_letter(picture, e, LETTER_SIZE) for e in EDGES}
        assert "".join(drawn[e] for e in EDGES) == RADIOLOGICAL[view], (name, view, drawn)
        across, down = _side(_tinted(_inner(picture, LETTER_SIZE)))
        assert (drawn[across], drawn[down]) == EXPECTED[view], (name, view, drawn)


def test_overlay_png_panels_show_the_lesion_on_the_lettered_side(
        case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's overlay picture: each panel, as overlay_png hands it to be
    drawn, carries the letters of the axial view and shows the lesion on the sides they
    name; in the PNG written the lesion lies right of the middle (the patient's left)."""
    name, image, labels, affine = case
    panels: list[np.ndarray] = []
    draw = report.overlay_panel

    def kept(rgb: np.ndarray, letters: dict[str, str]) -> np.ndarray:
        panels.append(draw(rgb, letters))
        return panels[-1]

    monkeypatch.setattr(report, "overlay_panel", kept)
    z = int(np.argwhere(display_grid(labels, affine)[0] > 0)[:, 2].mean().round())
    png = report.overlay_png(image, labels, affine, tmp_path / "o.png", slices=[z],
                             channels=(("FLAIR", 3),))
    assert len(panels) == 1
    drawn = {e: _read_letter(panels[0], e, 11) for e in EDGES}
    assert "".join(drawn[e] for e in EDGES) == RADIOLOGICAL["axial"], (name, drawn)
    across, down = _side(_tinted(_inner(panels[0], 11)))
    assert (drawn[across], drawn[down]) == EXPECTED["axial"], name
    written = np.asarray(Image.open(png).convert("RGB"))
    top = written[: int(written.shape[0] * 0.7)]  # above the legend's coloured swatches
    cols = np.nonzero(_tinted(top))[1]
    assert cols.size > 10 and cols.mean() > written.shape[1] / 2 + 5, name


def test_measured_slice_pictures_are_lettered(case: Any) -> None:
    """The slice the diameters were measured on: lettered as the key slices, with the
    lesion's outline on the sides its letters name."""
    from braintumor.diameters import rano

    name, image, labels, affine = case
    # without the title band above it, whose text is no orientation letter
    pictures = report.diameter_pictures(image, labels, affine, rano(labels, affine),
                                        titles=False)
    assert "ET" in pictures, name
    picture = pictures["ET"]
    drawn = {e: _read_letter(picture, e, 24) for e in EDGES}
    assert "".join(drawn[e] for e in EDGES) == RADIOLOGICAL["axial"], (name, drawn)
    outline = (_inner(picture, 24) == LABEL_RGB[L.ET]).all(axis=-1)
    across, down = _side(outline)
    assert (drawn[across], drawn[down]) == EXPECTED["axial"], name


def test_the_real_case_lies_in_the_left_hemisphere_and_is_drawn_on_the_right() -> None:
    """Brats18_TCIA01_201_1, the case a reader took for right-sided: its tumour lies in
    the patient's left by the header, and the axial key slice shows it right of the
    middle, under the letter L."""
    from braintumor.web.report import LETTER_SIZE, key_slices

    folder = Path("/work/shared/data/brats2018/Brats18_TCIA01_201_1")
    if not folder.is_dir():
        pytest.skip("the shared BraTS 2018 data is not here")
    flair: Any = nib.load(str(folder / "Brats18_TCIA01_201_1_flair.nii.gz"))
    seg: Any = nib.load(str(folder / "Brats18_TCIA01_201_1_seg.nii.gz"))
    labels = L.to_internal(np.asarray(seg.dataobj), "brats2021")
    brain = np.asarray(flair.dataobj) > 0
    world = nib.affines.apply_affine(seg.affine, np.argwhere(labels > 0).mean(axis=0))
    middle = nib.affines.apply_affine(flair.affine, np.argwhere(brain).mean(axis=0))
    assert world[0] < middle[0] - 15  # RAS+: the patient's left
    axial = key_slices(np.asarray(flair.dataobj, np.float32), labels, flair.affine)["axial"]
    picture = np.asarray(Image.open(io.BytesIO(_png_bytes(axial))).convert("RGB"))
    assert _read_letter(picture, "right", LETTER_SIZE) == "L"
    inner = _inner(picture, LETTER_SIZE)
    cols = np.nonzero(_tinted(inner))[1]
    head = np.nonzero((inner.max(axis=-1) > 20).any(axis=0))[0]
    assert cols.mean() > (head[0] + head[-1]) / 2 + 15


def _png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_reports_say_the_convention(tmp_path: Path) -> None:
    """The command line's HTML report and the web report's PDF say the convention in
    words next to the pictures."""
    import html

    import matplotlib.pyplot as plt

    from braintumor.diameters import rano
    from braintumor.io import write_png
    from braintumor.web.report import key_slices, pdf_layout
    from braintumor.web.store import Job

    image, labels, affine = _case(("L", "P", "S"), np.eye(3))
    png = report.overlay_png(image, labels, affine, tmp_path / "o.png")
    page = report.write_report(tmp_path, "c1", labels, 0.001, picture=png)["html"].read_text()
    assert html.escape(VIEW_NOTE) in page and VIEW_NOTE.startswith(VIEW_CONVENTION)
    pictures = {v: write_png(p, tmp_path / f"{v}.png")
                for v, p in key_slices(image[3], labels, affine).items()}
    # and so does the picture of the measured slice, lettered as the key slices
    diameters = rano(labels, affine)
    drawn = report.diameter_pictures(image, labels, affine, diameters, titles=False)
    assert "".join(_read_letter(drawn["ET"], e, 24) for e in EDGES) == RADIOLOGICAL["axial"]
    measured = report.diameters_png(drawn, tmp_path / "diameters.png")
    assert measured is not None
    job = Job(id="a1b2c3d4e5f6a7b8", kind="upload", method="watershed", status="done",
              finished=1.7e9, inputs={"case_id": "c1"},
              result={"kind": "3d", "summaries": [{"volumes_ml": {}, "lesion_count": 1,
                                                   "diameters": diameters}]})
    flow = pdf_layout(job, pictures, measured)
    try:
        words = " ".join(t.get_text() for fig in flow.figures for t in fig.texts).split()
        shown = [np.asarray(a.images[0].get_array()) for fig in flow.figures
                 for a in fig.axes if a.images]
    finally:
        for fig in flow.figures:
            plt.close(fig)
    assert " ".join(words).count(" ".join(VIEW_NOTE.split())) == 2
    picture = np.asarray(Image.open(measured).convert("RGB"))
    assert any(np.array_equal(s[..., :3], picture) for s in shown)


def test_a_scan_without_orientation_is_segmented_as_stored(tmp_path: Path) -> None:
    """A case written from bare arrays (qform and sform codes 0, voxel sizes only):
    segmented as the same case with BraTS's header is (not turned front to back by
    nibabel's Analyze fallback), its label map written back with codes 0 so that it
    overlays its scan, and a warning saying what was assumed."""
    import csv

    from braintumor.cli import main
    from braintumor.phantom import make_case, write_case

    case = make_case(shape=(64, 64, 64), seed=1)
    oriented = write_case(case, tmp_path / "oriented", with_label=False)
    bare = tmp_path / "bare" / case.case_id
    bare.mkdir(parents=True)
    for f in oriented.iterdir():
        img = nib.load(str(f))
        out = nib.Nifti1Image(np.asarray(img.dataobj), None)
        out.header.set_zooms(img.header.get_zooms()[:3])
        assert out.header["sform_code"] == 0 and out.header["qform_code"] == 0
        nib.save(out, str(bare / f.name))
    for src in (oriented, bare):
        assert main(["predict", str(src), "-o", str(tmp_path / f"out_{src.parent.name}"),
                     "--method", "watershed"]) == 0
    a = nib.load(str(tmp_path / "out_oriented" / f"{case.case_id}.nii.gz"))
    b = nib.load(str(tmp_path / "out_bare" / f"{case.case_id}.nii.gz"))
    assert np.asarray(a.dataobj).any()
    assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert b.header["sform_code"] == 0 and b.header["qform_code"] == 0
    assert np.allclose(b.header.get_zooms()[:3], a.header.get_zooms()[:3])
    rows = {r["case"]: r for r in csv.DictReader(
        (tmp_path / "out_bare" / "volumes.csv").open())}
    assert "gives no orientation" in rows[case.case_id]["warning"]
    rows = {r["case"]: r for r in csv.DictReader(
        (tmp_path / "out_oriented" / "volumes.csv").open())}
    assert "orientation" not in rows[case.case_id]["warning"]
    # an sform that gives an axis no length places nothing either: the same outline
    flat = tmp_path / "flat" / case.case_id
    flat.mkdir(parents=True)
    for f in oriented.iterdir():
        img = nib.load(str(f))
        broken = img.affine.copy()
        broken[:3, 2] = 0
        out = nib.Nifti1Image(np.asarray(img.dataobj), None)
        out.header.set_sform(broken, 1)
        nib.save(out, str(flat / f.name))
    assert main(["predict", str(flat), "-o", str(tmp_path / "out_flat"),
                 "--method", "watershed"]) == 0
    c = nib.load(str(tmp_path / "out_flat" / f"{case.case_id}.nii.gz"))
    assert np.array_equal(np.asarray(a.dataobj), np.asarray(c.dataobj))


@pytest.mark.parametrize("affine", [
    np.array([[-1.0, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]]),  # BraTS, LPS
    np.array([[1.0, 0, 0, -90], [0, 1, 0, -120], [0, 0, 2, -60], [0, 0, 0, 1]]),  # RAS, 2 mm
    np.array([[0, 0, -1.0, 80], [1, 0, 0, -100], [0, 1, 0, -40], [0, 0, 0, 1]]),  # sagittal
])
def test_overlay_slices_are_named_as_the_rano_tables_name_them(affine: np.ndarray) -> None:
    """An overlay panel's title names its slice as a measured lesion's is named: the
    number along the file's own axial axis, from 1, of how many, and its S/I position,
    whatever order the file stores its axes in."""
    from braintumor.diameters import slice_axis
    from braintumor.report import display_grid, display_slice_name, slice_position

    shape = (30, 34, 26)
    vol = np.zeros(shape, np.uint8)
    voxel = (7, 11, 5)
    vol[voxel] = 1
    img, shown = display_grid(vol, affine)
    z = int(np.argwhere(img)[0][2])
    world = affine @ [*voxel, 1.0]
    axis = slice_axis(affine)
    name = display_slice_name(shown, affine, img.shape, z)
    expected = slice_position({"slice": voxel[axis], "slices": shape[axis],
                               "centre_mm": [0.0, 0.0, float(world[2])]})
    assert name == expected, (name, expected)
