"""Tests of mlic.training.datamodule: stratified seeded splits, hidden positives, a resumable seeded order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import write_png_split
from mlic.data import multidigits
from mlic.data.images import ImageDataset, Preprocessing, build_transform
from mlic.data.shards import Shards
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError
from mlic.training import TrainConfig, validation_split
from mlic.training.datamodule import (
    DataModule,
    SeededSamples,
    SeededTransform,
    TrainLoader,
    TrainSampler,
    copy_numbers,
    progressive_sizes,
    repeat_factors,
    training_repeats,
    training_sizes,
)


def test_validation_split_is_stratified_seeded_disjoint_and_complete():
    m = multidigits("val", 50)
    train_part, val_part = validation_split(m, 0.2, seed=3)
    again, _ = validation_split(m, 0.2, seed=3)
    assert 8 <= len(val_part) <= 12 and len(train_part) + len(val_part) == 50
    assert set(train_part.paths).isdisjoint(val_part.paths)
    assert train_part.paths == again.paths
    assert val_part.meta["split"]["name"] == "val"  # made by mlic.data.split.stratified_split
    with pytest.raises(ConfigError, match="val_fraction"):
        validation_split(m, 1.0, seed=0)
    with pytest.raises(ConfigError, match="cannot fill"):
        validation_split(m.subset([0]), 0.2, seed=0)


def test_training_without_val_data_splits_it_off_stratified(digit_files):
    from mlic.training import load_splits

    config = TrainConfig(data=str(digit_files["root"] / "data.jsonl"), val_fraction=0.25, seed=2)
    train_part, val_part = load_splits(config)
    assert len(train_part) + len(val_part) == 48 and val_part.meta["split"]["seed"] == 2
    share = (val_part.labels == 1).sum(0) / ((train_part.labels == 1).sum(0) + (val_part.labels == 1).sum(0))
    assert np.abs(share - 0.25).max() < 0.15


def test_hidden_positives_reach_both_splits_and_the_loss_summary():
    from mlic.training import load_splits, loss_summary

    config = TrainConfig(demo_train=300, demo_val=100, hide_positives=0.5, hidden_as="unknown")
    full_train, full_val = load_splits(TrainConfig(demo_train=300, demo_val=100))
    train_set, val_set = load_splits(config)
    for full, hidden in ((full_train, train_set), (full_val, val_set)):
        positives = (full.labels == 1).sum()
        assert (hidden.labels == 1).sum() == positives - round(0.5 * positives)
        assert (hidden.labels == -1).sum() == round(0.5 * positives)
    assert loss_summary(config)["hidden_positives"] == {"fraction": 0.5, "as": "unknown"}
    assert "hidden_positives" not in loss_summary(TrainConfig())


def test_train_sampler_order_is_a_function_of_seed_and_epoch_and_shards_cover_the_data():
    a, b = TrainSampler(10, seed=4), TrainSampler(10, seed=4)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b) and {epoch for epoch, _ in a} == {3}
    assert sorted(index for _, index in a) == list(range(10))
    b.set_epoch(4)
    assert [i for _, i in a] != [i for _, i in b]
    shards = [TrainSampler(10, seed=4, world=3, rank=r) for r in range(3)]
    assert all(len(s) == 4 and len(list(s)) == 4 for s in shards)  # padded to equal shares
    assert {i for s in shards for _, i in s} == set(range(10))


def test_train_sampler_skip_resumes_the_same_order():
    sampler = TrainSampler(10, seed=4)
    whole = list(sampler)
    sampler.skip = 6
    assert list(sampler) == whole[6:]
    assert list(sampler) == whole


def test_repeat_factors_follow_each_images_rarest_present_label():
    # label 0 on 50 of 100 images, label 1 on 4, label 2 on 1; unknowns and absent labels do not count
    targets = np.zeros((100, 3), dtype=np.int8)
    targets[:50, 0] = 1
    targets[[0, 60, 61, 62], 1] = 1
    targets[70, 2] = 1
    targets[80:, 2] = -1
    factors = repeat_factors(LabelLists.from_dense(targets), threshold=0.16)
    assert factors[0] == factors[60] == pytest.approx(2.0)  # sqrt(0.16 / 0.04): its rarer label decides
    assert factors[70] == pytest.approx(4.0)  # sqrt(0.16 / 0.01)
    assert factors[1] == 1.0 and factors[99] == 1.0  # frequent label (sqrt(0.32) < 1), no present label
    unknown_fill = LabelLists.from_dense(targets, fill=-1)
    assert np.array_equal(repeat_factors(unknown_fill, 0.16), factors)


def test_repeat_factor_sampler_draws_rare_images_more_in_epochs_of_the_same_length():
    repeats = np.ones(100)
    repeats[:10] = 3.5  # ten rare-label images
    sampler = TrainSampler(100, seed=0, repeats=repeats)
    drawn = np.zeros(100)
    for epoch in range(200):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert len(keys) == 100 and {k[0] for k in keys} == {epoch}
        for _, index, copy in keys:
            drawn[index] += 1
            assert copy < 4
    rare, frequent = drawn[:10].mean() / 200, drawn[10:].mean() / 200
    assert rare / frequent == pytest.approx(3.5, rel=0.1)  # 3.5 copies listed against 1
    assert drawn.min() > 0  # frequent images are drawn less, never dropped for good
    again = TrainSampler(100, seed=0, repeats=repeats)
    again.set_epoch(199)
    assert list(again) == keys  # a function of the seed and the epoch: resumes exactly
    again.skip = 30
    assert list(again) == keys[30:]


def test_a_repeated_images_copies_are_numbered_and_augmented_apart(augmented):
    assert copy_numbers([5, 7, 5, 5, 7]) == [0, 0, 1, 2, 1]
    samples = SeededSamples(augmented, seed=1)
    assert torch.equal(samples[(2, 5, 0)][0], samples[(2, 5)][0])  # the first copy: as without repeats
    assert not torch.equal(samples[(2, 5, 1)][0], samples[(2, 5)][0])


def test_repeat_threshold_is_checked_and_refused_for_streamed_shards(tmp_path):
    assert training_repeats(TrainConfig(), multidigits("val", 20)) is None
    factors = training_repeats(TrainConfig(repeat_threshold=0.5), multidigits("val", 20))
    assert factors.shape == (20,) and factors.min() >= 1.0
    with pytest.raises(ConfigError, match="repeat_threshold"):
        TrainConfig(repeat_threshold=1.5)
    with pytest.raises(ConfigError, match="streamed shards"):
        training_repeats(TrainConfig(data="pack", repeat_threshold=0.1), object.__new__(Shards))


def test_progressive_sizes_grow_linearly_to_the_input_size_in_steps_of_16():
    assert progressive_sizes((160, 160), 0.6, 6) == [(96, 96), (112, 112), (128, 128), (128, 128),
                                                    (144, 144), (160, 160)]  # fmt: skip
    assert progressive_sizes((224, 160), 0.5, 3)[0] == (112, 80)
    assert progressive_sizes((64, 64), 0.5, 1) == [(64, 64)]  # one epoch: the input size
    assert progressive_sizes((232, 250), 0.9, 2) == [(208, 224), (232, 250)]  # the last epoch: exactly it
    assert training_sizes(TrainConfig(), (160, 160)) is None
    assert training_sizes(TrainConfig(progressive_resize=0.5, max_epochs=2), (64, 64)) == [(32, 32), (64, 64)]
    with pytest.raises(ConfigError, match="progressive_resize"):
        TrainConfig(progressive_resize=0.05)


def test_progressive_resizing_trains_each_epoch_at_its_size_and_validates_at_the_input_size():
    train_part, val_part = multidigits("train", 8), multidigits("val", 4)
    sizes = [(32, 32), (48, 48), (64, 64)]
    data = DataModule(train_part, val_part, Preprocessing(image_size=(64, 64)), batch_size=4, num_workers=0,
                      augment="light", sizes=sizes)  # fmt: skip
    loader = data.train_dataloader()
    for epoch, size in [(0, 32), (2, 64), (1, 48), (5, 64)]:  # past the schedule: the last size
        loader.sampler.set_epoch(epoch)
        assert {tuple(images.shape[-2:]) for images, _, _ in loader} == {(size, size)}
    assert {tuple(images.shape[-2:]) for images, _, _ in data.val_dataloader()} == {(64, 64)}
    streamed = SeededTransform(data.train_transform, 0, data.epoch_transforms)  # shards: the same sizes
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    assert [streamed(image, epoch, 0).shape[-1] for epoch in (0, 1, 2, 3)] == [32, 48, 64, 64]
    assert SeededTransform(data.train_transform, 0)(image, 0, 0).shape[-1] == 64


@pytest.fixture(scope="module")
def augmented() -> ImageDataset:
    m = multidigits("val", 40, seed=0)
    transform = build_transform(Preprocessing(image_size=(32, 32)), train=True, augment="light")
    return ImageDataset(m, transform)


def batches(loader) -> list[torch.Tensor]:
    return [images for images, _, _ in loader]


def test_augmentation_does_not_depend_on_workers_or_the_callers_generator(augmented):
    def loader(workers: int) -> TrainLoader:
        return TrainLoader(
            SeededSamples(augmented, seed=1),
            sampler=TrainSampler(len(augmented), seed=1),
            batch_size=8,
            collate_fn=augmented.collate,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),  # as DataModule's: the global one is not drawn from
        )

    torch.manual_seed(0)
    before = torch.get_rng_state()
    alone = batches(loader(0))
    assert torch.equal(before, torch.get_rng_state())  # the caller's generator was left as it was
    torch.manual_seed(123)
    in_workers = batches(loader(2))
    assert all(torch.equal(x, y) for x, y in zip(alone, in_workers, strict=True))
    again = SeededSamples(augmented, seed=1)
    assert not torch.equal(again[(0, 5)][0], again[(1, 5)][0])  # another epoch, another crop


def test_train_loader_state_resumes_at_the_next_batch(augmented):
    def loader() -> TrainLoader:
        return TrainLoader(
            SeededSamples(augmented, seed=1),
            sampler=TrainSampler(len(augmented), seed=1),
            batch_size=8,
            collate_fn=augmented.collate,
        )

    whole = loader()
    whole.sampler.set_epoch(2)
    expected = batches(whole)
    interrupted = loader()
    interrupted.sampler.set_epoch(2)
    iterator = iter(interrupted)
    next(iterator), next(iterator)
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    resumed = loader()  # a new process: the sampler's epoch and position come from the state
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == 3 and all(torch.equal(x, y) for x, y in zip(rest, expected[2:]))
    assert resumed.state_dict() == {"epoch": 2, "batches": 5}
    assert len(batches(resumed)) == 5  # the next iteration is a whole epoch again


def test_a_loader_state_of_another_epoch_is_not_applied(augmented):
    loader = TrainLoader(
        SeededSamples(augmented, seed=1),
        sampler=TrainSampler(len(augmented), seed=1),
        batch_size=8,
        collate_fn=augmented.collate,
    )
    loader.load_state_dict({"epoch": 0, "batches": 5})  # an epoch that had ended
    loader.sampler.set_epoch(1)
    assert len(batches(loader)) == 5


@pytest.mark.parametrize(
    ("cache_images", "devices", "memory", "cached"),
    [(None, "1", 1 << 34, True), (None, "2", 1 << 34, False), (None, "1", 1000, False),
     (False, "1", 1 << 34, False), (True, "1", 1 << 34, True)],
)  # fmt: skip
def test_the_image_cache_is_automatic_where_it_fits_in_one_process(
    tmp_path, monkeypatch, cache_images, devices, memory, cached
):
    import mlic.training.datamodule as datamodule
    from mlic.data import load_data
    from mlic.data.images import Preprocessing

    manifest = load_data(write_png_split(tmp_path, "train", 6))
    monkeypatch.setattr(datamodule, "available_memory", lambda: memory)
    config = TrainConfig(data=str(tmp_path / "train.csv"), cache_images=cache_images, devices=devices)
    cache = datamodule.image_cache(config, manifest, Preprocessing(image_size=(32, 32)), workers=0)
    assert (cache is not None) == cached
    if cached:
        assert cache.nbytes > 0 and not cache.errors


# -- streamed shards ------------------------------------------------------------------------------------
def test_streamed_samples_are_augmented_as_file_samples_are(augmented, tmp_path):
    """The same (seed, epoch, index) gives the same crop whether the image came from a file or a shard."""
    pytest.importorskip("litdata")
    from mlic.data.images import Decoding
    from mlic.data.pack import pack
    from mlic.data.shards import ShardSet, StreamedSample

    pack(
        "demo", tmp_path / "p", demo_train=4, demo_val=40, seed=0
    )  # val 40 at seed 0: ``augmented``'s images
    shards = ShardSet.open(tmp_path / "p").split("val")
    sample = StreamedSample(shards.url, Decoding(), SeededTransform(augmented.transform, seed=1))
    files = SeededSamples(augmented, seed=1)
    split = shards.manifest()  # the split as data: its 6th image and targets make the streamed item
    indices, values = split.label_lists.row(5)
    raw = {"index": 5, "image": split.pixels[5].read(), "labels": indices, "values": values,
           "attributes": split.attributes[5]}  # fmt: skip
    for epoch in (0, 1):
        streamed, expected = sample(raw, epoch), files[(epoch, 5)]
        assert torch.equal(streamed[0], expected[0])
        assert torch.equal(streamed[1][0], expected[1][0]) and torch.equal(streamed[2], expected[2])
    assert not torch.equal(sample(raw, 0)[0], sample(raw, 1)[0])


DDP_SCRIPT = """
import json, os, sys, time
import torch.distributed as dist
from litdata.streaming.downloader import S3Downloader
from mlic.data.shards import ShardSet
from mlic.training.datamodule import streamed_loader

def index_and_epoch(item, epoch):
    return int(item["index"]), epoch

publish = S3Downloader._publish_file
def slow_publish(self, tmp_path, local_path):  # a slow index download: another process waits 1 s only
    time.sleep(3 if local_path.endswith("index.json") else 0)
    publish(self, tmp_path, local_path)
S3Downloader._publish_file = slow_publish

dist.init_process_group("gloo")
shards = ShardSet.open(sys.argv[1]).split("train")
loader = streamed_loader(shards, index_and_epoch, seed=7, batch_size=8, num_workers=2, collate_fn=list)
epochs = [[[i for i, _ in batch] for batch in loader] for _ in range(2)]
epoch_seen = sorted({e for batch in loader for _, e in batch})
with open(sys.argv[2], "w") as f:
    json.dump({"epochs": epochs, "third": epoch_seen, "length": len(loader)}, f)
dist.destroy_process_group()
"""


def test_two_process_ddp_from_s3_streams_every_sample_once_per_epoch(tmp_path, s3_bucket):
    """Two gloo processes stream the training split from the S3 server: the ranks' samples of an epoch are
    the split exactly, as many batches each, reshuffled every epoch (128 = 2 ranks x 2 workers x 8 x 4).
    The index takes 3 s to download, which the second process must wait for."""
    import json
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("litdata")
    from mlic.data.pack import pack

    data = f"{s3_bucket}/digits"
    pack("demo", data, demo_train=128, demo_val=8, chunk_bytes=20_000)  # several chunks to share out
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    script = [sys.executable, str(tmp_path / "ddp.py"), data]
    ranks = [
        subprocess.Popen(
            [*script, str(tmp_path / f"{r}.json")], env={**env, "RANK": str(r)}, stderr=subprocess.PIPE
        )
        for r in range(2)
    ]
    for process in ranks:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:].decode()
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    for epoch in range(2):
        per_rank = [[i for batch in s["epochs"][epoch] for i in batch] for s in seen]
        assert sorted(per_rank[0] + per_rank[1]) == list(range(128))  # each sample exactly once
        assert len(seen[0]["epochs"][epoch]) == len(seen[1]["epochs"][epoch]) == seen[0]["length"] == 8
    assert seen[0]["epochs"][0] != seen[0]["epochs"][1]  # reshuffled
    assert seen[0]["third"] == [2]  # the epoch that samples are told counts from 0
