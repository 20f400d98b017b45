"""Studies: many training runs under patient-wise k-fold cross-validation.

A study file (``configs/study_*.yaml``) names a common recipe (``base``, the fields of
:class:`~braintumor.config.TrainConfig`) and a list of ``runs`` that each change some of
it. Every run is trained on the training cases of each fold asked for and scored on that
fold's held-out cases only, in the input's native space, with
:func:`braintumor.metrics.score_case`. A study writes to its ``out`` folder:

* ``folds.json``: the patient-wise split (which cases each fold holds out);
* ``results.md`` / ``results.csv``: one row per run; per region (WT, TC, ET) Dice,
  sensitivity, specificity and HD95 (mm) as mean and standard deviation, parameters,
  training time, CPU inference time per case;
* ``cases.csv``: every held-out case's scores (long form);
* ``boxplot.png`` (per-region Dice per run) and ``curves.png`` (learning curves).

Runs are resumable: a run whose ``result.json`` matches its config is skipped, an
interrupted one resumes from its ``last.pt`` (the Trainer does that). Checkpoints live
under ``runs_dir`` (ignored by git). Runs are tracked in MLflow (see
:mod:`braintumor.training.tracking`).

Study file::

    study:
      name: architectures
      kind: compare          # compare | ablation | search (search: see training.search)
      folds: 3               # k of the k-fold split (patient-wise)
      run_folds: [0]         # folds to run (default: all k)
      split_seed: 0
      budget_min: 5          # wall-clock training budget per run (minutes; 0: none)
      parallel: 2            # runs at once, each with `base.threads` torch threads
      out: experiments/architectures
      runs_dir: runs/studies/architectures
      base_from: experiments/architectures   # optional: that (finished) study's best run
      note: text printed under the table
    base: {TrainConfig fields}
    runs:
      - name: compact_unet
        label: compact U-Net (own design)
        reference: false     # reference rows are left out when picking the best run
        set: {network: compact_unet, network_args: {channels: [16, 32, 64, 128]}}

Training never sees a held-out case: a run is trained with ``case_ids`` set to its
fold's training cases and ``fold: -1`` (no validation set), and its final weights
(``last.pt``, not a checkpoint chosen on held-out cases) are the ones scored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from braintumor.config import TrainConfig, from_dict, to_dict
from braintumor.errors import InputError
from braintumor.io import write_replacing

REGIONS = ("WT", "TC", "ET")
METRICS = ("dice", "sensitivity", "specificity", "hd95")
#: fields that decide nothing about the result (excluded from a run's identity)
_NEUTRAL = ("threads", "num_workers", "name")


@dataclass
class RunSpec:
    """One row of a study: a name, a label and its full training config."""

    name: str
    label: str
    cfg: TrainConfig
    reference: bool = False
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Study:
    """A parsed study file."""

    name: str
    kind: str
    folds: int
    run_folds: list[int]
    split_seed: int
    budget_min: float
    parallel: int
    out: Path
    runs_dir: Path
    base: TrainConfig
    runs: list[RunSpec]
    note: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    #: the folds given on the command line (``--folds``), None when the file's are used
    folds_given: list[int] | None = None
    #: command-line options that change the study's results (for its "Reproduce" line)
    overrides: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- loading


def best_run_config(study_out: str | Path) -> tuple[str, dict[str, Any]]:
    """The best non-reference run of a finished study: ``(name, train config dict)``."""
    p = Path(study_out) / "best.json"
    if not p.exists():
        raise InputError(f"{p}: not found; run that study first (it names the best run).")
    best = json.loads(p.read_text())
    if best.get("complete") is False:
        raise InputError(f"{p}: that study has not finished (not every run has a result, so "
                         f"{best['name']} is only the best so far); finish it before starting "
                         "from its best run.")
    return best["name"], best["config"]


def load_study(path: str | Path, budget_min: float | None = None,
               folds: list[int] | None = None) -> Study:
    """Read a study YAML; ``budget_min`` / ``folds`` override the file's values."""
    p = Path(path)
    if budget_min is not None and not (math.isfinite(budget_min) and budget_min > 0):
        raise InputError(f"--budget must be a number of minutes above 0, not {budget_min:g} "
                         "(leave it out to use the study file's budget_min).")
    if not p.exists():
        raise InputError(f"{p}: study file not found.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]}).") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file in UTF-8, so not a YAML study file.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("study"), dict):
        raise InputError(f"{p}: a study file needs a 'study:' mapping.")
    try:
        study = _read_study(p, raw, budget_min, folds)
    except (TypeError, ValueError) as exc:  # a value of the wrong kind
        if isinstance(exc, InputError):
            msg = str(exc)
            raise InputError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
        raise InputError(f"{p}: a study setting has a value of the wrong kind "
                         f"({exc}).") from None
    study.folds_given = list(folds) if folds is not None else None
    if budget_min is not None:
        study.overrides += ["--budget", f"{budget_min:g}"]
    if folds is not None:
        study.overrides += ["--folds", *(str(f) for f in folds)]
    return study


#: the settings a study file may hold, section by section
STUDY_KEYS = {"study": ("kind", "name", "folds", "run_folds", "split_seed", "budget_min",
                        "parallel", "out", "runs_dir", "note", "base_from"),
              "run": ("name", "label", "set", "reference"),
              "search": ("space", "trials", "fold", "inner_folds", "storage", "seed",
                         "startup_trials"),
              "top": ("study", "base", "runs", "search")}


def _unknown(p: Path, where: str, given: Any, section: str) -> None:
    if not isinstance(given, dict):
        raise InputError(f"{p}: {where} must be a mapping, not {given!r}.")
    bad = sorted(set(given) - set(STUDY_KEYS[section]))
    if bad:
        raise InputError(f"{p}: unknown {where} settings: {', '.join(map(str, bad))} (known: "
                         f"{', '.join(STUDY_KEYS[section])}).")


def _read_study(p: Path, raw: dict[str, Any], budget_min: float | None,
                folds: list[int] | None) -> Study:
    _unknown(p, "top-level", raw, "top")
    st = raw["study"]
    _unknown(p, "'study:'", st, "study")
    if raw.get("search") is not None:
        _unknown(p, "'search:'", raw["search"], "search")
    if not isinstance(raw.get("runs") or [], list):
        raise InputError(f"{p}: 'runs:' must be a list of runs, each with a name and 'set:'.")
    for i, r in enumerate(raw.get("runs") or []):
        _unknown(p, f"run {i + 1}'s", r, "run")
        if not isinstance(r.get("set") or {}, dict):
            raise InputError(f"{p}: run {r.get('name', i + 1)}'s 'set:' must be a mapping of "
                             "config fields.")
    kind = str(st.get("kind", "compare"))
    if kind not in ("compare", "ablation", "search"):
        raise InputError(f"{p}: study kind must be compare, ablation or search, not {kind!r}.")
    base_d: dict[str, Any] = {}
    if st.get("base_from"):
        _, base_d = best_run_config(st["base_from"])
        base_d = {k: v for k, v in base_d.items() if k not in ("case_ids", "fold", "name")}
    base = from_dict(base_d).replace(**dict(raw.get("base") or {}))
    k = int(st.get("folds", 3))
    if k < 2:
        raise InputError(f"{p}: a study needs 2 folds or more, not {k}.")
    run_folds = [int(f) for f in (folds if folds is not None else st.get("run_folds", range(k)))]
    bad = [f for f in run_folds if not 0 <= f < k]
    if bad:
        raise InputError(f"{p}: fold {bad[0]} does not exist (the study has {k} folds).")
    twice = sorted({f for f in run_folds if run_folds.count(f) > 1})
    if twice:
        raise InputError(f"{p}: fold {twice[0]} is given twice; each fold is run once (its "
                         "held-out cases would otherwise count twice).")
    budget = float(budget_min if budget_min is not None else st.get("budget_min", 0) or 0)
    if not (math.isfinite(budget) and budget >= 0):
        raise InputError(f"{p}: budget_min must be a number of minutes above 0 (or 0: no time "
                         f"budget, each run trains for its epochs), not {budget:g}.")
    name = str(st.get("name", p.stem))
    runs: list[RunSpec] = []
    for i, r in enumerate(raw.get("runs") or []):
        changes = dict(r.get("set") or {})
        rname = str(r.get("name", f"run{i}"))
        cfg = base.replace(**changes)
        if budget > 0:
            cfg = cfg.replace(time_budget_min=budget)
        runs.append(RunSpec(rname, str(r.get("label", rname)), cfg.replace(name=rname),
                            bool(r.get("reference", False)), changes))
    if kind != "search" and not runs:
        raise InputError(f"{p}: a {kind} study needs a non-empty 'runs:' list.")
    from braintumor.networks import check_network

    for r in runs:
        try:
            check_network(r.cfg.network, r.cfg.network_args, r.cfg.patch)
        except InputError as exc:
            raise InputError(f"run {r.name}: {exc}") from None
    if kind == "search":
        check_network(base.network, base.network_args, base.patch)
    note = str(st.get("note", "")).strip()
    no_ds = {r.cfg.network for r in runs if r.cfg.deep_supervision
             and not supports_deep_supervision(r.cfg.network, r.cfg.network_args)}
    if no_ds:
        # the knob does nothing for these networks: turn it off and drop rows that
        # then repeat an earlier row
        seen: set[str] = set()
        kept: list[RunSpec] = []
        dropped: list[RunSpec] = []
        for r in runs:
            if r.cfg.network in no_ds:
                r.cfg = r.cfg.replace(deep_supervision=False)
            key = config_key(r.cfg)
            (dropped if key in seen else kept).append(r)
            seen.add(key)
        runs = kept
        note += (f"\n\nDeep supervision does not apply to {', '.join(sorted(no_ds))} (no "
                 "deep-supervision outputs): it is off in every row"
                 + (f"; left out as duplicates: {', '.join(r.name for r in dropped)}."
                    if dropped else "."))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputError(f"{p}: run names must be unique.")
    return Study(name=name, kind=kind, folds=k, run_folds=run_folds,
                 split_seed=int(st.get("split_seed", 0)), budget_min=budget,
                 parallel=max(1, int(st.get("parallel", 1))),
                 out=Path(st.get("out", f"experiments/{name}")),
                 runs_dir=Path(st.get("runs_dir", f"runs/studies/{name}")),
                 base=base, runs=runs, note=note.strip(), raw=raw, path=p)


def supports_deep_supervision(network: str, network_args: dict[str, Any]) -> bool:
    """Whether a network returns extra deep-supervision outputs when asked to."""
    import torch

    from braintumor.networks import create_network, patch_rule

    net = create_network(network, out_channels=3, **{**network_args, "deep_supervision": True})
    net.train()
    rule = patch_rule(network, network_args)
    side = [32, 32, 32] if rule is None else [max(32, m) for m in rule[1]]
    with torch.no_grad():
        out = net(torch.zeros(2, 4, *side))
    return isinstance(out, (list, tuple))


# ----------------------------------------------------------------------------- data


def all_case_ids(cfg: TrainConfig) -> list[str]:
    """Case ids the study draws its folds from (the cache index or the phantoms)."""
    if cfg.synthetic > 0:
        return [f"phantom_{1000 + i}" for i in range(cfg.synthetic)]
    from braintumor.training.trainer import cached_case_ids

    return sorted(cached_case_ids(cfg))


def study_folds(study: Study) -> list[dict[str, list[str]]]:
    """The patient-wise folds of a study (written to ``folds.json``)."""
    from braintumor.training.data import kfold_split

    return kfold_split(all_case_ids(study.base), study.folds, study.split_seed)


def _synthetic_case(cfg: TrainConfig, case_id: str) -> Any:
    from braintumor.phantom import make_case

    i = int(case_id.rsplit("_", 1)[1]) - 1000
    case = make_case(shape=cfg.synthetic_shape, seed=1000 + i, low_grade=(i % 4 == 3))
    case.case_id = case_id
    return case


def held_out_case(cfg: TrainConfig, case_id: str) -> tuple[Any, np.ndarray, tuple[float, ...]]:
    """A held-out case as the model sees it and its reference in native space:
    ``(Prepared, reference labels (X, Y, Z) internal, spacing mm)``."""
    from braintumor.training.data import load_prepared, prepare_case

    if cfg.synthetic > 0:
        case = _synthetic_case(cfg, case_id)
        prep = prepare_case(case)
        prep.case_id = case_id
        return prep, case.label, tuple(case.spacing)
    from braintumor.cases import discover, load_case

    prep = load_prepared(Path(cfg.cache) / f"{case_id}.npz")
    src = {s.case_id: s for s in discover(cfg.data)}.get(case_id)
    if src is None or src.label_path is None:
        raise InputError(f"{cfg.data}: no reference label for held-out case {case_id}.")
    # read as the cache was made (load_case): the reference on the grid the prediction
    # is uncropped onto, turned as the modalities are where it is stored otherwise
    case = load_case(src, with_label=True)
    assert case.label is not None
    return prep, case.label, tuple(case.spacing)


# ------------------------------------------------------------------------ one run


def config_key(cfg: TrainConfig) -> str:
    """Short hash of everything in a config that can change a result."""
    d = {k: v for k, v in to_dict(cfg).items() if k not in _NEUTRAL}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def evaluate_run(run_dir: Path, cfg: TrainConfig, case_ids: list[str], device: str = "cpu",
                 checkpoint: str = "last.pt") -> list[dict[str, Any]]:
    """Score a trained run on held-out cases in native space, one row per case."""
    import torch

    from braintumor.inference import PostProcess, load_checkpoint_net, sliding_window_probs
    from braintumor.metrics import score_case
    from braintumor.preprocess import uncrop

    net, _ = load_checkpoint_net(run_dir / checkpoint, device)
    post = PostProcess()
    rows = []
    for cid in case_ids:
        prep, ref, spacing = held_out_case(cfg, cid)
        t0 = time.perf_counter()
        probs = sliding_window_probs(net, prep.image, cfg.patch, cfg.sw_overlap, device,
                                     cfg.output, whole_volume_max=cfg.whole_volume_max)
        lab = post.apply(probs)
        if device == "cuda":
            torch.cuda.synchronize()
        infer_s = time.perf_counter() - t0
        pred = uncrop(lab, prep.box, ref.shape, fill=0)
        scores = score_case(pred, ref, spacing, lesions=False)
        row: dict[str, Any] = {"case": cid, "infer_s": infer_s}
        for r in REGIONS:
            for m in METRICS:
                row[f"{r}_{m}"] = float(scores[r][m])
        rows.append(row)
    return rows


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (run, fold) on the fold's training cases and score its held-out cases.

    ``job``: ``cfg`` (dict), ``run_dir``, ``train_ids``, ``val_ids``, ``device``,
    ``name``, ``fold``. Returns (and writes as ``result.json``) the per-case scores,
    parameter count and timings. Top-level so worker processes can run it.
    """
    import torch

    from braintumor.networks import count_parameters, create_network
    from braintumor.training.trainer import Trainer, read_json_record

    cfg = from_dict(job["cfg"])
    run_dir = Path(job["run_dir"])
    key = config_key(cfg)
    res_path = run_dir / "result.json"
    old = read_json_record(res_path)
    if old is not None and old.get("config_key") == key:
        old["skipped"] = True
        return old
    _set_aside_if_changed(run_dir, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    resumed = False
    summary = read_json_record(run_dir / "summary.json")
    if summary is None:  # not trained, or its summary cut short: the trainer (re)writes it
        trainer = Trainer(cfg, run_dir, device=job.get("device", "cpu"), progress=False)
        summary = trainer.fit()
        resumed = trainer.resumed_epoch is not None
    out_ch = 3 if cfg.output == "sigmoid" else 4
    n_params = count_parameters(create_network(cfg.network, out_channels=out_ch,
                                               **cfg.network_args))
    from braintumor.inference import resolve_device

    cases = evaluate_run(run_dir, cfg, list(job["val_ids"]), resolve_device(job.get("device",
                                                                                  "cpu")))
    result = {"name": job["name"], "fold": job["fold"], "config_key": key,
              "params": n_params, "train_s": summary["train_s"], "steps": summary["steps"],
              "epochs": summary["epochs"], "stop": summary["stop"],
              "train_cases": list(job["train_ids"]), "val_cases": list(job["val_ids"]),
              "cases": cases, "run_dir": str(run_dir)}
    text = json.dumps(result, indent=1)
    write_replacing(res_path, lambda tmp: tmp.write_text(text))
    return {**result, "resumed": True} if resumed else result


def _set_aside_if_changed(run_dir: Path, cfg: TrainConfig) -> Path | None:
    """A run folder trained under another config (the study's config or its ``--budget``
    changed since): renamed to ``<fold>.replaced-N`` beside it, nothing deleted, so the
    run trains afresh under its new config instead of its old weights being scored (or
    resumed) under the new one's name. Says so on stderr, with what changed; returns the
    new name of the old folder (None when it was kept)."""
    import sys

    saved = run_dir / "config.yaml"
    if not saved.exists():
        return None
    try:
        old_cfg = from_dict((yaml.safe_load(saved.read_text()) or {}).get("train") or {})
    except (InputError, yaml.YAMLError, TypeError, ValueError):
        why = f"its {saved.name} cannot be read as a config"
    else:
        if config_key(old_cfg) == config_key(cfg):
            return None
        why = "trained under another config (" + config_changes(old_cfg, cfg) + ")"
    n = 1
    while run_dir.with_name(f"{run_dir.name}.replaced-{n}").exists():
        n += 1
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{n}")
    run_dir.rename(aside)
    print(f"{run_dir}: {why}; set aside as {aside.name} (nothing deleted), this run trains "
          "afresh", file=sys.stderr, flush=True)
    return aside


def config_changes(old: TrainConfig, new: TrainConfig, most: int = 3) -> str:
    """``"lr 0.002 -> 0.01, time_budget_min 5.0 -> 0.05"``: the fields that change a
    result and differ (the first ``most`` of them)."""
    a, b = to_dict(old), to_dict(new)
    keys = [k for k in b if k not in _NEUTRAL and a.get(k) != b[k]]
    parts = []
    for k in keys:
        if isinstance(b[k], dict) and isinstance(a.get(k), dict):
            parts += [f"{k}.{x} {a[k].get(x)!r} -> {b[k].get(x)!r}" for x in b[k]
                      if a[k].get(x) != b[k].get(x)]
        elif k == "case_ids":
            parts.append(f"case_ids ({len(a.get(k) or [])} -> {len(b[k])} cases)")
        else:
            parts.append(f"{k} {a.get(k)!r} -> {b[k]!r}")
    more = f" and {len(parts) - most} more" if len(parts) > most else ""
    return ", ".join(parts[:most]) + more


# ---------------------------------------------------------------------- the study


def make_jobs(study: Study, folds: list[dict[str, list[str]]], device: str
              ) -> list[dict[str, Any]]:
    """One job per (run, fold), fold-major so early results cover every run."""
    jobs = []
    for f in study.run_folds:
        for r in study.runs:
            cfg = r.cfg.replace(case_ids=tuple(folds[f]["train"]), fold=-1)
            jobs.append({"cfg": to_dict(cfg), "name": r.name, "fold": f,
                         "run_dir": str(study.runs_dir / r.name / f"fold{f}"),
                         "train_ids": folds[f]["train"], "val_ids": folds[f]["val"],
                         "device": device})
    return jobs


def execute(jobs: list[dict[str, Any]], parallel: int,
            on_result: Callable[[dict[str, Any]], None] | None = None,
            scheduler: str | None = None) -> list[dict[str, Any]]:
    """Run jobs, ``parallel`` at once in worker processes (in-process when 1), or as
    tasks of a Dask cluster when ``scheduler`` is given (``local:N`` or ``HOST:PORT``,
    see :mod:`braintumor.scale`; the data, cache and run folders must be seen under the
    same paths by every worker)."""
    results: list[dict[str, Any]] = []

    def take(res: dict[str, Any]) -> None:
        results.append(res)
        if on_result:
            on_result(res)

    if scheduler:
        from braintumor.scale import open_client

        with open_client(scheduler) as client:
            from distributed import as_completed as dask_completed

            futs = [client.submit(run_job, j, key=f"braintumor-run-{j['name']}-{j['fold']}-"
                                  f"{config_key(from_dict(j['cfg']))}") for j in jobs]
            for dfut in dask_completed(futs):
                take(dfut.result())
        return results
    if parallel <= 1 or len(jobs) <= 1:
        for j in jobs:
            take(run_job(j))
        return results
    from concurrent.futures import as_completed

    with worker_pool(parallel) as ex:
        for fut in as_completed([ex.submit(run_job, j) for j in jobs]):
            take(fut.result())
    return results


def worker_pool(parallel: int) -> Any:
    """``parallel`` spawned worker processes that end with this process however it ends
    (killed outright, its workers would go on training run folders that a rerun of the
    study trains again)."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    from braintumor.interrupts import die_with_parent

    return ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def run_study(study: Study, device: str = "cpu", tracking_uri: str | None = "default",
              log: Callable[[str], None] = print,
              scheduler: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) a compare/ablation study and write its tables and plots; the runs
    go to a Dask cluster when ``scheduler`` is given (:func:`execute`)."""
    from braintumor.training.tracking import Tracker

    folds = study_folds(study)
    keep_earlier_outputs(study)
    study.out.mkdir(parents=True, exist_ok=True)
    write_folds(study, folds)
    jobs = make_jobs(study, folds, device)
    tracker = Tracker(tracking_uri, study.name)
    done: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def on_result(res: dict[str, Any]) -> None:
        done.append(res)
        m = _case_means(res["cases"])
        state = " (already done)" if res.get("skipped") else (
            " (resumed)" if res.get("resumed") else "")
        log(f"[{len(done)}/{len(jobs)}] {res['name']} fold {res['fold']}{state}: "
            f"Dice WT {m['WT_dice']:.3f} "
            f"TC {m['TC_dice']:.3f} ET {m['ET_dice']:.3f}; trained {res['train_s'] / 60:.1f} min"
            f" ({time.perf_counter() - t0:.0f} s into the study)")
        tracker.log_run(res, _spec(study, res["name"]).cfg, study)
        write_outputs(study, folds, done)

    where = f"on the Dask cluster {scheduler}" if scheduler else f"{study.parallel} at once"
    budget = (f"budget {study.budget_min:g} min/run" if study.budget_min else
              "no time budget (each run trains for its epochs)")
    log(f"study {study.name}: {len(study.runs)} runs x folds {study.run_folds} "
        f"(k={study.folds}), {budget}, {where}")
    results = execute(jobs, study.parallel, on_result, scheduler)
    write_outputs(study, folds, results)
    return results


def _spec(study: Study, name: str) -> RunSpec:
    return next(r for r in study.runs if r.name == name)


#: what :func:`write_outputs` writes: one table's worth, kept aside together
OUTPUT_FILES = ("results.md", "results.csv", "cases.csv", "best.json", "boxplot.png",
                "curves.png")


def _budget_words(budget: float) -> str:
    return f"{budget:g} min/run" if budget else "no time budget"


def keep_earlier_outputs(study: Study) -> int | None:
    """A rerun with other folds or another budget would overwrite the study's tables with
    its own: the earlier ones are renamed ``results.prev-N.md`` (and ``.csv``,
    ``cases.prev-N.csv``, ...) beside them, said in one line on stderr; returns N (None
    when nothing was kept aside: no earlier tables, or the same folds, in any order, and
    budget)."""
    import sys

    out = study.out
    if not (out / "results.md").exists() or not (out / "folds.json").exists():
        return None
    try:
        old = json.loads((out / "folds.json").read_text())
    except ValueError:
        old = {}
    old_folds = old.get("run_folds")
    old_budget = old.get("budget_min", study.budget_min)  # not recorded before: unknown
    same_folds = isinstance(old_folds, list) and set(old_folds) == set(study.run_folds)
    if same_folds and old_budget == study.budget_min:  # --folds 1 0 after 0 1: the same
        return None
    n = 1
    while any((out / f"{Path(f).stem}.prev-{n}{Path(f).suffix}").exists() for f in OUTPUT_FILES):
        n += 1
    for f in OUTPUT_FILES:
        if (out / f).exists():
            (out / f).rename(out / f"{Path(f).stem}.prev-{n}{Path(f).suffix}")
    print(f"{out}: the earlier tables (folds {old_folds}, {_budget_words(float(old_budget))}) "
          f"are kept as results.prev-{n}.md, .csv and the like; this run (folds "
          f"{study.run_folds}, {_budget_words(study.budget_min)}) writes its own",
          file=sys.stderr, flush=True)
    return n


def write_folds(study: Study, folds: list[dict[str, list[str]]]) -> Path:
    """``folds.json``: the split, its seed, which folds this study ran and its budget."""
    p = study.out / "folds.json"
    p.write_text(json.dumps({"k": study.folds, "split_seed": study.split_seed,
                             "run_folds": study.run_folds, "budget_min": study.budget_min,
                             "folds": folds}, indent=1))
    return p


# ------------------------------------------------------------------------ tables


def _case_means(cases: list[dict[str, Any]]) -> dict[str, float]:
    return {f"{r}_{m}": float(np.mean([c[f"{r}_{m}"] for c in cases]))
            for r in REGIONS for m in METRICS}


def aggregate(study: Study, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: metric means and standard deviations (over folds when more
    than one fold was run, otherwise over held-out cases), parameters and timings."""
    rows = []
    for spec in study.runs:
        res = sorted((r for r in results if r["name"] == spec.name), key=lambda r: r["fold"])
        if not res:
            continue
        cases = [c for r in res for c in r["cases"]]
        row: dict[str, Any] = {
            "run": spec.name, "label": spec.label, "network": spec.cfg.network,
            "reference": spec.reference, "folds": " ".join(str(r["fold"]) for r in res),
            "n_cases": len(cases), "params_M": res[0]["params"] / 1e6,
            "budget_min": spec.cfg.time_budget_min,
            "train_min": float(np.mean([r["train_s"] for r in res])) / 60,
            "steps": float(np.mean([r["steps"] for r in res])),
            "patch": "x".join(str(p) for p in spec.cfg.patch),
            "infer_s_per_case": float(np.mean([c["infer_s"] for c in cases])),
            "sd_over": "folds" if len(res) > 1 else "cases",
        }
        for r in REGIONS:
            for m in METRICS:
                key = f"{r}_{m}"
                vals = [c[key] for c in cases]
                fold_means = [float(np.mean([c[key] for c in x["cases"]])) for x in res]
                row[f"{key}_mean"] = float(np.mean(vals))
                sd_src = fold_means if len(res) > 1 else vals
                row[f"{key}_sd"] = float(np.std(sd_src, ddof=1)) if len(sd_src) > 1 else 0.0
        row["mean_dice"] = float(np.mean([row[f"{r}_dice_mean"] for r in REGIONS]))
        row["changes"] = json.dumps(spec.changes, sort_keys=True)
        rows.append(row)
    return rows


def _fmt(mean: float, sd: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(study: Study, rows: list[dict[str, Any]]) -> str:
    """The results as Markdown: Dice and HD95 first, then sensitivity/specificity."""
    sd_over = {r["sd_over"] for r in rows}
    lines = [f"# Study: {study.name}", ""]
    if study.note:
        lines += [study.note, ""]
    lines += [
        f"Patient-wise {study.folds}-fold split of {len(all_case_ids(study.base))} cases "
        f"(seed {study.split_seed}, `folds.json`); folds run: {study.run_folds}. "
        + (f"Training budget per run: {study.budget_min:g} min wall clock "
           "(learning rate annealed over it), " if study.budget_min else
           f"Training: {study.base.epochs} x {study.base.steps_per_epoch} steps per run, ")
        + f"{study.base.threads or 'default'} torch "
        f"thread(s), {study.parallel} run(s) at once. Scores from the final weights on "
        "held-out cases only, in native space (`braintumor.metrics.score_case`); "
        f"mean ± standard deviation over {' / '.join(sorted(sd_over))}. "
        "Inference time: network + postprocessing per case on the brain crop "
        "(CPU, same thread count, another run sharing the machine).",
        "",
        "| run | network | params (M) | patch | steps | train (min) | infer (s/case) "
        "| WT Dice | TC Dice | ET Dice | mean Dice | WT HD95 | TC HD95 | ET HD95 |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"{r['label']}{' (reference)' if r['reference'] else ''}"
        lines.append(
            f"| {name} | {r['network']} | {r['params_M']:.2f} | {r['patch']} | "
            f"{r['steps']:.0f} | {r['train_min']:.1f} | {r['infer_s_per_case']:.1f} | "
            + " | ".join(_fmt(r[f"{g}_dice_mean"], r[f"{g}_dice_sd"]) for g in REGIONS)
            + f" | {r['mean_dice']:.3f} | "
            + " | ".join(_fmt(r[f"{g}_hd95_mean"], r[f"{g}_hd95_sd"], 1) for g in REGIONS)
            + " |")
    lines += ["", "Sensitivity and specificity:", "",
              "| run | " + " | ".join(f"{g} sens | {g} spec" for g in REGIONS) + " |",
              "|---|" + "---:|" * 6]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{_fmt(r[f'{g}_sensitivity_mean'], r[f'{g}_sensitivity_sd'])} | "
            f"{_fmt(r[f'{g}_specificity_mean'], r[f'{g}_specificity_sd'], 4)}"
            for g in REGIONS) + " |")
    lines += ["", "HD95 in mm (374 mm when exactly one of prediction and reference is empty)."]
    import shlex

    cmd = shlex.join(["braintumor", "experiment", "--config", str(study.path),
                      *study.overrides]) if study.path else ""
    if cmd:
        lines += ["", f"Reproduce: `{cmd}`"]
    return "\n".join(lines) + "\n"


def paired_section(results: list[dict[str, Any]], rows: list[dict[str, Any]],
                   best: str) -> list[str]:
    """Markdown lines: each run's held-out Dice with its 95 % bootstrap interval, and the
    best run against every other on the same cases (:mod:`braintumor.stats`)."""
    from braintumor import stats as S

    def per_case(name: str, region: str | None) -> dict[str, float]:
        cases = [c for r in results if r["name"] == name for c in r["cases"]]
        if region is not None:
            return {c["case"]: float(c[f"{region}_dice"]) for c in cases}
        return {c["case"]: float(np.mean([c[f"{g}_dice"] for g in REGIONS])) for c in cases}

    lines = ["", "Intervals and paired tests (95 % BCa bootstrap of the mean over held-out "
             "cases; the best run minus each other run on the same cases, Wilcoxon "
             "signed-rank over the cases that differ; with n of them p cannot fall below "
             "2 / 2^n):", "",
             "| run | " + " | ".join(f"{g} Dice [95% CI]" for g in REGIONS)
             + f" | mean Dice: {best} minus run [95% CI] | Wilcoxon p | {best} wins / ties "
             "/ loses |", "|---|" + "---|" * (len(REGIONS) + 3)]
    for r in rows:
        cells = [S.mean_ci(per_case(r["run"], g).values()).text() for g in REGIONS]
        if r["run"] == best:
            tail = ["(best)", "", ""]
        else:
            try:
                p = S.paired(per_case(best, None), per_case(r["run"], None), "mean", "dice")
            except InputError:  # runs of a study in progress that share no fold yet
                tail = ["no common case yet", "", ""]
            else:
                tail = [f"{p.diff:+.3f} [{p.low:+.3f}, {p.high:+.3f}]", S.fmt_p(p.p),
                        f"{p.wins} / {p.ties} / {p.losses}"]
        lines.append(f"| {r['label']} | " + " | ".join(cells + tail) + " |")
    return lines


def write_outputs(study: Study, folds: list[dict[str, list[str]]],
                  results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tables (Markdown, CSV), per-case CSV, plots and ``best.json``."""
    rows = aggregate(study, results)
    if not rows:
        return rows
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    cands = [r for r in rows if not r["reference"]] or rows
    best = max(cands, key=lambda r: r["mean_dice"])
    (out / "results.md").write_text(
        markdown_table(study, rows) + "\n".join(paired_section(results, rows, best["run"]))
        + "\n")
    keys = list(rows[0])
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(out / "cases.csv", "w", newline="") as fh:
        ck = ["run", "fold", *results[0]["cases"][0].keys()]
        w = csv.DictWriter(fh, fieldnames=ck)
        w.writeheader()
        for res in sorted(results, key=lambda r: (r["name"], r["fold"])):
            for c in res["cases"]:
                w.writerow({"run": res["name"], "fold": res["fold"], **c})
    spec = _spec(study, best["run"])
    (out / "best.json").write_text(json.dumps(
        {"name": best["run"], "mean_dice": best["mean_dice"],
         "complete": len(rows) == len(study.runs),
         "config": to_dict(spec.cfg)}, indent=1))
    plot_boxes(study, results, out / "boxplot.png")
    plot_curves(study, results, out / "curves.png")
    return rows


def plot_boxes(study: Study, results: list[dict[str, Any]], path: Path) -> None:
    """Per-region box plots of held-out per-case Dice, one box per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in study.runs if any(x["name"] == r.name for x in results)]
    labels = [_spec(study, n).label for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(4 + 1.3 * len(names) * 1.5, 4), sharey=True)
    for ax, reg in zip(axes, REGIONS, strict=True):
        data = [[c[f"{reg}_dice"] for x in results if x["name"] == n for c in x["cases"]]
                for n in names]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        for i, d in enumerate(data):  # show the points: few cases per box
            ax.scatter(np.full(len(d), i + 1) + np.linspace(-0.08, 0.08, len(d)), d, s=9,
                       alpha=0.6)
        ax.set_title(f"{reg} Dice (held-out cases)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{study.name}: folds {study.run_folds}, {study.budget_min:g} min/run")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(study: Study, results: list[dict[str, Any]], path: Path) -> None:
    """Training loss against wall-clock minutes, one line per run (first fold run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for spec in study.runs:
        res = sorted((x for x in results if x["name"] == spec.name), key=lambda r: r["fold"])
        if not res:
            continue
        log = Path(res[0]["run_dir"]) / "log.csv"
        if not log.exists():
            continue
        with open(log) as fh:
            hist = list(csv.DictReader(fh))
        t = [float(h["elapsed_s"]) / 60 for h in hist]
        loss = [float(h["loss"]) for h in hist]
        ax.plot(t, loss, marker="o", markersize=2,
                label=f"{spec.label} (fold {res[0]['fold']}, loss {spec.cfg.loss})")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("training loss (per epoch)")
    ax.set_title(f"{study.name}: learning curves (no validation during training: the "
                 "held-out cases are never seen)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
