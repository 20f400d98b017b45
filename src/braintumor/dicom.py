"""DICOM studies: MR series converted to NIfTI with dcm2niix and matched to the four
modalities (T1, T1ce, T2, FLAIR) by their descriptions.

Shared by the web page (a zip of DICOM files, matched in the page) and ``braintumor
predict`` (a folder of DICOM files, matched automatically, or by ``--series``). No
patient identifier is kept: dcm2niix writes anonymised sidecars and the NIfTI text
fields are blanked (:func:`braintumor.io.convert_dicom`).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import MODALITIES, MODALITY_NAMES, REQUIRED_MODALITIES, CaseSource
from braintumor.errors import InputError

NIFTI_EXT = (".nii.gz", ".nii")


_WORDS = {
    "flair": "flair", "t2f": "flair", "t2flair": "flair", "t2_flair": "flair",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1_gd": "t1ce", "t1post": "t1ce",
    "t1_post": "t1ce", "t1_ce": "t1ce", "t1_c": "t1ce", "t1contrast": "t1ce",
    "t2w": "t2", "t2": "t2", "t2_tse": "t2",
    "t1n": "t1", "t1w": "t1", "t1": "t1", "t1_pre": "t1", "t1pre": "t1",
}
_POST_CONTRAST = re.compile(r"(post|gad|\bgd\b|\+c\b|contrast|\bce\b|_ce\b|\bc\+)")


def detect_modality(text: str) -> str | None:
    """Guess the modality (t1, t1ce, t2, flair) from a file name or series description.

    BraTS names (``_t1ce``, ``-t1c`` ...) are read exactly; other texts by key words
    (FLAIR first, then T1 with a contrast word as T1ce, then T2, then T1).
    """
    from braintumor.cases import _match_brats_name

    hit = _match_brats_name(Path(text)) if text.lower().endswith(NIFTI_EXT) else None
    if hit is not None and hit[2] in MODALITIES:
        return hit[2]
    low = text.lower()
    for ext in NIFTI_EXT:
        if low.endswith(ext):
            low = low[: -len(ext)]
    tokens = re.split(r"[^a-z0-9+]+", low)
    joined = "_".join(t for t in tokens if t)
    if "flair" in joined or "t2f" in tokens:
        return "flair"
    for tok in reversed(tokens):  # the modality word usually ends a BraTS-like name
        if tok in _WORDS and _WORDS[tok] != "t1":
            return _WORDS[tok]
        if tok in _WORDS:
            return "t1ce" if _POST_CONTRAST.search(joined.replace("_", " ")) else "t1"
    if re.search(r"t1", joined):
        return "t1ce" if _POST_CONTRAST.search(joined.replace("_", " ")) else "t1"
    if re.search(r"t2", joined):
        return "t2"
    if "mprage" in joined or "spgr" in joined:
        return "t1ce" if _POST_CONTRAST.search(joined.replace("_", " ")) else "t1"
    return None



@dataclass
class Series:
    """One converted series: ``path`` (NIfTI), its description, shape, whether it is a 3D
    volume (``usable``) and the modality its description suggests (``guess``)."""

    path: Path
    description: str
    shape: list[int]
    usable: bool
    guess: str | None


def describe_series(nifti: Path) -> Series:
    """What dcm2niix's sidecar (or, without one, its file name ``<series number>_<description>``)
    says of a converted series."""
    import nibabel as nib

    sidecar = nifti.with_name(nifti.name[: -len(".nii.gz")] + ".json")
    desc = ""
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            desc = str(meta.get("SeriesDescription") or meta.get("ProtocolName") or "")
        except (OSError, json.JSONDecodeError):
            desc = ""
    if not desc:
        desc = re.sub(r"^\d+_", "", nifti.name[: -len(".nii.gz")])
    img: Any = nib.load(str(nifti))
    shape = [int(s) for s in img.shape]
    usable = len([s for s in shape if s > 1]) == 3
    return Series(nifti, desc[:120], shape, usable, detect_modality(desc) if usable else None)


def complete_assignment(guess: dict[str, str | None]) -> dict[str, str] | None:
    """{series id: modality} when each modality is guessed for exactly one series (of the
    3D series ``guess`` lists). A T1 or T2 may lack a series, as long as every series got
    a guess: one that did not might be the missing modality."""
    by_mod: dict[str, list[str]] = {}
    for sid, mod in guess.items():
        if mod:
            by_mod.setdefault(mod, []).append(sid)
    if any(len(v) != 1 for v in by_mod.values()) or \
            not set(REQUIRED_MODALITIES) <= set(by_mod):
        return None
    if set(by_mod) != set(MODALITIES) and not all(guess.values()):
        return None
    return {v[0]: m for m, v in by_mod.items()}


def resample_onto_t1(paths: dict[str, Path]) -> None:
    """Bring every modality file onto the T1's grid (the T1ce's when there is no T1), in
    place, when grids differ (same-session DICOM series share scanner coordinates, so
    the affines line them up; linear interpolation)."""
    import nibabel as nib

    from braintumor.io import load_nifti, resample_onto, save_float_nifti

    present = [m for m in MODALITIES if m in paths]
    ref = load_nifti(paths[present[0]], ndim=3)
    for mod in present[1:]:
        path = paths[mod]
        img: Any = nib.load(str(path))
        if img.shape[:3] == ref.data.shape and np.allclose(img.affine, ref.affine, atol=1e-3):
            continue
        data = resample_onto(load_nifti(path, ndim=3), ref.data.shape, ref.affine)
        save_float_nifti(data, path, ref.header, ref.affine)


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (the ``DICM`` mark after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom_study(path: str | Path, probe: int = 20) -> bool:
    """A folder holding DICOM files (looked for among its first ``probe`` files, at any
    depth) and no NIfTI file: a study to convert."""
    p = Path(path)
    if not p.is_dir():
        return False
    seen = 0
    for f in sorted(p.rglob("*")):
        if not f.is_file():
            continue
        if f.name.lower().endswith(NIFTI_EXT):
            return False
        if is_dicom_file(f):
            return True
        seen += 1
        if seen >= probe:
            break
    return False


def header_tag(path: Path, tag: str) -> str | None:
    """One text tag of a DICOM file's header (pixels not read); None when the file is
    unreadable, lacks the tag, or pydicom is missing."""
    try:
        import pydicom
    except ImportError:
        return None
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=[tag])
    except Exception:  # noqa: BLE001 - pydicom raises many kinds for a bad file
        return None
    value = getattr(ds, tag, None)
    return str(value) if value else None


def _study_uid(folder: Path) -> str | None:
    """The StudyInstanceUID of the first DICOM file under ``folder`` that gives one."""
    for f in sorted(folder.rglob("*")):
        if f.is_file() and is_dicom_file(f):
            uid = header_tag(f, "StudyInstanceUID")
            if uid:
                return uid
    return None


def dicom_study_uids(folder: str | Path) -> set[str]:
    """The StudyInstanceUIDs of the DICOM files under ``folder`` (headers only)."""
    uids: set[str] = set()
    for f in Path(folder).rglob("*"):
        if f.is_file() and is_dicom_file(f):
            uid = header_tag(f, "StudyInstanceUID")
            if uid:
                uids.add(uid)
    return uids


def one_study(folder: Path, what: str) -> None:
    """Refuse (one sentence, no identifier in it) DICOM files of more than one study in
    one case: series chosen by number or description could come from two examinations, or
    two patients, and a DICOM SEG would name the wrong one."""
    n = len(dicom_study_uids(folder))
    if n > 1:
        raise InputError(f"{what}: holds DICOM files of {n} studies (examinations); a case is "
                         "one study: give each study's files in a folder (or zip) of its own.")


def find_studies(folder: str | Path) -> list[tuple[Path, str]]:
    """``(folder, case id)`` for each DICOM study under a folder :func:`is_dicom_study`
    accepts: the folder itself when everything in it is one study (series may sit in
    subfolders), else each subfolder that holds DICOM files, named after it (a folder of
    patients' studies)."""
    root = Path(folder)
    subs = [d for d in sorted(root.iterdir()) if d.is_dir() and is_dicom_study(d)]
    loose = any(f.is_file() and is_dicom_file(f) for f in root.iterdir())
    if len(subs) < 2 or loose:
        return [(root, root.name)]
    uids = {_study_uid(d) for d in subs}
    if len(uids) < 2 or None in uids:
        return [(root, root.name)]
    return [(d, d.name) for d in subs]


def parse_series_choice(text: str | None) -> dict[int, str]:
    """``--series`` text, ``"3=t1,4=t1ce,5=t2,7=flair"`` (DICOM series numbers), ->
    ``{series number: modality}``."""
    out: dict[int, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        num, _, mod = part.partition("=")
        mod = mod.strip().lower()
        if not num.strip().isdigit() or mod not in MODALITIES:
            raise InputError(f"--series {text}: give each series as NUMBER=MODALITY, e.g. "
                             "3=t1,4=t1ce,5=t2,7=flair.")
        out[int(num)] = mod
    return out


def study_source(folder: str | Path, out_dir: str | Path, case_id: str | None = None,
                 choice: dict[int, str] | None = None) -> CaseSource:
    """Convert the DICOM study under ``folder`` and match its series to the modalities
    (``choice``: series number -> modality, else each series' description), every
    modality on the T1 series' grid. The four volumes are written, anonymised, to
    ``out_dir/<case>_series/<modality>.nii.gz``; the returned source reads them, so the
    label map comes out on that T1 grid. An unclear match raises :class:`InputError`
    listing the series found."""
    from braintumor.io import convert_dicom

    folder = Path(folder)
    cid = case_id or folder.name
    one_study(folder, str(folder))
    dest = Path(out_dir) / f"{cid}_series"
    raw = Path(out_dir) / f".{cid}_dcm2niix"
    shutil.rmtree(raw, ignore_errors=True)
    uneven: set[Path] = set()
    try:
        try:
            niftis = convert_dicom(folder, raw, anonymize=True, uneven=uneven)
        except InputError:
            raise InputError(f"{folder}: holds no DICOM series that could be converted to "
                             "NIfTI.") from None
        series: dict[int, Series] = {}
        for i, n in enumerate(niftis):  # echoes of one series share its number
            num = _series_number(n, i)
            series[num if num not in series else 1000 + i] = describe_series(n)
        usable = sum(s.usable for s in series.values())
        if usable < len(REQUIRED_MODALITIES):
            raise InputError(f"{folder}: holds {usable} 3D series ({_listing(series)}); a case "
                             "needs T1ce and FLAIR, and T1 and T2 where there are.")
        if choice:
            unknown = sorted(set(choice) - set(series))
            if unknown:
                raise InputError(f"{folder}: no series {unknown[0]}; it holds "
                                 f"{_listing(series)}.")
            by_num = {str(k): v for k, v in choice.items()}
        else:
            by_num = complete_assignment({str(k): s.guess for k, s in series.items()
                                          if s.usable}) or {}
        chosen = {m: int(k) for k, m in by_num.items()}
        complete = set(REQUIRED_MODALITIES) <= set(chosen) and len(by_num) == len(chosen)
        if choice and not complete:
            raise InputError("--series must name one series for each of T1ce and FLAIR, and "
                             "of T1 and T2 where the study has them, each modality once; "
                             f"{folder} holds {_listing(series)}.")
        guesses = [s.guess for s in series.values() if s.usable]
        lacking = [MODALITY_NAMES[m] for m in REQUIRED_MODALITIES if m not in guesses]
        if not complete and not choice and lacking and all(guesses):
            raise InputError(
                f"{folder}: holds no series that reads as {' or '.join(lacking)} "
                f"({_listing(series)}); a case needs T1ce and FLAIR, and T1 and T2 where "
                "there are. If one of these is it, name them with --series, e.g. --series "
                "3=t1,4=t1ce,5=t2,7=flair.")
        if not complete:
            raise InputError(
                f"{folder}: could not tell which series is T1, T1ce, T2 and FLAIR; it holds "
                f"{_listing(series)}. Name them with --series, e.g. --series "
                "3=t1,4=t1ce,5=t2,7=flair.")
        for m, num in chosen.items():
            if not series[num].usable:
                raise InputError(f"{folder}: series {num} ({series[num].description}) is not "
                                 f"a 3D volume, so it cannot be the {MODALITY_NAMES[m]}.")
            if series[num].path in uneven:
                raise InputError(f"{folder}: series {num} ({series[num].description}), the "
                                 f"{MODALITY_NAMES[m]}, has slices that are not evenly spaced "
                                 "(one missing?), so it cannot be put on one grid; export "
                                 "the whole series again.")
        dest.mkdir(parents=True, exist_ok=True)
        paths = {}
        for m in (m for m in MODALITIES if m in chosen):
            paths[m] = dest / f"{m}.nii.gz"
            shutil.copyfile(series[chosen[m]].path, paths[m])
        resample_onto_t1(paths)
    finally:
        shutil.rmtree(raw, ignore_errors=True)  # sidecars and unused series
    ref = next(m for m in MODALITIES if m in chosen)  # the grid the others were put on
    return CaseSource(case_id=cid, kind="brats2021", modality_paths=paths,
                      dicom_reference=(folder, chosen[ref], _study_uid(folder)))


def _series_number(nifti: Path, index: int) -> int:
    """The DICOM series number dcm2niix put first in the file name (``%s_%d``), else
    1000 + the file's position."""
    m = re.match(r"(\d+)_", nifti.name)
    return int(m.group(1)) if m else 1000 + index


def _listing(series: dict[int, Series]) -> str:
    return "; ".join(f"{k}: {s.description or 'no description'}"
                     + ("" if s.usable else " (not 3D)") for k, s in sorted(series.items()))
