"""Evaluation of an artifact on a data set: predictions, then every figure of ``mlic.metrics``.

Figures that depend on a decision are given at the artifact's thresholds and,
under ``"at_0.5"``, at 0.5, so the gain from calibrated thresholds is visible.
The calibration of the probabilities is measured under ``"calibration"``
(expected calibration error and Brier score, ``mlic.metrics.calibration``),
with the same figures of the uncalibrated probabilities when the artifact is
calibrated. :func:`calibrate_probabilities` fits that calibration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from mlic.artifact import load_history
from mlic.data.formats import load_data
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError
from mlic.metrics import calibration_figures, evaluate_arrays
from mlic.models.calibration import METHODS, choose_calibration, fit_calibration
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
    ``per_label``, ``at_0.5``, ``calibration`` (see :func:`probability_figures`)
    and a description of what was evaluated. ``audit``: an ``mlic audit``
    folder of the data, linked from the report. Decisions follow the
    artifact's rule (its thresholds, or top-k). With ``report``, also writes
    an HTML report into that folder, with the label maps of the
    worst-predicted images and, for an artifact that training wrote, the
    run's training curves. ``runtime`` and ``precision`` pick the network
    (as ``Predictor``'s; a given ``Predictor`` keeps its own); below float32,
    ``parity`` also runs float32 on the same images and adds ``parity``: how
    many decisions agree, and both mAPs.
    """
    predictor = _predictor(artifact, batch_size, num_workers, runtime=runtime, precision=precision)
    manifest, outputs = _outputs(predictor, data, "test", demo_samples, seed, source_options)
    probs = outputs.probabilities(manifest.schema, predictor.calibration)
    raw = outputs.probabilities(manifest.schema) if predictor.calibration is not None else None
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
    figures["calibration"] = probability_figures(manifest, probs, raw, predictor)
    for name, row in zip(manifest.schema.labels, figures["calibration"].pop("per_label")):
        figures["per_label"][name].update(row)
    if report is not None:
        from mlic.report import write_report

        explain = lambda rows: predictor.explain([manifest_image(manifest, i) for i in rows])  # noqa: E731
        figures["report"] = str(write_report(
            report, figures=figures, schema=manifest.schema, label_true=manifest.labels,
            label_score=probs.labels, attr_true=manifest.attributes, attr_probs=probs.attributes,
            thresholds=predictor.artifact.thresholds, images=manifest, audit=audit, explain=explain,
            uncalibrated_score=None if raw is None else raw.labels,
            history=load_history(predictor.artifact.path),
        ))  # fmt: skip
    return figures


def manifest_image(manifest: Manifest, i: int):
    """Image ``i`` of a manifest as ``Predictor`` takes it: its pixels when held in memory, else its file."""
    return manifest.pixels[i] if manifest.pixels is not None else manifest.paths[i]


def probability_figures(
    manifest: Manifest, probs: Probabilities, raw: Probabilities | None, predictor: Predictor
) -> dict:
    """How well calibrated the label probabilities are (``mlic.metrics.calibration_figures``).

    ``ece_macro``, ``ece_micro``, ``brier_macro``, ``brier_micro``, ``n_bins``,
    ``method`` (the artifact's calibration, None if uncalibrated), with
    ``uncalibrated`` holding the same four figures of ``raw`` (the probabilities
    before calibration) when given; ``per_label``: each label's ``ece`` and ``brier``.
    """
    calibration = predictor.calibration
    out: dict = {"method": None if calibration is None else calibration.method}
    if not manifest.schema.n_labels:
        return out | {"per_label": []}
    keys = ("ece_macro", "ece_micro", "brier_macro", "brier_micro")
    f = calibration_figures(manifest.labels, probs.labels)
    out |= {k: _number(f[k]) for k in keys} | {"n_bins": len(f["bins"]["count"])}
    if raw is not None:
        g = calibration_figures(manifest.labels, raw.labels)
        out["uncalibrated"] = {k: _number(g[k]) for k in keys}
    out["per_label"] = [{"ece": _number(e), "brier": _number(b)} for e, b in zip(f["ece"], f["brier"])]
    return out


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def calibrate_probabilities(
    artifact: str | Path | Predictor,
    data: str | Path = "demo",
    method: str = "auto",
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> dict:
    """Fit the artifact's probability calibration on ``data`` and rewrite its ``mlic.json`` atomically.

    ``method``: ``temperature`` or ``platt`` (``mlic.models.calibration``), or
    ``off`` to remove the calibration, or ``auto`` (the default): temperatures, kept only where
    5-fold cross-validation on ``data`` shows the ECE falling (``choose_calibration``; otherwise the
    calibration is removed, and ``chosen_by`` says why). ``data`` should be validation data
    ("demo": the MultiDigits validation split; a ``Manifest`` is used as it is). The map is fitted on the
    uncalibrated logits, whatever the artifact held before, and the decision
    rule's thresholds are re-expressed on the new probabilities, so that every
    decision stays as it was. Returns the ECE and Brier figures on ``data``
    before and after.
    """
    if method not in ("auto", *METHODS, "off"):
        choices = ["auto", *METHODS, "off"]
        raise ConfigError(f"unknown calibration method {method!r}; expected one of {choices}")
    predictor = _predictor(artifact, batch_size, num_workers)
    manifest, outputs = _outputs(predictor, data, "val", demo_samples, seed, source_options)
    target, schema = predictor.artifact, manifest.schema
    old = target.calibration
    before = outputs.probabilities(schema, old)
    raw_thresholds = old.thresholds(target.decision.thresholds, inverse=True) if old else target.thresholds
    new, chosen_by = None, None
    on = {"data": manifest.source if isinstance(data, Manifest) else str(data), "images": len(manifest)}
    if method == "auto":
        new, chosen_by = choose_calibration(
            schema, outputs.logits, manifest.labels, manifest.attributes, seed=seed, fitted_on=on
        )
    elif method != "off":
        new = fit_calibration(
            schema, outputs.logits, manifest.labels, manifest.attributes, method, fitted_on=on
        )
    thresholds = new.thresholds(raw_thresholds) if new else raw_thresholds
    target.decision = replace(target.decision, thresholds=thresholds)
    target.calibration = new
    target.save_config()
    after = outputs.probabilities(schema, new)
    figures = {}
    for when, probs in (("before", before), ("after", after)):
        f = calibration_figures(manifest.labels, probs.labels) if schema.n_labels else {}
        figures[when] = {k: _number(f[k]) for k in ("ece_macro", "ece_micro", "brier_macro", "brier_micro")
                         if k in f}  # fmt: skip
    return {
        "artifact": str(target.path),
        "data": str(data),
        "n_samples": len(manifest),
        "method": method,
        "before": figures["before"],
        "after": figures["after"],
        "calibration": None if new is None else new.to_dict(schema),
        "chosen_by": chosen_by,
        "thresholds": dict(zip(schema.labels, map(float, thresholds))),
    }


def check_balance(decision: Decision, balance: float | None) -> None:
    """Refuse a top-k balance below 0, or above 0 for an artifact without label priors to divide by."""
    if balance is None:
        return
    if not balance >= 0:
        raise ConfigError(f"balance must be >= 0, got {balance}")
    if balance and decision.priors is None:
        raise ConfigError("the artifact has no label priors (written before top-k balance), "
                          "so top-k ranks by score alone: balance 0")  # fmt: skip


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
    balance: float | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> dict:
    """Choose the artifact's decision rule on ``data`` and rewrite its ``mlic.json`` atomically.

    ``data`` should be validation data ("demo": the MultiDigits validation
    split). ``policy`` and its parameters are those of
    :func:`mlic.thresholds.choose_thresholds`. ``balance`` sets how top-k
    ranks (``score / prior ** balance``; 0: by score alone); None keeps the one
    training chose. Returns the figures on ``data`` before and after, and the
    new thresholds.
    """
    predictor = _predictor(artifact, batch_size, num_workers)
    check_balance(predictor.artifact.decision, balance)
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
    old = target.decision  # top-k ranking keeps what training chose, unless told otherwise
    balance = old.balance if balance is None else float(balance)
    target.decision = replace(decision, source=source, priors=old.priors, balance=balance)
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
    manifest, outputs = _outputs(predictor, data, split, demo_samples, seed, source_options)
    return manifest, outputs.probabilities(manifest.schema, predictor.calibration)


def _outputs(predictor: Predictor, data, split: str, demo_samples, seed, source_options) -> tuple:
    if isinstance(data, Manifest):  # already read (e.g. a training run's validation split)
        manifest = data
    else:
        manifest = load_data(data, schema=predictor.schema, split=split, demo_samples=demo_samples,
                             seed=seed, **source_options)  # fmt: skip
    manifest.check_files()
    return manifest, predictor.manifest_outputs(manifest)


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
    cal = figures.get("calibration") or {}
    if cal.get("ece_macro") is not None or cal.get("ece_micro") is not None:
        raw = cal.get("uncalibrated")
        lines += ["", f"{'calibration':<22}{'value':>12}" + (f"{'uncalibrated':>14}" if raw else "")]
        for key in ("ece_macro", "ece_micro", "brier_macro", "brier_micro"):
            lines.append(f"{key:<22}{_fmt(cal.get(key)):>12}" + (f"{_fmt(raw.get(key)):>14}" if raw else ""))
        method = cal.get("method") or "uncalibrated"
        lines.append(f"(probabilities: {method}; ECE over {cal.get('n_bins')} bins)")
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
