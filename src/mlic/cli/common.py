"""What every command shares: the data options, the error handling, mlic's warnings as one line."""

from __future__ import annotations

import dataclasses
import inspect
import typing
import warnings
from pathlib import Path
from typing import Annotated

import typer

from mlic.errors import MlicError
from mlic.training.config import OPTIONS, TrainConfig

HINTS = typing.get_type_hints(TrainConfig)

DataArg = Annotated[
    str,
    typer.Argument(
        help="'demo' (MultiDigits test split), a data file (tags CSV, multi-hot CSV, JSON lines, "
        "COCO JSON, VOC ImageSets list) or a folder (VOC root, one folder per label)."
    ),
]
Format = Annotated[
    str | None,
    typer.Option(help="Force the data format: csv-tags, csv-multihot, jsonl, coco, voc or folders."),
]
ImagesRoot = Annotated[
    Path | None,
    typer.Option(
        help="Folder that relative image paths resolve against (default: the data file's folder; "
        "VOC: JPEGImages/; COCO: also tries the usual layouts)."
    ),
]
Separator = Annotated[str, typer.Option(help="Separator of the tags column in a tags CSV.")]
DropUnannotated = Annotated[
    bool, typer.Option(help="COCO: leave out images without annotations (default: all-negative).")
]
RuntimeOption = Annotated[
    str,
    typer.Option(help="torch (the PyTorch model) or onnx (ARTIFACT/model.onnx, see mlic export)."),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="fp32; bf16 (torch runtime; CPUs with AVX-512 bf16 or AMX, GPUs) or int8 (onnx runtime: "
        "model.int8.onnx from mlic export --quantize int8); float32 where the hardware lacks them."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def run(fn, *args, **kwargs):
    """Call the library; an mlic error becomes a one-line message and exit code 2.

    mlic's own warnings (``UserWarning``s raised in ``mlic``) print as
    ``warning: ...`` lines, without Python's source-line echo; others as usual.
    """
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return fn(*args, **kwargs)
    except MlicError as e:
        fail(str(e))


def fail(message: str) -> None:
    """Print ``error: message`` and exit with code 2 (bad input, as every mlic error)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if category is UserWarning and "mlic" in Path(filename).parts:
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def source_options(
    data: str, format: str | None, images_root: Path | None, separator: str, drop_unannotated: bool
) -> dict:
    """The data-reading options of a command, as ``load_data`` takes them (none for ``demo``)."""
    if data == "demo":
        return {}
    return {
        "format": format,
        "images_root": images_root,
        "tag_separator": separator,
        "drop_unannotated": drop_unannotated,
    }


def pixel_limit(value: int | None, default: int | None) -> int | None:
    """``--max-image-pixels``: unset keeps the library's default; 0 lifts the limit."""
    return default if value is None else value or None


def option_parameter(name: str, panel_prefix: str = "") -> inspect.Parameter:
    """The typer parameter of one declared training option: type, flag, default, help and group panel.

    ``mlic train`` and ``mlic audit`` both generate their training options from
    these declarations; ``panel_prefix`` names the help panel's section.
    """
    f = OPTIONS[name]
    meta = f.metadata
    cli_type = meta["cli_type"] or HINTS[name]
    default = None if f.default is dataclasses.MISSING else f.default
    if meta["cli"] is not None and default is not None and cli_type is str:
        default = str(default)  # shown as the command line takes it
    decls = [meta["flag"]] if meta["flag"] else []
    info = typer.Option(*decls, help=meta["help"], rich_help_panel=panel_prefix + meta["group"].capitalize())
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[cli_type, info]
    )
