"""The only place that reads and writes NIfTI, DICOM and 2D images.

Every reader turns a fault into one :class:`~braintumor.errors.InputError` sentence that
names the file and the fault (missing, unreadable or truncated, wrong number of
dimensions, NaN/Inf voxels).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import gzip
import io as stdio
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from braintumor.errors import InputError, UnreadableFile

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_hidden(path: str | Path) -> bool:
    """A file or folder named with a leading dot: a system's own (macOS's ``._`` copies of
    every file on a foreign disk, ``.DS_Store``), never a scan."""
    return Path(path).name.startswith(".")


def is_nifti(path: str | Path) -> bool:
    """True when the name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_image_2d(path: str | Path) -> bool:
    """True when the name ends in a 2D picture suffix (PNG/JPEG/TIFF/BMP)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


#: suffixes of a single DICOM picture (one 2D slice; series go through dcm2niix)
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_picture(path: str | Path) -> bool:
    """True when the name ends in ``.dcm`` or ``.dicom``."""
    return str(path).lower().endswith(DICOM_SUFFIXES)


#: the SOP class of a DICOMDIR (Media Storage Directory Storage)
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _is_dicomdir(path: Path, ds: Any) -> bool:
    meta = getattr(ds, "file_meta", None)
    return (str(getattr(meta, "MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS
            or "DirectoryRecordSequence" in ds
            or (path.name.upper() == "DICOMDIR" and "PixelData" not in ds))


def read_dicom_2d(path: str | Path) -> tuple[np.ndarray, float | None]:
    """One DICOM slice -> ``(H, W, 1)`` (or ``(H, W, 3)`` for colour) uint8 and its pixel
    size in mm (the square root of the PixelSpacing product, so areas come out exact;
    None when the file does not say).

    Grey values are rescaled (slope, intercept; MONOCHROME1 inverted) and mapped to 0-255
    between the minimum and the 99.9th percentile, so one hot pixel does not darken the
    picture. A multi-frame file is refused: a volume belongs in the 3D path.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found.")
    try:
        import pydicom
    except ImportError:
        raise InputError(f"{p}: reading a DICOM picture needs pydicom "
                         "(pip install 'braintumor[web]').") from None
    try:
        ds = pydicom.dcmread(p)
        if _is_dicomdir(p, ds):  # a disc's index names the images, it holds none
            folder = p.resolve().parent
            raise InputError(f"{p}: is a DICOMDIR, the index of a DICOM disc or folder, "
                             f"not an image: give its folder ({folder}) instead.")
        arr = np.asarray(ds.pixel_array)
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many kinds for a broken file
        raise InputError(f"{p}: not a readable DICOM image ({_short(exc)}).") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    colour = int(getattr(ds, "SamplesPerPixel", 1) or 1) == 3
    if frames > 1 or arr.ndim != (3 if colour else 2):
        raise InputError(f"{p}: holds {frames} frames; a DICOM picture must be one 2D slice "
                         "(a series goes in as a zip or folder for the 3D path).")
    if colour:
        out = to_uint8(arr)
    else:
        a = arr.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + \
            float(getattr(ds, "RescaleIntercept", 0) or 0)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            a = a.max() - a
        out = to_uint8(a)[..., None]
    pixel_mm = None
    try:
        dy, dx = (float(v) for v in ds.PixelSpacing)
        if dy > 0 and dx > 0:
            pixel_mm = float(np.sqrt(dy * dx))
    except (AttributeError, TypeError, ValueError):
        pass
    return out, pixel_mm


def dicom_instance_number(path: str | Path) -> int | None:
    """The InstanceNumber of a DICOM file (its place in the series), or None when the
    file has none or cannot be read."""
    try:
        import pydicom

        ds = pydicom.dcmread(Path(path), stop_before_pixels=True)
        return int(ds.InstanceNumber)
    except Exception:  # noqa: BLE001 - any unreadable header simply has no number
        return None


def strip_nifti_suffix(name: str) -> str:
    """``case_t1.nii.gz`` -> ``case_t1``."""
    low = name.lower()
    for suf in (".nii.gz", ".nii"):
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


@dataclass(frozen=True)
class Volume:
    """A NIfTI image read from disk.

    ``data`` keeps the file's own dimensions; ``affine`` maps voxel indices to mm
    (RAS+); ``header`` is the file's header (kept so outputs share its geometry);
    ``nan_voxels``: how many NaN voxels were read as 0 (``load_nifti``'s
    ``nan_as_background``).
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    nan_voxels: int = 0

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the first three axes (:func:`voxel_sizes` of the affine)."""
        return voxel_sizes(self.affine, self.header.get_zooms()[:3])


def voxel_sizes(affine: np.ndarray, zooms: Sequence[float] | None = None
                ) -> tuple[float, float, float]:
    """Voxel size in mm along the first three axes: the lengths of the affine's first three
    columns.

    The affine (nibabel's ``img.affine``: the sform, else the qform, else the header's
    voxel sizes) is what places the voxels, so it gives their size too; the header's own
    voxel sizes (pixdim, ``header.get_zooms()``) may disagree with an sform a tool wrote
    without them (1 x 1 x 1 mm there, 3 mm slices in the sform). Only an axis the affine
    gives no length (a singular or broken affine) takes its size from ``zooms``, when
    given and positive."""
    cols = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    out = [float(c) for c in cols]
    for i, c in enumerate(out):
        if not (np.isfinite(c) and c > 1e-6) and zooms is not None and len(zooms) > i:
            z = abs(float(zooms[i]))
            out[i] = z if np.isfinite(z) and z > 0 else c
    return (out[0], out[1], out[2])


def resample_onto(vol: Volume, shape: tuple[int, ...], affine: np.ndarray,
                  inside: np.ndarray | None = None, min_cover: float = 0.0) -> np.ndarray:
    """``vol``'s data on the grid ``(shape, affine)``, by scanner coordinates (images of
    one session line up through their affines; linear interpolation, 0 outside).

    ``inside``: a boolean mask on that grid (the reference's brain); when fewer than
    ``min_cover`` of its voxels fall within ``vol``'s field of view, raise
    :class:`InputError`: the images do not share one scanner space.
    """
    from scipy import ndimage

    mat = np.linalg.inv(np.asarray(vol.affine, float)) @ np.asarray(affine, float)
    if inside is not None and min_cover > 0:
        pts = np.argwhere(inside)[:: max(1, int(inside.sum()) // 20000)]
        if len(pts):
            ijk = pts @ mat[:3, :3].T + mat[:3, 3]
            within = np.all((ijk > -0.5) & (ijk < np.array(vol.data.shape[:3]) - 0.5), axis=1)
            if within.mean() < min_cover:
                raise InputError(
                    f"{vol.path}: lies on another grid and, by its scanner coordinates, "
                    f"covers only {100 * within.mean():.0f} % of the brain of the image it "
                    "should match; co-register the modalities first.")
    out = ndimage.affine_transform(vol.data.astype(np.float32), mat[:3, :3], offset=mat[:3, 3],
                                   output_shape=tuple(shape[:3]), order=1, mode="constant",
                                   cval=0.0)
    return np.asarray(out, dtype=np.float32)


#: mm two affines may differ and still place the same voxels: above what float32 storage
#: or another tool's writer moves them, a hundredth of a 1 mm voxel, less than any
#: resampling would change
GRID_TOLERANCE_MM = 0.01


def on_grid(shape: Sequence[int], affine: np.ndarray, grid_shape: Sequence[int],
            grid_affine: np.ndarray) -> bool:
    """Whether an image of ``shape`` and ``affine`` lies on the grid ``grid_shape``,
    ``grid_affine`` as it is stored: the same shape and :func:`same_placement`."""
    return tuple(shape) == tuple(grid_shape) and same_placement(affine, grid_affine,
                                                                grid_shape)


def same_placement(affine: np.ndarray, grid_affine: np.ndarray,
                   grid_shape: Sequence[int]) -> bool:
    """Whether the two affines place every voxel centre of a ``grid_shape`` grid within
    :data:`GRID_TOLERANCE_MM` of each other. The gap is measured at the grid's corners,
    which bound it (it is affine in the voxel index): a tolerance on each affine entry
    would let a voxel size or a rotation off by a little add up to millimetres across a
    240-voxel grid."""
    a, b = np.asarray(affine, float), np.asarray(grid_affine, float)
    if a.shape != (4, 4) or b.shape != (4, 4):
        return False
    n = [max(int(x) - 1, 0) for x in tuple(grid_shape)[:3]]
    n += [0] * (3 - len(n))
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1])
                        for k in (0, n[2])]).T
    gap = (a - b)[:3] @ corners
    return bool(np.all(np.isfinite(gap))
                and np.linalg.norm(gap, axis=0).max() <= GRID_TOLERANCE_MM)


class NotOnGrid(ValueError):
    """No reordering or reversal of an array's axes puts it on a grid
    (:func:`turned_onto`). ``shape_differs``: its shape is not the grid's, neither as
    stored nor turned as its affine says; else its affine is the fault (shifted, rotated,
    resampled or degenerate)."""

    def __init__(self, shape_differs: bool) -> None:
        super().__init__("another shape" if shape_differs else "another affine")
        self.shape_differs = shape_differs


def turned_onto(data: np.ndarray, affine: np.ndarray, grid_shape: Sequence[int],
                grid_affine: np.ndarray) -> np.ndarray:
    """``data`` (placed by ``affine``) on the grid ``grid_shape``, ``grid_affine``, exactly:
    its first three axes reordered and reversed when it is that grid stored in another
    orientation (RAS beside LPS, a sagittal series), as it is when already there
    (:func:`on_grid`); trailing axes are kept and counted in the shape. No
    interpolation, so anything else (another shape, a shifted or oblique grid, a
    degenerate affine) raises :class:`NotOnGrid`. ``data`` may be a nibabel array proxy:
    it is read only when it fits."""
    from nibabel import orientations as O

    affine = np.asarray(affine, float)
    shape = tuple(int(n) for n in data.shape)
    src, dst = O.io_orientation(affine), O.io_orientation(np.asarray(grid_affine, float))
    if len(shape) < 3 or np.isnan(src).any() or np.isnan(dst).any():  # an axis unplaced
        raise NotOnGrid(shape != tuple(grid_shape))
    turn = O.ornt_transform(src, dst)
    turned = tuple(shape[int(a)] for a in np.argsort(turn[:, 0])) + shape[3:]
    if not on_grid(turned, affine @ O.inv_ornt_aff(turn, shape), grid_shape, grid_affine):
        raise NotOnGrid(tuple(grid_shape) not in (shape, turned))
    if np.array_equal(turn, [[0, 1], [1, 1], [2, 1]]):
        return np.asarray(data)
    return np.ascontiguousarray(O.apply_orientation(np.asarray(data), turn))



def label_onto_grid(data: np.ndarray, affine: np.ndarray, grid_shape: Sequence[int],
                    grid_affine: np.ndarray) -> np.ndarray:
    """A label map's voxels (placed by ``affine``) on the grid ``grid_shape``,
    ``grid_affine``, exactly: as they are when the file has the grid's shape and no
    geometry of its own (an identity affine, as a map saved from an array often has),
    else :func:`turned_onto` (as they are on the grid, turned when it is that grid stored
    in another orientation). Anything else raises :class:`NotOnGrid`, whose
    ``shape_differs`` tells each caller's sentence: a label map shifted or resampled
    would outline, or be scored against, the wrong voxels."""
    if tuple(data.shape) == tuple(grid_shape) and np.allclose(affine, np.eye(4)):
        return data
    return turned_onto(data, affine, grid_shape, grid_affine)

#: the most voxels one volume of a NIfTI file may hold (512 x 512 x 1024, twice the
#: largest clinical volume; 1 GiB as float32): a file claiming more (a few kB of gzip can
#: claim terabytes) is refused before anything is decompressed
MAX_VOLUME_VOXELS = 512 * 512 * 1024
#: the most voxels a whole file may hold: a 4D file carries a case's four modalities, so
#: twice one volume's limit (four 0.5 mm volumes of 480 x 480 x 310 pass)
MAX_FILE_VOXELS = 2 * MAX_VOLUME_VOXELS
#: the most bytes a NIfTI file's voxels may take as stored (that many float32 voxels)
MAX_VOLUME_BYTES = MAX_FILE_VOXELS * 4
#: room for the header and its extensions on top of the voxels, and for what some writers
#: leave after them, when a compressed file is decompressed
_NIFTI_SLACK_BYTES = 16 << 20


class VolumeTooLarge(InputError):
    """A NIfTI file whose header claims more voxels than are ever read (the web page
    answers 413)."""


def _header_from_bytes(head: bytes) -> Any:
    """The NIfTI-1 or NIfTI-2 header at the start of ``head`` (a file's first bytes), or
    None when they are no such header (nibabel's reading then says why)."""
    try:
        if len(head) >= 540 and int.from_bytes(head[:4], "little") in (540, 540 << 24) \
                and head[4:8] in (b"n+2\0", b"ni2\0"):
            return nib.Nifti2Header(head[:540], check=False)
        if len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
            return nib.Nifti1Header(head[:348], check=False)
    except Exception:  # noqa: BLE001 - a malformed header: nibabel's reading says so
        return None
    return None


def check_volume_size(header: Any, path: Path) -> int:
    """Refuse (:class:`VolumeTooLarge`) a header that claims more than
    :data:`MAX_VOLUME_VOXELS` voxels in one volume (its first three axes), more than
    :data:`MAX_FILE_VOXELS` in all, or more than :data:`MAX_VOLUME_BYTES` bytes of them;
    returns the bytes its voxels take as stored."""
    try:
        shape = tuple(int(s) for s in header.get_data_shape())
        itemsize = int(np.dtype(header.get_data_dtype()).itemsize)
    except Exception as exc:  # noqa: BLE001 - a header nibabel cannot make sense of
        raise UnreadableFile(f"{path}: not a readable NIfTI file ({_short(exc)}).") from None
    voxels = spatial = 1
    for i, s in enumerate(shape):
        voxels *= max(s, 0)
        if i < 3:
            spatial *= max(s, 0)
    nbytes = voxels * itemsize
    if spatial > MAX_VOLUME_VOXELS or voxels > MAX_FILE_VOXELS or nbytes > MAX_VOLUME_BYTES:
        dims = " x ".join(str(s) for s in shape)
        raise VolumeTooLarge(
            f"{path}: its header claims {dims} voxels ({human_size(nbytes)}), more than a "
            f"scan may have here (at most {MAX_VOLUME_VOXELS / 1e6:.0f} million voxels in "
            f"one volume and {MAX_FILE_VOXELS / 1e6:.0f} million in a file).")
    return nbytes


def _gunzip_nifti(path: Path) -> stdio.BytesIO:
    """A gzipped NIfTI file decompressed whole (so a corrupt middle or a bad CRC at the
    end is noticed), its header's size checked first and the decompression stopped once
    it passes what that header claims by more than a little."""
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(540)
            hdr = _header_from_bytes(head)
            need = MAX_VOLUME_BYTES if hdr is None else check_volume_size(hdr, path)
            cap = need + _NIFTI_SLACK_BYTES
            # one growing buffer, read by nibabel in place: blocks joined at the end
            # held the file twice
            out = stdio.BytesIO()
            out.write(head)
            while True:
                block = fh.read(1 << 18)  # a read allocates its whole size first
                if not block:
                    break
                if out.tell() + len(block) > cap:
                    raise VolumeTooLarge(
                        f"{path}: decompresses to more than {human_size(cap)}, far more "
                        "than its header's voxels take.")
                out.write(block)
    except (EOFError, OSError, zlib.error) as exc:
        raise UnreadableFile(f"{path}: the file is truncated or corrupt ({_short(exc)}).") \
            from None
    out.seek(0)
    return out


class _HoldThread(logging.Filter):
    """Holds back the records of the thread that made it; other threads' pass."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        self.held.append(record)
        return False


@contextlib.contextmanager
def quiet_nibabel(say: bool = True) -> Iterator[None]:
    """nibabel's own lines about a header it checks ("sizeof_hdr should be 348", "data
    code ... not recognized") kept off stderr while a file is read, where the read fails:
    a file that is no NIfTI is said in the reader's one sentence, not after two lines of
    nibabel's. Where the block ends without an error (a readable NIfTI), the lines are
    said after all (unless not ``say``: a look at a header that the reading proper says
    again): "qform_code 7 not valid; setting to 0" is why a file's qform is not
    used. Only this thread's lines are held, by a filter of this call's own (not the
    logger's level): another thread's reads are said as they happen, and two threads
    reading at once never leave the logger silenced."""
    log, hold = logging.getLogger("nibabel.global"), _HoldThread()
    log.addFilter(hold)
    read = False
    try:
        yield
        read = True
    finally:
        log.removeFilter(hold)
        if read and say:
            for record in hold.held:
                log.handle(record)


def peek_nifti(path: str | Path) -> Any:
    """A NIfTI file opened by nibabel for a look at its header (shape, affine, voxel
    type; the voxels stay on disk), with nibabel's lines about the header kept off
    stderr whether or not it reads: a file that is no NIfTI is said once, in the one
    sentence of the reading proper (:func:`load_nifti`, :func:`load_label_nifti`), and a
    readable one's lines are said once, by that reading, not by every look before it.
    Raises what nibabel raises (callers that only look take a failure as "cannot tell")."""
    with quiet_nibabel(say=False):
        return nib.load(str(path))


def _open_nifti(path: Path) -> nib.Nifti1Image:
    """Every NIfTI the package reads is opened here, under :func:`quiet_nibabel`: a file
    whose header is no NIfTI's is said in the reader's one sentence, not after nibabel's
    lines about it; a readable one's lines are said."""
    with quiet_nibabel():
        return _open_nifti_quietly(path)


def _open_nifti_quietly(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise InputError(f"{path}: file not found.")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a NIfTI file.")
    with open(path, "rb") as fh:
        head = fh.read(540)
    gzipped = head[:2] == b"\x1f\x8b"  # what the file is, whatever its name says
    if gzipped:
        # Decompress the whole stream ourselves: nibabel stops reading once it has the
        # voxels, so a corrupt middle or a bad CRC at the end would pass unnoticed.
        raw = _gunzip_nifti(path)
        try:
            return _nifti_from_bytes(raw)
        except Exception as exc:
            raise UnreadableFile(f"{path}: not a readable NIfTI file ({_short(exc)}).") from None
    hdr = _header_from_bytes(head)
    if hdr is not None:
        check_volume_size(hdr, path)
    if not path.name.endswith(".nii"):  # .Nii, .NII, or a .nii.gz that is not compressed
        try:
            return _nifti_from_bytes(path.read_bytes())
        except Exception as exc:
            raise UnreadableFile(f"{path}: not a readable NIfTI file ({_short(exc)}).") from None
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        raise UnreadableFile(f"{path}: not a readable NIfTI file ({_short(exc)}).") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UnreadableFile(f"{path}: not a NIfTI image.")
    return img  # type: ignore[return-value]


def _nifti_from_bytes(raw: bytes | stdio.BytesIO) -> nib.Nifti1Image:
    """Parse a whole (uncompressed) NIfTI-1 or NIfTI-2 file held in memory (bytes, or a
    buffer read in place)."""
    stream = raw if isinstance(raw, stdio.BytesIO) else stdio.BytesIO(raw)
    first = stream.getbuffer()[:4].tobytes()
    cls: Any = nib.Nifti2Image if len(first) == 4 and \
        int.from_bytes(first, "little") in (540, 540 << 24) else nib.Nifti1Image
    holder = nib.FileHolder(fileobj=stream)
    return cls.from_file_map({"header": holder, "image": holder})  # type: ignore[no-any-return]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160].rstrip(".")


def file_onto_grid(path: str | Path, grid_shape: Sequence[int],
                   grid_affine: np.ndarray) -> np.ndarray | None:
    """A 3D image file's voxels on the grid ``grid_shape``, ``grid_affine`` as float32:
    None when the file already lies on it, else turned onto it exactly when it is that
    grid stored in another orientation (:func:`turned_onto`; its voxels read only then),
    else resampled (:func:`resample_onto`, linear)."""
    with quiet_nibabel():  # its voxels are read here: a readable header's lines are said
        img: Any = nib.load(str(path))
    shape = tuple(int(n) for n in grid_shape)[:3]
    if on_grid(img.shape[:3], img.affine, shape, grid_affine):
        return None
    try:
        return np.asarray(turned_onto(img.dataobj, img.affine, shape, grid_affine),
                          dtype=np.float32)
    except NotOnGrid:
        return resample_onto(load_nifti(path, ndim=3), shape, grid_affine)


def load_nifti(
    path: str | Path,
    ndim: int | tuple[int, ...] = 3,
    dtype: type = np.float32,
    check_finite: bool = True,
    nan_as_background: bool = False,
) -> Volume:
    """Read a NIfTI file with every check a user's file deserves.

    ``ndim`` is the number of dimensions expected (3 for one modality, 4 for an MSD
    4-channel file); singleton trailing dimensions are squeezed first. A NaN or infinite
    voxel is refused (``check_finite``), except that with ``nan_as_background`` NaN voxels
    are read as 0 and counted (:attr:`Volume.nan_voxels`): tools that mask the brain
    (SPM among them) write NaN outside it. An infinity is refused either way.
    """
    p = Path(path)
    return _volume_from_image(_open_nifti(p), p, ndim, dtype, check_finite, nan_as_background)


def _volume_from_image(img: nib.Nifti1Image, p: Path, ndim: int | tuple[int, ...],
                       dtype: type | np.dtype, check_finite: bool,
                       nan_as_background: bool = False) -> Volume:
    want = (ndim,) if isinstance(ndim, int) else ndim
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > max(want) and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in want:
        exp = " or ".join(f"{d}D" for d in want)
        raise InputError(f"{p}: is a {len(shape)}D image of shape {shape}; expected {exp}.")
    try:
        data: np.ndarray = np.asarray(img.dataobj, dtype=dtype).reshape(shape)
    except (EOFError, OSError, zlib.error, ValueError, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"{p}: the file is truncated or corrupt ({_short(exc)}).") from None
    nans = 0
    if check_finite and np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        nan = np.isnan(data)
        nans = int(np.count_nonzero(nan))
        if not nan_as_background or nans < n:
            raise InputError(f"{p}: contains {n} NaN or infinite voxels.")
        if not data.flags.writeable:  # a read-only map of the file
            data = data.copy()
        data[nan] = 0
    affine = img.affine.copy() if has_orientation(img.header) else assumed_affine(img.header)
    return Volume(path=p, data=data, affine=affine, header=img.header.copy(), nan_voxels=nans)


def has_orientation(header: Any) -> bool:
    """Whether a NIfTI header says where its voxels lie (a qform or sform code over 0, and
    an affine that gives every axis a length). A file written from a bare array
    (``nib.Nifti1Image(array, None)``) or stripped of its geometry says nothing but its
    voxel sizes."""
    if not isinstance(header, nib.Nifti1Header):
        return True  # another format: its reader's affine is all there is
    if not (int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0):
        return False
    # an affine that gives an axis no length (a column of zeros) places nothing either
    det = float(np.linalg.det(np.asarray(header.get_best_affine(), float)[:3, :3]))
    return bool(np.isfinite(det) and abs(det) > 1e-9)


def assumed_affine(header: Any) -> np.ndarray:
    """The voxel-to-mm map taken for a header without orientation: BraTS's voxel axes
    (towards the patient's left, back and head: ``LPS``) at the header's voxel sizes,
    so such a file is segmented as stored, as BraTS's arrays are. nibabel's own fallback
    (the Analyze convention, ``LAS``) would turn the front-back axis and segment a
    BraTS array written without its header upside down in the front-back direction."""
    zooms = [float(z) if np.isfinite(z) and z > 0 else 1.0 for z in header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    return np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])


#: how far a label map's value may lie from a whole number and still be read as it: the
#: float noise of another tool's resampling or arithmetic (0.999999 for 1)
LABEL_TOLERANCE = 1e-3
#: the most that half a scale factor's step widens :data:`LABEL_TOLERANCE` (a value this
#: far from every whole number is no label, however coarse the file's scaling)
LABEL_STEP_TOLERANCE = 0.25


def load_label_nifti(path: str | Path) -> Volume:
    """Read a 3D label map; values must be whole numbers 0-255 (returned as uint8 array).

    Integers stored with a scale factor (``scl_slope`` / ``scl_inter``, as nibabel saves a
    float array as uint8) are read through it, as any NIfTI reader does. A value within
    :data:`LABEL_TOLERANCE` of a whole number is that number (0.999999 from a float label
    map resampled by another tool is 1); so is one within half a step of a scaled file's
    integers (the nearest such a file can store: 1.0039 for 1 with nibabel's slope of
    1/63.75), up to :data:`LABEL_STEP_TOLERANCE`. Any other value is refused in one
    sentence that names the file and quotes it.
    """
    p = Path(path)
    img = _open_nifti(p)
    stored = img.get_data_dtype()
    # nibabel moves the header's scl_slope / scl_inter onto the data proxy when it reads a
    # file (the header then says none): the proxy's are the file's scaling
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    scaled = not (slope == 1.0 and inter == 0.0)
    if np.issubdtype(stored, np.integer) and not scaled:
        # the usual case: integer voxels, no scaling; checks need no float copy
        vol = _volume_from_image(img, p, 3, stored, check_finite=False)
        data = vol.data
        if data.size and (int(data.min()) < 0 or int(data.max()) > 255):
            bad = int(data.min()) if int(data.min()) < 0 else int(data.max())
            raise InputError(f"{vol.path}: is not a label map (it holds the value {bad}; "
                             "labels are whole numbers 0-255).")
        return Volume(path=vol.path, data=data.astype(np.uint8, copy=False), affine=vol.affine,
                      header=vol.header)
    vol = _volume_from_image(img, p, 3, np.float64, check_finite=True)
    data = vol.data
    tol = LABEL_TOLERANCE
    if np.issubdtype(stored, np.integer):  # a whole number stored as near as the step allows
        tol = max(tol, min(0.5 * abs(slope) + 1e-6, LABEL_STEP_TOLERANCE))
    whole = np.rint(data)
    bad = (np.abs(data - whole) > tol) | (whole < 0) | (whole > 255)
    if bad.any():
        value = float(data[np.unravel_index(int(np.argmax(bad)), data.shape)])
        how = (f", its stored values scaled by scl_slope {slope:g} and scl_inter {inter:g}"
               if scaled else "")
        raise InputError(f"{vol.path}: is not a label map (it holds the value {value:.6g}"
                         f"{how}; labels are whole numbers 0-255).")
    return Volume(path=vol.path, data=whole.astype(np.uint8), affine=vol.affine,
                  header=vol.header)


def check_written_file(out: str | Path, source: str | Path, over_source: str,
                       folder: str) -> None:
    """Refuse, before any work, a file to be written at ``out`` that is the ``source`` it
    is made from (its own path, another spelling of it or a link to it: the write would
    destroy it), raising ``InputError(over_source)``, or that is a folder, raising
    ``InputError(folder)``: each caller's own sentence."""
    out, src = Path(out), Path(source)
    if src.exists() and out.exists() and os.path.samefile(src, out):
        raise InputError(over_source)
    if out.is_dir():
        raise InputError(folder)


def write_target(out: str | Path) -> Path:
    """The file a write to ``out`` lands in, its folder made: ``out`` itself, or where a
    link at ``out`` points (``current.onnx -> v3/member0.onnx`` is written through, as
    any program writing the file would, and stays a link)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(out))
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def partial_beside(target: str | Path) -> Path:
    """A hidden name beside ``target`` (on its file system, so that renaming it into
    place is atomic) for a file written before it is put there. It keeps ``target``'s
    suffix (``.nii.gz`` whole), so writers that go by it still do, and is this call's
    own: the process, the thread and a random part, so two threads (a server's) or two
    processes writing one file never write one temporary."""
    import secrets

    target = Path(target)
    stem, suffix = _stem_suffix(target.name)
    own = f"{os.getpid()}-{threading.get_native_id()}-{secrets.token_hex(3)}"
    return target.with_name(f".{stem}.{own}.part{suffix}")


def _stem_suffix(name: str) -> tuple[str, str]:
    """``name`` cut before its suffix, ``.nii.gz`` whole: ``("t1", ".nii.gz")``."""
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix
    return (name[: len(name) - len(suffix)] if suffix else name), suffix


def partial_pattern(names: Sequence[str]) -> re.Pattern[str]:
    """The names :func:`partial_beside` gives the temporary files of targets named
    ``names`` (``.<stem>.<pid>-<thread>-<hex>.part<suffix>``), to be matched whole
    (``fullmatch``): what a write cut short by a hard kill leaves behind."""
    alternatives = []
    for name in names:
        stem, suffix = _stem_suffix(name)
        alternatives.append(
            rf"\.{re.escape(stem)}\.\d+-\d+-[0-9a-f]+\.part{re.escape(suffix)}")
    return re.compile("|".join(alternatives))


def keep_mode(target: Path, partial: Path) -> None:
    """Give ``partial`` the permission bits of the file at ``target`` it is to replace (a
    file kept private, 600, stays so); with none there, ``partial`` keeps its own (the
    umask's default, as any new file)."""
    if target.exists():
        shutil.copymode(target, partial)


def put_in_place(partial: Path, target: Path) -> None:
    """Rename ``partial`` (:func:`partial_beside`) onto ``target`` (:func:`write_target`),
    keeping the permission bits of a file it replaces (:func:`keep_mode`). A failure names
    ``target`` (:func:`naming`), not the hidden temporary."""
    with naming(target, partial):
        keep_mode(target, partial)
        os.replace(partial, target)


@contextlib.contextmanager
def naming(target: Path, partial: Path) -> Iterator[None]:
    """A file-system error inside the block that names no file, or ``partial`` (the
    hidden temporary a user never asked for), is raised again naming ``target``: its
    sentence (:func:`braintumor.errors.describe_failure`) says which file could not be
    written, ``"out/case_report.html: no space left on device."``."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or exc.filename not in (None, str(partial), partial):
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target)) \
            from exc


#: the files written, not yet put in place, of the :func:`written_together` block this
#: context is in (``(partial, target)`` in the order written); None outside one
_TOGETHER: contextvars.ContextVar[list[tuple[Path, Path]] | None] = \
    contextvars.ContextVar("written_together", default=None)


def write_replacing(out: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write`` on a temporary file beside where ``out`` lands (:func:`write_target`:
    through a link at ``out``) and put that in place (:func:`put_in_place`: a replaced
    file's permission bits kept): a write cut short (a full disk) leaves no partial or
    empty file under ``out``'s name, which a cache would serve as it is. The temporary
    file (:func:`partial_beside`) is removed when ``write`` fails. Inside a
    :func:`written_together` block the file is put in place when the block ends, with
    the block's others (a file written twice there, its last version). Returns ``out``."""
    out = Path(out)
    target = write_target(out)
    partial = partial_beside(target)
    together = _TOGETHER.get()
    try:
        with naming(target, partial):
            write(partial)
        if together is None:
            put_in_place(partial, target)
    except BaseException:
        # a temporary that could not be made (a name too long with its own part) is
        # not there to remove: the error raised is the write's, naming ``out``
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
    if together is None:
        partial.unlink(missing_ok=True)
        return out
    for earlier in [e for e in together if e[1] == target]:
        earlier[0].unlink(missing_ok=True)
        together.remove(earlier)
    together.append((partial, target))
    return out


@contextlib.contextmanager
def written_together(last: Sequence[str | Path] = ()) -> Iterator[None]:
    """Every file written through :func:`write_replacing` inside the block goes in
    together: each is written beside its place, and only when the block ends without an
    error are they all renamed in (those named in ``last`` after the others: the file a
    later run goes by, as a case's label map, lands only when the rest are there). A
    failure anywhere in the block (a full disk at its third file) removes what it wrote
    and leaves every earlier file as it was. Read a file written in the block through
    :func:`pending`. A block inside another is part of the outer one."""
    if _TOGETHER.get() is not None:
        yield
        return
    together: list[tuple[Path, Path]] = []
    token = _TOGETHER.set(together)
    try:
        yield
    except BaseException:
        for partial, _ in together:
            partial.unlink(missing_ok=True)
        raise
    finally:
        _TOGETHER.reset(token)
    ends = {write_target(p) for p in last}
    order = [e for e in together if e[1] not in ends] + [e for e in together if e[1] in ends]
    try:
        # a folder where a file goes would stop the renames half-way, the block's first
        # files in and its last not: said before any file goes in
        for _, target in order:
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a folder, where a file goes",
                                        str(target))
        for partial, target in order:
            put_in_place(partial, target)
    finally:
        for partial, _ in together:
            partial.unlink(missing_ok=True)


def pending(path: str | Path) -> Path:
    """Where the content of ``path`` is now: the file written for it in the
    :func:`written_together` block this runs in, not yet in place, else ``path``."""
    together = _TOGETHER.get()
    if together:
        target = Path(os.path.realpath(path))
        for partial, t in reversed(together):
            if t == target:
                return partial
    return Path(path)


def save_label_nifti(
    labels: np.ndarray,
    out_path: str | Path,
    reference: nib.Nifti1Header | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a label map ``(X, Y, Z)`` as uint8 NIfTI with the reference's geometry.

    The reference header's qform/sform (codes included), zooms and units are kept, so
    the output overlays the input exactly in any viewer, in the reference's format
    (NIfTI-1 or NIfTI-2); its intent (a vector image's) is not: a label map has none.
    """
    out = Path(out_path)
    img = label_nifti_image(labels, reference, affine, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_whole(img, out)
    return out


def label_nifti_image(labels: np.ndarray, reference: nib.Nifti1Header | None = None,
                      affine: np.ndarray | None = None, out: str | Path = "labels") -> Any:
    """The image :func:`save_label_nifti` writes (``out``: the name a refusal names)."""
    raw = np.asarray(labels)
    if raw.size and raw.dtype != np.uint8:
        lo, hi = float(np.min(raw)), float(np.max(raw))
        whole = np.issubdtype(raw.dtype, np.integer) or bool(np.all(np.mod(raw, 1) == 0))
        if not (0 <= lo and hi <= 255 and whole):  # NaN fails too
            raise InputError(f"{out}: a label map holds whole numbers 0-255; these labels "
                             f"run from {lo:g} to {hi:g}{'' if whole else ', with fractions'}.")
    lab = raw.astype(np.uint8)
    if reference is not None:
        hdr = header_for(reference, lab.shape, np.uint8)
        img = image_class(hdr)(lab, None, header=hdr)
        sform, scode = reference.get_sform(coded=True)
        qform, qcode = reference.get_qform(coded=True)
        if sform is not None:
            img.set_sform(sform, int(scode))
        if qform is not None:
            img.set_qform(qform, int(qcode))
        # a reference without orientation (qform and sform codes 0) is answered in kind:
        # the label map overlays its scan in any viewer only with the same header
    else:
        aff = np.eye(4) if affine is None else affine
        img = nib.Nifti1Image(lab, aff)
        img.set_qform(aff, 1)
        img.set_sform(aff, 1)
    img.header["scl_slope"] = 1
    img.header["scl_inter"] = 0
    img.header["cal_min"] = 0
    img.header["cal_max"] = max(int(lab.max()), 1) if lab.size else 1
    return img


def nifti_gz_bytes(img: Any) -> bytes:
    """``img`` as the bytes of a ``.nii.gz`` file, made in memory (nothing written)."""
    return gzip.compress(img.to_bytes(), compresslevel=6)


def header_for(reference: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A copy of the scan's header ``reference`` for a 3D map of ``shape`` and ``dtype``
    on its grid: the input's time step and further pixdims as it had them (nibabel's
    ``set_data_shape`` sets them to 1; 0 stays 0), and no intent (a map is no vector or
    time series, whatever the 4D or 5D input was)."""
    hdr = reference.copy()
    hdr.set_data_dtype(dtype)
    extra = np.array(hdr["pixdim"][4:], copy=True)
    hdr.set_data_shape(shape)
    hdr["pixdim"][4:] = extra
    hdr.set_intent("none")
    return hdr


def image_class(header: Any) -> Any:
    """The NIfTI image class of ``header``'s format: a NIfTI-2 header in a NIfTI-1 image is
    written as NIfTI-1, with nibabel's complaint about its size on stderr."""
    return nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image


def save_whole(img: Any, out: Path) -> None:
    """``nib.save`` through :func:`write_replacing`: a run stopped mid-write (Ctrl-C, a
    full disk) leaves the earlier file, or none, never a half-written one that reads as
    truncated (the temporary file is hidden, so discovery passes it over)."""
    write_replacing(out, lambda tmp: nib.save(img, str(tmp)))


def save_float_nifti(
    data: np.ndarray, out_path: str | Path, reference: nib.Nifti1Header | None, affine: np.ndarray
) -> Path:
    """Write a float32 map (e.g. uncertainty) on the reference geometry."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data, dtype=np.float32)
    hdr = header_for(reference, arr.shape, np.float32) if reference is not None else None
    img = image_class(hdr)(arr, affine, header=hdr)
    img.header["scl_slope"] = 1
    img.header["scl_inter"] = 0
    save_whole(img, out)
    return out


#: the largest picture read_image_2d reads (8192 x 8192 pixels): a slice exported from a
#: viewer is at most a few thousand pixels on a side, and a small file can claim far more
MAX_PICTURE_PIXELS = 8192 * 8192


def read_image_2d(path: str | Path) -> np.ndarray:
    """Read a 2D picture as ``(H, W, C)`` uint8 (C = 1 or 3).

    Greyscale pictures get C = 1 (so do palette pictures whose colours are all grey);
    palette, CMYK and other colour-space pictures are read by their colours; RGBA loses
    its alpha; 16-bit pictures are scaled to 8 bits as DICOM slices are
    (:func:`to_uint8`); a single DICOM slice (``.dcm``) is read by
    :func:`read_dicom_2d`. A picture whose EXIF orientation
    says it is shown turned or mirrored (a phone's JPEG) is read as it is shown. A TIFF
    of several pages is refused (a folder of numbered pictures is a stack).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found.")
    if is_dicom_picture(p):
        return read_dicom_2d(p)[0]
    too_big = (f"more than the {MAX_PICTURE_PIXELS // 2**20} million this reads; an MRI "
               "slice is far smaller.")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_PICTURE_PIXELS:
                raise InputError(f"{p}: the picture is {w} x {h} pixels, {too_big}")
            pages = int(getattr(im, "n_frames", 1) or 1)
            if im.format == "TIFF" and pages > 1:  # the pages after the first were dropped
                raise InputError(
                    f"{p}: is a TIFF of {pages} pages, and a picture here is one slice; give "
                    "the pages as a folder of numbered pictures (name_1.png ... "
                    f"name_{pages}.png), which is read as one patient's stack.")
            im.load()
            if (im.getexif() or {}).get(0x0112, 1) != 1:  # Orientation: shown turned
                from PIL import ImageOps

                # the picture as every viewer shows it, so that its mask overlays that
                im = ImageOps.exif_transpose(im)
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                # a palette's indices or another colour space's numbers are not the
                # picture's brightness: its colours are
                rgb = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info
                                 else "RGB")
                arr = np.asarray(rgb)[..., :3]
                if np.array_equal(arr[..., 0], arr[..., 1]) and \
                        np.array_equal(arr[..., 1], arr[..., 2]):
                    arr = arr[..., :1]  # a grey palette is a greyscale picture
            elif im.mode == "1":
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im)
    except InputError:
        raise
    except Image.DecompressionBombError:  # refused by Pillow itself when opened
        raise InputError(f"{p}: the picture claims {too_big}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable image ({_short(exc)}).") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise InputError(f"{p}: is not a 2D image (shape {arr.shape}).")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    elif arr.shape[2] == 2:
        arr = arr[..., :1]
    return to_uint8(arr)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Pictures of other bit depths (a 16-bit PNG or TIFF, a DICOM slice's grey values)
    -> uint8, mapped to 0-255 between their minimum and their 99.9th percentile, so that
    one hot pixel does not darken the whole picture (as scaling by the maximum did); a
    flat picture is 255 where its value is above 0 (an all-tumour mask), 0 where it is 0."""
    if array.dtype == np.uint8:
        return array
    a = np.asarray(array, dtype=np.float64)
    if not a.size:
        return a.astype(np.uint8)
    lo, hi = float(a.min()), float(np.percentile(a, 99.9))
    if hi <= lo:  # flat (a uniform picture, an all-tumour 0/1 or 0/65535 mask): its
        # value is white above 0 and black at 0 or below, not the minimum's black
        return np.where(a > lo, 255, 255 if lo > 0 else 0).astype(np.uint8)
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def write_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a ``(H, W)`` or ``(H, W, 3)`` uint8 array as PNG (:func:`write_replacing`)."""
    from PIL import Image

    out = Path(path)
    picture = Image.fromarray(np.asarray(array, dtype=np.uint8))
    return write_replacing(out, lambda tmp: picture.save(tmp, format="PNG"))


def dcm2niix_executable() -> str | None:
    """Path of the dcm2niix binary (from the ``dcm2niix`` PyPI package or the system)."""
    found = shutil.which("dcm2niix")
    if found:
        return found
    try:
        import dcm2niix as _d  # type: ignore[import-untyped]

        exe = Path(_d.__file__).parent / "dcm2niix"
        if exe.exists():
            return str(exe)
        bin_dir = getattr(_d, "bin", None)
        if bin_dir:
            return str(bin_dir)
    except ImportError:
        pass
    return None


def convert_dicom_series(files: list[Path], work_dir: str | Path, anonymize: bool = True,
                         uneven: set[Path] | None = None, filled: dict[Path, int] | None = None,
                         cut: list[Path] | None = None, signed: bool = False
                         ) -> tuple[list[Path], str | None]:
    """Convert the DICOM files of one series with dcm2niix: ``(NIfTI files, why none or
    not all of them could be converted)``, the reason in words of its own (no file name,
    which may carry the patient's), None when every file was converted. The files are
    linked (copied where links are refused) into ``work_dir/dicom`` as numbered names; the
    NIfTI files go to ``work_dir/nifti``.

    With ``anonymize`` (the default) dcm2niix writes anonymised BIDS sidecars (``-ba y``)
    and the NIfTI text fields (descrip, aux_file, db_name, intent_name) are blanked
    afterwards, so no patient identifier is kept.

    A series whose slices are not evenly spaced (a slice missing) cannot lie on one NIfTI
    grid: where dcm2niix made an evenly spaced copy of it, that copy takes its place, and
    ``filled`` (when given) maps its file to how many slices the copy interpolated in the
    gaps; otherwise its file is added to ``uneven`` (when given), for the caller to refuse
    it.

    ``cut`` (when given) gets the files dcm2niix found cut short (their pixel data ends
    early; it converts nothing of a series with one, and names only the first it meets).
    With ``signed``, unsigned 16-bit pixels are stored as signed ones where their values
    fit (``-l n``, lossless): this dcm2niix makes its evenly spaced copy of signed pixels
    only."""
    import os

    work = Path(work_dir)
    links = work / "dicom"
    links.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        link = links / f"{i:05d}.dcm"
        try:
            os.symlink(Path(f).resolve(), link)
        except OSError:  # a system without symbolic links for this user
            shutil.copyfile(f, link)
    out, log = _dcm2niix(links, work / "nifti", anonymize, uneven, filled, signed)
    if _DEFLATED in log and _inflate(files, links):  # dcm2niix reads no deflated file
        shutil.rmtree(work / "nifti", ignore_errors=True)
        out, log = _dcm2niix(links, work / "nifti", anonymize, uneven, filled, signed)
    if cut is not None:
        for m in re.finditer(rf"{_CUT_SHORT}: *(.+)", log):
            name = Path(m.group(1).strip()).name  # one of the links: its number is its file's
            if re.fullmatch(r"\d{5}\.dcm", name) and int(name[:5]) < len(files):
                cut.append(files[int(name[:5])])
    return out, dcm2niix_fault(log, len(files))


def _dcm2niix(dicom_dir: Path, out: Path, anonymize: bool, uneven: set[Path] | None,
              filled: dict[Path, int] | None = None, signed: bool = False
              ) -> tuple[list[Path], str]:
    """Run dcm2niix on a folder: (the NIfTI files written, its log)."""
    exe = dcm2niix_executable()
    if exe is None:
        raise InputError("DICOM conversion needs dcm2niix, which is not installed.")
    out.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-z", "y", "-b", "y", "-ba", "y" if anonymize else "n", "-f", "%s_%d",
           *(["-l", "n"] if signed else []), "-o", str(out), str(dicom_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    for f in _uneven_series(log, out):
        equal = sorted(out.glob(f.name[: -len(".nii.gz")] + "_Eq*.nii.gz"))
        if equal:  # dcm2niix's evenly spaced copy stands in for the series
            if filled is not None:  # the slices it has more than the series: interpolated
                had, has = _open_nifti(f).shape, _open_nifti(equal[0]).shape
                filled[f] = max(0, sum(has[:3]) - sum(had[:3]))
            equal[0].replace(f)
            side = equal[0].with_name(equal[0].name[: -len(".nii.gz")] + ".json")
            if side.exists():
                side.replace(f.with_name(f.name[: -len(".nii.gz")] + ".json"))
        elif uneven is not None:
            uneven.add(f)
    files = sorted(out.glob("*.nii.gz"))
    if anonymize:
        for f in files:
            blank_text_fields(f)
    return files, log


#: Deflated Explicit VR Little Endian: the whole data set zip-compressed, which dcm2niix
#: does not read (it asks for the files to be inflated first)
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _inflate(files: list[Path], links: Path) -> bool:
    """Replace the links (``links/<number>.dcm``) of the deflated files among ``files`` by
    inflated copies (pydicom reads them; written as Explicit VR Little Endian, the same
    data set uncompressed), for dcm2niix to read: True when every deflated file was
    inflated (the user's files are never written)."""
    try:
        import pydicom
        from pydicom.filereader import read_file_meta_info
        from pydicom.uid import ExplicitVRLittleEndian
    except ImportError:
        return False
    done = False
    for i, f in enumerate(files):
        try:
            if str(read_file_meta_info(f).get("TransferSyntaxUID", "")) != _DEFLATED:
                continue
            ds = pydicom.dcmread(f)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            link = links / f"{i:05d}.dcm"
            part = links / f"{i:05d}.part"
            try:  # pydicom 3's keyword; 2.x writes a whole file with write_like_original off
                pydicom.dcmwrite(part, ds, enforce_file_format=True)
            except TypeError:
                ds.save_as(part, write_like_original=False)
            part.replace(link)  # the link, not the file it pointed to, is replaced
        except Exception:  # noqa: BLE001 - pydicom raises many kinds; said by dcm2niix_fault
            return False
        done = True
    return done


#: dcm2niix's word for a file whose pixel data ends early (followed by the file's path)
_CUT_SHORT = "File not large enough to store image data"


def cut_short_words(n: int, total: int, at_least: bool = False) -> str:
    """``n`` of a series' ``total`` files cut short, in words (``at_least``: there may be
    more, dcm2niix naming only the first it meets)."""
    return ("at least " if at_least and n < total else "") + \
        f"{n} of its {total} files {'is' if n == 1 else 'are'} cut short (their pixel data " \
        "ends early)"


_Words = str | Callable[[int, int], str]
#: dcm2niix's complaints about a series, and what they mean in words of the project's
_DCM2NIIX_FAULTS: tuple[tuple[re.Pattern[str], _Words], ...] = (
    (re.compile(_CUT_SHORT), cut_short_words),
    (re.compile(re.escape(_DEFLATED)),
     "its files are deflated (transfer syntax Deflated Explicit VR Little Endian, "
     f"{_DEFLATED}) and could not be inflated for dcm2niix; inflate them first "
     "(dcmconv +te, or gdcmconv -w) and give the study again"),
    (re.compile(r"(?i)unsupported transfer syntax|unable to decode"),
     "its pixels are compressed in a way (transfer syntax) dcm2niix cannot decode"),
    (re.compile(r"dimensions vary across slices"),
     "its slices differ in size, so they make no single volume"),
)


def dcm2niix_fault(log: str, total: int) -> str | None:
    """What dcm2niix's ``log`` says went wrong with a series of ``total`` files (a phrase,
    no file name), or None when it says it converted them all."""
    for pattern, words in _DCM2NIIX_FAULTS:
        n = len(pattern.findall(log))
        if n:
            return words(n, total) if callable(words) else words
    done = re.search(r"Converted (\d+) of (\d+) files", log)
    if done is None and "Convert " in log:
        return None
    lines = [ln.strip() for ln in log.splitlines()
             if re.match(r"\s*(Error|Warning)\b", ln) and "Converted " not in ln
             and "(0018,5100)" not in ln and "(0008,0070)" not in ln]
    said = re.sub(r"\S*[\\/]\S*", "<path>", lines[0]) if lines else ""  # no folder names
    left = f"{int(done.group(2)) - int(done.group(1))} of its {total} files were not " \
        "converted" if done else "dcm2niix converted none of its files"
    return left + (f" (dcm2niix: {said.rstrip('.')})" if said else "")


def _uneven_series(log: str, out: Path) -> list[Path]:
    """The files dcm2niix's log says hold unevenly spaced slices: its warning comes before
    the ``Convert N DICOM as <file>`` line of the series it concerns."""
    found: list[Path] = []
    pending = False
    for m in re.finditer(r"Interslice distance varies|Convert \d+ DICOM as (\S+) \(", log):
        if m.group(0).startswith("Interslice"):
            pending = True
            continue
        name = Path(m.group(1)).name
        if pending and "_Eq" not in name:
            found.append(out / f"{name}.nii.gz")
        pending = False
    return [f for f in found if f.exists()]


def blank_text_fields(path: str | Path) -> None:
    """Blank the free-text fields of a NIfTI header in place (they may hold identifiers)."""
    p = Path(path)
    img = _open_nifti(p)
    hdr = img.header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        if field in hdr:
            hdr[field] = b""
    data = np.asanyarray(img.dataobj)
    new = nib.Nifti1Image(data, img.affine, header=hdr)
    with tempfile.NamedTemporaryFile(suffix=".nii.gz", dir=p.parent, delete=False) as tmp:
        tmp_path = Path(tmp.name)
    nib.save(new, str(tmp_path))
    tmp_path.replace(p)


def human_size(n: float) -> str:
    """Bytes as a short text: ``1.5 GiB``, ``20 MiB``, ``19.5 KiB``."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            v = n / factor
            return f"{v:.0f} {unit}" if v >= 10 else f"{v:.1f} {unit}"
    return f"{int(n)} bytes"


#: entries a zip may hold (far more than the slices of any MRI exam)
MAX_ZIP_MEMBERS = 20000


class ArchiveTooLarge(InputError):
    """A zip that unpacks to more than its reader allows (the web page answers 413)."""


def extract_zip(zip_path: Path, dest: Path, display: str, max_total: int) -> int:
    """Extract every file of a zip under names of our own in ``dest``; returns the count
    (:func:`extract_zip_entries`)."""
    return len(extract_zip_entries(zip_path, dest, display, max_total))


#: file names a system leaves in a folder it zips, never a scan (macOS's ``._`` copies
#: and ``__MACOSX`` folder are told by their leading dot and folder)
SYSTEM_FILES = {"thumbs.db", "desktop.ini"}


def system_entry(name: str) -> bool:
    """A zip entry that a system made (``__MACOSX/``, ``._x.nii.gz``, ``.DS_Store``,
    ``Thumbs.db``), never a scan."""
    from pathlib import PurePosixPath

    parts = PurePosixPath(name).parts
    return any(p == "__MACOSX" or is_hidden(p) for p in parts) or \
        (bool(parts) and parts[-1].lower() in SYSTEM_FILES)


def extract_zip_entries(zip_path: Path, dest: Path, display: str, max_total: int
                        ) -> list[tuple[str, Path]]:
    """Extract every file of a zip under names of our own in ``dest``: ``(the entry's
    path in the archive, as text only, where it was written)`` for each.

    An entry with an absolute path, a drive or a ``..`` component is refused (zip-slip),
    as is an encrypted entry, more than :data:`MAX_ZIP_MEMBERS` entries, or more than
    ``max_total`` bytes uncompressed (zip bomb: :class:`ArchiveTooLarge`). The command line
    (a zipped study) and the web page (an upload) unpack through this one function.
    """
    import zipfile
    from pathlib import PurePosixPath

    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError(f"{display}: is not a readable zip file.") from None
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    n = 0
    written: list[tuple[str, Path]] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise InputError(f"{display}: holds {len(infos)} entries, more than the "
                             f"{MAX_ZIP_MEMBERS} allowed.")
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise InputError(f"{display}: holds an entry whose path leaves the archive's "
                                 f"folder ({info.filename!r}); the archive was refused.")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise InputError(f"{display}: is encrypted; give an unencrypted zip.")
            target = dest / f"{n:06d}.dcm"
            damaged = (f"{display}: is a damaged zip file ({info.filename!r} cannot be "
                       "read).")
            unreadable = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)
            try:
                src = zf.open(info)
            except unreadable:
                raise InputError(damaged) from None
            # reading the archive fails on a damaged zip; writing fails on this machine (a
            # full disk), which is no fault of the zip and is raised as it is
            with src, open(target, "wb") as out:
                while True:
                    try:
                        block = src.read(1 << 20)
                    except unreadable:
                        raise InputError(damaged) from None
                    if not block:
                        break
                    total += len(block)
                    if total > max_total:
                        raise ArchiveTooLarge(
                            f"{display}: unpacks to more than "
                            f"{human_size(max_total)}, the most allowed.")
                    out.write(block)
            written.append((name, target))
            n += 1
    if n == 0:
        raise InputError(f"{display}: the zip file holds no files.")
    return written
