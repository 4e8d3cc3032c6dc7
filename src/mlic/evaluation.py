"""Evaluation of an artifact on a data set: predictions, then every figure of ``mlic.metrics``.

Figures that depend on a decision are given at the artifact's thresholds and,
under ``"at_0.5"``, at 0.5, so the gain from calibrated thresholds is visible.
"""

from __future__ import annotations

import math
from pathlib import Path

from mlic.data import load_data
from mlic.metrics import evaluate_arrays
from mlic.predict import Predictor, load

THRESHOLDED = (
    "micro_f1",
    "macro_f1",
    "micro_precision",
    "micro_recall",
    "macro_precision",
    "macro_recall",
    "hamming_loss",
    "subset_accuracy",
)


def evaluate(
    artifact: str | Path | Predictor,
    data: str | Path = "demo",
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> dict:
    """Metrics of ``artifact`` on ``data`` ("demo": the MultiDigits test split, or any source file).

    Returns a JSON-serialisable dict: ``mAP``, ``micro_f1``, ``macro_f1``,
    ``micro_precision``, ``micro_recall``, ``hamming_loss``,
    ``subset_accuracy``, ``attributes`` ({name: {"accuracy", "support"}}),
    ``per_label``, ``at_0.5`` and a description of what was evaluated.
    """
    predictor = (
        artifact
        if isinstance(artifact, Predictor)
        else load(artifact, batch_size=batch_size, num_workers=num_workers)
    )
    schema = predictor.schema
    manifest = load_data(
        data, schema=schema, split="test", demo_samples=demo_samples, seed=seed, **source_options
    )
    manifest.check_files()
    probs = predictor.predict_manifest(manifest)
    figures = evaluate_arrays(
        schema,
        manifest.labels,
        probs.labels,
        manifest.attributes,
        probs.attributes,
        predictor.artifact.thresholds,
    )
    at_half = evaluate_arrays(
        schema, manifest.labels, probs.labels, manifest.attributes, probs.attributes, 0.5
    )
    figures["at_0.5"] = {k: at_half[k] for k in THRESHOLDED}
    figures["artifact"] = str(predictor.artifact.path)
    figures["data"] = str(data)
    figures["ignored"] = manifest.meta.get("dropped", [])
    figures["model"] = {**predictor.artifact.model.to_dict(), "loss": predictor.artifact.training.get("loss")}
    return figures


def format_report(figures: dict, max_labels: int = 30) -> str:
    """A plain-text table of ``evaluate``'s figures, for the terminal."""
    lines = [f"{figures['artifact']} on {figures['data']}: {figures['n_samples']} images", ""]
    lines.append(f"{'metric':<22}{'thresholds':>12}{'at 0.5':>10}")
    lines.append(f"{'mAP':<22}{_fmt(figures['mAP']):>12}{'':>10}")
    for key in THRESHOLDED:
        lines.append(f"{key:<22}{_fmt(figures[key]):>12}{_fmt(figures['at_0.5'][key]):>10}")
    if figures["attributes"]:
        lines += ["", f"{'attribute':<22}{'accuracy':>12}{'support':>10}"]
        for name, a in figures["attributes"].items():
            lines.append(f"{name:<22}{_fmt(a['accuracy']):>12}{a['support']:>10}")
    per_label = figures.get("per_label") or {}
    if per_label:
        lines += ["", f"{'label':<22}{'AP':>8}{'P':>8}{'R':>8}{'F1':>8}{'thr':>8}{'support':>9}"]
        for name, s in list(per_label.items())[:max_labels]:
            lines.append(
                f"{name[:21]:<22}{_fmt(s['ap']):>8}{_fmt(s['precision']):>8}{_fmt(s['recall']):>8}"
                f"{_fmt(s['f1']):>8}{_fmt(s['threshold']):>8}{s['support']:>9}"
            )
        if len(per_label) > max_labels:
            lines.append(f"... {len(per_label) - max_labels} more labels (use --json for all)")
    if figures["labels_without_positives"]:
        lines.append(
            f"\nlabels without positives (left out of mAP and macro figures): "
            f"{', '.join(figures['labels_without_positives'][:20])}"
        )
    if figures["ignored"]:
        lines.append(f"in the data but unknown to the model (ignored): {', '.join(figures['ignored'][:20])}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
