"""Training through Lightning: data module, lightning module, and ``train`` that ends in an artifact.

A run directory holds ``config.json`` (the resolved ``TrainConfig``),
``checkpoints/`` (``last.ckpt`` to resume, ``best.ckpt``), ``logs/`` (CSV
metrics per epoch) and ``artifact/``, which ``train`` returns.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import lightning as L
import numpy as np
import timm
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from mlic.artifact import Artifact, save_artifact
from mlic.data import DEMO, Manifest, load_data
from mlic.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IMAGE_PIXELS,
    Decoding,
    ImageCache,
    ImageDataset,
    Preprocessing,
    build_cache,
    build_transform,
    decode_size,
    tidy_bad_images,
    worker_error,
)
from mlic.data.manifest import check_files
from mlic.data.split import stratified_split
from mlic.data.targets import HIDDEN_AS
from mlic.errors import ConfigError, DataError
from mlic.fileio import atomic_write_text
from mlic.losses import SchemaLoss, create_label_loss, create_missing_policy
from mlic.metrics import attribute_scores, mean_average_precision, multilabel_scores
from mlic.models import Classifier, ModelConfig, build_classifier
from mlic.predict import Probabilities, probabilities
from mlic.thresholds import choose_thresholds

BAD_IMAGES_FILE = "bad_images.txt"
"""In the run directory: the images skipped as unreadable, one ``path<TAB>reason`` per line."""
QUIET_WARNINGS = (  # library notices that say nothing to an mlic user
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*is not supported by the model summary.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*dataloader yielded None.*",  # a batch of unreadable images only, skipped; mlic counts them
    r".*lr_scheduler.step\(\)` before `optimizer.step\(\)`.*",  # the same skipped batch, first
    r".*torch.distributed.nn.functional.all_gather is deprecated.*",  # inside Lightning's all_gather
)


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
    batch_size: int = 128
    lr: float = 3e-3
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
    cache_images: bool = False
    """Decode the training images once into memory before training (``mlic.data.images.build_cache``)."""
    max_image_pixels: int | None = MAX_IMAGE_PIXELS
    """Images with more pixels are refused unread (a decompression-bomb guard); None: no limit."""
    demo_train: int = 10_000
    demo_val: int = 1_000
    deterministic: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; valid: {sorted(names)}")
        return cls(**data)


class MultiLabelModule(L.LightningModule):
    """Optimises a ``Classifier`` with a ``SchemaLoss``; reports mAP and attribute accuracy on validation."""

    def __init__(
        self,
        model: Classifier,
        loss: SchemaLoss,
        *,
        lr: float,
        weight_decay: float,
        warmup_epochs: float,
        channels_last: bool,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.loss = loss
        self.channels_last = channels_last
        self.save_hyperparameters(ignore=["model", "loss"])
        # a compiled forward *function*, not module: the state dict keeps the model's own keys
        self._model_forward = torch.compile(self.model.forward) if compile else self.model.forward
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._model_forward(images)

    def on_train_epoch_start(self) -> None:
        if hasattr(self.loss, "set_epoch"):  # losses that change with training, e.g. SPLC
            self.loss.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch was unreadable and skipped: no step
            return None
        images, labels, attributes = batch
        out = self.loss(self(images), labels, attributes)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(images))
        return out["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch is None:
            return
        images, labels, attributes = batch
        logits = self(images)
        out = self.loss(logits, labels, attributes)
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=len(images), sync_dist=True)
        self._val_logits.append(logits.float().cpu())
        self._val_targets.append((labels.cpu(), attributes.cpu()))

    def on_validation_epoch_end(self) -> None:
        schema = self.model.schema
        logits = torch.cat(self._val_logits) if self._val_logits else torch.empty(0, schema.num_outputs)
        labels = torch.cat([t[0] for t in self._val_targets]) if self._val_targets else None
        attributes = torch.cat([t[1] for t in self._val_targets]) if self._val_targets else None
        if labels is None:
            labels = torch.empty(0, schema.n_labels, dtype=torch.int8)
            attributes = torch.empty(0, schema.n_attributes, dtype=torch.int64)
        self._val_logits.clear()
        self._val_targets.clear()
        # every process gets the whole validation set, so figures equal those of one process
        logits = self.gather_rows(logits)
        labels = self.gather_rows(labels.to(torch.int32)).to(torch.int8).numpy()
        attributes = self.gather_rows(attributes).numpy()
        if not len(logits):
            return
        probs = probabilities(schema, logits)
        for name, value in validation_figures(schema.attribute_names, probs, labels, attributes).items():
            # the same value on every process: sync_dist averages equal numbers (and keeps Lightning quiet)
            self.log(f"val/{name}", value, prog_bar=name in ("mAP", "micro_f1"), sync_dist=True)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` of every process, concatenated in rank order (processes may hold different counts)."""
        if self.trainer.world_size == 1:
            return rows
        sizes = self.all_gather(torch.tensor([len(rows)], device=self.device)).flatten().tolist()
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: len(rows)] = rows
        gathered = self.all_gather(padded.to(self.device)).cpu()
        return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs)
        warmup = min(total // 2, int(self.hparams.warmup_epochs * per_epoch))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def validation_figures(
    attribute_names, probs: Probabilities, labels: np.ndarray, attributes: np.ndarray
) -> dict:
    """The figures logged each epoch: mAP, micro-F1 at 0.5 and each attribute's accuracy."""
    figures = {}
    if labels.shape[1]:
        m_ap = mean_average_precision(labels, probs.labels)
        figures["mAP"] = 0.0 if math.isnan(m_ap) else m_ap
        figures["micro_f1"] = multilabel_scores(labels, probs.labels, 0.5)["micro_f1"]
    for name, scores in attribute_scores(attributes, probs.attributes, attribute_names).items():
        if not math.isnan(scores["accuracy"]):
            figures[f"{name}_accuracy"] = scores["accuracy"]
    return figures


class DataModule(L.LightningDataModule):
    """Train and validation manifests with their transforms and loaders.

    Decoding and augmentation run in ``num_workers`` processes (persistent
    across epochs); ``cache`` holds the training images decoded (validation
    reads the files, as prediction does); ``pin_memory`` speeds copies to a GPU.
    """

    def __init__(
        self,
        train: Manifest,
        val: Manifest,
        preprocessing: Preprocessing,
        *,
        batch_size: int,
        num_workers: int,
        augment: str,
        decoding: Decoding | None = None,
        cache: ImageCache | None = None,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_manifest, self.val_manifest = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.decoding, self.cache, self.pin_memory = decoding or Decoding(), cache, pin_memory
        self.train_transform = build_transform(preprocessing, train=True, augment=augment)
        self.eval_transform = build_transform(preprocessing, train=False)

    def _loader(
        self,
        manifest: Manifest,
        transform,
        shuffle: bool,
        cache: ImageCache | None = None,
        whole: bool = False,
    ) -> DataLoader:
        dataset = ImageDataset(manifest, transform, decoding=self.decoding, cache=cache)
        sampler = None if whole else self._sampler(dataset, shuffle)
        return DataLoader(
            dataset,
            collate_fn=dataset.collate,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(manifest) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def _sampler(self, dataset: ImageDataset, shuffle: bool) -> Sampler | None:
        """This process's share under DDP: a shuffled shard for training, a contiguous one otherwise."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        world, rank = trainer.world_size, trainer.global_rank
        if shuffle:
            return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return ShardSampler(len(dataset), world, rank)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_manifest, self.train_transform, shuffle=True, cache=self.cache)

    def val_dataloader(self, whole: bool = False) -> DataLoader:
        """This process's share of the validation images; all of them with ``whole`` (for thresholds)."""
        return self._loader(self.val_manifest, self.eval_transform, shuffle=False, whole=whole)


class ShardSampler(Sampler[int]):
    """Process ``rank``'s contiguous share of ``n`` samples, unpadded and in order.

    Lightning's distributed sampler pads the shards to equal length with
    repeated samples, which would count those samples twice in validation
    metrics; these shards, gathered in rank order, are the data set exactly.
    """

    def __init__(self, n: int, world: int, rank: int) -> None:
        self.start, self.stop = n * rank // world, n * (rank + 1) // world

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def load_splits(config: TrainConfig) -> tuple[Manifest, Manifest]:
    """Training and validation manifests, with every image file checked before training starts.

    With ``config.hide_positives``, a share of both sets' positives is hidden
    (``Manifest.hide_positives``), as a study of incompletely labelled data.
    """
    if config.hidden_as not in HIDDEN_AS:
        raise ConfigError(f"hidden_as must be one of {list(HIDDEN_AS)}, not {config.hidden_as!r}")
    train, val = _load_splits(config)
    if config.hide_positives:
        hide = {"hidden_as": config.hidden_as}
        train = train.hide_positives(config.hide_positives, seed=config.seed, **hide)
        val = val.hide_positives(config.hide_positives, seed=config.seed + 1, **hide)
    return train, val


def _load_splits(config: TrainConfig) -> tuple[Manifest, Manifest]:
    if is_demo(config):
        return (
            load_data(DEMO, split="train", demo_samples=config.demo_train, seed=config.seed),
            load_data(DEMO, split="val", demo_samples=config.demo_val, seed=config.seed),
        )
    options = {
        "format": config.format,
        "images_root": config.images_root,
        "tag_separator": config.tag_separator,
        "drop_unannotated": config.drop_unannotated,
    }
    train = load_data(config.data, **options)
    if not config.val_data:
        check_files(train)
        return validation_split(train, config.val_fraction, config.seed)
    val = load_data(config.val_data, schema=train.schema, **options)
    check_files(train, val)
    return train, val


def validation_split(manifest: Manifest, fraction: float, seed: int) -> tuple[Manifest, Manifest]:
    """Train and validation parts, ``fraction`` of the images for validation; seeded iterative stratification.

    Stratified (``mlic.data.split.stratified_split``) so that rare labels and
    attribute classes reach validation in proportion, where thresholds are chosen.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {fraction}")
    splits = stratified_split(manifest, {"train": 1.0 - fraction, "val": fraction}, seed)
    return splits["train"], splits["val"]


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


def csv_logger(run_dir: Path, resumed: bool) -> CSVLogger:
    """Per-epoch metrics in ``logs/metrics.csv``; a resumed run writes ``logs/resume-N/``.

    Lightning's CSV logger replaces the file of an existing version, so a
    resumed run gets a version of its own and the earlier epochs stay on disk.
    """
    version = ""
    if resumed:
        n = 1
        while (run_dir / "logs" / f"resume-{n}").exists():
            n += 1
        version = f"resume-{n}"
    return CSVLogger(run_dir, name="logs", version=version)


def default_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / stamp, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stamp}-{n}"
    return path


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None, **options: object) -> Path:
    """Train a model and return the path of its artifact.

    ``config`` or keyword ``options`` (the fields of ``TrainConfig``) set the
    run; ``resume`` continues the run directory of an interrupted ``train``
    from its last checkpoint (``options`` may raise ``max_epochs``).
    """
    if config is not None and (options or resume is not None):
        raise ConfigError("pass either a TrainConfig, or keyword options, or resume= with options")
    if resume is not None:
        run_dir = Path(resume)
        config = TrainConfig.from_dict({**asdict(read_run_config(run_dir)), **options})
    else:
        config = config or TrainConfig.from_dict(options)
        run_dir = Path(config.out) if config.out else default_run_dir()
    config.out = str(run_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_set, val_set = load_splits(config)
    preprocessing = resolve_preprocessing(config)
    model = build_classifier(
        train_set.schema,
        ModelConfig(backbone=config.backbone, head=config.head, head_kwargs=dict(config.head_options)),
        pretrained=config.pretrained,
        weights=config.weights,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )
    loss = build_loss(config, train_set)
    module = MultiLabelModule(
        model,
        loss,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        channels_last=config.channels_last,
        compile=config.compile,
    )
    workers = config.num_workers if config.num_workers is not None else default_workers(train_set)
    augment = config.augment or ("shift" if is_demo(config) else "light")
    bad_log = run_dir / BAD_IMAGES_FILE
    decoding = Decoding(decode_size(preprocessing), config.max_image_pixels, config.bad_images,
                        str(bad_log) if config.bad_images == "skip" else None)  # fmt: skip
    data = DataModule(
        train_set, val_set, preprocessing, batch_size=config.batch_size, num_workers=workers, augment=augment,
        decoding=decoding, cache=image_cache(config, train_set, preprocessing, workers),
        pin_memory=uses_cuda(config), seed=config.seed,
    )  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        bad_log.unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/loss",
        mode="min",
        save_last=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=parse_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        use_distributed_sampler=False,  # DataModule shards; validation without Lightning's padding
        precision=resolve_precision(config),
        callbacks=[checkpoint],
        logger=csv_logger(run_dir, resumed=resume is not None),
        deterministic=config.deterministic,
        enable_progress_bar=config.progress,
        enable_model_summary=config.progress,
        log_every_n_steps=max(1, min(10, len(train_set) // config.batch_size)),
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    last = run_dir / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        resume_from = str(last) if resume is not None and last.exists() else None
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        except DataError as e:
            raise worker_error(e) from None
    seconds = time.perf_counter() - started
    if trainer.global_rank != 0:
        return run_dir / "artifact"
    best_path = run_dir / "checkpoints" / "best.ckpt"
    if best_path.is_file():
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
    artifact = finish(module.model, preprocessing, data, run_dir / "artifact", config, trainer, seconds)
    if artifact.training["bad_images"]:
        n = artifact.training["bad_images"]
        warnings.warn(f"{n} unreadable image(s) were skipped; they are listed in {bad_log}", stacklevel=2)
    return artifact.path


def image_cache(
    config: TrainConfig, manifest: Manifest, pre: Preprocessing, workers: int
) -> ImageCache | None:
    """The training images decoded into memory, where ``cache_images`` asks for it and they are files."""
    if not config.cache_images or manifest.pixels is not None:
        return None
    cache = build_cache(manifest, pre, num_workers=workers, max_pixels=config.max_image_pixels)
    if cache.errors and config.bad_images == "fail":
        raise DataError(cache.errors[min(cache.errors)])
    return cache


def is_global_zero() -> bool:
    """Whether this is the first process of a (possibly distributed) run, the one that writes and prints."""
    return rank_zero_only.rank == 0


def uses_cuda(config: TrainConfig) -> bool:
    """Whether training runs on CUDA GPUs, where pinned host memory speeds up the copies."""
    return config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def finish(
    model: Classifier,
    preprocessing: Preprocessing,
    data: DataModule,
    path: Path,
    config: TrainConfig,
    trainer: L.Trainer,
    seconds: float,
) -> Artifact:
    """Choose per-label thresholds on validation and write the artifact."""
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    probs, labels, attributes = predict_loader(model, data.val_dataloader(whole=True))
    decision = choose_thresholds(labels, probs.labels, "per-label")
    figures = validation_figures(model.schema.attribute_names, probs, labels, attributes)
    summary = {
        "data": config.data or DEMO,
        "train_images": len(data.train_manifest),
        "val_images": len(data.val_manifest),
        "epochs": trainer.current_epoch,
        "seconds": round(seconds, 1),
        "precision": str(trainer.precision),
        "loss": loss_summary(config),
        "validation": {k: round(float(v), 6) for k, v in figures.items()},
        "bad_images": len(tidy_bad_images(data.decoding.bad_log)) if data.decoding.bad_log else 0,
        "config": asdict(config),
    }
    return save_artifact(path, model, preprocessing, decision, training=summary)


@torch.inference_mode()
def predict_loader(model: Classifier, loader: DataLoader) -> tuple[Probabilities, np.ndarray, np.ndarray]:
    logits, labels, attributes = [], [], []
    try:
        for batch in loader:
            if batch is None:  # every image of the batch was unreadable and skipped
                continue
            images, y, a = batch
            logits.append(model(images).float())
            labels.append(y)
            attributes.append(a)
    except DataError as e:
        raise worker_error(e) from None
    if not logits:
        raise DataError("no validation image could be decoded")
    return (
        probabilities(model.schema, torch.cat(logits)),
        torch.cat(labels).numpy(),
        torch.cat(attributes).numpy(),
    )


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


def build_loss(config: TrainConfig, train_set: Manifest) -> SchemaLoss:
    """The schema's loss: the label loss with its options, and the policy for unknown targets."""
    label_loss = create_label_loss(
        config.loss,
        pos_weight=config.pos_weight,
        neg_weight=config.neg_weight,
        label_smoothing=config.label_smoothing,
        train_targets=train_set.label_lists,
        max_pos_weight=config.max_pos_weight,
        **config.loss_options,
    )
    missing = create_missing_policy(
        config.missing, missing_weight=config.missing_weight, train_targets=train_set.label_lists
    )
    return SchemaLoss(train_set.schema, label_loss, missing=missing)


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


def default_workers(manifest: Manifest) -> int:
    """No worker processes for in-memory data; otherwise one per core this process may use, up to 8."""
    if manifest.pixels is not None:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1)


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
