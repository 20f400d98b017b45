"""The outline of a DICOM study as a DICOM Segmentation (SEG) object.

A label map in NIfTI is foreign to a hospital's viewers and archives (PACS); a DICOM SEG
object is their own: it names the series it outlines (by its UIDs), so a viewer such as
OHIF or 3D Slicer lays it over that series and an archive files it with the study. It
is written by ``braintumor predict STUDY -o OUT --dicom-seg`` next to the label map, as
``OUT/<case>_seg.dcm``, and references the series the label map's grid came from (the
T1; the T1ce when there is no T1).

Each frame is one slice of that series as the scanner stored it: every pixel takes the
label of the label map's voxel that holds its centre in scanner coordinates (the label
map lies on that series' grid, so this is the identity up to the converter's axis
flips). Three binary segments: necrotic / non-enhancing core, edema, enhancing tumour,
coded in SNOMED CT (Necrosis, Edema, Neoplasm), with the algorithm named.

The series must be classic single-frame images (one file per slice, each with its
ImagePositionPatient); an enhanced multi-frame file (positions per frame) is refused with a
sentence that says so.

Unlike the rest of the output folder, the object carries the patient's and study's
identifiers, copied from the source series: that is what attaches it to the study. It is
written only when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor.errors import InputError

#: type 2 attributes of the patient and study that a SEG copies from its source (present,
#: if empty, in every conforming image; added empty where an export dropped them)
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
#: (internal label, segment label, SNOMED CT property type keyword), in segment order
SEGMENTS = ((L.NCR, "necrotic / non-enhancing tumour core", "Necrosis"),
            (L.ED, "peritumoural edema", "Edema"),
            (L.ET, "enhancing tumour", "Neoplasm"))


def series_files(study: str | Path, series: str | int, study_uid: str | None = None
                 ) -> list[Path]:
    """The DICOM files of one series (``series``: its SeriesInstanceUID, or as a number its
    SeriesNumber) of ``study_uid``, when given, under the folder ``study``."""
    import pydicom

    from braintumor.dicom import is_dicom_file

    found = []
    for f in sorted(p for p in Path(study).rglob("*") if p.is_file()):
        if not is_dicom_file(f):
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True, specific_tags=[
            "SeriesNumber", "SeriesInstanceUID", "StudyInstanceUID"])
        same = (getattr(ds, "SeriesInstanceUID", None) == series if isinstance(series, str)
                else int(getattr(ds, "SeriesNumber", -1) or -1) == series)
        if same and (study_uid is None or getattr(ds, "StudyInstanceUID", None) == study_uid):
            found.append(f)
    return found


def frames_from_labels(labels: np.ndarray, affine: np.ndarray, datasets: list[Any]
                       ) -> np.ndarray:
    """The label of every pixel of every source slice: ``(slices, rows, columns)`` uint8,
    from the internal ``labels`` on the grid ``affine`` (RAS mm), by the slices'
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing (LPS mm)."""
    inv = np.linalg.inv(np.asarray(affine, dtype=float))
    out = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), np.uint8)
    for i, ds in enumerate(datasets):
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        d_row, d_col = (float(v) for v in ds.PixelSpacing)
        r, c = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]
        lps = ipp + c[..., None] * d_col * iop[:3] + r[..., None] * d_row * iop[3:]
        ras = lps * np.array([-1.0, -1.0, 1.0])
        vox = np.rint(ras @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        ok = np.all((vox >= 0) & (vox < np.array(labels.shape)), axis=-1)
        out[i][ok] = labels[vox[ok][:, 0], vox[ok][:, 1], vox[ok][:, 2]]
    return out


def write_seg(labels: np.ndarray, affine: np.ndarray, source: list[Path],
              out_path: str | Path, version: str = "", method: str = "") -> Path:
    """Write the DICOM SEG of internal ``labels`` (on the grid ``affine``) over the
    series whose files are ``source``. Raises :class:`InputError` when nothing is
    outlined (a SEG needs a segment) or the series cannot carry one."""
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError:
        raise InputError("--dicom-seg needs highdicom and pydicom (pip install "
                         "'braintumor[web]').") from None
    from braintumor import __version__

    datasets = [pydicom.dcmread(f, force=True) for f in source]  # with or without preamble
    if not datasets:
        raise InputError("no DICOM file of the reference series was found for the SEG.")
    for ds in datasets:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 or \
                "PerFrameFunctionalGroupsSequence" in ds:
            # its positions lie per frame, not in the file's ImagePositionPatient
            raise InputError(f"{source[0].parent}: the series is an enhanced multi-frame "
                             "DICOM file, on which this version places no DICOM SEG.")
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise InputError(f"{source[0].parent}: the series' files lack {tag}, so no "
                                 "DICOM SEG can be placed on them.")
        for tag in TYPE2_COPIED:  # attributes a SEG copies; some exports leave them out
            if tag not in ds:
                setattr(ds, tag, "")
    normal = np.cross(np.asarray(datasets[0].ImageOrientationPatient[:3], float),
                      np.asarray(datasets[0].ImageOrientationPatient[3:], float))
    datasets.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient,
                                                                float))))
    frames = frames_from_labels(labels, affine, datasets)
    present = [(k, s) for k, s in enumerate(SEGMENTS) if (frames == s[0]).any()]
    if not present:
        raise InputError("no tumour was outlined, so there is nothing for a DICOM SEG to "
                         "hold.")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="braintumor" + (f" {method}" if method else ""),
        version=version or __version__, family=codes.DCM.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=getattr(codes.SCT, code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Brain])
        for n, (_, (_, label, code)) in enumerate(present, start=1)]
    pixels = np.stack([frames == value for _, (value, _, _) in present], axis=-1)
    try:
        seg = _segmentation(hd, datasets, pixels, descriptions)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"the series could not carry a DICOM SEG ({exc}).") from None
    from braintumor.io import write_replacing

    # beside its place, then renamed in (a full disk leaves the earlier SEG, or none)
    return write_replacing(Path(out_path), lambda tmp: seg.save_as(tmp))


def _segmentation(hd: Any, datasets: list[Any], pixels: np.ndarray,
                  descriptions: list[Any]) -> Any:
    from braintumor import __version__

    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=max(
            int(getattr(datasets[0], "SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="braintumor",
        manufacturer_model_name="braintumor", software_versions=__version__,
        device_serial_number="0", series_description="braintumor tumour outline",
        omit_empty_frames=True)
