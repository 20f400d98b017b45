"""What a DICOM study's grid costs when its T1 has thick slices: each shared BraTS case is
written as a DICOM study whose T1 (or T1, T2 and FLAIR) has 5 mm slices (the 1 mm slices
averaged five by five, as a thick acquisition sees them) beside 1 mm series, segmented
by the CNN on the grid :func:`braintumor.dicom.grid_modality` picks (the 1 mm T1ce's) and
on the T1's own grid, side by side in one process, and scored on the case's original
1 mm grid against the expert outline.

    python benchmarks/bench_dicom_grid.py [--data ../shared/data/brats2018]
        [--thick t1 | t1,t2,flair] [--factor 5] [--cases N] [--json FILE]

The shipped model was trained on these cases, so its Dice here is not its accuracy (the
model card has the held-out numbers): the two columns only show what putting the case on
thick slices loses. Needs pydicom and dcm2niix.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTIONS = {"t1": "t1_se_tra", "t1ce": "t1_mprage_tra_post", "t2": "t2_tse_tra",
                "flair": "t2_tirm_tra_dark-fluid"}
TIMING = {"t1": (500.0, 10.0, None), "t1ce": (2000.0, 3.0, 900.0),
          "t2": (5000.0, 90.0, None), "flair": (9000.0, 85.0, 2500.0)}


def thick(vol: np.ndarray, affine: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices ``factor`` times thicker along the third axis: each the mean of ``factor``
    1 mm slices, placed at their centre."""
    n = vol.shape[2] // factor
    out = vol[:, :, :n * factor].reshape(*vol.shape[:2], n, factor).mean(axis=3)
    aff = affine.copy()
    aff[:3, 2] = affine[:3, 2] * factor
    aff[:3, 3] = (affine @ [0.0, 0.0, (factor - 1) / 2.0, 1.0])[:3]
    return out, aff


def write_series(vol: np.ndarray, affine: np.ndarray, folder: Path, number: int, mod: str,
                 study: str, frame: str) -> None:
    """``vol`` (X, Y, Z) as one axial DICOM MR series: pixel (row r, column c) of slice k
    is voxel (c, r, k), placed by ``affine`` (RAS) in the patient's LPS coordinates."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    lps = np.diag([-1.0, -1.0, 1.0])
    col_dir, row_dir = (lps @ affine[:3, i] for i in (0, 1))
    spacing = [float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 0]))]
    scale = 4000.0 / max(float(vol.max()), 1e-6)
    series = generate_uid()
    tr, te, ti = TIMING[mod]
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = \
            study, series, frame
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^Grid", "BENCH-1", "MR"
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.StudyTime, ds.AcquisitionTime = "120000", f"1200{number:02d}"
        ds.SeriesNumber, ds.InstanceNumber = number, k + 1
        ds.SeriesDescription = ds.ProtocolName = DESCRIPTIONS[mod]
        ds.RepetitionTime, ds.EchoTime = tr, te
        if ti is not None:
            ds.InversionTime = ti
        ds.ImagePositionPatient = [float(v) for v in lps @ (affine @ [0, 0, k, 1.0])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*(col_dir / np.linalg.norm(col_dir)),
                                                         *(row_dir / np.linalg.norm(row_dir)))]
        ds.PixelSpacing = spacing
        ds.SliceThickness = float(np.linalg.norm(affine[:3, 2]))
        pix = np.clip(np.rint(vol[:, :, k].T * scale), 0, 65535).astype(np.uint16)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pix.shape
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = np.ascontiguousarray(pix).tobytes()
        pydicom.dcmwrite(folder / f"IM{k:04d}.dcm", ds, enforce_file_format=True)


def run_case(case_dir: Path, thick_mods: tuple[str, ...], factor: int, work: Path
             ) -> dict[str, Any]:
    import nibabel as nib
    from nibabel.processing import resample_from_to
    from pydicom.uid import generate_uid

    from braintumor import dicom
    from braintumor.cases import MODALITIES, discover, load_case
    from braintumor.labels import REGIONS
    from braintumor.metrics import score_case
    from braintumor.segment import segment

    src = discover(case_dir)[0]
    truth = load_case(src)
    assert truth.label is not None
    study_dir = work / src.case_id
    study, frame = generate_uid(), generate_uid()
    for i, m in enumerate(MODALITIES):
        vol, aff = truth.image[i], truth.affine
        if m in thick_mods:
            vol, aff = thick(vol, aff, factor)
        write_series(vol, aff, study_dir / f"S{i + 2}", i + 2, m, study, frame)
    ref_img = nib.Nifti1Image(np.zeros(truth.label.shape, np.uint8), truth.affine)
    row: dict[str, Any] = {"case": src.case_id}
    t1_grid = dicom.grid_modality
    for rule in ("chosen", "t1"):
        if rule == "t1":  # the earlier rule: the T1's grid whatever its slices
            dicom.grid_modality = lambda edges: next(m for m in MODALITIES if m in edges)
        try:
            source = dicom.study_source(study_dir, work / f"out_{rule}")
        finally:
            dicom.grid_modality = t1_grid
        case = load_case(source, with_label=False)
        t0 = time.perf_counter()
        res = segment(case, "cnn")
        seconds = time.perf_counter() - t0
        back = resample_from_to(nib.Nifti1Image(res.labels.astype(np.uint8), case.affine),
                                ref_img, order=0)
        scores = score_case(np.asarray(back.dataobj), truth.label, truth.spacing,
                            lesions=False)
        row[rule] = {"grid": list(case.image.shape[1:]), "seconds": round(seconds, 2),
                     "dice": {r: round(scores[r]["dice"], 4) for r in REGIONS}}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brats2018")
    ap.add_argument("--thick", default="t1", help="modalities with thick slices")
    ap.add_argument("--factor", type=int, default=5, help="slice thickness in mm")
    ap.add_argument("--cases", type=int, default=0, help="only the first N cases")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args()
    from braintumor.io import dcm2niix_executable
    from braintumor.labels import REGIONS

    if dcm2niix_executable() is None:
        print("dcm2niix is not installed.")
        return 1
    dirs = sorted(d for d in a.data.iterdir() if d.is_dir())[: a.cases or None]
    thick_mods = tuple(a.thick.split(","))
    rows = []
    print(f"{a.factor} mm slices for {', '.join(thick_mods)}; Dice WT / TC / ET on the 1 mm "
          "grid: grid_modality's grid | the T1's grid")
    for d in dirs:
        with tempfile.TemporaryDirectory() as td:
            row = run_case(d, thick_mods, a.factor, Path(td))
        rows.append(row)
        c, t = row["chosen"], row["t1"]
        print(f"{row['case']:<24} {c['grid']} " + " / ".join(f"{c['dice'][r]:.3f}" for r in REGIONS)
              + f" | {t['grid']} " + " / ".join(f"{t['dice'][r]:.3f}" for r in REGIONS),
              flush=True)
    mean = {rule: {r: float(np.mean([row[rule]["dice"][r] for row in rows])) for r in REGIONS}
            for rule in ("chosen", "t1")}
    print(f"{'mean of ' + str(len(rows)):<24} " + " / ".join(f"{mean['chosen'][r]:.3f}"
                                                            for r in REGIONS)
          + " | " + " / ".join(f"{mean['t1'][r]:.3f}" for r in REGIONS))
    print("difference (grid_modality - T1 grid): " + " / ".join(
        f"{mean['chosen'][r] - mean['t1'][r]:+.3f}" for r in REGIONS))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"thick": thick_mods, "factor": a.factor, "mean": mean,
                                      "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
