"""The service behind the routes: what a request may send, and one predictor shared by every request."""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import asdict, dataclass

import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from mlic.data.images import decode_size
from mlic.errors import ConfigError
from mlic.explain import encoded
from mlic.models.maps import output_names
from mlic.overlays import overlay
from mlic.predict import Predictor
from mlic.serve.batching import Batcher, Batching
from mlic.serve.uploads import Upload, decode_upload, display_name, read_uploads

DEFAULT_MAX_UPLOAD_BYTES = 32 * 2**20
DEFAULT_MAX_FILES = 16
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""50 megapixels (8,660 x 5,773): most camera photos; a PNG of this size decodes to 150 MB of RGB."""
MAP_SIDE = 512
"""The longest side of a label map's PNG in a response (``explain=true``)."""


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

    async def answer(
        self,
        request: Request,
        top_k: int | None,
        threshold: float | None,
        explain: bool = False,
        labels: list[str] | tuple[str, ...] = (),
    ) -> dict:
        """The response of ``POST /predict``: uploads read, then decoded and predicted off the event loop.

        Batched, the request is ``arriving`` from the start, so that a batch
        waits for it while it streams in and decodes; without batching, or with
        ``explain`` (its maps need the decoded images and a pass of their own), by ``predict``.
        """
        limits = self.limits
        if self.batcher is None or explain:
            uploads = await read_uploads(request, limits.max_upload_bytes, limits.max_files)
            return await run_in_threadpool(self.predict, uploads, top_k, threshold, explain, labels)
        with self.batcher.arriving():
            uploads = await read_uploads(request, limits.max_upload_bytes, limits.max_files)
            images = await run_in_threadpool(self.decode, uploads)
            future = self.batcher.submit(images, top_k, threshold)
        records = await asyncio.wrap_future(future)
        return self.response(records, uploads, top_k, threshold)

    def predict(
        self,
        uploads: list[Upload],
        top_k: int | None,
        threshold: float | None,
        explain: bool = False,
        labels: list[str] | tuple[str, ...] = (),
    ) -> dict:
        """The response of ``POST /predict`` without batching: decode, then one ``Predictor.predict`` call.

        Under the lock: one request at a time decodes and predicts. With ``explain``, each record
        also gets ``maps``: ``{name: PNG data URL}``, the label map (``Predictor.explain``) over the
        decoded image, at most ``MAP_SIDE`` pixels on a side, of each decided label, each
        attribute's class and each of ``labels``.
        """
        with self.lock:
            decoded = [self._decode(u, i) for i, u in enumerate(uploads)]
            records = self.predictor.predict(
                [self._resized(im) for im in decoded], top_k=top_k, threshold=threshold
            )
            if explain:
                self._maps(records, decoded, list(labels))
        return self.response(records, uploads, top_k, threshold)

    def decode(self, uploads: list[Upload]) -> list[torch.Tensor]:
        """Every upload decoded and shrunk to the input size, in order; a bad one raises its ``ApiError``."""
        return [self._resized(self._decode(u, i)) for i, u in enumerate(uploads)]

    def _resized(self, image: torch.Tensor) -> torch.Tensor:
        """At the model's input size (the predictor's own resize is then exact)."""
        return self.resize(image) if self.resize is not None else image

    def _decode(self, upload: Upload, i: int) -> torch.Tensor:
        """Decoded at about the input size at once (the predictor's resize to it is then exact)."""
        image = decode_upload(upload, display_name(upload, i), self.limits.max_image_pixels, self.min_side)
        upload.data = bytearray()  # the bytes are no longer needed
        return image

    def _maps(self, records: list[dict], images: list[torch.Tensor], labels: list[str]) -> None:
        """Add each record's ``maps`` (see ``predict``)."""
        maps = self.predictor.explain(images, None, max_side=MAP_SIDE)
        index = {name: j for j, name in enumerate(maps.names)}
        for i, record in enumerate(records):
            names = list(record["labels"]) + [f"{a}={c['class']}" for a, c in record["attributes"].items()]
            names += [n for n in self.predictor.output_columns(labels)[0] if n not in names]
            pictures = {n: overlay(maps.images[i], maps.maps[i][index[n]]) for n in names}
            record["maps"] = encoded(pictures, MAP_SIDE)

    def check_labels(self, labels: list[str]) -> None:
        """Refuse unknown output names before any upload is read (a ``ConfigError`` naming the first)."""
        self.predictor.output_columns(labels)

    def labels_pattern(self) -> str:
        """What the ``labels`` query accepts, as a regular expression for the OpenAPI document.

        Comma-separated names that ``check_labels`` knows (labels, ``attribute=class``, attribute
        names), each with whitespace around it, empty entries allowed: exactly what
        :func:`parse_labels` reads into known names. Only regex syntax characters are escaped, so
        the pattern reads the same in ECMA-262 (OpenAPI's dialect) and Python, but for a few rare
        characters that one of them counts as whitespace (``\\s``) and the other not. A name with a comma,
        or with whitespace at either end, cannot be asked for this way and is left out.
        """
        schema = self.predictor.schema
        names = [n for n in dict.fromkeys([*output_names(schema), *schema.attribute_names])
                 if n and "," not in n and n == n.strip()]  # fmt: skip
        name = "|".join(re.sub(r"[\\^$.|?*+()\[\]{}]", r"\\\g<0>", n) for n in names)
        item = rf"\s*(?:(?:{name})\s*)?"
        return rf"^{item}(?:,{item})*$"

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


def parse_labels(query: str) -> list[str]:
    """The names of a ``labels`` query: comma-separated, whitespace around each dropped, empties skipped."""
    return [n.strip() for n in query.split(",") if n.strip()]
