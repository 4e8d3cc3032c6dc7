"""``mlic predict``: one JSON line per image, from an artifact."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlic.cli.common import PrecisionOption, RuntimeOption, run


def predict(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[int | None, typer.Option(help="Decide the k most probable labels.")] = None,
    threshold: Annotated[float | None, typer.Option(help="One threshold for every label.")] = None,
    batch_size: int = 64,
    bad_images: Annotated[
        str, typer.Option(help="Unreadable files: skip (their line has an 'error' field) or fail.")
    ] = "skip",
    runtime: RuntimeOption = "torch",
    precision: PrecisionOption = "fp32",
) -> None:
    """Print one JSON line per image: decided labels, scores and attribute classes."""
    from mlic.predict import find_images, load

    predictor = run(
        load, artifact, batch_size=batch_size, bad_images=bad_images, runtime=runtime, precision=precision
    )
    images = run(find_images, paths)
    unreadable = 0
    for record in run(predictor.predict, images, top_k=top_k, threshold=threshold):
        sys.stdout.write(json.dumps(record) + "\n")
        unreadable += "error" in record
    if unreadable:
        typer.echo(f"warning: {unreadable} unreadable image(s); their lines hold the error", err=True)
