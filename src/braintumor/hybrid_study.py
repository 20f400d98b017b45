"""Cross-validated comparison: CNN alone, hybrid (CNN-guided watershed), watershed alone.

Run as a module (about 10 minutes on one core for the 14 shared cases with empty
caches, a minute when ``cache/hybrid_study`` holds them)::

    OMP_NUM_THREADS=1 nice -n 10 python -m braintumor.hybrid_study

For every case with held-out CNN probabilities (``cache/cv_probs_mix/<case>.npz``, the
shipped model's; ``--probs`` for another model's: ``probs``
float16 ``(3, X, Y, Z)`` WT, TC, ET on the native grid, and ``fold``, the CV fold whose
model did not train on the case) it computes

* **CNN alone**: the probabilities through the shipped model's postprocessing
  (``model.json`` ``postprocess``, :class:`braintumor.inference.PostProcess`);
* **hybrid**: :func:`braintumor.watershed.segment_hybrid` with those probabilities;
* **watershed alone**: :func:`braintumor.watershed.segment_watershed` with the
  parameters its own cross-validation picked without the case
  (``experiments/watershed/cv_params.json``; the shipped defaults when absent), on its
  working grid only, without the native enhancing-tumour step, as
  :func:`~braintumor.watershed.segment_hybrid` fuses it (the rules below were chosen on
  that watershed);

* **combined**: per region, the hybrid and the watershed put together by
  :func:`braintumor.watershed.fuse_labels` (whole tumour from the watershed, the hybrid,
  their union, intersection, or the watershed plus the hybrid lesions touching it, with
  watershed lesions the CNN hardly supports vetoed; the core from the hybrid,
  fitted into that whole tumour);

and scores all four with :func:`braintumor.metrics.score_case`.

The hybrid's parameters are chosen per CNN fold on the *other* folds' cases only: for
each region, every candidate band and gradient scale is tried with only that region
refined, and a candidate is kept only if it raised the mean Dice (all three regions) of
the training cases by more than ``MIN_GAIN`` over the CNN alone; otherwise the region
keeps the CNN's mask. The held-out fold is then segmented once with that choice. The
choice on all cases becomes the shipped default (``experiments/hybrid/params.json``).

The combination rule is chosen by a second cross-validation over the cases, on the folds
of the watershed's own CV (``experiments/watershed/cv_params.json``; 7 deterministic
folds when absent): for each fold, among :func:`fusion_candidates`, the rule with the
best mean Dice (three regions) on the training cases is used if it beats the hybrid
alone there by more than ``MIN_GAIN``, and the held-out cases are scored with it. The
inputs of that choice are the held-out predictions above (each case's hybrid and
watershed labels come from parameters chosen without that case), as in stacking. The
rule best on all cases goes into ``params.json`` with the hybrid's parameters.

Results go to ``experiments/hybrid/`` (``hybrid_cv.md``, ``hybrid_cv.csv``,
``summary.json``, ``cv_params.json``, ``params.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor.errors import guarded

ROOT = Path(__file__).resolve().parents[2]
#: the shipped model's held-out probabilities (one held-out model per recipe, averaged),
#: as the packaging command in ``experiments/gpu_recipe/README.md`` writes them
PROBS = ROOT / "cache" / "cv_probs_mix"
DATA = ROOT.parent / "shared" / "data" / "brats2018"
OUT = ROOT / "experiments" / "hybrid"
WATERSHED_CV = ROOT / "experiments" / "watershed" / "cv_params.json"
METHODS = ("cnn", "hybrid", "watershed", "combined")
METRICS = ("dice", "sensitivity", "specificity", "hd95")

#: (sure_out, sure_in) bands tried for each region: symmetric ones around the 0.5
#: threshold, and one-sided ones that can only remove (0.5, hi) or only add (lo, 0.5)
BANDS = ((0.4, 0.6), (0.3, 0.7), (0.2, 0.8), (0.1, 0.9), (0.5, 0.7), (0.5, 0.9), (0.3, 0.5))
#: gradient scales (voxels)
SIGMAS = (1.0,)
#: a refinement must raise the training cases' mean Dice by more than this to be used
MIN_GAIN = 0.001
#: ... and must not lower it (by over 1e-4) in more than a third of the training cases:
#: a mean gain carried by one or two cases did not hold on held-out cases (WT)
MIN_WIN = 2 / 3
#: watershed-lesion vetoes tried (the fraction of a lesion the CNN must call tumour); strongest
#: first, so that among rules the cases cannot tell apart the one that asks the two
#: methods to agree most is chosen
VETOES = (0.5, 0.3, 0.1, 0.0)
#: the fusion that is the hybrid alone
NO_FUSION = {"wt_from": "hybrid", "wt_veto": 0.0, "core": "keep", "core_adopt": 0.0,
             "core_cover": 1.0, "et_adopt": 0.0}
#: watershed core lesions adopted (the fraction the CNN must support; 0: none), only
#: those its core covers less than a fraction of (1: any), and watershed ET voxels
#: adopted (the CNN ET probability they must exceed; 0: none), tried with the rules
#: that clip the core to the whole tumour. Each is listed strictest first, as the
#: vetoes are: when no training case tells two thresholds apart (no lesion's support
#: lies between them), the rule that asks the CNN for more support wins the tie. Listed
#: weakest first, a fold whose training cases had no lesion supported between 0.2 and
#: 0.3 took 0.2, and so adopted a held-out low-grade case's 23 mL T1ce-dark "core" at
#: 26 % support (true core: 2 mL).
CORE_ADOPT = (0.0, 0.5, 0.3, 0.2)
CORE_COVER = (0.5, 1.0)
ET_ADOPT = (0.0, 0.2, 0.05)


def fusion_candidates() -> list[dict[str, Any]]:
    """Every combination rule tried (:func:`braintumor.watershed.fuse_labels` fields);
    the first is the hybrid alone."""
    from braintumor.watershed import CORE_RULES, WT_SOURCES

    base = [{"wt_from": src, "wt_veto": v, "core": core}
            for src in WT_SOURCES if src != "hybrid" for v in VETOES for core in CORE_RULES]
    none = {"core_adopt": 0.0, "core_cover": 1.0, "et_adopt": 0.0}
    # the rules without adoption first: on a tie the simpler rule wins
    return [dict(NO_FUSION)] + [{**r, **none} for r in base] + [
        {**r, "core_adopt": a, "core_cover": g, "et_adopt": e}
        for r in base if r["core"] == "clip" for a in CORE_ADOPT
        for g in (CORE_COVER if a > 0 else (1.0,)) for e in ET_ADOPT if a > 0 or e > 0]


def select_fusion(dices: dict[str, list[dict[str, float]]], train: Sequence[str],
                  min_gain: float = MIN_GAIN) -> dict[str, Any]:
    """The combination rule chosen on the ``train`` cases only.

    ``dices``: case -> one ``{region: dice}`` per :func:`fusion_candidates` entry. The
    rule with the best mean training Dice (over cases and the three regions) is used if
    it beats the first candidate (the hybrid alone) by more than ``min_gain``; ties go
    to the earlier rule. Returns ``{"rule": ..., "index": k, "gain": training gain}``.
    """
    cands = fusion_candidates()
    means = np.array([[_mean3(dices[c][k]) for k in range(len(cands))] for c in train])
    avg = means.mean(axis=0)
    k = int(np.argmax(avg))
    if avg[k] - avg[0] <= min_gain:
        k = 0
    return {"rule": dict(cands[k]), "index": k, "gain": float(avg[k] - avg[0])}


def fusion_folds(ids: Sequence[str]) -> list[list[str]]:
    """The watershed CV's folds restricted to ``ids`` (its tumour-free brains left out);
    cases it did not hold out go to deterministic extra folds."""
    from braintumor.watershed_tune import folds_for

    folds: list[list[str]] = []
    if WATERSHED_CV.exists():
        for fold in json.loads(WATERSHED_CV.read_text()).values():
            test = [c for c in fold["test"] if c in ids]
            if test:
                folds.append(test)
    seen = {c for f in folds for c in f}
    rest = [c for c in ids if c not in seen]
    if rest:
        folds += [f for f in folds_for(rest, min(7, len(rest))) if f]
    return folds


def candidates() -> list[dict[str, float]]:
    """Every (band, gradient scale) tried for one region."""
    return [{"sure_out": lo, "sure_in": hi, "grad_sigma": s} for lo, hi in BANDS
            for s in SIGMAS]


def _mean3(d: dict[str, float]) -> float:
    return float(np.mean([d[r] for r in L.REGIONS]))


def _dices(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from braintumor.metrics import dice

    pm, rm = L.region_masks(pred), L.region_masks(ref)
    return {r: float(dice(pm[r], rm[r])) for r in L.REGIONS}


def select(tuning: dict[str, dict[str, Any]], train: Sequence[str],
           min_gain: float = MIN_GAIN, min_win: float = MIN_WIN) -> dict[str, Any]:
    """Hybrid parameters chosen on the ``train`` cases only.

    ``tuning``: case -> ``{"cnn": {region: dice}, "candidates": {region: [ {region:
    dice} per candidate ]}}`` (the Dice of all regions with only that region refined by
    that candidate). For each region the candidate with the best mean training Dice
    (over the three regions) among those that beat the CNN alone by more than
    ``min_gain`` on average and do not lose in more than ``1 - min_win`` of the cases
    is used; returns ``{"regions": [...], "per_region": {region: candidate or
    None}, "gain": {region: training gain}}`` and the matching HybridParams fields.
    """
    cands = candidates()
    base = np.array([_mean3(tuning[c]["cnn"]) for c in train])
    chosen: dict[str, Any] = {}
    gains: dict[str, float] = {}
    for r in L.REGIONS:
        best, best_k = -math.inf, None
        for k in range(len(cands)):
            g = np.array([_mean3(tuning[c]["candidates"][r][k]) for c in train]) - base
            if g.mean() > min_gain and (g >= -1e-4).mean() >= min_win and g.mean() > best:
                best, best_k = float(g.mean()), k
        gains[r] = best if best_k is not None else 0.0
        chosen[r] = dict(cands[best_k]) if best_k is not None else None
    return {"per_region": chosen, "gain": gains, "params": params_for(chosen)}


def params_for(chosen: dict[str, dict[str, float] | None]) -> dict[str, Any]:
    """HybridParams fields for a per-region choice (None: the CNN's mask)."""
    from braintumor.watershed import HybridParams

    d = HybridParams()
    regions = [r for r in L.REGIONS if chosen.get(r)]

    def per(key: str, default: Any) -> list[float]:
        return [float(chosen[r][key]) if chosen.get(r) else float(default)  # type: ignore[index]
                for r in L.REGIONS]

    return {"regions": regions,
            "sure_out": per("sure_out", d.band("WT")[0]),
            "sure_in": per("sure_in", d.band("WT")[1]),
            "grad_sigma": per("grad_sigma", 1.0), **NO_FUSION}


def _watershed_params() -> dict[str, dict[str, Any]]:
    """case id -> the watershed parameters chosen without it (its CV's held-out fold)."""
    if not WATERSHED_CV.exists():
        return {}
    from braintumor.watershed import saved_params

    out = {}
    for fold in json.loads(WATERSHED_CV.read_text()).values():
        for c in fold["test"]:
            out[c] = saved_params(fold["params"])
    return out


def _load(case_id: str, sources: dict[str, Any], probs_dir: Path
          ) -> tuple[Any, np.ndarray, int]:
    from braintumor.cases import load_case

    z = np.load(probs_dir / f"{case_id}.npz")
    case = load_case(sources[case_id])
    return case, z["probs"].astype(np.float32), int(z["fold"])


def _score(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
           ) -> dict[str, dict[str, float]]:
    from braintumor.metrics import score_case

    sc = score_case(pred, ref, spacing, lesions=False)
    return {r: {m: float(sc[r][m]) for m in METRICS} for r in L.REGIONS}


def first_pass(case_id: str, sources: dict[str, Any], probs_dir: Path, post: Any,
               ws_params: dict[str, Any] | None, cache: Path | None = None
               ) -> dict[str, Any]:
    """CNN alone and watershed alone (scored, timed) and the tuning table of one case.

    With ``cache``, a case's entry is reused while its probability map, the candidates
    and the CNN postprocessing stay the same; other watershed parameters redo only the
    watershed.
    """
    from braintumor.watershed import (
        hybrid_labels,
        hybrid_params,
        params_from,
        prepare_hybrid,
        segment_watershed,
    )

    stamp = (probs_dir / f"{case_id}.npz").stat().st_mtime
    ws_key = asdict(params_from(ws_params))
    key = {"probs_mtime": stamp, "candidates": candidates(),
           "postprocess": json.loads(json.dumps(asdict(post)))}
    res: dict[str, Any] | None = None
    if cache is not None and (cache / f"{case_id}.json").exists():
        old = dict(json.loads((cache / f"{case_id}.json").read_text()))
        if all(old.get(k) == v for k, v in key.items()):
            if old.get("watershed_params") == ws_key:
                return old
            res = old
    case, probs, fold = _load(case_id, sources, probs_dir)
    ref = case.label
    assert ref is not None, f"{case_id}: no reference label"
    if res is None:
        res = {"case": case_id, "fold": fold, "scores": {}, "seconds": {}, **key}
        t0 = time.perf_counter()
        cnn = post.apply(probs)
        res["seconds"]["cnn"] = time.perf_counter() - t0
        res["scores"]["cnn"] = _score(cnn, ref, case.spacing)
        inp = prepare_hybrid(case, probs, min(0.05, min(b[0] for b in BANDS)))
        tune: dict[str, Any] = {"cnn": _dices(cnn, ref), "candidates": {}}
        for r in L.REGIONS:
            tune["candidates"][r] = [
                _dices(hybrid_labels(inp, hybrid_params({"regions": (r,), **cand}), post),
                       ref)
                for cand in candidates()]
        res["tuning"] = tune
    t0 = time.perf_counter()
    ws = segment_watershed(case, params=ws_params, et_native=99.0,
                           flair_grow=99.0, n4=0).labels
    res["seconds"]["watershed"] = time.perf_counter() - t0
    res["scores"]["watershed"] = _score(ws, ref, case.spacing)
    res["watershed_params"] = ws_key
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{case_id}.json").write_text(json.dumps(res))
    return res


def case_maps(case_id: str, sources: dict[str, Any], probs_dir: Path, post: Any,
              hybrid: dict[str, Any], ws_params: dict[str, Any] | None,
              cache: Path | None = None) -> dict[str, Any]:
    """The held-out label maps of one case, cut to the box where any of them is not
    background: ``ref``, ``cnn``, ``hybrid`` (with the fold's parameters ``hybrid``) and
    ``watershed`` (with ``ws_params``) internal labels, ``wt_prob`` (the CNN's WT
    probability), ``box``, ``shape``, ``spacing`` and the seconds of the hybrid's
    refinement and the watershed. Cached as ``<case>.maps.npz`` while the probability
    map and both parameter sets stay the same."""
    from braintumor.preprocess import bounding_box
    from braintumor.watershed import params_from, segment_hybrid, segment_watershed

    key = json.dumps({"probs_mtime": (probs_dir / f"{case_id}.npz").stat().st_mtime,
                      "hybrid": hybrid, "watershed": asdict(params_from(ws_params)),
                      "maps": 2,  # 2: the TC and ET probabilities are kept too
                      "postprocess": asdict(post)}, sort_keys=True, default=str)
    path = cache / f"{case_id}.maps.npz" if cache is not None else None
    if path is not None and path.exists():
        z = np.load(path)
        if str(z["key"]) == key:
            return {k: z[k] for k in z.files if k != "key"}
    case, probs, _ = _load(case_id, sources, probs_dir)
    assert case.label is not None, f"{case_id}: no reference label"
    res = segment_hybrid(case, probabilities=probs, params=hybrid, post=post)
    t0 = time.perf_counter()
    ws = segment_watershed(case, params=ws_params, et_native=99.0,
                           flair_grow=99.0, n4=0).labels
    ws_seconds = time.perf_counter() - t0
    maps = {"ref": case.label, "cnn": post.apply(probs), "hybrid": res.labels,
            "watershed": ws}
    present = np.zeros(case.shape, dtype=bool)
    for m in maps.values():
        present |= m > 0
    box = bounding_box(present, margin=2)
    out: dict[str, Any] = {k: np.asarray(v[box], dtype=np.uint8) for k, v in maps.items()}
    out.update(wt_prob=probs[0][box].astype(np.float16),
               tc_prob=probs[1][box].astype(np.float16),
               et_prob=probs[2][box].astype(np.float16),
               box=np.array([[b.start, b.stop] for b in box]),
               shape=np.array(case.shape), spacing=np.array(case.spacing),
               seconds=np.array([float(res.info["refine_seconds"]), ws_seconds]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, key=np.array(key), **out)
    return out


def _fused(maps: dict[str, Any], rule: dict[str, Any]) -> np.ndarray:
    from braintumor.watershed import fuse_labels

    return fuse_labels(maps["hybrid"], maps["watershed"],
                       maps["wt_prob"].astype(np.float32), **rule,
                       tc_prob=maps["tc_prob"].astype(np.float32),
                       et_prob=maps["et_prob"].astype(np.float32))


def _score_maps(pred: np.ndarray, maps: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Full-volume scores of a cut-out prediction (the box holds every foreground
    voxel of the prediction and the reference, so only the true negatives outside it
    are missing, and they are put back)."""
    from braintumor.preprocess import uncrop

    box = tuple(slice(int(a), int(b)) for a, b in maps["box"])
    shape = tuple(int(v) for v in maps["shape"])
    return _score(uncrop(pred, box, shape), uncrop(maps["ref"], box, shape),  # type: ignore[arg-type]
                  tuple(float(v) for v in maps["spacing"]))


def run(probs_dir: Path = PROBS, data: Path = DATA, out: Path = OUT,
        cache: Path | None = None, limit: int | None = None) -> dict[str, Any]:
    """The whole study; writes ``out`` and returns the summary."""
    from braintumor.cases import discover
    from braintumor.watershed import cnn_postprocess

    ids = sorted(p.stem for p in probs_dir.glob("*.npz"))[:limit]
    if not ids:
        raise SystemExit(f"no CNN probability maps in {probs_dir}")
    sources = {s.case_id: s for s in discover(data)}
    missing = [c for c in ids if c not in sources]
    if missing:
        raise SystemExit(f"cases not found under {data}: {missing}")
    post = cnn_postprocess()
    ws_cv = _watershed_params()
    print(f"{len(ids)} cases; CNN postprocessing {asdict(post)}", flush=True)
    cases = {}
    for c in ids:
        t0 = time.perf_counter()
        cases[c] = first_pass(c, sources, probs_dir, post, ws_cv.get(c), cache)
        print(f"{c} (fold {cases[c]['fold']}): CNN " + ", ".join(
            f"{r} {cases[c]['scores']['cnn'][r]['dice']:.3f}" for r in L.REGIONS)
            + f"; {time.perf_counter() - t0:.0f} s", flush=True)
    tuning = {c: v["tuning"] for c, v in cases.items()}
    folds = sorted({v["fold"] for v in cases.values()})
    cv_params: dict[str, Any] = {}
    maps: dict[str, dict[str, Any]] = {}
    for f in folds:
        test = [c for c in ids if cases[c]["fold"] == f]
        train = [c for c in ids if cases[c]["fold"] != f]
        sel = select(tuning, train) if train else select(tuning, test, math.inf)
        sel["test"], sel["train"] = test, train
        cv_params[str(f)] = sel
        print(f"fold {f}: refine {sel['params']['regions'] or 'nothing'}; training gains "
              + ", ".join(f"{r} {g:+.4f}" for r, g in sel["gain"].items()), flush=True)
        for c in test:
            maps[c] = case_maps(c, sources, probs_dir, post, sel["params"], ws_cv.get(c),
                                cache)
            cases[c]["seconds"]["hybrid"] = float(maps[c]["seconds"][0])
            cases[c]["scores"]["hybrid"] = _score_maps(maps[c]["hybrid"], maps[c])
            print(f"  {c}: hybrid " + ", ".join(
                f"{r} {cases[c]['scores']['hybrid'][r]['dice']:.3f}" for r in L.REGIONS),
                flush=True)

    # the combination rule, cross-validated over the cases on the watershed's folds
    rules = fusion_candidates()
    print(f"scoring {len(rules)} combination rules on every case", flush=True)
    fusion_dices: dict[str, list[dict[str, float]]] = {}
    for c in ids:
        ref = maps[c]["ref"]
        fusion_dices[c] = [_dices(_fused(maps[c], rule), ref) for rule in rules]
    fusion_cv: dict[str, Any] = {}
    for f, test in enumerate(fusion_folds(ids)):
        train = [c for c in ids if c not in test]
        sel = select_fusion(fusion_dices, train)
        sel["test"] = test
        fusion_cv[str(f)] = sel
        for c in test:
            t0 = time.perf_counter()
            pred = _fused(maps[c], sel["rule"])
            fuse_s = time.perf_counter() - t0
            cases[c]["scores"]["combined"] = _score_maps(pred, maps[c])
            cases[c]["seconds"]["combined"] = float(
                maps[c]["seconds"][0] + maps[c]["seconds"][1] + fuse_s)
        print(f"combination fold {f}: {_rule_text(sel['rule'])} (training gain "
              f"{sel['gain']:+.4f}); held out " + ", ".join(
                  f"{c} " + "/".join(f"{cases[c]['scores']['combined'][r]['dice']:.3f}"
                                     for r in L.REGIONS) for c in test), flush=True)
    # how well the two methods' agreement tells the combination's held-out accuracy
    from braintumor.watershed import method_agreement

    for c in ids:
        cases[c]["agreement"] = method_agreement(maps[c]["cnn"], maps[c]["watershed"])
    # the same choice on the CNN's folds instead: does the gain hinge on the split?
    alt: list[dict[str, float]] = []
    alt_rules = {}
    for f in folds:
        test = [c for c in ids if cases[c]["fold"] == f]
        sel = select_fusion(fusion_dices, [c for c in ids if c not in test])
        alt_rules[str(f)] = _rule_text(sel["rule"])
        alt += [fusion_dices[c][sel["index"]] for c in test]
    on_cnn_folds = {"rules": alt_rules,
                    "dice": {r: float(np.mean([d[r] for d in alt])) for r in L.REGIONS}}
    final = select(tuning, ids)
    final_fusion = select_fusion(fusion_dices, ids)
    final["fusion"] = final_fusion
    final["params"].update(final_fusion["rule"])
    summary = write_results(cases, cv_params, final, asdict(post), out, fusion_cv,
                            on_cnn_folds)
    return summary


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _ranks(x: np.ndarray) -> np.ndarray:
    # average ranks, so ties (e.g. several regions both empty: agreement 1) share one
    from scipy.stats import rankdata

    return np.asarray(rankdata(x), dtype=float)


def agreement_summary(agreement: dict[str, dict[str, float]],
                      dice: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per region: how the two methods' agreement (case -> region -> Dice between them)
    relates to the held-out Dice (case -> region -> Dice): Spearman and Pearson
    correlation, and the mean Dice of the cases flagged (agreement under
    :data:`braintumor.watershed.AGREEMENT_CHECK`) and of the others."""
    from braintumor.watershed import AGREEMENT_CHECK

    ids = sorted(agreement)
    out: dict[str, dict[str, Any]] = {}
    for r in L.REGIONS:
        a = np.array([agreement[c][r] for c in ids], dtype=float)
        d = np.array([dice[c][r] for c in ids], dtype=float)

        def corr(x: np.ndarray, y: np.ndarray) -> float:
            if len(x) < 3 or x.std() == 0 or y.std() == 0:
                return float("nan")
            return float(np.corrcoef(x, y)[0, 1])

        flag = a < AGREEMENT_CHECK
        out[r] = {"cases": len(ids), "spearman": corr(_ranks(a), _ranks(d)),
                  "pearson": corr(a, d), "flagged": int(flag.sum()),
                  "flagged_cases": [c for c, f in zip(ids, flag, strict=True) if f],
                  "flagged_dice": float(d[flag].mean()) if flag.any() else None,
                  "other_dice": float(d[~flag].mean()) if (~flag).any() else None}
    return out


def _rule_text(rule: dict[str, Any]) -> str:
    if rule == NO_FUSION:
        return "hybrid alone"
    veto = f", veto {rule['wt_veto']:g}" if rule["wt_veto"] > 0 else ""
    cover = f" and cover under {rule['core_cover']:g}" if rule.get("core_cover", 1) < 1 else ""
    adopt = f", watershed core lesions adopted at support {rule['core_adopt']:g}{cover}" \
        if rule.get("core_adopt", 0) > 0 else ""
    et = f", watershed ET adopted above p {rule['et_adopt']:g}" \
        if rule.get("et_adopt", 0) > 0 else ""
    return f"WT {rule['wt_from']}{veto}, core {rule['core']}{adopt}{et}"


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a))}


def _normalised(hp: Any) -> dict[str, Any]:
    """HybridParams fields with the per-region ones spelt out (WT, TC, ET), so that one
    number and three equal numbers compare equal."""
    from braintumor.watershed import _per_region

    d = asdict(hp)
    for k in ("sure_in", "sure_out", "grad_sigma"):
        d[k] = tuple(_per_region(getattr(hp, k), r) for r in L.REGIONS)
    return d


def write_results(cases: dict[str, Any], cv_params: dict[str, Any], final: dict[str, Any],
                  post: dict[str, Any], out: Path,
                  fusion_cv: dict[str, Any] | None = None,
                  on_cnn_folds: dict[str, Any] | None = None) -> dict[str, Any]:
    """``hybrid_cv.csv`` (one row per case, method and region), ``hybrid_cv.md``,
    ``summary.json``, ``cv_params.json``, ``fusion_cv.json`` and ``params.json`` under
    ``out``. ``on_cnn_folds``: the combination rule's choice and held-out mean Dice when
    it is cross-validated on the CNN's folds instead."""
    from braintumor.watershed import HybridParams, hybrid_params

    out.mkdir(parents=True, exist_ok=True)
    ids = sorted(cases)
    methods = [m for m in METHODS if all(m in cases[c]["scores"] for c in ids)]
    rows = []
    for c in ids:
        for m in methods:
            for r in L.REGIONS:
                sc = cases[c]["scores"][m][r]
                rows.append({"case": c, "fold": cases[c]["fold"], "method": m, "region": r,
                             **{k: round(sc[k], 5) for k in METRICS},
                             "seconds": round(cases[c]["seconds"][m], 3)})
    with open(out / "hybrid_cv.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary: dict[str, Any] = {"cases": len(ids), "postprocess": post, "methods": {}}
    for m in methods:
        summary["methods"][m] = {
            r: {k: _stats([cases[c]["scores"][m][r][k] for c in ids]) for k in METRICS}
            for r in L.REGIONS}
        summary["methods"][m]["seconds"] = _stats([cases[c]["seconds"][m] for c in ids])

    def diff(a: str, b: str) -> dict[str, float]:
        return {r: summary["methods"][a][r]["dice"]["mean"]
                - summary["methods"][b][r]["dice"]["mean"] for r in L.REGIONS}

    summary["hybrid_minus_cnn_dice"] = diff("hybrid", "cnn")
    summary["target_met"] = bool(min(summary["hybrid_minus_cnn_dice"].values()) >= -0.005)
    if "combined" in methods:
        for b in ("cnn", "hybrid", "watershed"):
            summary[f"combined_minus_{b}_dice"] = diff("combined", b)
        # beats both: at least the better of hybrid and watershed in every region
        summary["combined_beats_both"] = bool(all(
            summary["methods"]["combined"][r]["dice"]["mean"] >= max(
                summary["methods"][b][r]["dice"]["mean"] for b in ("hybrid", "watershed"))
            for r in L.REGIONS))
    if on_cnn_folds is not None:
        summary["combined_on_cnn_folds"] = on_cnn_folds
    if "combined" in methods and all("agreement" in cases[c] for c in ids):
        summary["agreement"] = agreement_summary(
            {c: cases[c]["agreement"] for c in ids},
            {c: {r: cases[c]["scores"]["combined"][r]["dice"] for r in L.REGIONS}
             for c in ids})
    summary["shipped_defaults_match"] = _normalised(HybridParams()) == _normalised(
        hybrid_params(final["params"]))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "cv_params.json").write_text(json.dumps(cv_params, indent=1))
    if fusion_cv is not None:
        (out / "fusion_cv.json").write_text(json.dumps(fusion_cv, indent=1))
    (out / "params.json").write_text(json.dumps(final, indent=1))

    names = {"cnn": "CNN alone", "hybrid": "hybrid", "watershed": "watershed alone",
             "combined": "combined"}
    lines = [f"### CNN alone, hybrid, watershed alone and combined: {len(ids)} cases, "
             "held out", "",
             "| method | region | Dice (mean ± sd) | median Dice | sensitivity | "
             "specificity | HD95 mm (mean ± sd) |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        for r in L.REGIONS:
            s = summary["methods"][m][r]
            lines.append(
                f"| {names[m]} | {r} | {s['dice']['mean']:.3f} ± {s['dice']['std']:.3f} | "
                f"{s['dice']['median']:.3f} | {s['sensitivity']['mean']:.3f} | "
                f"{s['specificity']['mean']:.4f} | {s['hd95']['mean']:.1f} ± "
                f"{s['hd95']['std']:.1f} |")
    sec = {m: summary["methods"][m]["seconds"]["mean"] for m in methods}
    lines += ["", "Hybrid minus CNN, mean Dice: " + ", ".join(
        f"{r} {d:+.4f}" for r, d in summary["hybrid_minus_cnn_dice"].items())
        + f" (target: none below -0.005: {'met' if summary['target_met'] else 'missed'})."]
    if "combined" in methods:
        for b in ("hybrid", "watershed", "cnn"):
            lines.append(f"Combined minus {names[b]}, mean Dice: " + ", ".join(
                f"{r} {d:+.4f}" for r, d in summary[f"combined_minus_{b}_dice"].items())
                + ".")
        lines.append("Combined at least as good as the better of hybrid and watershed in "
                     f"every region: {'yes' if summary['combined_beats_both'] else 'no'}.")
    lines += ["", f"Seconds per case on this CPU: watershed {sec['watershed']:.2f}; CNN "
              f"postprocessing {sec['cnn']:.2f} and hybrid refinement {sec['hybrid']:.2f}, "
              "both after the CNN's own inference"
              + (f"; combined (refinement, watershed and fusion) {sec['combined']:.2f}, "
                 "also after the CNN" if "combined" in methods else "") + ".", "",
              "Hybrid parameters per CNN fold (chosen on the other folds' cases):", ""]
    for f, sel in cv_params.items():
        ch = ", ".join(f"{r} band {v['sure_out']}-{v['sure_in']} sigma {v['grad_sigma']}"
                       if v else f"{r} CNN" for r, v in sel["per_region"].items())
        lines.append(f"* fold {f} ({len(sel['test'])} held out): {ch}; training gain "
                     + ", ".join(f"{r} {g:+.4f}" for r, g in sel["gain"].items()))
    if fusion_cv is not None:
        lines += ["", "Combination rule per watershed fold (chosen on the other folds' "
                  "cases; training gain in mean Dice over the hybrid alone):", ""]
        for f, sel in fusion_cv.items():
            lines.append(f"* fold {f} ({', '.join(sel['test'])}): {_rule_text(sel['rule'])}"
                         f" ({sel['gain']:+.4f})")
        if on_cnn_folds is not None:
            lines += ["", "The same choice cross-validated on the CNN's folds instead: "
                      + "; ".join(f"fold {f} {t}" for f, t in on_cnn_folds["rules"].items())
                      + "; held-out mean Dice " + ", ".join(
                          f"{r} {d:.3f}" for r, d in on_cnn_folds["dice"].items()) + "."]
        if "fusion" in final:
            lines += ["", f"On all cases: {_rule_text(final['fusion']['rule'])} "
                      f"({final['fusion']['gain']:+.4f}); the shipped `HybridParams` "
                      + ("defaults are this choice." if summary["shipped_defaults_match"]
                         else "defaults differ from this choice (`params.json`).")]
    if "agreement" in summary:
        from braintumor.watershed import AGREEMENT_CHECK

        lines += ["", "Agreement of the CNN alone and the watershed alone (Dice between their "
                  "label maps) against the combined hybrid's held-out Dice, per region: "
                  "rank correlation (Spearman), linear (Pearson), and the regions under "
                  f"{AGREEMENT_CHECK} (flagged for a check):", "",
                  "| region | Spearman | Pearson | flagged | their Dice (mean) | "
                  "the others' Dice (mean) |", "|---|---|---|---|---|---|"]
        for r, a in summary["agreement"].items():
            lines.append(f"| {r} | {a['spearman']:.2f} | {a['pearson']:.2f} | "
                         f"{a['flagged']} of {a['cases']} | {_fmt(a['flagged_dice'])} | "
                         f"{_fmt(a['other_dice'])} |")
    lines += ["", "Per-case Dice (WT / TC / ET):", "",
              "| case | fold | " + " | ".join(names[m] for m in methods) + " |",
              "|---|---|" + "---|" * len(methods)]
    for c in ids:
        cells = [" / ".join(f"{cases[c]['scores'][m][r]['dice']:.3f}" for r in L.REGIONS)
                 for m in methods]
        lines.append(f"| {c} | {cases[c]['fold']} | " + " | ".join(cells) + " |")
    if "agreement" in summary:
        lines += ["", "Agreement of CNN and watershed per case (WT / TC / ET): " + "; ".join(
            f"{c} " + "/".join(f"{cases[c]['agreement'][r]:.2f}" for r in L.REGIONS)
            for c in ids) + "."]
    (out / "hybrid_cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return summary


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry."""
    ap = argparse.ArgumentParser(
        prog="python -m braintumor.hybrid_study", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probs", type=Path, default=PROBS,
                    help="folder of <case>.npz held-out CNN probabilities (default: the "
                    "shipped model's, %(default)s)")
    ap.add_argument("--data", type=Path, default=DATA, help="the BraTS cases")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, default=ROOT / "cache" / "hybrid_study",
                    help="per-case first-pass results (resume); '' for none")
    ap.add_argument("--limit", type=int, default=None, help="only the first N cases")
    args = ap.parse_args(argv)
    cache = args.cache if str(args.cache) else None
    run(args.probs, args.data, args.out, cache, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
