"""Turn uploaded files into a job's inputs, with every check done before the job queues.

What an upload may be:

* four 3D NIfTI files, one per modality: the modality of each is detected from its name
  (BraTS 2017-2021 and 2023 namings and common words such as ``flair``, ``t1gd``) or
  given by the client (the page lets the user change it before submitting); the T1 or
  T2 may be left out (T1ce and FLAIR are needed), and the watershed tuned for that then
  segments the case, whatever the method asked;
* one 4D NIfTI with the four modalities (Decathlon order FLAIR, T1, T1gd, T2);
* one zip: extracted under server-made names (no path from the archive is used, and an
  entry whose path would leave the archive is refused), then told by what it holds
  (:func:`unpack_zip`): the NIfTI files of one case (its folder zipped, BraTS-named or
  named by modality) are taken as those files uploaded as they are, a BraTS label map
  among them (``_seg``) as the reference; DICOM files are a study, below; anything else
  is refused in one sentence saying what the zip holds;
* one zip of DICOM series (or the DICOM files of several series, the pictures that are
  not DICOM beside them, a CD's previews, and a system's ``Thumbs.db`` passed over and
  named in the job's notes): read as the command line reads a study folder
  (:func:`braintumor.dicom.convert_study`): each series converted on its own with
  dcm2niix (anonymised), labelled by its SeriesNumber, matched to a modality by its
  description and acquisition, and one that could not be read listed with why; the
  DICOM files and the sidecars are deleted after conversion, and the NIfTI text fields
  are blanked, so no patient identifier is kept;
* one 2D picture (PNG/JPEG/TIFF), or the slices of one patient as several pictures
  (ordered by the trailing number of their names, ``name_1.png ... name_N.png``, else by
  name), when a 2D model is part of this build; an optional ``pixel_mm`` field gives
  their pixel size in mm (exported pictures do not carry it), for areas in mm^2. A
  single-slice DICOM file (``.dcm``) counts as a picture (DICOM slices of a stack are
  ordered by their InstanceNumber): its pixels are kept as PNG, its
  PixelSpacing as the pixel size (unless one is given), and the DICOM file itself, with
  its patient identifiers, is deleted. When every picture comes with its mask
  (``<name>_mask.png``/``.tif``, 0/255 as the LGG data set has them, or 0/1), the masks are the
  reference the outline is scored against (Dice per patient volume and per slice);
* optionally a reference label map (field ``reference``) to score the result against.

Every fault is one :class:`~braintumor.errors.InputError` sentence (answered 4xx).
A job's inputs end up as canonical files in ``<job>/input/`` described by a JSON dict
(paths relative to the job folder).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import (
    MODALITIES,
    MODALITY_NAMES,
    OPTIONAL_MODALITIES,
    Case,
    CaseSource,
    label_on_grid,
    load_case,
    nan_note,
)
from braintumor.dicom import (
    Study,
    StudySeries,
    auto_assignment,
    detect_modality,
    doubted_choice,
    header_tag,
    is_dicom_file,
    place_series,
    settle_assignment,
)
from braintumor.errors import InputError
from braintumor.io import extract_zip
from braintumor.web.upload import UnsupportedUpload, UploadedFile, safe_display_name

NIFTI_EXT = (".nii.gz", ".nii")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
ZIP_EXT = (".zip",)

#: most pictures one 2D stack may hold
MAX_SLICES = 512
#: most pixels one 2D upload may hold, its pictures together (64 million: 256 slices of
#: 512 x 512, or one picture of 8192 x 8192); the worker holds several copies of them
MAX_STACK_PIXELS = 8192 * 8192


class StackTooLarge(InputError):
    """A 2D upload whose pictures hold more pixels in all than one job reads (413)."""
#: the pixel sizes (mm) a 2D upload may state
PIXEL_MM_RANGE = (0.01, 20.0)


def parse_pixel_size(text: str | None) -> float | None:
    """The ``pixel_mm`` form field: empty -> None, else a size in mm within
    :data:`PIXEL_MM_RANGE` (anything else is one :class:`InputError` sentence)."""
    if text is None or not str(text).strip():
        return None
    lo, hi = PIXEL_MM_RANGE
    try:
        v = float(str(text).strip().replace(",", "."))
    except ValueError:
        v = float("nan")
    if not (lo <= v <= hi):
        raise InputError(f"The pixel size must be a number of millimetres from {lo:g} to "
                         f"{hi:g} (got {str(text).strip()[:40]!r}).")
    return v


def stack_order(names: list[str]) -> list[int]:
    """Indices of ``names`` in slice order: by the trailing number of every name when all
    have one (``x_2`` before ``x_10``), else by name."""
    from braintumor.slices2d import slice_number

    nums = [slice_number(n) for n in names]
    if all(n is not None for n in nums):
        return sorted(range(len(names)), key=lambda i: (nums[i], names[i]))
    return sorted(range(len(names)), key=lambda i: names[i])


class FeatureUnavailable(InputError):
    """The request needs a part of the system this build lacks (answered with 501)."""


def file_kind(name: str) -> tuple[str, str]:
    """-> (kind, canonical suffix) for a client's file name: kind is nifti|image|zip."""
    low = name.lower()
    for kind, exts in (("nifti", NIFTI_EXT), ("image", IMAGE_EXT), ("zip", ZIP_EXT)):
        for ext in exts:
            if low.endswith(ext):
                return kind, ext
    raise UnsupportedUpload(
        f"{name}: is not a NIfTI (.nii, .nii.gz), zip (of NIfTI files or a DICOM study) or "
        "picture (PNG, JPEG, TIFF) file.")


# -- modality detection: braintumor.dicom.detect_modality (re-exported here)


def parse_modality_choice(text: str | None) -> dict[str, str]:
    """The client's modality choice: a JSON object {file name or series id: modality}."""
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise InputError("The modalities field is not valid JSON; send an object such as "
                         '{"case_t1.nii.gz": "t1"}.') from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in obj.items()):
        raise InputError('The modalities field must be a JSON object such as '
                         '{"case_t1.nii.gz": "t1"}.')
    out = {}
    for k, v in obj.items():
        mod = v.strip().lower()
        if mod in ("", "none", "ignore"):
            continue
        if mod not in MODALITIES:
            raise InputError(f"Modality {v!r} for {k} is not one of t1, t1ce, t2, flair.")
        out[k] = mod
    return out


def given_for(names: list[str], choice: dict[str, str], where: str = "this upload"
              ) -> dict[str, str]:
    """The client's modality choice ({file name: modality}) keyed as the uploaded files'
    names are kept (:func:`safe_display_name`); refused in one sentence, naming the files
    there are, when it names a file not among ``names`` (of ``where``): a slip in a name
    is not passed over, the file then read by its name alone."""
    given: dict[str, str] = {}
    for key, mod in choice.items():
        name = safe_display_name(key)
        if name not in names:
            raise InputError(f"The modalities field names {key!r}, which is not a file of "
                             f"{where} (its files are {', '.join(names)}).")
        given[name] = mod
    return given


def assign_modalities(names: list[str], choice: dict[str, str]) -> dict[str, str]:
    """Map each of ``names`` to a distinct modality (client choice first, then the names).

    Returns {name: modality}; raises one sentence when a modality is missing or doubled,
    or when the choice names a file not among ``names`` (:func:`given_for`).
    """
    choice = given_for(names, choice)
    assigned: dict[str, str] = {}
    for n in names:
        mod = choice.get(n) or detect_modality(n)
        if mod is None:
            raise InputError(f"{n}: the modality cannot be told from the name; choose T1, "
                             "T1ce, T2 or FLAIR for it.")
        assigned[n] = mod
    by_mod: dict[str, list[str]] = {}
    for n, m in assigned.items():
        by_mod.setdefault(m, []).append(n)
    for m, ns in by_mod.items():
        if len(ns) > 1:
            raise InputError(f"{' and '.join(ns)} are both {MODALITY_NAMES[m]}; each modality "
                             "must be given once.")
    missing = [MODALITY_NAMES[m] for m in MODALITIES
               if m not in by_mod and m not in OPTIONAL_MODALITIES]
    if missing:
        what = " and ".join(missing) + (" images" if len(missing) > 1 else " image")
        raise InputError(f"The upload lacks the {what}; T1ce and FLAIR are needed (without "
                         "T1 or T2 the watershed segments the case alone).")
    return assigned


# -- loading a job's case -------------------------------------------------------------
def load_job_case(job_dir: Path, inputs: dict[str, Any], with_reference: bool = True) -> Case:
    """Read a job's canonical input files into a :class:`Case` (reference as ``label``).
    The reference decides the case's grid as a label map given with a case does
    (:func:`braintumor.cases.case_grid`), with or without ``with_reference``, so every
    reading of the job lies on one grid."""
    from braintumor import labels as L
    from braintumor.io import load_label_nifti

    paths = {m: job_dir / p for m, p in inputs["modalities"].items()}
    ref = inputs.get("reference")
    src = CaseSource(case_id=inputs.get("case_id", "case"), kind="brats2021",
                     modality_paths=paths, notes=list(inputs.get("notes") or []),
                     label_path=job_dir / ref if ref else None)
    case = load_case(src, with_label=False)
    if with_reference and ref:
        ref_name = inputs.get("reference_name", "reference label map")
        lv = load_label_nifti(job_dir / ref)
        try:  # stored in another orientation than the case's grid: turned onto it exactly
            lv = label_on_grid(lv, case.shape, case.affine)
        except InputError as exc:  # said of the file as the user named it
            raise InputError(f"{ref_name}: {str(exc).split(': ', 1)[1]}") from None
        hint = inputs.get("reference_hint")
        default = inputs.get("reference_default")
        if hint is None and default and {int(v) for v in np.unique(lv.data)} <= \
                L.allowed_values(default):
            hint = default
        conv = L.detect_convention(lv.data, hint=hint, what=f"label map {ref_name}")
        case.label = L.to_internal(lv.data, conv, what=f"label map {ref_name}")
        case.label_convention = conv
    return case


# -- preparing an upload ----------------------------------------------------------------
#: the upload's text fields, and those of them that are yes/no switches
TEXT_FIELDS = ("method", "modalities", "confirm_series", "uncertainty", "accurate", "align",
               "bias_correct", "pixel_mm", "channels")
SWITCH_FIELDS = ("confirm_series", "uncertainty", "accurate", "align", "bias_correct")
_YES = ("1", "true", "yes", "on")
_NO = ("", "0", "false", "no", "off")


def switch(fields: dict[str, str], name: str) -> bool:
    """A yes/no field's value (absent or empty: no); a value that is neither is refused
    rather than read as no, so a typo (``accurate=tru``) does not silently change the run."""
    text = fields.get(name, "").strip().lower()
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise InputError(f"The {name!r} field is {fields[name][:40]!r}; give true or false "
                     "(or 1/0, yes/no, on/off).")


def check_fields(fields: dict[str, str]) -> None:
    """Refuse a text field the upload does not take (a misspelt ``methd`` would otherwise be
    ignored and the default run instead) and a yes/no field that is neither."""
    for name in sorted(fields):
        if name in ("files", "reference"):
            raise InputError(f"The {name!r} field must be a file (with curl: -F {name}=@PATH), "
                             "not text.")
        if name not in TEXT_FIELDS:
            raise InputError(f"Unknown upload field {name[:40]!r}; the text fields are "
                             f"{', '.join(TEXT_FIELDS)}.")
    for name in SWITCH_FIELDS:
        switch(fields, name)
    channel_order(fields)


#: how the page and the API state a 4D file's channel order, said in its warning
CHANNELS_ADVICE_WEB = ("on this page: the upload form's Channel order of the 4D file, the "
                       "API's channels field, t1,t1ce,t2,flair for BraTS's order, or upload "
                       "the four modalities as separate files")


def channel_order(fields: dict[str, str]) -> tuple[str, ...] | None:
    """The ``channels`` field: a 4D file's four channels in the file's order
    (``t1,t1ce,t2,flair``), read as ``braintumor predict --channels`` reads it
    (:func:`braintumor.cases.parse_channels`); None when not given (the Decathlon's
    order, FLAIR, T1, T1ce, T2, is taken and checked). One that does not name the four
    modalities once each is refused in one sentence."""
    from braintumor.cases import parse_channels

    text = fields.get("channels", "").strip()
    if not text:
        return None
    try:
        return parse_channels(text)
    except InputError:
        raise InputError(f"The 'channels' field {text[:60]!r} does not name T1, T1ce, T2 and "
                         "FLAIR once each in the 4D file's order (e.g. t1,t1ce,t2,flair)."
                         ) from None


def _no_channels(fields: dict[str, str], what: str) -> None:
    """Refuse a channel order given with an upload that is not one 4D file."""
    if fields.get("channels", "").strip():
        raise InputError(f"The 'channels' field gives the channel order of one 4D NIfTI "
                         f"file; this upload is {what}.")


def _no_modalities(fields: dict[str, str], what: str) -> None:
    """Refuse a modality choice given with an upload that has no files to choose among
    (a choice that would otherwise be passed over without a word)."""
    if parse_modality_choice(fields.get("modalities")):
        raise InputError(f"The 'modalities' field says which uploaded NIfTI file is which "
                         f"modality; this upload is {what}, so leave it out.")


def prepare_upload(job_dir: Path, fields: dict[str, str], files: list[UploadedFile],
                   max_unzipped: int, have_2d: bool) -> dict[str, Any]:
    """Check the uploaded files and lay them out as a job's inputs.

    Returns the inputs dict. When DICOM series need the user's confirmation
    (``fields['confirm_series']`` true, or some modality not matched) the dict has
    ``needs_confirmation: True`` and ``series``; :func:`confirm_series` finishes it.
    """
    from braintumor import labels as L

    check_fields(fields)
    inp_dir = job_dir / "input"
    inp_dir.mkdir(parents=True, exist_ok=True)
    unknown = sorted({f.field for f in files} - {"files", "reference"})
    if unknown:
        raise InputError(f"Unknown upload field {unknown[0]!r}; send the images as 'files' and "
                         "an optional label map as 'reference'.")
    images = [f for f in files if f.field == "files"]
    refs = [f for f in files if f.field == "reference"]
    if not images:
        raise InputError("No image was uploaded; send four NIfTI files, one 4D NIfTI, a zip of "
                         "them or of a DICOM study, or 2D pictures (one, or the slices of one "
                         "patient).")
    for f in files:
        if f.size == 0:
            raise InputError(f"{f.name}: the file is empty.")
    for f in images:  # a CD's DICOM files often have no extension: known by their header
        if not f.name.lower().endswith(NIFTI_EXT + IMAGE_EXT + ZIP_EXT) and \
                is_dicom_file(f.path):
            f.name += ".dcm"
    if len(refs) > 1:
        raise InputError("More than one reference label map was uploaded; send at most one.")
    # a CD's study beside its previews (JPEG), or a viewer's Thumbs.db: the study, as the
    # command line reads such a folder, the other files passed over
    beside = _beside_study(images)
    if beside:
        images = [f for f in images if f not in beside]
        for f in beside:
            f.path.unlink(missing_ok=True)
    inputs: dict[str, Any] = {"files": [f.name for f in images]}
    if beside:
        names = [f.name for f in beside]
        inputs["passed_over"] = (
            f"{len(names)} file{'s' if len(names) > 1 else ''} beside the DICOM files "
            f"{'were' if len(names) > 1 else 'was'} passed over, not being DICOM "
            f"({_listed(names)})")

    kinds = [file_kind(f.name) for f in images]
    kset = {k for k, _ in kinds}
    if len(kset) > 1:
        raise InputError("The upload mixes kinds of files; send four NIfTI files, one 4D NIfTI, "
                         "one zip, or 2D pictures.")
    kind = kset.pop()
    if kind == "zip" and len(images) > 1:
        raise InputError(f"Send one zip at a time (got {len(images)} files).")
    if kind == "zip":  # the NIfTI files of a case, zipped: as those files sent as they are
        unpacked = unpack_zip(job_dir, images[0], max_unzipped)
        if unpacked is not None:
            archive = images[0].name
            images, seg = _zipped_case(archive, unpacked, parse_modality_choice(
                fields.get("modalities")))
            inputs["archive"] = archive
            if seg is not None and refs:
                inputs["notes"] = [f"{archive}: its label map {seg.name} was left out; the "
                                   f"reference label map {refs[0].name} was used"]
            elif seg is not None:
                refs = [seg]
            kinds = [file_kind(f.name) for f in images]
            kind = "nifti"

    if refs:
        r = refs[0]
        rkind, ext = file_kind(r.name)
        if rkind != "nifti":
            raise InputError(f"{r.name}: a reference label map must be a NIfTI file.")
        dest = inp_dir / f"reference{ext}"
        r.path.replace(dest)
        inputs["reference"] = str(dest.relative_to(job_dir))
        inputs["reference_name"] = r.name
        inputs["reference_hint"] = L.convention_from_name(r.name)

    if kind == "image" and _several_dicom_series(images):
        # DICOM files of several series: a study, as a zip of it would be, not a stack of
        # 2D slices
        kind = "zip"
    if kind == "image":
        if not have_2d:
            raise UnsupportedUpload(f"{images[0].name}: 2D pictures need the 2D model, which "
                                    "this build lacks; upload the four MRI volumes instead.")
        if refs:
            raise InputError("A reference label map is only used with 3D volumes.")
        _no_channels(fields, "of 2D pictures")
        _no_modalities(fields, "of 2D pictures")
        return _prepare_2d(job_dir, inputs, images, fields)

    if kind == "zip":
        _no_channels(fields, "a DICOM study")
        inputs.update(source="dicom", case_id="dicom-case")
        study = convert_dicom_zip(
            job_dir, images[0] if len(images) == 1 and images[0].name.lower().endswith(".zip")
            else images, max_unzipped)
        inputs["series"] = [e.as_dict(job_dir) for e in study.entries]
        inputs["notes"] = study.notes
        if beside:
            inputs["notes"] = [inputs["passed_over"], *study.notes]
        if study.date:  # the examination's date, for a follow-up's comparison
            inputs["study_date"] = study.date
        choice = parse_modality_choice(fields.get("modalities"))
        _known_series(choice, [e.label for e in study.entries])
        want_confirm = switch(fields, "confirm_series")
        auto = None if want_confirm else auto_assignment(
            study.entries, study_name(inputs["files"]), overrides=choice)
        if auto is None:
            inputs["needs_confirmation"] = True
            return inputs
        return confirm_series(job_dir, inputs, auto, given=False)

    # NIfTI
    if len(images) == 1:
        _no_modalities(fields, "one 4D NIfTI file (the 'channels' field gives its channels' "
                               "order)")
        inputs = _prepare_4d(job_dir, inputs, images[0], channel_order(fields))
        if "archive" in inputs and inputs["case_id"] == "case":
            inputs["case_id"] = case_id_from_name(inputs["archive"])
        return inputs
    if not 2 <= len(images) <= 4:
        raise InputError(f"Got {len(images)} NIfTI files; send four (T1, T1ce, T2, FLAIR; the "
                         "T1 or T2 may be left out) or one 4D file.")
    _no_channels(fields, f"{len(images)} NIfTI files, one per modality")
    names = [f.name for f in images]
    if len(set(names)) != len(names):
        raise InputError("Two uploaded files have the same name; give each modality its own "
                         "file name.")
    assigned = assign_modalities(names, parse_modality_choice(fields.get("modalities")))
    mods: dict[str, str] = {}
    for f, (_, ext) in zip(images, kinds, strict=True):
        mod = assigned[f.name]
        dest = inp_dir / f"{mod}{ext}"
        f.path.replace(dest)
        mods[mod] = str(dest.relative_to(job_dir))
    inputs.update(source="nifti", modalities=mods, file_modalities=assigned,
                  case_id=_case_id_from_names(names, case_id_from_name(inputs.get("archive",
                                                                                  "case"))))
    _validate_case(job_dir, inputs, {assigned[n]: n for n in names})
    return inputs


def _beside_study(images: list[UploadedFile]) -> list[UploadedFile]:
    """The files to pass over when two or more of ``images`` are DICOM files (a study, or
    one series read as slices) and every other file is a picture that is not DICOM (a
    CD's JPEG previews) or a file a system adds to a folder (``Thumbs.db``,
    ``desktop.ini``, ``.DS_Store``); beside one series, only when no picture is numbered
    as a slice (``slice_7.png`` may be one of the stack's). Else none (the upload is read
    as it is, and refused, if it must be, for what it holds)."""
    from braintumor.io import is_dicom_picture, system_entry

    dicoms = [f for f in images if is_dicom_picture(f.name)]
    others = [f for f in images if not is_dicom_picture(f.name)]
    if not others or len(dicoms) < 2:
        return []
    if not all(system_entry(f.name) or f.name.lower().endswith(IMAGE_EXT) for f in others):
        return []
    if _several_dicom_series(dicoms):
        return others  # a study: no picture is one of its series' slices
    # one series, read as slices: a numbered picture may be a slice of that stack (read
    # with it, as before), so only a stack without one passes its pictures over
    from braintumor.slices2d import slice_number

    if any(slice_number(f.name) is not None for f in others if not system_entry(f.name)):
        return []
    return others


def _several_dicom_series(images: list[UploadedFile]) -> bool:
    """True when the uploaded files are DICOM files of more than one series (read from
    their SeriesInstanceUID; files that do not say are left out of the count)."""
    from braintumor.io import is_dicom_picture

    if len(images) < 2 or not all(is_dicom_picture(f.name) for f in images):
        return False
    uids = set()
    for f in images:  # an unreadable file is left to the 2D path, which reports it
        uid = header_tag(f.path, "SeriesInstanceUID")
        if uid:
            uids.add(uid)
        if len(uids) > 1:
            return True
    return False


def _prepare_2d(job_dir: Path, inputs: dict[str, Any], images: list[UploadedFile],
                fields: dict[str, str]) -> dict[str, Any]:
    """One picture, or the slices of one patient (same size, put in slice order; files
    named as masks, ``*_mask.png``, are left out and listed)."""
    from braintumor.slices2d import (
        check_picture_size,
        check_same_size,
        is_mask_name,
        numbering_note,
        slice_number,
        slice_stem,
    )

    pixel_mm = parse_pixel_size(fields.get("pixel_mm"))
    own: list[float] = []

    def read(dest: Path, name: str, spacing: bool = True) -> tuple[np.ndarray, Path]:
        """The picture's pixels; a DICOM slice (a picture or its mask) becomes a PNG (the
        DICOM file, with its patient identifiers, is deleted) and, with ``spacing``, gives
        its pixel size."""
        from braintumor.io import is_dicom_picture, read_dicom_2d, read_image_2d, write_png

        if not is_dicom_picture(dest):
            arr = call_named(read_image_2d, dest, name)
            check_picture_size(arr, name)  # refused here, as the command line refuses it
            return arr, dest
        try:
            arr, px = call_named(read_dicom_2d, dest, name)
        finally:
            dest.unlink(missing_ok=True)
        check_picture_size(arr, name)
        if px is not None and spacing:
            own.append(px)
        png = dest.with_suffix(".png")
        write_png(arr[..., 0] if arr.shape[2] == 1 else arr, png)
        return arr, png

    seen: set[str] = set()
    for f in images:  # as the 3D path: a second file of one name would hide the first
        if f.name in seen:
            raise InputError(f"Two uploaded pictures are both named {f.name}; give each "
                             "slice its own file name.")
        seen.add(f.name)
    inp_dir = job_dir / "input"
    skipped = [f.name for f in images if is_mask_name(f.name)] if len(images) > 1 else []
    pics = [f for f in images if f.name not in skipped]
    masks = {_stem(f.name): f for f in images if f.name in skipped}
    refs = [masks.get(_stem(f.name) + "_mask") for f in pics]
    scored = bool(pics) and all(r is not None for r in refs)
    if scored:
        skipped = [f.name for f in images if f.name in skipped and f not in refs]
    if not pics:
        raise InputError("Every uploaded picture is named as a mask (*_mask); send the "
                         "slice pictures themselves.")
    if len(pics) > MAX_SLICES:
        raise InputError(f"{len(pics)} pictures were uploaded; one stack may hold at most "
                         f"{MAX_SLICES} slices.")
    def reference(k: int, i: int, shape: tuple[int, ...]) -> str:
        """Save the mask of picture ``pics[i]`` as slice ``k``'s reference (checked:
        readable, its picture's size; a DICOM mask kept as a PNG, like the slices)."""
        f, m = pics[i], refs[i]
        assert m is not None
        dest = inp_dir / f"ref_{k:03d}{file_kind(m.name)[1]}"
        m.path.replace(dest)
        arr, dest = read(dest, m.name, spacing=False)
        if arr.shape[:2] != shape[:2]:
            raise InputError(f"{m.name} is {arr.shape[1]}x{arr.shape[0]} pixels while "
                             f"{f.name} is {shape[1]}x{shape[0]}; a mask must match its "
                             "picture.")
        return str(dest.relative_to(job_dir))

    if len(pics) == 1:
        dest = inp_dir / f"image{file_kind(pics[0].name)[1]}"
        pics[0].path.replace(dest)
        arr, dest = read(dest, pics[0].name)
        inputs.update(source="image2d", image=str(dest.relative_to(job_dir)),
                      case_id=case_id_from_name(pics[0].name), image_shape=list(arr.shape))
        if scored:
            inputs["ref_masks"] = [reference(0, 0, arr.shape)]
        return _pixel_size(inputs, pixel_mm, own)
    dicom_order = _dicom_order(pics)
    if dicom_order is None:
        # the command line outlines unnumbered pictures one by one and the numbered
        # slices of several names as one volume each; a job here has one result, so such
        # pictures are not stacked into one "patient" (areas summed, interleaved)
        stems = {slice_stem(f.name) for f in pics}
        if any(slice_number(f.name) is None for f in pics) or len(stems) > 1:
            shown = ", ".join(f.name for f in pics[:3]) + (", ..." if len(pics) > 3 else "")
            raise InputError(f"{shown}: a 2D upload is one picture, or the numbered slices "
                             "of one patient (name_1.png, name_2.png, ...); send other "
                             "pictures one at a time.")
    order = dicom_order or stack_order([f.name for f in pics])
    saved, names, ref_saved = [], [], []
    first: tuple[str, tuple[int, ...]] | None = None
    pixels = 0
    for k, i in enumerate(order):
        f = pics[i]
        dest = inp_dir / f"slice_{k:03d}{file_kind(f.name)[1]}"
        f.path.replace(dest)
        arr, dest = read(dest, f.name)
        pixels += int(arr.shape[0]) * int(arr.shape[1])
        if pixels > MAX_STACK_PIXELS:
            raise StackTooLarge(
                f"The {len(pics)} pictures hold more than {MAX_STACK_PIXELS // 2**20} million "
                "pixels in all, the most one upload may hold; send fewer or smaller slices.")
        if first is None:
            first = (f.name, arr.shape[:2])
        check_same_size([first[1], arr.shape], [first[0], f.name], "one stack")
        saved.append(str(dest.relative_to(job_dir)))
        names.append(f.name)
        if scored:
            ref_saved.append(reference(k, i, arr.shape))
    assert first is not None
    inputs.update(source="image2d", images=saved, slice_names=names,
                  case_id=_stack_id(names), image_shape=[*first[1]], skipped=skipped)
    note = None if dicom_order is not None else numbering_note(names)
    if note is not None:
        inputs["numbering_note"] = note
    if scored:
        inputs["ref_masks"] = ref_saved
    return _pixel_size(inputs, pixel_mm, own)


def _dicom_order(pics: list[UploadedFile]) -> list[int] | None:
    """Slice order of DICOM pictures by their InstanceNumber (their names are often UIDs
    that say nothing of the order), or None unless every picture is DICOM and numbered."""
    from braintumor.io import dicom_instance_number, is_dicom_picture

    if not all(is_dicom_picture(f.name) for f in pics):
        return None
    nums = [dicom_instance_number(f.path) for f in pics]
    if any(n is None for n in nums) or len(set(nums)) != len(nums):
        return None
    return sorted(range(len(pics)), key=lambda i: nums[i])  # type: ignore[arg-type, return-value]


def _stem(name: str) -> str:
    """A file name without its picture suffix (``a_1.tif`` -> ``a_1``)."""
    low = name.lower()
    for ext in IMAGE_EXT:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _pixel_size(inputs: dict[str, Any], given: float | None, own: list[float]
                ) -> dict[str, Any]:
    """The pixel size of a 2D job: the one given, else the DICOM files' own (the first
    slice's; they seldom differ within one patient's slices)."""
    if given is not None:
        inputs.update(pixel_mm=given, pixel_source="given")
    elif own:
        inputs.update(pixel_mm=round(own[0], 6), pixel_source="DICOM PixelSpacing")
    return inputs


def call_named(fn: Any, path: Path, name: str) -> Any:
    """Call ``fn(path)``, restating an InputError with the user's file name (of the same
    kind: a file too large to read stays one, answered 413)."""
    try:
        return fn(path)
    except InputError as exc:
        text = str(exc).replace(str(path), name)
        try:
            again = type(exc)(text)
        except Exception:  # noqa: BLE001 - a kind built otherwise: the plain sentence
            again = InputError(text)
        raise again from None


def _validate_case(job_dir: Path, inputs: dict[str, Any], display: dict[str, str]) -> Case:
    """Load the case once (every check of :func:`load_case`), restating server paths as
    the user's file names; ``inputs['grid']`` becomes the modality whose grid it lies on."""
    try:
        case = load_job_case(job_dir, inputs)
        inputs["grid"] = case.grid  # the viewer shows the images on it (on_case_grid)
        _without_nan(job_dir, inputs, display, case)
        return case
    except InputError as exc:
        msg = str(exc)
        for mod, rel in inputs.get("modalities", {}).items():
            msg = msg.replace(str(job_dir / rel), display.get(mod, MODALITY_NAMES[mod]))
        if inputs.get("reference"):
            msg = msg.replace(str(job_dir / inputs["reference"]), inputs["reference_name"])
        msg = msg.replace(str(job_dir / "input"), "the upload")
        raise InputError(msg) from None


def _without_nan(job_dir: Path, inputs: dict[str, Any], display: dict[str, str],
                 case: Case) -> None:
    """Files whose NaN voxels (a brain-masking tool's outside the brain) were read as
    background are stored so, for the viewer and every later reading, and the job's
    notes say so by the names the user gave."""
    from braintumor.io import load_nifti, save_float_nifti

    found = getattr(case.source, "nan_voxels", None) or {}
    for mod, rel in inputs.get("modalities", {}).items():
        n = found.get(str(job_dir / rel))
        if not n:
            continue
        vol = load_nifti(job_dir / rel, nan_as_background=True)
        save_float_nifti(vol.data, job_dir / rel, vol.header, vol.affine)
        name = display.get(mod, MODALITY_NAMES[mod])
        inputs["notes"] = [*inputs.get("notes", []), f"{name}: {nan_note(n)}"]


def case_id_from_name(name: str) -> str:
    """A readable case id from a file name: its stem, with letters, marks and digits of
    any script kept (``Müller_ü``, ``患者1``; composed as NFC, as a Mac may send them
    decomposed), and ``_``, ``.``, ``-``; every other run of characters (path separators,
    spaces, control and format characters such as a right-to-left override) as one
    ``_``; at most 80 characters, ``case`` when nothing is left."""
    import unicodedata

    from braintumor.io import strip_nifti_suffix

    stem = strip_nifti_suffix(name)
    stem = re.sub(r"\.(png|jpe?g|tiff?|zip)$", "", stem, flags=re.IGNORECASE)
    stem = unicodedata.normalize("NFC", stem)
    # letters, marks (the vowel signs of Indic scripts) and digits of any script
    kept = "".join(ch if ch in "_.-" or unicodedata.category(ch)[0] in "LMN" else "\0"
                   for ch in stem)
    return re.sub("\0+", "_", kept).strip("._-")[:80].rstrip("._-") or "case"


def _stack_id(names: list[str]) -> str:
    """The case id of a stack of numbered slices (``TCGA_CS_4942_1.tif``, ``_2`` ...):
    their shared stem, the patient's, not the first slice's name; one picture keeps its
    own name."""
    from braintumor.slices2d import slice_stem

    stem = slice_stem(names[0]) if len(names) > 1 else None
    if stem and all(slice_stem(n) == stem for n in names):
        return case_id_from_name(stem)
    return case_id_from_name(names[0])


def _case_id_from_names(names: list[str], default: str = "case") -> str:
    """The case a BraTS name among ``names`` gives, else ``default``."""
    from braintumor.cases import _match_brats_name

    for n in names:
        hit = _match_brats_name(Path(n))
        if hit is not None:
            return case_id_from_name(hit[0])
    return default


# -- zips -------------------------------------------------------------------------------
def _listed(names: list[str], most: int = 3) -> str:
    """``a, b, c and 4 more``."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def unpack_zip(job_dir: Path, z: UploadedFile, max_unzipped: int) -> list[UploadedFile] | None:
    """Unpack an uploaded zip (:func:`braintumor.io.extract_zip_entries`) and tell what it
    holds: NIfTI files, returned as uploads named by their file names (the folders in the
    archive dropped), to be read as those files sent as they are; or DICOM files, a study,
    None, its files left in ``<job>/dicom`` for :func:`convert_dicom_zip`. A zip of
    neither, or of both, is refused in one sentence saying what it holds. Files a system
    adds to a folder it zips (``__MACOSX``, ``.DS_Store``) are passed over."""
    from braintumor.io import extract_zip_entries, is_nifti, system_entry

    dicom_dir = job_dir / "dicom"
    study = False
    try:
        entries = extract_zip_entries(z.path, dicom_dir, z.name, max_unzipped)
        z.path.unlink(missing_ok=True)
        kept = [(n, p) for n, p in entries if not system_entry(n)]
        niftis = [(n, p) for n, p in kept if is_nifti(n)]
        dicoms = [n for n, p in kept if not is_nifti(n) and is_dicom_file(p)]
        if dicoms and niftis:
            raise InputError(f"{z.name}: holds both NIfTI files ({len(niftis)}) and DICOM "
                             f"files ({len(dicoms)}); send a case's NIfTI files or a DICOM "
                             "study, each in a zip of its own.")
        if dicoms:
            study = True
            return None
        if not niftis:
            names = [safe_display_name(n) for n, _ in (kept or entries)]
            pictures = any(n.lower().endswith(IMAGE_EXT) for n in names)
            raise InputError(
                f"{z.name}: holds {len(names)} file{'s' if len(names) > 1 else ''} "
                f"({_listed(names)}), neither NIfTI images nor DICOM files; a zip must hold "
                "one case's NIfTI files (T1, T1ce, T2, FLAIR) or one DICOM study"
                + (" (2D pictures are uploaded as they are, not zipped)." if pictures
                   else "."))
        out_dir = job_dir / "unzipped"
        out_dir.mkdir(exist_ok=True)
        files = []
        for i, (n, p) in enumerate(niftis):
            name = safe_display_name(n)
            dest = out_dir / f"{i:04d}{file_kind(name)[1]}"
            p.replace(dest)
            files.append(UploadedFile("files", name, dest, dest.stat().st_size))
        return files
    finally:
        z.path.unlink(missing_ok=True)
        if not study:
            shutil.rmtree(dicom_dir, ignore_errors=True)


#: a label map's name in a case's folder: BraTS's ``_seg`` (2017-2021) or ``-seg`` (2023)
_SEG_NAME = re.compile(r"(^|[_\-. ])seg(mentation)?$", re.IGNORECASE)


def _zipped_case(archive: str, files: list[UploadedFile], choice: dict[str, str]
                 ) -> tuple[list[UploadedFile], UploadedFile | None]:
    """The NIfTI files of a zip as one case: ``(its images, its label map or None)``.
    Refused in one sentence (naming the zip) when they are files of several BraTS cases,
    hold two label maps, are too many to be one case, or name no modality."""
    from braintumor.cases import _match_brats_name
    from braintumor.io import strip_nifti_suffix

    hits = {f.name: _match_brats_name(Path(f.name)) for f in files}
    cases = sorted({h[0] for h in hits.values() if h is not None})
    if len(cases) > 1:
        raise InputError(f"{archive}: holds the NIfTI files of {len(cases)} cases "
                         f"({_listed(cases)}); send one case at a time.")
    segs = [f for f in files if (hits[f.name] or ("", "", ""))[2] == "seg"
            or _SEG_NAME.search(strip_nifti_suffix(f.name))]
    if len(segs) > 1:
        raise InputError(f"{archive}: holds {len(segs)} label maps "
                         f"({_listed([f.name for f in segs])}); a case has one.")
    images = [f for f in files if f not in segs]
    names = [f.name for f in images]
    if not 1 <= len(images) <= 4:
        raise InputError(f"{archive}: holds {len(images)} NIfTI images ({_listed(names)}); "
                         "one case is four (T1, T1ce, T2, FLAIR; the T1 or T2 may be left "
                         "out) or one 4D file.")
    if len(images) > 1:
        choice = given_for(names, choice, archive)
        unknown = [n for n in names if not (choice.get(n) or detect_modality(n))]
        if unknown:
            raise InputError(f"{archive}: the modality of {_listed(unknown)} cannot be told "
                             f"from {'its name' if len(unknown) == 1 else 'their names'}; name "
                             "each file after its modality (_t1, _t1ce, _t2, _flair), or "
                             "upload the files as they are to choose it.")
    return images, (segs[0] if segs else None)


def _prepare_4d(job_dir: Path, inputs: dict[str, Any], f: UploadedFile,
                channels: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One 4D NIfTI -> four canonical 3D files. ``channels``: its channels' modalities
    in the file's order, as stated (the ``channels`` field, ``predict --channels``);
    None: the Decathlon's order (FLAIR, T1, T1ce, T2), checked against the images, a
    doubt kept as the job's ``channel_warning`` (and among its notes, so the reports
    carry it too)."""
    from braintumor.cases import MSD_ORDER, channel_order_note_4d
    from braintumor.io import header_for, load_nifti, save_float_nifti

    _, ext = file_kind(f.name)
    raw = job_dir / "input" / f"image4d{ext}"
    f.path.replace(raw)
    vol = call_named(lambda p: load_nifti(p, ndim=(3, 4), nan_as_background=True), raw,
                     f.name)
    if vol.nan_voxels:
        inputs["notes"] = [*inputs.get("notes", []), f"{f.name}: {nan_note(vol.nan_voxels)}"]
    if vol.data.ndim == 3:
        raise InputError(f"{f.name}: is one 3D image; upload all four modalities (T1, T1ce, T2, "
                         "FLAIR) or one 4D file holding them.")
    if vol.data.shape[3] != 4:
        raise InputError(f"{f.name}: a 4D image needs 4 channels (FLAIR, T1, T1gd, T2); it has "
                         f"{vol.data.shape[3]}.")
    hdr = header_for(vol.header, vol.data.shape[:3], np.float32)
    order = channels or MSD_ORDER
    mods = {}
    for i, mod in enumerate(order):
        dest = job_dir / "input" / f"{mod}.nii.gz"
        save_float_nifti(vol.data[..., i], dest, hdr, vol.affine)
        mods[mod] = str(dest.relative_to(job_dir))
    raw.unlink()
    if channels is not None:
        inputs["channels"] = list(channels)
    else:
        # the Decathlon's order is taken, not stated: a file stacked in another says so
        note = channel_order_note_4d(vol.data, MSD_ORDER, CHANNELS_ADVICE_WEB)
        if note:
            inputs["channel_warning"] = f"{f.name}: {note}"
            inputs["notes"] = [*inputs.get("notes", []), inputs["channel_warning"]]
    # a reference beside a Decathlon 4D file is read in the Decathlon layout unless its
    # name or its values (a 4) say otherwise
    inputs["reference_default"] = "msd"
    inputs.update(source="nifti4d", modalities=mods, case_id=case_id_from_name(f.name))
    _validate_case(job_dir, inputs, {m: f"{f.name} ({MODALITY_NAMES[m]})" for m in mods})
    return inputs


# -- DICOM ------------------------------------------------------------------------------
def study_name(files: list[str]) -> str:
    """A DICOM upload as its messages name it: the zip's name, or its files as a whole."""
    return files[0] if len(files) == 1 else f"The upload ({len(files)} DICOM files)"


def convert_dicom_zip(job_dir: Path, f: UploadedFile | list[UploadedFile],
                      max_unzipped: int) -> Study:
    """Extract a DICOM zip (or take loose DICOM files), convert it series by series as the
    command line converts a study folder (:func:`braintumor.dicom.convert_study`), and
    delete the DICOM files (they carry the patient's identifiers) whatever happened.

    Each volume's NIfTI file is kept as ``<job>/series/NNN.nii.gz``; nothing else of the
    conversion (sidecars) is."""
    from braintumor.dicom import convert_study
    from braintumor.io import dcm2niix_executable

    uploads = f if isinstance(f, list) else [f]
    what = study_name([u.name for u in uploads])
    dicom_dir = job_dir / "dicom"
    if dcm2niix_executable() is None:
        for u in uploads:
            u.path.unlink(missing_ok=True)
        shutil.rmtree(dicom_dir, ignore_errors=True)
        raise FeatureUnavailable("DICOM uploads need dcm2niix, which is not installed on this "
                                 "server; upload NIfTI files instead.")
    raw = job_dir / "series_raw"
    try:
        if isinstance(f, list):
            dicom_dir.mkdir(parents=True, exist_ok=True)
            for i, u in enumerate(uploads):
                u.path.replace(dicom_dir / f"{i:05d}.dcm")
        elif not dicom_dir.is_dir():  # not yet unpacked (:func:`unpack_zip`)
            extract_zip(f.path, dicom_dir, f.name, max_unzipped)
            f.path.unlink(missing_ok=True)
        study = convert_study(dicom_dir, raw, what, apart="a zip")
        series_dir = job_dir / "series"
        series_dir.mkdir(exist_ok=True)
        for k, e in enumerate(study.entries):
            if e.path is not None:
                dest = series_dir / f"{k:03d}.nii.gz"
                e.path.replace(dest)
                e.path = dest
    finally:
        # the DICOM files carry patient identifiers: none is kept, whatever happened;
        # nor dcm2niix's sidecars (anonymised, but nothing else needs them)
        shutil.rmtree(dicom_dir, ignore_errors=True)
        shutil.rmtree(raw, ignore_errors=True)
        for u in uploads:
            u.path.unlink(missing_ok=True)
    return study


def confirm_series(job_dir: Path, inputs: dict[str, Any], choice: dict[str, str],
                   given: bool = True) -> dict[str, Any]:
    """Assign DICOM series to modalities ({series id: modality}; ``given``: by the user,
    else as the series read) with the command line's checks and notes
    (:func:`braintumor.dicom.settle_assignment`); series on other grids than the case's
    (the T1's, or a finer series' beside thick T1 slices) are resampled onto it (linear,
    by their scanner coordinates)."""
    entries = [StudySeries.from_dict(s, job_dir) for s in inputs.get("series", [])]
    series = {e.label: e for e in entries}
    _known_series(choice, list(series))
    if len(set(choice.values())) != len(choice):
        raise InputError("Two series were given the same modality; give each modality once.")
    chosen, lost = settle_assignment(entries, choice, study_name(inputs.get("files", [])),
                                     given)
    missing = [MODALITY_NAMES[m] for m in MODALITIES
               if m not in chosen and m not in OPTIONAL_MODALITIES]
    if missing:
        raise InputError(f"No series was chosen for {', '.join(missing)}; T1ce and FLAIR are "
                         "needed (without T1 or T2 the watershed segments the case alone).")
    if given:  # as on the command line: the user's choice stands, its doubt is said
        lost += doubted_choice(entries, chosen)
    paths, coarse, _ = place_series(entries, chosen, job_dir / "input")
    inputs = dict(inputs)
    inputs.pop("needs_confirmation", None)
    inputs.update(modalities={m: str(p.relative_to(job_dir)) for m, p in paths.items()},
                  series_modalities={label: m for m, label in chosen.items()},
                  notes=[*inputs.get("notes", []), *lost, *coarse])
    display = {m: series[chosen[m]].named() for m in paths}
    _validate_case(job_dir, inputs, display)
    return inputs


def _known_series(choice: dict[str, str], labels: list[str]) -> None:
    """Refuse, in one sentence, a choice of a series not among ``labels``."""
    for sid in choice:
        if sid not in labels:
            raise InputError(f"Series {sid!r} is not part of this upload (it has "
                             f"{', '.join(labels) or 'none'}).")


def on_case_grid(job_dir: Path, modalities: dict[str, str], mod: str, grid: str | None = None,
                 reference: str | None = None) -> Path:
    """The file the viewer shows for ``mod``: the uploaded one when it lies on the case's
    grid, else a copy on that grid as the segmentation read it (turned exactly, else
    resampled; made once, kept in the job's ``view/`` folder), so the label map fits
    every image. The case's grid is ``grid``'s (the job's ``inputs['grid']``, as its case
    was read), else the one :func:`braintumor.cases.load_case` picks from the files'
    headers and the ``reference`` label map's (:func:`braintumor.cases.grid_of_files`):
    the T1's (the first present modality's), or a finer one's beside thick T1 slices."""
    import nibabel as nib

    from braintumor.cases import grid_of_files
    from braintumor.io import file_onto_grid, save_float_nifti

    path = job_dir / modalities[mod]
    ref_mod = grid if grid in modalities else grid_of_files(
        {m: job_dir / p for m, p in modalities.items()},
        job_dir / reference if reference else None)
    if mod == ref_mod:
        return path
    view = job_dir / "view" / f"{mod}.nii.gz"
    if view.exists():
        return view
    ref: Any = nib.load(str(job_dir / modalities[ref_mod]))
    # turned exactly when it is the grid in another orientation, as load_case turns it
    data = file_onto_grid(path, ref.shape[:3], ref.affine)
    if data is None:
        return path
    # written whole (io.write_replacing): a request that finds it reads a complete file
    save_float_nifti(data, view, ref.header, ref.affine)
    return view
