"""Tests of mlic.training.checkpoints: atomic, pickle-free, random state, moved runs, intervals, kills."""

from __future__ import annotations

import csv
import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from mlic.artifact import load_artifact
from mlic.errors import ArtifactError, ConfigError
from mlic.training import train
from mlic.training.checkpoints import (
    AtomicCheckpointIO,
    MovedRun,
    RandomState,
    checkpoint_callbacks,
    load_checkpoint,
)


class Payload:
    """Unpickling this touches a file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # a partial file, as a kill during the write leaves it
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


def test_loading_never_unpickles_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload(marker)}, path)
    with pytest.raises(ArtifactError, match=r"evil\.ckpt: .* does not unpickle"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
def test_a_damaged_checkpoint_is_an_error_that_names_it(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(len(data))))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(ArtifactError, match=r"last\.ckpt"):
        load_checkpoint(path)


def test_a_runs_checkpoints_load_without_pickle(tiny_run):
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = torch.load(tiny_run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert checkpoint["state_dict"] and checkpoint["optimizer_states"] and checkpoint["loops"]


def test_resuming_from_a_damaged_checkpoint_stops_with_its_name(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=str(last)):
        train(resume=run, max_epochs=2)


def test_random_state_round_trips_through_a_safe_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    path = tmp_path / "state.ckpt"
    torch.save(RandomState().state_dict(), path)
    first = torch.rand(3), np.random.rand(3), np.random.randn(), random.random()
    RandomState().load_state_dict(torch.load(path, weights_only=True))
    again = torch.rand(3), np.random.rand(3), np.random.randn(), random.random()
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def test_a_moved_runs_checkpoint_paths_follow_it(tmp_path):
    old, new = str(tmp_path / "old" / "checkpoints"), tmp_path / "new" / "checkpoints"
    writers = checkpoint_callbacks(new, steps=2)[:2]  # best, and the mid-epoch last
    trainer = SimpleNamespace(checkpoint_callbacks=writers)
    checkpoint = {"callbacks": {"RandomState": {"dirpath": "untouched"}}}
    for writer in writers:
        checkpoint["callbacks"][writer.state_key] = {
            "dirpath": old,
            "best_model_path": old + "/best.ckpt",
            "last_model_path": old + "/last.ckpt",
            "kth_best_model_path": "",
            "best_k_models": {old + "/best.ckpt": torch.tensor(0.5)},
        }
    MovedRun(new).on_load_checkpoint(trainer, None, checkpoint)
    new = new.resolve()
    for writer in writers:
        state = checkpoint["callbacks"][writer.state_key]
        assert state["dirpath"] == str(new) and state["best_model_path"] == str(new / "best.ckpt")
        assert state["last_model_path"] == str(new / "last.ckpt") and state["kth_best_model_path"] == ""
        assert list(state["best_k_models"]) == [str(new / "best.ckpt")]
    assert checkpoint["callbacks"]["RandomState"]["dirpath"] == "untouched"


def test_checkpoint_intervals(tmp_path):
    by_steps = checkpoint_callbacks(tmp_path, steps=5, minutes=10)
    assert by_steps[1]._every_n_train_steps == 5 and by_steps[1]._train_time_interval is None
    by_time = checkpoint_callbacks(tmp_path, minutes=2)
    assert by_time[1]._train_time_interval.total_seconds() == 120
    assert len(checkpoint_callbacks(tmp_path)) == len(by_steps) - 1  # at epoch ends only
    with pytest.raises(ConfigError, match="checkpoint_steps"):
        checkpoint_callbacks(tmp_path, steps=-1)


class Killed(Exception):
    """Stands in for SIGKILL in-process: the run stops where it is, with its files as they are."""


def validation_rows(run: Path) -> dict[int, str]:
    """Each epoch's logged validation loss, over the run's first log and its resumed ones."""
    rows = {}
    for log in sorted(run.glob("logs/**/metrics.csv")):
        for row in csv.DictReader(log.read_text().splitlines()):
            if row.get("val/loss"):
                rows[int(row["epoch"])] = row["val/loss"]
    return rows


def test_a_kill_during_validation_resumes_with_that_validation(tmp_path, monkeypatch):
    """No mid-epoch checkpoint at an epoch's last batch: Lightning would resume from it past the
    validation that had not run, and the best epoch could change."""
    import mlic.training.run as run_module

    class KillAtFirstValidation(Callback):
        def on_validation_start(self, trainer, pl_module) -> None:
            if trainer.global_step == 4:
                raise Killed

    options = {"demo_train": 128, "demo_val": 32, "batch_size": 32, "image_size": 32, "max_epochs": 2,
               "checkpoint_steps": 2, "deterministic": True, "progress": False}  # fmt: skip
    whole = load_artifact(train(out=str(tmp_path / "whole"), **options))
    real = run_module.checkpoint_callbacks
    killing = lambda *a, **k: [*real(*a, **k), KillAtFirstValidation()]  # noqa: E731
    monkeypatch.setattr(run_module, "checkpoint_callbacks", killing)
    with pytest.raises(Killed):
        train(out=str(tmp_path / "killed"), **options)
    monkeypatch.setattr(run_module, "checkpoint_callbacks", real)
    resumed = load_artifact(train(resume=tmp_path / "killed"))
    expected = validation_rows(tmp_path / "whole")
    assert len(expected) == 2 and validation_rows(tmp_path / "killed") == expected
    assert resumed.weights_sha256 == whole.weights_sha256
