"""Helpers shared by the web tests: a tiny synthetic case, a fast threshold segmenter
(registered under the name ``threshold`` so the worker's child process can import it),
and a uvicorn server on a free loopback port in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from braintumor.cases import Case, case_from_arrays
from braintumor.segment import SegmentationResult

#: a non-trivial affine (1.2 x 1.0 x 1.5 mm, shifted, x flipped) so geometry bugs show
AFFINE = np.array([[-1.2, 0, 0, 40.0], [0, 1.0, 0, -30.0], [0, 0, 1.5, -20.0], [0, 0, 0, 1]])
SHAPE = (40, 44, 32)
SUFFIX = {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair"}


def small_case(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> Case:
    """A head-like ellipsoid with a tumour: edema shell, necrotic core, enhancing rim.

    ``image`` ``(4, X, Y, Z)`` with whole-number intensities; ``label`` internal.
    """
    rng = np.random.default_rng(seed)
    xx, yy, zz = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    head = ((xx - c[0]) / (0.45 * shape[0])) ** 2 + ((yy - c[1]) / (0.45 * shape[1])) ** 2 + \
        ((zz - c[2]) / (0.45 * shape[2])) ** 2 <= 1
    t = c + np.array([4, -3, 2])
    r = np.sqrt((xx - t[0]) ** 2 + (yy - t[1]) ** 2 + (zz - t[2]) ** 2)
    label = np.zeros(shape, np.uint8)
    label[(r <= 9) & head] = 2
    label[r <= 6] = 3
    label[r <= 3.5] = 1
    base = {"t1": 400.0, "t1ce": 420.0, "t2": 300.0, "flair": 350.0}
    bright = {  # intensity per internal label, per modality
        "t1": {1: 250, 2: 350, 3: 380}, "t1ce": {1: 250, 2: 430, 3: 900},
        "t2": {1: 700, 2: 650, 3: 500}, "flair": {1: 450, 2: 800, 3: 700},
    }
    image = np.zeros((4,) + shape, np.float32)
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        v = np.where(head, base[m], 0.0)
        for lab, val in bright[m].items():
            v[label == lab] = val
        v = v + np.where(head, rng.normal(0, 10, shape), 0)
        image[i] = np.round(np.clip(v, 0, None))
    return case_from_arrays(f"Web{seed:03d}", image, AFFINE, label)


def write_case_files(case: Case, folder: Path, with_label: bool = True) -> dict[str, Path]:
    """Write the case as BraTS 2021-named files; returns {modality or 'seg': path}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        img = nib.Nifti1Image(case.image[i].astype(np.int16), case.affine)
        img.set_qform(case.affine, 1)
        p = folder / f"{case.case_id}{SUFFIX[m]}.nii.gz"
        nib.save(img, str(p))
        out[m] = p
    if with_label and case.label is not None:
        lab = case.label.copy()
        lab[lab == 3] = 4  # BraTS 2021 values on disk
        img = nib.Nifti1Image(lab.astype(np.uint8), case.affine)
        p = folder / f"{case.case_id}_seg.nii.gz"
        nib.save(img, str(p))
        out["seg"] = p
    return out


def segment_threshold(case: Case, progress: Any = None, uncertainty: bool = False,
                      **_: Any) -> SegmentationResult:
    """A fast stand-in segmenter for tests: thresholds FLAIR / T1ce / T1 (an
    uncertainty map only when asked for, as the real methods)."""
    if progress:
        progress(0.2, "thresholding")
    t1, t1ce, _t2, flair = case.image
    labels = np.zeros(case.shape, np.uint8)
    labels[flair > 600] = 2
    labels[(t1ce > 700)] = 3
    labels[(t1 < 300) & (t1 > 0)] = 1
    if progress:
        progress(1.0, "thresholding")
    unc = (labels > 0).astype(np.float32) * 0.3 if uncertainty else None
    # an agreement table as the hybrid reports one, so the page's display of it is tested
    return SegmentationResult(labels=labels, uncertainty=unc,
                              info={"model_version": "threshold-test-1",
                                    "agreement": {"WT": 0.91, "TC": 0.84, "ET": 0.42}})


def segment_crash(case: Case, progress: Any = None, **_: Any) -> SegmentationResult:
    """A segmenter that kills its process, to prove the server survives it."""
    import os

    os._exit(3)


def segment_slow(case: Case, progress: Any = None, **_: Any) -> SegmentationResult:
    """A segmenter that takes a while (for cancel tests)."""
    for i in range(300):
        if progress:
            progress(i / 300, "waiting")
        time.sleep(0.1)
    return segment_threshold(case)


def segment_silent(case: Case, progress: Any = None, **_: Any) -> SegmentationResult:
    """A segmenter that works a minute without a word (as a CNN between its progress
    reports), so only the end of its process stops it."""
    time.sleep(60)
    return segment_threshold(case)


def register_test_methods(monkeypatch: Any) -> None:
    """Add the stand-in segmenters to the segment door's registry."""
    from braintumor import segment as seg

    monkeypatch.setitem(seg.METHODS, "threshold", "test_web_support:segment_threshold")
    monkeypatch.setitem(seg.METHODS, "crash", "test_web_support:segment_crash")
    monkeypatch.setitem(seg.METHODS, "slow", "test_web_support:segment_slow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > 30:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def wait_done(get: Any, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll ``get(f"/api/jobs/{id}")`` until the job is terminal; return its JSON."""
    t0 = time.monotonic()
    while True:
        job = get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.1)


def _mr_slice(pixels: np.ndarray, spacing: tuple[float, float] | None,
              patient: str = "Doe^Jane", patient_id: str = "PID-778899") -> Any:
    """A DICOM MR image dataset (file meta included) of ``pixels`` ``(rows, cols)``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = uid
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.Modality = "MR"
    if spacing is not None:
        ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    return ds


def write_dicom_zip(case: Case, zip_path: Path, patient: str = "Doe^Jane",
                    patient_id: str = "PID-778899") -> Path:
    """Write the case's four modalities as DICOM MR series (with patient identifiers) in
    a zip. Axial slices, 1 mm pixels, so dcm2niix sees four ordinary series."""
    import io
    import zipfile

    import pydicom
    from pydicom.uid import generate_uid

    descriptions = {"t1": "AX T1 SE", "t1ce": "AX T1 SE POST GAD", "t2": "AX T2 TSE",
                    "flair": "AX T2 FLAIR"}
    study = generate_uid()
    frame = generate_uid()
    with zipfile.ZipFile(zip_path, "w") as zf:
        for si, m in enumerate(("t1", "t1ce", "t2", "flair")):
            series_uid = generate_uid()
            vol = case.image[si].astype(np.uint16)
            for z in range(vol.shape[2]):
                ds = _mr_slice(vol[:, :, z].T, (1.0, 1.0), patient, patient_id)
                ds.PatientBirthDate = "19700101"
                ds.StudyInstanceUID = study
                ds.SeriesInstanceUID = series_uid
                ds.FrameOfReferenceUID = frame
                ds.StudyDate = "20240101"
                ds.SeriesDate = "20240101"
                ds.StudyTime = "120000"
                ds.AcquisitionTime = f"1200{si:02d}"
                ds.Manufacturer = "Test"
                ds.SeriesNumber = si + 2
                ds.SeriesDescription = descriptions[m]
                ds.ProtocolName = descriptions[m]
                ds.InstanceNumber = z + 1
                ds.ImagePositionPatient = [0.0, 0.0, float(z)]
                ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                ds.SliceThickness = 1.0
                buf = io.BytesIO()
                pydicom.dcmwrite(buf, ds, enforce_file_format=True)
                zf.writestr(f"study/{m}/IM{z:04d}.dcm", buf.getvalue())
    return zip_path


def write_dicom_slice(path: Path, pixels: np.ndarray, spacing: tuple[float, float] | None,
                      photometric: str = "MONOCHROME2", frames: int = 1,
                      patient: str = "Doe^Jane", instance: int | None = None) -> Path:
    """One MR slice ``pixels`` ``(rows, cols)`` uint16 as a DICOM file (``frames`` > 1
    repeats it as a multi-frame file), with a patient name to show it is not kept."""
    import pydicom

    ds = _mr_slice(pixels, spacing, patient, "PID-1234")
    ds.PhotometricInterpretation = photometric
    if instance is not None:
        ds.InstanceNumber = instance
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = np.ascontiguousarray(
            np.repeat(pixels.astype(np.uint16)[None], frames, axis=0)).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def restamp_series(series_dir: Path, new_uid: bool = False, **attrs: object) -> None:
    """Rewrite the DICOM files of one series folder with ``attrs`` (a value None deletes
    the attribute); ``new_uid``: make it a series of its own (a copy of another)."""
    import pydicom
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    for f in sorted(series_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        if new_uid:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for key, value in attrs.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.save_as(f, enforce_file_format=True)


def cut_short(f: Path) -> None:
    """One DICOM file whose pixel data ends early (a copy broken off)."""
    import pydicom

    ds = pydicom.dcmread(f)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(f, enforce_file_format=True)


class FullDiskFile:
    """A stand-in for ``open`` in :mod:`braintumor.io`: files open, and every write fails
    as on a full disk (ENOSPC)."""

    def __init__(self, path: Any, mode: str = "r") -> None:
        import builtins

        self.fh = builtins.open(path, mode)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()

    def write(self, block: bytes) -> int:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")


def test_the_model_version_line_keeps_a_mirrored_fast_run_apart() -> None:
    from braintumor.web.worker import model_version

    info = {"model_version": "m-1", "mode": "fast", "folds": 1}
    assert model_version(info, "cnn") == "m-1 (fast mode: 1 model)"
    info["mode"] = "fast + mirroring"
    assert model_version(info, "hybrid") == "m-1 (fast mode + mirroring: 1 model)"
    assert model_version({"model_version": "m-1", "mode": "accurate"}, "cnn") == \
        "m-1 (accurate mode)"
