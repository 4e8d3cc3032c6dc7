"""The FastAPI application: routes, error handlers, and ``serve``, which runs it with uvicorn."""

from __future__ import annotations

import ipaddress
import re
import warnings
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mlic.artifact import Artifact
from mlic.errors import ConfigError, MlicError
from mlic.predict import Predictor, load
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
from mlic.serve.uploads import FIELD, UPLOAD_MEDIA_TYPES, ApiError, read_uploads


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
        uploads = await read_uploads(request, limits.max_upload_bytes, limits.max_files)
        answer = await run_in_threadpool(service.predict, uploads, top_k, threshold, explain, names)
        return JSONResponse(answer)

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
