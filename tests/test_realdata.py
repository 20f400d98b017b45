"""The data layer on the real shared data (skipped when absent; set BRAINTUMOR_DATA).

Every BraTS case found is loaded (shapes, labels {0,1,2,4} -> internal, geometry round
trip of a written label map) and every LGG slice pair is read (256 x 256 RGB picture,
0/255 mask)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import labels as L
from braintumor.cases import MODALITIES, discover, load_case, write_label_map
from braintumor.io import read_image_2d

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_every_brats_case_loads_and_round_trips(brats_dir: Path, tmp_path: Path) -> None:
    sources = discover(brats_dir)
    folders = sorted(d for d in brats_dir.iterdir() if d.is_dir())
    assert len(sources) == len(folders) > 0
    for src in sources:
        assert src.kind == "brats2021" and src.label_path is not None
        assert set(src.modality_paths) == set(MODALITIES)
        case = load_case(src)
        assert case.image.shape == (4, 240, 240, 155), src.case_id
        assert case.spacing == pytest.approx((1.0, 1.0, 1.0))
        assert nib.aff2axcodes(case.affine) == ("L", "P", "S")
        # skull-stripped: every modality is 0 outside one brain mask of adult size
        mask = np.any(case.image != 0, axis=0)
        assert 1000 < mask.sum() * case.voxel_volume_ml < 2000, src.case_id
        raw = np.asarray(nib.load(str(src.label_path)).dataobj)
        assert set(np.unique(raw).tolist()) <= {0, 1, 2, 4}
        assert case.label_convention == "brats2021"
        assert case.label is not None and case.label.max() <= L.ET
        # internal values mean the same voxels: 4 -> ET, 1 -> NCR, 2 -> ED
        np.testing.assert_array_equal(case.label == L.ET, raw == 4)
        np.testing.assert_array_equal(case.label == L.NCR, raw == 1)
        np.testing.assert_array_equal(case.label == L.ED, raw == 2)
        assert mask[case.label > 0].mean() > 0.99  # the tumour lies in the brain
        # a written label map matches the original file: values and header geometry
        out = write_label_map(case, case.label, tmp_path / f"{src.case_id}.nii")
        back = nib.load(str(out))
        np.testing.assert_array_equal(np.asarray(back.dataobj), raw)
        ref = nib.load(str(src.modality_paths["t1"]))
        np.testing.assert_allclose(back.affine, ref.affine)
        for getter in ("get_qform", "get_sform"):
            m_ref, c_ref = getattr(ref.header, getter)(coded=True)
            m_out, c_out = getattr(back.header, getter)(coded=True)
            assert int(c_out) == int(c_ref)
            np.testing.assert_allclose(m_out, m_ref)
        out.unlink()


def test_every_lgg_slice_pair_reads(lgg_dir: Path) -> None:
    patients = sorted(d for d in lgg_dir.iterdir() if d.is_dir())
    assert patients
    n_pairs = n_tumour = 0
    for pat in patients:
        masks = sorted(pat.glob("*_mask.tif"))
        images = sorted(p for p in pat.glob("*.tif") if not p.name.endswith("_mask.tif"))
        assert len(images) == len(masks) > 0, pat.name
        for img_path in images:
            mask_path = img_path.with_name(img_path.stem + "_mask.tif")
            assert mask_path.exists(), img_path.name
            img = read_image_2d(img_path)
            mask = read_image_2d(mask_path)
            assert img.shape == (256, 256, 3) and img.dtype == np.uint8, img_path.name
            assert mask.shape == (256, 256, 1), mask_path.name
            values = set(np.unique(mask).tolist())
            assert values <= {0, 255}, mask_path.name
            n_pairs += 1
            n_tumour += 255 in values
    assert n_pairs >= len(patients) and 0 < n_tumour < n_pairs


def test_channel_check_on_real_cases_stacked_both_ways(brats_dir: Path) -> None:
    """A 4D file of the Decathlon's order passes the contrast check quietly, one stacked
    in BraTS's order (T1, T1ce, T2, FLAIR) and read as the Decathlon's warns (all 14
    cases were checked so; a few here)."""
    from braintumor.cases import MSD_ORDER, channel_order_note

    for name in ("Brats18_2013_11_1", "Brats18_CBICA_AME_1", "Brats18_TCIA10_639_1"):
        folder = brats_dir / name
        if not folder.is_dir():
            continue
        img = load_case(folder, with_label=False).image
        assert channel_order_note(img) is None, name
        misread = np.empty_like(img)
        for i, m in enumerate(MSD_ORDER):
            misread[MODALITIES.index(m)] = img[MODALITIES.index(("t1", "t1ce", "t2",
                                                                   "flair")[i])]
        assert channel_order_note(misread) is not None, name
