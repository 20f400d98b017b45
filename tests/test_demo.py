"""``braintumor demo`` end to end on a small sample, and its choice of method."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import report
from braintumor.cli import main
from braintumor.commands.demo import CASE_ID, choose_method, parse_size
from braintumor.errors import BrainTumorError, InputError
from braintumor.segment import available_methods


def test_choose_method() -> None:
    all3 = ["cnn", "watershed", "hybrid"]
    assert choose_method("auto", all3, model_installed=True) == "cnn"
    assert choose_method("auto", all3, model_installed=False) == "watershed"
    assert choose_method("watershed", all3, model_installed=True) == "watershed"
    with pytest.raises(BrainTumorError, match="model is not installed"):
        choose_method("cnn", all3, model_installed=False)
    with pytest.raises(BrainTumorError, match="No segmenter"):
        choose_method("auto", [], model_installed=False)
    with pytest.raises(BrainTumorError, match="not installed"):
        choose_method("watershed", ["cnn"], model_installed=True)


def test_parse_size() -> None:
    assert parse_size("48") == (48, 48, 48)
    assert parse_size("64,64,40") == (64, 64, 40)
    assert parse_size(None) is None
    for bad in ("abc", "8", "1,2"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_no_segmenter_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("braintumor.segment.available_methods", lambda: [])
    rc = main(["demo", "-o", str(tmp_path), "--size", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: No segmenter") and "Traceback" not in err


def test_cuda_without_a_gpu_is_said_before_the_sample_is_built(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gpu(device: str = "auto") -> str:
        raise InputError("--device cuda was asked for, but no CUDA GPU is available.")

    monkeypatch.setattr("braintumor.commands.demo._model_installed", lambda: True)
    monkeypatch.setattr("braintumor.segment.available_methods", lambda: ["cnn", "watershed"])
    monkeypatch.setattr("braintumor.inference.resolve_device", no_gpu)
    rc = main(["demo", "-o", str(tmp_path / "d"), "--size", "32", "--method", "cnn",
               "--device", "cuda"])
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # no sample, no output folder


def test_report_pieces(tmp_path: Path) -> None:
    lab = np.zeros((20, 20, 10), np.uint8)
    lab[5:10, 5:10, 3:6] = 2
    lab[6:8, 6:8, 4] = 1
    lab[8, 8, 4] = 3
    v = report.volumes_ml(lab, 0.002)
    assert v["ED"] == pytest.approx((75 - 5) * 0.002)
    assert v["WT"] == pytest.approx(75 * 0.002) and v["TC"] == pytest.approx(5 * 0.002)
    zs = report.pick_slices(lab, n=3)
    assert 4 in zs and all(3 <= z <= 5 for z in zs)
    img = np.random.default_rng(0).random((4, 20, 20, 10)).astype(np.float32)
    png = report.overlay_png(img, lab, np.diag([-1.0, -1.0, 1.0, 1.0]), tmp_path / "o.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    paths = report.write_report(tmp_path, "c<1>", lab, 0.002,
                                metrics={"WT": {"dice": 0.5, "hd95": 2.0}}, picture=png)
    doc = json.loads(paths["json"].read_text())
    assert doc["volumes_ml"]["WT"] == pytest.approx(0.15) and doc["metrics"]["WT"]["dice"] == 0.5
    page = paths["html"].read_text()
    assert "c&lt;1&gt;" in page and "data:image/png;base64" in page and "0.500" in page
    assert report.NOTICE in page and "Warning:" not in page
    # a warning is set apart, not lost among the facts
    warned = report.write_report(tmp_path, "c1", lab, 0.002, stem="w",
                                 info={"method": "cnn", "warning": "scan <not> stripped"})
    page = warned["html"].read_text()
    assert "<strong>Warning:</strong> scan &lt;not&gt; stripped" in page
    assert "method: cnn" in page and "warning:" not in page


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if "watershed" not in available_methods():
        pytest.skip("no segmenter installed yet")
    tmp_path = tmp_path / ("a-long-folder-name-" * 4)  # paths past 80 columns
    rc = main(["demo", "-o", str(tmp_path), "--size", "48", "--method", "watershed"])
    out = capsys.readouterr().out
    assert rc == 0
    pred = tmp_path / "prediction" / f"{CASE_ID}.nii.gz"
    truth = tmp_path / "sample" / CASE_ID / f"{CASE_ID}_seg.nii.gz"
    for f in (pred, truth, tmp_path / "overlay.png", tmp_path / "report.html",
              tmp_path / "report.json"):
        assert f.is_file(), f
    p, t = nib.load(str(pred)), nib.load(str(truth))
    assert p.shape == t.shape == (48, 48, 48)
    np.testing.assert_allclose(p.affine, t.affine)
    assert set(np.unique(np.asarray(p.dataobj)).tolist()) <= {0, 1, 2, 4}
    doc = json.loads((tmp_path / "report.json").read_text())
    dice = doc["metrics"]["WT"]["dice"]
    assert 0.0 <= dice <= 1.0
    assert f"{dice:.3f}" in out  # the printed table shows the same Dice
    assert "report.html" in out and doc["info"]["method"] == "watershed"
    # method, model and mode as predict's reports give them, timings in words
    assert doc["info"]["model"] == "-" and "mode" in doc["info"]
    assert doc["info"]["segmentation took"].endswith(" s")
    # every file named, each path and the command on one line however long
    assert f"diameters picture : {tmp_path / 'diameters.png'}" in out
    assert f"--pred {tmp_path / 'prediction'} --ref {tmp_path / 'sample'}" in out
