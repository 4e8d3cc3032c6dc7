"""``mlic export``: the model as ONNX, parity-checked, recorded in ``mlic.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlic.cli.common import DropUnannotated, Format, ImagesRoot, Separator, run, source_options


def export(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory; the export goes into it.")],
    format: Annotated[str, typer.Option(help="Export format: onnx.")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: torch's; at least 18).")] = None,
    atol: Annotated[
        float, typer.Option(help="Largest logit difference allowed between ONNX Runtime and PyTorch.")
    ] = 1e-4,
    rtol: Annotated[
        float,
        typer.Option(
            help="And this share of the logit's size (numpy.allclose's rule: atol + rtol x |logit|)."
        ),
    ] = 1e-4,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with PyTorch before writing.")
    ] = True,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="Also write model.int8.onnx (int8, static; needs --calibration); kept within parity limits."
        ),
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            help="Labelled data whose images calibrate int8 ranges and check parity ('demo': "
            "MultiDigits validation split)."
        ),
    ] = None,
    calibration_images: Annotated[int, typer.Option(min=1, help="Images that calibrate the ranges.")] = 128,
    calibration_method: Annotated[str, typer.Option(help="minmax, entropy or percentile.")] = "minmax",
    data_format: Annotated[
        str | None, typer.Option("--data-format", help=Format.__metadata__[0].help)
    ] = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the mlic.json record as JSON.")] = False,
) -> None:
    """Export the model (ONNX, dynamic batch, uint8 images in, logits out) and record it in mlic.json.

    With --quantize int8 --calibration DATA, also an int8 model, written only if its decisions agree with
    float32's on >= 99.5% of (image, label) pairs and its mAP is within 0.003 (on DATA's held-out images).
    """
    from mlic.artifact import load_artifact
    from mlic.export import export as export_fn

    options = {"opset": opset, "atol": atol, "rtol": rtol, "check": check}
    if quantize or calibration:
        data = source_options(calibration, data_format, images_root, tag_separator, drop_unannotated)
        settings = {"images": calibration_images, "method": calibration_method, **data}
        options |= {"quantize": quantize, "calibration": calibration, "calibration_options": settings}
    path = run(export_fn, artifact, format, **options)
    exports = run(load_artifact, path.parent).exports
    record = {"path": str(path.parent / exports[format]["file"]), **exports[format]}
    if quantize:
        record["int8"] = {"path": str(path), **exports["onnx_int8"]}
    if as_json:
        typer.echo(json.dumps(record))
        return
    typer.echo(record["path"])
    if record["max_abs_diff"] is None:
        typer.echo(f"opset {record['opset']}; not checked against PyTorch (--no-check)")
    else:
        sizes = ", ".join(map(str, record["check_batch_sizes"]))
        typer.echo(
            f"opset {record['opset']}; max |onnxruntime - torch| logit difference "
            f"{record['max_abs_diff']:.2g} (tolerance {record['atol']:g} + {record['rtol']:g} x |logit|, "
            f"batch sizes {sizes})"
        )
    if quantize:
        typer.echo(str(path))
        typer.echo(_parity_line(record["int8"]))


def _parity_line(record: dict) -> str:
    """One line on the int8 model's parity with float32."""
    p, c = record["parity"], record["calibration"]
    figures = (
        [f"decisions agree on {p['label_decision_agreement']:.2%}"]
        if p["label_decision_agreement"] is not None
        else []
    )
    if p["attribute_agreement"] is not None:
        figures.append(f"attribute classes on {p['attribute_agreement']:.2%}")
    if p["map_difference"] is not None:
        figures.append(f"mAP {p['map_variant']:.4f} vs {p['map_reference']:.4f}")
    return (
        f"int8 ({c['method']}, {c['images']} calibration images): "
        + ", ".join(figures)
        + f" on {p['images']} {p['on']}"
    )
