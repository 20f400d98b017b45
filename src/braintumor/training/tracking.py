"""Run tracking in MLflow.

Why MLflow rather than TensorBoard: a study needs, per run, the parameters (the whole
config), the final held-out metrics, the learning curve and files (config, log, plot)
side by side and comparable across runs; MLflow records all four, keeps them in a local
store that needs no server, and ``mlflow ui`` opens a searchable table anyone can read.
TensorBoard only plots curves.

The default store is a local SQLite database under ``mlruns/`` (``mlruns/mlflow.db``,
artifacts in ``mlruns/artifacts``); MLflow 3 has put its plain-folder store in
maintenance mode and refuses it unless told otherwise. Any other tracking URI (a server,
``file:...``, another database) can be given. ``mlflow-skinny`` is in the ``[track]``
extra; without it tracking is skipped with one line of notice.

Only the study's main process writes to the store (worker processes do not), so two
runs finishing together never race on the database.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACTS = "mlruns/artifacts"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
    return out


class Tracker:
    """Logs finished runs of one study (an MLflow experiment) to a tracking store.

    ``uri``: ``"default"`` (local store under ``mlruns/``), ``None``/``"none"`` (off) or
    any MLflow tracking URI.
    """

    def __init__(self, uri: str | None = "default", experiment: str = "braintumor") -> None:
        self.enabled = uri not in (None, "", "none")
        self.uri: str = DEFAULT_URI if uri == "default" else str(uri or "")
        self.experiment = f"braintumor-{experiment}"
        self._ready = False
        if self.enabled:
            try:
                import mlflow  # noqa: F401
            except ImportError:
                print("MLflow is not installed (pip install 'braintumor[track]'); "
                      "runs are not tracked.")
                self.enabled = False

    def _setup(self) -> Any:
        import mlflow

        if not self._ready:
            if self.uri == DEFAULT_URI:
                Path("mlruns").mkdir(exist_ok=True)
            mlflow.set_tracking_uri(self.uri)
            if mlflow.get_experiment_by_name(self.experiment) is None:
                art = (Path(DEFAULT_ARTIFACTS).resolve().as_uri()
                       if self.uri == DEFAULT_URI else None)
                mlflow.create_experiment(self.experiment, artifact_location=art)
            mlflow.set_experiment(self.experiment)
            self._ready = True
        return mlflow

    def _marker(self, run_dir: Path) -> dict[str, Any]:
        """The folder's ``tracked.json`` when it was written for this store ({} when
        missing, unreadable or another store's)."""
        try:
            m = json.loads((run_dir / "tracked.json").read_text())
        except (OSError, ValueError):
            return {}
        return m if isinstance(m, dict) and m.get("uri") == self.uri else {}

    def _already(self, run_dir: Path, key: str) -> bool:
        m = self._marker(run_dir)
        logged = m.get("logged")
        return bool(m) and (m.get("key") == key or (isinstance(logged, dict) and key in logged))

    def _mark(self, run_dir: Path, key: str, run_id: str, keep: bool = False) -> None:
        """Record ``key`` as logged; ``keep``: with those recorded before (the trials that
        share a folder: an interrupted one and the trial that repeats it), else alone."""
        from braintumor.io import write_replacing

        logged: dict[str, Any] = {}
        if keep:
            m = self._marker(run_dir)
            logged = dict(m.get("logged") or {})
            if "key" in m and "logged" not in m:  # a marker of one key, as written before
                logged[str(m["key"])] = m.get("run_id")
        logged[key] = run_id
        text = json.dumps({"uri": self.uri, "key": key, "run_id": run_id, "logged": logged})
        write_replacing(run_dir / "tracked.json", lambda tmp: tmp.write_text(text))

    def log_run(self, result: dict[str, Any], cfg: Any, study: Any) -> str | None:
        """Log one finished (run, fold): config as params, held-out means as metrics,
        the per-epoch log as metric history, config/log/curve as artifacts."""
        if not self.enabled:
            return None
        from braintumor.config import to_dict

        run_dir = Path(result["run_dir"])
        key = str(result.get("config_key", ""))
        if self._already(run_dir, key):
            return None
        try:
            mlflow = self._setup()
            with mlflow.start_run(run_name=f"{result['name']}-fold{result['fold']}") as run:
                mlflow.set_tags({"study": study.name, "kind": study.kind,
                                 "run": result["name"], "fold": str(result["fold"])})
                params = _flatten(to_dict(cfg))
                params.update({"fold": str(result["fold"]), "study_folds": str(study.folds),
                               "held_out": " ".join(result["val_cases"])})
                mlflow.log_params({k: v[:500] for k, v in params.items()})
                cases = result["cases"]
                metrics = {k: float(sum(c[k] for c in cases) / len(cases))
                           for k in cases[0] if k != "case"}
                metrics.update(params_M=result["params"] / 1e6,
                               train_min=result["train_s"] / 60, steps=result["steps"])
                mlflow.log_metrics({k.replace("/", "_"): v for k, v in metrics.items()})
                self._log_history(mlflow, run_dir / "log.csv")
                for name in ("config.yaml", "log.csv", "curve.png", "result.json"):
                    if (run_dir / name).exists():
                        mlflow.log_artifact(str(run_dir / name))
            self._mark(run_dir, key, run.info.run_id)
            return str(run.info.run_id)
        except Exception as exc:  # tracking must never lose a finished study
            print(f"MLflow tracking failed for {result['name']} ({exc}); results are "
                  "still in the study's tables.")
            return None

    def log_trial(self, trial: Any, run_dir: Path | None, study_name: str) -> str | None:
        """Log one Optuna trial: its parameters, state and inner-validation value."""
        if not self.enabled:
            return None
        key = f"trial{trial.number}-{trial.state.name}"
        if run_dir is not None and run_dir.exists() and self._already(run_dir, key):
            return None
        try:
            mlflow = self._setup()
            with mlflow.start_run(run_name=f"trial-{trial.number}") as run:
                mlflow.set_tags({"study": study_name, "kind": "search",
                                 "trial": str(trial.number), "state": trial.state.name})
                mlflow.log_params({k: str(v) for k, v in trial.params.items()})
                for step, v in sorted(trial.intermediate_values.items()):
                    mlflow.log_metric("inner_val_dice", float(v), step=int(step))
                if trial.value is not None:
                    mlflow.log_metric("objective_inner_val_dice", float(trial.value))
                if run_dir is not None:
                    self._log_history(mlflow, run_dir / "log.csv")
            if run_dir is not None and run_dir.exists():
                self._mark(run_dir, key, run.info.run_id, keep=True)
            return str(run.info.run_id)
        except Exception as exc:
            print(f"MLflow tracking failed for trial {trial.number} ({exc}).")
            return None

    @staticmethod
    def _log_history(mlflow: Any, log_csv: Path) -> None:
        if not log_csv.exists():
            return
        with open(log_csv) as fh:
            for row in csv.DictReader(fh):
                vals = {}
                for k, v in row.items():
                    if k != "epoch" and v not in ("", None):
                        try:
                            vals[f"epoch_{k}"] = float(v)
                        except ValueError:
                            pass
                mlflow.log_metrics(vals, step=int(row["epoch"]))
