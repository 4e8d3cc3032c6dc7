"""litdata underneath the shards: writing chunks, streaming them in order or shuffled, reading one item.

This module imports litdata, so nothing imports it at start-up: ``mlic.data.shards``
and the training data module import it when shard data is used (the ``stream``
extra). litdata chunks hold one item per image, a dict of the encoded image
bytes, the sample's index in its split, its label list and attribute targets
(see ``mlic.data.shards``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # never ask PyPI for a newer litdata

import litdata.streaming.downloader as litdata_downloader
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.writer import BinaryWriter

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where boto3 (and so litdata) is told of an S3-compatible server other than AWS."""


def plain_http_endpoint() -> bool:
    """Whether the S3 endpoint is plain ``http://`` (a local S3-compatible server, as in the tests)."""
    return any(os.environ.get(name, "").startswith("http://") for name in ENDPOINT_VARIABLES)


def prefer_sdk_downloads() -> None:
    """Download chunks through boto3 where the endpoint is plain HTTP.

    litdata fetches chunks with obstore where it is installed; obstore's client
    refuses ``http://`` endpoints unless litdata passes ``allow_http``, which it
    does not, and no environment variable changes that. Its boto3 path honours
    ``AWS_ENDPOINT_URL`` as it is. This turns obstore off for this process (and
    the loader workers it forks) only then; HTTPS endpoints keep obstore.
    """
    if plain_http_endpoint():
        litdata_downloader._OBSTORE_AVAILABLE = False


def write_items(
    folder: str, items: Iterable[dict], *, chunk_bytes: int, on_chunk: Callable[[str], None]
) -> int:
    """Write ``items`` (in order, each item's index is its position) as litdata chunks in ``folder``.

    ``on_chunk(path)`` is called for each file as soon as it is complete, the
    chunks first and ``index.json`` last (to upload it, for example), so that a
    pack never holds more than one chunk in memory. Returns the number of items.
    """
    writer = BinaryWriter(folder, chunk_bytes=chunk_bytes)
    n = 0
    for n, item in enumerate(items, 1):
        written = writer.add_item(n - 1, item)
        if written:
            on_chunk(written)
    for path in writer.done():
        on_chunk(path)
    writer.merge()
    for name in os.listdir(folder):
        if name.endswith(".index.json"):  # the writer's own index, merged into index.json
            os.remove(os.path.join(folder, name))
    on_chunk(os.path.join(folder, "index.json"))
    return n


class StreamedSamples(StreamingDataset):
    """A split's items streamed by litdata, each made a training sample by ``sample(item, epoch)``.

    litdata shards the items over processes and loader workers, shuffles them
    chunk-wise by ``seed`` and the epoch, and records its position for a resume
    (``StreamingDataLoader.state_dict``). ``epoch`` counts from 0, as Lightning's does.
    """

    def __init__(
        self,
        url: str,
        sample: Callable[[dict, int], Any],
        *,
        seed: int,
        shuffle: bool = True,
        drop_last: bool | None = None,
    ) -> None:
        prefer_sdk_downloads()
        super().__init__(url, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.sample = sample

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        if isinstance(index, slice | str):
            return item
        return self.sample(item, self.current_epoch - 1)  # litdata counts epochs from 1


def stream_loader(
    dataset: StreamedSamples, *, epoch: Callable[[], int] | None = None, **options: Any
) -> StreamLoader:
    """litdata's loader over ``dataset``: resumable mid-epoch by its ``state_dict``, which Lightning saves.

    ``epoch()`` (from 0) names the epoch each iteration plays, as Lightning's
    ``current_epoch`` does; without it, iterations count the epochs from 0.
    """
    return StreamLoader(dataset, epoch=epoch, **options)


class StreamLoader(StreamingDataLoader):
    """litdata's ``StreamingDataLoader``, made to resume as Lightning resumes (litdata 0.2.76).

    Two things in litdata's loader go wrong under Lightning, and a resumed run
    then trains on other batches than the uninterrupted one:

    - Lightning stops taking batches once it has the epoch's ``len(loader)``,
      so litdata's iteration never ends and its ``restore`` flag, set by
      ``load_state_dict``, stays set: the epoch after a mid-epoch resume
      replays the finished state, an empty epoch, and the run loses one.
      Here the loaded state is used by the first iteration only.
    - A run resumed from an end-of-epoch checkpoint gets no loader state
      from Lightning (nothing to resume mid-epoch), so litdata counts its
      epochs from 1 again and replays the first epoch's order. Here each
      iteration plays the epoch ``epoch()`` names.
    """

    def __init__(self, dataset: StreamedSamples, *, epoch: Callable[[], int] | None = None, **options: Any):
        super().__init__(dataset, **options)
        self.epoch = epoch
        self._resumed_iteration_begun = False

    def __iter__(self) -> Any:
        # a generator: the epoch is read at the first batch, after Lightning has set its own
        if self.restore and self._resumed_iteration_begun:
            self.restore = False  # the loaded state was played by an earlier iteration
        playing = self.current_epoch + (0 if self.restore else 1) - 1  # from 0; litdata counts from 1
        if self.epoch is not None and self.epoch() != playing:
            self.restore = False  # the loaded state is of another epoch than the one to play
            self.current_epoch = self.epoch()  # litdata's iteration adds the 1 it counts from
        self._resumed_iteration_begun = self.restore
        yield from super().__iter__()

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._resumed_iteration_begun = False


class ItemReader:
    """Items of a split by index, in any process: the litdata dataset is opened on first use, per process.

    Reads go through a slice, which makes litdata fetch and keep whole chunks:
    read one by one, items are fetched by byte range, which came back empty
    from litdata's PyTree chunks on an S3-compatible server.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._dataset: StreamingDataset | None = None
        self._pid = 0

    def __getitem__(self, index: int) -> dict:
        if self._dataset is None or self._pid != os.getpid():  # a forked worker opens its own
            prefer_sdk_downloads()
            self._dataset, self._pid = StreamingDataset(self.url), os.getpid()
        return self._dataset[index : index + 1][0]

    def __getstate__(self) -> dict:
        return {"url": self.url, "_dataset": None, "_pid": 0}
