"""``mlic export``: the model as ONNX, parity-checked, recorded in ``mlic.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlic.cli.common import run


def export(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory; the export goes into it.")],
    format: Annotated[str, typer.Option(help="Export format: onnx.")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: torch's; at least 18).")] = None,
    atol: Annotated[
        float, typer.Option(help="Largest logit difference allowed between ONNX Runtime and PyTorch.")
    ] = 1e-4,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with PyTorch before writing.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the mlic.json record as JSON.")] = False,
) -> None:
    """Export the model (ONNX, dynamic batch, uint8 images in, logits out) and record it in mlic.json."""
    from mlic.artifact import load_artifact
    from mlic.export import export as export_fn

    path = run(export_fn, artifact, format, opset=opset, atol=atol, check=check)
    record = {"path": str(path), **run(load_artifact, path.parent).exports[format]}
    if as_json:
        typer.echo(json.dumps(record))
        return
    typer.echo(str(path))
    if record["max_abs_diff"] is None:
        typer.echo(f"opset {record['opset']}; not checked against PyTorch (--no-check)")
    else:
        sizes = ", ".join(map(str, record["check_batch_sizes"]))
        typer.echo(
            f"opset {record['opset']}; max |onnxruntime - torch| logit difference "
            f"{record['max_abs_diff']:.2g} (tolerance {record['atol']:g}, batch sizes {sizes})"
        )
