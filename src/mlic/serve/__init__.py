"""HTTP API and web page over an artifact (``mlic serve``): FastAPI, run by uvicorn; the ``serve`` extra.

Endpoints:

- ``POST /predict``: images as ``multipart/form-data``, one or several parts
  named ``files``; optional query ``top_k`` (>= 1) or ``threshold`` (in [0, 1])
  replaces the artifact's decision rule. Answers ``{"predictions": [...],
  "decision": {...}}``: one record per file in upload order, the dict that
  ``mlic predict`` prints with ``path`` set to the uploaded file name (``null``
  if the part had none), and the rule that decided (``policy``, ``k``,
  ``threshold``, ``source``: ``artifact`` or ``query``).
- ``GET /schema``: labels, attributes and their classes, thresholds, decision
  rule, model, preprocessing, a training summary (no paths), the limits and
  the batching settings (``max_batch``, ``max_wait_ms``).
- ``GET /health``: ``{"status": "ok"}`` once the model is loaded.
- ``GET /``: a self-contained page (:mod:`mlic.serve.page`); ``/docs`` and
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
(:mod:`mlic.serve.uploads`). Each image is shrunk to the model's input size as
soon as it is decoded, so a request holds one full-size image at a time.
Requests decode their uploads side by side in the server's thread pool, off
the event loop, then hand them to one model thread that runs the images of
concurrent requests in one forward pass, up to ``max_batch`` images gathered
for at most ``max_wait_ms``, and gives each request its own records
(:mod:`mlic.serve.batching`). With ``max_batch=1`` batching is off: each
request decodes and predicts under one lock, one request at a time, its files
as one batch. ``serve(..., workers=N)`` runs N uvicorn processes, each with
its own model, built from the JSON in ``MLIC_SERVE_CONFIG``.

Modules: ``app`` (the FastAPI application, its routes and error handlers,
``serve``), ``service`` (the limits and the predictor shared by requests),
``batching`` (the model thread that gathers requests into forward passes),
``schemas`` (the response shapes of the OpenAPI document), ``uploads``
(streamed multipart bodies, decoded images), ``page`` (the page at ``/``,
from ``static/index.html``, ``page.css`` and ``page.js``).
"""

from mlic.extras import require

require("serve", "mlic serve")  # FastAPI, uvicorn, python-multipart: a clear error before any import fails

from mlic.serve.app import create_app, serve  # noqa: E402
from mlic.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, Batching  # noqa: E402
from mlic.serve.service import (  # noqa: E402
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    Limits,
    Service,
)

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_WAIT_MS",
    "Batching",
    "Limits",
    "Service",
    "create_app",
    "serve",
]
