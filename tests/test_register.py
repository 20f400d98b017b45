"""Rigid alignment of modalities for a patient who moved between series: a known motion is
undone, a still scan is left (nearly) alone, a refused transform keeps the image as
acquired, and segment()/predict say what was done."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from braintumor import register
from braintumor.cases import MODALITIES, Case
from braintumor.cli import main
from braintumor.metrics import dice
from braintumor.phantom import make_case, write_case
from braintumor.segment import segment

SHAPE = (96, 96, 72)


@pytest.fixture(scope="module")
def case() -> Case:
    return make_case(shape=SHAPE, seed=4, spacing=(2.0, 2.0, 2.0), case_id="Move004")


def _move(case: Case, mods: tuple[str, ...], degrees: tuple[float, float, float],
          mm: tuple[float, float, float]) -> tuple[Case, object]:
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter([float(s * (n - 1) / 2) for s, n in zip(case.spacing, case.shape, strict=True)])
    t.SetRotation(*(math.radians(d) for d in degrees))
    t.SetTranslation(list(mm))
    image = case.image.copy()
    for m in mods:
        i = MODALITIES.index(m)
        image[i] = register.resample(case.image[i], t, case.spacing)
    return replace(case, image=image), t


def _brain_points(case: Case) -> np.ndarray:
    return np.argwhere(case.image[0] != 0)[::50] * np.asarray(case.spacing)


def test_a_known_motion_is_undone(case: Case) -> None:
    moved, truth = _move(case, ("flair", "t2"), (4.0, -3.0, 2.0), (5.0, -4.0, 3.0))
    aligned, done = register.align_modalities(moved)
    assert [a.modality for a in done] == ["t1ce", "t2", "flair"]
    pts = _brain_points(case)
    by = {a.modality: a for a in done}
    for m in ("t2", "flair"):
        a = by[m]
        assert a.accepted and a.moved_mm > 4.0
        # the fitted transform composed with the applied one is (close to) the identity
        err = [np.linalg.norm(np.subtract(truth.TransformPoint(a.transform.TransformPoint(
            tuple(map(float, p)))), p)) for p in pts]
        assert float(np.mean(err)) < 1.0, (m, np.mean(err))
        i = MODALITIES.index(m)
        brain = case.image[0] != 0
        before = np.corrcoef(moved.image[i][brain], case.image[i][brain])[0, 1]
        after = np.corrcoef(aligned.image[i][brain], case.image[i][brain])[0, 1]
        assert after > before + 0.2, (m, before, after)
    assert by["t1ce"].moved_mm < 1.0  # it did not move
    assert np.array_equal(aligned.modality("t1"), case.modality("t1"))  # the reference
    assert aligned.shape == case.shape and np.array_equal(aligned.affine, case.affine)


def test_a_moved_image_keeps_a_clean_edge(case: Case) -> None:
    """The footprint moves whole: no fringe of partial values along the brain's edge."""
    flair = case.modality("flair")
    moved, t = _move(case, ("flair",), (0.0, 0.0, 5.0), (6.0, 0.0, 0.0))
    out = moved.modality("flair")
    inside = out != 0
    assert inside.sum() == pytest.approx((flair != 0).sum(), rel=0.02)
    # values along the moved edge are brain values, not blends with the zero outside
    edge = inside & ~ndi.binary_erosion(inside)
    assert np.percentile(out[edge], 5) > 0.3 * np.median(flair[flair != 0])


def test_a_refused_transform_keeps_the_image(case: Case,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    moved, _ = _move(case, ("flair",), (6.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    monkeypatch.setattr(register, "MAX_ROTATION_DEG", 1.0)
    aligned, done = register.align_modalities(moved)
    flair = next(a for a in done if a.modality == "flair")
    assert not flair.accepted and "more than a head moves" in flair.reason
    assert np.array_equal(aligned.modality("flair"), moved.modality("flair"))
    note = register.alignment_note("t1", done)
    assert note is not None and "the FLAIR was kept as acquired" in note


def test_the_reference_is_the_first_present_modality(case: Case) -> None:
    no_t1 = replace(case, missing=("t1",))
    moved, _ = _move(no_t1, ("flair",), (0.0, 3.0, 0.0), (0.0, 4.0, 0.0))
    aligned, done = register.align_modalities(moved)
    assert [a.modality for a in done] == ["t2", "flair"]  # t1 absent, t1ce the reference
    assert np.array_equal(aligned.modality("t1ce"), case.modality("t1ce"))
    assert register.align_modalities(replace(case, missing=("t1", "t2", "flair")))[1] == []


def test_the_reference_is_the_case_grid_modality(case: Case) -> None:
    """A case put on the T1ce's grid beside thick T1 slices is aligned to the T1ce, the
    series it lies on, not to the interpolated T1."""
    on_t1ce = replace(case, grid="t1ce", regridded=("t1",))
    moved, _ = _move(on_t1ce, ("t1",), (0.0, 3.0, 0.0), (0.0, 4.0, 0.0))
    aligned, done = register.align_modalities(moved)
    assert [a.modality for a in done] == ["t1", "t2", "flair"]
    assert np.array_equal(aligned.modality("t1ce"), case.modality("t1ce"))
    assert done[0].accepted and done[0].moved_mm > 1.0
    assert register.reference_of(on_t1ce) == "t1ce"
    assert register.reference_of(replace(case, grid="t1ce", missing=("t1ce",))) == "t1"


def test_segment_aligns_and_says_so(case: Case) -> None:
    moved, _ = _move(case, ("flair", "t2", "t1ce"), (3.0, 3.0, -3.0), (4.0, 4.0, -4.0))
    plain = segment(moved, "watershed")
    fixed = segment(moved, "watershed", align=True)
    assert "aligned" not in plain.info
    assert set(fixed.info["aligned"]) == {"t1ce", "t2", "flair"}
    assert "aligned to the T1 by rigid registration" in fixed.info["warning"]
    assert case.label is not None
    wt = case.label > 0
    assert dice(fixed.labels > 0, wt) > dice(plain.labels > 0, wt) + 0.05


def test_predict_align(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    moved, _ = _move(case, ("flair",), (0.0, 0.0, 4.0), (5.0, 0.0, 0.0))
    folder = write_case(moved, tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["predict", str(folder), "-o", str(out), "--method", "watershed", "--align"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "the FLAIR was aligned to the T1" in err
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert "aligned to the T1" in row["warning"]


def test_the_motion_study_moves_and_measures(case: Case) -> None:
    from braintumor.motion_study import MOVED, applied_mm, motion, residual_mm

    moved, truth = motion(case, 7, 5.0, 5.0)
    assert np.array_equal(moved.modality("t1"), case.modality("t1"))  # the T1 stays
    applied = applied_mm(case, truth)
    assert set(applied) == set(MOVED) and all(0.5 < v < 5.0 * math.sqrt(3) + 10 for v in
                                              applied.values())
    _, control = register.align_modalities(case)
    _, fitted = register.align_modalities(moved)
    res = residual_mm(case, fitted, control, truth)
    assert set(res) == set(MOVED) and max(res.values()) < 1.0
    # a wrong transform is seen: the control's own fit read as the moved case's
    wrong = residual_mm(case, control, control, truth)
    assert min(wrong.values()) > 0.5
