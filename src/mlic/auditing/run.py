"""``audit``: out-of-sample scores by K folds, ranked suggestions, the review file, the table and the page.

The audit folder::

    AUDIT/audit.json         settings, schema, counts, timings (what mlic audit printed)
    AUDIT/data.jsonl         the audited data as JSON lines (what ``apply`` changes a copy of)
    AUDIT/images/            in-memory images (MultiDigits) as PNG files
    AUDIT/folds.npy          the fold of each image
    AUDIT/fold-K/            one run directory per fold (full mode), its scores.npy
    AUDIT/features.npy       the frozen backbone's features (--features mode)
    AUDIT/scores.npy         out-of-fold probabilities [N, L]
    AUDIT/suggestions.jsonl  the review file, best first
    AUDIT/labels.csv         the per-label table
    AUDIT/review.html        the review page

Running ``audit`` again on the same folder with the same settings continues
where it stopped: finished folds are skipped; other settings are refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mlic.auditing.folds import (
    DATA,
    SCORES,
    check_options,
    extract_features,
    fold_assignment,
    image_files,
    load_array,
    out_of_fold_features,
    out_of_fold_full,
    save_array,
)
from mlic.auditing.page import write_page
from mlic.auditing.ranking import DEFAULT_MIN_CONFIDENCE, KINDS, rank_suggestions
from mlic.auditing.review import (
    LABELS,
    PAGE,
    SETTINGS,
    SUGGESTIONS,
    suggestion_records,
    write_label_table,
    write_suggestions,
)
from mlic.data.formats import load_data
from mlic.data.formats.jsonl import write_jsonl
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError
from mlic.fileio import atomic_write_text

MODES = ("full", "features")
MULTIDIGITS = {"image_size": 64, "augment": "shift", "hflip": False, "num_workers": 0}
"""The training defaults of MultiDigits (``mlic.training.defaults.resolve``), for its folds."""


def audit(
    data: str | Path | Manifest,
    out: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    features: bool = False,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_suggestions: int | None = 10_000,
    page_limit: int = 2_000,
    source_options: dict | None = None,
    verbose: bool = True,
    **options: object,
) -> dict:
    """Audit the labels of ``data``: return (and write to ``out``) the suggestions and the per-label table.

    ``data``: a data file in any format, ``"demo"`` (the MultiDigits test
    split) or a ``Manifest``. ``folds`` models are trained by ``mlic.train``
    with the training ``options`` (any ``TrainConfig`` field but the data
    ones), or with ``features=True`` one frozen backbone (``weights=`` or
    ``pretrained=True``) and linear heads. Suggestions whose confidence is at
    least ``min_confidence`` are kept, at most ``max_suggestions`` of each kind
    (None: all); the page shows the best ``page_limit``. Returns the summary
    saved as ``audit.json`` (its ``files`` name every file written). Scoring
    runs in batches of ``batch_size`` with ``num_workers`` loader processes
    (the training options; 64 and 0 by default).
    """
    log = print if verbose else (lambda *_: None)
    out = Path(out)
    options = check_options(dict(options))
    manifest = data if isinstance(data, Manifest) else load_data(data, **(source_options or {}))
    if manifest.source.startswith("MultiDigits") and not features:
        # the folds train on files, which would get the photo defaults: keep MultiDigits' own (as mlic train)
        options = {**MULTIDIGITS, **options}
    settings = {
        "data": manifest.source if isinstance(data, Manifest) else str(data),
        "data_file": None
        if isinstance(data, Manifest) or str(data) == "demo"
        else str(Path(data).absolute()),
        "source_options": {
            k: str(v) if isinstance(v, Path) else v for k, v in (source_options or {}).items()
        },
        "images": len(manifest),
        "labels": manifest.schema.n_labels,
        "folds": folds,
        "seed": seed,
        "mode": "features" if features else "full",
        "options": options,
    }
    _check_folder(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**settings, "schema": manifest.schema.to_dict(), "status": "scoring"}
    atomic_write_text(out / SETTINGS, json.dumps(summary, indent=1) + "\n")
    started = time.perf_counter()
    files = image_files(manifest, out)
    if not (out / DATA).is_file():
        write_jsonl(manifest, out / DATA, files)
    assigned = fold_assignment(manifest, folds, seed, out)
    batch_size, num_workers = options.get("batch_size") or 64, options.get("num_workers") or 0
    probs = out_of_fold_scores(manifest, files, assigned, out, features=features, options=options, seed=seed,
                               batch_size=batch_size, num_workers=num_workers, log=log)  # fmt: skip
    scored = time.perf_counter()
    result = write_review(out, manifest, probs, files, min_confidence=min_confidence,
                          max_suggestions=max_suggestions, page_limit=page_limit)  # fmt: skip
    summary.update(result)
    summary["status"] = "done"
    summary["seconds"] = {"scores": round(scored - started, 1), "ranking": result.pop("ranking_seconds")}
    summary.pop("ranking_seconds", None)
    atomic_write_text(out / SETTINGS, json.dumps(summary, indent=1) + "\n")
    log(f"{summary['suggestions']['missing']} likely missing and {summary['suggestions']['wrong']} likely "
        f"wrong labels in {out / SUGGESTIONS}; review them in {out / PAGE}")  # fmt: skip
    return summary


def out_of_fold_scores(
    manifest: Manifest, files: list[str], assigned: np.ndarray, out: Path, *, features: bool, options: dict,
    seed: int, batch_size: int, num_workers: int, log,
) -> np.ndarray:  # fmt: skip
    """Out-of-fold probabilities ``[N, L]`` (kept in ``out/scores.npy``), by full folds or frozen features."""
    path = out / SCORES
    if path.is_file():
        return load_array(path)
    if features:
        embedded = extract_features(manifest, files, out, options, batch_size=batch_size,
                                    num_workers=num_workers, log=log)  # fmt: skip
        probs = out_of_fold_features(manifest, embedded, assigned, out, seed=seed, log=log)
    else:
        probs = out_of_fold_full(manifest, files, assigned, out, options, seed=seed, batch_size=batch_size,
                                 num_workers=num_workers, log=log)  # fmt: skip
    save_array(path, probs)
    return probs


def write_review(
    out: Path, manifest: Manifest, probs: np.ndarray, images: list[str] | None = None, *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE, max_suggestions: int | None = 10_000,
    page_limit: int = 2_000,
) -> dict:  # fmt: skip
    """Rank, then write the review file, the per-label table and the page; their paths and counts."""
    started = time.perf_counter()
    suggestions = rank_suggestions(probs, manifest.label_lists, min_confidence=min_confidence,
                                   limit=max_suggestions)  # fmt: skip
    seconds = time.perf_counter() - started
    images = images or manifest.paths
    records = suggestion_records(suggestions, manifest, images)
    write_suggestions(out / SUGGESTIONS, records)
    write_label_table(out / LABELS, manifest.schema, suggestions.table)
    write_page(out / PAGE, records[:page_limit], images, title=f"mlic audit: {manifest.source or out}")
    table = suggestions.table
    rates = np.asarray(table["estimated_missing_rate"], float)
    return {
        "suggestions": {k: int((suggestions.kind == i).sum()) for i, k in enumerate(KINDS)},
        "min_confidence": min_confidence,
        "max_suggestions": max_suggestions,
        "estimated_missing_rate": round(float(np.nanmean(rates)), 4) if np.isfinite(rates).any() else None,
        "files": {
            "suggestions": str(out / SUGGESTIONS),
            "labels": str(out / LABELS),
            "page": str(out / PAGE),
            "scores": str(out / SCORES),
            "data": str(out / DATA),
        },
        "ranking_seconds": round(seconds, 2),
    }


def _check_folder(out: Path, settings: dict) -> None:
    """An audit folder may be continued with the same settings only."""
    path = out / SETTINGS
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(
                f"{out}: the folder holds other files; give a new or empty folder for the audit"
            )
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in settings if k not in ("source_options",) and before.get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise ConfigError(
            f"{out} holds an audit with other settings ({k}: {before.get(k)!r} there, {settings[k]!r} now); "
            "give a new folder, or the same settings to continue it"
        )
