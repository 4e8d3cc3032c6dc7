"""``mlic evaluate`` (figures of a model on data) and ``mlic calibrate`` (choose its decision rule, or with
``--probabilities`` calibrate its probabilities)."""

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
    PrecisionOption,
    RuntimeOption,
    Separator,
    run,
    source_options,
)


def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact (or run) directory.")],
    data: DataArg = "demo",
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: AsJson = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report into this folder.")] = None,
    audit: Annotated[Path | None, typer.Option(help="Link this mlic audit folder from the report.")] = None,
    batch_size: int = 64,
    workers: int = 0,
    runtime: RuntimeOption = "torch",
    precision: PrecisionOption = "fp32",
    parity: Annotated[
        bool, typer.Option("--parity/--no-parity", help="Below fp32: also run fp32 and compare decisions.")
    ] = True,
    card: Annotated[
        bool,
        typer.Option(
            "--card", help="Add the figures to the artifact's model card (README.md) as 'Evaluation on DATA'."
        ),
    ] = False,
) -> None:
    """Figures of a model on data: mAP, F1, Hamming loss, subset and attribute accuracy."""
    from mlic.card import write_card
    from mlic.evaluation import evaluate as evaluate_fn
    from mlic.evaluation import format_report
    from mlic.predict import load

    options = source_options(data, format, images_root, tag_separator, drop_unannotated)
    predictor = run(
        load, artifact, batch_size=batch_size, num_workers=workers, runtime=runtime, precision=precision
    )
    figures = run(evaluate_fn, predictor, data, report=report, audit=audit, parity=parity, **options)
    typer.echo(json.dumps(figures) if as_json else format_report(figures))
    if report is not None and not as_json:
        typer.echo(f"\nreport: {figures['report']}")
    if card:
        written = write_card(predictor.artifact, evaluation=figures)
        if not as_json:
            typer.echo(f"\nmodel card: {written}")


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
    balance: Annotated[
        float | None,
        typer.Option(
            help="How top-k ranks an image's labels: score / prior ** BALANCE (0: by score alone; "
            "higher lets rare labels in). Default: keep the one training chose."
        ),
    ] = None,
    probabilities: Annotated[
        bool,
        typer.Option(
            "--probabilities",
            help="Calibrate the probabilities instead (--method); the decisions stay the same.",
        ),
    ] = False,
    method: Annotated[
        str,
        typer.Option(
            help="--probabilities: auto (temperatures, kept where 5-fold cross-validation on DATA shows "
            "the ECE falling), temperature (per label and attribute), platt (per label) or off."
        ),
    ] = "auto",
    format: Format = None,
    images_root: ImagesRoot = None,
    tag_separator: Separator = " ",
    drop_unannotated: DropUnannotated = False,
    as_json: AsJson = False,
    batch_size: int = 64,
    workers: int = 0,
) -> None:
    """Choose the artifact's decision rule (thresholds or top-k) on validation data, or with
    --probabilities calibrate its probabilities."""
    from mlic.evaluation import calibrate as calibrate_fn
    from mlic.evaluation import calibrate_probabilities

    options = source_options(data, format, images_root, tag_separator, drop_unannotated)
    if probabilities:
        result = run(calibrate_probabilities, artifact, data, method, batch_size=batch_size,
                     num_workers=workers, **options)  # fmt: skip
        if as_json:
            typer.echo(json.dumps(result))
            return
        chosen = result["calibration"]["method"] if result["calibration"] else "none"
        typer.echo(f"{result['artifact']}: probabilities {method} ({chosen}) on {result['data']} "
                   f"({result['n_samples']} images); decisions unchanged")  # fmt: skip
        if result["chosen_by"] is not None:
            record = result["chosen_by"]
            before, after = record["uncalibrated"]["ece_macro"], record["out_of_fold"]["ece_macro"]
            typer.echo(f"  {record['rule']}: out-of-fold macro ECE {_fmt(before)} -> {_fmt(after)}, "
                       f"{'kept' if record['kept'] else 'not kept'}")  # fmt: skip
        for key in ("ece_macro", "ece_micro", "brier_macro", "brier_micro"):
            if key in result["before"]:
                before, after = result["before"][key], result["after"][key]
                typer.echo(f"  {key:<16} {_fmt(before)} -> {_fmt(after)}")
        return
    result = run(
        calibrate_fn, artifact, data, policy, threshold=threshold, k=k, min_precision=min_precision,
        min_positives=min_positives, shrinkage=shrinkage, balance=balance, batch_size=batch_size,
        num_workers=workers,
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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
