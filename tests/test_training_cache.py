"""The preprocessed training cache follows its data: a case whose files change is made
again; a training folder lacking a modality is refused in training's own words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from braintumor.config import TrainConfig
from braintumor.errors import InputError
from braintumor.io import load_label_nifti, save_label_nifti
from braintumor.phantom import make_case, write_case
from braintumor.training.data import load_prepared
from braintumor.training.trainer import load_cases


def _data(folder: Path, n: int = 2) -> list[Path]:
    return [write_case(make_case(shape=(32, 32, 24), seed=i, case_id=f"C{i}"), folder)
            for i in range(n)]


def test_a_changed_label_file_remakes_its_cached_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _data(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), cache=str(tmp_path / "cache"))
    first = {c.case_id: c for c in load_cases(cfg)}
    assert first["C0"].label is not None and first["C0"].label.any()
    capsys.readouterr()
    # the same case ids with new labels: C0's outline is emptied
    seg = tmp_path / "data" / "C0" / "C0_seg.nii.gz"
    vol = load_label_nifti(seg)
    save_label_nifti(np.zeros_like(vol.data), seg, affine=vol.affine)
    before = (tmp_path / "cache" / "C1.npz").stat().st_mtime_ns
    again = {c.case_id: c for c in load_cases(cfg)}
    err = capsys.readouterr().err
    assert again["C0"].label is not None and not again["C0"].label.any()
    assert "made 1 cached case(s) again (C0): their files changed" in err
    assert (tmp_path / "cache" / "C1.npz").stat().st_mtime_ns == before  # C1 kept
    # nothing changed: nothing made again, nothing said
    load_cases(cfg)
    assert "again" not in capsys.readouterr().err


def test_a_cache_that_did_not_record_its_sources_is_made_again_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _data(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), cache=str(tmp_path / "cache"))
    load_cases(cfg)
    (tmp_path / "cache" / "sources.json").unlink()  # as a cache made by an earlier version
    capsys.readouterr()
    load_cases(cfg)
    assert "did not record what its cases were made from" in capsys.readouterr().err
    load_cases(cfg)
    assert "again" not in capsys.readouterr().err
    rec = json.loads((tmp_path / "cache" / "sources.json").read_text())
    assert sorted(rec["cases"]) == ["C0", "C1"]


def test_a_cache_carried_without_its_data_is_used_as_it_is(tmp_path: Path) -> None:
    _data(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), cache=str(tmp_path / "cache"))
    load_cases(cfg)
    os.rename(tmp_path / "data", tmp_path / "elsewhere")
    assert [c.case_id for c in load_cases(cfg)] == ["C0", "C1"]
    assert load_prepared(tmp_path / "cache" / "C0.npz").label is not None


def test_training_data_without_flair_is_refused_in_training_words(tmp_path: Path) -> None:
    folders = _data(tmp_path / "data")
    (folders[1] / "C1_flair.nii.gz").unlink()
    cfg = TrainConfig(data=str(tmp_path / "data"), cache=str(tmp_path / "cache"))
    with pytest.raises(InputError) as exc:
        load_cases(cfg)
    msg = str(exc.value)
    assert "missing the FLAIR modality" in msg and "Training needs all four" in msg
    assert "watershed" not in msg
