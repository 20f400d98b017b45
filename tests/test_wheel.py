"""The built wheel: what `pip install braintumor` gives a user, without this checkout.

The rest of the suite runs the editable install, which reads the models and the web
page straight from ``src/``; a file left out of the package data would pass there and
fail for every user of the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "braintumor"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy of what the sdist would hold, so that no build/ folder or
    # egg-info left in this checkout can supply a file the package data leaves out
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr
    (found,) = out.glob("braintumor-*.whl")
    return found


def test_the_wheel_holds_every_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    ours = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert ours, "no package files found"
    assert sorted(ours - names) == []
    for needed in ("braintumor/models/brats3d/model.json",
                   "braintumor/models/lgg2d/model.json",
                   "braintumor/web/static/vendor/niivue.umd.js"):
        assert needed in names


def test_the_unpacked_wheel_segments_with_its_shipped_models(wheel: Path,
                                                             tmp_path: Path) -> None:
    """Unpacked away from the checkout and first on the path, the wheel alone runs the
    shipped 3D CNN on a case and the 2D model on a picture."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import sys, numpy as np\n"
        "import braintumor\n"
        f"assert braintumor.__file__.startswith({str(site)!r}), braintumor.__file__\n"
        "from braintumor.phantom import make_case\n"
        "from braintumor.segment import segment\n"
        "res = segment(make_case(shape=(64, 72, 56), seed=1), 'cnn', fast=True)\n"
        "assert res.labels.shape == (64, 72, 56) and res.info['model_version'], res.info\n"
        "from braintumor.slices2d import segment_image\n"
        "pic = np.zeros((96, 96, 3), np.uint8); pic[20:76, 20:76] = 90\n"
        "out = segment_image(pic)\n"
        "assert out.mask.shape == (96, 96)\n"
        "print('ok', res.info['model_version'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok ")
