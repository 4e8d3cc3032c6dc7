"""``mlic explain``: a map per label, drawn over each image, written as PNG files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlic.cli.common import run


def explain(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    out: Annotated[Path, typer.Option(help="Folder for the maps: OUT/<n>_<image>/<label>.png.")],
    labels: Annotated[
        str | None,
        typer.Option(
            help="Also draw these, comma-separated: labels, attribute=class, or an attribute for all its "
            "classes (decided labels and each attribute's class are always drawn)."
        ),
    ] = None,
    all_labels: Annotated[bool, typer.Option("--all-labels", help="Draw every label and class.")] = False,
    method: Annotated[
        str | None, typer.Option(help="cam, csra, attention or grad-cam (default: the head's own).")
    ] = None,
    max_side: Annotated[
        int, typer.Option(help="Shrink larger images' overlays to this longest side (0: never).")
    ] = 1024,
    batch_size: int = 16,
    bad_images: Annotated[
        str, typer.Option(help="Unreadable files: skip (their line has an 'error' field) or fail.")
    ] = "skip",
) -> None:
    """Write, per image, an overlay of each decided label's map; print one JSON line per image."""
    from mlic.explain import explain_to_folder
    from mlic.predict import find_images, load

    predictor = run(load, artifact, batch_size=batch_size, bad_images=bad_images)
    images = run(find_images, paths)
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else []
    records = explain_to_folder(predictor, images, out, names, every=all_labels, method=method,
                                max_side=max_side or None)  # fmt: skip
    unreadable = 0
    for record in run(list, records):
        sys.stdout.write(json.dumps(record) + "\n")
        unreadable += "error" in record
    if unreadable:
        typer.echo(f"warning: {unreadable} unreadable image(s); their lines hold the error", err=True)
