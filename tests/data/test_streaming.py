"""Tests of mlic.data.streaming: litdata's loader resumed the way Lightning resumes it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip("litdata", reason="streaming needs the stream extra")

from mlic.data.pack import pack
from mlic.data.streaming import StreamedSamples, stream_loader

BATCH = 8


def index_and_epoch(item: dict, epoch: int) -> tuple[int, int]:
    return int(item["index"]), epoch


@pytest.fixture(scope="module")
def train_split(tmp_path_factory) -> str:
    """48 MultiDigits images in several chunks: 2 workers x 3 batches of 8 each per epoch."""
    folder = tmp_path_factory.mktemp("pack") / "p"
    pack("demo", folder, demo_train=48, demo_val=8, chunk_bytes=8_000)
    return str(folder / "train")


class Epochs:
    """Lightning's side of the loader: an epoch counter, and ``len(loader)`` batches taken per epoch.

    Lightning stops asking for batches once it has an epoch's ``len(loader)``,
    leaving the loader's iteration open, and saves ``state_dict`` between batches.
    """

    def __init__(self, url: str) -> None:
        self.now = 0
        self.loader = stream_loader(StreamedSamples(url, index_and_epoch, seed=3), epoch=lambda: self.now,
                                    batch_size=BATCH, num_workers=2, collate_fn=list)  # fmt: skip

    def play(self, epoch: int, skip: int = 0, on_batch: Callable[[int], None] | None = None) -> list[list]:
        """The batches of ``epoch`` after the first ``skip``, which a resumed epoch has trained on."""
        self.now = epoch
        batches, iterator = [], iter(self.loader)
        for k in range(skip, len(self.loader)):
            batches.append(next(iterator))
            if on_batch:
                on_batch(k)
        return batches


def test_a_fresh_loader_streams_each_sample_once_per_epoch_reshuffled_and_told_the_epoch(train_split):
    run = Epochs(train_split)
    epochs = [run.play(e) for e in range(3)]
    for e, batches in enumerate(epochs):
        assert sorted(i for batch in batches for i, _ in batch) == list(range(48))
        assert {epoch for batch in batches for _, epoch in batch} == {e}
    assert epochs[0] != epochs[1] != epochs[2]


@pytest.mark.parametrize("after", [0, 2, 4])
def test_resumed_mid_epoch_the_loader_streams_the_uninterrupted_batches_in_that_epoch_and_the_next(
    train_split, after
):
    """litdata 0.2.76 alone replays an empty epoch after the resumed one (its restore flag stays set)."""
    whole, saved = Epochs(train_split), {}
    first = whole.play(0, on_batch=lambda k: saved.setdefault(k, whole.loader.state_dict()))
    uninterrupted = [first, whole.play(1), whole.play(2)]

    resumed = Epochs(train_split)
    resumed.loader.load_state_dict(saved[after])
    rest = [resumed.play(0, skip=after + 1), resumed.play(1), resumed.play(2)]
    assert rest == [uninterrupted[0][after + 1 :], *uninterrupted[1:]]


def test_resumed_at_an_epoch_end_the_loader_streams_the_next_epoch_not_the_first_again(train_split):
    """Lightning gives the loader no state at an epoch's end: the epoch it names must be enough."""
    whole = Epochs(train_split)
    uninterrupted = [whole.play(e) for e in range(3)]
    resumed = Epochs(train_split)  # a new process, resumed after epoch 0's checkpoint
    assert [resumed.play(1), resumed.play(2)] == uninterrupted[1:]
