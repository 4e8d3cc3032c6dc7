"""Training through Lightning: options, data module, lightning module, and ``train`` that ends in an artifact.

A run directory holds ``config.json`` (the resolved ``TrainConfig``),
``checkpoints/`` (``last.ckpt`` to resume, ``best.ckpt``), ``logs/`` (CSV
metrics per epoch), ``bad_images.txt`` when images were skipped, and
``artifact/``, which ``train`` returns.

- ``config``: ``TrainConfig`` and what follows from it (precision, devices, preprocessing);
- ``datamodule``: train / validation split, loaders, per-process shards, image cache;
- ``module``: the Lightning module (loss, optimiser, validation figures);
- ``run``: ``train`` itself and the artifact it writes.
"""

from mlic.training.config import (
    TrainConfig,
    cpu_supports_bf16,
    is_demo,
    loss_summary,
    parse_devices,
    read_run_config,
    resolve_precision,
    resolve_preprocessing,
    uses_cuda,
)
from mlic.training.datamodule import (
    DataModule,
    ShardSampler,
    default_workers,
    image_cache,
    load_splits,
    validation_split,
)
from mlic.training.module import MultiLabelModule, build_loss, validation_figures, warmup_cosine
from mlic.training.run import BAD_IMAGES_FILE, finish, is_global_zero, train

__all__ = [
    "BAD_IMAGES_FILE",
    "DataModule",
    "MultiLabelModule",
    "ShardSampler",
    "TrainConfig",
    "build_loss",
    "cpu_supports_bf16",
    "default_workers",
    "finish",
    "image_cache",
    "is_demo",
    "is_global_zero",
    "load_splits",
    "loss_summary",
    "parse_devices",
    "read_run_config",
    "resolve_precision",
    "resolve_preprocessing",
    "train",
    "uses_cuda",
    "validation_figures",
    "validation_split",
    "warmup_cosine",
]
