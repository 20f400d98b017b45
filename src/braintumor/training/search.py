"""Hyperparameter search with Optuna, nested inside one cross-validation fold.

The search never looks at the held-out cases it is judged on: for outer fold ``f`` it
splits that fold's training cases again (``inner_folds``, patient-wise) and each trial
trains on the inner training cases and reports Dice on the inner validation cases. Only
the chosen configuration (and the starting one, for comparison) is then retrained on
all of fold ``f``'s training cases and scored on its held-out cases, like any study row.

Storage is SQLite (resumable: re-running continues the same study; a trial cut off by
an interruption, Ctrl-C or SIGTERM, is re-queued with the same parameters and its run
folder, so it resumes from its ``last.pt``). The storage keeps what defines a trial
(:func:`search_definition`); a rerun that changes it is refused. Each worker process
samples with its own seed; ``--folds K`` (one fold) picks the outer fold.

Pruning: every validation the Trainer makes is reported through its ``on_validate``
hook at the share of the time budget used (tenths, carried forward so trials validated
at different moments stay comparable), and Optuna's median pruner stops trials below
the median of earlier ones.

Study file (besides ``study``/``base`` as in :mod:`braintumor.training.experiments`)::

    search:
      trials: 10              # trials finished or pruned, in all
      fold: 0                 # the outer fold
      inner_folds: 3
      storage: experiments/search/optuna.db
      seed: 0
      startup_trials: 3       # no pruning before this many trials finished
      space:
        lr: {low: 3.0e-4, high: 1.0e-2, log: true}
        weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}
        dropout: {low: 0.0, high: 0.3}
        augment.strength: {low: 0.0, high: 2.0}
        patch: {choices: [48, 64, 80]}      # cubic patch side (voxels)
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.config import TrainConfig, to_dict
from braintumor.errors import InputError
from braintumor.interrupts import interruptible
from braintumor.training.experiments import (
    RunSpec,
    Study,
    execute,
    make_jobs,
    study_folds,
    write_folds,
    write_outputs,
)


def search_settings(study: Study) -> dict[str, Any]:
    """The ``search:`` mapping with defaults filled in."""
    s = dict(study.raw.get("search") or {})
    if not s.get("space"):
        raise InputError(f"{study.path}: a search study needs a 'search: space:' mapping.")
    s.setdefault("trials", 10)
    s.setdefault("fold", study.run_folds[0] if study.run_folds else 0)
    s.setdefault("inner_folds", 3)
    s.setdefault("storage", str(study.out / "optuna.db"))
    s.setdefault("seed", 0)
    s.setdefault("startup_trials", 3)
    known = {f.name for f in fields(TrainConfig)}
    space = s["space"]
    if not isinstance(space, dict):
        raise InputError(f"{study.path}: 'search: space:' must map config fields to ranges.")
    for name, spec in space.items():
        if name not in known and not str(name).startswith("augment."):
            raise InputError(f"{study.path}: search space: {name!r} is not a config field.")
        if not isinstance(spec, dict) or not ("choices" in spec or
                                              {"low", "high"} <= set(spec)):
            raise InputError(f"{study.path}: search space: {name!r} needs 'choices: [...]' "
                             "or 'low:' and 'high:'.")
    if study.folds_given is not None:  # --folds: the outer fold of the search
        if len(set(study.folds_given)) != 1:
            raise InputError(f"{study.path}: a search runs on one outer fold; give one "
                             f"--folds value, not {' '.join(map(str, study.folds_given))}.")
        s["fold"] = study.folds_given[0]
    for key in ("trials", "inner_folds", "startup_trials", "seed", "fold"):
        if not isinstance(s[key], int) or isinstance(s[key], bool):
            raise InputError(f"{study.path}: search: {key} must be a whole number, not "
                             f"{s[key]!r}.")
    if not 0 <= s["fold"] < study.folds:
        raise InputError(f"{study.path}: search: fold {s['fold']} does not exist (the study "
                         f"has {study.folds} folds).")
    if s["inner_folds"] < 2:
        raise InputError(f"{study.path}: search: inner_folds must be 2 or more, not "
                         f"{s['inner_folds']}.")
    check_space(study, space)
    return s


def check_space(study: Study, space: dict[str, Any]) -> None:
    """Refuse, in one sentence, a search space that can draw a value the trainer cannot
    take: bounds out of order, a log range that reaches 0, a value outside the config's
    limits (dropout 1.5), a patch the network's downsampling does not divide. Every
    choice and both ends of every range are applied to the base config and checked as a
    config is (with every combination of the choices, which may depend on each other:
    patch and network)."""
    import itertools

    from braintumor.networks import check_network

    def check(changes: dict[str, Any], what: str) -> None:
        try:
            cfg = study.base.replace(**params_to_changes(changes))
            check_network(cfg.network, cfg.network_args, cfg.patch)
        except InputError as exc:
            raise InputError(f"{study.path}: search space: {what} cannot be trained: "
                             f"{str(exc).rstrip('.')}.") from None

    choices: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if "choices" in spec:
            vals = spec["choices"]
            if not isinstance(vals, list) or not vals:
                raise InputError(f"{study.path}: search space: {name} choices must be a "
                                 f"non-empty list, not {vals!r}.")
            choices[name] = vals
            for v in vals:
                check({name: v}, f"{name} choice {v!r}")
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (TypeError, ValueError):
            raise InputError(f"{study.path}: search space: {name} low and high must be "
                             f"numbers, not {spec['low']!r} and {spec['high']!r}.") from None
        if not low <= high:
            raise InputError(f"{study.path}: search space: {name} low {spec['low']!r} is above "
                             f"high {spec['high']!r}.")
        if spec.get("log") and low <= 0:
            raise InputError(f"{study.path}: search space: {name} is searched on a log scale, "
                             f"so low must be above 0, not {spec['low']!r}.")
        for end in ("low", "high"):
            check({name: spec[end]}, f"{name} {end} {spec[end]!r}")
    if len(choices) > 1:
        names = list(choices)
        for combo in itertools.islice(itertools.product(*choices.values()), 1000):
            check(dict(zip(names, combo, strict=True)),
                  " with ".join(f"{n} {v!r}" for n, v in zip(names, combo, strict=True)))


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one configuration from the search space (Optuna ``suggest_*``)."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif isinstance(spec.get("low"), int) and isinstance(spec.get("high"), int) \
                and not spec.get("float"):
            params[name] = trial.suggest_int(name, spec["low"], spec["high"],
                                             log=bool(spec.get("log", False)))
        else:
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=bool(spec.get("log", False)))
    return params


def params_to_changes(params: dict[str, Any]) -> dict[str, Any]:
    """Search parameters -> config changes (a patch side becomes a cubic patch)."""
    ch = dict(params)
    if "patch" in ch and not isinstance(ch["patch"], (list, tuple)):
        p = int(ch["patch"])
        ch["patch"] = [p, p, p]
    return ch


def base_params(base: TrainConfig, space: dict[str, Any]) -> dict[str, Any]:
    """The starting configuration's values of the searched parameters."""
    d = to_dict(base)
    out: dict[str, Any] = {}
    for name in space:
        if name.startswith("augment."):
            out[name] = d["augment"][name.split(".", 1)[1]]
        elif name == "patch":
            out[name] = int(base.patch[0])
        else:
            out[name] = d[name]
    return out


def _trial_dir(runs_dir: Path, trial: Any) -> Path:
    """A trial's run folder: its own, or the folder of the interrupted trial it repeats
    (so training resumes from that ``last.pt``)."""
    resume = trial.user_attrs.get("resume_dir")
    return Path(resume) if resume else runs_dir / "trials" / f"trial{trial.number:03d}"


def _storage_url(path: str) -> str:
    if "://" in path:
        return path
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(path).resolve()}"


def _open(study: Study, settings: dict[str, Any], worker: int = 0) -> Any:
    """Create or load the Optuna study; each worker process samples with its own seed
    (the same seed in two processes would draw the same parameters twice)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=study.name, storage=_storage_url(str(settings["storage"])),
        direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=int(settings["seed"]) + 1000 * worker,
                                           n_startup_trials=int(settings["startup_trials"])),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=int(settings["startup_trials"]),
                                           n_warmup_steps=3))


#: the Optuna study's user attribute holding what defines its trials
SETTINGS_ATTR = "braintumor_search"


def search_definition(study: Study, settings: dict[str, Any]) -> dict[str, Any]:
    """What a trial's result depends on (kept with the Optuna study, so that a resumed
    search adds only trials of the same kind): the space, the time budget per trial, the
    outer fold and its inner split, and the base config."""
    import json

    from braintumor.training.experiments import _NEUTRAL

    d = {"space": settings["space"],
         "budget_min": study.budget_min or study.base.time_budget_min,
         "fold": int(settings["fold"]), "inner_folds": int(settings["inner_folds"]),
         "folds": study.folds, "split_seed": study.split_seed,
         "base": {k: v for k, v in to_dict(study.base).items() if k not in _NEUTRAL}}
    return json.loads(json.dumps(d))  # as the storage gives it back (lists, no tuples)


def _spec_text(spec: dict[str, Any] | None) -> str:
    if spec is None:
        return "(not searched)"
    return "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}"


def check_storage(study: Study, settings: dict[str, Any], ostudy: Any) -> None:
    """Refuse, in one sentence, to resume a search whose storage holds trials of another
    definition (:func:`search_definition`): Optuna would fail on a changed space, or mix
    trials of different budgets silently. A study without the record (made before it was
    kept) takes the current one."""
    now = search_definition(study, settings)
    old = ostudy.user_attrs.get(SETTINGS_ATTR)
    if old is None:
        ostudy.set_user_attr(SETTINGS_ATTR, now)
        return
    changed: list[str] = []
    for key, val in now.items():
        was = old.get(key)
        if was == val:
            continue
        if key == "space":
            was = was or {}
            names = [n for n in {**was, **val} if was.get(n) != val.get(n)]
            changed += [f"search space {n} {_spec_text(was.get(n))} -> {_spec_text(val.get(n))}"
                        for n in names[:2]]
            if len(names) > 2:
                changed.append(f"{len(names) - 2} more searched parameters")
        elif key == "base":
            was = was or {}
            diff = [k for k in val if was.get(k) != val[k]]
            changed += [f"base {k} {was.get(k)!r} -> {val[k]!r}" for k in diff[:2]]
            if len(diff) > 2:
                changed.append(f"{len(diff) - 2} more base fields")
        else:
            changed.append(f"{key} {was!r} -> {val!r}")
    if not changed:
        return
    storage = settings["storage"]
    where = ("another 'search: storage'" if "storage" in (study.raw.get("search") or {})
             else "another 'out' folder")
    raise InputError(f"{storage}: holds search {study.name} with other settings "
                     f"({', '.join(changed)}); to resume it keep its settings, to start "
                     f"afresh give {where} or delete {storage}.")


def _inner_config(study: Study, settings: dict[str, Any], params: dict[str, Any],
                  train_ids: list[str]) -> TrainConfig:
    cfg = study.base.replace(**params_to_changes(params))
    return cfg.replace(case_ids=tuple(train_ids), folds=int(settings["inner_folds"]), fold=0,
                       split_seed=study.split_seed, name=f"{study.name}-trial",
                       time_budget_min=study.budget_min or cfg.time_budget_min)


def _worker(study_path: str, budget: float | None, folds: list[int] | None, device: str,
            worker: int) -> None:
    """One search worker process: runs trials until the study has enough."""
    import signal

    import optuna
    import torch

    from braintumor.interrupts import Interrupted
    from braintumor.training.experiments import load_study
    from braintumor.training.trainer import Trainer

    study = load_study(study_path, budget, folds)
    settings = search_settings(study)
    ostudy = _open(study, settings, worker)
    train_ids = study_folds(study)[int(settings["fold"])]["train"]
    if study.base.threads:
        torch.set_num_threads(study.base.threads)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, settings["space"])
        cfg = _inner_config(study, settings, params, train_ids)
        run_dir = _trial_dir(study.runs_dir, trial)
        trial.set_user_attr("run_dir", str(run_dir))
        reported: dict[int, float] = {}

        def on_validate(epoch: int, frac: float, scores: dict[str, float]) -> None:
            # report at tenths of the budget, carrying the last value forward
            tenth = int(round(frac * 10))
            last = max(reported) if reported else 0
            for step in range(last + 1, tenth + 1):
                trial.report(scores["val_dice"], step)
                reported[step] = scores["val_dice"]
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            summary = Trainer(cfg, run_dir, device=device, progress=False,
                              on_validate=on_validate).fit()
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            # past Optuna (which would mark the trial FAIL, never to be run again): left
            # RUNNING, as a killed one is, and re-queued with its run folder next time
            raise Interrupted(signal.SIGINT) from None
        except Exception as exc:
            # marked FAIL here and raised past Optuna, so that the error is said once,
            # by whoever runs the search, not also as Optuna's warning with a traceback
            ostudy._storage.set_trial_state_values(trial._trial_id,
                                                   optuna.trial.TrialState.FAIL)
            raise _TrialFailed(exc) from exc
        with open(run_dir / "log.csv") as fh:
            vals = [float(r["val_dice"]) for r in csv.DictReader(fh) if r.get("val_dice")]
        trial.set_user_attr("steps", summary["steps"])
        trial.set_user_attr("train_s", summary["train_s"])
        if vals:
            return vals[-1]
        best = summary["best_val_dice"]
        return float(best) if best is not None else float("nan")

    stop = optuna.study.MaxTrialsCallback(
        int(settings["trials"]),
        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    if _count_done(ostudy) < int(settings["trials"]):
        try:
            ostudy.optimize(objective, callbacks=[stop], catch=())
        except _TrialFailed as failed:
            raise failed.error from None


class _TrialFailed(BaseException):
    """A trial's error, carried past Optuna (which logs and re-raises only ``Exception``
    and ``KeyboardInterrupt``); the trial is already marked FAIL."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _process_worker(target: Callable[..., Any], args: tuple[Any, ...], conn: Any,
                    error_file: str, parent: int | None = None) -> None:
    """A search worker process: runs ``target(*args)``. SIGINT / SIGTERM leave its trial
    RUNNING, to be re-queued (exit 130 / 143); a failure is sent to the parent as
    ``(kind, one sentence)`` (exit 2 for the user's input, 1 otherwise, the traceback of
    an unexpected error in ``error_file``), so the parent says it once. It ends with the
    process ``parent`` (a parent killed outright leaves no worker training on)."""
    import sys

    from braintumor.errors import describe_failure
    from braintumor.interrupts import Interrupted, die_with_parent, interruptible

    if parent is not None:
        die_with_parent(parent)
    try:
        with interruptible(then_ignore=True):
            target(*args)
    except Interrupted as exc:
        sys.exit(exc.exit_status)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        if isinstance(exc, InputError):
            conn.send(("input", str(exc)))
            sys.exit(2)
        import traceback

        msg = describe_failure(exc)
        try:
            Path(error_file).parent.mkdir(parents=True, exist_ok=True)
            Path(error_file).write_text("".join(traceback.format_exception(exc)))
            msg = f"{msg.rstrip('.')} (traceback in {error_file})."
        except OSError:
            pass
        conn.send(("error", msg))
        sys.exit(1)


def _run_processes(target: Callable[..., Any], arg_sets: list[tuple[Any, ...]],
                   error_files: list[str], what: str = "search worker",
                   stagger_s: float = 2.0) -> None:
    """Run ``target(*args)`` for each of ``arg_sets`` in its own process (spawned) and
    wait for all. SIGINT / SIGTERM here (:class:`~braintumor.interrupts.Interrupted`)
    are passed on to the processes, which are waited for. A process that fails makes
    this raise its error (:class:`InputError` for the user's input, else
    :class:`~braintumor.errors.RunFailed`), said once however many failed alike."""
    import multiprocessing as mp
    import os
    import signal

    from braintumor.errors import RunFailed
    from braintumor.interrupts import Interrupted

    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    try:
        for i, args in enumerate(arg_sets):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_process_worker,
                               args=(target, args, send, error_files[i], os.getpid()))
            proc.start()
            send.close()
            procs.append(proc)
            pipes.append(recv)
            if i + 1 < len(arg_sets):
                time.sleep(stagger_s)  # let the first worker create the storage tables alone
        for proc in procs:
            proc.join()
    except Interrupted as exc:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, exc.signum)
                except ProcessLookupError:
                    pass
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        raise
    failures: list[tuple[int, str, str]] = []
    for i, (proc, recv) in enumerate(zip(procs, pipes, strict=True)):
        code = proc.exitcode
        if code == 0:
            continue
        said = None
        try:
            said = recv.recv() if recv.poll() else None
        except (EOFError, OSError):  # ended without a word (a crash)
            pass
        if said is not None:
            kind, msg = said
        elif code is not None and code in (130, 143):
            kind, msg = "error", "was interrupted (its trial resumes on the next run)"
        elif code is not None and code < 0:
            kind, msg = "error", f"was killed by {signal.Signals(-code).name}"
        else:
            kind, msg = "error", f"stopped with exit status {code}"
        failures.append((i, kind, msg))
    if not failures:
        return
    i, kind, msg = failures[0]
    alike = sum(1 for _, _, m in failures[1:] if m == msg)
    others = len(failures) - 1 - alike
    tail = ""
    if alike:
        tail += f" (so did {alike} other {what}{'s' if alike > 1 else ''})"
    if others:
        tail += f" ({others} other {what}{'s' if others > 1 else ''} failed otherwise)"
    text = f"{what} {i} failed: {msg.rstrip('.')}{tail}."
    raise InputError(text) if kind == "input" else RunFailed(text)


def _count_done(ostudy: Any) -> int:
    import optuna

    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in ostudy.trials if t.state in ok)


def _requeue_interrupted(ostudy: Any) -> int:
    """Trials left RUNNING by an interrupted session: mark failed, queue them again."""
    import optuna

    n = 0
    for t in ostudy.trials:
        if t.state == optuna.trial.TrialState.RUNNING:
            ostudy._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            rd = t.user_attrs.get("run_dir")
            ostudy.enqueue_trial(t.params, user_attrs={"resume_dir": rd} if rd else None,
                                 skip_if_exists=False)
            n += 1
    return n


def run_search(study: Study, device: str = "cpu", tracking_uri: str | None = "default",
               log: Callable[[str], None] = print, budget: float | None = None,
               folds: list[int] | None = None,
               scheduler: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the search, then retrain the best and the starting configuration
    on the outer fold and score them on its held-out cases. With ``scheduler``
    (``local:N`` or ``HOST:PORT``) the ``study.parallel`` search workers and the retraining
    runs are tasks of a Dask cluster; they share the Optuna storage file, which every
    worker must see under the same path."""
    import optuna

    from braintumor.training.tracking import Tracker

    settings = search_settings(study)
    space = settings["space"]
    all_folds = study_folds(study)
    outer = int(settings["fold"])
    ostudy = _open(study, settings)
    check_storage(study, settings, ostudy)  # before this search's files are rewritten
    study.out.mkdir(parents=True, exist_ok=True)
    study.run_folds = [outer]
    write_folds(study, all_folds)
    requeued = _requeue_interrupted(ostudy)
    if not ostudy.trials or all(t.state == optuna.trial.TrialState.FAIL
                                for t in ostudy.trials):
        ostudy.enqueue_trial(base_params(study.base, space))  # the starting point first
    per = study.budget_min or study.base.time_budget_min  # as _inner_config sets it
    each = f"{per:g} min each" if per else "no time budget (each run trains for its epochs)"
    log(f"search {study.name}: {settings['trials']} trials, {each}, "
        f"outer fold {outer} (inner {settings['inner_folds']}-fold), {study.parallel} at "
        f"once; {_count_done(ostudy)} done already"
        + (f", {requeued} interrupted trial(s) re-queued" if requeued else ""))
    t0 = time.perf_counter()
    with interruptible():
        _run_workers(study, device, budget, folds, scheduler)
    ostudy = _open(study, settings)
    log(f"search finished in {(time.perf_counter() - t0) / 60:.1f} min; "
        f"{_count_done(ostudy)} trials")
    tracker = Tracker(tracking_uri, study.name)
    for t in ostudy.trials:
        rd = t.user_attrs.get("run_dir")
        tracker.log_trial(t, Path(rd) if rd else None, study.name)
    write_trials(study, ostudy, space)
    complete = [t for t in ostudy.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        log("no trial completed; nothing to retrain")
        return []
    best = max(complete, key=lambda t: t.value)
    start = base_params(study.base, space)
    study.runs = [
        RunSpec("search_best", f"search best (trial {best.number})",
                study.base.replace(**params_to_changes(best.params)).replace(name="search_best"),
                changes=params_to_changes(best.params)),
        RunSpec("search_start", "search starting point",
                study.base.replace(**params_to_changes(start)).replace(name="search_start"),
                changes=params_to_changes(start)),
    ]
    if best.params == start:
        study.runs = study.runs[:1]
    for r in study.runs:
        if study.budget_min:
            r.cfg = r.cfg.replace(time_budget_min=study.budget_min)
    jobs = make_jobs(study, all_folds, device)
    done: list[dict[str, Any]] = []

    def on_result(res: dict[str, Any]) -> None:
        done.append(res)
        tracker.log_run(res, next(r for r in study.runs if r.name == res["name"]).cfg, study)
        write_outputs(study, all_folds, done)
        log(f"retrained {res['name']} on outer fold {outer}: held-out Dice WT "
            f"{np.mean([c['WT_dice'] for c in res['cases']]):.3f}")

    results = execute(jobs, study.parallel, on_result, scheduler)
    write_outputs(study, all_folds, results)
    return results


def _run_workers(study: Study, device: str, budget: float | None, folds: list[int] | None,
                 scheduler: str | None) -> None:
    """The search's ``study.parallel`` workers: in this process, in spawned processes or
    as tasks of a Dask cluster; returns when the study has its trials."""
    assert study.path is not None
    if scheduler:
        from braintumor.scale import open_client

        stamp = time.time()
        with open_client(scheduler) as client:
            futs = []
            for i in range(study.parallel):
                futs.append(client.submit(_worker, str(study.path), budget, folds, device, i,
                                          key=f"braintumor-search-{study.name}-{i}-{stamp}"))
                if i == 0:
                    time.sleep(2.0)  # let the first worker create the storage tables alone
            for f in futs:
                f.result()  # waits; a worker's error surfaces here
    elif study.parallel <= 1:
        _worker(str(study.path), budget, folds, device, 0)
    else:
        _run_processes(_worker, [(str(study.path), budget, folds, device, i)
                                 for i in range(study.parallel)],
                       [str(study.out / f"search_worker{i}_error.txt")
                        for i in range(study.parallel)])


def write_trials(study: Study, ostudy: Any, space: dict[str, Any]) -> None:
    """``trials.md`` / ``trials.csv`` and ``search.png`` (value per trial and per parameter)."""
    rows = []
    for t in ostudy.trials:
        rows.append({"trial": t.number, "state": t.state.name,
                     "inner_val_dice": t.value if t.value is not None else (
                         list(t.intermediate_values.values())[-1]
                         if t.intermediate_values else float("nan")),
                     "last_report_tenth": max(t.intermediate_values, default=0),
                     "steps": t.user_attrs.get("steps", ""),
                     **{k: t.params.get(k) for k in space}})
    if not rows:
        return
    with open(study.out / "trials.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# Search trials: {study.name}", "",
             "Inner-validation mean Dice (WT, TC, ET) of each trial: selection only, these "
             "cases are training cases of the outer fold. For pruned trials, the last value "
             "reported (at `last_report_tenth` tenths of the budget).", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for r in rows:
        cells = []
        for v in r.values():
            if isinstance(v, float):
                cells.append(f"{v:.3g}" if abs(v) < 0.01 and v != 0 else f"{v:.3f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    (study.out / "trials.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(space)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.2))
    colour = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange"}
    shown = [r for r in rows if r["state"] in colour and not np.isnan(r["inner_val_dice"])]
    axes[0].scatter([r["trial"] for r in shown], [r["inner_val_dice"] for r in shown],
                    c=[colour[r["state"]] for r in shown])
    axes[0].set_xlabel("trial")
    axes[0].set_ylabel("inner-validation Dice")
    axes[0].set_title("blue: complete, orange: pruned", fontsize=8)
    for ax, n in zip(axes[1:], names, strict=True):
        ax.scatter([r[n] for r in shown], [r["inner_val_dice"] for r in shown],
                   c=[colour[r["state"]] for r in shown])
        ax.set_xlabel(n)
        if space[n].get("log"):
            ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(study.out / "search.png", dpi=90)
    plt.close(fig)

