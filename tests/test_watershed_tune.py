"""braintumor.watershed_tune's native enhancing-tumour tools on real cases (skipped
without the shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from braintumor import labels as L
from braintumor import watershed_tune as T
from braintumor.watershed import DEFAULT_PARAMS

CASES = ("Brats18_TCIA02_606_1", "Brats18_TCIA13_623_1")


@pytest.fixture(scope="module")
def prepared(brats_dir: Path, tmp_path_factory) -> dict[str, T.Prepared]:
    src = tmp_path_factory.mktemp("brats")
    for c in CASES:
        (src / c).symlink_to(brats_dir / c)
    cache = tmp_path_factory.mktemp("cache")
    paths = T.cache_cases(src, cache)
    return {p.stem: T.Prepared(p, 2) for p in paths}


@pytest.mark.realdata
def test_native_step_only_redraws_the_enhancing_tumour(prepared) -> None:
    pc = prepared["Brats18_TCIA02_606_1"]
    grid, full = pc.run_grid(DEFAULT_PARAMS), pc.run(DEFAULT_PARAMS)
    assert not np.array_equal(grid, full)
    changed = grid != full
    # only ET and necrosis trade places, plus ET at most one voxel outside the core
    assert set(np.unique(full[changed])) <= {L.NCR, L.ET}
    core_before = np.isin(grid, [L.NCR, L.ET])
    assert (core_before & ~np.isin(full, [L.NCR, L.ET])).sum() == 0
    ref = pc.label == L.ET

    def dice(a: np.ndarray) -> float:
        return 2 * float((a & ref).sum()) / float(a.sum() + ref.sum())

    assert dice(full == L.ET) > dice(grid == L.ET)  # its thin rim is the step's case
    off = pc.run(DEFAULT_PARAMS.replace(et_native=99.0))
    assert np.array_equal(off, grid)


@pytest.mark.realdata
def test_round_trip_and_reference_enhancement(prepared, tmp_path, monkeypatch) -> None:
    rt = T.round_trip(prepared, list(CASES))
    for c in CASES:
        assert rt[c]["WT"] > 0.9 and rt[c]["ET"] < rt[c]["WT"]
    monkeypatch.setattr(T, "_prepare_all", lambda factor: (list(CASES), prepared))
    rows = T.reference_enhancement(out=tmp_path)
    # the expert ET of Brats18_TCIA13_623_1 does not enhance; that of 606 does
    assert rows["Brats18_TCIA13_623_1"]["passing"] < 0.2 < 0.8 < \
        rows["Brats18_TCIA02_606_1"]["passing"]
    assert (tmp_path / "reference_et.md").read_text().count("| Brats18_") == 2
