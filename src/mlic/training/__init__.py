"""Training through Lightning: options, data module, lightning module, and ``train`` that ends in an artifact.

A run directory holds ``config.json`` (the resolved ``TrainConfig``),
``checkpoints/`` (``last.ckpt`` to resume, ``best.ckpt``), ``logs/`` (CSV
metrics per epoch, and the TensorBoard or MLflow trackers of ``--logger``),
``bad_images.txt`` when images were skipped, and ``artifact/``, which
``train`` returns.

- ``config``: ``TrainConfig``, one declaration per option (light: the command line reads it);
- ``defaults``: ``resolve``, the defaults that depend on the data and the machine, filled in;
- ``datamodule``: train / validation split, loaders, per-process shards, image cache;
- ``module``: the Lightning module (loss, optimiser, validation figures);
- ``checkpoints``, ``metrics_log``: atomic, pickle-free checkpoints; the per-epoch CSV log;
- ``trackers``: TensorBoard and MLflow through Lightning's loggers (``--logger``);
- ``run``: ``train`` itself and the artifact it writes.

The names below load their module on first use, so that reading the options
does not import Lightning.
"""

from __future__ import annotations

import importlib

_LAZY = {
    **dict.fromkeys(
        ("TrainConfig", "RESUMABLE", "is_demo", "loss_summary", "parse_devices", "read_run_config"),
        "mlic.training.config",
    ),
    **dict.fromkeys(
        (
            "resolve",
            "resolve_accelerator",
            "resolve_precision",
            "resolve_preprocessing",
            "cpu_supports_bf16",
            "uses_cuda",
            "default_workers",
        ),
        "mlic.training.defaults",
    ),
    **dict.fromkeys(
        ("DataModule", "ShardSampler", "image_cache", "load_splits", "validation_split"),
        "mlic.training.datamodule",
    ),
    **dict.fromkeys(
        ("MultiLabelModule", "build_loss", "validation_figures", "warmup_cosine"), "mlic.training.module"
    ),
    **dict.fromkeys(("BAD_IMAGES_FILE", "finish", "is_global_zero", "train"), "mlic.training.run"),
}
"""Public names and the modules that define them, imported on first use."""


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'mlic.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
