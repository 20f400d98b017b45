"""``braintumor experiment --config configs/<study>.yaml [--budget MIN] [--folds K ...]``."""

from __future__ import annotations

import argparse

NAME = "experiment"
HELP = ("Run a study (architectures, regularisation ablation or hyperparameter search) "
        "with patient-wise k-fold cross-validation; resumable.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (f"{HELP} A hyperparameter search needs the [track] extra (Optuna): "
                     "pip install 'braintumor[track]'.")
    p.add_argument("--config", required=True,
                   help="study YAML (examples: configs/study_*.yaml of the source repository)")
    p.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="training wall-clock budget per run (overrides the study file)")
    p.add_argument("--folds", type=int, nargs="+", default=None, metavar="K",
                   help="folds to run (default: the study file's run_folds)")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="runs at once in separate processes (overrides the study file)")
    p.add_argument("--tracking-uri", default="default", metavar="URI",
                   help="MLflow tracking URI (default: local store under mlruns/; "
                        "'none' turns tracking off)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="where the runs train (default cpu)")
    p.add_argument("--scheduler", default=None, metavar="local:N|HOST:PORT",
                   help="run the training runs (and search workers) on a Dask cluster whose "
                        "workers see the same folders (needs braintumor[scale])")


def run(args: argparse.Namespace) -> int:
    import sys

    from braintumor.interrupts import Interrupted, interruptible
    from braintumor.training.experiments import load_study, run_study

    study = load_study(args.config, args.budget, args.folds)
    if study.kind == "search":
        import importlib.util

        from braintumor.errors import InputError

        if importlib.util.find_spec("optuna") is None:
            raise InputError(f"{args.config} is a hyperparameter search, which needs "
                             "braintumor's [track] extra (Optuna), not installed here: pip "
                             "install 'braintumor[track]'.")
    if args.parallel is not None:
        study.parallel = max(1, args.parallel)
        study.overrides += ["--parallel", str(study.parallel)]
    if args.device != "cpu":
        study.overrides += ["--device", args.device]
    try:
        with interruptible():
            if study.kind == "search":
                from braintumor.training.search import run_search

                run_search(study, args.device, args.tracking_uri, budget=args.budget,
                           folds=args.folds, scheduler=args.scheduler)
            else:
                run_study(study, args.device, args.tracking_uri, scheduler=args.scheduler)
    except Interrupted as exc:
        what = ("an unfinished trial is re-queued and resumes from its last.pt"
                if study.kind == "search" else
                "finished runs are kept, an unfinished one resumes from its last.pt")
        print(f"interrupted ({exc.name}): run the same command again to go on ({what}).",
              file=sys.stderr)
        return exc.exit_status
    print(f"results: {study.out}/results.md")
    return 0
