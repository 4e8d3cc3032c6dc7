"""Evaluation of an artifact on a data set: predictions, then every figure of ``mlic.metrics``.

Figures that depend on a decision are given at the artifact's thresholds and,
under ``"at_0.5"``, at 0.5, so the gain from calibrated thresholds is visible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from mlic.data.formats import load_data
from mlic.data.manifest import Manifest
from mlic.metrics import evaluate_arrays
from mlic.models.outputs import Probabilities
from mlic.predict import Predictor, load
from mlic.quantize import LIMITS, measure_parity
from mlic.thresholds import UNREACHABLE, Decision, choose_thresholds

THRESHOLDED = (
    "micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall",
    "samples_f1", "samples_precision", "samples_recall", "CP", "CR", "CF1", "OP", "OR", "OF1",
    "hamming_loss", "jaccard_samples", "subset_accuracy",
)  # fmt: skip
"""Figures that depend on the decision rule: given under it and at 0.5."""
RANKING = ("mAP", "weighted_mAP", "macro_auroc", "lrap", "ranking_loss", "coverage_error", "one_error",
           "precision_at_1", "precision_at_3", "precision_at_5")  # fmt: skip
"""Figures of the scores alone, whatever the decision rule."""


def evaluate(
    artifact: str | Path | Predictor,
    data: str | Path = "demo",
    *,
    report: str | Path | None = None,
    audit: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    runtime: str = "torch",
    precision: str = "fp32",
    parity: bool = True,
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> dict:
    """Metrics of ``artifact`` on ``data`` ("demo": the MultiDigits test split, or any source file).

    Returns a JSON-serialisable dict: ``mAP``, ``micro_f1``, ``macro_f1``,
    ``micro_precision``, ``micro_recall``, ``hamming_loss``,
    ``subset_accuracy``, ``attributes`` ({name: {"accuracy", "support"}}),
    ``per_label``, ``at_0.5`` and a description of what was evaluated.
    ``audit``: an ``mlic audit`` folder of the data, linked from the report.
    Decisions follow the artifact's rule (its thresholds, or top-k). With
    ``report``, also writes an HTML report into that folder. ``runtime`` and
    ``precision`` pick the network (as ``Predictor``'s; a given ``Predictor``
    keeps its own); below float32, ``parity`` also runs float32 on the same
    images and adds ``parity``: how many decisions agree, and both mAPs.
    """
    predictor = _predictor(artifact, batch_size, num_workers, runtime=runtime, precision=precision)
    manifest, probs = _predict(predictor, data, "test", demo_samples, seed, source_options)
    figures = decision_figures(manifest, probs, predictor.artifact.decision)
    at_half = decision_figures(manifest, probs, Decision("fixed", np.full(manifest.schema.n_labels, 0.5)))
    figures["at_0.5"] = {k: at_half[k] for k in THRESHOLDED}
    figures["artifact"] = str(predictor.artifact.path)
    figures["data"] = str(data)
    figures["decision"] = predictor.artifact.decision.to_dict()
    figures["ignored"] = manifest.meta.get("dropped", [])
    figures["model"] = {**predictor.artifact.model.to_dict(), "loss": predictor.artifact.training.get("loss")}
    figures["runtime"] = {"runtime": predictor.runtime, "precision": predictor.precision}
    if parity and predictor.precision != "fp32":
        figures["parity"] = _parity(predictor, manifest, probs)
    if report is not None:
        from mlic.report import write_report

        figures["report"] = str(write_report(
            report, figures=figures, schema=manifest.schema, label_true=manifest.labels,
            label_score=probs.labels, attr_true=manifest.attributes, attr_probs=probs.attributes,
            thresholds=predictor.artifact.thresholds, images=manifest, audit=audit,
        ))  # fmt: skip
    return figures


def calibrate(
    artifact: str | Path,
    data: str | Path = "demo",
    policy: str = "per-label",
    *,
    threshold: float = 0.5,
    k: int | None = None,
    min_precision: float | None = None,
    min_positives: int = 3,
    shrinkage: float | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> dict:
    """Choose the artifact's decision rule on ``data`` and rewrite its ``mlic.json`` atomically.

    ``data`` should be validation data ("demo": the MultiDigits validation
    split). ``policy`` and its parameters are those of
    :func:`mlic.thresholds.choose_thresholds`. Returns the figures on ``data``
    before and after, and the new thresholds.
    """
    predictor = _predictor(artifact, batch_size, num_workers)
    manifest, probs = _predict(predictor, data, "val", demo_samples, seed, source_options)
    before = decision_figures(manifest, probs, predictor.artifact.decision)
    decision = choose_thresholds(
        manifest.labels,
        probs.labels,
        policy,
        threshold=threshold,
        k=k,
        min_precision=min_precision,
        min_positives=min_positives,
        shrinkage=shrinkage,
        seed=seed,
    )
    after = decision_figures(manifest, probs, decision)
    target = predictor.artifact
    source = {"calibrated_on": str(data), "calibration_images": len(manifest)}
    old = target.decision  # top-k ranking keeps what training chose
    target.decision = replace(decision, source=source, priors=old.priors, balance=old.balance)
    target.save_config()
    labels = manifest.schema.labels
    return {
        "artifact": str(target.path),
        "data": str(data),
        "n_samples": len(manifest),
        "decision": target.decision.to_dict(),
        "before": {key: before[key] for key in THRESHOLDED},
        "after": {key: after[key] for key in THRESHOLDED},
        "thresholds": dict(zip(labels, map(float, decision.thresholds))),
        "unreachable": [n for n, t in zip(labels, decision.thresholds) if min_precision and t >= UNREACHABLE],
    }


def decision_figures(manifest: Manifest, probs: Probabilities, decision: Decision) -> dict:
    """``evaluate_arrays`` with the thresholded figures taken under ``decision`` (thresholds or top-k)."""
    schema = manifest.schema
    args = (schema, manifest.labels, probs.labels, manifest.attributes, probs.attributes)
    figures = evaluate_arrays(*args, decision.thresholds)
    if decision.policy == "top-k":
        # Decisions by rank: evaluate the 0/1 decisions as scores at 0.5 for every thresholded figure.
        decided = decision.decide(probs.labels).astype(np.float32)
        by_rank = evaluate_arrays(
            schema, manifest.labels, decided, manifest.attributes, probs.attributes, 0.5
        )
        figures.update({key: by_rank[key] for key in THRESHOLDED})
        for name, row in figures.get("per_label", {}).items():
            row.update({key: by_rank["per_label"][name][key] for key in ("precision", "recall", "f1")})
    return figures


def _predictor(artifact: str | Path | Predictor, batch_size: int, num_workers: int, **options) -> Predictor:
    if isinstance(artifact, Predictor):
        return artifact
    return load(artifact, batch_size=batch_size, num_workers=num_workers, **options)


def _parity(predictor: Predictor, manifest: Manifest, probs: Probabilities) -> dict:
    """The predictor's outputs against float32's (same runtime and device) on the same images."""
    reference = Predictor(
        predictor.artifact, device=str(predictor.device), batch_size=predictor.batch_size,
        num_workers=predictor.num_workers, runtime=predictor.runtime,
    )  # fmt: skip
    expected = reference.predict_manifest(manifest)
    measured = measure_parity(expected, probs, manifest, predictor.artifact.decision.decide)
    return {**measured.to_dict(), "against": f"{predictor.runtime} fp32", "limits": asdict(LIMITS),
            "within_limits": not measured.failures()}  # fmt: skip


def _predict(predictor: Predictor, data, split: str, demo_samples, seed, source_options) -> tuple:
    manifest = load_data(data, schema=predictor.schema, split=split, demo_samples=demo_samples, seed=seed,
                         **source_options)  # fmt: skip
    manifest.check_files()
    return manifest, predictor.predict_manifest(manifest)


def format_report(figures: dict, max_labels: int = 30) -> str:
    """A plain-text table of ``evaluate``'s figures, for the terminal."""
    lines = [f"{figures['artifact']} on {figures['data']}: {figures['n_samples']} images", ""]
    model = figures.get("model") or {}
    if model:
        settings = dict(model.get("loss") or {})
        hidden = settings.pop("hidden_positives", None)
        loss = ", ".join(f"{k}={v}" for k, v in settings.items())
        lines.append(f"model: backbone {model.get('backbone')}, head {model.get('head')}; loss {loss}")
        if hidden:
            lines.append(f"trained with {hidden['fraction']:.0%} of its positives hidden as {hidden['as']}")
    policy = figures.get("decision", {}).get("policy", "per-label")
    lines.append(
        f"decisions: {policy}" + (f" (k={figures['decision'].get('k')})" if policy == "top-k" else "")
    )
    lines += _parity_lines(figures)
    lines.append(f"{'metric':<22}{'artifact':>12}{'at 0.5':>10}")
    for key in THRESHOLDED:
        lines.append(f"{key:<22}{_fmt(figures[key]):>12}{_fmt(figures['at_0.5'][key]):>10}")
    lines += ["", f"{'ranking metric':<22}{'value':>12}"]
    lines += [f"{key:<22}{_fmt(figures.get(key)):>12}" for key in RANKING]
    if figures["attributes"]:
        lines += ["", f"{'attribute':<22}{'accuracy':>12}{'macro_f1':>10}{'support':>10}"]
        for name, a in figures["attributes"].items():
            lines.append(
                f"{name:<22}{_fmt(a['accuracy']):>12}{_fmt(a.get('macro_f1')):>10}{a['support']:>10}"
            )
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


def _parity_lines(figures: dict) -> list[str]:
    """The precision that ran and, below float32, its parity with float32 on these images."""
    ran = figures.get("runtime") or {}
    if ran.get("precision", "fp32") == "fp32":
        return []
    lines = [f"precision: {ran['precision']} ({ran['runtime']} runtime)"]
    parity = figures.get("parity")
    if parity:
        shares = {"label decisions": parity["label_decision_agreement"],
                  "attribute classes": parity["attribute_agreement"]}  # fmt: skip
        agree = [f"{name} agree on {share:.2%}" for name, share in shares.items() if share is not None]
        if parity["map_difference"] is not None:
            agree.append(f"mAP {parity['map_variant']:.4f} vs {parity['map_reference']:.4f}")
        verdict = "within" if parity["within_limits"] else "OUTSIDE"
        lines.append(f"parity with {parity['against']}: {', '.join(agree)} ({verdict} the limits)")
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
