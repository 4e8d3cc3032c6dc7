"""Data for training: the train / validation split, loaders, per-process shards and the image cache."""

from __future__ import annotations

import os

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from mlic.data import DEMO, Manifest, load_data
from mlic.data.images import (
    Decoding,
    ImageCache,
    ImageDataset,
    Preprocessing,
    build_cache,
    build_transform,
)
from mlic.data.manifest import check_files
from mlic.data.split import stratified_split
from mlic.data.targets import HIDDEN_AS
from mlic.errors import ConfigError, DataError
from mlic.training.config import TrainConfig, is_demo


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


def default_workers(manifest: Manifest) -> int:
    """No worker processes for in-memory data; otherwise one per core this process may use, up to 8."""
    if manifest.pixels is not None:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1)
