"""The FastAPI application: routes, error handlers, and ``serve``, which runs it with uvicorn."""

from __future__ import annotations

import gc
import ipaddress
import json
import os
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from mlic.artifact import Artifact
from mlic.errors import ConfigError, MlicError
from mlic.predict import Predictor, load
from mlic.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, Batching
from mlic.serve.page import PAGE, PAGE_HEADERS
from mlic.serve.schemas import ERRORS, Health, PredictResponse, SchemaResponse
from mlic.serve.service import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    Limits,
    Service,
    parse_labels,
)
from mlic.serve.uploads import FIELD, UPLOAD_MEDIA_TYPES, ApiError


def create_app(
    artifact_or_predictor: str | Path | Artifact | Predictor,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    **predictor_options: Any,
) -> FastAPI:
    """The FastAPI application over an artifact directory, an ``Artifact`` or a ready ``Predictor``.

    The model loads here (not at import, not per request), so a bad artifact
    fails before a port is bound. A path or ``Artifact`` gets a ``Predictor``
    built with ``predictor_options`` (``device``, ``runtime``, ...) whose batch
    holds ``max_batch`` images and ``max_files``: one forward pass per batch
    (:mod:`mlic.serve.batching`; ``max_batch=1``: one per request, one request
    at a time). A ready ``Predictor`` keeps its own ``batch_size``, which then
    caps the images of one forward pass.
    """
    limits, batching = Limits(max_upload_bytes, max_files, max_image_pixels), Batching(max_batch, max_wait_ms)
    predictor = artifact_or_predictor
    if not isinstance(predictor, Predictor):
        options = {"batch_size": max(max_files, max_batch, 64), **predictor_options}
        if isinstance(predictor, Artifact):
            predictor = Predictor(predictor, **options)
        else:
            predictor = load(predictor, **options)
    service = Service(predictor, limits, batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "freeze_at_start", False):
            freeze_startup_objects()
        yield
        service.close()

    app = FastAPI(
        lifespan=lifespan,
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
    labels_pattern = service.labels_pattern()
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
        explain: Annotated[
            bool,
            Query(
                description="Add `maps`: the label map of each decided label and attribute class, "
                "as a PNG data URL."
            ),
        ] = False,
        labels: str = Query(  # a default, not Annotated: its pattern is this app's, not the module's
            "",
            max_length=10_000,
            description="With explain=true only: also map these, comma-separated (labels, "
            "attribute=class, or an attribute for all its classes).",
            json_schema_extra={"pattern": labels_pattern},  # documented; checked below, naming the name
        ),
    ) -> JSONResponse:
        """Images as multipart/form-data in `files`; each gets the record `mlic predict` prints.

        A file is a PNG, JPEG, GIF, BMP, TIFF or WebP image, told by its bytes (its part's
        Content-Type is not read); `top_k` and `threshold` exclude each other.
        """
        if top_k is not None and threshold is not None:
            raise ApiError(422, "invalid_query", "give top_k or threshold, not both")
        names = parse_labels(labels)
        if names and not explain:
            raise ApiError(422, "invalid_query", "labels goes with explain=true")
        try:
            service.check_labels(names)
        except MlicError as e:
            raise ApiError(422, "invalid_query", f"query parameter 'labels': {e}") from None
        return JSONResponse(await service.answer(request, top_k, threshold, explain, names))

    @app.get("/schema", response_model=SchemaResponse, summary="Labels, attributes, thresholds, model")
    def schema() -> dict:
        return service.schema()

    @app.get("/health", response_model=Health, summary="Whether the server answers")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)


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


CONFIG_VARIABLE = "MLIC_SERVE_CONFIG"
"""The environment variable through which ``serve`` hands ``create_app``'s arguments to worker processes."""


def serve(
    artifact: str | Path | Artifact | Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    workers: int = 1,
    **options: Any,
) -> None:
    """Build the app (``options``: ``create_app``'s) and serve it on ``host:port`` until stopped.

    ``workers`` > 1 runs that many uvicorn worker processes on the one port,
    each loading its own model from the artifact path (so it must be a path):
    the arguments travel as JSON in the ``MLIC_SERVE_CONFIG`` environment
    variable to ``app_from_environment``. The app is built here once first, so
    that a bad artifact or option fails before any port is bound. A serving
    process freezes its objects as it starts (``freeze_startup_objects``).
    """
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    if log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {log_level!r}; expected one of {list(LOG_LEVELS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if workers > 1 and not isinstance(artifact, str | Path):
        raise ConfigError("workers > 1 load the model in each process: give the artifact's path")
    app = create_app(artifact, **options)
    if not _is_loopback(host):
        warnings.warn(
            f"serving on {host}: the API has no authentication; anyone who reaches port {port} can use it",
            stacklevel=2,
        )
    settings = dict(host=host, port=port, log_level=log_level, server_header=False)
    if workers == 1:
        app.state.freeze_at_start = True  # this process serves and does nothing else
        uvicorn.run(app, **settings)
        return
    del app  # each worker builds its own
    try:
        config = json.dumps({"artifact": str(artifact), **options})
    except TypeError as e:
        raise ConfigError(f"workers > 1 pass the options to each process as JSON, which fails: {e}") from None
    previous = os.environ.get(CONFIG_VARIABLE)
    os.environ[CONFIG_VARIABLE] = config  # the worker processes inherit it
    try:
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **settings)
    finally:
        if previous is None:
            os.environ.pop(CONFIG_VARIABLE, None)
        else:
            os.environ[CONFIG_VARIABLE] = previous


def app_from_environment() -> FastAPI:
    """The app of one worker process: ``create_app`` with the JSON arguments of ``MLIC_SERVE_CONFIG``."""
    text = os.environ.get(CONFIG_VARIABLE)
    if not text:
        raise ConfigError(f"{CONFIG_VARIABLE} is not set; start workers through mlic serve --workers N")
    options = json.loads(text)
    app = create_app(options.pop("artifact"), **options)
    app.state.freeze_at_start = True
    return app


def freeze_startup_objects() -> None:
    """Keep every object alive now (libraries, the model) out of the garbage collector's full passes.

    Python's full collection walks every tracked object: with torch and a model
    loaded, over 400,000, about 220 ms on two cores, a pause that every request
    in flight waits out (it was the p99 of ``benchmarks/serve.py``). Frozen, a
    full pass walks what requests allocate: 2 ms. Only for a process that
    serves and nothing else: the app does it as it starts if
    ``app.state.freeze_at_start`` (set by ``serve`` and the workers' factory,
    not by ``create_app``), since frozen objects are never collected.
    """
    gc.collect()
    gc.freeze()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
