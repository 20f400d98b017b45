"""Predictor and `braintumor predict`: geometry, labels, failures, ONNX agreement.

A tiny randomly initialised compact U-Net stands in for the shipped model, so these
tests check the machinery (cropping, uncropping, label conversion, file geometry), not
accuracy (the model card reports accuracy by cross-validation).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from braintumor import labels as L
from braintumor.cases import load_case
from braintumor.cli import main
from braintumor.config import TrainConfig, to_dict
from braintumor.inference import PostProcess, load_model, segment_cnn
from braintumor.networks import create_network
from braintumor.phantom import make_case, write_case

SHAPE = (48, 56, 40)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with one randomly initialised tiny compact U-Net."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    cfg = TrainConfig(network="compact_unet", network_args={"channels": [4, 8, 8, 8]},
                      patch=(32, 32, 32))
    net = create_network("compact_unet", channels=(4, 8, 8, 8))
    with torch.no_grad():  # bias the WT logit up so a label map is not empty
        net.head[1].bias[:] = torch.tensor([0.2, 0.1, 0.0])
    torch.save({"model": net.state_dict(), "config": to_dict(cfg), "version": "test"},
               folder / "fold0.pt")
    (folder / "model.json").write_text(json.dumps(
        {"version": "tiny-test", "checkpoints": ["fold0.pt"], "onnx": [], "patch": [32, 32, 32],
         "postprocess": {}}))
    return folder


def test_segment_cnn_refuses_an_unknown_option(tiny_model: Path) -> None:
    # a misspelt "fast" must not run the accurate mode without a word
    from braintumor.errors import InputError
    from braintumor.segment import segment

    case = make_case(shape=SHAPE, seed=3)
    with pytest.raises(InputError, match=r"Unknown CNN option\(s\) 'fsat'; known: .*fast"):
        segment(case, "cnn", model=tiny_model, device="cpu", fsat=True)
    # the options every method takes (as `braintumor predict` and the page pass them) run
    opts = {"device": "cpu", "model": tiny_model, "tta": False, "uncertainty": False,
            "backend": "auto", "fast": True}
    assert segment(case, "cnn", **opts).labels.shape == case.shape


def test_postprocess_relabels_small_et_and_drops_small_components() -> None:
    probs = np.zeros((3, 20, 20, 20), np.float32)
    probs[:, 2:10, 2:10, 2:10] = 0.9  # big lesion with ET
    probs[0, 15:17, 15:17, 15:17] = 0.9  # tiny isolated WT blob (8 voxels)
    lab = PostProcess(et_min_voxels=0, wt_min_voxels=0).apply(probs)
    assert (lab == L.ET).sum() == 512 and (lab == L.ED).sum() == 8
    lab2 = PostProcess(et_min_voxels=1000, wt_min_voxels=20).apply(probs)
    assert (lab2 == L.ET).sum() == 0 and (lab2 == L.NCR).sum() == 512
    assert (lab2[15:17, 15:17, 15:17] == 0).all()


def test_segment_cnn_native_grid(tiny_model: Path) -> None:
    case = make_case(shape=SHAPE, seed=3)
    res = segment_cnn(case, model=tiny_model, device="cpu", uncertainty=True)
    assert res.labels.shape == case.shape
    assert res.probabilities is not None and res.probabilities.shape == (3, *case.shape)
    assert res.uncertainty is not None and res.uncertainty.shape == case.shape
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    # the mirrored passes the map needs are said where results are tabled
    assert res.info["mode"] == "accurate + mirroring"
    # nothing predicted outside the brain crop box
    from braintumor.training.data import prepare_case

    inside = np.zeros(case.shape, bool)
    inside[prepare_case(case).box] = True
    assert not res.labels[~inside].any()
    assert res.info["model_version"] == "tiny-test"


def test_hybrid_reports_the_cnn_it_ran(tiny_model: Path) -> None:
    """The hybrid names the CNN model version behind its outline, as the CNN does; given
    probabilities from elsewhere, it names none."""
    from braintumor.watershed import segment_hybrid

    case = make_case(shape=SHAPE, seed=3)
    heard: list[tuple[float, str]] = []
    res = segment_hybrid(case, model=tiny_model, device="cpu",
                         progress=lambda f, stage: heard.append((f, stage)))
    assert res.info["method"] == "hybrid"
    # the CNN's own progress (window by window) fills the first half of the bar
    cnn = [f for f, stage in heard if stage.startswith("hybrid: CNN,")]
    assert cnn and cnn == sorted(cnn) and 0 < cnn[0] and cnn[-1] == pytest.approx(0.45)
    assert [f for f, _ in heard] == sorted(f for f, _ in heard)
    assert res.info["model_version"] == "tiny-test"
    assert res.info["folds"] == 1 and res.info["mode"] == "accurate"
    # the tiny model ships no ONNX file: PyTorch ran it, in 32-bit floats on this CPU
    assert res.info["backend"] == "torch" and res.info["precision"] == "float32"
    given = segment_hybrid(case, probabilities=res.probabilities)
    assert "model_version" not in given.info and "backend" not in given.info


def test_mirroring_tta_is_flip_invariant() -> None:
    """Averaging over all 8 axis flips makes the prediction exactly flip-equivariant."""
    from braintumor.inference import sliding_window_probs

    torch.manual_seed(1)
    net = create_network("compact_unet", channels=(4, 8, 8, 8)).eval()
    img = np.random.default_rng(0).normal(size=(4, 32, 32, 32)).astype(np.float32)
    kw = dict(patch=(32, 32, 32), device="cpu", mirror=True, whole_volume_max=10**6)
    a = sliding_window_probs(net, img, **kw)  # type: ignore[arg-type]
    b = sliding_window_probs(net, img[:, ::-1].copy(), **kw)  # type: ignore[arg-type]
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-5)
    plain = sliding_window_probs(net, img, patch=(32, 32, 32), device="cpu",
                                 whole_volume_max=10**6)
    assert np.abs(plain - a).max() > 1e-4  # mirroring really changed something


@pytest.mark.parametrize("mirror", [False, True])
def test_an_ensemble_in_one_pass_averages_its_members(mirror: bool) -> None:
    """A list of networks shares each window's cut: the result is the mean of each
    network's own probabilities (bit for bit without mirroring)."""
    from braintumor.inference import sliding_window_probs

    nets = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        nets.append(create_network("compact_unet", channels=(4, 8, 8, 8)).eval())
    img = np.random.default_rng(4).normal(size=(4, 45, 38, 33)).astype(np.float32)
    kw = dict(patch=(32, 32, 32), overlap=0.5, device="cpu", mirror=mirror)
    alone = [sliding_window_probs(n, img, **kw) for n in nets]  # type: ignore[arg-type]
    seen: list[float] = []
    both = sliding_window_probs(nets, img, progress=seen.append, **kw)  # type: ignore[arg-type]
    assert both.shape == (3, 45, 38, 33)
    # told after each batch of windows, up to all of them (8 flips when mirroring)
    assert len(seen) >= (16 if mirror else 2) and seen == sorted(seen) and seen[-1] == 1.0
    assert np.abs(alone[0] - alone[1]).max() > 0.01  # two different members
    if mirror:
        np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, atol=1e-6)
    else:
        np.testing.assert_array_equal(both, (alone[0] + alone[1]) / 2)


@pytest.mark.parametrize("naming,labels,et", [("brats2021", "brats2021", 4),
                                              ("brats2023", "brats2023", 3)])
def test_predict_cli_keeps_geometry(tmp_path: Path, tiny_model: Path, naming: str,
                                    labels: str, et: int) -> None:
    case = make_case(shape=SHAPE, seed=5)
    folder = write_case(case, tmp_path / "in", naming=naming)
    out = tmp_path / "out"
    rc = main(["predict", str(folder), "-o", str(out), "--model", str(tiny_model),
               "--labels", labels, "--device", "cpu"])
    assert rc == 0
    written = out / f"{case.case_id}.nii.gz"
    ref = nib.load(str(next(folder.glob("*t1*.nii.gz"))))
    img = nib.load(str(written))
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    assert img.header.get_data_dtype() == np.uint8
    values = set(np.unique(np.asarray(img.dataobj)).tolist())
    assert values <= {0, 1, 2, et}


def test_predict_oblique_and_msd_geometry(tmp_path: Path, tiny_model: Path) -> None:
    case = make_case(shape=SHAPE, seed=6)
    # an oblique affine: rotated 20 degrees about z, anisotropic voxels, shifted origin
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.9, 1.1, 1.5])
    aff[:3, 3] = [-40, 12.5, 7]
    msd = tmp_path / "imagesTr"
    msd.mkdir()
    four = np.stack([case.modality(m) for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
    nib.save(nib.Nifti1Image(four.astype(np.float32), aff), str(msd / "BRATS_001.nii.gz"))
    out = tmp_path / "out"
    assert main(["predict", str(msd / "BRATS_001.nii.gz"), "-o", str(out), "--model",
                 str(tiny_model), "--device", "cpu"]) == 0
    img = nib.load(str(out / "BRATS_001.nii.gz"))
    assert img.shape == SHAPE
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(aff)


def test_predict_skips_a_failing_case(tmp_path: Path, tiny_model: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    good = write_case(make_case(shape=SHAPE, seed=7, case_id="good"), tmp_path / "data")
    bad = write_case(make_case(shape=SHAPE, seed=8, case_id="bad"), tmp_path / "data")
    next(bad.glob("*_t2.nii.gz")).write_bytes(b"not a nifti at all")
    out = tmp_path / "out"
    rc = main(["predict", str(good), str(bad), "-o", str(out), "--model", str(tiny_model),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert (out / "good.nii.gz").exists() and not (out / "bad.nii.gz").exists()
    assert "bad_t2.nii.gz" in err and "Traceback" not in err
    # volumes.csv: one row per written case, the volumes of its label map in mL
    import csv

    from braintumor.labels import region_masks

    rows = list(csv.DictReader((out / "volumes.csv").open()))
    assert [r["case"] for r in rows] == ["good"]
    lab = np.asarray(nib.load(str(out / "good.nii.gz")).dataobj)
    vox_ml = float(np.prod(nib.load(str(out / "good.nii.gz")).header.get_zooms()[:3])) / 1000
    internal = np.where(lab == 4, 3, lab).astype(np.uint8)
    for region, mask in region_masks(internal).items():
        assert float(rows[0][f"{region}_mL"]) == pytest.approx(mask.sum() * vox_ml, abs=0.006)
    assert rows[0]["method"] == "cnn"
    assert rows[0]["model"] == "tiny-test" and rows[0]["mode"] == "accurate"
    assert rows[0]["voxel_mm"] == "1x1x1" and rows[0]["warning"] == ""
    assert not (out / "good_report.html").exists()  # only when asked for
    # a later run into the same folder replaces its own cases' rows and keeps the others
    other = write_case(make_case(shape=SHAPE, seed=9, case_id="other"), tmp_path / "data2")
    assert main(["predict", str(other), str(good), "-o", str(out), "--model",
                 str(tiny_model), "--device", "cpu", "--method", "watershed"]) == 0
    rows = list(csv.DictReader((out / "volumes.csv").open()))
    assert sorted((r["case"], r["method"]) for r in rows) == [("good", "watershed"),
                                                              ("other", "watershed")]


def test_predict_report_pages(tmp_path: Path, tiny_model: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """--report: a page per case with its outline, volumes, model and the notice."""
    import csv
    import json as js

    from braintumor.report import NOTICE, ml_text

    case = make_case(shape=SHAPE, seed=2, case_id="rep")
    folder = write_case(case, tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--model", str(tiny_model),
                 "--device", "cpu", "--report"]) == 0
    # the lines of what was written name the case's page, after its label map
    listed = [line for line in capsys.readouterr().out.splitlines() if line]
    assert listed.index(str(out / "rep_report.html")) == listed.index(str(out / "rep.nii.gz")) + 1
    assert str(out / "report_index.html") in listed
    page = (out / "rep_report.html").read_text()
    assert NOTICE in page and "model: tiny-test" in page and "mode: accurate" in page
    assert "data:image/png;base64," in page
    assert (out / "rep_overlay.png").read_bytes()[:4] == b"\x89PNG"
    doc = js.loads((out / "rep_report.json").read_text())
    row = next(csv.DictReader((out / "volumes.csv").open()))
    for r in ("WT", "TC", "ET"):
        assert ml_text(doc["volumes_ml"][r]) == row[f"{r}_mL"]
    index = (out / "report_index.html").read_text()
    assert "href='rep_report.html'" in index and "src='rep_overlay.png'" in index
    assert f"<td>{row['WT_mL']}</td>" in index and NOTICE in index
    from braintumor.diameters import describe

    assert f"WT: {describe(doc['diameters']['WT'])}" in index.replace("&#x27;", "'")


def test_predict_missing_input_is_one_sentence(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["predict", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no such file or folder" in err and "Traceback" not in err


def test_cuda_request_without_gpu_is_clear(tmp_path: Path, tiny_model: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    folder = write_case(make_case(shape=SHAPE, seed=9), tmp_path / "in")
    rc = main(["predict", str(folder), "-o", str(tmp_path / "o"), "--model", str(tiny_model),
               "--device", "cuda"])
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err


def _with_onnx(tmp_path: Path, tiny_model: Path) -> Path:
    """A copy of the tiny model folder that ships an ONNX file too (skips the test where
    the exporter or ONNX Runtime is missing)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "m"
    assert main(["export-onnx", str(tiny_model / "fold0.pt"), "-o",
                 str(folder / "fold0.onnx")]) == 0
    (folder / "fold0.pt").write_bytes((tiny_model / "fold0.pt").read_bytes())
    meta = json.loads((tiny_model / "model.json").read_text())
    meta["onnx"] = ["fold0.onnx"]
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_onnx_export_agrees_with_torch(tmp_path: Path, tiny_model: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = _with_onnx(tmp_path, tiny_model)
    # the command checked its export on a seeded input, quietly (no exporter warning)
    out = capsys.readouterr()
    assert "checked: ONNX Runtime's probabilities within" in out.out
    assert "instance_norm" not in out.err and "Warning" not in out.err, out.err
    case = make_case(shape=SHAPE, seed=10)
    a = segment_cnn(case, model=folder, device="cpu", backend="torch")
    b = segment_cnn(case, model=folder, device="cpu", backend="onnx")
    assert a.info["backend"] == "torch" and b.info["backend"] == "onnx"
    assert a.probabilities is not None and b.probabilities is not None
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)


def test_export_onnx_never_writes_over_its_checkpoint(tmp_path: Path, tiny_model: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    """``-o`` the checkpoint itself (by its own path, another spelling of it or a link):
    the export replaced the checkpoint and then failed to read it back; refused in one
    sentence before any work, the checkpoint as it was."""
    victim = tmp_path / "ex" / "victim.pt"
    victim.parent.mkdir()
    victim.write_bytes((tiny_model / "fold0.pt").read_bytes())
    before = victim.read_bytes()
    (tmp_path / "link.pt").symlink_to(victim)
    for out in (victim, tmp_path / "ex" / ".." / "ex" / "victim.pt", tmp_path / "link.pt"):
        rc = main(["export-onnx", str(victim), "-o", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("error:") == 1 and "is the checkpoint" in err, err
        assert "not a readable" not in err
        assert victim.read_bytes() == before
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.pt"]


def test_export_onnx_puts_only_a_checked_file_in_place(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The export was written in place, so one that failed its check was left at -o
    (and an earlier good one gone); now it is written beside it and renamed into place
    only when it agrees with PyTorch, and replacing a file is said."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import braintumor.inference as inf

    ck, out = str(tiny_model / "fold0.pt"), tmp_path / "x.onnx"
    out.write_bytes(b"an earlier export")
    assert main(["export-onnx", ck, "-o", str(out)]) == 0
    said = capsys.readouterr()
    assert "replaced" in said.err and str(out) in said.out
    good = out.read_bytes()
    assert good != b"an earlier export"
    monkeypatch.setattr(inf, "onnx_agreement", lambda *a, **k: 0.5)
    assert main(["export-onnx", ck, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "differ from PyTorch's by up to 0.5" in err and "not written" in err, err
    assert out.read_bytes() == good  # the earlier file is kept as it was
    fresh = tmp_path / "fresh.onnx"
    assert main(["export-onnx", ck, "-o", str(fresh)]) == 1
    assert not fresh.exists()
    # nor are folders made for it left behind empty
    assert main(["export-onnx", ck, "-o", str(tmp_path / "new" / "sub" / "x.onnx")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]  # no temporary left


def test_export_onnx_writes_through_a_link_and_keeps_permissions(
        tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-o ex/current.onnx``, a link to ``v3/member0.onnx``: the link was replaced by a
    plain file (the version it pointed to left stale), and a replaced file kept private
    (600) became 644. The export goes where the link points, the link stays, and the
    replaced file's permission bits are kept."""
    pytest.importorskip("onnx")
    import os
    import stat

    ck = str(tiny_model / "fold0.pt")
    target = tmp_path / "ex" / "v3" / "member0.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"an earlier export")
    target.chmod(0o600)
    link = tmp_path / "ex" / "current.onnx"
    link.symlink_to(Path("v3") / "member0.onnx")
    assert main(["export-onnx", ck, "-o", str(link)]) == 0
    assert "replaced" in capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(Path("v3") / "member0.onnx")
    assert target.read_bytes() != b"an earlier export" and target.stat().st_size > 1000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    plain = tmp_path / "ex" / "private.onnx"
    plain.write_bytes(b"an earlier export")
    plain.chmod(0o640)
    assert main(["export-onnx", ck, "-o", str(plain)]) == 0
    assert stat.S_IMODE(plain.stat().st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "ex").rglob("*")) == [
        "current.onnx", "member0.onnx", "private.onnx", "v3"]  # no temporary left


def test_export_onnx_of_a_folder_says_it_is_one(tmp_path: Path, tiny_model: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A model folder given as the checkpoint was 'checkpoint file not found'."""
    assert main(["export-onnx", str(tiny_model), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "model.json" in err and "not found" not in err, err
    assert main(["export-onnx", str(tiny_model / "fold0.pt"), "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("alter, says", [
    (lambda ck: ck["config"].update(network_args={"channels": [4, 8, 8, 16]}),
     "its weights do not fit the network its config describes (compact_unet with "
     "{'channels': [4, 8, 8, 16]})"),
    (lambda ck: ck["model"].pop(next(reversed(ck["model"]))),
     "its weights do not fit the network its config describes (compact_unet"),
    (lambda ck: ck["config"].update(newer_key=1),
     "made by another version of braintumor (test; this is"),
    (lambda ck: ck["config"].update(network="nosuch"), "Unknown network 'nosuch'"),
])
def test_export_onnx_of_a_checkpoint_whose_config_does_not_fit_is_one_sentence(
        tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
        alter: Any, says: str) -> None:
    """Weights that do not fit the saved config were a load_state_dict traceback, and a
    config with a setting this version does not know said only 'Unknown config keys'."""
    ck = torch.load(tiny_model / "fold0.pt", map_location="cpu", weights_only=False)
    alter(ck)
    path = tmp_path / "altered.pt"
    torch.save(ck, path)
    assert main(["export-onnx", str(path), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {says}" in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.onnx").exists()


def test_openvino_agrees_with_onnx_runtime(tmp_path: Path, tiny_model: Path) -> None:
    ov = pytest.importorskip("openvino")
    from braintumor.inference import OnnxNet, OpenVinoNet

    folder = _with_onnx(tmp_path, tiny_model)
    case = make_case(shape=SHAPE, seed=12)
    a = segment_cnn(case, model=folder, device="cpu", backend="onnx")
    b = segment_cnn(case, model=folder, device="cpu", backend="openvino")
    auto = segment_cnn(case, model=folder, device="cpu")
    assert a.info["backend"] == "onnx" and a.info["precision"] == "float32"
    assert b.info["backend"] == auto.info["backend"] == "openvino"
    # bfloat16 exactly where the CPU computes it natively
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert b.info["precision"] == ("bfloat16" if native else "float32")
    assert a.probabilities is not None and b.probabilities is not None
    tol = 0.05 if native else 1e-3
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=tol)
    # labels differ only where a probability lies within that distance of the threshold
    decided = (np.abs(a.probabilities - 0.5) > tol).all(axis=0)
    np.testing.assert_array_equal(a.labels[decided], b.labels[decided])
    # in 32-bit floats OpenVINO orders its sums differently from ONNX Runtime: close, not
    # bit for bit
    x = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 32)).astype(np.float32)
    f32 = OpenVinoNet(folder / "fold0.onnx", precision="f32")
    np.testing.assert_allclose(f32.run(x), OnnxNet(folder / "fold0.onnx").run(x), atol=1e-3)
    assert f32.precision == "f32"
    with pytest.raises(ValueError, match="precision"):
        OpenVinoNet(folder / "fold0.onnx", precision="int4")


def test_openvino_sends_no_usage_statistics(tmp_path: Path) -> None:
    """OpenVINO's converter imports ``openvino_telemetry`` with OpenVINO and sends an event
    to Google Analytics when it is installed: a prediction through OpenVINO never imports
    it. A stand-in module that leaves a mark when imported shows whether it was."""
    pytest.importorskip("openvino")
    import os
    import subprocess
    import sys

    stand_in = tmp_path / "site" / "openvino_telemetry"
    stand_in.mkdir(parents=True)
    mark = tmp_path / "imported"
    (stand_in / "__init__.py").write_text(f"open({str(mark)!r}, 'w').write('yes')\n")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(src)])}
    probe = subprocess.run([sys.executable, "-c", "import openvino"], env=env)
    assert probe.returncode == 0 and mark.exists()  # the stand-in is what OpenVINO finds
    mark.unlink()
    run = subprocess.run([sys.executable, "-c", (
        "from braintumor.inference import MODELS_DIR, OpenVinoNet\n"
        "OpenVinoNet(next(MODELS_DIR.glob('brats3d/*.onnx'))).session\n")], env=env)
    assert run.returncode == 0 and not mark.exists()
    # the paths a prediction takes: a 3D model loaded as predict loads it (its runtime
    # chosen before any session), and a 2D picture through the shipped 2D model's export
    run = subprocess.run([sys.executable, "-c", (
        "from braintumor.inference import backend_name, check_backend, load_model\n"
        "check_backend(None, 'openvino', 'cpu')\n"
        "assert backend_name(load_model(None, 'cpu', 'auto').nets[0]) == 'openvino'\n")],
        env=env)
    assert run.returncode == 0 and not mark.exists()
    from PIL import Image

    from braintumor import slices2d

    if not slices2d.model_available():
        return
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
                    ).save(tmp_path / "pic.png")
    run = subprocess.run([sys.executable, "-m", "braintumor", "predict",
                          str(tmp_path / "pic.png"), "-o", str(tmp_path / "out")], env=env)
    assert run.returncode == 0 and (tmp_path / "out" / "pic_mask.png").exists()
    assert not mark.exists()


def test_openvino_net_serves_threads(tmp_path: Path, tiny_model: Path) -> None:
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    from braintumor.inference import OpenVinoNet

    net = OpenVinoNet(_with_onnx(tmp_path, tiny_model) / "fold0.onnx")
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(1, 4, 32, 32, 32)).astype(np.float32) for _ in range(4)]
    alone = [net.run(x) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(net.run, xs * 3))
    for i, y in enumerate(together):
        np.testing.assert_array_equal(y, alone[i % 4])


def test_onnx_runtime_steps_in_where_openvino_cannot_compile(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ov = pytest.importorskip("openvino")
    from braintumor.errors import InputError

    folder = _with_onnx(tmp_path, tiny_model)
    case = make_case(shape=SHAPE, seed=14)
    ref = segment_cnn(case, model=folder, device="cpu", backend="onnx")

    tries = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        raise RuntimeError("no CPU plugin here")

    monkeypatch.setattr(ov.Core, "compile_model", refuse)
    res = segment_cnn(case, model=folder, device="cpu", backend="auto")
    assert res.info["backend"] == "onnx" and res.info["precision"] == "float32"
    assert "no CPU plugin here" in res.info["backend_note"]
    assert ref.probabilities is not None and res.probabilities is not None
    np.testing.assert_array_equal(res.probabilities, ref.probabilities)
    # named, OpenVINO is not swapped for ONNX Runtime: the case fails saying why; a
    # cohort's later cases fail at once with the same sentence, not compiling it again
    said = []
    for _ in range(3):
        tries.clear()
        with pytest.raises(InputError, match="OpenVINO could not compile .*no CPU plugin "
                                             "here") as exc:
            segment_cnn(case, model=folder, device="cpu", backend="openvino")
        said.append((str(exc.value), len(tries)))
    assert said[0][1] == 1 and said[1:] == [(said[0][0], 0)] * 2, said


def test_web_worker_preload_compiles_openvino_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The web worker opened the fast mode's session by reading ``session``, around
    ``OpenVinoNet.compile``: a model OpenVINO could not compile was forgotten (the error
    swallowed) and the first job compiled it again. Now the preload compiles it, so ONNX
    Runtime's stand-in is already in place for that job."""
    pytest.importorskip("onnxruntime")
    from types import SimpleNamespace

    import braintumor.inference as inf
    from braintumor.web.worker import _preload_model

    tries: list[int] = []

    class Refusing(inf.OpenVinoNet):
        @property
        def session(self) -> Any:
            tries.append(1)
            raise RuntimeError("no CPU plugin here")

    (tmp_path / "m.onnx").write_bytes(b"")
    net = Refusing(tmp_path / "m.onnx")
    monkeypatch.setattr(inf, "shipped_model_available", lambda: True)
    monkeypatch.setattr(inf, "get_model", lambda *a, **k: SimpleNamespace(
        nets=[net], fast_members=(0,)))
    _preload_model()
    assert tries == [1] and net.fallback is not None, tries
    assert "no CPU plugin here" in net.fallback_reason
    # the first job runs on ONNX Runtime at once, not compiling with OpenVINO again
    monkeypatch.setattr(inf.OnnxNet, "run", lambda self, x: x)
    net.run(np.zeros((1, 4, 2, 2, 2), np.float32))
    assert tries == [1]


def test_benchmarks_say_openvino_is_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """bench_backends.py ended in an InputError traceback where OpenVINO could not compile
    the model (only loading it was guarded, not the warm-up that compiles it), and
    bench_precision.py likewise without OpenVINO: the first leaves OpenVINO out of its
    table saying why, the second says in one line that it needs OpenVINO."""
    import runpy
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # PyTorch alone is timed
    if importlib.util.find_spec("openvino"):
        import openvino as ov

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("this CPU is not served")

        monkeypatch.setattr(ov.Core, "compile_model", refuse)
        monkeypatch.setattr(sys, "argv", ["bench_backends.py", "--repeat", "1", "--batch", "1"])
        assert runpy.run_path(str(bench / "bench_backends.py"))["main"]() == 0
        out = capsys.readouterr().out
        assert "openvino: unavailable (--backend openvino: OpenVINO could not compile" in out
        assert "this CPU is not served" in out and "\ntorch " in out, out
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(sys, "argv", ["bench_precision.py", "--data", str(tmp_path),
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(bench / "bench_precision.py"))["main"]()
    said = str(exc.value)
    assert "needs OpenVINO" in said and "not installed" in said and "\n" not in said
    assert not (tmp_path / "out").exists()


def test_auto_backend_falls_back_without_openvino(tmp_path: Path, tiny_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    folder = _with_onnx(tmp_path, tiny_model)
    from braintumor.inference import backend_name

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    for backend in ("auto", "onnx"):
        assert backend_name(load_model(folder, "cpu", backend).nets[0]) == "onnx"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert backend_name(load_model(folder, "cpu", "auto").nets[0]) == "torch"


@pytest.mark.parametrize("backend, missing, says", [
    ("openvino", ("openvino",), "--backend openvino was asked for, but OpenVINO is not "
                                "installed"),
    ("onnx", ("onnxruntime",), "--backend onnx was asked for, but ONNX Runtime is not "
                               "installed"),
    ("openvino", ("openvino", "onnxruntime"), "OpenVINO is not installed"),
])
def test_a_backend_named_that_cannot_run_is_refused(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], backend: str, missing: tuple[str, ...],
        says: str) -> None:
    """A runtime named explicitly (a benchmark's) was swapped for another without a word:
    --backend openvino without OpenVINO ran ONNX Runtime or PyTorch, rc 0. ``auto`` alone
    chooses; a named one that is not installed is refused before any case."""
    import sys

    from braintumor.errors import InputError

    folder = _with_onnx(tmp_path, tiny_model)
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InputError, match=says):
        load_model(folder, "cpu", backend)
    data = tmp_path / "data"
    for i in range(2):
        write_case(make_case(shape=SHAPE, seed=i, case_id=f"c{i}"), data)
    capsys.readouterr()
    rc = main(["predict", str(data), "-o", str(tmp_path / "out"), "--model", str(folder),
               "--fast", "--backend", backend])
    err = capsys.readouterr().err
    assert rc == 2 and err.count(says) == 1, err
    assert not list(tmp_path.glob("out/*.nii.gz"))


def test_an_onnx_backend_needs_the_models_onnx_files(tmp_path: Path, tiny_model: Path,
                                                   capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    """--backend onnx with a checkpoint (which has no ONNX file) ran PyTorch without a
    word; a model folder without its ONNX files likewise, and --device cuda too."""
    pytest.importorskip("onnxruntime")

    from braintumor.errors import InputError
    from braintumor.inference import check_backend

    ck = tiny_model / "fold0.pt"
    for backend in ("onnx", "openvino")[:1 + bool(importlib.util.find_spec("openvino"))]:
        with pytest.raises(InputError, match=f"--backend {backend} runs a model's ONNX "
                                             "files, and .*fold0.pt is a checkpoint"):
            check_backend(ck, backend, "cpu")
    with pytest.raises(InputError, match="has no ONNX file for fold0.pt"):
        load_model(tiny_model, "cpu", "onnx")
    with pytest.raises(InputError, match="--device cuda"):
        check_backend(_with_onnx(tmp_path, tiny_model), "onnx", "cuda")
    for backend in ("auto", "torch"):  # these may run PyTorch
        check_backend(ck, backend, "cuda")
    case = write_case(make_case(shape=SHAPE, seed=1), tmp_path / "in")
    rc = main(["predict", str(case), "-o", str(tmp_path / "out"), "--model", str(ck),
               "--backend", "onnx"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("is a checkpoint, which has none") == 1, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_model_is_one_sentence(tmp_path: Path) -> None:
    from braintumor.errors import InputError

    with pytest.raises(InputError, match="No model found"):
        load_model(tmp_path / "nothing")


def test_case_roundtrip_through_loader(tmp_path: Path) -> None:
    case = make_case(shape=SHAPE, seed=11)
    folder = write_case(case, tmp_path, naming="brats2023")
    back = load_case(folder)
    assert back.label is not None and back.label_convention == "brats2023"
    np.testing.assert_array_equal(back.label, case.label)


def test_predict_routes_2d_pictures(tmp_path: Path) -> None:
    slices2d = pytest.importorskip("braintumor.slices2d")
    from PIL import Image

    if not (Path(slices2d.__file__).parent / "models" / "lgg2d").is_dir():
        pytest.skip("2D model not installed")
    rng = np.random.default_rng(0)
    img = np.zeros((200, 180), np.uint8)
    img[40:160, 30:150] = rng.integers(60, 120, (120, 120))
    Image.fromarray(img).save(tmp_path / "slice.png")
    stack = tmp_path / "patient"
    stack.mkdir()
    for n in (1, 2, 10):
        Image.fromarray(img).save(stack / f"patient_{n}.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "slice.png"), str(stack), "-o", str(out)]) == 0
    mask = np.asarray(Image.open(out / "slice_mask.png"))
    assert mask.shape == (200, 180) and set(np.unique(mask).tolist()) <= {0, 255}
    assert len(list(out.rglob("patient_*_mask.png"))) == 3


def test_fast_mode_runs_only_the_fast_members(tmp_path: Path) -> None:
    """``fast`` uses the members and overlap named in model.json's "fast" entry: with two
    different members, the fast result equals member 1 alone at overlap 0, and differs
    from the full ensemble."""
    from braintumor.inference import predict_probabilities

    cfg = TrainConfig(network="compact_unet", network_args={"channels": [4, 8, 8, 8]},
                      patch=(32, 32, 32))
    for k in range(2):
        torch.manual_seed(10 + k)
        net = create_network("compact_unet", channels=(4, 8, 8, 8))
        torch.save({"model": net.state_dict(), "config": to_dict(cfg), "version": "t"},
                   tmp_path / f"fold{k}.pt")
    meta = {"version": "two", "checkpoints": ["fold0.pt", "fold1.pt"], "onnx": [],
            "patch": [32, 32, 32], "overlap": 0.5, "postprocess": {},
            "fast": {"members": [1], "overlap": 0.0}}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    single = tmp_path / "single"
    single.mkdir()
    (single / "fold1.pt").write_bytes((tmp_path / "fold1.pt").read_bytes())
    (single / "model.json").write_text(json.dumps(
        meta | {"checkpoints": ["fold1.pt"], "overlap": 0.0, "fast": {}}))
    case = make_case(shape=SHAPE, seed=4)
    fast, _, t_fast = predict_probabilities(case, tmp_path, "cpu", fast=True)
    alone, _, _ = predict_probabilities(case, single, "cpu")
    full, _, t_full = predict_probabilities(case, tmp_path, "cpu")
    assert t_fast["members"] == 1 and t_fast["overlap"] == 0.0
    assert t_full["members"] == 2 and t_full["overlap"] == 0.5
    np.testing.assert_allclose(fast, alone, atol=1e-6)
    assert np.abs(fast - full).max() > 1e-3
    res = segment_cnn(case, model=tmp_path, device="cpu", fast=True)
    assert res.info["mode"] == "fast" and res.info["folds"] == 1


@pytest.mark.parametrize("method", ["cnn", "hybrid", "watershed"])
def test_predict_cli_fast_flag_for_every_method(tmp_path: Path, tiny_model: Path,
                                                method: str) -> None:
    """--fast goes to the CNN (and the hybrid's CNN); the watershed ignores it."""
    case = make_case(shape=SHAPE, seed=6)
    folder = write_case(case, tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["predict", str(folder), "-o", str(out), "--model", str(tiny_model),
               "--method", method, "--fast", "--device", "cpu"])
    assert rc == 0
    assert nib.load(str(out / f"{case.case_id}.nii.gz")).shape == case.shape
    # the hybrid's row carries the two methods' agreement per region; the others' do not
    import csv

    row = next(csv.DictReader((out / "volumes.csv").open()))
    agree = [row[f"agree_{r}"] for r in ("WT", "TC", "ET")]
    if method == "hybrid":
        assert all(0.0 <= float(a) <= 1.0 for a in agree)
        low = [r for r in ("WT", "TC", "ET") if float(row[f"agree_{r}"]) < 0.5]
        assert all(f"{r} (" in row["warning"] for r in low)
    else:
        assert agree == ["", "", ""]
    # the CNN behind the outline, in the mode asked for; the watershed has none
    assert (row["model"], row["mode"]) == (("", "") if method == "watershed" else
                                           ("tiny-test", "fast"))


@pytest.mark.parametrize("shape,roi,overlap", [((1, 2, 70, 50, 41), (32, 32, 32), 0.5),
                                               ((1, 2, 70, 50, 41), (32, 32, 32), 0.25),
                                               ((1, 2, 64, 20, 33), (32, 32, 16), 0.0),
                                               ((1, 2, 80, 80, 80), (80, 80, 80), 0.5)])
def test_own_sliding_window_agrees_with_monai(shape: tuple[int, ...], roi: tuple[int, int, int],
                                              overlap: float) -> None:
    """Same windows, Gaussian weights and padding (an axis shorter than the window
    included) as MONAI's sliding_window_inference."""
    from monai.inferers import sliding_window_inference

    from braintumor.inference import sliding_window

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv3d(3, 3, 3, padding=1)).eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        ours = sliding_window(x.numpy(), roi, lambda a: net(torch.from_numpy(a)).numpy(),
                              overlap, batch=3)
        ref = sliding_window_inference(x, roi, 3, net, overlap=overlap, mode="gaussian")
    assert ours.shape == tuple(ref.shape)
    np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-5)


@pytest.mark.parametrize("overlap", [-0.5, 1.0, 1.5])
def test_a_window_overlap_out_of_range_is_refused(overlap: float) -> None:
    """Below 0 some voxels had no window (their probabilities 0/0, NaN); at 1 the step
    was one voxel, a window per voxel: refused, naming the overlap."""
    from braintumor.inference import sliding_window, window_starts

    with pytest.raises(ValueError, match=f"overlap is 0 or more and under 1, not {overlap}"):
        window_starts(70, 32, overlap)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(np.zeros((1, 1, 70, 40, 40), np.float32), (32, 32, 32),
                       lambda a: a, overlap)
    assert window_starts(70, 32, 0.0) == [0, 32, 38]


@pytest.mark.slow
def test_onnx_fast_path_does_not_import_torch_or_monai(tmp_path: Path) -> None:
    """On a CPU the shipped model's ONNX path runs without torch or MONAI (their
    imports cost about 3 s of a fast prediction)."""
    import subprocess
    import sys

    from braintumor.inference import _nvidia_driver, shipped_model_available

    if _nvidia_driver():
        pytest.skip("with an NVIDIA driver, device auto asks torch for CUDA")
    if not shipped_model_available():
        pytest.skip("shipped model not installed")
    pytest.importorskip("onnxruntime")
    folder = write_case(make_case(shape=(96, 96, 80), seed=7), tmp_path / "in")
    code = ("import sys; from braintumor.cli import main; "
            f"rc = main(['predict', {str(folder)!r}, '-o', {str(tmp_path / 'out')!r}, "
            "'--fast', '--device', 'auto']); "
            "print(rc, 'torch' in sys.modules, any(m.startswith('monai') for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "0 False False", r.stdout + r.stderr


def test_model_grid_zoom_and_resampling() -> None:
    """Cases about 1 mm are left alone; others get a per-axis zoom to 1 mm; linear
    resampling keeps the field of view (a linear ramp survives up and back exactly);
    labels come back by the voxel at each target voxel's centre."""
    from braintumor.preprocess import model_grid_zoom, resample_labels, resample_to

    assert model_grid_zoom((1.0, 1.0, 1.0)) is None
    assert model_grid_zoom((0.9, 1.1, 1.0)) is None
    assert model_grid_zoom((1.0, 1.0, 3.0)) == (1.0, 1.0, 3.0)
    assert model_grid_zoom((0.5, 0.5, 1.0)) == (0.5, 0.5, 1.0)
    ramp = np.arange(12, dtype=np.float32)[None, None, None, :]
    x = np.broadcast_to(ramp, (2, 4, 5, 12)).copy()
    up = resample_to(x, (4, 5, 36))
    assert up.shape == (2, 4, 5, 36) and up.dtype == np.float32
    assert np.all(np.diff(up[0, 0, 0]) >= 0) and up.min() == 0 and up.max() == 11
    assert np.abs(resample_to(up, (4, 5, 12)) - x).max() < 1e-5
    fine = np.broadcast_to(np.arange(36, dtype=np.uint8), (4, 5, 36))
    assert resample_labels(fine, (4, 5, 12))[0, 0].tolist() == list(range(1, 36, 3))
    assert resample_labels(fine[:, :, ::3], (4, 5, 36))[0, 0].tolist() == [
        3 * (k // 3) for k in range(36)]


def test_postprocess_minimum_sizes_keep_their_volume() -> None:
    pp = PostProcess(wt_min_voxels=4000, et_min_voxels=100)
    assert pp.for_voxel(1.0) is pp
    p8 = pp.for_voxel(8.0)  # 2 x 2 x 2 mm voxels
    assert (p8.wt_min_voxels, p8.et_min_voxels) == (500, 13)
    probs = np.zeros((3, 40, 40, 40), np.float32)
    probs[0, 5:14, 5:14, 5:14] = 0.9  # 729 voxels: 0.7 mL at 1 mm^3, 5.8 mL at 8 mm^3
    assert not pp.apply(probs).any()
    assert int((p8.apply(probs) > 0).sum()) == 729


def test_coarse_case_is_segmented_on_the_model_grid(tiny_model: Path) -> None:
    """A 2 mm-slice case: segmented on the 1 mm grid, labels, probabilities and
    uncertainty come back on the case's own grid; 1 mm cases are left as they are."""
    from braintumor.resolution_study import coarsen
    from braintumor.segment import segment

    case = coarsen(make_case(shape=SHAPE, seed=4), (1, 1, 2))
    assert case.shape == (48, 56, 20) and case.spacing == (1.0, 1.0, 2.0)
    res = segment(case, "cnn", model=tiny_model, device="cpu", uncertainty=True)
    assert res.labels.shape == case.shape and res.probabilities is not None
    assert res.probabilities.shape == (3, *case.shape) and res.uncertainty is not None
    assert res.uncertainty.shape == case.shape
    assert res.info["resampled_to_mm"] == 1.0 and res.info["grid"] == [48, 56, 40]
    own = segment(case, "cnn", model=tiny_model, device="cpu", resample=False)
    assert "resampled_to_mm" not in own.info and own.labels.shape == case.shape
    assert "resampled_to_mm" not in segment(make_case(shape=SHAPE, seed=4), "cnn",
                                            model=tiny_model, device="cpu").info


def test_scans_that_are_not_skull_stripped_are_flagged(tiny_model: Path) -> None:
    """Over 2.3 L of non-zero voxels is more than a brain (BraTS: 1.1-1.7 L): a whole
    head, or a noisy background. segment() still segments, and says so in its info."""
    from braintumor.cases import case_from_arrays
    from braintumor.preprocess import MAX_BRAIN_ML, skull_strip_warning
    from braintumor.segment import segment

    assert MAX_BRAIN_ML == 2300.0
    brain = np.zeros((1, 100, 100, 250), np.float32)
    brain[..., :170] = 1.0  # 1.7 L at 1 mm
    assert skull_strip_warning(brain, (1.0, 1.0, 1.0)) is None
    brain[..., 170:] = 0.5  # 2.5 L: the rest of the head
    msg = skull_strip_warning(brain, (1.0, 1.0, 1.0))
    assert msg is not None and "(2.5 L of non-zero voxels" in msg and "strip the skull" in msg
    case = make_case(shape=SHAPE, seed=4)
    assert skull_strip_warning(case.image, case.spacing) is None
    assert "warning" not in segment(case, "cnn", model=tiny_model, device="cpu").info
    noisy = case.image + np.random.default_rng(0).uniform(1, 5, case.image.shape)
    head = case_from_arrays("noisy", noisy.astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    res = segment(head, "cnn", model=tiny_model, device="cpu", resample=False)
    assert "does not look skull-stripped" in res.info["warning"]
    assert res.labels.shape == head.shape


@pytest.mark.slow
@pytest.mark.parametrize("method,factors", [("cnn", (1, 1, 3)), ("cnn", (2, 2, 2)),
                                            ("hybrid", (1, 1, 3))])
def test_shipped_methods_on_coarse_scans_gain_from_the_model_grid(
        method: str, factors: tuple[int, int, int]) -> None:
    """A synthetic case made coarse (3 mm slices; 2 mm voxels): segmented on the 1 mm
    grid the shipped methods were built on, it is clearly closer to the truth than on
    the coarse grid as it is (mean Dice of WT, TC and ET)."""
    from braintumor.inference import shipped_model_available
    from braintumor.labels import region_masks
    from braintumor.metrics import dice
    from braintumor.resolution_study import coarsen
    from braintumor.segment import segment

    if not shipped_model_available():
        pytest.skip("the shipped model is not installed")
    case = coarsen(make_case(seed=3), factors)
    assert case.label is not None
    ref = region_masks(case.label)
    score = {}
    for rs in (False, True):
        pred = region_masks(segment(case, method, device="cpu", fast=True, resample=rs).labels)
        score[rs] = float(np.mean([dice(pred[r], ref[r]) for r in ("WT", "TC", "ET")]))
    assert score[True] >= 0.7 and score[True] > score[False] + 0.03, score


def test_fine_case_brings_probabilities_back_only_when_read(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.5 mm case is segmented on the 1 mm grid; its labels come back at once, its
    probabilities (3 channels, 8 times the voxels) only when something reads them, and
    then equal to the clipped linear resampling of the 1 mm ones."""
    from braintumor import preprocess
    from braintumor.cases import case_from_arrays
    from braintumor.segment import segment

    base = make_case(shape=(24, 28, 20), seed=4)
    fine = case_from_arrays("fine", preprocess.resample_to(base.image, (48, 56, 40)),
                            np.diag([0.5, 0.5, 0.5, 1.0]))
    calls: list[tuple[int, ...]] = []
    real = preprocess.resample_to

    def counting(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        calls.append(array.shape)
        return real(array, shape)

    monkeypatch.setattr(preprocess, "resample_to", counting)
    res = segment(fine, "cnn", model=tiny_model, device="cpu")
    assert res.labels.shape == fine.shape and res.info["grid"] == [24, 28, 20]
    assert res.has_probabilities
    assert (3, 24, 28, 20) not in calls  # not brought back unasked
    probs = res.probabilities
    assert calls.count((3, 24, 28, 20)) == 1
    assert probs is not None and probs.shape == (3, *fine.shape) and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.max() <= 1
    assert res.probabilities is probs  # computed once


def test_thick_slices_are_warned_about() -> None:
    """A case of 5 mm slices is segmented with a warning that its volumes may be off;
    3 mm slices (the thickest measured) are not warned about."""
    from braintumor.resolution_study import coarsen
    from braintumor.segment import segment

    base = make_case(shape=SHAPE, seed=4)
    thick = segment(coarsen(base, (1, 1, 5)), "watershed", fast=True)
    assert "accuracy was measured on voxels up to 3 mm" in thick.info.get("warning", "")
    three = segment(coarsen(base, (1, 1, 3)), "watershed", fast=True)
    assert "measured on voxels" not in three.info.get("warning", "")


def test_model_grid_keeps_the_brain_edge_bright() -> None:
    """Resampling a skull-stripped case does not darken the brain's edge: every brain
    voxel on the 1 mm grid keeps the brain's intensity, the background stays 0, and the
    brain keeps its volume."""
    from braintumor.cases import case_from_arrays
    from braintumor.preprocess import on_model_grid

    xx, yy, zz = np.meshgrid(*[np.arange(s) for s in (30, 32, 20)], indexing="ij")
    brain = ((xx - 15) / 11) ** 2 + ((yy - 16) / 12) ** 2 + ((zz - 10) / 7) ** 2 <= 1
    image = np.zeros((4, 30, 32, 20), np.float32)
    image[:, brain] = 100.0
    case = case_from_arrays("edge", image, np.diag([2.0, 2.0, 2.0, 1.0]), None)
    fine = on_model_grid(case)
    assert fine is not None and fine.shape == (60, 64, 40)
    inside = fine.image[0] > 0
    assert np.allclose(fine.image[:, inside], 100.0)
    assert abs(inside.sum() / 8 - brain.sum()) / brain.sum() < 0.05
    assert np.allclose(fine.affine[:3, :3], np.eye(3))
    # the first fine voxel's centre lies half a fine voxel inside the coarse one's edge
    assert np.allclose(fine.affine[:3, 3], [-0.5, -0.5, -0.5])


def test_predict_cli_on_thick_slices_keeps_their_grid(tmp_path: Path, tiny_model: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """`braintumor predict` on 3 mm slices: the label map is written on the input's own
    grid and affine, and the progress line says the case was segmented at 1 mm."""
    from braintumor.resolution_study import coarsen

    case = coarsen(make_case(shape=SHAPE, seed=6), (1, 1, 3))
    folder = write_case(case, tmp_path / "in")
    rc = main(["predict", str(folder), "-o", str(tmp_path / "out"), "--model",
               str(tiny_model), "--device", "cpu"])
    assert rc == 0
    ref = nib.load(str(next(folder.glob("*t1*.nii.gz"))))
    img = nib.load(str(tmp_path / "out" / f"{case.case_id}.nii.gz"))
    assert img.shape == ref.shape == (48, 56, 13)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    assert "1 mm resampling of its 1x1x3 mm voxels" in capsys.readouterr().err


@pytest.mark.parametrize("order, flips", [((1, 2, 0), ()), ((2, 0, 1), ()), ((0, 2, 1), ()),
                                          ((0, 1, 2), (1,)), ((1, 2, 0), (0, 2))])
def test_storage_order_and_direction_do_not_change_the_outline(
        tiny_model: Path, order: tuple, flips: tuple) -> None:
    """The same scan stored with its voxel axes in another order (as a sagittal or
    coronal acquisition is) or direction (the front-back axis reversed, as dcm2niix
    stores an axial DICOM series) gets the same outline, voxel for voxel: every method
    works in BraTS's orientation and hands the results back on the case's own axes."""
    from braintumor.cases import case_from_arrays
    from braintumor.preprocess import model_orientation
    from braintumor.segment import segment

    case = make_case(shape=SHAPE, seed=6)
    aff = np.diag([-1.0, -1.0, 2.0, 1.0])  # 2 mm slices: the 1 mm grid is used too
    aff[:3, 3] = (10.0, 20.0, -30.0)
    base = case_from_arrays("ax", case.image[:, :, :, ::2], aff)

    def store(a: np.ndarray) -> np.ndarray:
        """An array on the base's axes -> on the stored scan's (channels first kept)."""
        lead = a.ndim - 3
        for f in flips:
            a = np.flip(a, lead + f)
        return np.ascontiguousarray(a.transpose(*range(lead), *(o + lead for o in order)))

    stored_aff = aff.copy()
    for f in flips:  # voxel i along a reversed axis is voxel n - 1 - i of the base
        stored_aff[:3, 3] += aff[:3, f] * (base.shape[f] - 1)
        stored_aff[:3, f] = -aff[:3, f]
    stored_aff[:3, :3] = stored_aff[:3, list(order)]
    stored = case_from_arrays("stored", store(base.image), stored_aff)
    probe = np.zeros(base.shape)
    probe[1, 2, 3] = 1
    hit = np.argwhere(store(probe))[0]
    assert np.allclose(stored_aff @ [*hit, 1], aff @ [1, 2, 3, 1])  # same world positions
    assert model_orientation(base.affine) is None
    assert model_orientation(stored.affine) is not None
    for method, opts in (("watershed", {}),
                         ("cnn", {"model": tiny_model, "device": "cpu", "uncertainty": True}),
                         ("hybrid", {"model": tiny_model, "device": "cpu"})):
        ref = segment(base, method, **opts)
        got = segment(stored, method, **opts)
        assert got.labels.shape == stored.shape
        assert np.array_equal(got.labels, store(ref.labels)), method
        assert got.info["reoriented_from"] != "LPS"
        if method == "cnn":
            assert got.probabilities is not None and ref.probabilities is not None
            assert np.allclose(got.probabilities, store(ref.probabilities))
            assert got.uncertainty is not None and ref.uncertainty is not None
            assert np.allclose(got.uncertainty, store(ref.uncertainty))


def test_library_mistakes_are_one_sentence(tiny_model: Path, tmp_path: Path) -> None:
    """What a notebook may pass in by mistake: each an InputError in one sentence, never
    a silent empty outline or a raw numpy exception."""
    from braintumor.cases import case_from_arrays
    from braintumor.correction import correct
    from braintumor.errors import InputError
    from braintumor.io import save_label_nifti
    from braintumor.segment import segment

    case = make_case(shape=SHAPE, seed=3)
    nan = case.image.copy()
    nan[0, 30, 30, 20] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        segment(case_from_arrays("n", nan), "watershed")
    with pytest.raises(InputError, match=r"must be \(4, X, Y, Z\)"):
        case_from_arrays("c", case.image[:3])
    with pytest.raises(InputError, match=r"must be \(4, X, Y, Z\)"):
        case_from_arrays("c", np.moveaxis(case.image, 0, -1))
    with pytest.raises(InputError, match="invertible"):
        case_from_arrays("c", case.image, np.zeros((4, 4)))
    with pytest.raises(InputError, match="backend 'pytorch'"):
        segment(case, "cnn", model=tiny_model, device="cpu", backend="pytorch")
    bad = np.full((3, *case.shape), 200.0, np.float32)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        segment(case, "hybrid", probabilities=bad)
    labels = np.zeros(case.shape, np.uint8)
    with pytest.raises(InputError, match="internal labels 0-3"):
        correct(case, labels + 4, [(1, 1, 1, 0)])
    with pytest.raises(InputError, match="whole numbers"):
        correct(case, labels, [("a", 1, 1, 1)])
    with pytest.raises(InputError, match="whole numbers 0-255"):
        save_label_nifti(np.array([[[0, 1, 300]]]), tmp_path / "x.nii.gz", affine=np.eye(4))
    with pytest.raises(InputError, match="not whole labels"):
        L.detect_convention(np.array([0.0, np.nan]))
    with pytest.raises(InputError, match="three"):
        L.channels_to_labels(np.zeros((2, 4, 4, 4)))
    # the watershed takes (and ignores) the CNN's options, as the other methods do
    assert segment(case, "watershed", fast=True, device="cpu").labels.shape == case.shape


def test_segment_refuses_an_array_and_a_method_that_is_not_one_name() -> None:
    """segment(image array) raised AttributeError 'no attribute image' and
    method=['cnn'] TypeError 'unhashable type'; a case without its T1 took any method
    (it is segmented by the watershed) without a word."""
    from dataclasses import replace

    from braintumor.errors import InputError
    from braintumor.segment import get_method, segment

    case = make_case(shape=(32, 32, 32), seed=3)
    with pytest.raises(InputError, match=r"^segment takes a Case, not ndarray: build one from "
                       r"an image \(4, X, Y, Z\) with braintumor\.cases\.case_from_arrays"):
        segment(case.image, method="watershed")
    for bad in (["cnn"], None, 3):
        with pytest.raises(InputError, match=rf"^The method must be one name, not "
                           rf"{type(bad).__name__} .*; use one of cnn, watershed"):
            segment(case, method=bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="must be one name"):
            get_method(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="Unknown method 'nosuch'"):
        segment(replace(case, missing=("t1",)), method="nosuch")


def test_given_probabilities_move_with_the_case(tiny_model: Path) -> None:
    """The hybrid on a scan stored in another orientation, given the CNN's probabilities
    on the scan's own grid, equals the hybrid that ran its own CNN."""
    from braintumor.cases import case_from_arrays
    from braintumor.segment import segment

    base = make_case(shape=SHAPE, seed=6)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    stored = case_from_arrays("sag", np.ascontiguousarray(
        base.image.transpose(0, 2, 3, 1)), aff[:, [1, 2, 0, 3]])
    opts = {"model": tiny_model, "device": "cpu"}
    own = segment(stored, "hybrid", **opts)
    probs = segment(stored, "cnn", **opts).probabilities
    given = segment(stored, "hybrid", probabilities=probs, **opts)
    assert np.array_equal(given.labels, own.labels)


def test_a_cnn_outline_dropped_as_too_small_is_said(tiny_model: Path) -> None:
    """The shipped rule drops whole-tumour pieces under 4 mL: when it drops everything,
    the result says so instead of reading as no tumour."""
    from braintumor.inference import PostProcess
    from braintumor.segment import segment

    case = make_case(shape=SHAPE, seed=3)
    res = segment(case, "cnn", model=tiny_model, device="cpu",
                  post=PostProcess(wt_min_voxels=10**7))
    assert not res.labels.any()
    assert "tumour-like signal" in (res.info.get("warning") or "")


def _run_folder(tiny_model: Path, folder: Path, *names: str) -> Path:
    """A run folder as ``braintumor train`` leaves it, holding the tiny network."""
    import shutil

    folder.mkdir()
    for name in names:
        shutil.copyfile(tiny_model / "fold0.pt", folder / name)
    (folder / "config.yaml").write_text("train: {}\n")
    return folder


def test_predict_takes_a_run_folder_of_train(tmp_path: Path, tiny_model: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``--model RUN_FOLDER`` said 'No model found ... the shipped model may be missing':
    a run folder stands for its best.pt, else its last.pt."""
    from braintumor.inference import model_location

    run = _run_folder(tiny_model, tmp_path / "run", "best.pt", "last.pt")
    assert model_location(run) == run / "best.pt"
    only_last = _run_folder(tiny_model, tmp_path / "run2", "last.pt")
    assert model_location(only_last) == only_last / "last.pt"
    folder = write_case(make_case(shape=SHAPE, seed=5), tmp_path / "in")
    rc = main(["predict", str(folder), "-o", str(tmp_path / "out"), "--model", str(run),
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / f"{folder.name}.nii.gz").exists()


@pytest.mark.parametrize("what, says", [
    ("onnx", "ONNX files are not taken as a model (they lack the config the model runs "
             "with); give the checkpoint (.pt) it was exported from, or the run folder"),
    ("empty", "No model found at"),
    ("junk", "not a readable model checkpoint"),
])
def test_a_bad_model_is_said_once_for_a_cohort(tmp_path: Path, what: str, says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A model that cannot be loaded was reported once per case, and an ONNX file from
    export-onnx as 'invalid load key': one sentence, once, exit 2, nothing written."""
    model = {"onnx": tmp_path / "m.onnx", "empty": tmp_path / "runs",
             "junk": tmp_path / "m.pt"}[what]
    if what == "empty":
        model.mkdir()
    else:
        model.write_bytes(b"\x08\x07\x12\x07pytorch not a pickle")
    data = tmp_path / "data"
    for i in range(3):
        write_case(make_case(shape=(32, 32, 24), seed=i, case_id=f"c{i}"), data)
    rc = main(["predict", str(data), "-o", str(tmp_path / "out"), "--model", str(model)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count(says) == 1, err
    assert "shipped model" not in err and "Traceback" not in err
    assert not list(tmp_path.glob("out/*.nii.gz"))


def test_an_implausible_volume_is_warned_of_by_predict(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An outline over 400 mL (an undertrained model's, say) went into volumes.csv with no
    word: the reports' implausible-volume sentence is said on stderr and in its row."""
    import csv

    import braintumor.segment as S

    real = S.segment

    def everything(case: Any, method: str, **kw: Any) -> Any:
        res = real(case, method, **kw)
        res.labels[...] = 2  # the whole grid outlined
        return res

    monkeypatch.setattr(S, "segment", everything)
    case = make_case(shape=SHAPE, seed=5, spacing=(3.0, 3.0, 3.0))
    folder = write_case(case, tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--model", str(tiny_model),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {case.case_id}: The whole tumour outlined is" in err
    assert "the outline is implausible" in err
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert "more than 400 mL" in row["warning"]


def test_a_small_fast_finding_is_warned_of(tiny_model: Path, monkeypatch) -> None:
    # one model alone found blobs of up to 14 mL on tumour-free brains where two found
    # none: a small fast-mode finding says so, a small accurate one and a large one not
    import braintumor.inference as inf

    case = make_case(shape=SHAPE, seed=3)

    def probs_of(ml: float):
        def fake(case, model, device, tta=False, progress=None, backend="auto", fast=False):
            p = np.zeros((3, *case.shape), np.float32)
            n = int(ml * 1000 / float(np.prod(case.spacing)))
            p[0].reshape(-1)[:n] = 0.9
            lm = load_model(tiny_model, "cpu")
            return p, lm, {"members": 1}
        return fake

    monkeypatch.setattr(inf, "predict_probabilities", probs_of(5.0))
    res = segment_cnn(case, model=tiny_model, device="cpu", fast=True,
                      post=PostProcess())
    assert "fast mode (one model) found 5.0 mL" in res.info["warning"]
    assert "warning" not in segment_cnn(case, model=tiny_model, device="cpu",
                                        post=PostProcess()).info
    monkeypatch.setattr(inf, "predict_probabilities", probs_of(30.0))
    assert "warning" not in segment_cnn(case, model=tiny_model, device="cpu", fast=True,
                                        post=PostProcess()).info


def test_a_small_fast_finding_on_thick_slices_is_said_in_the_cases_own_volume(
        tiny_model: Path, monkeypatch) -> None:
    """A case of 2 mm slices is segmented on a 1 mm grid and brought back: the fast
    mode's warning quoted the volume on the 1 mm grid (21.5 mL beside a table's 21.44);
    it quotes the volume of the label map the case gets."""
    import re

    import braintumor.inference as inf
    from braintumor.segment import segment

    case = make_case(shape=(48, 48, 24), seed=3, spacing=(1.0, 1.0, 2.0))

    def fake(case, model, device, tta=False, progress=None, backend="auto", fast=False):
        p = np.zeros((3, *case.shape), np.float32)
        p[0, 10:27, 10:27, 10:29] = 0.9  # a block whose odd depth resamples unevenly
        return p, load_model(tiny_model, "cpu"), {"members": 1}

    monkeypatch.setattr(inf, "predict_probabilities", fake)
    res = segment(case, "cnn", model=tiny_model, device="cpu", fast=True)
    assert res.info.get("resampled_to_mm") == 1.0
    said = re.search(r"found ([0-9.]+) mL of tumour", res.info["warning"])
    ml = float(np.count_nonzero(res.labels)) * case.voxel_volume_ml
    assert said is not None and said.group(1) == f"{ml:.1f}", (said, ml)


def test_skip_existing_tells_cnn_modes_and_models_apart(
        tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--skip-existing after a CNN run: the same model and mode skip, --tta (another mode),
    another model version, or --uncertainty (its file missing) segment again."""
    import shutil

    data = write_case(make_case(shape=SHAPE, seed=7, case_id="c1"), tmp_path / "data")
    out = tmp_path / "out"
    args = ["predict", str(data), "-o", str(out), "--model", str(tiny_model),
            "--device", "cpu"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    assert "c1: skipped" in capsys.readouterr().err
    assert main([*args, "--skip-existing", "--tta"]) == 0
    assert "c1: skipped" not in capsys.readouterr().err
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "version": "tiny-test-2"}))
    other_args = [*args[:-4], "--model", str(other), "--device", "cpu", "--tta"]
    assert main([*other_args, "--skip-existing"]) == 0
    assert "c1: skipped" not in capsys.readouterr().err
    assert main([*other_args, "--skip-existing"]) == 0
    assert "c1: skipped" in capsys.readouterr().err
    assert main([*other_args, "--skip-existing", "--uncertainty"]) == 0
    assert "c1: skipped" not in capsys.readouterr().err
    assert (out / "c1_uncertainty.nii.gz").exists()


def test_windows_worked_ahead_give_the_same_sums_to_the_bit() -> None:
    """With ``ahead`` the networks run one batch ahead in a thread of their own while the
    last batch is blended: the same outputs bit for bit, the same progress, and a
    network's failure still reaches the caller."""
    import threading

    from braintumor.inference import sliding_windows

    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 4, 50, 44, 38)).astype(np.float32)
    threads: dict[bool, set[str]] = {False: set(), True: set()}

    def member(scale: float, mode: bool) -> Any:
        def predict(a: np.ndarray) -> np.ndarray:
            threads[mode].add(threading.current_thread().name)
            return np.tanh(a[:, :3] * scale + a[:, 3:4]).astype(np.float32)
        return predict

    outs, said = {}, {}
    for mode in (False, True):
        said[mode] = []
        outs[mode] = sliding_windows(x, (32, 32, 32), [member(0.7, mode), member(-1.3, mode)],
                                     0.5, batch=3, ahead=mode,
                                     done=lambda n, t, m=mode: said[m].append((n, t)))
    for a, b in zip(outs[False], outs[True], strict=True):
        assert a.shape == (1, 3, 50, 44, 38) and np.array_equal(a, b)
    assert said[True] == said[False] and said[True][-1][0] == said[True][-1][1]
    assert threads[False] == {threading.current_thread().name}
    assert threading.current_thread().name not in threads[True]

    def broken(a: np.ndarray) -> np.ndarray:
        raise RuntimeError("the runtime failed")

    with pytest.raises(RuntimeError, match="the runtime failed"):
        sliding_windows(x, (32, 32, 32), [broken], 0.5, ahead=True)


def test_boxed_postprocess_equals_the_rules_on_the_whole_volume() -> None:
    """PostProcess.apply works in the box around what passes a threshold: the labels
    are those of the rules applied to the whole volume, for random smooth maps with
    several components, small ET, components cut by size and by fraction."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(2)
    for _ in range(12):
        p = ndi.gaussian_filter(rng.random((3, 48, 40, 36)).astype(np.float32), (0, 2, 2, 2))
        p = (p - p.min()) / (p.max() - p.min())
        post = PostProcess(threshold=(0.6, 0.65, 0.7), et_min_voxels=int(rng.integers(0, 300)),
                           wt_min_voxels=int(rng.integers(0, 60)),
                           wt_keep_fraction=float(rng.random() * 0.5))
        boxed = post.apply(p)
        whole = post._labels(p[0] > 0.6, p[1] > 0.65, p[2] > 0.7)
        assert boxed.dtype == np.uint8 and np.array_equal(boxed, whole)
        assert boxed.any()
    assert not PostProcess(et_min_voxels=5).apply(np.zeros((3, 8, 8, 8), np.float32)).any()


def test_warm_model_compiles_the_members_while_a_case_is_read(tmp_path: Path,
                                                              tiny_model: Path) -> None:
    """warm_model compiles an ONNX model's members in a thread of their own; the
    prediction then uses those compiled models and compiles none again. A model that
    cannot be loaded, or a PyTorch one, starts nothing (the prediction says why)."""
    pytest.importorskip("openvino")
    from braintumor.inference import OpenVinoNet, get_model, warm_model

    folder = _with_onnx(tmp_path, tiny_model)
    thread = warm_model(folder, "cpu", "openvino")
    assert thread is not None
    thread.join()
    lm = get_model(folder, "cpu", "openvino")
    nets = [n for n in lm.nets if isinstance(n, OpenVinoNet)]
    assert nets and all(n._session is not None for n in nets)
    compiled = [n._session for n in nets]
    res = segment_cnn(make_case(shape=SHAPE, seed=3), model=folder, device="cpu",
                      backend="openvino")
    assert res.labels.shape == SHAPE and res.info["backend"] == "openvino"
    assert [n._session for n in nets] == compiled
    assert warm_model(tmp_path / "no-such-model", "cpu", "auto") is None
    assert get_model(tiny_model, "cpu", "torch").nets  # loads; nothing to compile
    assert warm_model(tiny_model, "cpu", "torch") is None


def test_windows_blend_a_reused_output_buffer_in_order() -> None:
    """A user's ``predict`` that hands back one buffer it reuses: each batch is blended
    before the next is predicted (the batch worked ahead is only for the package's own
    runtimes, which return fresh arrays)."""
    from braintumor.inference import sliding_window

    x = np.random.default_rng(0).random((1, 1, 64, 64, 64), dtype=np.float32)
    buf = np.empty((2, 1, 32, 32, 32), np.float32)

    def identity(w: np.ndarray) -> np.ndarray:
        out = buf[: len(w)]
        np.copyto(out, w)
        return out

    y = sliding_window(x, (32, 32, 32), identity, 0.25, batch=2)
    assert float(np.abs(y - x).max()) < 1e-5
