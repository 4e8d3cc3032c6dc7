"""HTTP API and web page over an artifact (``mlic serve``): FastAPI, run by uvicorn.

Endpoints:

- ``POST /predict``: images as ``multipart/form-data``, one or several parts
  named ``files``; optional query ``top_k`` (>= 1) or ``threshold`` (in [0, 1])
  replaces the artifact's decision rule. Answers ``{"predictions": [...],
  "decision": {...}}``: one record per file in upload order, the dict that
  ``mlic predict`` prints with ``path`` set to the uploaded file name (``null``
  if the part had none), and the rule that decided (``policy``, ``k``,
  ``threshold``, ``source``: ``artifact`` or ``query``).
- ``GET /schema``: labels, attributes and their classes, thresholds, decision
  rule, model, preprocessing, a training summary (no paths) and the limits.
- ``GET /health``: ``{"status": "ok"}`` once the model is loaded.
- ``GET /``: a self-contained page (:mod:`mlic.serve_page`); ``/docs`` and
  ``/openapi.json``: FastAPI's OpenAPI documentation. The document says what
  the server checks (one to ``max_files`` non-empty ``files`` parts and no
  other field, each a PNG, JPEG, GIF, BMP, TIFF or WebP image) and every 4xx
  with its ``{"error", "detail"}`` body; only that ``top_k`` and
  ``threshold`` exclude each other is beyond OpenAPI (their descriptions say it).

Bad input gets a 4xx answer ``{"error": CODE, "detail": MESSAGE}``, and an
unexpected failure a 500 of the same shape; the server keeps serving. 400: a
malformed body, a field other than ``files``, no file, an empty file, a
damaged image; 413: a body over ``max_upload_bytes``, more than ``max_files``
files, an image over ``max_image_pixels``; 415: not ``multipart/form-data``,
or a file that is not a PNG, JPEG, GIF, BMP, TIFF or WebP; 422: bad query
values.

Uploads are streamed, counted and held in memory, never written to disk
(:mod:`mlic.serve_uploads`). Each image is shrunk to the model's input size as
soon as it is decoded, so a request holds one full-size image at a time.
Decoding and inference run in a worker thread under one lock: requests are
served one at a time, off the event loop, and the files of one request go
through the model as one batch.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mlic.artifact import Artifact
from mlic.data.images import decode_size
from mlic.errors import ConfigError, MlicError
from mlic.predict import Predictor, load
from mlic.serve_page import PAGE
from mlic.serve_uploads import (
    FIELD,
    UPLOAD_MEDIA_TYPES,
    ApiError,
    Upload,
    decode_upload,
    display_name,
    read_uploads,
)

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


# -- response shapes, for the OpenAPI document ---------------------------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="A short code, e.g. not_an_image, too_many_files, invalid_query.")
    detail: str = Field(description="What was wrong and what is accepted.")


class AttributeClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class", description="The most probable class.")
    probability: float


class Prediction(BaseModel):
    path: str | None = Field(description="The uploaded file name (null if the part had none).")
    labels: list[str] = Field(description="The decided labels, in schema order.")
    scores: dict[str, float] = Field(description="Every label's probability.")
    attributes: dict[str, AttributeClass]


class DecisionRule(BaseModel):
    policy: str = Field(description="per-label, global, fixed or top-k.")
    k: int | None = None
    threshold: float | None = Field(None, description="The threshold of every label under fixed.")
    source: Literal["artifact", "query"]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    decision: DecisionRule


class SchemaResponse(BaseModel):
    labels: list[str]
    attributes: list[dict[str, Any]]
    thresholds: dict[str, float]
    decision: dict[str, Any]
    model: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any]
    limits: dict[str, int | None]


class Health(BaseModel):
    status: Literal["ok"]


ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 415, 422, 500)}


# -- the service ----------------------------------------------------------------------------
class Service:
    """A predictor shared by every request: one request at a time decodes and predicts, under a lock."""

    def __init__(self, predictor: Predictor, limits: Limits) -> None:
        self.predictor, self.limits = predictor, limits
        self.lock = threading.Lock()
        self.min_side = decode_size(predictor.artifact.preprocessing)
        self.resize = getattr(predictor, "transform", None)

    def predict(self, uploads: list[Upload], top_k: int | None, threshold: float | None) -> dict:
        """The response of ``POST /predict``: decode, resize, then one ``Predictor.predict`` call."""
        with self.lock:
            images = [self._decode(u, i) for i, u in enumerate(uploads)]
            records = self.predictor.predict(images, top_k=top_k, threshold=threshold)
        for record, upload in zip(records, uploads):
            record["path"] = upload.filename
        return {"predictions": records, "decision": self.decision(top_k, threshold)}

    def _decode(self, upload: Upload, i: int) -> torch.Tensor:
        """Decoded and shrunk to the input size at once (the predictor's own resize is then exact)."""
        image = decode_upload(upload, display_name(upload, i), self.limits.max_image_pixels, self.min_side)
        upload.data = bytearray()  # the bytes are no longer needed
        return self.resize(image) if self.resize is not None else image

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
        }


def create_app(
    artifact_or_predictor: str | Path | Artifact | Predictor,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    **predictor_options: Any,
) -> FastAPI:
    """The FastAPI application over an artifact directory, an ``Artifact`` or a ready ``Predictor``.

    The model loads here (not at import, not per request), so a bad artifact
    fails before a port is bound. A path or ``Artifact`` gets a ``Predictor``
    built with ``predictor_options`` (``device``, ``runtime``, ...) whose batch
    holds ``max_files`` images: one forward pass per request.
    """
    limits = Limits(max_upload_bytes, max_files, max_image_pixels)
    predictor = artifact_or_predictor
    if not isinstance(predictor, Predictor):
        options = {"batch_size": max(max_files, 64), **predictor_options}
        if isinstance(predictor, Artifact):
            predictor = Predictor(predictor, **options)
        else:
            predictor = load(predictor, **options)
    service = Service(predictor, limits)
    app = FastAPI(
        title="mlic",
        summary="Multi-label image classification of uploaded images",
        description="Upload images to `POST /predict`; `GET /schema` describes the model. "
        'Errors answer `{"error": CODE, "detail": MESSAGE}`.',
    )
    app.state.service = service
    _add_handlers(app)
    _add_routes(app, service)
    return app


def _add_routes(app: FastAPI, service: Service) -> None:
    limits = service.limits
    # what read_uploads accepts: one or more non-empty parts named FIELD and nothing else, each an image
    part = {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1}
    files = {"type": "array", "items": part, "minItems": 1, "maxItems": limits.max_files}
    form = dict(type="object", properties={FIELD: files}, required=[FIELD], additionalProperties=False)
    request_body = {"required": True, "content": {"multipart/form-data": {
        "schema": form, "encoding": {FIELD: {"contentType": ", ".join(UPLOAD_MEDIA_TYPES)}}}}}  # fmt: skip

    @app.post(
        "/predict",
        response_model=None,
        responses={200: {"model": PredictResponse}, **ERRORS},
        openapi_extra={"requestBody": request_body},
        summary="Labels and attribute classes of one or several images",
    )
    async def predict(
        request: Request,
        top_k: Annotated[
            int | None, Query(ge=1, description="Decide the k most probable labels (not with threshold).")
        ] = None,
        threshold: Annotated[
            float | None,
            Query(ge=0.0, le=1.0, allow_inf_nan=False, description="One threshold for all (not with top_k)."),
        ] = None,
    ) -> JSONResponse:
        """Images as multipart/form-data in `files`; each gets the record `mlic predict` prints.

        A file is a PNG, JPEG, GIF, BMP, TIFF or WebP image, told by its bytes (its part's
        Content-Type is not read); `top_k` and `threshold` exclude each other.
        """
        if top_k is not None and threshold is not None:
            raise ApiError(422, "invalid_query", "give top_k or threshold, not both")
        uploads = await read_uploads(request, limits.max_upload_bytes, limits.max_files)
        return JSONResponse(await run_in_threadpool(service.predict, uploads, top_k, threshold))

    @app.get("/schema", response_model=SchemaResponse, summary="Labels, attributes, thresholds, model")
    def schema() -> dict:
        return service.schema()

    @app.get("/health", response_model=Health, summary="Whether the server answers")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src blob: data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
"""The page may load nothing from anywhere, and talk to this server only."""


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _add_handlers(app: FastAPI) -> None:
    """Every failure answers ``{"error", "detail"}``: 4xx for bad requests, 500 for our own faults."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.error, e.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_query", "; ".join(map(_explain, e.errors())) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = re.sub(r"\W+", "_", str(e.detail).lower()).strip("_") or "http_error"
        return JSONResponse({"error": code, "detail": str(e.detail)}, e.status_code, headers=e.headers)

    @app.exception_handler(MlicError)
    async def mlic_error(request: Request, e: MlicError) -> JSONResponse:
        return _error(400, "bad_request", str(e))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        return _error(500, "internal_error", f"{type(e).__name__} while answering; see the server log")


def _explain(error: dict) -> str:
    """One pydantic error as ``query parameter 'x': message``."""
    loc = [str(part) for part in error.get("loc", ())]
    where = f"{loc[0]} parameter {loc[-1]!r}" if len(loc) >= 2 else "request"
    return f"{where}: {error.get('msg', 'invalid')}"


def serve(
    artifact: str | Path | Artifact | Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Build the app (``options``: ``create_app``'s) and serve it on ``host:port`` until stopped."""
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    if log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {log_level!r}; expected one of {list(LOG_LEVELS)}")
    app = create_app(artifact, **options)
    if not _is_loopback(host):
        warnings.warn(
            f"serving on {host}: the API has no authentication; anyone who reaches port {port} can use it",
            stacklevel=2,
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
