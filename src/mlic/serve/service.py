"""The service behind the routes: what a request may send, and one predictor shared by every request."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict, dataclass

import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from mlic.data.images import decode_size
from mlic.errors import ConfigError
from mlic.predict import Predictor
from mlic.serve.batching import Batcher, Batching
from mlic.serve.uploads import Upload, decode_upload, display_name, read_uploads

DEFAULT_MAX_UPLOAD_BYTES = 32 * 2**20
DEFAULT_MAX_FILES = 16
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""50 megapixels (8,660 x 5,773): most camera photos; a PNG of this size decodes to 150 MB of RGB."""


@dataclass(frozen=True)
class Limits:
    """What one request may send: body bytes (multipart overhead included), files, pixels per image."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_files: int = DEFAULT_MAX_FILES
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    """None: no limit of ours (Pillow's own bomb limit still applies)."""

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_files", "max_image_pixels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_upload_bytes is None or self.max_files is None:
            raise ConfigError("max_upload_bytes and max_files must be set")


class Service:
    """A predictor shared by every request, reached through a ``Batcher``, or one request at a time.

    With batching on (``batching.max_batch > 1``), requests decode their
    uploads side by side in the server's thread pool and the batcher runs the
    images of concurrent requests in shared forward passes. With it off, each
    request decodes and predicts under one lock, one request at a time.
    """

    def __init__(self, predictor: Predictor, limits: Limits, batching: Batching | None = None) -> None:
        self.predictor, self.limits = predictor, limits
        self.batching = batching if batching is not None else Batching()
        self.batcher = Batcher(predictor, self.batching) if self.batching.enabled else None
        self.lock = threading.Lock()
        self.min_side = decode_size(predictor.artifact.preprocessing)
        self.resize = getattr(predictor, "transform", None)

    async def answer(self, request: Request, top_k: int | None, threshold: float | None) -> dict:
        """The response of ``POST /predict``: uploads read, then decoded and predicted off the event loop.

        Batched, the request is ``arriving`` from the start, so that a batch
        waits for it while it streams in and decodes; without batching, by ``predict``.
        """
        limits = self.limits
        if self.batcher is None:
            uploads = await read_uploads(request, limits.max_upload_bytes, limits.max_files)
            return await run_in_threadpool(self.predict, uploads, top_k, threshold)
        with self.batcher.arriving():
            uploads = await read_uploads(request, limits.max_upload_bytes, limits.max_files)
            images = await run_in_threadpool(self.decode, uploads)
            future = self.batcher.submit(images, top_k, threshold)
        records = await asyncio.wrap_future(future)
        return self.response(records, uploads, top_k, threshold)

    def predict(self, uploads: list[Upload], top_k: int | None, threshold: float | None) -> dict:
        """The response of ``POST /predict`` without batching: decode, then one ``Predictor.predict`` call.

        Under the lock: one request at a time decodes and predicts.
        """
        with self.lock:
            images = self.decode(uploads)
            records = self.predictor.predict(images, top_k=top_k, threshold=threshold)
        return self.response(records, uploads, top_k, threshold)

    def decode(self, uploads: list[Upload]) -> list[torch.Tensor]:
        """Every upload decoded and shrunk to the input size, in order; a bad one raises its ``ApiError``."""
        return [self._decode(u, i) for i, u in enumerate(uploads)]

    def _decode(self, upload: Upload, i: int) -> torch.Tensor:
        """Decoded and shrunk to the input size at once (the predictor's own resize is then exact)."""
        image = decode_upload(upload, display_name(upload, i), self.limits.max_image_pixels, self.min_side)
        upload.data = bytearray()  # the bytes are no longer needed
        return self.resize(image) if self.resize is not None else image

    def response(
        self, records: list[dict], uploads: list[Upload], top_k: int | None, threshold: float | None
    ) -> dict:
        """The records with each upload's file name as ``path``, and the rule that decided."""
        for record, upload in zip(records, uploads):
            record["path"] = upload.filename
        return {"predictions": records, "decision": self.decision(top_k, threshold)}

    def close(self) -> None:
        """Stop the batcher's model thread (when the server shuts down)."""
        if self.batcher is not None:
            self.batcher.close()

    def decision(self, top_k: int | None, threshold: float | None) -> dict:
        """The rule that decided: a query override, or the artifact's own."""
        if top_k is not None:
            return {"policy": "top-k", "k": min(top_k, self.predictor.schema.n_labels), "source": "query"}
        if threshold is not None:
            return {"policy": "fixed", "threshold": threshold, "source": "query"}
        own = self.predictor.artifact.decision
        return {"policy": own.policy, "k": own.k, "source": "artifact"}

    def schema(self) -> dict:
        """What ``GET /schema`` answers: everything a client needs to read predictions, and no paths."""
        artifact = self.predictor.artifact
        training = {k: artifact.training[k] for k in ("train_images", "val_images", "epochs", "validation")
                    if k in artifact.training}  # fmt: skip
        return {
            **artifact.schema.to_dict(),
            "thresholds": dict(zip(artifact.schema.labels, map(float, artifact.decision.thresholds))),
            "decision": artifact.decision.to_dict(),
            "model": artifact.model.to_dict(),
            "preprocessing": artifact.preprocessing.to_dict(),
            "training": training,
            "limits": asdict(self.limits),
            "batching": asdict(self.batching),
            "runtime": {"runtime": self.predictor.runtime, "precision": self.predictor.precision},
        }
