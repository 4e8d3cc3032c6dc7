"""Training options: ``TrainConfig`` and what follows from it (precision, devices, preprocessing)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import timm
import torch

from mlic.data import DEMO
from mlic.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IMAGE_PIXELS,
    Preprocessing,
)
from mlic.errors import ConfigError

TRANSFER = ("auto", "off")
AUTO_CACHE_SHARE = 0.25
"""The share of available memory that the decoded-image cache may take when ``cache_images`` is None."""


@dataclass
class TrainConfig:
    """Every training option; saved as ``config.json`` in the run so that ``--resume`` can rebuild it."""

    data: str | None = None
    """Training data file; None trains MultiDigits."""
    val_data: str | None = None
    """Validation data; None splits ``val_fraction`` off the training data (MultiDigits has its own)."""
    format: str | None = None
    images_root: str | None = None
    tag_separator: str = " "
    drop_unannotated: bool = False
    """COCO: leave out images without annotations (by default they are all-negative)."""
    out: str | None = None
    backbone: str = "mlic_cnn"
    pretrained: bool = False
    weights: str | None = None
    head: str = "linear"
    """Classifier head: linear, csra or ml-decoder (``mlic.models.heads``)."""
    head_options: dict = field(default_factory=dict)
    transfer: str = "auto"
    """Label transfer from the nearest training images (``mlic.models.transfer``): auto (kept where it
    adds validation mAP) or off."""
    loss: str = "bce"
    """Label loss: bce, focal, asl, hill or splc (``mlic.losses``)."""
    loss_options: dict = field(default_factory=dict)
    """Options of the loss, e.g. {"gamma": 2.0} for focal, {"gamma_neg": 4.0, "clip": 0.05} for asl."""
    pos_weight: float | str = 1.0
    """w_p of the positives: a number, or "auto" (negatives / positives per label, at most max_pos_weight)."""
    max_pos_weight: float = 100.0
    neg_weight: float = 1.0
    label_smoothing: float = 0.0
    missing: str = "ignore"
    """Unknown (-1) targets: ignore (masked), negative (0 with missing_weight) or selective."""
    missing_weight: float = 1.0
    hide_positives: float = 0.0
    """Simulate incomplete labels: hide this share of the training and validation positives (seeded)."""
    hidden_as: str = "unknown"
    """Hidden positives become "unknown" (-1, marked) or "negative" (0: silently missing, the real case)."""
    max_epochs: int = 12
    batch_size: int | None = None
    """Images per step; None: the recipe's: 64 fine-tuning pretrained weights, 128 else."""
    lr: float = 3e-3
    backbone_lr_scale: float | None = None
    """The backbone's learning rate as a share of ``lr`` (the head's); None: the recipe's, 1/3 fine-tuning
    pretrained weights (they need less change than a new head), else 1."""
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    image_size: int | None = None
    """Square input size; None: 64 for MultiDigits, 224 otherwise."""
    augment: str | None = None
    """Training augmentation (light, shift, none); None: shift on MultiDigits, light otherwise."""
    hflip: bool | None = None
    """Mirror images in training; None: yes, except on MultiDigits (mirrored digits are other digits)."""
    val_fraction: float = 0.1
    seed: int = 0
    accelerator: str = "cpu"
    devices: str = "1"
    num_nodes: int = 1
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn, ...; torchrun and SLURM launches are detected."""
    precision: str | None = None
    """Lightning precision; None: bf16-mixed where the device supports bf16, else 32-true."""
    channels_last: bool = True
    compile: bool = False
    """torch.compile the model's forward (worth it on GPUs; slower on the development CPU)."""
    num_workers: int | None = None
    bad_images: str = "skip"
    """Unreadable images: skip (dropped from their batch, listed in bad_images.txt) or fail (stop at once)."""
    cache_images: bool | None = None
    """Decode the training images once into memory before training (``mlic.data.images.build_cache``);
    None: where they fit in ``AUTO_CACHE_SHARE`` of the memory available and training runs in one process."""
    max_image_pixels: int | None = MAX_IMAGE_PIXELS
    """Images with more pixels are refused unread (a decompression-bomb guard); None: no limit."""
    demo_train: int = 10_000
    demo_val: int = 1_000
    checkpoint_steps: int = 0
    """Also write ``checkpoints/last.ckpt`` every this many steps within an epoch (0: by time instead)."""
    checkpoint_minutes: float = 10.0
    """Also write ``checkpoints/last.ckpt`` when this much time has passed within an epoch (0: never)."""
    deterministic: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.transfer not in TRANSFER:
            raise ConfigError(f"transfer must be one of {list(TRANSFER)}, got {self.transfer!r}")
        if self.backbone_lr_scale is not None and not self.backbone_lr_scale > 0:
            raise ConfigError(f"backbone_lr_scale must be positive, got {self.backbone_lr_scale!r}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; valid: {sorted(names)}")
        return cls(**data)


FINE_TUNING = {"batch_size": 64, "backbone_lr_scale": 1 / 3}
"""Defaults when training starts from pretrained weights (``pretrained`` or ``weights``): measured on
real photos against a plain fine-tuning loop (README, "Real photos")."""
FROM_SCRATCH = {"batch_size": 128, "backbone_lr_scale": 1.0}
"""Defaults from random weights: measured on MultiDigits."""


def resolve_recipe(config: TrainConfig) -> TrainConfig:
    """``config`` with the options left None set by the recipe that fits it (fine-tuning or from scratch)."""
    recipe = FINE_TUNING if (config.pretrained or config.weights) else FROM_SCRATCH
    return replace(config, **{k: v for k, v in recipe.items() if getattr(config, k) is None})


def resolve_precision(config: TrainConfig) -> str:
    if config.precision:
        return config.precision
    if config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work natively (AVX-512 bf16 or AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_cuda(config: TrainConfig) -> bool:
    """Whether training runs on CUDA GPUs, where pinned host memory speeds up the copies."""
    return config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def resolve_preprocessing(config: TrainConfig) -> Preprocessing:
    """Input size and flips from the config; mean and std from the backbone's pretrained config.

    A backbone trained elsewhere expects the normalisation it was trained with
    (timm records it with the weights); ImageNet's otherwise.
    """
    demo = is_demo(config)
    size = config.image_size or (64 if demo else 224)
    hflip = config.hflip if config.hflip is not None else not demo
    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if pretrained_cfg is not None and (config.pretrained or config.weights):
        mean, std = tuple(pretrained_cfg.mean), tuple(pretrained_cfg.std)
    return Preprocessing(image_size=(size, size), mean=mean, std=std, hflip=hflip)


def loss_summary(config: TrainConfig) -> dict:
    """The loss settings recorded in the artifact and shown by ``mlic evaluate``."""
    summary = {"name": config.loss, **config.loss_options, "pos_weight": config.pos_weight,
               "neg_weight": config.neg_weight, "label_smoothing": config.label_smoothing,
               "missing": config.missing}  # fmt: skip
    if config.pos_weight == "auto":
        summary["max_pos_weight"] = config.max_pos_weight
    if config.missing != "ignore":
        summary["missing_weight"] = config.missing_weight
    if config.hide_positives:
        summary["hidden_positives"] = {"fraction": config.hide_positives, "as": config.hidden_as}
    return summary


def is_demo(config: TrainConfig) -> bool:
    return config.data is None or config.data == DEMO


def parse_devices(devices: str | int) -> int | str | list[int]:
    """Lightning's devices: a count, "auto", or a comma-separated list of indices."""
    text = str(devices)
    if text == "auto" or text.lstrip("-").isdigit():
        return text if text == "auto" else int(text)
    try:
        return [int(d) for d in text.split(",") if d]
    except ValueError:
        raise ConfigError(f"devices must be a count, 'auto' or a list like '0,1'; got {devices!r}") from None


def read_run_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json); pass the folder train wrote")
    return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
