"""Tests of mlic.training.datamodule: stratified seeded splits, hidden positives, a resumable seeded order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import write_png_split
from mlic.data import multidigits
from mlic.data.images import ImageDataset, Preprocessing, build_transform
from mlic.errors import ConfigError
from mlic.training import TrainConfig, validation_split
from mlic.training.datamodule import SeededSamples, TrainLoader, TrainSampler


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
    from mlic.training.datamodule import SeededTransform

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
import json, os, sys
import torch.distributed as dist
from mlic.data.shards import ShardSet
from mlic.training.datamodule import streamed_loader

def index_and_epoch(item, epoch):
    return int(item["index"]), epoch

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
    the split exactly, as many batches each, reshuffled every epoch (128 = 2 ranks x 2 workers x 8 x 4)."""
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
