"""Rebuild ``mni152_tissue_brats_frame.nii.xz`` from nilearn's MNI152 2009a template.

Run once by a maintainer (needs nilearn; the package itself does not)::

    python src/braintumor/data/make_tissue_template.py

The ICBM 2009a symmetric template (197 x 233 x 189, 1 mm, RAS) is flipped to the BraTS
LPS voxel order and scaled/shifted into the 240 x 240 x 155 BraTS frame. The scale and
shift (:data:`FRAME_FIT`) were fitted once (Nelder-Mead, soft Dice 0.90 at 3 mm) to the
mean brain mask of 14 BraTS 2018 training cases, so the template's brain sits where a
BraTS brain sits; those cases are not needed to rebuild the file.

Outputs, each a 4D uint8 NIfTI compressed with xz, channels brain mask, grey matter,
white matter, values 0..31 with ``scl_slope = 1/31`` so a reader gets probabilities in
[0, 1] (CSF = brain - GM - WM; 32 levels keep the files small):

* ``mni152_tissue_brats_frame.nii.xz``: 1 mm, the brain's bounding box inside the
  BraTS frame (its affine places it there);
* ``mni152_tissue_brats_frame_3mm.nii.xz``: 3 mm block means of the whole frame, for
  small phantoms, which then never decompress the 1 mm file.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

#: (scale x, y, z; shift x, y, z): BraTS voxel b = scale * mni_flipped_voxel + shift
FRAME_FIT = (0.94975, 0.93945, 0.90653, 25.4913, 18.5138, 0.8888)
SHAPE = (240, 240, 155)
#: the BraTS file affine (LPS voxel order, 1 mm; RAS+ world as nibabel reports it)
BRATS_AFFINE = np.array(
    [[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
)
LEVELS = 31
OUT = Path(__file__).with_name("mni152_tissue_brats_frame.nii.xz")
OUT_3MM = Path(__file__).with_name("mni152_tissue_brats_frame_3mm.nii.xz")


def _save(data: np.ndarray, affine: np.ndarray, out: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, 2)
    img.header.set_sform(affine, 1)
    img.header.set_slope_inter(1.0 / LEVELS, 0.0)
    img.header["descrip"] = b"MNI152 2009a brain/GM/WM in BraTS frame"
    out.write_bytes(lzma.compress(img.to_bytes(), preset=9 | lzma.PRESET_EXTREME))


def build(out: Path = OUT, out_3mm: Path = OUT_3MM) -> tuple[Path, Path]:
    """Write both template files and return their paths."""
    import nilearn

    src = Path(nilearn.__file__).parent / "datasets" / "data"
    maps = {}
    for name in ("t1", "gm", "wm"):
        img = nib.load(str(src / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"))
        # RAS voxel order -> BraTS LPS voxel order
        maps[name] = np.asarray(img.dataobj, dtype=np.float32)[::-1, ::-1, :]  # type: ignore[attr-defined]
    grid = np.indices(SHAPE, dtype=np.float32)
    sc, sh = FRAME_FIT[:3], FRAME_FIT[3:]
    coords = np.stack([(grid[i] - sh[i]) / sc[i] for i in range(3)])
    res = {k: ndi.map_coordinates(v, coords, order=1, cval=0.0) for k, v in maps.items()}
    brain = res["t1"] > 20  # the template T1 is brain-masked: 0 outside
    gm = np.where(brain, res["gm"], 0.0) / 255.0
    wm = np.where(brain, res["wm"], 0.0) / 255.0
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    q = np.stack([brain.astype(np.float32), gm, wm], axis=-1)
    # 1 mm: crop to the brain's box (4 voxels margin)
    lo, hi = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.nonzero(brain.any(axis=other))[0]
        lo.append(max(int(idx[0]) - 4, 0))
        hi.append(min(int(idx[-1]) + 5, SHAPE[ax]))
    box = q[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    aff = BRATS_AFFINE.copy()
    aff[:3, 3] = BRATS_AFFINE[:3, :3] @ np.array(lo, float) + BRATS_AFFINE[:3, 3]
    _save(np.round(box * LEVELS).astype(np.uint8), aff, out)
    # 3 mm: block means over the whole frame (padded to a multiple of 3)
    pad = [(0, (-s) % 3) for s in SHAPE] + [(0, 0)]
    qp = np.pad(q, pad)
    n = [s // 3 for s in qp.shape[:3]]
    low = qp.reshape(n[0], 3, n[1], 3, n[2], 3, 3).mean(axis=(1, 3, 5))
    aff3 = BRATS_AFFINE.copy()
    aff3[:3, :3] *= 3
    aff3[:3, 3] = BRATS_AFFINE[:3, :3] @ np.ones(3) + BRATS_AFFINE[:3, 3]
    _save(np.round(low * LEVELS).astype(np.uint8), aff3, out_3mm)
    return out, out_3mm


if __name__ == "__main__":
    for path in build():
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
