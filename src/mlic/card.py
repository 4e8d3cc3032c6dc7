"""The model card: ``README.md`` in the artifact, a description of the model for a person.

Everything in it comes from what the artifact holds (``mlic.json``: schema,
model, preprocessing, decision rule, calibration, exports and the training
summary); what the artifact does not record is written as "not recorded",
never guessed. ``mlic.artifact`` writes the card whenever it writes
``mlic.json`` (training, ``mlic calibrate``, ``mlic export``), so the card
follows the artifact; loading an artifact never reads it.

``mlic evaluate --card`` adds a section "Evaluation on DATA" (one per data
set; a rerun on the same data replaces it). Each section records the rule it
was measured under (weights, thresholds, decision, calibration): a later
rewrite of the card keeps the sections whose rule is still the artifact's and
drops the others, whose figures no longer describe the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from mlic.data.images import Preprocessing
from mlic.fileio import atomic_write_text
from mlic.models import ModelConfig
from mlic.models.calibration import Calibration
from mlic.schema import LabelSchema
from mlic.thresholds import Decision

CARD_FILE = "README.md"
MAX_LABELS = 50
"""Labels listed one by one in the card; beyond this, the first ``MAX_LABELS`` and a count."""
NOT_RECORDED = "not recorded"
TRAINING_OPTIONS = ("max_epochs", "lr", "backbone_lr_scale", "weight_decay", "warmup_epochs", "batch_size",
                    "augment", "progressive_resize", "repeat_threshold", "seed", "split",
                    "val_fraction")  # fmt: skip
"""The options of the run's config that the card names (the rest are in ``mlic.json``)."""
EVALUATION_FIGURES = ("mAP", "micro_f1", "macro_f1", "micro_precision", "micro_recall", "samples_f1",
                      "hamming_loss", "subset_accuracy")  # fmt: skip
_SECTION = re.compile(r"<!-- mlic:evaluation (\{.*?\}) -->\n.*?<!-- mlic:end -->\n", re.DOTALL)


class Described(Protocol):
    """What the card reads of an artifact (``mlic.artifact.Artifact``)."""

    path: Path
    schema: LabelSchema
    model: ModelConfig
    preprocessing: Preprocessing
    decision: Decision
    training: dict
    weights_sha256: str
    exports: dict
    calibration: Calibration | None

    def to_dict(self) -> dict: ...


def model_card(artifact: Described, evaluations: list[str] | tuple[str, ...] = ()) -> str:
    """The card of ``artifact`` as Markdown, followed by the ``evaluations`` sections given."""
    training = artifact.training or {}
    config = training.get("config") or {}
    parts = [
        f"# Model card: {artifact.path.name}\n\n"
        "Written by mlic from this folder's `mlic.json`, and rewritten whenever mlic rewrites it "
        "(`mlic calibrate`, `mlic export`). Every figure is one the artifact records; what it does "
        f'not record is marked "{NOT_RECORDED}".\n',
        _labels(artifact),
        _data(training),
        _model(artifact, training, config),
        _training(training, config),
        _validation(training),
        _decision(artifact),
        _calibration(artifact, training),
        _exports(artifact.exports),
        _limits(artifact, training),
    ]
    return "\n".join(parts) + "".join("\n" + section for section in evaluations)


def write_card(artifact: Described, evaluation: dict | None = None) -> Path:
    """Write ``ARTIFACT/README.md`` atomically and return its path.

    Sections "Evaluation on DATA" already in the card are kept while the
    artifact's rule is the one they were measured under. ``evaluation``:
    figures of ``mlic.evaluation.evaluate`` on this artifact, added as the
    section of their data (replacing an earlier one on the same data).
    """
    path = artifact.path / CARD_FILE
    rule = rule_fingerprint(artifact)
    sections = [(key, text) for key, text in _sections(path) if key["rule"] == rule]
    if evaluation is not None:
        data = str(evaluation.get("data"))
        sections = [(key, text) for key, text in sections if key["data"] != data]
        key = {"data": data, "rule": rule}
        sections.append((key, evaluation_section(evaluation, key)))
    atomic_write_text(path, model_card(artifact, [text for _, text in sections]))
    return path


def rule_fingerprint(artifact: Described) -> str:
    """A digest of what decides the figures: weights, thresholds, decision rule, priors and calibration."""
    data = artifact.to_dict()
    keys = ("weights", "thresholds", "decision", "label_priors", "calibration")
    text = json.dumps({k: data.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluation_section(figures: dict, key: dict) -> str:
    """The card's section of one ``evaluate`` result, between markers that a rerun finds."""
    marker = json.dumps(key, sort_keys=True).replace(">", "\\u003e").replace("-", "\\u002d")
    lines = [f"<!-- mlic:evaluation {marker} -->", f"## Evaluation on {key['data']}", ""]
    ran, policy = figures.get("runtime") or {}, (figures.get("decision") or {}).get("policy", NOT_RECORDED)
    lines.append(
        f"`mlic evaluate` on {figures.get('n_samples', NOT_RECORDED)} images of `{key['data']}`, "
        f"runtime {ran.get('runtime', NOT_RECORDED)}, precision {ran.get('precision', NOT_RECORDED)}, "
        f"decisions under the artifact's rule ({policy})."
    )
    at_half = figures.get("at_0.5") or {}
    lines += ["", "| figure | artifact's rule | at 0.5 |", "|---|---|---|"]
    for name in EVALUATION_FIGURES:
        if name in figures:
            lines.append(f"| {name} | {_short(figures[name])} | {_short(at_half.get(name, '-'))} |")
    calibration = figures.get("calibration") or {}
    for name in ("ece_macro", "brier_macro"):
        if calibration.get(name) is not None:
            lines.append(f"| {name} | {_short(calibration[name])} | - |")
    parity = figures.get("parity")
    if parity:
        lines += ["", f"Parity with {parity.get('against')}: label decisions agree on "
                  f"{_short(parity.get('label_decision_agreement'))}, within the limits: "
                  f"{parity.get('within_limits')}."]  # fmt: skip
    if figures.get("attributes"):
        lines += ["", "| attribute | accuracy | support |", "|---|---|---|"]
        for name, a in figures["attributes"].items():
            lines.append(f"| {_cell(name)} | {_short(a.get('accuracy'))} | {a.get('support')} |")
    per_label = figures.get("per_label") or {}
    if per_label:
        lines += ["", "| label | AP | F1 | threshold | support |", "|---|---|---|---|---|"]
        for name, s in list(per_label.items())[:MAX_LABELS]:
            lines.append(f"| {_cell(name)} | {_short(s.get('ap'))} | {_short(s.get('f1'))} | "
                         f"{_short(s.get('threshold'))} | {s.get('support')} |")  # fmt: skip
        if len(per_label) > MAX_LABELS:
            lines.append(f"\n... and {len(per_label) - MAX_LABELS} more labels (`mlic evaluate --json`).")
    if figures.get("labels_without_positives"):
        names = ", ".join(figures["labels_without_positives"][:20])
        lines += ["", f"Labels without positives in this data (left out of mAP and macro figures): {names}"]
    return "\n".join([*lines, "<!-- mlic:end -->", ""])


# -- the sections of the card ------------------------------------------------------------------------


def _labels(artifact: Described) -> str:
    schema, thresholds = artifact.schema, artifact.decision.thresholds
    lines = ["## Labels and attributes", ""]
    n_attributes = len(schema.attributes)
    lines.append(f"{schema.n_labels} label{'s' * (schema.n_labels != 1)}, "
                 f"{n_attributes} attribute{'s' * (n_attributes != 1)}.")  # fmt: skip
    if artifact.decision.policy == "top-k":
        lines.append(f"Decisions are the {artifact.decision.k} best labels of each image; the thresholds "
                     "below are kept but do not decide.")  # fmt: skip
    if schema.n_labels:
        shown = min(schema.n_labels, MAX_LABELS)
        lines += [
            "",
            "Thresholds to four decimals (exact in `mlic.json`):",
            "",
            "| label | threshold |",
            "|---|---|",
        ]
        lines += [f"| {_cell(name)} | {_short(t)} |" for name, t in zip(schema.labels[:shown], thresholds)]
        if schema.n_labels > shown:
            lines += [
                "",
                f"... and {schema.n_labels - shown} more labels (all in `mlic.json`, `thresholds`).",
            ]
    if schema.attributes:
        lines += ["", "| attribute | classes (one per image) |", "|---|---|"]
        for a in schema.attributes:
            lines.append(f"| {_cell(a.name)} | {', '.join(map(_cell, a.classes))} |")
    return "\n".join(lines) + "\n"


def _data(training: dict) -> str:
    rows = [("data", training.get("data")), ("training images", training.get("train_images")),
            ("validation images", training.get("val_images")), ("epochs trained", training.get("epochs")),
            ("training time (s)", training.get("seconds")),
            ("unreadable images skipped", training.get("bad_images"))]  # fmt: skip
    if refit := training.get("refit"):
        again = f"trained again on {refit['train_images']} images (training and validation)"
        rows.append(
            (
                "refitted (--refit)",
                f"{again}, {refit['epochs']} epochs, {refit['seconds']} s; the "
                "decision rule and calibration are the first model's, chosen on validation",
            )
        )
    return _table("## Data", rows)


def _model(artifact: Described, training: dict, config: dict) -> str:
    model, pre = artifact.model, artifact.preprocessing
    head = model.head + (f" ({_inline(model.head_kwargs)})" if model.head_kwargs else "")
    rows = [("backbone", model.backbone), ("head", head), ("weights' origin", _origin(config)),
            ("input size", f"{pre.image_size[0]} x {pre.image_size[1]}"),
            ("preprocessing", f"resize {pre.resize}, {pre.interpolation} interpolation, mean "
                              f"{list(pre.mean)}, std {list(pre.std)} (on 0-1 pixels)"),
            ("label transfer", _inline(training["label_transfer"]) if training.get("label_transfer")
             else ("none" if "label_transfer" in training else None)),
            ("weights (model.safetensors) SHA-256", artifact.weights_sha256 or None)]  # fmt: skip
    return _table("## Model", rows)


def _origin(config: dict) -> str | None:
    """Where the backbone's starting weights came from, as the run's config records it."""
    if not config or "pretrained" not in config:
        return None
    if config.get("weights"):
        return f"the backbone weights file {config['weights']}, then trained on the data"
    if config.get("pretrained"):
        return "timm's pretrained weights for the backbone, then fine-tuned on the data"
    return "random initialisation: trained from scratch on the data"


def _training(training: dict, config: dict) -> str:
    rows = [("loss", _inline(training["loss"]) if training.get("loss") else None),
            ("precision", training.get("precision"))]  # fmt: skip
    rows += [(name, config[name]) for name in TRAINING_OPTIONS if name in config]
    text = _table("## Training options", rows)
    if config:
        text += "\nEvery option of the run is in `mlic.json` under `training.config`.\n"
    return text


def _validation(training: dict) -> str:
    figures = training.get("validation")
    if not figures:
        return f"## Validation figures\n\n{NOT_RECORDED}.\n"
    lines = ["## Validation figures", "", "On the validation split after training, labels at 0.5:", "",
             "| figure | value |", "|---|---|"]  # fmt: skip
    lines += [f"| {_cell(name)} | {_value(v)} |" for name, v in figures.items()]
    return "\n".join(lines) + "\n"


def _decision(artifact: Described) -> str:
    d = artifact.decision
    rows = [("policy", d.policy)]
    if d.policy == "top-k":
        rows += [("k", d.k), ("balance (scores / prior ** balance)", d.balance)]
    rows += [
        ("min_precision", d.min_precision),
        ("min_positives", d.min_positives),
        ("shrinkage", d.shrinkage),
    ]
    rows = [(name, value) for name, value in rows if value is not None or name == "policy"]
    chosen = d.chosen_by or {}
    if chosen.get("rule"):
        rows.append(("chosen by", chosen["rule"]))
    rows += [(f"chosen on: {name}", value) for name, value in d.source.items()]
    text = _table("## Decision rule", rows)
    text += ("\nAn image gets a label when the label's probability reaches its threshold "
             "(top-k: the k best labels); each attribute takes its most probable class.\n")  # fmt: skip
    candidates = chosen.get("candidates")
    if isinstance(candidates, dict) and candidates:
        names = list(dict.fromkeys(k for c in candidates.values() if isinstance(c, dict) for k in c))
        lines = ["", "Candidates, cross-validated (as `decision.chosen_by` records them):", "",
                 "| rule | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]  # fmt: skip
        for rule, c in candidates.items():
            c = c if isinstance(c, dict) else {}
            lines.append(f"| {_cell(rule)} | " + " | ".join(_value(c.get(n, "-")) for n in names) + " |")
        text += "\n".join(lines) + "\n"
    return text


def _calibration(artifact: Described, training: dict) -> str:
    c, summary = artifact.calibration, training.get("calibration") or {}
    if c is None:
        why = ""
        if summary.get("kept") is False:  # --calibration auto measured a map and left it out
            why = (
                f" {summary['rule']}: out-of-fold {_inline(summary['out_of_fold'])}, against "
                + f"{_inline(summary['uncalibrated'])} uncalibrated; not kept."
            )
        return f"## Probability calibration\n\nNone (the network's own sigmoids and softmaxes).{why}\n"
    rows = [("method", c.method), ("fitted on", _inline(c.fitted_on) if c.fitted_on else None)]
    if summary.get("rule"):
        rows.append(("chosen by", f"{summary['rule']}; out-of-fold {_inline(summary['out_of_fold'])}"))
    for when in ("before", "after"):
        if isinstance(summary.get(when), dict):
            rows.append((f"validation {when}", _inline(summary[when])))
    return _table("## Probability calibration", rows)


def _exports(exports: dict) -> str:
    if not exports:
        return "## Exports\n\nNone (`mlic export` writes ONNX and int8 copies).\n"
    lines = ["## Exports", ""]
    for name, record in exports.items():
        shown = {k: v for k, v in record.items() if k not in ("input", "output", "sha256", "weights_sha256")}
        lines.append(f"- **{_cell(name)}**: {_inline(shown)}")
    return "\n".join(lines) + "\n"


def _limits(artifact: Described, training: dict) -> str:
    data = training.get("data") or "its training data (not recorded)"
    lines = [
        "## Intended use and limits",
        "",
        f"- The model knows only the labels and attributes above, as they were annotated in `{data}`; "
        "images unlike that data (other cameras, domains or label meanings) may get confident wrong answers.",
        (
            f"- The thresholds were chosen on the validation split of {training['val_images']} images"
            if training.get("val_images")
            else "- Where the thresholds were chosen is not recorded"
        )
        + ": check them on data of your own (`mlic evaluate`, `mlic calibrate`) before relying on them.",
        "- Probabilities are scores for ranking and thresholding"
        + (", calibrated on validation data." if artifact.calibration else ", not calibrated.")
        + " A label's decision is only as good as its positives in training.",
    ]
    thresholds = np.asarray(artifact.decision.thresholds, dtype=np.float64)
    labels = artifact.schema.labels
    never = [n for n, t in zip(labels, thresholds) if t >= 1.0]
    always = [n for n, t in zip(labels, thresholds) if t <= 0.0]
    if never:
        lines.append(f"- Never predicted (threshold at 1 or above): {_names(never)}.")
    if always:
        lines.append(f"- Always predicted (threshold at 0 or below): {_names(always)}.")
    priors, train_images = artifact.decision.priors, training.get("train_images")
    if priors is not None and isinstance(train_images, int):
        few = [n for n, p in zip(labels, priors) if p * train_images < 5]
        if few:
            lines.append(
                f"- Fewer than 5 training positives (estimated from the label shares): {_names(few)}."
            )
    return "\n".join(lines) + "\n"


# -- formatting ---------------------------------------------------------------------------------------


def _sections(path: Path) -> list[tuple[dict, str]]:
    """The evaluation sections of the card at ``path`` (none when it is missing or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for match in _SECTION.finditer(text):
        try:
            key = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(key, dict) and isinstance(key.get("data"), str) and isinstance(key.get("rule"), str):
            out.append((key, match.group(0)))
    return out


def _table(title: str, rows: list[tuple[str, object]]) -> str:
    if all(value is None for _, value in rows):
        return f"{title}\n\n{NOT_RECORDED}.\n"
    lines = [title, "", "| | |", "|---|---|"]
    lines += [
        f"| {name} | {NOT_RECORDED if value is None else _cell(_value(value))} |" for name, value in rows
    ]
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    """A figure as stored (``repr`` of a float), other values as text."""
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _short(value: object) -> str:
    """A figure to four decimals (thresholds, evaluation figures; `mlic.json` and `--json` keep all)."""
    if value is None:
        return "-"
    if isinstance(value, float | np.floating) and not math.isnan(value):
        return f"{float(value):.4f}"
    return _value(value)


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    return _value(value)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
