"""The ``mlic`` command: a thin typer layer that parses options and calls one library function each."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from mlic.errors import ConfigError, MlicError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-label image classification: train, evaluate, predict.",
)

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


def _run(fn, *args, **kwargs):
    """Call the library; an mlic error becomes a one-line message and exit code 2.

    mlic's own warnings (``UserWarning``s raised in ``mlic``) print as
    ``warning: ...`` lines, without Python's source-line echo; others as usual.
    """
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return fn(*args, **kwargs)
    except MlicError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if category is UserWarning and "mlic" in Path(filename).parts:
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


@app.command()
def train(
    data: Annotated[
        str | None, typer.Option(help="Training data file or folder; omit to train MultiDigits.")
    ] = None,
    val: Annotated[str | None, typer.Option(help="Validation data; default: 10% split off --data.")] = None,
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<date>-<time>).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run directory.")] = None,
    backbone: Annotated[str, typer.Option(help="Any timm model name.")] = "mlic_cnn",
    pretrained: Annotated[
        bool, typer.Option(help="Start from timm's pretrained weights (downloads).")
    ] = False,
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights file (offline).")] = None,
    head: Annotated[str, typer.Option(help="Classifier head: linear, csra or ml-decoder.")] = "linear",
    head_option: Annotated[
        list[str] | None, typer.Option(help="Head option NAME=VALUE, repeatable (e.g. num_groups=100).")
    ] = None,
    transfer: Annotated[
        str,
        typer.Option(
            help="Label transfer from the nearest training images: auto (kept where it adds "
            "validation mAP) or off."
        ),
    ] = "auto",
    loss: Annotated[str, typer.Option(help="Label loss: bce, focal, asl, hill or splc.")] = "bce",
    loss_option: Annotated[
        list[str] | None, typer.Option(help="Loss option NAME=VALUE, repeatable (e.g. gamma_neg=4).")
    ] = None,
    pos_weight: Annotated[
        str,
        typer.Option(help="Weight w_p of positives: a number, or 'auto' (negatives/positives per label)."),
    ] = "1.0",
    max_pos_weight: Annotated[float, typer.Option(help="Upper bound of --pos-weight auto.")] = 100.0,
    neg_weight: Annotated[float, typer.Option(help="Weight w_n of negative label targets.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing epsilon for labels.")] = 0.0,
    missing: Annotated[
        str, typer.Option(help="Unknown (-1) targets: ignore, negative or selective.")
    ] = "ignore",
    missing_weight: Annotated[float, typer.Option(help="Weight of unknowns taken as negatives.")] = 1.0,
    hide_positives: Annotated[
        float,
        typer.Option(help="Simulate incomplete labels: hide this share of the train and val positives."),
    ] = 0.0,
    hidden_as: Annotated[
        str, typer.Option(help="Hidden positives become 'unknown' (-1) or 'negative' (silently missing).")
    ] = "unknown",
    max_epochs: Annotated[int | None, typer.Option(help="Epochs (default 12).")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Images per step (default 64 fine-tuning pretrained weights, else 128)."),
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate of AdamW (cosine schedule).")] = 3e-3,
    backbone_lr_scale: Annotated[
        float | None,
        typer.Option(
            help="The backbone's learning rate as a share of --lr (the head's); default 1/3 fine-tuning "
            "pretrained weights, else 1."
        ),
    ] = None,
    weight_decay: float = 0.05,
    image_size: Annotated[int | None, typer.Option(help="Input size (default 64 demo, 224 else).")] = None,
    augment: Annotated[str | None, typer.Option(help="light, shift or none.")] = None,
    hflip: Annotated[bool | None, typer.Option("--hflip/--no-hflip", help="Mirror in training.")] = None,
    seed: int = 0,
    accelerator: Annotated[str, typer.Option(help="cpu, gpu or auto (Lightning).")] = "cpu",
    devices: Annotated[str, typer.Option(help="Device count, 'auto' or a list like 0,1.")] = "1",
    num_nodes: Annotated[int, typer.Option(help="Machines (Lightning; under SLURM or torchrun).")] = 1,
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn, ...")] = "auto",
    compile: Annotated[bool, typer.Option(help="torch.compile the model (GPU; slower on CPUs).")] = False,
    channels_last: Annotated[
        bool, typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format.")
    ] = True,
    precision: Annotated[
        str | None,
        typer.Option(help="Lightning precision (default: bf16-mixed where supported, else 32-true)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader processes.")] = None,
    bad_images: Annotated[
        str, typer.Option(help="Unreadable images: skip (listed in RUN/bad_images.txt) or fail.")
    ] = "skip",
    cache_images: Annotated[
        bool | None,
        typer.Option(
            "--cache-images/--no-cache-images",
            help="Decode the training images into memory once; default: when they fit in a quarter of the "
            "memory available and training runs in one process.",
        ),
    ] = None,
    max_image_pixels: Annotated[
        int | None,
        typer.Option(help="Refuse larger images unread (default 89,478,485, Pillow's limit; 0: none)."),
    ] = None,
    demo_train: Annotated[int, typer.Option(help="MultiDigits training canvases.")] = 10_000,
    demo_val: Annotated[int, typer.Option(help="MultiDigits validation canvases.")] = 1_000,
    checkpoint_steps: Annotated[
        int, typer.Option(help="Also checkpoint every N steps within an epoch (0: by --checkpoint-minutes).")
    ] = 0,
    checkpoint_minutes: Annotated[
        float, typer.Option(help="Also checkpoint every M minutes within an epoch (0: at epoch ends only).")
    ] = 10.0,
    deterministic: Annotated[
        bool, typer.Option(help="Deterministic algorithms only: the same seed gives the same weights.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train a model; prints the path of the artifact it writes.

    A run killed at any point continues with ``--resume RUN`` from its last
    checkpoint; with ``--deterministic`` it then ends with the weights an
    uninterrupted run would have.
    """
    from mlic.training import TrainConfig, is_global_zero
    from mlic.training import train as train_fn

    if resume is not None:
        overrides = {"max_epochs": max_epochs} if max_epochs else {}
        artifact = _run(train_fn, resume=resume, progress=progress, **overrides)
    else:
        config = TrainConfig(
            data=data,
            val_data=val,
            format=format,
            images_root=_str(images_root),
            tag_separator=tag_separator,
            drop_unannotated=drop_unannotated,
            out=_str(out),
            backbone=backbone,
            pretrained=pretrained,
            weights=_str(weights),
            head=head,
            head_options=_run(parse_options, head_option or []),
            transfer=transfer,
            loss=loss,
            loss_options=_run(parse_options, loss_option or []),
            pos_weight=_run(parse_pos_weight, pos_weight),
            max_pos_weight=max_pos_weight,
            neg_weight=neg_weight,
            label_smoothing=label_smoothing,
            missing=missing,
            missing_weight=missing_weight,
            hide_positives=hide_positives,
            hidden_as=hidden_as,
            max_epochs=max_epochs or TrainConfig.max_epochs,
            batch_size=batch_size,
            lr=lr,
            backbone_lr_scale=backbone_lr_scale,
            weight_decay=weight_decay,
            image_size=image_size,
            augment=augment,
            hflip=hflip,
            seed=seed,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            compile=compile,
            channels_last=channels_last,
            precision=precision,
            num_workers=workers,
            bad_images=bad_images,
            cache_images=cache_images,
            max_image_pixels=_pixel_limit(max_image_pixels, TrainConfig.max_image_pixels),
            demo_train=demo_train,
            demo_val=demo_val,
            checkpoint_steps=checkpoint_steps,
            checkpoint_minutes=checkpoint_minutes,
            deterministic=deterministic,
            progress=progress,
        )
        artifact = _run(train_fn, config)
    if is_global_zero():  # under DDP every process runs this command; one prints
        typer.echo(str(artifact))


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory.")],
    data: DataArg = "demo",
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report into this folder.")] = None,
    batch_size: int = 64,
    workers: int = 0,
    runtime: RuntimeOption = "torch",
) -> None:
    """Figures of a model on data: mAP, F1, Hamming loss, subset and attribute accuracy."""
    from mlic.evaluation import evaluate as evaluate_fn
    from mlic.evaluation import format_report
    from mlic.predict import load

    options = _source_options(data, format, images_root, tag_separator, drop_unannotated)
    predictor = _run(load, artifact, batch_size=batch_size, num_workers=workers, runtime=runtime)
    figures = _run(evaluate_fn, predictor, data, report=report, **options)
    typer.echo(json.dumps(figures) if as_json else format_report(figures))
    if report is not None and not as_json:
        typer.echo(f"\nreport: {figures['report']}")


@app.command()
def calibrate(
    artifact: Annotated[
        Path, typer.Argument(help="Artifact (or run) directory; its mlic.json is rewritten.")
    ],
    data: Annotated[
        str, typer.Argument(help="Validation data: 'demo' (MultiDigits validation split) or a file.")
    ] = "demo",
    policy: Annotated[
        str,
        typer.Option(
            help="auto (fixed, global or shrunk per-label, by cross-validation), per-label, global, "
            "fixed or top-k."
        ),
    ] = "per-label",
    min_precision: Annotated[
        float | None, typer.Option(help="per-label: best F1 among thresholds with at least this precision.")
    ] = None,
    min_positives: Annotated[
        int, typer.Option(help="per-label: labels with fewer positives take the global threshold.")
    ] = 3,
    shrinkage: Annotated[
        float | None,
        typer.Option(
            help="per-label: pull each label's threshold toward the global one by this many positives."
        ),
    ] = None,
    threshold: Annotated[float, typer.Option(help="fixed: the threshold of every label.")] = 0.5,
    k: Annotated[int | None, typer.Option(help="top-k: labels decided per image.")] = None,
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    batch_size: int = 64,
    workers: int = 0,
) -> None:
    """Choose the artifact's decision rule (thresholds or top-k) on validation data."""
    from mlic.evaluation import calibrate as calibrate_fn

    options = _source_options(data, format, images_root, tag_separator, drop_unannotated)
    result = _run(
        calibrate_fn, artifact, data, policy, threshold=threshold, k=k, min_precision=min_precision,
        min_positives=min_positives, shrinkage=shrinkage, batch_size=batch_size, num_workers=workers,
        **options,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result))
        return
    chosen = result["decision"]["policy"]
    how = f"{policy} chose {chosen}" if policy != chosen else f"{policy} chosen"
    typer.echo(f"{result['artifact']}: {how} on {result['data']} ({result['n_samples']} images)")
    for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall"):
        typer.echo(f"  {key:<16} {result['before'][key]:.4f} -> {result['after'][key]:.4f}")
    if result["unreachable"]:
        names = ", ".join(result["unreachable"][:20])
        typer.echo(f"  never predicted (below {min_precision} precision at every threshold): {names}")


@app.command()
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
) -> None:
    """Print one JSON line per image: decided labels, scores and attribute classes."""
    from mlic.predict import find_images, load

    predictor = _run(load, artifact, batch_size=batch_size, bad_images=bad_images, runtime=runtime)
    images = _run(find_images, paths)
    unreadable = 0
    for record in _run(predictor.predict, images, top_k=top_k, threshold=threshold):
        sys.stdout.write(json.dumps(record) + "\n")
        unreadable += "error" in record
    if unreadable:
        typer.echo(f"warning: {unreadable} unreadable image(s); their lines hold the error", err=True)


@app.command()
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

    path = _run(export_fn, artifact, format, opset=opset, atol=atol, check=check)
    record = {"path": str(path), **_run(load_artifact, path.parent).exports[format]}
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


def parse_options(items: list[str]) -> dict:
    """``NAME=VALUE`` strings as a dict; a VALUE that reads as JSON (2, 0.5, true, [1, 99]) is parsed."""
    options: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"option {item!r} is not NAME=VALUE")
        try:
            options[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[name.strip()] = value
    return options


def parse_pos_weight(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--pos-weight takes a number or 'auto', got {value!r}") from None


def _source_options(
    data: str, format: str | None, images_root: Path | None, separator: str, drop_unannotated: bool
) -> dict:
    if data == "demo":
        return {}
    return {
        "format": format,
        "images_root": images_root,
        "tag_separator": separator,
        "drop_unannotated": drop_unannotated,
    }


def _pixel_limit(value: int | None, default: int | None) -> int | None:
    """``--max-image-pixels``: unset keeps the library's default; 0 lifts the limit."""
    return default if value is None else value or None


def _str(value: Path | None) -> str | None:
    return None if value is None else str(value)


@app.command()
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
    runtime: Annotated[str, typer.Option(help="torch, or onnx (needs `mlic export` first).")] = "torch",
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /schema and /health, a page at / and API docs at /docs."""
    from mlic.serve import DEFAULT_MAX_IMAGE_PIXELS
    from mlic.serve import serve as serve_fn

    options = {"runtime": runtime} if runtime != "torch" else {}
    _run(
        serve_fn, artifact, host, port, log_level=log_level, max_upload_bytes=round(max_upload_mb * 2**20),
        max_files=max_files, max_image_pixels=_pixel_limit(max_image_pixels, DEFAULT_MAX_IMAGE_PIXELS),
        **options,
    )  # fmt: skip


# -- mlic data: inspect and split -------------------------------------------------
data_app = typer.Typer(no_args_is_help=True, help="Look at a data set and split it: inspect, split.")
app.add_typer(data_app, name="data")
Rows = Annotated[int, typer.Option(help="Table rows shown before a cut (the most frequent and the rarest).")]


@data_app.command("inspect")
def data_inspect(
    data: DataArg,
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
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

    options = _source_options(data, format, images_root, tag_separator, drop_unannotated)
    figures = _run(
        describe_data, data, source_options=options, check_images=check_images, full=full,
        top_pairs=top_pairs, max_listed=max(rows, 100), workers=workers,
    )  # fmt: skip
    typer.echo(json.dumps(figures) if as_json else format_description(figures, max_rows=rows))


@data_app.command("split")
def data_split(
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    rows: Rows = 20,
) -> None:
    """Split a data set into train / val / test by iterative stratification; prints each label's shares."""
    from mlic.data.split import format_split_report, split_data

    options = _source_options(data, format, images_root, tag_separator, drop_unannotated)
    result = _run(split_data, data, out, (val, test), seed=seed, overwrite=overwrite, source_options=options)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(format_split_report(result["report"], max_rows=rows))
    typer.echo("\nwrote:")
    for path in result["files"].values():
        typer.echo(f"  {path}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
