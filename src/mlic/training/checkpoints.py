"""Checkpoints that survive a kill: atomic writes, safe loading, random state, mid-epoch saves.

A run writes ``checkpoints/last.ckpt`` at the end of every epoch and, within
an epoch, every ``checkpoint_steps`` steps or ``checkpoint_minutes`` minutes;
``checkpoints/best.ckpt`` holds the epoch with the lowest validation loss.
Together with the resumable training loader (``mlic.training.datamodule``)
and the random state saved here, ``train(resume=RUN)`` continues from the
last checkpoint as if the run had never stopped.
"""

from __future__ import annotations

import os
import pickle
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mlic.errors import ArtifactError, ConfigError
from mlic.fileio import atomic_open

LAST = "last.ckpt"
BEST = "best.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer and reader, made safe for kills and for untrusted files.

    Writes go to a temporary file that is synced and renamed over the old
    checkpoint, so a kill leaves the previous checkpoint whole (Lightning's own
    writer opens the target itself and does not sync). Reads use
    ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain
    values only, never code to run.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options=None) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, on the CPU, without unpickling; a damaged file is an ``ArtifactError``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ArtifactError(
            f"{path}: this checkpoint holds Python objects besides tensors and plain values; "
            "mlic does not unpickle them (they could run code), so it was not written by mlic"
        ) from None
    except Exception as e:  # torch.load raises many types (RuntimeError, EOFError, ...) for a damaged file
        first_line = (str(e).splitlines() or [""])[0]
        raise ArtifactError(f"{path}: cannot read this checkpoint, it is damaged ({first_line})") from None


class RandomState(Callback):
    """Saves the process's random generators in each checkpoint and restores them on resume.

    Dropout and other random layers then draw after a resume what they would
    have drawn without the interruption. (Data order and augmentation do not
    depend on this state: they are functions of the seed, epoch and sample.)
    """

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state(legacy=False)
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                "has_gauss": n["has_gauss"],
                "gauss": n["gauss"],
            }
        )
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class MovedRun(Callback):
    """Lets a run directory that was moved or copied resume exactly.

    Lightning's ``ModelCheckpoint`` keeps its best score only when the
    checkpoint directory is where it was when saved; otherwise it starts the
    best-epoch search over. This rewrites the saved paths to the run's
    directory before Lightning restores them.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = os.path.realpath(directory)  # as ModelCheckpoint keeps it

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        keys = {callback.state_key for callback in trainer.checkpoint_callbacks}
        for key, state in checkpoint.get("callbacks", {}).items():
            old = state.get("dirpath") if key in keys else None
            if not old or old == self.directory:
                continue

            def moved(path: str, old: str = old) -> str:
                return self.directory + path[len(old) :] if path and path.startswith(old) else path

            for field in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if field in state:
                    state[field] = moved(state[field])
            state["best_k_models"] = {moved(k): v for k, v in state.get("best_k_models", {}).items()}
            state["dirpath"] = self.directory


class MidEpochCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every few steps or minutes within an epoch, never at its last batch.

    Lightning resumes from a checkpoint of an epoch's last batch as if that
    epoch's validation had run, which it had not: the resumed run would skip it
    and could choose another best epoch. The checkpoint written after that
    validation comes a moment later anyway.
    """

    def on_train_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, *args, **kwargs)


def checkpoint_callbacks(
    directory: Path, *, steps: int = 0, minutes: float = 0.0, best: bool = True
) -> list[Callback]:
    """The run's checkpoint writers: best and last at each validation, last within epochs too.

    ``steps`` (> 0) writes ``last.ckpt`` every that many optimiser steps;
    otherwise ``minutes`` (> 0) writes it when that much time has passed.
    Without ``best`` (a run that does not validate), ``last.ckpt`` is written
    at each epoch's end instead of the best and last at each validation.
    """
    best_epoch = {"filename": Path(BEST).stem, "monitor": "val/loss", "mode": "min"}
    monitor = best_epoch if best else {"save_top_k": 0}
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=directory, save_last=True, enable_version_counter=False, **monitor)
    ]
    if steps < 0 or minutes < 0:
        raise ConfigError(f"checkpoint_steps and checkpoint_minutes must be >= 0, not {steps} and {minutes}")
    if steps > 0 or minutes > 0:
        interval = timedelta(minutes=minutes)
        every = {"every_n_train_steps": steps} if steps > 0 else {"train_time_interval": interval}
        last_only = {"save_top_k": 0, "save_last": True, "enable_version_counter": False}
        callbacks.append(MidEpochCheckpoint(dirpath=directory, **last_only, **every))
    return [*callbacks, RandomState(), MovedRun(directory)]
