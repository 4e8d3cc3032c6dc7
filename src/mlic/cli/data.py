"""``mlic data inspect``, ``split`` and ``pack``: look at a data set, split it, pack it for streaming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlic.cli.common import (
    AsJson,
    DataArg,
    DropUnannotated,
    Format,
    ImagesRoot,
    Separator,
    run,
    source_options,
)

app = typer.Typer(
    no_args_is_help=True, help="Look at a data set, split it, pack it for streaming: inspect, split, pack."
)
Rows = Annotated[int, typer.Option(help="Table rows shown before a cut (the most frequent and the rarest).")]


@app.command("inspect")
def inspect(
    data: DataArg,
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: AsJson = False,
    full: Annotated[
        bool, typer.Option(help="Decode every image (finds damaged bodies; slower) instead of headers only.")
    ] = False,
    check_images: Annotated[
        bool, typer.Option(help="Check the image files: missing, corrupt, duplicate, sizes.")
    ] = True,
    top_pairs: Annotated[int, typer.Option(help="Most frequent co-occurring label pairs to list.")] = 10,
    rows: Rows = 20,
    workers: Annotated[int | None, typer.Option(help="Threads that check files (default: Python's).")] = None,
) -> None:
    """Figures of a data set: labels, co-occurrence, imbalance, unknowns, and its image files."""
    from mlic.data.describe import describe_data
    from mlic.data.inspect_text import format_description

    options = source_options(data, format, images_root, tag_separator, drop_unannotated)
    figures = run(
        describe_data, data, source_options=options, check_images=check_images, full=full,
        top_pairs=top_pairs, max_listed=max(rows, 100), workers=workers,
    )  # fmt: skip
    typer.echo(json.dumps(figures) if as_json else format_description(figures, max_rows=rows))


@app.command("split")
def split(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl, val.jsonl, test.jsonl and split.json.")],
    val: Annotated[float, typer.Option(help="Share of the images for validation (0 for none).")] = 0.1,
    test: Annotated[float, typer.Option(help="Share of the images for testing (0 for none).")] = 0.1,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace split files that exist in --out.")] = False,
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: AsJson = False,
    rows: Rows = 20,
) -> None:
    """Split a data set into train / val / test by iterative stratification; prints each label's shares."""
    from mlic.data.split import format_split_report, split_data

    options = source_options(data, format, images_root, tag_separator, drop_unannotated)
    result = run(split_data, data, out, (val, test), seed=seed, overwrite=overwrite, source_options=options)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(format_split_report(result["report"], max_rows=rows))
    typer.echo("\nwrote:")
    for path in result["files"].values():
        typer.echo(f"  {path}")


@app.command("pack")
def pack(
    data: DataArg,
    out: Annotated[
        str,
        typer.Option(
            help="Folder or s3://BUCKET/PREFIX for the shards (S3: boto3's settings, "
            "AWS_ENDPOINT_URL for another S3-compatible server)."
        ),
    ],
    max_side: Annotated[
        int | None,
        typer.Option(help="Shrink larger images to this longer side (default: bytes as they are)."),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Share split off as the 'val' split (stratified), which training validates "
            "on; 0: one split, 'all' (for evaluation)."
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the split (and of MultiDigits' canvases).")] = 0,
    demo_train: Annotated[int, typer.Option(help="MultiDigits training canvases (data 'demo').")] = 10_000,
    demo_val: Annotated[int, typer.Option(help="MultiDigits validation canvases (data 'demo').")] = 1_000,
    overwrite: Annotated[bool, typer.Option(help="Replace a pack that exists at --out.")] = False,
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: AsJson = False,
) -> None:
    """Write a data set as shards for streaming: train with --data OUT, evaluate OUT (or OUT/val)."""
    from mlic.data.pack import pack as pack_data

    options = source_options(data, format, images_root, tag_separator, drop_unannotated)
    info = run(pack_data, data, out, max_side=max_side, val_fraction=val_fraction, seed=seed,
               demo_train=demo_train, demo_val=demo_val, overwrite=overwrite, **options)  # fmt: skip
    if as_json:
        typer.echo(json.dumps(info))
        return
    splits = ", ".join(f"{name} {entry['images']:,} images" for name, entry in info["splits"].items())
    typer.echo(f"packed {data} to {out}: {splits}")
