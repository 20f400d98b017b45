"""Shared fixtures. Real data lives outside the project (licences): set
BRAINTUMOR_DATA to the shared data folder, or it is looked for at ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tiny test volumes gain nothing from threads, and OpenMP threads that spin-wait on an
# oversubscribed 2-core machine make convolutions many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The shared real-data folder, or None when absent."""
    env = os.environ.get("BRAINTUMOR_DATA")
    cands = [Path(env)] if env else []
    cands += [ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"]
    for c in cands:
        if (c / "brats2018").is_dir() or (c / "lgg_kaggle_3m").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared real data not found (set BRAINTUMOR_DATA)")
    return d


@pytest.fixture(scope="session")
def brats_dir(data_dir: Path) -> Path:
    d = data_dir / "brats2018"
    if not d.is_dir():
        pytest.skip("shared BraTS cases not found")
    return d


@pytest.fixture(scope="session")
def lgg_dir(data_dir: Path) -> Path:
    d = data_dir / "lgg_kaggle_3m"
    if not d.is_dir():
        pytest.skip("shared LGG slices not found")
    return d


@pytest.fixture(autouse=True)
def _small_test_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The synthetic heads of the tests are 24-44 mm across (small, so that tests
    run fast); a real head is 140 mm or more, and a series covering under 80 mm along an
    axis is taken for a localizer or a slab. Lowered for the tests; the test of that rule
    sets it back."""
    from braintumor import dicom, preprocess

    monkeypatch.setattr(dicom, "MIN_COVER_MM", 20.0)
    # likewise the slab warning of a scan under 80 mm along an axis (its own test sets
    # it back)
    monkeypatch.setattr(preprocess, "MIN_FIELD_MM", 10.0)
    # and the cut field of view's least brain volume (its own test sets it back)
    monkeypatch.setattr(preprocess, "MIN_BRAIN_ML", 0.0)


@pytest.fixture(scope="module")
def methods() -> Iterator[None]:
    """The web tests' stand-in segmenters (``threshold``, ``crash``, ``slow``) in the
    segment registry while a module's tests run."""
    from test_web_support import register_test_methods

    with pytest.MonkeyPatch.context() as mp:
        register_test_methods(mp)
        yield


@pytest.fixture(scope="module")
def case_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The web tests' small synthetic case as BraTS 2021-named files, written once a
    module."""
    from test_web_support import small_case, write_case_files

    return write_case_files(small_case(), tmp_path_factory.mktemp("case"))
