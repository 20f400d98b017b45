"""2D slice pictures: data layout, preprocessing, inference plumbing, evaluation, training.

Synthetic pictures and a tiny untrained network keep these fast; the `realdata` tests
read a few shared LGG slices (skipped when absent) and the shipped weights (skipped
until they are in the package).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from braintumor import slices2d as s2d
from braintumor.errors import InputError

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------ helpers


def fake_slice(h: int = 96, w: int = 96, tumour: bool = True, seed: int = 0,
               grey: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A head-like ellipse on a dark background, optionally with a bright FLAIR blob:
    ``(H, W, 3)`` (or ``(H, W, 1)``) uint8 and its ``(H, W)`` bool tumour mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    head = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.33 * w)) ** 2 < 1
    blob = ((yy - 0.42 * h) ** 2 + (xx - 0.6 * w) ** 2) < (0.08 * min(h, w)) ** 2
    img = np.zeros((h, w, 3), np.float32)
    img[head] = (90, 80, 100)
    if tumour:
        img[blob, 1] = 200
    img += rng.normal(0, 4, img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if grey:
        out = out[..., 1:2]
    return out, (blob & tumour)


def write_tif(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    a = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    Image.fromarray(a).save(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> s2d.Model2D:
    """An untrained 3-level 2D U-Net at 32x32: exercises every code path in milliseconds."""
    cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8, 16]}, "size": 32,
           "threshold": 0.5, "min_fraction": 0.001}
    torch.manual_seed(0)
    net = s2d.build_network(cfg)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"state_dict": net.state_dict(), "config": cfg}, path)
    return s2d.load_model_2d(path)


def make_patient(folder: Path, n: int = 12, size: int = 64) -> None:
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        img, m = fake_slice(size, size, tumour=4 <= i <= 8, seed=i)
        write_tif(img, folder / f"{folder.name}_{i}.tif")
        write_tif((m * 255).astype(np.uint8), folder / f"{folder.name}_{i}_mask.tif")


# --------------------------------------------------------------------------- data


def test_slice_numbers_order_numerically(tmp_path: Path) -> None:
    make_patient(tmp_path / "TCGA_XX_0001_20000101", n=12)
    p = s2d.load_patient(tmp_path / "TCGA_XX_0001_20000101")
    assert list(p.numbers) == list(range(1, 13))  # not 1, 10, 11, 12, 2, ...
    assert p.images.shape == (12, 64, 64, 3) and p.masks is not None
    assert p.masks.shape == (12, 64, 64) and p.tumour_slices == 5
    assert s2d.slice_number("TCGA_A_B_7_mask.tif") == 7 or s2d.is_mask_name("x_7_mask.tif")
    assert s2d.slice_number("scan-003.png") == 3


def test_load_patient_refuses_mixed_sizes(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    write_tif(fake_slice(64, 64)[0], d / "p_1.tif")
    write_tif(fake_slice(80, 64)[0], d / "p_2.tif")
    with pytest.raises(InputError, match="p_2.tif"):
        s2d.load_patient(d)


def test_folds_are_patient_wise_and_seeded() -> None:
    ids = [f"TCGA_{site}_{i:04d}_2000" for site in ("CS", "DU", "FG", "HT") for i in range(6)]
    folds = s2d.make_folds(ids, k=4, seed=0)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == sorted(ids) and len(set(flat)) == len(ids)
    assert all(len(f) == 6 for f in folds)
    assert all(len({p.split("_")[1] for p in f}) >= 3 for f in folds)  # sites mixed
    assert folds == s2d.make_folds(ids, k=4, seed=0)
    assert folds != s2d.make_folds(ids, k=4, seed=1)


# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("shape", [(96, 96), (120, 80), (70, 200)])
def test_prepare_and_restore_keep_geometry(shape: tuple[int, int]) -> None:
    img, mask = fake_slice(*shape)
    x, geo = s2d.prepare_input(img, 64)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    # the mask sent through the same square/resize path comes back where it was
    sq, _ = s2d.to_square((mask * 255).astype(np.uint8)[..., None], 64)
    back = s2d.restore(sq[..., 0] / 255.0, geo) > 0.5
    assert back.shape == shape
    assert s2d.dice(back, mask) > 0.85


def test_normalise_ignores_the_viewer_window() -> None:
    img, _ = fake_slice()
    dim = (img.astype(np.float32) * 0.5).astype(np.uint8)
    a, b = s2d.normalise(img), s2d.normalise(dim)
    assert a.shape == (3, 96, 96)
    assert np.abs(a - b).mean() < 0.03


def test_greyscale_becomes_three_equal_channels() -> None:
    g, _ = fake_slice(grey=True)
    x, _ = s2d.prepare_input(g, 32)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[1], x[2])
    assert s2d.is_greyscale(g) and not s2d.is_greyscale(fake_slice()[0])


def test_check_image_tells_blank_photo_and_mri_apart() -> None:
    assert s2d.check_image(fake_slice()[0]) is None
    assert "blank" in (s2d.check_image(np.zeros((50, 60, 3), np.uint8)) or "")
    rng = np.random.default_rng(0)
    photo = rng.integers(60, 255, (80, 100, 3)).astype(np.uint8)
    assert "does not look like" in (s2d.check_image(photo) or "")


# ----------------------------------------------------------------------- networks


@pytest.mark.parametrize("name", ["unet2d", "basicunet2d"])
def test_2d_networks_registered_and_run(name: str) -> None:
    from braintumor.networks import create_network, list_networks, network_info

    assert name in list_networks(dims=2) and network_info(name)["dims"] == 2
    net = create_network(name).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1, 64, 64) and torch.isfinite(y).all()


# ---------------------------------------------------------------------- inference


@pytest.mark.parametrize("grey", [False, True])
def test_segment_image_any_size(tiny_model: s2d.Model2D, grey: bool) -> None:
    img, _ = fake_slice(77, 131, grey=grey)
    res = s2d.segment_image(img, tiny_model)
    assert res.mask.shape == (77, 131) and res.mask.dtype == bool
    assert res.probability.shape == (77, 131)
    assert 0.0 <= res.probability.min() <= res.probability.max() <= 1.0
    assert res.info["area_pixels"] == int(res.mask.sum())
    assert ("greyscale" in res.info["input"]) == grey
    assert "warning" not in res.info


def test_greyscale_pictures_go_to_the_greyscale_specialist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a greyscale specialist installed, greyscale pictures (and stacks) use it,
    colour ones the main model; without it everything uses the main model."""
    for name, size in ((s2d.MODEL_FILE, 32), (s2d.MODEL_FILE_GREY, 48)):
        cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8, 16]}, "size": size,
               "threshold": 0.5, "min_fraction": 0.001}
        torch.save({"state_dict": s2d.build_network(cfg).state_dict(), "config": cfg},
                   tmp_path / name)
    monkeypatch.setattr(s2d, "MODEL_DIR", tmp_path)
    grey, _ = fake_slice(60, 70, grey=True)
    colour, _ = fake_slice(60, 70, grey=False)
    assert s2d.segment_image(grey).info["model"] == s2d.MODEL_FILE_GREY
    assert s2d.pick_model(None, [grey])[0].size == 48
    assert s2d.segment_image(colour).info["model"] == s2d.MODEL_FILE
    assert {r.info["model"] for r in s2d.segment_stack([grey, grey])} == {s2d.MODEL_FILE_GREY}
    # one colour slice in the stack: the whole stack goes to the main model
    assert {r.info["model"] for r in s2d.segment_stack([grey, colour])} == {s2d.MODEL_FILE}
    (tmp_path / s2d.MODEL_FILE_GREY).unlink()
    assert s2d.segment_image(grey).info["model"] == s2d.MODEL_FILE


def test_stacks_use_the_stack_threshold(tiny_model: s2d.Model2D) -> None:
    """A stack is cut at the model's ``stack_threshold``, a single picture at its
    ``threshold``; without a stack threshold both use ``threshold``."""
    import dataclasses

    img, _ = fake_slice(48, 48)
    prob = s2d.segment_image(img, tiny_model).probability
    lo, hi = float(np.quantile(prob, 0.3)), float(np.quantile(prob, 0.7))
    assert tiny_model.stack_threshold == tiny_model.threshold
    m = dataclasses.replace(tiny_model, config={**tiny_model.config, "threshold": hi,
                                                "stack_threshold": lo, "min_fraction": 0.0})
    single = s2d.segment_image(img, m).mask
    stack = s2d.segment_stack([img], m, keep="all")[0].mask
    assert np.array_equal(single, prob >= hi) and np.array_equal(stack, prob >= lo)
    assert stack.sum() > single.sum()


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2


def test_refinement_grows_the_outline_to_flair_edges() -> None:
    """A network that under-outlines a sharp FLAIR lesion (a soft probability cut at 0.5
    inside the lesion's edge) is grown out to the edge; a bright blob elsewhere that the
    outline does not reach stays out; an outline too large is never cut."""
    from scipy import ndimage

    shape = (256, 256)
    lesion = _disc(shape, (120, 128), 30)
    other = _disc(shape, (40, 40), 12)  # bright, but far from the network's outline
    flair = np.where(lesion | other, 200.0, 90.0) + np.random.default_rng(0).normal(0, 3, shape)
    prob = ndimage.gaussian_filter(_disc(shape, (120, 128), 26).astype(np.float32), 3)
    base = prob >= 0.5
    refined = s2d.refine_masks(prob, flair, base, (0.05, 1.0))
    assert s2d.dice(base, lesion) < 0.9 and s2d.dice(refined, lesion) > 0.97
    assert not (refined & other).any() and (refined >= base).all()
    assert np.array_equal(s2d.refine_masks(prob, flair, base, None), base)
    # the outline grows no further than where the network gives sure_out or more
    strict = s2d.refine_masks(prob, flair, base, (0.45, 1.0))
    assert (strict <= (prob >= 0.45)).all() and strict.sum() < refined.sum()
    # too large an outline stays as it is; a stack is refined slice by slice
    wide = _disc(shape, (120, 128), 40)
    out = s2d.refine_masks(np.stack([prob, prob]), np.stack([flair, flair]),
                           np.stack([base, wide]), (0.05, 1.0))
    assert np.array_equal(out[0], refined) and np.array_equal(out[1], wide)
    # distances scale with the picture: the same scene at twice the size refines alike
    big = s2d.refine_masks(np.kron(prob, np.ones((2, 2))), np.kron(flair, np.ones((2, 2))),
                           np.kron(base, np.ones((2, 2), bool)), (0.05, 1.0))
    assert s2d.dice(big, np.kron(lesion, np.ones((2, 2), bool))) > 0.97


def test_the_cut_form_moves_an_edge_inwards_too() -> None:
    """``(sure_out, sure_in, sigma)``: only the outline's sure pixels are tumour markers,
    so an outline that reaches past the FLAIR edge is cut back to it (the form measured
    and not shipped); a slice without a sure pixel keeps its outline."""
    from scipy import ndimage

    shape = (256, 256)
    lesion = _disc(shape, (120, 128), 30)
    flair = np.where(lesion, 200.0, 90.0) + np.random.default_rng(1).normal(0, 3, shape)
    prob = ndimage.gaussian_filter(_disc(shape, (120, 128), 33).astype(np.float32), 3)
    wide = prob >= 0.2  # reaches past the edge
    assert s2d.dice(wide, lesion) < 0.9
    assert np.array_equal(s2d.refine_masks(prob, flair, wide, (0.05, 2.0)), wide)  # grow only
    cut = s2d.refine_masks(prob, flair, wide, (0.05, 0.9, 2.0))
    assert s2d.dice(cut, lesion) > 0.97 and cut.sum() < wide.sum()
    faint = s2d.refine_masks(0.5 * prob, flair, wide, (0.05, 0.9, 2.0))
    assert np.array_equal(faint, wide)


def test_refine_settings_checked() -> None:
    assert s2d.refine_setting(None) is None and s2d.refine_setting([0.05, 2]) == (0.05, 2.0)
    assert s2d.refine_setting([0.1, 0.9, 2]) == (0.1, 0.9, 2.0)
    for bad in ([1.5, 1.0], [0.1, 0.0], [0.9, 0.1, 1.0], [0.1, 0.9, 1.0, 2.0], "strong"):
        with pytest.raises(InputError, match="2D refinement"):
            s2d.refine_setting(bad)
    with pytest.raises(InputError, match="differ in shape"):
        s2d.refine_masks(np.ones((4, 4)), np.ones((4, 5)), np.ones((4, 4), bool), (0.1, 1.0))


def test_refinement_follows_the_picture_kind(tiny_model: s2d.Model2D) -> None:
    """The config's ``refine_colour`` serves colour pictures, ``refine_grey`` greyscale
    ones, for single pictures and stacks, on the FLAIR the picture holds."""
    import dataclasses

    m = dataclasses.replace(tiny_model, config={**tiny_model.config, "min_fraction": 0.0,
                                                "refine_colour": [0.3, 1.0]})
    img, _ = fake_slice(48, 48)
    res = s2d.segment_image(img, m)
    plain = s2d.postprocess_slice(res.probability, m.threshold, 0.0)
    assert res.info.get("refined") is True
    assert np.array_equal(res.mask, s2d.refine_masks(res.probability, img[..., 1], plain,
                                                     (0.3, 1.0)))
    stack = s2d.segment_stack([img, img], m, keep="all")
    assert all(r.info.get("refined") for r in stack)
    grey, _ = fake_slice(48, 48, grey=True)
    g = s2d.segment_image(grey, m)
    assert "refined" not in g.info
    assert np.array_equal(g.mask, s2d.postprocess_slice(g.probability, m.threshold, 0.0))
    assert s2d.flair_of(grey)[5, 5] == grey[5, 5, 0] and s2d.flair_of(img)[5, 5] == img[5, 5, 1]


def test_refinement_chosen_without_the_held_out_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold's refinement is the best on the other folds' patients only (for colour on
    RGB Dice, for greyscale on greyscale Dice), and none wins unless another gains more
    than the bar."""
    from braintumor import training2d as t2

    folds = [{"fold": k, "patients": [f"p{k}"]} for k in range(3)]

    def fake_score(self: t2.RefineScores, post: str, k: int, mode: str,
                   pid: str) -> dict[str, float]:
        if mode in ("rgb", "jpeg50"):
            # refinement 2 helps everyone but p0, who alone would pick refinement 1
            d = {0: 0.70, 1: 0.72, 2: 0.80}.get(k, 0.5) if pid != "p0" else \
                {0: 0.70, 1: 0.74, 2: 0.70}.get(k, 0.5)
        else:
            d = 0.6 + (0.001 if k == 3 else 0.0)  # under the bar
        return {"dice": d}

    def fake_init(self: t2.RefineScores, cfg: object, folds: object) -> None:
        self.candidates = t2.REFINEMENTS

    monkeypatch.setattr(t2.RefineScores, "__init__", fake_init)
    monkeypatch.setattr(t2.RefineScores, "score", fake_score)
    rows, picks, final = t2.refine_selection(t2.Train2DConfig(), folds,
                                             ["longest"] * 3, ("rgb", "grey", "jpeg50"),
                                             "longest")
    assert [p["colour"] for p in picks] == [2, 2, 2] and all(p["grey"] == 0 for p in picks)
    assert rows["refined"]["rgb"]["p0"]["dice"] == 0.70  # not its own best, 0.74
    assert rows["refined"]["jpeg50"]["p1"]["dice"] == 0.80  # JPEG pictures are colour
    assert final == {"colour": 2, "grey": 0}


def test_segment_image_blank_and_photo_do_not_crash(tiny_model: s2d.Model2D) -> None:
    blank = s2d.segment_image(np.zeros((40, 50), np.uint8), tiny_model)
    assert not blank.mask.any() and "blank" in blank.info["warning"]
    photo = np.random.default_rng(1).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    res = s2d.segment_image(photo, tiny_model)
    assert res.mask.shape == (64, 64) and "warning" in res.info
    with pytest.raises(InputError):
        s2d.segment_image(np.zeros((3, 3), np.uint8), tiny_model)


def test_postprocess_stack_keeps_the_largest_3d_component() -> None:
    probs = np.zeros((5, 40, 40), np.float32)
    probs[1:4, 10:20, 10:20] = 0.9  # the lesion, three slices
    probs[0, 30:36, 30:36] = 0.8  # an island elsewhere
    kept = s2d.postprocess_stack(probs, 0.5, 0.001, keep="largest")
    assert kept[1:4, 10:20, 10:20].all() and not kept[0].any()
    assert s2d.postprocess_stack(probs, 0.5, 0.001, keep="all")[0].any()
    # specks under min_fraction go in either mode
    probs[4, 0, 0] = 0.99
    assert not s2d.postprocess_stack(probs, 0.5, 0.01, keep="all")[4].any()


def test_postprocess_stack_longest_rule_prefers_slice_extent() -> None:
    probs = np.zeros((8, 40, 40), np.float32)
    probs[1:6, 10:14, 10:14] = 0.9  # the lesion: small, five slices
    probs[6:8, 20:38, 20:38] = 0.9  # a flat blob on the top two slices, larger
    largest = s2d.postprocess_stack(probs, 0.5, 0.0, keep="largest")
    longest = s2d.postprocess_stack(probs, 0.5, 0.0, keep="longest")
    assert largest[7].any() and not largest[3].any()
    assert longest[1:6, 10:14, 10:14].all() and not longest[6:].any()
    with pytest.raises(InputError, match="rule"):
        s2d.postprocess_stack(probs, keep="biggest")


def test_mirror_averaging_is_mirror_symmetric(tiny_model: s2d.Model2D) -> None:
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    m = s2d.Model2D(tiny_model.network, {**tiny_model.config, "tta": True})
    a = s2d.predict_batch(m, x)
    b = s2d.predict_batch(m, np.ascontiguousarray(x[..., ::-1]))
    assert np.allclose(a, b[..., ::-1], atol=1e-5)
    plain = s2d.predict_batch(tiny_model, x)
    assert not np.allclose(plain, s2d.predict_batch(tiny_model, np.ascontiguousarray(
        x[..., ::-1]))[..., ::-1], atol=1e-5)


def test_four_flip_averaging_is_invariant_to_both_flips(tiny_model: s2d.Model2D) -> None:
    x = np.random.default_rng(1).random((2, 3, 32, 32)).astype(np.float32)
    m = s2d.Model2D(tiny_model.network, {**tiny_model.config, "tta": "hv"})
    a = s2d.predict_batch(m, x)
    for flip in ((-1,), (-2,), (-1, -2)):
        b = s2d.predict_batch(m, np.ascontiguousarray(np.flip(x, flip)))
        assert np.allclose(a, np.flip(b, flip), atol=1e-5)
    # the left-right pair alone is not invariant upside down
    h = s2d.Model2D(tiny_model.network, {**tiny_model.config, "tta": True})
    ud = s2d.predict_batch(h, np.ascontiguousarray(x[:, :, ::-1]))[:, ::-1]
    assert not np.allclose(s2d.predict_batch(h, x), ud, atol=1e-5)
    # the four views' mean, computed by hand
    with torch.inference_mode():
        t = torch.as_tensor(x)
        ref = sum(torch.sigmoid(tiny_model.network(t.flip(d) if d else t))[:, 0].flip(d)
                  if d else torch.sigmoid(tiny_model.network(t))[:, 0]
                  for d in ([], [-1], [-2], [-1, -2])) / 4
    assert np.allclose(a, ref.numpy(), atol=1e-6)


def test_tta_settings() -> None:
    assert s2d.tta_views(False) == ("",)
    assert s2d.tta_views(True) == s2d.tta_views("h") == ("", "h")
    assert len(s2d.tta_views("HV")) == 4
    with pytest.raises(InputError, match="tta"):
        s2d.tta_views("rot90")


def test_reeval_judges_earlier_fold_models_again(tmp_path: Path) -> None:
    from dataclasses import replace

    from braintumor import training2d as t2

    for k in range(4):
        make_patient(tmp_path / "data" / f"P{k}", n=6, size=32)
    cfg = replace(t2.Train2DConfig(), data=str(tmp_path / "data"), out=str(tmp_path / "a"),
                  network_kwargs={"channels": [4, 8]}, size=32, batch=4, steps=2, folds=2,
                  checkpoint_every=2)
    t2.run_cv(cfg)
    again = replace(cfg, out=str(tmp_path / "b"), tta="hv")
    t2.run_reeval(again, tmp_path / "a")
    for k in range(2):
        a = json.loads((tmp_path / "a" / "cv" / f"fold{k}" / "metrics.json").read_text())
        b = json.loads((tmp_path / "b" / "cv" / f"fold{k}" / "metrics.json").read_text())
        assert a["patients"] == b["patients"] and a["train_seconds"] == b["train_seconds"]
        assert set(b["results"]) == {"rgb", "grey", "jpeg50"}
        pid = a["patients"][0]
        pa = np.load(tmp_path / "a" / "cv" / f"fold{k}" / "probs" / f"{pid}_rgb.npz")["prob"]
        pb = np.load(tmp_path / "b" / "cv" / f"fold{k}" / "probs" / f"{pid}_rgb.npz")["prob"]
        assert pa.shape == pb.shape and not np.array_equal(pa, pb)  # other views averaged
    table = (t2.run_report(again, tmp_path / "rep") / "cv_results.md").read_text()
    assert table.count("4 (as is, mirrored, upside down, both)") == 1
    assert "**stack, rule and refinement chosen on the other folds**" in table
    rep = json.loads((tmp_path / "rep" / "cv_results.json").read_text())
    assert set(rep["refine_for_all_patients"]) == {"colour", "grey"}
    assert len(rep["patients"]["rgb"]["refined"]) == 4
    with pytest.raises(InputError, match="folds.json"):
        t2.run_reeval(again, tmp_path / "nowhere")


def test_predict_images_writes_masks_and_overlays(tiny_model: s2d.Model2D,
                                                  tmp_path: Path) -> None:
    from PIL import Image

    img, _ = fake_slice(70, 90)
    src = tmp_path / "slice.png"
    Image.fromarray(img).save(src)
    jpg = tmp_path / "grey.jpg"
    Image.fromarray(fake_slice(50, 50, grey=True)[0][..., 0]).save(jpg, quality=70)
    make_patient(tmp_path / "patientA", n=6, size=48)
    lines: list[str] = []
    out = s2d.predict_images([src, jpg, tmp_path / "patientA"], tmp_path / "out",
                             model=tiny_model, log=lines.append)
    names = {p.name for p in out}
    assert {"slice_mask.png", "slice_overlay.png", "grey_mask.png"} <= names
    m = np.asarray(Image.open(tmp_path / "out" / "slice_mask.png"))
    assert m.shape == (70, 90) and set(np.unique(m)) <= {0, 255}
    ov = np.asarray(Image.open(tmp_path / "out" / "slice_overlay.png"))
    assert ov.shape == (70, 90, 3)
    # the folder is one patient: masks only for images, in a sub-folder
    stack = sorted((tmp_path / "out" / "patientA").glob("*_mask.png"))
    assert len(stack) == 6 and not any("_mask_mask" in p.name for p in stack)
    assert len([x for x in lines if "tumour area" in x]) == 8
    assert any(x.startswith("patientA: segmented as one stack of 6") for x in lines)
    import csv

    rows = list(csv.DictReader((tmp_path / "out" / "areas_2d.csv").open()))
    assert len(rows) == 8 and [r["stack"] for r in rows].count("patientA") == 6
    assert int(rows[0]["area_pixels"]) == int((m > 0).sum()) and rows[0]["area_mm2"] == ""
    with_lesion = [r for r in rows if r["longest"]]
    assert all(r["diameter_unit"] == "pixels" for r in with_lesion)
    assert all(float(r["longest"]) >= float(r["perpendicular"]) > 0 for r in with_lesion)
    # with the pixel size: mm^2 as well
    lines.clear()
    s2d.predict_images([src], tmp_path / "mm", model=tiny_model, log=lines.append,
                       pixel_mm=0.5)
    row = next(csv.DictReader((tmp_path / "mm" / "areas_2d.csv").open()))
    assert float(row["area_mm2"]) == pytest.approx(0.25 * int(row["area_pixels"]))
    if rows[0]["longest"]:  # the same outline, its diameters now in mm
        assert row["diameter_unit"] == "mm"
        assert float(row["longest"]) == pytest.approx(0.5 * float(rows[0]["longest"]), abs=0.1)
    assert "mm^2" in lines[0]
    with pytest.raises(InputError, match="pixel size"):
        s2d.predict_images([src], tmp_path / "o3", model=tiny_model, pixel_mm=0)
    with pytest.raises(InputError, match="not found"):
        s2d.predict_images([tmp_path / "nope.png"], tmp_path / "o2", model=tiny_model)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="PNG/JPEG/TIFF"):
        s2d.predict_images([tmp_path / "notes.txt"], tmp_path / "o2", model=tiny_model)


def test_mask_of_a_turned_jpeg_overlays_it_as_shown(tiny_model: s2d.Model2D,
                                                   tmp_path: Path) -> None:
    """A picture whose EXIF orientation turns it (a phone's JPEG, stored 90 x 60, shown 60 x
    90) gets its mask and overlay as it is shown."""
    from PIL import Image

    img, _ = fake_slice(60, 90)
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    s2d.predict_images([tmp_path / "phone.jpg"], tmp_path / "out", model=tiny_model)
    with Image.open(tmp_path / "phone.jpg") as shown:
        from PIL import ImageOps

        size = ImageOps.exif_transpose(shown).size
    assert size == (60, 90)
    assert Image.open(tmp_path / "out" / "phone_mask.png").size == size
    assert Image.open(tmp_path / "out" / "phone_overlay.png").size == size


def test_one_bad_picture_leaves_the_others(tiny_model: s2d.Model2D, tmp_path: Path) -> None:
    """An unreadable picture, a second picture of one name, a picture whose reference
    mask lies where its output would go: each refused in a sentence, the rest written;
    a folder of unnumbered pictures is not one patient's stack."""
    from PIL import Image

    img, _ = fake_slice(40, 40)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "a.jpg")  # same stem: its mask would clash
    (tmp_path / "fake.png").write_bytes(b"not a picture")
    Image.fromarray(img).save(tmp_path / "b.png")
    two = tmp_path / "two_patients"
    two.mkdir()
    for name in ("patientA.png", "patientB.png"):
        Image.fromarray(fake_slice(40, 40)[0]).save(two / name)
    errors: list[InputError] = []
    lines: list[str] = []
    out = s2d.predict_images([tmp_path / "a.png", tmp_path / "fake.png", tmp_path / "a.jpg",
                              tmp_path / "b.png", two], tmp_path / "out", model=tiny_model,
                             log=lines.append, on_error=errors.append)
    assert [type(e) for e in errors] == [InputError, InputError]
    assert "not a readable image" in str(errors[0]) and "same name" in str(errors[1])
    names = {p.relative_to(tmp_path / "out").as_posix() for p in out}
    assert {"a_mask.png", "b_mask.png", "two_patients/patientA_mask.png",
            "two_patients/patientB_mask.png", "areas_2d.csv"} <= names
    assert any("not numbered slices" in line for line in lines)
    rows = (tmp_path / "out" / "areas_2d.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and all(",two_patients," not in r for r in rows)  # no stack
    # a second run into the folder keeps the other pictures' rows, replaces its own
    s2d.predict_images([tmp_path / "b.png"], tmp_path / "out", model=tiny_model)
    again = (tmp_path / "out" / "areas_2d.csv").read_text().splitlines()
    assert sorted(again) == sorted(rows)
    # without on_error the first failure is raised
    with pytest.raises(InputError, match="not a readable image"):
        s2d.predict_images([tmp_path / "fake.png", tmp_path / "b.png"], tmp_path / "o2",
                           model=tiny_model)
    # outputs into the picture's own folder, where its reference mask lies: refused
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "b_mask.png")
    before = (tmp_path / "b_mask.png").read_bytes()
    with pytest.raises(InputError, match="beside it"):
        s2d.predict_images([tmp_path / "b.png"], tmp_path, model=tiny_model)
    assert (tmp_path / "b_mask.png").read_bytes() == before


def test_is_2d_input(tmp_path: Path) -> None:
    make_patient(tmp_path / "data" / "p1", n=3, size=32)
    assert s2d.is_2d_input(tmp_path / "data" / "p1")
    assert s2d.is_2d_input(tmp_path / "data")
    assert s2d.is_2d_input(tmp_path / "data" / "p1" / "p1_1.tif")
    (tmp_path / "nii").mkdir()
    (tmp_path / "nii" / "a.nii.gz").write_bytes(b"")
    assert not s2d.is_2d_input(tmp_path / "nii")


# --------------------------------------------------------------------- evaluation


def test_stack_metrics_hand_checked() -> None:
    ref = np.zeros((4, 10, 10), bool)
    pred = np.zeros_like(ref)
    ref[1, 0:4, 0:5] = True  # 20 px
    pred[1, 0:4, 0:4] = True  # 16 px, all inside
    ref[2, 5:7, 5:7] = True  # missed slice (4 px)
    pred[3, 0, 0] = True  # false positive on a tumour-free slice
    m = s2d.stack_metrics(pred, ref)
    assert m["dice"] == pytest.approx(2 * 16 / (17 + 24))
    assert m["slice_dice_mean"] == pytest.approx((2 * 16 / 36 + 0.0) / 2)
    assert (m["tumour_slices"], m["tumour_free_slices"]) == (2, 2)
    assert (m["fp_slices"], m["missed_slices"]) == (1, 1)
    s = s2d.summarise({"a": m, "b": s2d.stack_metrics(ref, ref)})
    assert s["dice_mean"] == pytest.approx((m["dice"] + 1.0) / 2)
    assert s["fp_rate"] == pytest.approx(1 / 4)


def test_evaluate_2d_on_mask_folders(tmp_path: Path) -> None:
    from PIL import Image

    make_patient(tmp_path / "ref" / "P1", n=5, size=32)
    pred = tmp_path / "pred" / "P1"
    pred.mkdir(parents=True)
    for i in (1, 3, 4, 5):  # slice 2 (tumour-free) has no prediction
        m = np.asarray(Image.open(tmp_path / "ref" / "P1" / f"P1_{i}_mask.tif"))
        Image.fromarray(m).save(pred / f"P1_{i}_mask.png")
    res = s2d.evaluate_2d(tmp_path / "pred", tmp_path / "ref")
    assert res["missing"] == ["P1_2"]
    assert res["patients"]["P1"]["slices"] == 5
    # a missing slice is no right empty one: no volume Dice, no tumour-free slice
    assert np.isnan(res["patients"]["P1"]["dice"]) and np.isnan(res["summary"]["dice_mean"])
    assert res["summary"]["tumour_slices"] == 2 and res["summary"]["tumour_free_slices"] == 2
    assert res["summary"]["missing_slices_pred"] == 1
    json.dumps(res)
    assert s2d.has_2d_masks(tmp_path / "ref") and s2d.has_2d_masks(tmp_path / "pred")
    assert not s2d.has_2d_masks(tmp_path / "nowhere")
    rows = s2d.rows_2d(res)
    assert [r["patient"] for r in rows] == ["P1", "mean"] and rows[-1]["slices"] == 5
    with pytest.raises(InputError):
        s2d.evaluate_2d(tmp_path / "ref", tmp_path / "empty")


# ----------------------------------------------------------------------- training


def test_augment_shapes_and_grey_mode() -> None:
    from dataclasses import replace

    from braintumor.training2d import Train2DConfig, augment

    img, mask = fake_slice(64, 64)
    cfg = replace(Train2DConfig(), p_grey_flair=1.0, p_jpeg=1.0, p_resize=1.0)
    x, y = augment(img, mask.astype(np.float32), cfg, np.random.default_rng(0))
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64)
    assert set(np.unique(y)) <= {0.0, 1.0} and y.sum() > 0
    assert np.allclose(x[0], x[1]) and np.allclose(x[1], x[2])
    # a channel lifted onto a grey floor: its background is no longer black
    lifted = replace(Train2DConfig(), p_channel_offset=1.0, p_grey_flair=0.0, p_grey_mix=0.0,
                     p_window=0.0, p_channel_gain=0.0, p_jpeg=0.0, p_resize=0.0)
    x, _ = augment(img, mask.astype(np.float32), lifted, np.random.default_rng(1))
    assert max(float(x[c, :4, :4].min()) for c in range(3)) > 0.1


def test_train_resumes_and_exports(tmp_path: Path) -> None:
    from dataclasses import replace

    from braintumor import training2d as t2

    pats = []
    for k in range(2):
        make_patient(tmp_path / "data" / f"P{k}", n=6, size=32)
        pats.append(s2d.load_patient(tmp_path / "data" / f"P{k}"))
    cfg = replace(t2.Train2DConfig(), network_kwargs={"channels": [4, 8]}, size=32, batch=4,
                  steps=4, checkpoint_every=2)
    data = t2.to_slice_set(pats, 32)
    assert data.images.shape == (12, 32, 32, 3)
    run = tmp_path / "run"
    t2.train(replace(cfg, steps=2), data, run)  # stops at 2 steps: last.pt, final.pt
    (run / "final.pt").unlink()
    t2.train(cfg, data, run)  # resumes from step 2
    ck = torch.load(run / "final.pt", map_location="cpu", weights_only=False)
    assert ck["log"] == [] or ck["log"][-1]["step"] <= 4
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert last["step"] == 4
    dest = t2.export_model(run / "final.pt", tmp_path / "ship.pt", cfg)
    model = s2d.load_model_2d(dest)
    assert s2d.segment_image(fake_slice(40, 40)[0], model).mask.shape == (40, 40)


def test_2d_training_locks_its_folder_and_removes_killed_saves_temporaries(
        tmp_path: Path) -> None:
    """The 2D trainer, as the 3D one, holds its folder's lock: a second trainer on it is
    refused, and the temporary file a save killed hard left (``.last.<pid>-...part.pt``)
    is removed at the start; other files stay."""
    from dataclasses import replace

    from braintumor import training2d as t2
    from braintumor.errors import InputError
    from braintumor.training.trainer import lock_run_folder

    make_patient(tmp_path / "data" / "P0", n=4, size=32)
    data = t2.to_slice_set([s2d.load_patient(tmp_path / "data" / "P0")], 32)
    cfg = replace(t2.Train2DConfig(), network_kwargs={"channels": [4, 8]}, size=32, batch=2,
                  steps=1, checkpoint_every=1)
    run = tmp_path / "run"
    run.mkdir()
    left = run / ".last.4242-4243-a1b2c3.part.pt"
    kept = run / ".notes.part.txt"
    for f in (left, kept):
        f.write_bytes(b"x" * 1000)
    held = lock_run_folder(run)
    try:
        with pytest.raises(InputError, match="is being trained by another process"):
            t2.train(cfg, data, run)
    finally:
        held.close()
    assert left.exists() and not (run / "final.pt").exists()
    t2.train(cfg, data, run)
    assert not left.exists() and kept.exists() and (run / "final.pt").exists()


def test_packed_slices_train_elsewhere_and_are_judged_here(tmp_path: Path) -> None:
    """A GPU machine trains the folds from the packed slices alone; the judging on the
    pictures themselves happens afterwards without training again."""
    import os
    from dataclasses import replace

    from braintumor import training2d as t2

    for k in range(4):
        make_patient(tmp_path / "data" / f"P{k}", n=6, size=40)
    pack = tmp_path / "slices.npz"
    assert t2.main(["pack", "--data", str(tmp_path / "data"), "--dest", str(pack),
                    "--config", str(_cfg_file(tmp_path, size=32))]) == 0
    packed = t2.load_slice_cache(pack)
    direct = t2.to_slice_set(s2d.load_lgg(tmp_path / "data"), 32)
    assert np.array_equal(packed.images, direct.images)
    assert np.abs(packed.masks - direct.masks).max() <= 0.5 / 255 + 1e-7
    assert list(packed.patient) == list(direct.patient)
    part = t2.subset(packed, ["P1", "P3"])
    assert set(part.patient) == {"P1", "P3"} and len(part.images) == 12

    cfg = replace(t2.Train2DConfig(), data=str(tmp_path / "absent"), out=str(tmp_path / "run"),
                  network_kwargs={"channels": [4, 8]}, size=32, batch=4, steps=2, folds=2,
                  checkpoint_every=2, slice_cache=str(pack))
    t2.run_cv(cfg, train_only=True)  # the pictures are not at hand: train only
    cv = tmp_path / "run" / "cv"
    finals = [cv / f"fold{k}" / "final.pt" for k in range(2)]
    assert all(f.exists() for f in finals)
    assert not any((cv / f"fold{k}" / "metrics.json").exists() for k in range(2))
    folds = s2d.load_folds(cv / "folds.json")
    assert folds == s2d.make_folds([f"P{k}" for k in range(4)], 2, 0)
    stamps = [os.stat(f).st_mtime_ns for f in finals]
    t2.run_cv(replace(cfg, data=str(tmp_path / "data")))  # here: judged, not retrained
    assert [os.stat(f).st_mtime_ns for f in finals] == stamps
    for k in range(2):
        rec = json.loads((cv / f"fold{k}" / "metrics.json").read_text())
        assert rec["patients"] == folds[k]
        log = torch.load(finals[k], map_location="cpu", weights_only=False)["log"]
        assert rec["train_seconds"] == (log[-1]["seconds"] if log else rec["train_seconds"])


def test_an_ensemble_averages_its_members_probabilities(tmp_path: Path) -> None:
    from dataclasses import replace

    from braintumor import training2d as t2

    for k in range(4):
        make_patient(tmp_path / "data" / f"P{k}", n=6, size=32)
    base = replace(t2.Train2DConfig(), data=str(tmp_path / "data"),
                   network_kwargs={"channels": [4, 8]}, size=32, batch=4, steps=2, folds=2,
                   checkpoint_every=2)
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        t2.run_cv(replace(base, out=str(run), seed=seed))
    cks = [r / "cv" / "fold0" / "final.pt" for r in runs]
    ens = s2d.load_model_2d(t2.export_model(cks, tmp_path / "ens.pt", base))
    members = [s2d.load_model_2d(t2.export_model(c, tmp_path / f"m{i}.pt", base))
               for i, c in enumerate(cks)]
    x = np.stack([s2d.prepare_input(fake_slice(32, 32, seed=i)[0], 32)[0] for i in range(3)])
    want = np.mean([s2d.predict_batch(m, x) for m in members], axis=0)
    assert not np.allclose(*[s2d.predict_batch(m, x) for m in members], atol=1e-3)
    assert np.allclose(s2d.predict_batch(ens, x), want, atol=1e-5)
    # the ensemble's ONNX export (its mean and logit in the graph) runs without PyTorch
    # and agrees with the weights
    from importlib.util import find_spec

    if find_spec("onnx") and (find_spec("onnxruntime") or find_spec("openvino")):
        assert all(f.exists() for f in s2d.onnx_files(tmp_path / "ens.pt"))
        assert hasattr(ens.network, "run")
        slow = s2d.load_model_2d(tmp_path / "ens.pt", onnx=False)
        assert not hasattr(slow.network, "run")
        np.testing.assert_allclose(s2d.predict_batch(slow, x), want, atol=1e-5)
    else:  # no exporter or runtime installed: the weights run with PyTorch
        assert not hasattr(ens.network, "run")
    # cross-validated as an ensemble: every fold judged with its own fold models only
    out = t2.run_ensemble_cv(replace(base, out=str(tmp_path / "e")), runs)
    for k in range(2):
        rec = json.loads((out / f"fold{k}" / "metrics.json").read_text())
        assert rec["members"] == [str(r / "cv" / f"fold{k}" / "final.pt") for r in runs]
        assert set(rec["results"]) == {"rgb", "grey", "jpeg50"}
    (runs[1] / "cv" / "folds.json").write_text(json.dumps({"folds": [["P0"], ["P1"]]}))
    with pytest.raises(InputError, match="same folds"):
        t2.run_ensemble_cv(replace(base, out=str(tmp_path / "f")), runs)


def _cfg_file(tmp_path: Path, **keys: object) -> Path:
    import yaml

    f = tmp_path / "cfg.yaml"
    f.write_text(yaml.safe_dump(keys))
    return f


def test_time_budget_and_batch_workers(tmp_path: Path) -> None:
    from dataclasses import replace

    from braintumor import training2d as t2

    pats = []
    for k in range(2):
        make_patient(tmp_path / "data" / f"P{k}", n=6, size=32)
        pats.append(s2d.load_patient(tmp_path / "data" / f"P{k}"))
    data = t2.to_slice_set(pats, 32)
    cfg = replace(t2.Train2DConfig(), network_kwargs={"channels": [4, 8]}, size=32, batch=4,
                  steps=10**6, checkpoint_every=10**6, tumour_fraction=1.0)
    pools, share = t2._pools(data, None, cfg)
    x, y = t2.make_batch(pools, share, cfg, np.random.default_rng(0))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 1, 32, 32)
    assert (y.reshape(4, -1).max(1) > 0).all()  # every picture from a tumour slice
    # a wall-clock budget ends the run long before its million steps; worker processes
    # make the batches
    timed = replace(cfg, time_budget_min=0.02, workers=1)
    ck = torch.load(t2.train(timed, data, tmp_path / "run"), map_location="cpu",
                    weights_only=False)
    assert 1 <= ck["config"]["steps"] < 10**6
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            t2.train(replace(cfg, device="cuda"), data, tmp_path / "gpu")
    assert t2.train_device(replace(cfg, device="auto")) in ("cpu", "cuda")


def test_brats_slices_look_like_lgg_pictures(tmp_path: Path) -> None:
    """A 3D case stored LPS (as BraTS ships it) becomes pictures with the nose up, the
    mask on the bright FLAIR lesion, and the brain spanning ``fill`` of the picture."""
    from dataclasses import replace

    from braintumor import training2d as t2

    X, Y, Z = 60, 70, 24
    i, j, k = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    brain = ((i - 30) / 26) ** 2 + ((j - 35) / 31) ** 2 + ((k - 12) / 14) ** 2 < 1
    brain[:, :, 0] = (abs(i[:, :, 0] - 30) < 3) & (abs(j[:, :, 0] - 35) < 3)  # a speck
    # LPS storage: j grows toward the back, so small j is anterior (world y = 69 - j)
    lesion = ((i - 30) ** 2 + (j - 14) ** 2 < 36) & (abs(k - 12) < 4)
    img = np.stack([brain * 100.0, brain * 100.0 + lesion * 150.0, brain * 90.0])
    img = img.astype(np.float32)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff[:2, 3] = [X - 1, Y - 1]
    pics, masks = t2.case_slices(img, lesion.astype(np.uint8), aff, 64, every=1, fill=0.5)
    assert pics.shape[1:] == (64, 64, 3) and pics.dtype == np.uint8
    assert len(pics) == len(masks) == 24 - 1  # the slice with a speck of brain is skipped
    with_t = masks.reshape(len(masks), -1).max(1) > 0.5
    assert with_t.sum() == 7
    m = masks[with_t][3] > 0.5
    rows = np.nonzero(m)[0]
    assert rows.mean() < 64 * 0.4  # anterior lesion drawn in the upper part
    flair = pics[with_t][3][..., 1].astype(float)
    assert flair[m].mean() > 2 * flair[(pics[with_t][3][..., 0] > 0) & ~m].mean()
    # brain spans half the picture's side (the longer of its two axes)
    cols = np.nonzero(pics[len(pics) // 2].max(axis=2).max(axis=0) > 0)[0]
    rws = np.nonzero(pics[len(pics) // 2].max(axis=2).max(axis=1) > 0)[0]
    assert abs(max(np.ptp(cols), np.ptp(rws)) + 1 - 32) <= 3
    # the trainer draws its aux share from the extra slices
    aux = t2.SliceSet(pics, masks, np.array(["aux"] * len(pics)))
    make_patient(tmp_path / "data" / "P0", n=6, size=64)
    data = t2.to_slice_set([s2d.load_patient(tmp_path / "data" / "P0")], 64)
    cfg = replace(t2.Train2DConfig(), network_kwargs={"channels": [4, 8]}, size=64, batch=4,
                  steps=2, aux_fraction=0.5)
    assert (t2.train(cfg, data, tmp_path / "run", aux=aux)).exists()


def test_external_check_on_3d_cases(tmp_path: Path) -> None:
    """Labelled 3D cases become LGG-like stacks, go through the user's stack path and are
    scored per patient in every input mode."""
    from braintumor import training2d as t2
    from braintumor.phantom import make_case, write_case

    for i in range(2):
        write_case(make_case(shape=(48, 56, 30), seed=60 + i, case_id=f"ext{i}"),
                   tmp_path / "data")
    cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8]}, "size": 32,
           "threshold": 0.5, "stack_threshold": 0.3, "min_fraction": 0.001, "keep": "longest"}
    torch.save({"state_dict": s2d.build_network(cfg).state_dict(), "config": cfg},
               tmp_path / "m.pt")
    summ = t2.external_brats(tmp_path / "data", tmp_path / "ext", tmp_path / "m.pt", every=2,
                             size=64)
    assert set(summ) == {"rgb", "grey", "jpeg50"}
    assert all(s["patients"] == 2 and 0.0 <= s["dice_mean"] <= 1.0 for s in summ.values())
    res = json.loads((tmp_path / "ext" / "results.json").read_text())
    assert set(res["patients"]["grey"]) == {"ext0", "ext1"}
    assert "| greyscale (FLAIR only) |" in (tmp_path / "ext" / "results.md").read_text()


def test_component_rule_chosen_without_the_held_out_fold() -> None:
    from braintumor import training2d as t2

    folds = [{"fold": k, "patients": [f"p{k}{i}" for i in range(2)]} for k in range(3)]

    def met(d: float) -> dict[str, float]:
        return {"dice": d}

    # "longest" wins on folds 1 and 2, "volume" only on fold 0's own patients
    merged = {m: {post: {} for post in t2.POSTPROC} for m in ("rgb", "grey")}
    for m in merged:
        for f in folds:
            for pid in f["patients"]:
                good0 = f["fold"] == 0
                merged[m]["volume"][pid] = met(0.9 if good0 else 0.5)
                merged[m]["longest"][pid] = met(0.6 if good0 else 0.8)
                merged[m]["slice"][pid] = met(0.4)
    sel, chosen = t2.cross_fold_selection(merged, folds)  # type: ignore[arg-type]
    # fold 0 cannot pick "volume" from its own patients: the others favour "longest"
    assert chosen[0] == "longest"
    assert sel["rgb"]["p00"]["dice"] == 0.6
    assert t2.select_rule(merged, ["p00", "p01"]) == "volume"  # type: ignore[arg-type]


def test_threshold_chosen_with_the_rule_on_other_folds() -> None:
    from braintumor import training2d as t2

    posts = t2.candidate_posts(0.5)
    assert posts["longest"] == ("longest", 0.5) and posts["volume@0.3"] == ("largest", 0.3)
    assert "slice@0.3" not in posts  # single slices keep the config's threshold
    assert t2.describe_post("longest@0.2", 0.5) == "longest, threshold 0.2"
    folds = [{"fold": k, "patients": [f"p{k}"]} for k in range(3)]
    merged = {m: {post: {} for post in posts} for m in ("rgb", "grey")}
    for m in merged:
        for post in posts:
            for k in range(3):
                # a lower threshold helps every fold but fold 2, whose patient does best
                # at 0.5 with "volume"
                d = 0.8 if post == "longest@0.3" else 0.6
                if k == 2:
                    d = 0.85 if post == "volume" else 0.75
                merged[m][post][f"p{k}"] = {"dice": d}
    sel, chosen = t2.cross_fold_selection(merged, folds)  # type: ignore[arg-type]
    assert chosen == ["longest@0.3", "longest@0.3", "longest@0.3"]
    assert sel["grey"]["p2"]["dice"] == 0.75  # not its own best, 0.85


def test_shipped_version_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results name the shipped 2D model by its version, as the 3D model's do."""
    meta = json.loads((s2d.MODEL_DIR / "model.json").read_text())
    assert meta["weights"] == s2d.MODEL_FILE
    assert s2d.shipped_version() == meta["version"]
    if (s2d.MODEL_DIR / s2d.MODEL_FILE).exists():
        assert s2d.segment_image(fake_slice(64, 64)[0]).info["model"] == meta["version"]
    monkeypatch.setattr(s2d, "MODEL_DIR", tmp_path)  # weights without a model.json
    assert s2d.shipped_version() == s2d.MODEL_FILE


def test_config_refuses_unknown_keys(tmp_path: Path) -> None:
    from braintumor.training2d import load_config

    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\nsize: 64\n")
    assert load_config(f).steps == 5
    f.write_text("stepz: 5\n")
    with pytest.raises(InputError, match="stepz"):
        load_config(f)


# ---------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_patient_volume_rebuilt(lgg_dir: Path) -> None:
    folder = s2d.list_patients(lgg_dir)[0]
    p = s2d.load_patient(folder)
    assert p.images.shape[1:] == (256, 256, 3) and p.masks is not None
    assert list(p.numbers) == list(range(1, len(p.numbers) + 1))
    assert 0 < p.tumour_slices < len(p.numbers)
    # tumour slices form one contiguous run along the rebuilt volume
    idx = np.flatnonzero(p.masks.reshape(len(p.masks), -1).any(1))
    assert idx[-1] - idx[0] + 1 <= len(idx) + 2


@pytest.mark.realdata
@pytest.mark.skipif(not s2d.model_available(), reason="shipped 2D weights not in the package")
def test_shipped_model_on_real_slices(lgg_dir: Path, tmp_path: Path) -> None:
    folder = s2d.list_patients(lgg_dir)[0]
    p = s2d.load_patient(folder)
    assert p.masks is not None
    res = s2d.segment_stack(list(p.images), keep="largest")
    pred = np.stack([r.mask for r in res])
    assert s2d.stack_metrics(pred, p.masks)["dice"] > 0.6
    grey = s2d.segment_stack([im[..., 1:2] for im in p.images])
    assert s2d.stack_metrics(np.stack([r.mask for r in grey]), p.masks)["dice"] > 0.5
    # CLI path on three files: masks written at the input size
    files = p.paths[:3]
    out, failed = s2d.predict_2d_inputs(files, tmp_path)
    assert failed == 0
    assert len(out) == 7 and out[-1].name == "areas_2d.csv"  # masks, overlays, the areas


@pytest.mark.parametrize("shapes", [((32, 32), (48, 48)), ((32, 32), (20, 20)),
                                    ((192, 192), (193, 193)), ((7, 5), (13, 3))])
def test_resize_bilinear_matches_torch(shapes: tuple[tuple[int, int], tuple[int, int]]
                                       ) -> None:
    import torch.nn.functional as F

    a = np.random.default_rng(0).random(shapes[0]).astype(np.float32)
    want = F.interpolate(torch.from_numpy(a)[None, None], size=shapes[1], mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(s2d.resize_bilinear(a, shapes[1]), want, atol=1e-5)


def test_onnx_export_agrees_with_the_weights(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8, 16]}, "size": 32,
           "threshold": 0.5, "min_fraction": 0.001, "tta": "hv"}
    torch.manual_seed(1)
    path = tmp_path / "m.pt"
    torch.save({"state_dict": s2d.build_network(cfg).state_dict(), "config": cfg}, path)
    assert not hasattr(s2d.load_model_2d(path).network, "run")  # no export yet: PyTorch
    # the 3D export command points to this one instead of failing on the 2D config
    from braintumor.cli import main

    assert main(["export-onnx", str(path), "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
    graph, cfg_path = s2d.export_onnx_2d(path)
    assert graph.exists() and json.loads(cfg_path.read_text()) == cfg
    fast, slow = s2d.load_model_2d(path), s2d.load_model_2d(path, onnx=False)
    assert hasattr(fast.network, "run") and not hasattr(slow.network, "run")
    assert fast.config == slow.config
    x = np.stack([s2d.prepare_input(fake_slice(40, 56, seed=i)[0], 32)[0] for i in range(3)])
    np.testing.assert_allclose(s2d.predict_batch(fast, x), s2d.predict_batch(slow, x),
                               atol=1e-5)
    img = fake_slice(50, 70, seed=4)[0]
    a, b = s2d.segment_image(img, fast), s2d.segment_image(img, slow)
    np.testing.assert_allclose(a.probability, b.probability, atol=1e-5)


def test_2d_export_never_writes_over_its_weights(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights named like their export (m.onnx, m.json) were overwritten by it, and an
    export that failed half way was left beside the weights, where the 2D predictor
    takes it over them: refused, and written beside its place, then renamed."""
    pytest.importorskip("onnx")
    from braintumor.inference import onnx_export as real_export

    cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8, 16]}, "size": 32,
           "threshold": 0.5, "min_fraction": 0.001, "tta": "hv"}
    blob = {"state_dict": s2d.build_network(cfg).state_dict(), "config": cfg}
    for name in ("m.onnx", "m.json"):
        path = tmp_path / name
        torch.save(blob, path)
        before = path.read_bytes()
        with pytest.raises(InputError, match="would write over the weights"):
            s2d.export_onnx_2d(path)
        assert path.read_bytes() == before
        path.unlink()
    path = tmp_path / "m.pt"
    torch.save(blob, path)

    def half(net: Any, x: Any, out: Path, *args: Any) -> None:
        Path(out).write_bytes(b"half an export")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr("braintumor.inference.onnx_export", half)
    with pytest.raises(RuntimeError, match="exporter failed"):
        s2d.export_onnx_2d(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    monkeypatch.setattr("braintumor.inference.onnx_export", real_export)
    graph, cfg_path = s2d.export_onnx_2d(path)
    assert graph.is_file() and json.loads(cfg_path.read_text()) == cfg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx", "m.pt"]


def test_2d_export_onto_a_folder_is_one_sentence(tmp_path: Path) -> None:
    """A folder where the export or its config goes was an IsADirectoryError after the
    export's work; it is refused first, as export-onnx refuses one (io.check_written_file),
    and the folder is left as it was."""
    cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8, 16]}, "size": 32,
           "threshold": 0.5, "min_fraction": 0.001}
    path = tmp_path / "m.pt"
    torch.save({"state_dict": s2d.build_network(cfg).state_dict(), "config": cfg}, path)
    for name in ("m.onnx", "m.json"):
        (tmp_path / name).mkdir()
        with pytest.raises(InputError, match=r"m\.(onnx|json): is a folder") as e:
            s2d.export_onnx_2d(path)
        assert "\n" not in str(e.value) and "rename or remove that folder" in str(e.value)
        assert list((tmp_path / name).iterdir()) == []
        (tmp_path / name).rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_2d_export_never_pairs_a_new_config_with_an_earlier_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new config was renamed into place before the new graph: stopped between the
    two, the predictor loaded the new config with the earlier graph (exported for another
    picture size). Now the earlier graph is gone before the config changes, so the
    predictor runs the weights instead; and a link at the graph's place is written
    through, a replaced file keeping its permission bits."""
    pytest.importorskip("onnx")
    import os
    import stat

    cfg = {"network": "unet2d", "network_kwargs": {"channels": [4, 8, 16]}, "size": 32,
           "threshold": 0.5, "min_fraction": 0.001}
    path = tmp_path / "m.pt"
    torch.save({"state_dict": s2d.build_network(cfg).state_dict(), "config": cfg}, path)
    (tmp_path / "v1").mkdir()
    (tmp_path / "m.onnx").symlink_to(Path("v1") / "m.onnx")
    graph, cfg_path = s2d.export_onnx_2d(path)
    assert graph.is_symlink() and (tmp_path / "v1" / "m.onnx").stat().st_size > 1000
    (tmp_path / "v1" / "m.onnx").chmod(0o600)
    cfg_path.chmod(0o640)
    s2d.export_onnx_2d(path)
    assert graph.is_symlink() and hasattr(s2d.load_model_2d(path).network, "run")
    assert stat.S_IMODE((tmp_path / "v1" / "m.onnx").stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o640
    old_graph = graph.read_bytes()
    new = {**cfg, "size": 48, "threshold": 0.6}
    torch.save({"state_dict": s2d.build_network(new).state_dict(), "config": new}, path)
    real_replace = os.replace

    def stop_at_graph(src: Any, dst: Any) -> None:
        if Path(dst).suffix == ".onnx":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_at_graph)
    with pytest.raises(KeyboardInterrupt):
        s2d.export_onnx_2d(path)
    monkeypatch.setattr(os, "replace", real_replace)
    if graph.exists():  # a pair is taken only as it was written
        assert graph.read_bytes() == old_graph and json.loads(cfg_path.read_text()) == cfg
    model = s2d.load_model_2d(path)
    assert model.config == new and model.size == 48
    assert not hasattr(model.network, "run")  # the weights, not an earlier export
    s2d.export_onnx_2d(path)
    model = s2d.load_model_2d(path)
    assert hasattr(model.network, "run") and model.config == new
    assert graph.is_symlink() and graph.read_bytes() != old_graph
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "m.json", "m.onnx", "m.onnx", "m.pt", "v1"]  # no temporary left


def test_shipped_2d_export_matches_the_shipped_weights() -> None:
    """The package predicts with the ONNX export: it must be the weights' own (an
    export left over from earlier weights would silently change every outline)."""
    if not s2d.model_available():
        pytest.skip("2D model not installed")
    graph, cfg_path = s2d.onnx_files(s2d.MODEL_DIR / s2d.MODEL_FILE)
    assert graph.exists() and cfg_path.exists()
    fast, slow = s2d.load_model_2d(), s2d.load_model_2d(onnx=False)
    assert hasattr(fast.network, "run") and fast.config == slow.config
    x = np.stack([s2d.prepare_input(fake_slice(120, 100, seed=i)[0], fast.size)[0]
                  for i in range(2)])
    np.testing.assert_allclose(s2d.predict_batch(fast, x), s2d.predict_batch(slow, x),
                               atol=1e-4)


def test_a_picture_is_predicted_without_torch(tmp_path: Path) -> None:
    """Importing PyTorch and MONAI took about 6 s of a 6.5 s single-picture prediction;
    the shipped export needs neither."""
    import subprocess
    import sys

    if not s2d.model_available():
        pytest.skip("2D model not installed")
    from PIL import Image

    Image.fromarray(fake_slice(120, 100)[0]).save(tmp_path / "slice.png")
    code = ("import sys; sys.modules['torch'] = None; sys.modules['monai'] = None\n"
            "from braintumor.cli import main\n"
            f"raise SystemExit(main(['predict', {str(tmp_path / 'slice.png')!r}, '-o', "
            f"{str(tmp_path / 'out')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    mask = np.asarray(Image.open(tmp_path / "out" / "slice_mask.png"))
    assert mask.shape == (120, 100)


def test_outlines_are_shown_on_the_pictures_flair() -> None:
    """The LGG composite (pre-contrast T1, FLAIR, post-contrast T1 as red, green, blue)
    is shown grey as its FLAIR, the picture the outline describes; a greyscale picture
    as itself."""
    from braintumor.slices2d import display_grey, overlay

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    mask = np.zeros((32, 40), bool)
    mask[10:20, 12:24] = True
    shown = overlay(rgb, mask)
    assert np.array_equal(shown[~mask], np.repeat(rgb[..., 1][~mask][:, None], 3, axis=1))
    assert np.array_equal(display_grey(rgb), rgb[..., 1])
    grey = rgb[..., 0]
    assert np.array_equal(display_grey(grey), grey)
    assert np.array_equal(display_grey(np.repeat(grey[..., None], 3, axis=2)), grey)


def test_training_refuses_bad_input_in_one_sentence(tmp_path: Path, capsys) -> None:
    from braintumor import training2d as t2

    def refused(*argv: str) -> str:
        assert t2.main(list(argv)) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1
        return err

    assert "nope.yaml: no such config file" in refused("cv", "--config",
                                                        str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 5\n")
    assert "unknown keys stepz" in refused("cv", "--config", str(bad))
    bad.write_text("steps: many\n")
    assert "steps is 'many'; it should be a whole number" in refused("cv", "--config", str(bad))
    bad.write_text("size: [1, 2\n")
    assert "is not a readable YAML config" in refused("final", "--config", str(bad))
    bad.write_text("- a list\n")
    assert "a mapping of settings" in refused("cv", "--config", str(bad))
    bad.write_text(f"data: {tmp_path / 'nowhere'}\n")
    assert "no such data folder; name the LGG kaggle_3m folder with --data" in \
        refused("cv", "--config", str(bad))
    assert "export needs --from" in refused("export", "--config", str(bad))
    assert "no such checkpoint to export" in refused("export", "--config", str(bad), "--from",
                                                     str(tmp_path / "none.pt"))


def test_training_folds_finished_runs_and_changed_recipes(tmp_path: Path, capsys) -> None:
    from braintumor import training2d as t2

    for k in range(4):
        make_patient(tmp_path / "data" / f"P{k}", n=6, size=32)
    run = tmp_path / "run"
    cfg = _cfg_file(tmp_path, data=str(tmp_path / "data"), out=str(run),
                    network_kwargs={"channels": [4, 8]}, size=32, batch=4, steps=2, folds=2,
                    checkpoint_every=2)
    base = ["--config", str(cfg)]
    assert t2.main(["cv", *base, "--fold", "9"]) == 2
    assert "--fold 9: the folds are numbered 0 to 1." in capsys.readouterr().err
    assert not (run / "cv" / "fold9").exists()
    assert t2.main(["cv", *base, "--fold", "0", "--train-only"]) == 0
    fold = run / "cv" / "fold0"
    assert (fold / "final.pt").exists()
    capsys.readouterr()
    # the same command again: nothing to do, and said so
    assert t2.main(["cv", *base, "--fold", "0", "--train-only"]) == 0
    assert "fold 0: already trained (2 steps)" in capsys.readouterr().out
    # a finished run is not silently kept when asked for more steps
    assert t2.main(["cv", *base, "--fold", "0", "--train-only", "--steps", "50"]) == 2
    err = capsys.readouterr().err
    assert "finished training at 2 steps" in err and "another folder (--out)" in err
    # an unfinished run goes on only with its own recipe
    (fold / "final.pt").unlink()
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace("size: 32", "size: 40") + "lr: 0.01\n")
    assert t2.main(["cv", "--config", str(other), "--fold", "0", "--train-only"]) == 2
    err = capsys.readouterr().err
    assert "holds a run trained with another config (size 32 -> 40, lr 0.002 -> 0.01)" in err
    assert not (fold / "final.pt").exists()
    # its own recipe, trained longer: resumed
    assert t2.main(["cv", *base, "--fold", "0", "--train-only", "--steps", "4"]) == 0
    assert "resumed" in capsys.readouterr().out
    # final and export write beside the run, never over the shipped model
    shipped = s2d.MODEL_DIR / s2d.MODEL_FILE
    stamp = shipped.stat().st_mtime_ns if shipped.exists() else None
    # (each in a process of its own, as the commands run: an ONNX export in the process
    # that has run this module's OpenVINO models made a later torch test crash natively)
    import subprocess
    import sys

    def command(*argv: str) -> int:
        return subprocess.run([sys.executable, "-m", "braintumor.training2d", *argv],
                              capture_output=True, text=True, timeout=600).returncode

    assert command("final", *base) == 0
    assert (run / "final" / s2d.MODEL_FILE).exists()
    (run / "final" / s2d.MODEL_FILE).unlink()
    assert command("export", *base, "--from", str(run / "final" / "final.pt")) == 0
    assert (run / "final" / s2d.MODEL_FILE).exists()
    assert (shipped.stat().st_mtime_ns if shipped.exists() else None) == stamp


def test_several_patients_slices_in_one_folder(tiny_model: s2d.Model2D, tmp_path: Path) -> None:
    """Two patients' numbered slices copied into one folder are two volumes, each
    segmented as in a folder of its own (one stack interleaved them and kept one
    patient's tumour); a flat folder of references scores them as two patients, and the
    hidden copies and colour masks a system or tool leaves are handled as elsewhere."""
    import shutil

    from PIL import Image

    for name in ("PA", "PB"):
        make_patient(tmp_path / "apart" / name, n=5, size=48)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (tmp_path / "apart").rglob("*.tif"):
        if not f.stem.endswith("_mask"):
            shutil.copy(f, flat / f.name)
    lines: list[str] = []
    s2d.predict_images([flat], tmp_path / "out_flat", model=tiny_model, log=lines.append)
    assert any("numbered slices of 2 names" in line for line in lines)
    for name in ("PA", "PB"):
        s2d.predict_images([tmp_path / "apart" / name], tmp_path / "out_apart",
                           model=tiny_model)
        for k in range(1, 6):
            a = np.asarray(Image.open(tmp_path / "out_flat" / "flat" / f"{name}_{k}_mask.png"))
            b = np.asarray(Image.open(tmp_path / "out_apart" / name / f"{name}_{k}_mask.png"))
            assert np.array_equal(a, b), (name, k)
    # references in one flat folder: two patients by their names
    refs = tmp_path / "refs"
    refs.mkdir()
    for f in (tmp_path / "apart").rglob("*_mask.tif"):
        shutil.copy(f, refs / f.name)
    (refs / "._PA_1_mask.tif").write_bytes(b"\x00\x05\x16\x07 not a picture")
    preds = tmp_path / "preds"
    preds.mkdir()
    for f in (tmp_path / "apart").rglob("*_mask.tif"):  # perfect, saved in green
        m = np.asarray(Image.open(f))
        rgb = np.zeros((*m.shape, 3), np.uint8)
        rgb[..., 1] = m
        Image.fromarray(rgb).save(preds / f"{f.stem}.png")
    res = s2d.evaluate_2d(preds, refs)
    assert sorted(res["patients"]) == ["PA", "PB"]
    assert all(p["dice"] == 1.0 for p in res["patients"].values())


def test_a_later_run_into_the_folder_keeps_areas_2d_true(tiny_model: s2d.Model2D,
                                                         tmp_path: Path) -> None:
    """A later run writing the same mask file (another picture of the same name) or the
    same picture by another path replaces its row: the table never describes a mask
    that is no longer there, nor one picture twice."""
    import csv

    from PIL import Image

    (tmp_path / "in").mkdir()
    (tmp_path / "other").mkdir()
    Image.fromarray(fake_slice(48, 48)[0]).save(tmp_path / "in" / "s.png")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(tmp_path / "other" / "s.png")
    out = tmp_path / "out"
    s2d.predict_images([tmp_path / "in" / "s.png"], out, model=tiny_model)
    s2d.predict_images([(tmp_path / "in" / "s.png").resolve()], out, model=tiny_model)
    rows = list(csv.DictReader((out / "areas_2d.csv").open()))
    assert len(rows) == 1 and rows[0]["mask"] == "s_mask.png"
    s2d.predict_images([tmp_path / "other" / "s.png"], out, model=tiny_model)
    rows = list(csv.DictReader((out / "areas_2d.csv").open()))
    assert [(r["picture"], r["area_pixels"]) for r in rows] == \
        [(str(tmp_path / "other" / "s.png"), "0")]


def test_a_picture_whose_result_is_written_over_is_named(tiny_model: s2d.Model2D,
                                                         tmp_path: Path) -> None:
    """real.png, then real.tif into the same folder: the second's mask replaces the
    first's, and one warning line names the earlier picture whose row went."""
    from PIL import Image

    img = fake_slice(48, 48)[0]
    Image.fromarray(img).save(tmp_path / "real.png")
    Image.fromarray(img).save(tmp_path / "real.tif")
    out = tmp_path / "out"
    lines: list[str] = []
    s2d.predict_images([tmp_path / "real.png"], out, model=tiny_model, log=lines.append)
    assert not any(x.startswith("warning:") for x in lines)
    s2d.predict_images([tmp_path / "real.tif"], out, model=tiny_model, log=lines.append)
    said = [x for x in lines if x.startswith("warning:")]
    assert len(said) == 1 and str(tmp_path / "real.png") in said[0], said
    assert "real_mask.png" in said[0]


def test_gaps_and_repeats_in_slice_numbers_are_said(tiny_model: s2d.Model2D,
                                                   tmp_path: Path) -> None:
    """A stack numbered 1, 2, 4, 5 (or with pt_1 and pt_01) is still one volume, with a
    note naming the missing and repeated numbers; a run without gaps says nothing."""
    from PIL import Image

    assert s2d.numbering_note(["a_1.png", "a_2.png", "a_3.png"]) is None
    assert s2d.numbering_note(["x.png", "y.png"]) is None
    note = s2d.numbering_note(["pt_1.png", "pt_01.png", "pt_2.png", "pt_4.png"])
    assert note is not None and "number 3 is missing" in note
    assert "number 1 is given twice (pt_1.png, pt_01.png)" in note
    folder = tmp_path / "pt"
    folder.mkdir()
    for k in (1, 2, 4, 5):
        Image.fromarray(fake_slice(48, 48)[0]).save(folder / f"pt_{k}.png")
    lines: list[str] = []
    s2d.predict_images([folder], tmp_path / "out", model=tiny_model, log=lines.append)
    assert [x for x in lines if x.startswith("note:")] == [
        "note: pt: the slice numbering has gaps or repeats: number 3 is missing; the "
        "slices are stacked in their order, one after the other."]


def test_a_dicom_slice_named_without_extension_is_read(tiny_model: s2d.Model2D,
                                                       tmp_path: Path, capsys) -> None:
    """A PACS export's ``IM0001`` (DICOM by its content, no ``.dcm``) given on the command
    line is a 2D slice, its pixel size its PixelSpacing's."""
    pytest.importorskip("pydicom")
    from test_web_support import write_dicom_slice

    px = np.zeros((48, 48), np.uint16)
    px[10:30, 10:30] = 900
    f = write_dicom_slice(tmp_path / "IM0001.dcm", px, (0.5, 0.5))
    f = f.rename(tmp_path / "IM0001")
    assert s2d.is_2d_input(f)
    written = s2d.predict_images([f], tmp_path / "out", model=tiny_model)
    assert tmp_path / "out" / "IM0001_mask.png" in written
    import csv

    row = next(csv.DictReader((tmp_path / "out" / "areas_2d.csv").open()))
    assert row["picture"] == str(f) and row["area_mm2"] != ""


def test_a_mixed_size_stack_names_its_odd_slice(tiny_model: s2d.Model2D) -> None:
    images = [np.zeros((48, 48, 3), np.uint8), np.zeros((40, 48, 3), np.uint8)]
    with pytest.raises(InputError, match=r"^b.png is 48x40 pixels while a.png is 48x48"):
        s2d.segment_stack(images, tiny_model, names=["a.png", "b.png"])


def test_evaluate_reports_patients_beside_pictures(tmp_path: Path, capsys) -> None:
    """``braintumor evaluate`` on 2D mask folders: the per-picture rows in the CSV, the
    patients' volume Dice (the number the LGG literature reports) in ``_patients.csv``
    with a mean row, and the summary calls its rows pictures, not cases."""
    import csv
    import shutil

    from braintumor.cli import main

    for name in ("PA", "PB"):
        make_patient(tmp_path / "ref" / name, n=6, size=40)
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in (tmp_path / "ref").rglob("*_mask.tif"):
        shutil.copy(f, pred / f.name)
    out = tmp_path / "ev" / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref"),
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Summary over 12 picture(s)" in printed
    rows = list(csv.DictReader((tmp_path / "ev" / "m_patients.csv").open()))
    assert [r["patient"] for r in rows] == ["PA", "PB", "mean"]
    assert all(float(r["dice"]) == 1.0 for r in rows)
    assert rows[-1]["tumour_slices"] == str(sum(int(r["tumour_slices"]) for r in rows[:-1]))


def test_evaluate_2d_goes_on_past_a_missing_or_odd_mask(tmp_path: Path, capsys) -> None:
    """One prediction missing and one of another size: both scored as missing pictures
    (the odd one said in an error line, exit 1), the others scored, and the patient's
    row says how many of its pictures had no prediction."""
    import csv
    import shutil

    from PIL import Image

    from braintumor.cli import main

    make_patient(tmp_path / "ref" / "PA", n=6, size=40)
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in (tmp_path / "ref").rglob("*_mask.tif"):
        shutil.copy(f, pred / f.name)
    (pred / "PA_2_mask.tif").unlink()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(pred / "PA_5_mask.tif")
    out = tmp_path / "ev" / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref"),
                 "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "PA_5_mask.tif" in captured.err and "Traceback" not in captured.err
    status = {r["case"]: r["status"] for r in csv.DictReader(out.open()) if r["case"][:2] == "PA"}
    assert status["PA_2"] == "missing" and status["PA_5"] == "unreadable"
    assert sum(v == "ok" for v in status.values()) == 4
    (row, _) = list(csv.DictReader((tmp_path / "ev" / "m_patients.csv").open()))
    assert row["patient"] == "PA" and row["missing_slices_pred"] == "2"


def test_numbering_note_does_not_spell_out_a_huge_span() -> None:
    """Two pictures numbered 1 and 2,000,000 (or phone photos named by the time of day)
    are said to miss a run of numbers without making a set of every number between."""
    import tracemalloc

    tracemalloc.start()
    try:
        note = s2d.numbering_note(["a_1.png", "a_2000000.png"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    assert note is not None and "numbers 2 to 1999999 are missing" in note
    note = s2d.numbering_note(["PXL_20240101_093015123.jpg", "PXL_20240101_193015123.jpg"])
    assert note is not None and "93015124 to 193015122" in note
    note = s2d.numbering_note([f"a_{k}.png" for k in (1, 3, 4, 6, 7, 10, 12, 14, 16, 18, 20, 30)])
    assert note is not None and "numbers 2, 5, 8, 9, 11, 13, 15 and 11 more are missing" in note


def test_one_picture_typed_by_another_path_is_no_replaced_result(
        tiny_model: s2d.Model2D, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same picture segmented again, typed relative before and absolute now from
    another folder (its stored relative path no longer found from here), or relative
    again, warns of no replaced result; another picture of the same mask name does."""
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(fake_slice(48, 48)[0]).save(tmp_path / "in" / "s.png")
    Image.fromarray(fake_slice(48, 48)[0]).save(tmp_path / "s.jpg")
    out = tmp_path / "out"
    lines: list[str] = []
    monkeypatch.chdir(tmp_path)
    s2d.predict_images([Path("in/s.png")], out, model=tiny_model, log=lines.append)
    monkeypatch.chdir(tmp_path / "in")
    s2d.predict_images([tmp_path / "in" / "s.png"], out, model=tiny_model, log=lines.append)
    s2d.predict_images([Path("s.png")], out, model=tiny_model, log=lines.append)
    assert not [x for x in lines if x.startswith("warning:")]
    s2d.predict_images([tmp_path / "s.jpg"], out, model=tiny_model, log=lines.append)
    said = [x for x in lines if x.startswith("warning:")]
    assert len(said) == 1 and "s.png" in said[0] and str(tmp_path / "s.jpg") in said[0]


def test_a_write_failure_leaves_the_other_pictures(tiny_model: s2d.Model2D,
                                                   tmp_path: Path) -> None:
    """A folder where a picture's overlay goes, or a picture whose name is too long for
    its temporary output: that picture fails in one sentence naming the real output
    file (no hidden temporary), its earlier mask stays as it was (mask and overlay go
    in together), and the other pictures are still written, with their rows."""
    from PIL import Image

    img, _ = fake_slice(40, 40)
    for name in ("a", "b", "c" * 235):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    (out / "a_overlay.png").mkdir(parents=True)
    (out / "a_mask.png").write_bytes(b"earlier")
    errors: list[InputError] = []
    s2d.predict_images([tmp_path / "a.png", tmp_path / ("c" * 235 + ".png"), tmp_path / "b.png"],
                       out, model=tiny_model, on_error=errors.append)
    assert len(errors) == 2
    assert "a_overlay.png" in str(errors[0]) and "is a folder" in str(errors[0])
    assert "c" * 235 + "_mask.png: file name too long" in str(errors[1])
    assert ".part" not in str(errors[1])
    assert (out / "a_mask.png").read_bytes() == b"earlier"
    assert (out / "b_mask.png").exists() and (out / "b_overlay.png").exists()
    rows = (out / "areas_2d.csv").read_text().splitlines()
    assert len(rows) == 2 and "b.png" in rows[1]
    assert not [f for f in out.iterdir() if f.name.startswith(".")]


def test_a_picture_whose_outputs_cannot_be_written_exits_1_not_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An output that cannot be written (here a folder in the overlay's place; a full
    disk alike) is the machine's failure: exit 1, as in 3D, even when no picture gave an
    output; a picture that is no input (too small) is the user's: exit 2."""
    from PIL import Image

    from braintumor.cli import main

    img, _ = fake_slice(40, 40)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[:5, :5]).save(tmp_path / "tiny.png")
    out = tmp_path / "out"
    (out / "a_overlay.png").mkdir(parents=True)
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(out)]) == 1
    assert "a_overlay.png" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "tiny.png"), "-o", str(out)]) == 2


def test_a_stack_whose_outputs_cannot_be_written_is_named_by_its_folder(
        tiny_model: s2d.Model2D, tmp_path: Path) -> None:
    """Numbered slices of two names in one folder, one name's overlay blocked: the error
    names the folder, not a Python list of the stack's files; the other name's stack is
    written."""
    from PIL import Image

    d = tmp_path / "mix"
    d.mkdir()
    for stem in ("pa", "pb"):
        for n in (1, 2):
            Image.fromarray(fake_slice(40, 40)[0]).save(d / f"{stem}_{n}.png")
    out = tmp_path / "out"
    (out / "mix" / "pa_1_overlay.png").mkdir(parents=True)
    errors: list[InputError] = []
    s2d.predict_images([d], out, model=tiny_model, on_error=errors.append)
    assert len(errors) == 1 and str(errors[0]).startswith(f"{d}: its outputs could not be")
    assert "PosixPath" not in str(errors[0]) and "[" not in str(errors[0])
    assert (out / "mix" / "pb_2_mask.png").is_file()


def test_patients_folders_at_any_depth_are_segmented(tiny_model: s2d.Model2D,
                                                     tmp_path: Path) -> None:
    """A folder of loose pictures beside patients' folders, a patient folder inside a
    group folder, and a data set's site/patient layout: every folder of slices is
    segmented, and the command line takes the data set as 2D alone."""
    from PIL import Image

    from braintumor.commands.predict import _split_inputs

    nest, mix, deep = tmp_path / "nest", tmp_path / "mix", tmp_path / "deep"
    nest.mkdir()
    Image.fromarray(fake_slice(40, 40)[0]).save(nest / "cover.png")
    make_patient(nest / "pat1", n=3, size=32)
    make_patient(mix / "patA", n=3, size=32)
    make_patient(mix / "group" / "patB", n=3, size=32)
    make_patient(deep / "site" / "pat1", n=3, size=32)
    make_patient(deep / "siteB" / "pat1", n=3, size=32)  # one patient name at two sites
    errors: list[InputError] = []
    s2d.predict_images([nest, mix, deep], tmp_path / "out", model=tiny_model,
                       on_error=errors.append)
    assert not errors, errors
    masks = {p.relative_to(tmp_path / "out").as_posix()
             for p in (tmp_path / "out").rglob("*_mask.png")}
    # a patient keeps its path under the folder given: two sites' pat1 are two outputs
    assert {"nest/cover_mask.png", "pat1/pat1_3_mask.png", "patA/patA_1_mask.png",
            "group/patB/patB_2_mask.png", "site/pat1/pat1_1_mask.png",
            "siteB/pat1/pat1_1_mask.png"} <= masks
    stacks = (tmp_path / "out" / "areas_2d.csv").read_text()
    assert "site/pat1" in stacks and "siteB/pat1" in stacks
    assert s2d.is_2d_input(deep)
    assert _split_inputs([str(deep)]) == ([], [deep])


def test_a_mask_of_another_suffix_beside_a_picture_is_not_written_beside(
        tiny_model: s2d.Model2D, tmp_path: Path) -> None:
    """Outputs into a kaggle_3m patient's own folder, where ``X_mask.tif`` lies beside
    ``X.tif``: refused in one sentence, as ``X_mask.png`` beside it is, and no
    ``X_mask.png`` prediction is written beside the reference."""
    make_patient(tmp_path / "P", n=2, size=32)
    errors: list[InputError] = []
    s2d.predict_images([tmp_path / "P"], tmp_path, model=tiny_model, on_error=errors.append)
    assert len(errors) == 1 and "P_1_mask.tif lies beside it" in str(errors[0])
    assert not list((tmp_path / "P").glob("*_mask.png"))


def test_a_stack_of_too_small_slices_is_refused(tiny_model: s2d.Model2D,
                                                tmp_path: Path) -> None:
    """Three 5x5 slices in a folder are refused as one 5x5 picture is; another stack
    still goes on."""
    from PIL import Image

    (tmp_path / "tiny").mkdir()
    for n in (1, 2, 3):
        Image.fromarray(np.full((5, 5), 40 * n, np.uint8)).save(tmp_path / "tiny" / f"t_{n}.png")
    make_patient(tmp_path / "P", n=2, size=32)
    errors: list[InputError] = []
    s2d.predict_images([tmp_path / "tiny", tmp_path / "P"], tmp_path / "out",
                       model=tiny_model, on_error=errors.append)
    assert len(errors) == 1 and "t_1.png: the picture is 5x5 pixels" in str(errors[0])
    assert not (tmp_path / "out" / "tiny").exists()
    assert (tmp_path / "out" / "P" / "P_2_mask.png").exists()


def test_an_interrupted_run_keeps_the_rows_of_its_finished_pictures(
        tiny_model: s2d.Model2D, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the second picture: the first picture's mask and its row in
    areas_2d.csv are kept, and a line says so."""
    from PIL import Image

    for name in ("a", "b"):
        Image.fromarray(fake_slice(40, 40)[0]).save(tmp_path / f"{name}.png")
    real = s2d.segment_image
    calls: list[int] = []

    def stopped(*args: Any, **kwargs: Any) -> s2d.SliceResult:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(s2d, "segment_image", stopped)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        s2d.predict_images([tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out",
                           model=tiny_model, log=lines.append)
    rows = (tmp_path / "out" / "areas_2d.csv").read_text().splitlines()
    assert len(rows) == 2 and "a.png" in rows[1]
    assert any(x.startswith("interrupted: the 1 picture(s) finished are written") for x in lines)


def test_a_stack_says_so_and_names_the_outlines_its_rule_removed(
        tiny_model: s2d.Model2D, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Numbered single pictures (``case1 ... case3``) are one stack: a line says so, and
    the slices whose own outline the keep-one-3D-tumour rule removed are named."""
    from PIL import Image

    (tmp_path / "cases").mkdir()
    for n in (1, 2, 3):
        Image.fromarray(fake_slice(32, 32, seed=n)[0]).save(tmp_path / "cases" / f"case{n}.png")

    def probs(model: s2d.Model2D, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
        p = np.zeros((len(inputs), model.size, model.size), np.float32)
        p[0, 4:20, 4:20] = 0.9  # the largest tumour
        p[2, 24:30, 24:30] = 0.9  # another, not touching it
        return p

    monkeypatch.setattr(s2d, "predict_batch", probs)
    lines: list[str] = []
    s2d.predict_images([tmp_path / "cases"], tmp_path / "out", model=tiny_model,
                       log=lines.append)
    assert any("segmented as one stack of 3 numbered slice(s)" in x for x in lines)
    said = [x for x in lines if x.startswith("warning:")]
    assert len(said) == 1 and "case3.png was removed" in said[0] and "case2" not in said[0]


def test_one_picture_given_twice_is_segmented_once(tiny_model: s2d.Model2D,
                                                   tmp_path: Path) -> None:
    """The same file typed twice is no name clash: segmented once, with a note."""
    from PIL import Image

    Image.fromarray(fake_slice(40, 40)[0]).save(tmp_path / "a.png")
    errors: list[InputError] = []
    lines: list[str] = []
    s2d.predict_images([tmp_path / "a.png", tmp_path / ".." / tmp_path.name / "a.png"],
                       tmp_path / "out", model=tiny_model, log=lines.append,
                       on_error=errors.append)
    assert not errors and any("given more than once" in x for x in lines)
    assert len((tmp_path / "out" / "areas_2d.csv").read_text().splitlines()) == 2
