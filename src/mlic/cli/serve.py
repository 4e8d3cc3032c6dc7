"""``mlic serve``: the HTTP API and page over an artifact (needs the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlic.cli.common import PrecisionOption, pixel_limit, run


def serve(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network (no authentication).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest request body in MiB (all its files together); larger gets 413.")
    ] = 32.0,
    max_files: Annotated[int, typer.Option(min=1, help="Most images in one request.")] = 16,
    max_image_pixels: Annotated[
        int | None,
        typer.Option(min=0, help="Refuse larger images unread (default 50,000,000; 0: only Pillow's limit)."),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Most images per forward pass, from concurrent requests; 1: off.")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, max=10_000, help="How long a request waits for others to join its batch.")
    ] = 5.0,
    workers: Annotated[int, typer.Option(min=1, help="Server processes, each with its own model.")] = 1,
    runtime: Annotated[str, typer.Option(help="torch, or onnx (needs `mlic export` first).")] = "torch",
    precision: PrecisionOption = "fp32",
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /schema and /health, a page at / and API docs at /docs."""
    server = run(_server)  # a missing ``serve`` extra is a one-line error that names it
    options = {"runtime": runtime} if runtime != "torch" else {}
    options |= {"precision": precision} if precision != "fp32" else {}
    limit = pixel_limit(max_image_pixels, server.DEFAULT_MAX_IMAGE_PIXELS)
    upload = round(max_upload_mb * 2**20)
    run(
        server.serve, artifact, host, port, log_level=log_level, workers=workers, max_upload_bytes=upload,
        max_files=max_files, max_image_pixels=limit, max_batch=max_batch, max_wait_ms=max_wait_ms, **options,
    )  # fmt: skip


def _server():
    import mlic.serve

    return mlic.serve
