"""The evaluation report: one offline HTML page of an evaluation's figures, tables and plots.

:func:`write_report` writes ``DIR/index.html`` and its PNG plots and thumbnails
under ``DIR/img/``, referred to relatively; the page loads nothing from the
network (inline CSS and JavaScript, system fonts), so the folder can be moved or
archived. Plots use matplotlib's object-oriented API (Agg), so no global backend
is switched. Sections that do not apply to the schema are left out.

**Worst-predicted images** are those with the highest loss of the kind the model
is trained on: binary cross-entropy summed over the image's known labels plus the
cross-entropy of each known attribute (probabilities clipped to [1e-6, 1 - 1e-6]).
A summed loss ranks confident mistakes above hesitant ones, and many mistakes
above one. With 10,000 labels the table has 10,000 rows, but only a fixed number
of curves and heatmap cells is drawn. Given an ``explain`` function
(``Predictor.explain``), each worst image also shows the label maps of its
mistakes and decisions (``mlic.models.maps``), mistakes first.

**Calibration** shows the reliability diagram of the label probabilities
(every known label entry pooled into equal-width bins; the uncalibrated
probabilities beside them when given), the expected calibration error and
Brier score, and the labels with the largest ECE (``mlic.metrics.calibration``).

**Training curves**, given the history of the run that trained the model (the
artifact's ``history.csv``, ``mlic.artifact.load_history``), draw each figure
logged per epoch against the epoch, training and validation on the same axes,
as Keras users plot a model's training history: the loss, mAP, micro-F1 and
the attributes' accuracy. Without a history the section is left out.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps

from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.fileio import atomic_write_bytes, atomic_write_text
from mlic.metrics import calibration_figures, check_inputs, label_counts, multilabel_scores
from mlic.overlays import overlay
from mlic.schema import LabelSchema

N_CURVES = 6  # labels per panel of the best / worst PR and F1 curves
MIN_SUPPORT = 5  # positives a label needs to be ranked best / worst (when some label has that many)
N_TOP = 30  # most frequent labels in the frequency bars and the co-occurrence heatmap
THUMB = 256  # longest side of the worst-image thumbnails, px
MAX_CHIPS = 8  # labels listed per row of a worst-image card; the rest are counted
MAX_MAPS = 4  # label maps drawn per worst-image card
N_WORST_ECE = 10  # labels listed by ECE in the calibration section
EPS = 1e-6
SUMMARY = "mAP micro_f1 macro_f1 micro_precision micro_recall macro_precision macro_recall hamming_loss"
SUMMARY = (*SUMMARY.split(), "subset_accuracy")
COLUMNS = ("support", "AP", "precision", "recall", "F1", "threshold", "TP", "FP", "FN", "TN")
esc = html.escape


def write_report(
    directory: str | Path,
    *,
    figures: dict,
    schema: LabelSchema,
    label_true: np.ndarray,
    label_score: np.ndarray,
    attr_true: np.ndarray,
    attr_probs: list[np.ndarray],
    thresholds: np.ndarray,
    images: Manifest,
    title: str = "mlic evaluation",
    max_worst: int = 24,
    audit: str | Path | None = None,
    explain: Callable[[Sequence[int]], Any] | None = None,
    uncalibrated_score: np.ndarray | None = None,
    history: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write an offline HTML report of an evaluation to ``directory/index.html``; return its path.

    ``figures`` is the dict of :func:`mlic.evaluate` or :func:`mlic.metrics.evaluate_arrays`
    (``"at_0.5"``, ``"artifact"``, ``"data"``, ``"model"`` are shown when present).
    ``label_true`` int [N, L] (1, 0, -1 unknown), ``label_score`` float [N, L]
    probabilities, ``attr_true`` int [N, A] class indices (-1 unknown), ``attr_probs``
    one [N, classes] array per attribute, ``thresholds`` float [L] or a scalar; the
    arrays of a part the schema lacks may be None. ``images`` is the evaluated
    manifest, row for row (files or in-memory pixels); thumbnails of the ``max_worst``
    worst-predicted images are copied into the report. ``explain``: a function from
    row indices to their label maps (``Predictor.explain``'s ``LabelMaps``), to draw
    the maps of the worst images; ``uncalibrated_score``: the label probabilities
    before calibration, float [N, L], drawn beside them in the reliability diagram.
    ``history``: the training run's figures per epoch, one array per column with
    ``epoch`` among them (NaN where not logged), drawn as training curves.
    ``audit``: the folder of an ``mlic audit`` of the data, linked with its counts.
    The folder is created; a file in its place raises ``ConfigError``, inputs that
    do not fit ``DataError``.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the report directory exists and is a file; give a folder path")
    n = len(images)
    c = check_inputs(
        y_true=np.zeros((n, 0), np.int8) if label_true is None else label_true,
        y_score=np.zeros((n, 0)) if label_score is None else label_score,
        thresholds=0.5 if thresholds is None else thresholds,
        attr_true=np.zeros((n, 0), np.int64) if attr_true is None else attr_true,
        attr_probs=[] if attr_probs is None else attr_probs,
        argnames={"y_true": "label_true", "y_score": "label_score"},
    )
    widths = [c["y_true"].shape[1], c["attr_true"].shape[1], *(p.shape[1] for p in c["attr_probs"])]
    expected = [schema.n_labels, schema.n_attributes, *(len(a.classes) for a in schema.attributes)]
    if widths != expected or c["y_true"].shape[0] != n:
        raise DataError(
            f"report inputs have {c['y_true'].shape[0]} rows and columns {widths} (labels, attributes, "
            f"classes per attribute); expected {n} rows (the images) and columns {expected}"
        )
    (out / "img").mkdir(parents=True, exist_ok=True)
    d = dict(c, schema=schema, figures=figures, out=out, pred=c["y_score"] >= c["thresholds"])
    d["per"] = _per_label(d)
    sections = [("summary", "Summary", _summary(d))]
    curves = _history_panels(history)
    if curves:
        sections.append(("training", "Training curves", _training(d, history["epoch"], curves)))
    if schema.n_labels:
        sections += [
            ("labels", "Per-label figures", _label_table(d)),
            ("curves", "Curves of the best and worst labels", _curves(d)),
            ("frequency", "Label frequency and co-occurrence", _label_stats(d)),
            ("calibration", "Calibration of the probabilities", _calibration(d, uncalibrated_score)),
        ]
    if schema.n_attributes:
        sections.append(("attributes", "Attributes", _attributes(d)))
    if max_worst > 0 and n:
        sections.append(("worst", "Worst-predicted images", _worst(d, images, max_worst, explain)))
    if audit is not None:
        sections.append(("audit", "Label audit", _audit(Path(audit), out)))
    path = out / "index.html"
    _write(path, _page(title, _meta(d), sections))
    return path


# -- data -----------------------------------------------------------------------------------------
def _per_label(d: dict) -> dict[str, np.ndarray]:
    """Arrays [L]: the figures' AP, precision, recall, F1 (NaN for None), support, threshold, TP..TN."""
    labels, per = d["schema"].labels, d["figures"].get("per_label") or {}
    if not all(name in per for name in labels):  # figures without per_label: compute them
        m = multilabel_scores(d["y_true"], d["y_score"], d["thresholds"])["per_label"]
        per = {name: {k: m[k][j] for k in m} for j, name in enumerate(labels)}
    out = {
        key: np.array([np.nan if per[n].get(key.lower()) is None else per[n][key.lower()] for n in labels])
        for key in ("AP", "precision", "recall", "F1")
    }
    out |= {k.upper(): v for k, v in label_counts(d["y_true"], d["pred"]).items()}
    return out | {"support": out["TP"] + out["FN"], "threshold": d["thresholds"]}


def _image_loss(d: dict) -> np.ndarray:
    """Per image: BCE summed over known labels plus CE of each known attribute (see the module doc)."""
    y, s = d["y_true"], d["y_score"]
    loss = np.zeros(len(y))
    step = max(1, (1 << 22) // max(y.shape[1], 1))
    for i in range(0, len(y), step):  # row blocks bound the memory with 10,000 labels
        t, p = y[i : i + step], np.clip(s[i : i + step], EPS, 1 - EPS)
        bce = np.where(t == 1, -np.log(p), 0) + np.where(t == 0, -np.log1p(-p), 0)
        loss[i : i + step] = bce.sum(axis=1)
    for j, p in enumerate(d["attr_probs"]):
        known = np.flatnonzero(d["attr_true"][:, j] >= 0)
        loss[known] -= np.log(np.clip(p[known, d["attr_true"][known, j]], EPS, 1.0))
    return loss


def _f1_curve(y: np.ndarray, s: np.ndarray, bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """F1 of ``s >= t`` on a grid of thresholds t in [0, 1], over known entries (from histograms)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    s = np.clip(s, 0.0, 1.0)
    tp = np.histogram(s[y == 1], edges)[0][::-1].cumsum()[::-1]
    fp = np.histogram(s[y == 0], edges)[0][::-1].cumsum()[::-1]
    fn = (y == 1).sum() - tp
    return edges[:-1], 2 * tp / np.maximum(2 * tp + fp + fn, 1)


# -- sections -------------------------------------------------------------------------------------
def _summary(d: dict) -> str:
    f, at_half = d["figures"], d["figures"].get("at_0.5") or {}
    extra = [k for k, v in f.items() if k not in SUMMARY and k != "n_samples" and _is_number(v)]
    rows = [
        f"<tr><td>{esc(k)}</td><td>{_fmt(f.get(k))}</td><td>{_fmt(at_half.get(k))}</td></tr>"
        for k in (*SUMMARY, *extra)
        if f.get(k) is not None
    ]
    cards = [(k, f.get(k)) for k in ("mAP", "micro_f1", "macro_f1", "subset_accuracy")]
    cards += [(f"{name} accuracy", a.get("accuracy")) for name, a in (f.get("attributes") or {}).items()]
    cards_html = "".join(
        f'<div class="card"><div class="v">{_fmt(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in cards
        if v is not None
    )
    return f'<div class="cards">{cards_html}</div>' + _table(["metric", "at the thresholds", "at 0.5"], rows)


def _history_panels(history: dict[str, np.ndarray] | None) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """The training-curve panels of a history: (title, [(curve label, values per epoch)]), the loss first,
    then mAP, micro-F1, the attributes' accuracy together, then any other figure; none without a history.

    Columns are named ``train/NAME`` or ``val/NAME`` (as training logs them); each
    NAME is one panel, but ``*_accuracy``, one curve per attribute in one panel.
    """
    if not history or "epoch" not in history:
        return []
    splits = {"train": "training", "val": "validation"}
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for column, values in history.items():
        if column == "epoch" or np.isnan(values).all():
            continue
        split, _, name = column.rpartition("/")
        where = splits.get(split, split)
        if name.endswith("_accuracy"):
            attribute = name.removesuffix("_accuracy")
            panels.setdefault("attribute accuracy", []).append((f"{attribute} ({where or 'logged'})", values))
        else:
            panels.setdefault(name, []).append((where or name, values))
    first = ["loss", "mAP", "micro_f1", "attribute accuracy"]
    order = [n for n in first if n in panels] + [n for n in panels if n not in first]
    return [(name, panels[name]) for name in order]


def _training(d: dict, epochs: np.ndarray, panels: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> str:
    """The training curves, four panels a row, with the epoch of the best validation figure named."""
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4.4 * columns, 3.6 * rows), layout="constrained")
    first = None
    for k, (name, curves) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, k + 1, sharex=first)  # every panel spans every epoch
        first = first or ax
        for label, values in curves:
            known = ~np.isnan(values)
            ax.plot(epochs[known], values[known], "o-", markersize=3, label=_tex(label))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _axes(ax, _tex(name), "epoch", _tex(name))
    note = f"<p>{len(epochs)} epoch(s) of the run that trained the model (its <code>history.csv</code>)"
    for name, curves in panels:
        best = dict(curves).get("validation")
        if name in ("mAP", "micro_f1") and best is not None and not np.isnan(best).all():
            j = int(np.nanargmax(best))
            note += f"; best validation {esc(name)} {best[j]:.4f} at epoch {epochs[j]:g}"
    note += ". The artifact keeps the weights of the epoch with the lowest validation loss.</p>"
    return note + _img(_save(fig, d, "training_curves.png"), "training curves")


def _label_table(d: dict) -> str:
    per, labels = d["per"], d["schema"].labels
    cols = [(k, "%d" if k in ("support", "TP", "FP", "FN", "TN") else "%.4f") for k in COLUMNS]
    rows = [
        f"<tr><td>{esc(name)}</td>{''.join(f'<td>{_fmt(per[k][j], spec)}</td>' for k, spec in cols)}</tr>"
        for j, name in enumerate(labels)
    ]
    no_pos = [esc(name) for j, name in enumerate(labels) if per["support"][j] == 0]
    note = no_pos and (
        f'<details class="note" id="no-positives"><summary><b>{len(no_pos)} label(s) without positives'
        "</b> in the data: no AP, precision, recall or F1; left out of mAP and macro figures</summary>"
        f"{', '.join(no_pos)}</details>"
    )
    return (
        f"<p>{len(labels)} labels at their thresholds; P / R / F1 and the counts cover known targets only. "
        'Click a header to sort (again to reverse); missing values sort last.</p><p><input id="label-filter" '
        'type="search" placeholder="filter labels" aria-label="filter labels"></p>'
        f'<div class="scroll">{_table(["label", *COLUMNS], rows, "label-table")}</div>{note or ""}'
    )


def _curves(d: dict) -> str:
    from sklearn.metrics import precision_recall_curve

    per, labels, y, s = d["per"], d["schema"].labels, d["y_true"], d["y_score"]
    floor = max(1, min(MIN_SUPPORT, int(per["support"].max())))  # AP of a label seen once says little
    order = np.lexsort((-per["support"], -np.nan_to_num(per["AP"], nan=-1.0)))
    ranked = [int(j) for j in order if per["support"][j] >= floor]
    best, worst = ranked[:N_CURVES], ranked[N_CURVES:][-N_CURVES:][::-1]
    panels = [(f"{len(p)} {w} labels by AP", p) for w, p in (("best", best), ("worst", worst)) if p]
    parts = []
    if panels:
        fig = Figure(figsize=(6 * len(panels), 4.8), layout="constrained")
        for k, (name, cols) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), k + 1)
            for j in cols:
                known = y[:, j] >= 0
                p, r, _ = precision_recall_curve(y[known, j], s[known, j])
                label = f"{_tex(labels[j])} (AP {per['AP'][j]:.3f})"
                (line,) = ax.plot(r, p, drawstyle="steps-post", label=label)
                ax.plot(per["recall"][j], per["precision"][j], "o", color=line.get_color())
            _axes(ax, f"Precision-recall: {name}", "recall", "precision", unit=True)
        parts.append(_img(_save(fig, d, "pr_curves.png"), "precision-recall curves"))
    fig = Figure(figsize=(4.6 * (1 + len(panels)), 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1 + len(panels), 1)
    ax.plot(*_f1_curve(y, s), color="C0", label="one threshold for all labels")
    if d["figures"].get("micro_f1") is not None:
        micro = d["figures"]["micro_f1"]
        ax.axhline(micro, color="C3", ls="--", label=f"per-label thresholds ({micro:.3f})")
    _axes(ax, "Micro-F1 against one global threshold", "threshold", "micro-F1", unit=True)
    for k, (name, cols) in enumerate(panels):
        ax = fig.add_subplot(1, 1 + len(panels), k + 2)
        for j in cols:
            (line,) = ax.plot(*_f1_curve(y[:, j], s[:, j]), label=_tex(labels[j]))
            ax.plot(per["threshold"][j], per["F1"][j], "o", color=line.get_color())
        _axes(ax, f"F1 against threshold: {name}", "threshold", "F1", unit=True)
    parts.append(_img(_save(fig, d, "f1_threshold.png"), "F1 against threshold"))
    return (
        f"<p>Labels ranked by AP among those with at least {floor} positive(s); dots mark each label's "
        "threshold. Curves are drawn for the best and worst labels only; the table has every label.</p>"
        + "".join(parts)
    )


def _label_stats(d: dict) -> str:
    labels, support, y = d["schema"].labels, d["per"]["support"], d["y_true"]
    top = [int(j) for j in np.argsort(-support, kind="stable")[:N_TOP] if support[j] > 0]
    if not top:
        return "<p>No label has a positive in the data.</p>"
    many, known = len(labels) > N_TOP, (y >= 0).sum(axis=0)
    fig = Figure(figsize=(12 if many else 7, max(3.0, 0.26 * len(top) + 1.2)), layout="constrained")
    ax = fig.add_subplot(1, 1 + many, 1)
    ax.barh([_tex(labels[j], 28) for j in top][::-1], support[top][::-1], color="C0")
    for i, j in enumerate(top[::-1]):
        ax.annotate(f" {support[j] / max(known[j], 1):.1%}", (support[j], i), va="center", fontsize=8)
    what = f"the {len(top)} most frequent of {len(labels)}" if many else "all labels"
    _axes(ax, f"Positives per label ({what})", "images with the label (share of known)", "", legend=False)
    if many:
        ax = fig.add_subplot(1, 2, 2)
        ax.plot(np.arange(1, len(labels) + 1), np.sort(support)[::-1], color="C0")
        ax.set_yscale("symlog")
        _axes(ax, f"Positives per label, all {len(labels)} by rank", "rank", "positives", legend=False)
    parts = [_img(_save(fig, d, "label_frequency.png"), "label frequency")]
    if len(top) >= 2:
        present = (y[:, top] == 1).astype(np.float32)
        co = present.T @ present
        np.fill_diagonal(co, np.nan)
        names = [_tex(labels[j], 24) for j in top]
        title = f"Co-occurrence of the {len(top)} most frequent labels"
        colour = co / np.maximum(support[top][:, None], 1)
        bar = "P(column label | row label)"
        parts.append(_heatmap(d, "cooccurrence.png", colour, co, names, title, "", "", bar))
    return "".join(parts)


def _calibration(d: dict, uncalibrated: np.ndarray | None) -> str:
    """Reliability diagram (pooled label entries), ECE and Brier, and the labels with the largest ECE."""
    y, labels = d["y_true"], d["schema"].labels
    if not (y >= 0).any():
        return "<p>No known label target: nothing to calibrate against.</p>"
    curves = [
        ("calibrated" if uncalibrated is not None else "probabilities", calibration_figures(y, d["y_score"]))
    ]
    if uncalibrated is not None:
        raw = check_inputs(y_score=uncalibrated)["y_score"]
        if raw.shape != y.shape:
            raise DataError(f"uncalibrated_score is {raw.shape}; expected {y.shape} like label_score")
        curves.append(("uncalibrated", calibration_figures(y, raw)))
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    ax, bars = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", label="perfect calibration")
    for k, (name, f) in enumerate(curves):
        b = f["bins"]
        used = b["count"] > 0
        mean_score = b["score_sum"][used] / b["count"][used]
        share = b["positives"][used] / b["count"][used]
        ax.plot(mean_score, share, "o-", color=f"C{k}", label=f"{name} (ECE {f['ece_micro']:.3f})")
        centres = (b["edges"][:-1] + b["edges"][1:]) / 2
        width = (b["edges"][1] - b["edges"][0]) / len(curves)
        bars.bar(centres + (k - (len(curves) - 1) / 2) * width, b["count"], width, color=f"C{k}", label=name)
    _axes(ax, "Reliability: share of positives against mean probability", "mean probability in the bin",
          "share of positives", unit=True)  # fmt: skip
    bars.set_yscale("log")
    _axes(bars, "Label entries per bin", "probability", "entries (log scale)")
    keys = ("ece_macro", "ece_micro", "brier_macro", "brier_micro")
    head = ["figure", *(name for name, _ in curves)]
    rows = [f"<tr><td>{k}</td>{''.join(f'<td>{_fmt(f[k])}</td>' for _, f in curves)}</tr>" for k in keys]
    ece = curves[0][1]["ece"]
    worst = [int(j) for j in np.argsort(-np.nan_to_num(ece, nan=-1.0))[:N_WORST_ECE] if not np.isnan(ece[j])]
    worst_rows = [f"<tr><td>{esc(labels[j])}</td><td>{_fmt(ece[j])}</td><td>{_fmt(curves[0][1]['brier'][j])}"
                  f"</td><td>{int(d['per']['support'][j])}</td></tr>" for j in worst]  # fmt: skip
    n_bins = len(curves[0][1]["bins"]["count"])
    return (
        f"<p>Every known label entry, pooled into {n_bins} equal-width bins of probability: on a calibrated "
        "model the dots lie on the diagonal (of the images scored about 0.8, 80% have the label). ECE: the "
        "bins' gaps weighted by their entries, per label (macro: mean over labels with a positive) or pooled "
        "(micro); Brier: mean squared difference of probability and truth. Lower is better.</p>"
        + _img(_save(fig, d, "reliability.png"), "reliability diagram")
        + _table(head, rows)
        + f"<p>The {len(worst)} labels with the largest ECE:</p>"
        + _table(["label", "ECE", "Brier", "support"], worst_rows)
    )


def _attributes(d: dict) -> str:
    scores, rows, parts = d["figures"].get("attributes") or {}, [], []
    for j, a in enumerate(d["schema"].attributes):
        t, k = d["attr_true"][:, j], len(a.classes)
        known = t >= 0
        cm = np.zeros((k, k))
        np.add.at(cm, (t[known], d["attr_probs"][j][known].argmax(axis=1)), 1)
        acc = scores.get(a.name, {}).get("accuracy", np.trace(cm) / max(cm.sum(), 1))
        cells = (esc(a.name), k, _fmt(acc), int(known.sum()))
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        colour = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        title, names = f"{_tex(a.name)}: accuracy {_fmt(acc)}", [_tex(x, 20) for x in a.classes]
        args = (colour, cm, names, title, "predicted class", "true class", "share of the true class")
        parts.append(_heatmap(d, f"attribute_{j}.png", *args, cls="cm"))
    note = "<p>Confusion matrices (rows: true class; counts, coloured by the share of the row):</p>"
    table = _table(["attribute", "classes", "accuracy", "known targets"], rows)
    return f'{table}{note}<div class="cms">{"".join(parts)}</div>'


def _worst(d: dict, images: Manifest, max_worst: int, explain: Callable | None) -> str:
    loss = _image_loss(d)
    rows = [int(i) for i in np.argsort(-loss)[:max_worst]]
    outputs = d["schema"].n_labels + d["schema"].n_attributes
    maps = explain(rows) if explain is not None and rows and outputs else None
    cards = [_card(d, images, rank, i, loss[i], maps, rank) for rank, i in enumerate(rows)]
    return (
        f"<p>The {len(cards)} images with the highest loss: BCE summed over known labels plus the "
        "cross-entropy of each known attribute. Numbers are scores, attributes read true → predicted; "
        '<span class="chip ok">right</span> <span class="chip fn">FN missed / wrong class</span> '
        '<span class="chip fp">FP false alarm</span> <span class="chip unk">? truth unknown</span>'
        + (
            f". Under each image, the label maps of up to {MAX_MAPS} of its labels, mistakes first "
            f"({esc(maps.method)}; warm colours: where the evidence for the label lies)"
            if maps
            else ""
        )
        + f'</p><div class="grid">{"".join(cards)}</div>'
    )


def _card(d: dict, images: Manifest, rank: int, i: int, loss: float, maps: Any = None, row: int = 0) -> str:
    """One worst image: thumbnail (copied into the report), true and predicted labels, attributes, and with
    ``maps`` (of the worst images, ``row`` this one's) the label maps of its mistakes and decisions."""
    labels, y, s, pred = d["schema"].labels, d["y_true"][i], d["y_score"][i], d["pred"][i]
    thumb, name = _thumbnail(images, i), str(images.paths[i])
    img = '<div class="noimg">image not readable</div>'
    if thumb is not None:
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        _write(d["out"] / "img" / f"worst_{rank:03d}.png", buf.getvalue())
        img = _img(f"img/worst_{rank:03d}.png", f"image {name}", "", thumb.size)
    true = [(j, "ok" if pred[j] else "fn") for j in np.flatnonzero(y == 1)]
    said = [(j, {1: "ok", 0: "fp", -1: "unk"}[int(y[j])]) for j in np.flatnonzero(pred)]
    rows = [(k, _chips(v, labels, s)) for k, v in (("true", true), ("predicted", said)) if labels]
    wrong = sum(c == "fn" for _, c in true) + sum(c == "fp" for _, c in said)
    for j, a in enumerate(d["schema"].attributes):
        t, p = int(d["attr_true"][i, j]), d["attr_probs"][j][i]
        q = int(p.argmax())
        cls, truth = ("ok" if t == q else "fn", esc(a.classes[t])) if t >= 0 else ("unk", "?")
        wrong += cls == "fn"
        chip = f"{truth} → {esc(a.classes[q])} <small>{p[q]:.2f}</small>"
        rows.append((esc(a.name), f'<span class="chip {cls}">{chip}</span>'))
    lines = "".join(f'<div class="row"><span class="k">{k}</span><span>{v}</span></div>' for k, v in rows)
    if maps is not None and maps.maps[row] is not None:
        order = [labels[j] for j, c in sorted(true + said, key=lambda x: (x[1] == "ok", -s[x[0]]))]
        img += _maps(d, maps, row, rank, list(dict.fromkeys(order)))
    return (
        f'<figure class="item">{img}<figcaption><div class="name" title="{esc(name)}">#{rank + 1} '
        f'{esc(name[-60:])}</div><div class="loss">loss {loss:.3f} · {wrong} wrong decision(s)'
        f"</div>{lines}</figcaption></figure>"
    )


def _maps(d: dict, maps: Any, row: int, rank: int, names: list[str]) -> str:
    """Small overlays of the first :data:`MAX_MAPS` of ``names`` on image ``row`` of ``maps``."""
    index = {name: j for j, name in enumerate(maps.names)}
    parts = []
    for k, name in enumerate(n for n in names if n in index):
        if k == MAX_MAPS:
            break
        pixels = overlay(maps.images[row], maps.maps[row][index[name]])
        im = Image.fromarray(pixels)
        scale = min(1.0, 128 / max(im.size)) if max(im.size) > 128 else 128 / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        file = f"img/map_{rank:03d}_{k}.png"
        _write(d["out"] / file, buf.getvalue())
        parts.append(f'<figure class="map">{_img(file, f"map of {name}", "", im.size)}'
                     f"<figcaption>{esc(name)}</figcaption></figure>")  # fmt: skip
    return f'<div class="maps">{"".join(parts)}</div>' if parts else ""


# -- helpers --------------------------------------------------------------------------------------
def _chips(items: list, labels: tuple[str, ...], scores: np.ndarray) -> str:
    """Label chips, mistakes first, at most :data:`MAX_CHIPS`; the rest are counted."""
    tag = {"fn": "FN ", "fp": "FP ", "unk": "? ", "ok": ""}
    items = sorted(items, key=lambda x: (x[1] == "ok", x[1] == "unk", -scores[x[0]]))
    chips = [
        f'<span class="chip {c}">{tag[c]}{esc(labels[j])} <small>{scores[j]:.2f}</small></span>'
        for j, c in items[:MAX_CHIPS]
    ]
    more = f'<span class="more">+{len(items) - MAX_CHIPS} more</span>' if len(items) > MAX_CHIPS else ""
    return "".join(chips) + more if items else '<span class="more">none</span>'


def _thumbnail(images: Manifest, i: int) -> Image.Image | None:
    """Image ``i`` as RGB with its longest side :data:`THUMB` px (nearest-neighbour when enlarged)."""
    try:
        if images.pixels is not None:
            im = Image.fromarray(np.asarray(images.pixels[i])).convert("RGB")
        else:
            with Image.open(images.paths[i]) as f:
                im = ImageOps.exif_transpose(f).convert("RGB")
    except (OSError, ValueError, TypeError):
        return None
    scale = THUMB / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS)


def _heatmap(d: dict, file: str, colour, counts, names, title, xlabel, ylabel, bar, cls="plot") -> str:
    """A square heatmap coloured in [0, 1], with the counts written in when there are few cells."""
    n = len(names)
    side = min(12.0, 2.8 + 0.4 * n)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(colour, cmap="Blues", vmin=0, vmax=1)
    for (r, q), v in np.ndenumerate(counts if n <= 15 else np.empty((0, 0))):
        if not np.isnan(v):
            white = colour[r, q] > 0.6
            ax.text(q, r, f"{v:g}", ha="center", va="center", fontsize=8, color="white" if white else "black")
    flat = n <= 4 and max(map(len, names)) <= 8
    ax.set_xticks(range(n), names, rotation=0 if flat else 90, fontsize=8 if n > 10 else None)
    ax.set_yticks(range(n), names, fontsize=8 if n > 10 else None)
    fig.colorbar(im, ax=ax, shrink=0.8, label=bar)
    _axes(ax, title, xlabel, ylabel, legend=False, grid=False)
    return _img(_save(fig, d, file), title, cls)


def _axes(ax: Any, title: str, xlabel: str, ylabel: str, *, legend=True, grid=True, unit=False) -> None:
    ax.set_title(title, fontsize=11)
    ax.set(xlabel=xlabel, ylabel=ylabel, **({"xlim": (-0.01, 1.01), "ylim": (-0.01, 1.02)} if unit else {}))
    if grid:
        ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="best")


def _save(fig: Figure, d: dict, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
    _write(d["out"] / "img" / name, buf.getvalue())
    return f"img/{name}"


def _write(path: Path, data: bytes | str) -> None:
    """Write atomically, readable by all (the temporary file behind an atomic write is private)."""
    (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(path, data)
    path.chmod(0o644)


def _img(src: str, alt: str, cls: str = "plot", size: tuple[int, int] | None = None) -> str:
    wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return f'<img class="{cls}" src="{esc(src)}" alt="{esc(alt)}"{wh}>'


def _table(head: list[str], rows: list[str], sortable_id: str = "") -> str:
    """A table; with ``sortable_id``, its headers sort it (numerically, but for the first column)."""
    kind = ["text"] + ["num"] * (len(head) - 1)
    ths = "".join(f'<th data-type="{k}" scope="col">{esc(h)}</th>' for k, h in zip(kind, head))
    attrs = f' id="{sortable_id}" class="sortable"' if sortable_id else ""
    return f"<table{attrs}><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>" * bool(rows)


def _tex(name: str, width: int = 40) -> str:
    """A name for matplotlib text: shortened, with ``$`` escaped so it is never read as mathtext."""
    return (name if len(name) <= width else name[: width - 1] + "…").replace("$", r"\$")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.number) and not isinstance(v, bool)


def _fmt(v: object, spec: str = "%.4f") -> str:
    return "–" if v is None or np.isnan(v) else spec % v


def _audit(folder: Path, out: Path, rows: int = 15) -> str:
    """A link to an audit's review page and file, its counts, and the labels most likely incomplete."""
    import csv
    import json
    import os

    try:
        summary = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
        with open(folder / "labels.csv", encoding="utf-8", newline="") as f:
            table = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}: not a finished audit ({e}); run mlic audit first") from None
    files = ("review.html", "suggestions.jsonl", "labels.csv")
    link = {k: esc(os.path.relpath(folder / k, out)) for k in files}
    n = summary.get("suggestions") or {}
    missing, wrong = esc(str(n.get("missing", 0))), esc(str(n.get("wrong", 0)))
    folds, mode = esc(str(summary.get("folds"))), esc(str(summary.get("mode")))
    head = (f'<p><a href="{link["review.html"]}">Review page</a> · <a href="{link["suggestions.jsonl"]}">'
            f'suggestions</a> · <a href="{link["labels.csv"]}">per-label table</a>: {missing} likely missing '
            f"and {wrong} likely wrong labels, from {folds} folds ({mode}).</p>")  # fmt: skip
    columns = ["given_positives", "likely_missing", "estimated_missing_rate", "likely_wrong"]
    body = [f"<tr><td>{esc(r['label'])}</td>" + "".join(f"<td>{esc(r.get(c, ''))}</td>" for c in columns)
            + "</tr>" for r in table[:rows]]  # fmt: skip
    return head + _table(["label", *columns], body)


def _meta(d: dict) -> str:
    f, schema = d["figures"], d["schema"]
    items = [("data", f.get("data")), ("artifact", f.get("artifact")), ("images", f.get("n_samples"))]
    items += [("labels", schema.n_labels), ("attributes", schema.n_attributes)]
    model = f.get("model") if isinstance(f.get("model"), dict) else {}
    items += [(k, v) for k, v in model.items() if isinstance(v, str) or _is_number(v)]
    if f.get("ignored"):
        items.append(("ignored (unknown to the model)", ", ".join(map(str, f["ignored"]))))
    items.append(("written", time.strftime("%Y-%m-%d %H:%M")))
    return " · ".join(f"{esc(k)}: <b>{esc(str(v))}</b>" for k, v in items if v is not None)


CSS = """:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--head:#f3f5f7}*{box-sizing:border-box}
body{margin:0;color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:1280px;margin:0 auto;padding:28px 32px 64px}h1{font-size:28px;margin:0 0 6px}
h2{font-size:20px;margin:44px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
nav a{margin-right:14px;color:#0969da;text-decoration:none}
.meta,.note,.loss,.more{color:var(--muted);font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0 18px}.card .k{color:var(--muted);font-size:13px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 18px;min-width:140px}
.card .v{font-size:26px;font-weight:600}table{border-collapse:collapse;font-size:13px}
table,.card{font-variant-numeric:tabular-nums}thead th{background:var(--head)}
.scroll thead th{position:sticky;top:0}
th,td{padding:4px 12px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;max-width:28em;overflow:hidden;text-overflow:ellipsis}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e6ebf0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafbfc}tbody tr:hover{background:#eef4ff}
.scroll{max-height:70vh;overflow:auto;border:1px solid var(--line);display:inline-block;max-width:100%}
input[type=search]{font:inherit;padding:4px 8px;border:1px solid var(--line);border-radius:6px;width:18em}
img.plot{max-width:100%;height:auto;display:block;margin:10px 0}.cms{display:flex;flex-wrap:wrap;gap:16px}
img.cm{max-width:min(100%,560px);height:auto}.chip small{opacity:.75}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:16px}
.item{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px}
.item img{width:100%;height:auto;display:block;background:#eee;border-radius:4px}
.noimg{padding:40px 0;text-align:center;background:#eee;color:var(--muted)}
.name{font-weight:600;font-size:13px;margin-top:6px;word-break:break-all}
.row{display:flex;gap:4px;margin-top:4px;font-size:12px}.row .k{color:var(--muted);flex:0 0 5.5em}
.chip{display:inline-block;padding:0 7px;margin:2px 3px 0 0;border-radius:10px;font-size:12px;
border:1px solid}
.ok{background:#dafbe1;border-color:#4ac26b}.fn{background:#ffebe9;border-color:#ff8182}
.fp{background:#fff1e5;border-color:#fb8f44}.unk{background:#f6f8fa;border-color:#d0d7de}
.maps{display:grid;grid-template-columns:repeat(4,1fr);gap:4px;margin-top:6px}.map{margin:0}
.map figcaption{font-size:11px;color:var(--muted);overflow:hidden;text-overflow:ellipsis;
white-space:nowrap}"""

JS = """for (const table of document.querySelectorAll("table.sortable")) {
  const heads = table.querySelectorAll("th"), body = table.tBodies[0];
  heads.forEach((th, col) => {
    const sort = () => {  // ascending first, then reversed; missing values ("–") always last
      const asc = th.getAttribute("aria-sort") !== "ascending", num = th.dataset.type === "num";
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      const rows = Array.from(body.rows, (r, i) => {
        const t = r.cells[col].textContent.trim(), v = num ? parseFloat(t) : t.toLowerCase();
        return {r, i, v, miss: num ? Number.isNaN(v) : t === ""};
      });
      rows.sort((a, b) => a.miss !== b.miss ? (a.miss ? 1 : -1)
        : !a.miss && a.v !== b.v ? (a.v < b.v ? -1 : 1) * (asc ? 1 : -1) : a.i - b.i);
      const frag = document.createDocumentFragment();
      for (const x of rows) frag.append(x.r);
      body.append(frag);
    };
    th.tabIndex = 0;
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
  });
}
const filter = document.getElementById("label-filter");
if (filter) filter.addEventListener("input", () => {
  for (const r of document.getElementById("label-table").tBodies[0].rows)
    r.hidden = !r.cells[0].textContent.toLowerCase().includes(filter.value.toLowerCase());
});"""


def _page(title: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{key}">{esc(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{esc(name)}</h2>{part}</section>' for k, name, part in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f'<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><div class="meta">{meta}</div>'
        f"<nav>{nav}</nav>{body}</main><script>{JS}</script></body></html>\n"
    )
