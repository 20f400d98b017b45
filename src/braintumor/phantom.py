"""Synthetic BraTS-like cases: seeded, any size, with a known truth.

The anatomy is real: grey matter, white matter and CSF probability maps of the MNI152
2009a template, placed in the 240 x 240 x 155 BraTS frame (LPS voxel order, 1 mm, the
same affine as BraTS files) and shipped in ``braintumor/data`` (see its notice file).
On top of it a glioma is grown from smooth random fields: an irregular tumour core
(enhancing rim around a necrotic centre, or a non-enhancing core for ``low_grade``)
and edema that spreads further along white matter than through grey matter.

Intensities are drawn per tissue class from z-scored means measured on real BraTS 2018
cases (:data:`TISSUE_Z`), so after the usual per-channel z-scoring a phantom looks, to a
network trained on BraTS, like a BraTS case: WM > GM > CSF on T1, CSF bright and WM dark
on T2, CSF dark on FLAIR, edema bright on T2 and FLAIR, the enhancing rim bright on T1ce,
the necrotic core dark on T1ce. A smooth multiplicative bias field and Rician noise
complete it. Outside the brain every channel is 0, as in skull-stripped BraTS data.

Every random choice is drawn in frame millimetres before any size-dependent step, so one
seed gives the same case (anatomy, tumour position and shape) at every image size; small
sizes see the brain scaled down isotropically to fit.
"""

from __future__ import annotations

import functools
import lzma
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from braintumor import labels as L
from braintumor.cases import MODALITIES, Case, case_from_arrays
from braintumor.errors import InputError

#: The BraTS image grid (voxels) and its file affine (LPS voxel order, 1 mm).
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)

#: Mean intensity of each tissue class per modality (t1, t1ce, t2, flair), in units of
#: a brain standard deviation. Calibrated against the 11 TCIA and CBICA cases of BraTS
#: 2018: after the project's z-scoring, the phantom's tumour classes land within about
#: 0.3 of the real median class means (edema FLAIR +2.0, enhancing T1ce +1.9, necrosis
#: T2 +1.8), and each modality's z-scored brain histogram is as close to the real ones
#: (Wasserstein-1 0.08-0.18) as the real cases are to each other (0.10-0.19). Healthy
#: grey/white contrast comes out crisper than in patients (the template is an average).
TISSUE_Z: dict[str, tuple[float, float, float, float]] = {
    "csf": (-1.7, -1.0, 2.1, -1.2),
    "gm": (-0.25, -0.2, 0.25, 0.3),
    "wm": (0.8, 0.25, -0.55, 0.0),
    "ncr": (-0.9, -0.45, 1.6, 1.4),  # necrotic core (high grade)
    "net": (-0.75, -0.6, 1.2, 1.1),  # non-enhancing core (low grade)
    "ed": (0.07, -0.1, 0.75, 1.3),
    "et": (-0.1, 1.0, 1.1, 1.45),
}
#: Amplitude of smooth texture in healthy tissue (z units).
HEALTHY_TEXTURE = 0.08
#: Factor on the template CSF fraction (atrophy of an older brain).
CSF_GAIN = 1.3
#: Within-class spread (z units) of tumour tissue (smooth heterogeneity).
TUMOUR_SD = {"ncr": 0.45, "net": 0.35, "ed": 0.35, "et": 0.5}
#: Raw scanner-like units per modality: value = mean + sd * z (BraTS-like int16 range).
RAW_MEAN = (420.0, 480.0, 330.0, 210.0)
RAW_SD = (100.0, 110.0, 130.0, 70.0)


# ----------------------------------------------------------------------------- template


DATA_DIR = Path(__file__).with_name("data")
TEMPLATE_FILE = DATA_DIR / "mni152_tissue_brats_frame.nii.xz"
TEMPLATE_3MM_FILE = DATA_DIR / "mni152_tissue_brats_frame_3mm.nii.xz"
_BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
_LEVELS = 31.0


def _read_xz_nifti(path: Path) -> nib.Nifti1Image:
    if not path.exists():  # pragma: no cover - broken install
        raise InputError(f"{path}: the shipped anatomy template is missing.")
    return nib.Nifti1Image.from_bytes(lzma.decompress(path.read_bytes()))


@functools.lru_cache(maxsize=1)
def _template_u8() -> np.ndarray:
    """The 1 mm template in the full frame ``(3, 240, 240, 155)`` uint8 0..31: brain,
    GM, WM (the file holds the brain's box; its affine says where it sits)."""
    img = _read_xz_nifti(TEMPLATE_FILE)
    data = np.asarray(img.dataobj.get_unscaled(), dtype=np.uint8)  # type: ignore[attr-defined]
    lo = np.rint(np.linalg.solve(_BRATS_AFFINE, img.affine[:, 3])[:3]).astype(int)
    out = np.zeros((3, *BRATS_SHAPE), np.uint8)
    hi = lo + np.array(data.shape[:3])
    out[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = np.moveaxis(data, -1, 0)
    return out


@functools.lru_cache(maxsize=1)
def _template_3mm() -> np.ndarray:
    """3 mm block means of the frame ``(3, 80, 80, 52)`` float32 in [0, 1]; voxel ``i``
    is centred on frame voxel ``3 i + 1``."""
    img = _read_xz_nifti(TEMPLATE_3MM_FILE)
    data = np.asarray(img.dataobj.get_unscaled(), dtype=np.float32)  # type: ignore[attr-defined]
    return np.ascontiguousarray(np.moveaxis(data, -1, 0)) / _LEVELS


@functools.lru_cache(maxsize=1)
def _brain_box() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) frame voxel corners of the template brain, about 4 voxels margin."""
    brain = _template_3mm()[0] > 0.5
    lo, hi = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.nonzero(brain.any(axis=other))[0]
        lo.append(max(3 * int(idx[0]) - 3, 0))
        hi.append(min(3 * int(idx[-1]) + 6, BRATS_SHAPE[ax]))
    return np.array(lo, float), np.array(hi, float)


@dataclass(frozen=True)
class _Frame:
    """Map between target voxels ``v`` and BraTS-frame millimetres ``f``.

    ``f = centre_f + (v - centre_t) / scale``: ``scale`` is target voxels per frame mm.
    """

    shape: tuple[int, int, int]
    scale: float
    centre_f: tuple[float, float, float]

    @property
    def centre_t(self) -> np.ndarray:
        return (np.array(self.shape, float) - 1.0) / 2.0

    def to_frame(self, v: np.ndarray) -> np.ndarray:
        """Target voxel coordinates ``(3, ...)`` -> frame mm ``(3, ...)``."""
        c_t = self.centre_t.reshape((3,) + (1,) * (v.ndim - 1))
        c_f = np.array(self.centre_f).reshape((3,) + (1,) * (v.ndim - 1))
        return c_f + (v - c_t) / self.scale

    def to_target(self, f: np.ndarray) -> np.ndarray:
        """Frame mm ``(3,)`` -> target voxel coordinates ``(3,)``."""
        return self.centre_t + (np.asarray(f, float) - np.array(self.centre_f)) * self.scale


def _frame_for(shape: tuple[int, int, int]) -> _Frame:
    if tuple(shape) == BRATS_SHAPE:
        c = (np.array(BRATS_SHAPE, float) - 1) / 2
        return _Frame(BRATS_SHAPE, 1.0, (float(c[0]), float(c[1]), float(c[2])))
    lo, hi = _brain_box()
    size = hi - lo
    scale = float(min(1.0, *(np.array(shape, float) / size)))
    centre = (lo + hi - 1.0) / 2.0 if scale < 1.0 else (np.array(BRATS_SHAPE, float) - 1) / 2
    return _Frame((int(shape[0]), int(shape[1]), int(shape[2])), scale,
                  (float(centre[0]), float(centre[1]), float(centre[2])))


@functools.lru_cache(maxsize=8)
def _anatomy(shape: tuple[int, int, int]) -> np.ndarray:
    """Tissue maps ``(3, X, Y, Z)`` float32 in [0, 1] (brain, GM, WM) on the target grid."""
    if tuple(shape) == BRATS_SHAPE:
        return _template_u8().astype(np.float32) / _LEVELS
    fr = _frame_for(shape)
    if fr.scale <= 0.5:
        # small phantoms: the 3 mm file is enough, and is read in milliseconds
        src = _template_3mm()
        origin, step = 1.0, 3.0
    else:
        src = _template_u8().astype(np.float32) / _LEVELS
        origin, step = 0.0, 1.0
        if fr.scale < 0.75:
            # block-average first so the linear resampling below does not alias
            p = [(0, 0)] + [(0, s % 2) for s in BRATS_SHAPE]
            src = np.pad(src, p)
            n = [s // 2 for s in src.shape[1:]]
            src = src.reshape(3, n[0], 2, n[1], 2, n[2], 2).mean(axis=(2, 4, 6))
            origin, step = 0.5, 2.0
    # target voxel v -> source index (centre_f + (v - centre_t) / scale - origin) / step
    matrix = np.full(3, 1.0 / (fr.scale * step))
    offset = (np.array(fr.centre_f) - fr.centre_t / fr.scale - origin) / step
    out = np.empty((3, *shape), np.float32)
    for c in range(3):
        out[c] = ndi.affine_transform(src[c], matrix, offset=offset, output_shape=shape,
                                      order=1, mode="constant", cval=0.0)
    return out


# ----------------------------------------------------------------------------- tumour


@dataclass(frozen=True)
class _Lesion:
    """One lesion in frame mm: centre, core radius, rim, edema reach and noise lattices."""

    centre: np.ndarray  # (3,) frame mm
    rotation: np.ndarray  # (3, 3)
    axes: np.ndarray  # (3,) relative axis lengths of the core ellipsoid
    core_radius: float  # mm
    rim: float  # mm, thickness of the enhancing rim
    edema: float  # mm beyond the core
    enhancing: bool
    noise: np.ndarray  # (4, n, n, n) smooth-noise lattices (core, rim, edema, texture)
    lattice_mm: float  # lattice spacing, mm

    @property
    def reach(self) -> float:
        """Largest distance from the centre any label can reach (mm)."""
        return (self.core_radius + self.edema) * 1.45 * float(self.axes.max()) + 6.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _pick_centre(rng: np.random.Generator, radius: float, side: int) -> np.ndarray:
    """A white-matter point (frame mm) in hemisphere ``side`` (+1/-1 along x), at least
    ``radius`` mm inside the brain; chosen on the 3 mm lattice so it is size-independent."""
    tmpl = _template_3mm()
    step = 3
    brain = tmpl[0] > 0.5
    wm = tmpl[2]
    depth = ndi.distance_transform_edt(brain) * step
    idx = np.indices(brain.shape).reshape(3, -1).T * step + 1
    mid_x = (BRATS_SHAPE[0] - 1) / 2.0
    ok = (depth.ravel() > radius) & (wm.ravel() > 0.5)
    ok &= np.sign(idx[:, 0] - mid_x) == side
    ok &= np.abs(idx[:, 0] - mid_x) > 20  # well off the midline
    ok &= (idx[:, 2] > 45) & (idx[:, 2] < 125)  # supratentorial, like most gliomas
    cands = idx[ok]
    if len(cands) == 0:
        cands = idx[depth.ravel() > radius / 2]
    centre = cands[rng.integers(len(cands))].astype(float)
    return centre + rng.uniform(-step / 2, step / 2, 3)


def _draw_lesion(rng: np.random.Generator, core: tuple[float, float], edema: tuple[float, float],
                 side: int, enhancing: bool) -> _Lesion:
    core_r = float(rng.uniform(*core))
    ed = float(rng.uniform(*edema))
    axes = rng.uniform(0.8, 1.25, 3)
    axes /= np.cbrt(axes.prod())
    lattice_mm = 7.0
    reach = (core_r + ed) * 1.45 * float(axes.max()) + 6.0
    n = int(np.ceil(2 * reach / lattice_mm)) + 4
    return _Lesion(
        centre=_pick_centre(rng, core_r * 0.8 + 8, side),
        rotation=_random_rotation(rng),
        axes=axes,
        core_radius=core_r,
        rim=float(rng.uniform(3.0, 6.0)),
        edema=ed,
        enhancing=enhancing,
        noise=rng.standard_normal((4, n, n, n)).astype(np.float32),
        lattice_mm=lattice_mm,
    )


def _lattice_sample(lat: np.ndarray, pts_mm: np.ndarray, lesion: _Lesion) -> np.ndarray:
    """Smooth noise (about unit sd) at frame points ``(3, N)`` from a lesion lattice."""
    n = lat.shape[0]
    c = (pts_mm - lesion.centre[:, None]) / lesion.lattice_mm + (n - 1) / 2.0
    return ndi.map_coordinates(lat, c, order=3, mode="nearest", prefilter=True)


def _grow_lesion(lesion: _Lesion, fr: _Frame, anat: np.ndarray,
                 labels: np.ndarray, soft: dict[str, np.ndarray]) -> None:
    """Paint one lesion into ``labels`` (internal values) and soft class fractions."""
    shape = labels.shape
    c_t = fr.to_target(lesion.centre)
    r_t = lesion.reach * fr.scale
    lo = np.maximum(np.floor(c_t - r_t).astype(int), 0)
    hi = np.minimum(np.ceil(c_t + r_t).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.indices(tuple(hi - lo), dtype=np.float32) + lo.reshape(3, 1, 1, 1)
    pts = fr.to_frame(grid).reshape(3, -1)
    rel = lesion.rotation.T @ (pts - lesion.centre[:, None])
    r = np.sqrt(((rel / lesion.axes[:, None]) ** 2).sum(0))
    # the core's two noise fields matter only near the core: sample them there alone
    near = r < lesion.core_radius * 1.9
    n_core = np.full(r.shape, 3.0, np.float32)
    n_rim = np.zeros(r.shape, np.float32)
    n_core[near] = _lattice_sample(lesion.noise[0], pts[:, near], lesion)
    n_rim[near] = _lattice_sample(lesion.noise[1], pts[:, near], lesion)
    n_ed = _lattice_sample(lesion.noise[2], pts, lesion)
    d_core = r + 0.22 * lesion.core_radius * n_core
    brain = anat[0][box].ravel() > 0.5
    wm = anat[2][box].ravel()
    gm = anat[1][box].ravel()
    csf = np.clip(anat[0][box].ravel() - gm - wm, 0, 1)
    tc = (d_core < lesion.core_radius) & brain
    rim = lesion.rim * (1.0 + 0.45 * n_rim)
    inner = d_core < lesion.core_radius - np.clip(rim, 1.0, None)
    # edema reaches further along white matter and stops at CSF
    reach_ed = lesion.core_radius + lesion.edema * (0.35 + 0.9 * wm)
    d_ed = r + 0.3 * lesion.edema * n_ed
    ed = (d_ed < reach_ed) & brain & (csf < 0.6)
    sub = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
    tc3, ed3 = tc.reshape(sub), (ed | tc).reshape(sub)
    # keep the edema connected to its core
    lab, _ = ndi.label(ed3)
    keep = np.unique(lab[tc3])
    ed3 = np.isin(lab, keep[keep > 0]) & ~tc3
    if lesion.enhancing:
        ncr3 = inner.reshape(sub) & tc3
        et3 = tc3 & ~ncr3
        core_cls = "ncr"
    else:
        ncr3 = tc3
        et3 = np.zeros_like(tc3)
        core_cls = "net"
    region = labels[box]
    region[ed3 & (region == 0)] = L.ED
    region[ncr3] = L.NCR
    region[et3] = L.ET
    for name, m in (("ed", ed3), (core_cls, ncr3), ("et", et3)):
        soft[name][box] = np.maximum(soft[name][box], m.astype(np.float32))


# ----------------------------------------------------------------------------- intensities


def _bias_field(rng: np.random.Generator, pts_norm: np.ndarray, strength: float) -> np.ndarray:
    """Smooth multiplicative field at normalised points ``(3, N)`` in [-1, 1]."""
    x, y, z = pts_norm
    terms = [x, y, z, x * x - 0.33, y * y - 0.33, z * z - 0.33, x * y, x * z, y * z]
    coef = rng.normal(0.0, 1.0, len(terms)) * np.array([1, 1, 1, .6, .6, .6, .5, .5, .5])
    log_b = sum(c * t for c, t in zip(coef, terms, strict=True))
    return np.exp(strength * log_b).astype(np.float32)


def make_case(
    shape: tuple[int, int, int] = BRATS_SHAPE,
    seed: int = 0,
    tumour: bool = True,
    second_lesion: bool = False,
    low_grade: bool = False,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    case_id: str | None = None,
    bias: float = 0.06,
    noise: float = 0.12,
) -> Case:
    """A synthetic BraTS-like case with its truth in ``Case.label`` (internal labels).

    ``shape``: ``(X, Y, Z)`` voxels (BraTS is 240 x 240 x 155; 48^3 builds in well under
    a second). ``spacing``: voxel size in mm written in the affine (LPS voxel order, as
    BraTS files). ``tumour=False`` gives a tumour-free brain; ``second_lesion`` adds a
    smaller lesion in the other hemisphere; ``low_grade`` gives a non-enhancing core
    (labelled NCR, no ET) with wide edema. ``bias``: strength of the smooth bias field
    (log-scale sd); ``noise``: Rician noise sd in units of each modality's brain sd.

    Returns a :class:`~braintumor.cases.Case` with ``image`` ``(4, X, Y, Z)`` float32
    holding whole numbers (so writing and reading it back as int16 is exact).
    """
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"Phantom shape {shape} must be three sizes of at least 8 voxels.")
    rng = np.random.default_rng(seed)
    # every random draw below happens in the same order at every size
    side = 1 if rng.random() < 0.5 else -1
    lesions: list[_Lesion] = []
    if tumour:
        if low_grade:
            lesions.append(_draw_lesion(rng, (16.0, 24.0), (14.0, 28.0), side, False))
        else:
            lesions.append(_draw_lesion(rng, (17.0, 25.0), (14.0, 26.0), side, True))
        if second_lesion:
            lesions.append(_draw_lesion(rng, (7.0, 11.0), (6.0, 12.0), -side, not low_grade))
    bias_rng = np.random.default_rng(rng.integers(2**32))
    noise_rng = np.random.default_rng(rng.integers(2**32))

    fr = _frame_for(shape)
    anat = _anatomy(shape)
    labels = np.zeros(shape, np.uint8)
    soft = {k: np.zeros(shape, np.float32) for k in ("ncr", "net", "ed", "et")}
    for lesion in lesions:
        _grow_lesion(lesion, fr, anat, labels, soft)

    brain = anat[0] > 0.5
    brain |= labels > 0
    idx = np.nonzero(brain)
    gm = anat[1][idx]
    wm = anat[2][idx]
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    # glioma patients are older than the template's young adults: widen sulci and
    # ventricles (more CSF), which also gives the z-scored histograms BraTS's CSF tails
    csf_new = np.clip(csf * CSF_GAIN, 0.0, 1.0)
    keep = (1.0 - csf_new) / np.maximum(gm + wm, 1e-6)
    gm, wm, csf = gm * keep, wm * keep, csf_new
    # partial volume at tumour borders: blur the class masks a little
    sigma = 0.6
    fracs = {}
    for k, cls_mask in soft.items():
        if cls_mask.any():
            fracs[k] = np.clip(ndi.gaussian_filter(cls_mask, sigma)[idx], 0, 1)
    tum_total = sum(fracs.values()) if fracs else np.zeros_like(gm)
    over = np.maximum(tum_total, 1.0)
    for k in fracs:
        fracs[k] = fracs[k] / over
    healthy = np.clip(1.0 - tum_total / over, 0.0, 1.0)

    # smooth texture: one field for healthy tissue, one per tumour class
    pts_mm = fr.to_frame(np.array(idx, dtype=np.float32))
    tex_lat = noise_rng.standard_normal((5, 44, 44, 30)).astype(np.float32)
    tex_c = pts_mm / 6.0 + 2.0
    # linear interpolation between lattice nodes lowers the sd to about 0.6; rescale
    textures = [ndi.map_coordinates(tex_lat[i], tex_c, order=1, mode="nearest") / 0.6
                for i in range(5)]
    norm = ((pts_mm - (np.array(BRATS_SHAPE, np.float32)[:, None] - 1) / 2) / 90.0).astype(
        np.float32)

    image = np.zeros((4, *shape), np.float32)
    for m in range(len(MODALITIES)):
        z = healthy * (csf * TISSUE_Z["csf"][m] + gm * TISSUE_Z["gm"][m]
                       + wm * TISSUE_Z["wm"][m])
        z += HEALTHY_TEXTURE * textures[0] * healthy
        for j, (k, f) in enumerate(sorted(fracs.items())):
            z += f * (TISSUE_Z[k][m] + TUMOUR_SD[k] * textures[1 + j % 4]
                      * (1.0 if m % 2 == 0 else -0.7))
        val = RAW_MEAN[m] + RAW_SD[m] * z
        if bias > 0:
            val *= _bias_field(bias_rng, norm, bias)
        if noise > 0:
            s = noise * RAW_SD[m]
            n1 = noise_rng.standard_normal(val.shape, dtype=np.float32)
            n2 = noise_rng.standard_normal(val.shape, dtype=np.float32)
            val = np.sqrt((val + s * n1) ** 2 + (s * n2) ** 2)
        image[m][idx] = np.clip(np.round(val), 1, 32000)

    sx, sy, sz = (float(v) for v in spacing)
    affine = np.array([[-sx, 0, 0, 0.0], [0, -sy, 0, (shape[1] - 1) * sy],
                       [0, 0, sz, 0.0], [0, 0, 0, 1.0]])
    cid = case_id or f"phantom_{seed:03d}"
    case = case_from_arrays(cid, image, affine, label=labels if tumour else np.zeros_like(labels))
    # the geometry codes BraTS files carry: qform "aligned", sform "scanner"
    case.header.set_qform(affine, 2)
    case.header.set_sform(affine, 1)
    case.header.set_xyzt_units("mm", "sec")
    return case


def write_case(case: Case, folder: str | Path, naming: str = "brats2021",
               with_label: bool = True) -> Path:
    """Write ``case`` as a BraTS case folder ``folder/<case_id>/`` and return that folder.

    ``naming``: ``brats2021`` (``<id>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``
    with ET = 4) or ``brats2023`` (``<id>-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``
    with ET = 3). Images are written as int16, as BraTS releases them.
    """
    if naming == "brats2021":
        suffixes = {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair"}
        seg = "_seg"
    elif naming == "brats2023":
        suffixes = {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f"}
        seg = "-seg"
    else:
        raise InputError(f"Unknown naming {naming!r}; use brats2021 or brats2023.")
    from braintumor.io import save_whole

    out = Path(folder) / case.case_id
    out.mkdir(parents=True, exist_ok=True)
    for m, name in enumerate(MODALITIES):
        hdr = case.header.copy()
        hdr.set_data_dtype(np.int16)
        data = np.clip(np.round(case.image[m]), -32768, 32767).astype(np.int16)
        img = nib.Nifti1Image(data, case.affine, header=hdr)
        img.header.set_slope_inter(1.0, 0.0)
        # beside its place, then renamed in: a full disk leaves no cut-short scan
        save_whole(img, out / f"{case.case_id}{suffixes[name]}.nii.gz")
    if with_label and case.label is not None:
        from braintumor.io import save_label_nifti

        save_label_nifti(L.from_internal(case.label, naming), out / f"{case.case_id}{seg}.nii.gz",
                         reference=case.header, affine=case.affine)
    return out
