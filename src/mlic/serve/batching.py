"""Batching for ``mlic serve``: the images of concurrent requests go through the model in one forward pass.

A request announces itself as it comes in (``Batcher.arriving``), reads and
decodes its uploads on its own (in the server's thread pool), then hands the
decoded images to the ``Batcher`` and waits. The batcher's one model thread
takes the oldest pending request and gathers the ones behind it until they
hold ``max_batch`` images, or ``max_wait_ms`` has passed since the oldest was
handed in, or no other request is on its way; it runs one ``Predictor.run``
over all their images and gives each request back the records of its own
rows, decided by its own ``top_k`` or ``threshold`` (``Predictor.records``;
decisions are row by row, so requests with different rules share a pass).

Waiting only while others are on their way keeps a lone client's latency what
it is without batching (nothing can join, so nothing is waited for), while
concurrent clients fill batches. When the model is busy, requests queue up
meanwhile, so under load a batch fills without waiting at all. A request is
never split: one with more images than ``max_batch`` goes alone, and a request
that would take a batch past ``max_batch`` waits for the next one.
An error that belongs to one request (its decision rule) fails that request
alone; a failure of the forward pass fails every request of that batch, and
the thread goes on with the next.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from mlic.errors import ConfigError
from mlic.inference import Outputs
from mlic.predict import Predictor

DEFAULT_MAX_BATCH = 32
"""Images per forward pass at most (all requests together); 1 turns batching off."""
DEFAULT_MAX_WAIT_MS = 5.0
"""How long the oldest pending request waits for others to join its batch."""


@dataclass(frozen=True)
class Batching:
    """How requests share forward passes: at most ``max_batch`` images, gathered for ``max_wait_ms``.

    ``max_batch=1`` turns batching off: each request is decoded and predicted
    on its own, one request at a time, as a server without batching does.
    """

    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS

    def __post_init__(self) -> None:
        batch, wait = self.max_batch, self.max_wait_ms
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"max_batch must be a positive integer (1: no batching), got {batch!r}")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 10_000:
            raise ConfigError(f"max_wait_ms must be a number of milliseconds in [0, 10000], got {wait!r}")

    @property
    def enabled(self) -> bool:
        """Whether requests are gathered into shared forward passes."""
        return self.max_batch > 1


@dataclass
class _Request:
    """One request's decoded images, its decision rule, and the future its records go to."""

    images: list[torch.Tensor]
    top_k: int | None
    threshold: float | None
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """One model thread that runs the images of pending requests together (see the module docstring).

    ``submit`` is called from any thread and returns at once with a future of
    the request's records. The thread starts with the first request and stops
    at ``close`` (when the server shuts down); a request after that starts a
    new one, as an app whose lifespan runs twice needs.
    """

    def __init__(self, predictor: Predictor, batching: Batching) -> None:
        self.predictor, self.batching = predictor, batching
        self._pending: deque[_Request] = deque()
        self._images = 0  # images in self._pending
        self._coming = 0  # requests inside ``arriving`` (reading or decoding their uploads)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the running thread's

    def submit(
        self, images: list[torch.Tensor], top_k: int | None = None, threshold: float | None = None
    ) -> Future:
        """A future of ``Predictor.predict``'s records for ``images`` (paths None), in their order."""
        request = _Request(list(images), top_k, threshold)
        with self._changed:
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._serve, args=(self._stop,), daemon=True)
                self._thread.name = "mlic-batcher"
                self._thread.start()
            self._pending.append(request)
            self._images += len(request.images)
            self._changed.notify_all()
        return request.future

    @property
    def pending(self) -> int:
        """Images handed in and not yet taken into a forward pass."""
        with self._changed:
            return self._images

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """While open, one more request is on its way: a batch waits for it, up to ``max_wait_ms``.

        Open it when a request comes in and ``submit`` inside it (a request
        refused before it submits simply leaves); while it is open after the
        submit, the batch waits on, so close it right after.
        """
        with self._changed:
            self._coming += 1
        try:
            yield
        finally:
            with self._changed:
                self._coming -= 1
                self._changed.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the model thread once the requests already handed in are answered."""
        with self._changed:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._changed.notify_all()
        if thread is not None:
            thread.join(timeout)

    def _serve(self, stop: threading.Event) -> None:
        while (batch := self._gather(stop)) is not None:
            self._run(batch)

    def _gather(self, stop: threading.Event) -> list[_Request] | None:
        """The next batch: wait for a request, then for others until the batch is full or the wait is over.

        The wait also ends when no request is ``arriving``. None once ``stop`` is
        set and nothing is pending; until then, pending requests go without waiting.
        """
        max_batch, wait = self.batching.max_batch, self.batching.max_wait_ms / 1000
        with self._changed:
            while not self._pending and not stop.is_set():
                self._changed.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].arrived + wait
            while self._images < max_batch and self._coming and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].images) <= max_batch):
                request = self._pending.popleft()
                self._images -= len(request.images)
                if request.future.set_running_or_notify_cancel():  # False: its client has gone
                    batch.append(request)
                    size += len(request.images)
            return batch

    def _run(self, batch: list[_Request]) -> None:
        """One forward pass over the batch's images; each request gets its rows' records or an error."""
        if not batch:
            return
        try:
            outputs = self.predictor.run([image for request in batch for image in request.images])
        except Exception as e:
            for request in batch:
                request.future.set_exception(e)
            return
        start = 0
        for request in batch:
            rows = slice(start, start + len(request.images))
            start = rows.stop
            try:
                own = Outputs(outputs.logits[rows], outputs.errors[rows])
                records = self.predictor.records(own, top_k=request.top_k, threshold=request.threshold)
            except Exception as e:
                request.future.set_exception(e)
            else:
                request.future.set_result(records)
