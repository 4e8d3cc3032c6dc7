"""What follows from the options: every default that depends on the data or the machine, filled in once.

``resolve(config)`` returns the config with no option left to be decided
later: input size, augmentation and flips (MultiDigits or photos), batch size
and the backbone's learning-rate share (fine-tuning or from scratch),
precision (what the device runs fast), loader processes (in-memory data or
files), the data name. One default waits for the training labels:
``resolve_neg_weight`` fills ``neg_weight`` once they are read, so
``--print-config`` shows it as null. ``train`` saves the config with both as
``config.json``, so the run directory says what was used.
"""

from __future__ import annotations

import dataclasses
import os

import timm
import torch

from mlic.data.images import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from mlic.data.targets import LabelLists
from mlic.inference.precision import cpu_supports_bf16
from mlic.thresholds import label_priors
from mlic.training.config import DEMO, TrainConfig, is_demo

FINE_TUNING = {"batch_size": 32, "backbone_lr_scale": 1 / 3, "prior_bias": True}
"""Defaults when training starts from pretrained weights (``pretrained`` or ``weights``): measured on
real photos against a plain fine-tuning loop (README, "Real photos")."""
FROM_SCRATCH = {"batch_size": 128, "backbone_lr_scale": 1.0, "prior_bias": False}
"""Defaults from random weights: measured on MultiDigits."""
RARE_NEG_WEIGHT = 0.5
"""The weight of negative label targets when fine-tuning on mostly rare labels (``resolve_neg_weight``)."""
RARE_MEAN_PRIOR = 0.05
"""Labels are mostly rare when their training priors average under this share of the images."""


def resolve(config: TrainConfig) -> TrainConfig:
    """``config`` with every data-, weight- or machine-dependent default filled in (``out`` stays as given).

    ``cache_images`` None stays None: whether the images fit in memory is known
    only once their headers are read (``mlic.training.datamodule.image_cache``).
    """
    demo = is_demo(config)
    return dataclasses.replace(
        resolve_recipe(config),
        data=DEMO if demo else config.data,
        image_size=config.image_size or (64 if demo else 224),
        augment=config.augment or ("shift" if demo else "light"),
        hflip=config.hflip if config.hflip is not None else not demo,
        accelerator=resolve_accelerator(config),
        precision=resolve_precision(config),
        num_workers=config.num_workers if config.num_workers is not None else default_workers(demo),
    )


def resolve_recipe(config: TrainConfig) -> TrainConfig:
    """``config`` with the options left None set by the recipe that fits it (fine-tuning or from scratch)."""
    recipe = FINE_TUNING if (config.pretrained or config.weights) else FROM_SCRATCH
    return dataclasses.replace(config, **{k: v for k, v in recipe.items() if getattr(config, k) is None})


def resolve_neg_weight(config: TrainConfig, labels: LabelLists) -> TrainConfig:
    """``config`` with ``neg_weight`` set, if None, from the training split's ``labels``.

    Fine-tuning on labels that are mostly rare (their priors average under
    ``RARE_MEAN_PRIOR``: Corel-5k's 374 words average 0.9%) weighs each
    negative at ``RARE_NEG_WEIGHT``: nearly every target there is a
    negative, some are missing positives, and at full weight they drown what
    a rare label's few positives teach. On Corel-5k that raised mAP and top-5
    F1 on three seeds of three; on the apparel tags (priors 15-44%) it lost
    0.0013 mAP, so frequent labels, and training from scratch (MultiDigits),
    keep full weight. README, "Negatives at half weight".
    """
    if config.neg_weight is not None:
        return config
    rare = False
    if config.pretrained or config.weights:
        counts = labels.counts()
        priors = label_priors(counts["positive"], counts["positive"] + counts["negative"])
        rare = len(priors) > 0 and float(priors.mean()) < RARE_MEAN_PRIOR
    return dataclasses.replace(config, neg_weight=RARE_NEG_WEIGHT if rare else 1.0)


def resolve_accelerator(config: TrainConfig) -> str:
    """``auto``: ``gpu`` when CUDA sees a GPU, else ``cpu``; any other choice as given.

    Decided here rather than by Lightning's own ``auto``, which would also pick
    Apple's MPS, whose bf16 and loader settings mlic has not measured: ask for
    ``--accelerator mps`` there.
    """
    if config.accelerator != "auto":
        return config.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(config: TrainConfig) -> str:
    """Lightning's precision: the one asked for, else bf16 where the device runs it natively, else 32-bit."""
    if config.precision:
        return config.precision
    if uses_cuda(config):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def uses_cuda(config: TrainConfig) -> bool:
    """Whether training runs on CUDA GPUs, where pinned host memory speeds up the copies."""
    return config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def default_workers(in_memory: bool) -> int:
    """No worker processes for in-memory data; otherwise one per core this process may use, up to 8."""
    if in_memory:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1)


def resolve_preprocessing(config: TrainConfig) -> Preprocessing:
    """Input size and flips from the (resolved) config; mean and std from the backbone's pretrained config.

    A backbone trained elsewhere expects the normalisation it was trained with
    (timm records it with the weights); ImageNet's otherwise.
    """
    config = resolve(config)
    size = config.image_size
    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if pretrained_cfg is not None and (config.pretrained or config.weights):
        mean, std = tuple(pretrained_cfg.mean), tuple(pretrained_cfg.std)
    return Preprocessing(
        image_size=(size, size), mean=mean, std=std, hflip=config.hflip, resize=config.resize
    )
