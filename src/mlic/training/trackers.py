"""Experiment trackers besides ``logs/metrics.csv``: TensorBoard and MLflow, through Lightning's own loggers.

``--logger tensorboard`` writes event files into ``RUN/logs/tensorboard``;
``--logger mlflow`` writes one MLflow run, by default into a store of the
run's own, ``RUN/logs/mlflow.db`` (SQLite, a local file: MLflow 3 keeps the
plain-folder ``mlruns`` store in maintenance mode and refuses it unless told
otherwise), or to ``--mlflow-uri`` / ``$MLFLOW_TRACKING_URI``. Each tracker
receives the resolved configuration as hyperparameters (``flat_config``),
whatever Lightning logs (the figures of ``metrics.csv``: the training loss per
step, the validation figures per epoch) and, after training, the final
validation figures of the artifact under ``final/`` (``final_figures``).

``--resume`` goes on in the same trackers: TensorBoard adds event files to the
same folder, MLflow continues the run whose id ``RUN/logs/mlflow-run.json``
keeps. MLflow parameters cannot change, so the options a resume changed are
set as ``resumed.<name>`` tags instead.

TensorBoard and MLflow come with the ``track`` extra, checked before the data
is read; Lightning imports them only when a tracker is made, and ``import mlic``
imports neither.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mlic.artifact import Artifact
from mlic.extras import require
from mlic.fileio import atomic_write_text
from mlic.training.config import TrainConfig

TENSORBOARD_DIR = "tensorboard"
"""In ``RUN/logs``: the TensorBoard event files."""
MLFLOW_STORE = "mlflow.db"
"""In ``RUN/logs``: the run's own MLflow store, used when no tracking URI is given."""
MLFLOW_RUN_FILE = "mlflow-run.json"
"""In ``RUN/logs``: the MLflow run id and tracking URI, for ``--resume`` to continue the same run."""
EXPERIMENT = "mlic"
"""The MLflow experiment of every run; the run is named after the run directory."""
SCALAR = (bool, int, float, str)


def asked(names: Iterable[str]) -> list[str]:
    """The trackers named besides ``csv`` (always written), once each, in order."""
    return [name for name in dict.fromkeys(names) if name != "csv"]


def check_trackers(names: Iterable[str]) -> None:
    """Raise ``MissingExtraError`` naming the ``track`` extra when a named tracker's package is missing.

    Called before the data is read, so that a missing package fails at once.
    """
    for name in asked(names):
        require("track", f"--logger {name}", modules=(name,))


def make_trackers(config: TrainConfig, run_dir: Path, resumed: bool) -> list[Logger]:
    """The loggers of ``config.logger`` besides the CSV one, with the configuration logged to each.

    Only the first process of a distributed run makes them (the others would
    log nothing, and every process opening the run's MLflow store at once
    would race to create it).
    """
    check_trackers(config.logger)
    if rank_zero_only.rank != 0:
        return []
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    made = [
        tensorboard_logger(run_dir) if name == "tensorboard" else mlflow_logger(config, run_dir, resumed)
        for name in asked(config.logger)
    ]
    params = flat_config(config.to_dict())
    for tracker in made:
        log_config(tracker, params, resumed)
    return made


def tensorboard_logger(run_dir: Path) -> Logger:
    """Lightning's ``TensorBoardLogger`` writing into ``RUN/logs/tensorboard`` (the same folder on resume).

    Its ``hp_metric`` (-1 until the end) becomes the final validation mAP, so that
    TensorBoard's HParams view compares runs by it.
    """
    return TensorBoardLogger(run_dir / "logs", name=TENSORBOARD_DIR, version="", default_hp_metric=True)


def mlflow_logger(config: TrainConfig, run_dir: Path, resumed: bool) -> Logger:
    """Lightning's ``MLFlowLogger``: a new run, or on resume the run that ``mlflow-run.json`` names.

    The tracking URI is ``config.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``,
    else the run's own store (``RUN/logs/mlflow.db``, its artifacts beside it in
    ``RUN/logs/mlartifacts``). A resumed run uses the URI it started with.
    """
    logs = run_dir.resolve() / "logs"
    saved = read_mlflow_run(logs) if resumed else None
    if saved is not None:
        uri, run_id = saved.get("tracking_uri"), saved.get("run_id")
    else:
        uri, run_id = config.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None, None
    own = uri is None
    with warnings.catch_warnings():  # SQLAlchemy's deprecation notice about MLflow's own store code
        warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated.*")
        logger = MLFlowLogger(
            experiment_name=EXPERIMENT,
            run_name=run_dir.name,
            tracking_uri=f"sqlite:///{logs / MLFLOW_STORE}" if own else uri,
            tags={"mlic.run_dir": str(run_dir.resolve())},
            artifact_location=(logs / "mlartifacts").as_uri() if own else None,
            run_id=run_id,
        )
        remember_mlflow_run(logger, logs, None if own else uri)
    return logger


def read_mlflow_run(logs: Path) -> dict | None:
    """What ``mlflow-run.json`` holds, or None: ``run_id`` and ``tracking_uri`` (None: the run's own)."""
    path = logs / MLFLOW_RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@rank_zero_only
def remember_mlflow_run(logger: MLFlowLogger, logs: Path, uri: str | None) -> None:
    """Create the MLflow run now and keep its id, so that a run killed at any point resumes into it."""
    record = {"run_id": logger.run_id, "tracking_uri": uri}
    atomic_write_text(logs / MLFLOW_RUN_FILE, json.dumps(record, indent=2) + "\n")


def flat_config(config: dict) -> dict[str, bool | int | float | str]:
    """The configuration as flat scalar hyperparameters: ``head_options.num_groups``, lists joined by commas,
    None as ``None`` (what both trackers display)."""
    flat: dict[str, bool | int | float | str] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat |= {f"{name}.{k}": v for k, v in flat_config(value).items()}
        elif isinstance(value, list | tuple):
            flat[name] = ",".join(map(str, value))
        else:
            flat[name] = value if isinstance(value, SCALAR) else str(value)
    return flat


@rank_zero_only
def log_config(tracker: Logger, params: dict, resumed: bool) -> None:
    """Log ``params`` as the tracker's hyperparameters; a resumed MLflow run keeps those it has and gets the
    changed ones as ``resumed.<name>`` tags (MLflow refuses to change a parameter)."""
    if not (resumed and isinstance(tracker, MLFlowLogger)):
        tracker.log_hyperparams(params)
        return
    client, run_id = tracker.experiment, tracker.run_id
    logged = client.get_run(run_id).data.params
    tracker.log_hyperparams({k: v for k, v in params.items() if k not in logged})
    for name, value in params.items():
        if name in logged and logged[name] != str(value):
            client.set_tag(run_id, f"resumed.{name}", str(value))


def final_figures(artifact: Artifact) -> dict[str, float]:
    """The figures ``finish`` computed after training, flat under ``final/``: the validation figures, the
    top-k balance, the calibration's before and after, and the decision rule's thresholds (mean, min, max)."""
    parts = ("epochs", "seconds", "validation", "top_k_balance", "calibration")
    figures = numbers({part: artifact.training.get(part) for part in parts}, "final")
    thresholds = np.asarray(artifact.decision.thresholds, dtype=np.float64)
    if thresholds.size:
        figures |= {f"final/thresholds/{k}": float(getattr(thresholds, k)()) for k in ("mean", "min", "max")}
    return figures


def numbers(value: Any, prefix: str) -> dict[str, float]:
    """The numeric leaves of a nested dict, as ``prefix/key/key`` (booleans, text and None left out)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}/{key}").items()}
    if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
        return {prefix: float(value)}
    return {}


@rank_zero_only
def log_final(trackers: list[Logger], artifact: Artifact, step: int) -> None:
    """Log the final figures to each tracker at ``step``, then close it again (Lightning closed it after
    fitting; TensorBoard opens a new event file for these). MLflow also gets the artifact's path and its
    decision rule as tags; TensorBoard's ``hp_metric`` becomes the final validation mAP."""
    figures = final_figures(artifact)
    validation = artifact.training.get("validation") or {}
    for tracker in trackers:
        if isinstance(tracker, MLFlowLogger):
            tracker.experiment.set_tag(tracker.run_id, "mlic.artifact", str(artifact.path.resolve()))
            tracker.experiment.set_tag(tracker.run_id, "mlic.decision", artifact.decision.policy)
            tracker.log_metrics(figures, step=step)
        else:
            hp_metric = {"hp_metric": validation["mAP"]} if "mAP" in validation else {}
            tracker.log_metrics(figures | hp_metric, step=step)
        tracker.finalize("success")
