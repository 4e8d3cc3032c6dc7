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


def stream_loader(dataset: StreamedSamples, **options: Any) -> StreamingDataLoader:
    """litdata's loader over ``dataset``: resumable mid-epoch by its ``state_dict``, which Lightning saves."""
    return StreamingDataLoader(dataset, **options)


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
