"""The label colours: apart from each other for readers with red-green colour blindness,
and the same numbers in every place that draws them.

Colour-blind vision is simulated with Machado, Oliveira and Fernandes (2009)'s matrices
at severity 1.0 (deuteranopia and protanopia), applied to linear RGB; colours are then
compared in CIELAB (CIE76 colour difference, D65 white). A difference under about 2 is
unnoticeable and over 10 plainly seen; the bar of 25 is one that the red and green used
before fail (14 for a deuteranope on the page, 17 for a protanope in the pictures) and
that the Okabe-Ito palette clears (34 and more).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from braintumor import labels as L
from braintumor.report import (
    COLOURS,
    DIAMETER_VIEWS,
    LABEL_RGB,
    LONGEST_RGB,
    PERPENDICULAR_RGB,
)

STATIC = Path(__file__).resolve().parents[1] / "src" / "braintumor" / "web" / "static"

#: Machado et al. 2009, severity 1.0, for linear RGB
MACHADO = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}
#: linear sRGB -> CIE XYZ (D65)
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805],
                        [0.2126, 0.7152, 0.0722],
                        [0.0193, 0.1192, 0.9505]])
D65 = np.array([0.95047, 1.0, 1.08883])
MIN_DELTA_E = 25.0
#: the colours of before: edema green, necrotic core red, enhancing tumour yellow
OLD_WEB = {L.NCR: (230, 60, 60), L.ED: (60, 200, 90), L.ET: (255, 215, 0)}
OLD_PICTURES = {L.NCR: (230, 38, 38), L.ED: (51, 217, 64), L.ET: (255, 230, 25)}


def _lab(rgb: tuple[int, int, int], vision: str) -> np.ndarray:
    """CIELAB of the 8-bit sRGB colour ``rgb`` as seen with ``vision``."""
    c = np.asarray(rgb, float) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = np.clip(MACHADO[vision] @ linear, 0.0, 1.0)
    t = SRGB_TO_XYZ @ seen / D65
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _closest(colours: list[tuple[int, int, int]]) -> tuple[float, str]:
    """The smallest CIE76 difference between two of ``colours`` over the three kinds of
    vision, and the vision where it falls."""
    return min((float(np.linalg.norm(_lab(a, v) - _lab(b, v))), v)
               for v in MACHADO for a, b in itertools.combinations(colours, 2))


def test_the_simulation_is_machados() -> None:
    # white stays white and the matrices keep grey grey (each row sums to 1)
    for m in MACHADO.values():
        assert np.allclose(m.sum(axis=1), 1.0, atol=1e-5)
    # pure red looks dark yellow-brown to a protanope: little red left over green
    lab = _lab((255, 0, 0), "protanopia")
    assert lab[0] < 50 and lab[2] > 40


def test_label_colours_stay_apart_with_red_green_colour_blindness() -> None:
    assert LABEL_RGB == {L.NCR: (213, 94, 0), L.ED: (86, 180, 233), L.ET: (240, 228, 66)}
    closest, vision = _closest(list(LABEL_RGB.values()))
    assert closest > MIN_DELTA_E, (closest, vision)
    # the bar has teeth: the colours of before fall under it with red-green blindness
    for old in (OLD_WEB, OLD_PICTURES):
        closest, vision = _closest(list(old.values()))
        assert closest < MIN_DELTA_E and vision in ("deuteranopia", "protanopia"), closest


@pytest.mark.parametrize("region", ["ET", "WT"])
def test_diameter_lines_stand_apart_from_the_outline_and_each_other(region: str) -> None:
    outline = DIAMETER_VIEWS[region][1]
    assert outline in LABEL_RGB.values()
    closest, vision = _closest([outline, LONGEST_RGB, PERPENDICULAR_RGB])
    assert closest > 20.0, (closest, vision)


def _js_crosshair() -> tuple[int, int, int]:
    js = (STATIC / "app.js").read_text()
    m = re.search(r"crosshairColor: \[([\d.]+), ([\d.]+), ([\d.]+)", js)
    assert m
    r, g, b = (round(float(v) * 255) for v in m.groups())
    return r, g, b


def test_the_viewer_crosshair_is_no_label_colour() -> None:
    closest, vision = _closest([_js_crosshair(), *LABEL_RGB.values()])
    assert closest > MIN_DELTA_E, (closest, vision)


def test_the_uncertainty_map_is_no_label_colour() -> None:
    """The viewer's uncertainty layer is one hue apart from the labels and the crosshair
    (its red-to-yellow ramp of before read as necrotic core and enhancing tumour)."""
    js = (STATIC / "app.js").read_text()
    m = re.search(r"const UNCERTAINTY_RGB = \[(\d+), (\d+), (\d+)\];", js)
    assert m
    rgb = (int(m[1]), int(m[2]), int(m[3]))
    assert 'colormap: "uncertainty"' in js and 'colormap: "warm"' not in js
    closest, vision = min(_closest([rgb, other])
                          for other in [_js_crosshair(), *LABEL_RGB.values()])
    assert closest > MIN_DELTA_E, (closest, vision)
    # the old ramp's hot end fails the same bar against the enhancing tumour's yellow
    assert _closest([(255, 255, 0), LABEL_RGB[L.ET]])[0] < MIN_DELTA_E
    assert "rgb({}, {}, {})".format(*rgb) in (STATIC / "style.css").read_text()


def test_every_place_that_draws_labels_has_the_same_colours() -> None:
    from braintumor.web.report import COLOURS as WEB_COLOURS

    assert WEB_COLOURS == LABEL_RGB
    assert all(np.allclose(np.array(COLOURS[v]) * 255, rgb) for v, rgb in LABEL_RGB.items())
    # the page's viewer colour map
    js = (STATIC / "app.js").read_text()
    m = re.search(r"const COLOURS = \{ 1: \[(\d+), (\d+), (\d+)\], 2: \[(\d+), (\d+), (\d+)\], "
                  r"3: \[(\d+), (\d+), (\d+)\] \};", js)
    assert m, "app.js has no COLOURS line of the expected form"
    n = [int(v) for v in m.groups()]
    assert {1: tuple(n[0:3]), 2: tuple(n[3:6]), 3: tuple(n[6:9])} == LABEL_RGB
    # the legend swatches of the page and of the HTML report
    names = {L.NCR: "ncr", L.ED: "ed", L.ET: "et"}
    css = (STATIC / "style.css").read_text()
    report_css = (STATIC / "report.css").read_text()
    for value, name in names.items():
        rgb = "rgb({}, {}, {})".format(*LABEL_RGB[value])
        assert f"--{name}: {rgb};" in css, name
        assert f".sw.{name} {{ background: {rgb}; }}" in report_css, name
    # and no colour of before is left anywhere in the static files
    for path in (STATIC / "app.js", STATIC / "style.css", STATIC / "report.css"):
        text = path.read_text()
        for old in OLD_WEB.values():
            assert "{}, {}, {}".format(*old) not in text, (path.name, old)
