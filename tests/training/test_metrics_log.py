"""Tests of mlic.training.metrics_log: the per-epoch CSV, rewritten whole, and no hyperparameter YAML."""

from __future__ import annotations

import os

import torch

from mlic.training.metrics_log import MetricsLog


def test_metrics_log_rewrites_the_whole_file_with_new_columns(tmp_path):
    log = MetricsLog(tmp_path / "logs")
    log.log_metrics({"train/loss": torch.tensor(1.5), "epoch": 0}, step=9)
    log.save()
    log.log_metrics({"val/mAP": 0.5, "epoch": 0}, step=9)
    log.finalize("success")
    lines = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,step,train/loss,val/mAP", "0,9,1.5,", "0,9,,0.5"]
    assert os.listdir(tmp_path / "logs") == ["metrics.csv"]


def test_training_writes_no_hyperparameter_yaml(tiny_run):
    assert sorted(p.name for p in (tiny_run / "logs").iterdir()) == ["metrics.csv"]
