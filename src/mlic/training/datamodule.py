"""Data for training: the train / validation split, loaders, per-process shards and the image cache.

Training data is a ``Manifest`` (files or MultiDigits), or a split of a pack
(``mlic.data.shards.Shards``) streamed by litdata: shuffled chunk-wise by the
seed and epoch, shared out over processes and loader workers, resumed
mid-epoch from the loader state that Lightning saves in checkpoints. Either
way each sample's augmentation is seeded by ``(seed, epoch, index)``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mlic.data.formats import DEMO, load_data
from mlic.data.images import (
    Decoding,
    ImageCache,
    ImageDataset,
    Preprocessing,
    available_memory,
    build_cache,
    build_transform,
)
from mlic.data.images.dataset import Collate
from mlic.data.manifest import Manifest, check_files
from mlic.data.shards import Shards, ShardSet, StreamedSample, is_remote, is_shards, locate
from mlic.data.split import stratified_split
from mlic.data.targets import HIDDEN_AS, LabelLists, entry_rows
from mlic.errors import ConfigError, DataError
from mlic.extras import require
from mlic.training.config import AUTO_CACHE_SHARE, TrainConfig, is_demo

SIZE_STEP = 16
"""Progressive resizing rounds input sides to multiples of this (convnets downsample by 16 or 32)."""


class DataModule(L.LightningDataModule):
    """Train and validation manifests with their transforms and loaders.

    Decoding and augmentation run in ``num_workers`` processes (persistent
    across epochs); the training order and each sample's augmentation follow
    from ``seed`` alone (``TrainSampler``, ``SeededSamples``), so that a run
    resumes mid-epoch exactly. ``cache`` holds the training images decoded
    (validation reads the files, as prediction does); ``pin_memory`` speeds
    copies to a GPU.
    """

    def __init__(
        self,
        train: Manifest | Shards,
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
        repeats: np.ndarray | None = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.train_manifest, self.val_manifest = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.repeats = repeats
        self.decoding, self.cache, self.pin_memory = decoding or Decoding(), cache, pin_memory
        self.train_transform = build_transform(preprocessing, train=True, augment=augment)
        self.eval_transform = build_transform(preprocessing, train=False)
        self.epoch_transforms = None  # progressive resizing: the training transform of each epoch
        if sizes:
            self.epoch_transforms = [
                build_transform(replace(preprocessing, image_size=size), train=True, augment=augment)
                for size in sizes
            ]

    def train_dataloader(self) -> DataLoader:
        """This process's shuffled share of the training images, resumable mid-epoch."""
        if isinstance(self.train_manifest, Shards):
            return self._stream_loader(self.train_manifest)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        images = ImageDataset(
            self.train_manifest, self.train_transform, decoding=self.decoding, cache=self.cache
        )
        sampler = TrainSampler(len(images), self.seed, world=world, rank=rank, repeats=self.repeats)
        return TrainLoader(
            SeededSamples(images, self.seed, self.epoch_transforms),
            sampler=sampler,
            drop_last=len(sampler) > self.batch_size,  # a ragged last batch, unless it is the only one
            **self._loader_options(images),
        )

    def _stream_loader(self, shards: Shards) -> DataLoader:
        """The training split streamed from its shards by litdata's loader, whose state Lightning saves."""
        transform = SeededTransform(self.train_transform, self.seed, self.epoch_transforms)
        sample = StreamedSample(shards.url, self.decoding, transform)
        return streamed_loader(shards, sample, seed=self.seed, epoch=self._epoch, batch_size=self.batch_size,
                               num_workers=self.num_workers, pin_memory=self.pin_memory,
                               collate_fn=Collate(shards.schema.n_labels, shards.fill))  # fmt: skip

    def _epoch(self) -> int:
        """The epoch Lightning is training (from 0), which the streamed loader plays."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def val_dataloader(self) -> DataLoader:
        """This process's share of the validation images."""
        images = ImageDataset(self.val_manifest, self.eval_transform, decoding=self.decoding)
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = ShardSampler(len(images), trainer.world_size, trainer.global_rank)
        return DataLoader(images, sampler=sampler, **self._loader_options(images))

    def _loader_options(self, images: ImageDataset) -> dict[str, Any]:
        return {
            "collate_fn": images.collate,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": self.pin_memory,
            # worker seeds from a generator of their own: loaders never draw from the global one
            "generator": torch.Generator().manual_seed(self.seed),
        }


class TrainSampler(Sampler[tuple[int, ...]]):
    """Process ``rank``'s share of a shuffled epoch, as ``(epoch, index)`` keys, a function of the seed only.

    The order of epoch ``e`` comes from ``seed + e`` (as in torch's
    ``DistributedSampler``: shuffled, padded to a multiple of ``world``, every
    ``world``-th sample), never from a global generator, so a resumed run
    sees the order an uninterrupted one would. ``skip`` leaves out the first
    samples of the next iteration: those a resumed epoch has already trained on.

    With ``repeats`` (``repeat_factors``), image ``i`` is listed ``r_i`` times,
    rounded at random each epoch (LVIS's stochastic rounding), the list is
    shuffled and its first ``n`` entries make the epoch: rare-label images come
    more often, frequent ones less, and an epoch costs what it did.
    """

    def __init__(
        self, n: int, seed: int, *, world: int = 1, rank: int = 0, repeats: np.ndarray | None = None
    ) -> None:
        if repeats is not None and len(repeats) != n:
            raise ValueError(f"{len(repeats)} repeat factors for {n} images")
        self.n, self.seed, self.world, self.rank = n, seed, world, rank
        self.repeats = None if repeats is None else torch.as_tensor(repeats, dtype=torch.float64)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.repeats is None:
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = self.repeated(generator).tolist()
        order += order[: len(self) * self.world - self.n]  # pad so that every process has as many
        return order[self.rank :: self.world]

    def repeated(self, generator: torch.Generator) -> torch.Tensor:
        """``n`` image indices in random order from a list of each image ``r_i`` times (rounded at random)."""
        whole = self.repeats.floor()
        up = torch.rand(self.n, generator=generator, dtype=torch.float64) < self.repeats - whole
        listed = torch.arange(self.n).repeat_interleave((whole + up).long())
        return listed[torch.randperm(len(listed), generator=generator)[: self.n]]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        start, self.skip = self.skip, 0
        epoch, order = self.epoch, self.order(self.epoch)
        if self.repeats is None:
            return iter([(epoch, index) for index in order[start:]])
        # a repeated image's later copies carry their number, which gives them augmentations of their own
        keys = [(epoch, index, copy) for index, copy in zip(order, copy_numbers(order), strict=True)]
        return iter(keys[start:])

    def __len__(self) -> int:
        return -(-self.n // self.world)


def copy_numbers(order: list[int]) -> list[int]:
    """For each entry of ``order``, how many times its index came before it: 0, 0, 1 for 5, 7, 5."""
    seen: dict[int, int] = {}
    numbers = []
    for index in order:
        numbers.append(seen.get(index, 0))
        seen[index] = numbers[-1] + 1
    return numbers


def repeat_factors(labels: LabelLists, threshold: float) -> np.ndarray:
    """Each training image's repeat factor ``max(1, sqrt(threshold / f))``, float64 ``[N]``.

    ``f`` is the share of the images on which the image's rarest present label
    is present (Gupta et al. 2019, LVIS, section 4.2; detectron2's
    ``RepeatFactorTrainingSampler``, mmdetection's ``ClassBalancedDataset``).
    Images without a present label get 1.
    """
    share = labels.counts()["positive"] / max(len(labels), 1)
    per_label = np.maximum(1.0, np.sqrt(threshold / np.maximum(share, 1e-12)))
    rows = entry_rows(labels.indptr)
    present = labels.values == 1
    factors = np.ones(len(labels))
    np.maximum.at(factors, rows[present], per_label[labels.indices[present]])
    return factors


class TrainLoader(DataLoader):
    """The training ``DataLoader``, with the ``state_dict`` Lightning saves in mid-epoch checkpoints.

    The state is the epoch and the batches of it handed out so far; loading it
    makes the iteration of that epoch start at the batch after those.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handed_out = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator:
        # A generator: the sampler is read at the first batch, after Lightning's ``set_epoch``.
        sampler: TrainSampler = self.sampler
        resume, self._resume = self._resume, None
        self._handed_out = resume["batches"] if resume and resume["epoch"] == sampler.epoch else 0
        sampler.skip = self._handed_out * self.batch_size
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self._resume = dict(state)


class SeededSamples(Dataset):
    """A training ``ImageDataset`` whose random augmentation is a function of ``(seed, epoch, index)``
    (and of the copy, for an image drawn twice in an epoch by repeat factors).

    Each sample's transform runs with torch's generator seeded from those
    three, so augmentation does not depend on worker processes, their
    number, or a resume; the caller's generator is left as it was.
    """

    def __init__(
        self, images: ImageDataset, seed: int, epoch_transforms: Sequence[Any] | None = None
    ) -> None:
        self.images, self.seed, self.epoch_transforms = images, seed, epoch_transforms
        self.collate = images.collate

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, ...]):
        epoch, index, *copy = key  # (epoch, index) or, drawn by repeat factors, (epoch, index, copy)
        # the default CPU generator only: torch.manual_seed also seeds every accelerator (150 µs a call)
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index, *copy))
        if self.epoch_transforms:
            self.images.transform = for_epoch(self.epoch_transforms, epoch)
        try:
            return self.images[index]
        finally:
            generator.set_state(state)


class SeededTransform:
    """A training transform run with torch's generator seeded from ``(seed, epoch, index)``, as
    ``SeededSamples`` runs it for files: the augmentation of streamed samples follows the same rule."""

    def __init__(self, transform: Any, seed: int, epoch_transforms: Sequence[Any] | None = None) -> None:
        self.transform, self.seed, self.epoch_transforms = transform, seed, epoch_transforms

    def __call__(self, image: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        transform = for_epoch(self.epoch_transforms, epoch) if self.epoch_transforms else self.transform
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return transform(image)
        finally:
            generator.set_state(state)


def for_epoch(transforms: Sequence[Any], epoch: int) -> Any:
    """The transform of ``epoch``; epochs past the list (a resume with more epochs) take the last."""
    return transforms[min(epoch, len(transforms) - 1)]


def training_sizes(config: TrainConfig, size: tuple[int, int]) -> list[tuple[int, int]] | None:
    """Each epoch's input size under ``config.progressive_resize``, or None when it is off."""
    if not config.progressive_resize:
        return None
    return progressive_sizes(size, config.progressive_resize, config.max_epochs)


def progressive_sizes(size: tuple[int, int], start: float, epochs: int) -> list[tuple[int, int]]:
    """Each epoch's input size: from ``start`` x ``size`` in the first epoch, linearly, to ``size`` in the
    last (EfficientNetV2's progressive learning, without its regularisation schedule), in steps of
    ``SIZE_STEP`` pixels."""
    full = (int(size[0]), int(size[1]))
    growing = [start + (1.0 - start) * e / (epochs - 1) for e in range(epochs - 1)] if epochs > 1 else []
    return [(stepped(f * full[0], full[0]), stepped(f * full[1], full[1])) for f in growing] + [full]


def stepped(side: float, full: int) -> int:
    """``side`` rounded to a multiple of ``SIZE_STEP``: at least one step, at most ``full``."""
    return min(full, max(SIZE_STEP, round(side / SIZE_STEP) * SIZE_STEP))


def streamed_loader(
    shards: Shards, sample: Any, *, seed: int, epoch: Callable[[], int] | None = None, **options: Any
) -> DataLoader:
    """litdata's resumable loader over a split of shards, each item made a sample by ``sample(item, epoch)``.

    Shuffled chunk-wise by ``seed`` and the epoch. Over several processes
    (torch.distributed), litdata's ``drop_last`` gives every process as many
    batches, leaving out the few samples of an epoch that do not fill the last
    round: a split whose size is a multiple of processes x workers x batch
    size is seen exactly once per epoch. In one process, every sample is.
    ``epoch()`` names the epoch (from 0) each iteration plays: Lightning's,
    so that a resumed run streams the batches of the uninterrupted one.
    """
    require("stream", "training from shards")
    from mlic.data.streaming import StreamedSamples, stream_loader

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    several = distributed and torch.distributed.get_world_size() > 1
    if not several:
        dataset = StreamedSamples(shards.url, sample, seed=seed, shuffle=True, drop_last=False)
        return stream_loader(dataset, epoch=epoch, **options)
    # Each machine's first process fetches the index into litdata's cache before the others read it:
    # litdata 0.2.76 waits 1 s for another process's download of index.json, then fails without it.
    first = int(os.environ.get("LOCAL_RANK", torch.distributed.get_rank())) == 0
    if not first:
        torch.distributed.barrier()
    dataset = StreamedSamples(shards.url, sample, seed=seed, shuffle=True, drop_last=True)
    if first:
        torch.distributed.barrier()
    return stream_loader(dataset, epoch=epoch, **options)


def sample_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """A 64-bit seed for one sample (its ``copy``-th in the epoch): a hash, so that nearby keys give
    unrelated streams. The first copy's seed is the one of runs without repeat factors."""
    key = f"{seed},{epoch},{index}" + (f",{copy}" if copy else "")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


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


def load_splits(config: TrainConfig) -> tuple[Manifest | Shards, Manifest]:
    """Training and validation data, with every image file checked before training starts.

    With ``config.hide_positives``, a share of both sets' positives is hidden
    (``Manifest.hide_positives``), as a study of incompletely labelled data.
    Shard data gives the training split as ``Shards`` (``shard_splits``).
    """
    if config.hidden_as not in HIDDEN_AS:
        raise ConfigError(f"hidden_as must be one of {list(HIDDEN_AS)}, not {config.hidden_as!r}")
    if not is_demo(config) and (is_remote(config.data) or is_shards(config.data)):
        if config.hide_positives:
            raise ConfigError(f"{config.data}: hiding positives applies to files, not to streamed shards")
        return shard_splits(config)
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
    options = source_options(config)
    train = load_data(config.data, **options)
    if not config.val_data:
        check_files(train)
        return validation_split(train, config.val_fraction, config.seed)
    val = load_data(config.val_data, schema=train.schema, **options)
    check_files(train, val)
    return train, val


def shard_splits(config: TrainConfig) -> tuple[Shards, Manifest]:
    """The training split of a pack, and validation: ``--val`` if given, else the pack's ``val`` split.

    ``--data DEST`` trains on DEST's ``train`` split (or its only one);
    ``DEST/<split>`` on that split. A pack is split when it is written
    (``mlic data pack --val-fraction``), so ``--val-fraction`` does not apply.
    """
    found = locate(config.data)
    if found is None:
        raise DataError(f"{config.data}: not a pack of mlic data (no mlic-shards.json); see mlic data pack")
    base, name = found
    pack = ShardSet.open(base)
    if name is None:
        train = pack.split("train") if "train" in pack.splits else pack.only_split()
    else:
        train = pack.split(name)
    if config.val_data:
        val = load_data(config.val_data, schema=train.schema, **source_options(config))
        check_files(val)
        return train, val
    if name is None and "val" in pack.splits:
        return train, pack.split("val").manifest()
    raise ConfigError(
        f"{config.data}: no validation split to use; pack it with --val-fraction, or pass --val"
    )


def source_options(config: TrainConfig) -> dict[str, Any]:
    """The options of ``config`` that say how to read data files (``load_data``)."""
    return {
        "format": config.format,
        "images_root": config.images_root,
        "tag_separator": config.tag_separator,
        "drop_unannotated": config.drop_unannotated,
    }


def validation_split(manifest: Manifest, fraction: float, seed: int) -> tuple[Manifest, Manifest]:
    """Train and validation parts, ``fraction`` of the images for validation; seeded iterative stratification.

    Stratified (``mlic.data.split.stratified_split``) so that rare labels and
    attribute classes reach validation in proportion, where thresholds are chosen.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {fraction}")
    splits = stratified_split(manifest, {"train": 1.0 - fraction, "val": fraction}, seed)
    return splits["train"], splits["val"]


def training_repeats(config: TrainConfig, train: Manifest | Shards) -> np.ndarray | None:
    """The training images' repeat factors under ``config.repeat_threshold``, or None when it is 0."""
    if not config.repeat_threshold:
        return None
    if isinstance(train, Shards):
        raise ConfigError(f"{config.data}: --repeat-threshold draws from image files, not streamed shards")
    return repeat_factors(train.label_lists, config.repeat_threshold)


def image_cache(
    config: TrainConfig, manifest: Manifest | Shards, pre: Preprocessing, workers: int
) -> ImageCache | None:
    """The training images decoded into memory, where ``cache_images`` asks for it and they are files.

    ``cache_images=None`` (auto) caches them where training runs in one
    process and the decoded images fit in ``AUTO_CACHE_SHARE`` of the memory
    available; decoding large photos every epoch would otherwise take CPU time
    from training.
    """
    if config.cache_images is False or not isinstance(manifest, Manifest) or manifest.pixels is not None:
        return None
    auto = config.cache_images is None
    if auto and (str(config.devices) != "1" or config.num_nodes != 1):
        return None
    max_bytes = int(AUTO_CACHE_SHARE * available_memory()) if auto else None
    try:
        cache = build_cache(
            manifest, pre, num_workers=workers, max_pixels=config.max_image_pixels, max_bytes=max_bytes
        )
    except ConfigError:
        if not auto:
            raise
        return None  # too large for the automatic share: read the files each epoch
    if cache.errors and config.bad_images == "fail":
        raise DataError(cache.errors[min(cache.errors)])
    return cache
