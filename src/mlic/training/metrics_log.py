"""``MetricsLog``: the run's ``logs/metrics.csv``, written so that a kill never damages it."""

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
