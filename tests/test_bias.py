"""Bias-field correction before segmenting (``segment(..., bias_correct=True)``,
``predict --bias-correct``): N4 through SimpleITK, on the phantom's known bias field."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor.metrics import dice
from braintumor.phantom import make_case
from braintumor.preprocess import brain_mask, correct_bias
from braintumor.segment import segment

SHAPE, SPACING = (96, 96, 72), (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def biased():
    """A phantom whose strong bias field (log sd 0.25) blurs its tumour into the
    normal tissue's spread (the watershed alone overreaches it by 40 %), and the same
    phantom without the field."""
    return (make_case(shape=SHAPE, spacing=SPACING, seed=1, bias=0.25),
            make_case(shape=SHAPE, spacing=SPACING, seed=1, bias=0.0))


def test_correction_removes_most_of_the_field(biased) -> None:
    case, flat = biased
    brain = brain_mask(case.image)
    out = correct_bias(case.image, brain, case.spacing)
    assert out.dtype == np.float32 and out.shape == case.image.shape
    assert np.array_equal(out[:, ~brain], case.image[:, ~brain])
    # the field is the ratio to the unbiased phantom (same noise draw); its spread in
    # the brain's normal tissue falls several-fold
    normal = brain & (case.label == 0) & (flat.image[3] > 0) & (case.image[3] > 0)
    before = np.log(case.image[3][normal] / flat.image[3][normal])
    after = np.log(out[3][normal] / flat.image[3][normal])
    assert np.std(after) < 0.4 * np.std(before)
    # a channel with no signal is left as it is
    blank = case.image.copy()
    blank[0] = 0
    assert not correct_bias(blank, brain, case.spacing)[0].any()


def test_segment_with_bias_correction_outlines_the_blurred_tumour(biased) -> None:
    case, _ = biased
    truth = case.label > 0
    plain = segment(case, "watershed")
    fixed = segment(case, "watershed", bias_correct=True)
    assert dice(fixed.labels > 0, truth) > 0.9
    assert dice(fixed.labels > 0, truth) > dice(plain.labels > 0, truth) + 0.05
    assert fixed.info["bias_corrected"] is True


def test_predict_bias_correct(biased, tmp_path, capsys) -> None:
    import csv

    from braintumor.cli import main
    from braintumor.phantom import write_case

    case, _ = biased
    folder = write_case(case, tmp_path / "in")
    plain, fixed = tmp_path / "plain", tmp_path / "fixed"
    assert main(["predict", str(folder), "-o", str(plain), "--method", "watershed"]) == 0
    rc = main(["predict", str(folder), "-o", str(fixed), "--method", "watershed",
               "--bias-correct"])
    err = capsys.readouterr().err
    assert rc == 0, err
    rows = {d: next(csv.DictReader((d / "volumes.csv").open())) for d in (plain, fixed)}
    true_ml = float((case.label > 0).sum()) * 8 / 1000
    off = {d: abs(float(rows[d]["WT_mL"]) - true_ml) for d in (plain, fixed)}
    assert off[fixed] < 0.1 * true_ml < off[plain]


def test_watershed_n4_corrects_the_leading_modalities_only(biased) -> None:
    from braintumor.watershed import n4_image, segment_watershed

    case, _ = biased
    brain = brain_mask(case.image)
    assert n4_image(case.image, brain, case.spacing, 0) is case.image
    two = n4_image(case.image, brain, case.spacing, 2)
    assert np.array_equal(two[2:], case.image[2:])
    assert not np.array_equal(two[:2], case.image[:2])
    # all four corrected: the watershed finds the tumour the field hid
    found = segment_watershed(case, n4=4)
    assert dice(found.labels > 0, case.label > 0) > 0.85
    assert found.info["params"]["n4"] == 4
