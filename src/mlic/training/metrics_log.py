"""``MetricsLog``: the run's ``logs/metrics.csv``, written so that a kill never damages it; ``epoch_history``:
the per-epoch figures of a run's logs, one row per epoch, for the artifact's ``history.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from mlic.fileio import atomic_write_text

FLUSH_EVERY = 100
"""Rows collected between writes (besides the write at each checkpoint and at the end)."""
STEP_LOSS = "train/loss"
"""The training loss of single steps (every few steps); the history's ``train/loss`` is the epoch's mean."""
EPOCH_LOSS = "train/loss_epoch"
"""The training loss averaged over an epoch's images, logged at the epoch's end."""


class MetricsLog(Logger):
    """Logged figures as CSV, one row per logging step, rewritten whole and atomically at each flush.

    Lightning's ``CSVLogger`` appends to the file, and rewrites it in place
    when a new column appears (validation figures, after the first training
    rows): a kill at that moment loses the log. This writes a temporary file
    and renames it, at each checkpoint, every ``FLUSH_EVERY`` rows and at the end.
    Hyperparameters are not written: ``config.json`` in the run holds them.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = ["epoch", "step"]
        self._unsaved = 0

    @property
    def name(self) -> str:
        return self.directory.parent.name

    @property
    def version(self) -> str:
        return self.directory.name

    @property
    def save_dir(self) -> str:
        return str(self.directory.parent)

    @property
    def log_dir(self) -> str:
        return str(self.directory)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}
        row["step"] = step if step is not None else len(self.rows)
        self.columns += [k for k in row if k not in self.columns]
        self.rows.append(row)
        self._unsaved += 1
        if self._unsaved >= FLUSH_EVERY:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.directory / "metrics.csv", text.getvalue())
        self._unsaved = 0

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def log_files(logs: Path) -> list[Path]:
    """The run's ``metrics.csv`` files in the order they were written: the first, then each resume's."""
    resumes = sorted(logs.glob("resume-*/metrics.csv"), key=lambda p: int(p.parent.name.split("-")[1]))
    return [path for path in [logs / "metrics.csv", *resumes] if path.is_file()]


def epoch_history(logs: str | Path) -> list[dict[str, float]]:
    """One row per epoch of a run's logs: ``epoch`` and every figure logged once an epoch (the validation
    figures), with ``train/loss`` the epoch's mean training loss.

    Where a resume repeats an epoch (from a checkpoint within it), its figures
    replace the first ones. Logs written before ``train/loss_epoch`` existed give
    the mean of the logged step losses instead.
    """
    epochs: dict[int, dict[str, float]] = {}
    steps: dict[int, list[float]] = {}
    for path in log_files(Path(logs)):
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                figures = {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v}
                if STEP_LOSS in figures:
                    steps.setdefault(epoch, []).append(figures.pop(STEP_LOSS))
                epochs.setdefault(epoch, {}).update(figures)
    history = []
    for epoch in sorted(epochs):
        figures = epochs[epoch]
        loss = figures.pop(EPOCH_LOSS, None)
        if loss is None and steps.get(epoch):
            loss = sum(steps[epoch]) / len(steps[epoch])
        if figures or loss is not None:
            history.append({"epoch": epoch, **({STEP_LOSS: loss} if loss is not None else {}), **figures})
    return history
