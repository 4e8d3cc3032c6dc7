"""The audit's files: the review file of suggestions, the per-label table, the decisions, and ``apply``.

- ``suggestions.jsonl``: one suggestion a line, best first::

      {"rank": 1, "row": 17, "image": "/data/img/17.jpg", "label": "dog", "kind": "missing", "given": 0,
       "probability": 0.93, "threshold": 0.71, "confidence": 1.0, "score": 1.68, "reason": "..."}

  ``given`` is the target in the data (1, 0, or -1 for unknown); ``row`` the
  image's place in the audited data (0-based); ``kind`` ``missing`` (add the
  label) or ``wrong`` (remove it).
- ``labels.csv``: one row per label (``mlic.auditing.ranking.label_table``).
- ``decisions.json``: ``{"decisions": [{"rank", "row", "label", "kind",
  "decision"}]}`` with ``decision`` ``accept`` or ``reject``, written by the
  review page (``mlic audit review``) or by hand.

``apply_decisions`` writes a new JSON lines data file (unknowns and attributes
kept) with exactly the accepted changes; the audited data is never modified.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from mlic.auditing.ranking import KINDS, MISSING, WRONG, Suggestions
from mlic.data.formats.jsonl import read_jsonl, write_jsonl
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists, entry_rows, row_pointers
from mlic.errors import ConfigError, DataError
from mlic.fileio import atomic_open, atomic_write_text
from mlic.schema import LabelSchema

SETTINGS = "audit.json"
SUGGESTIONS = "suggestions.jsonl"
LABELS = "labels.csv"
DECISIONS = "decisions.json"
PAGE = "review.html"
DECISION_VALUES = ("accept", "reject")
TABLE_COLUMNS = (
    "given_positives", "given_negatives", "unknown", "missing_threshold", "wrong_threshold", "likely_missing",
    "confident_missing", "estimated_missing_rate", "likely_wrong", "confident_wrong", "suspected_wrong_rate",
)  # fmt: skip


def _number(x: float, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def reason(kind: str, label: str, p: float, threshold: float, confidence: float) -> str:
    """A sentence that says why a pair is suggested."""
    if kind == MISSING:
        against = f"the threshold {threshold:.3f} (the mean score of every label's given positives)"
        if p >= threshold:
            return f"not given, but scored {p:.3f}, at or above {against}"
        return (
            f"not given, scored {p:.3f}, a little below {against}: present with confidence {confidence:.2f}"
        )
    against = f"{label}'s threshold {threshold:.3f} (the mean score of its given negatives)"
    if p <= threshold:
        return f"given, but scored {p:.3f}, at or below {against}"
    return f"given, but scored only {p:.3f}, a little above {against}: wrong with confidence {confidence:.2f}"


def suggestion_records(
    suggestions: Suggestions, manifest: Manifest, images: list[str] | None = None
) -> list[dict]:
    """The suggestions as review-file records, in rank order; ``images`` the image names to show."""
    images = manifest.paths if images is None else images
    labels = manifest.schema.labels
    confidence = suggestions.confidence
    records = []
    for r in range(len(suggestions)):
        i, j = int(suggestions.image[r]), int(suggestions.label[r])
        kind = KINDS[int(suggestions.kind[r])]
        p, t = float(suggestions.probability[r]), float(suggestions.threshold[r])
        records.append({
            "rank": r + 1, "row": i, "image": images[i], "label": labels[j], "kind": kind,
            "given": int(suggestions.given[r]), "probability": _number(p), "threshold": _number(t),
            "confidence": _number(confidence[r]), "score": _number(suggestions.score[r]),
            "reason": reason(kind, labels[j], p, t, float(confidence[r])),
        })  # fmt: skip
    return records


def write_suggestions(path: Path, records: list[dict]) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def read_suggestions(path: str | Path) -> list[dict]:
    """The review file's records; a line that is not a suggestion is a ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (run mlic audit first)")
    records = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: invalid JSON ({e.msg})") from None
        for key in ("rank", "row", "label", "kind"):
            if key not in record:
                raise DataError(f"{path}, line {n}: no {key!r} field")
        if record["kind"] not in KINDS:
            raise DataError(f"{path}, line {n}, field 'kind': {record['kind']!r} is not one of {list(KINDS)}")
        records.append(record)
    return records


def write_label_table(path: Path, schema: LabelSchema, table: dict) -> Path:
    """``labels.csv``: one row per label, sorted by estimated missing rate (highest first)."""
    rate = np.nan_to_num(np.asarray(table["estimated_missing_rate"], float), nan=-1.0)
    order = np.argsort(-rate, kind="stable")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", *TABLE_COLUMNS])
    for j in order:
        row = []
        for key in TABLE_COLUMNS:
            v = table[key][j]
            row.append(int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else
                       ("" if not np.isfinite(v) else f"{float(v):.4f}"))  # fmt: skip
        writer.writerow([schema.labels[j], *row])
    atomic_write_text(path, buffer.getvalue())
    return path


# -- decisions ----------------------------------------------------------------------------------
def check_decisions(decisions: object, suggestions: list[dict], where: str) -> list[dict]:
    """Decision records checked against the suggestions: each names a suggested pair, and accept or reject."""
    if isinstance(decisions, dict):
        decisions = decisions.get("decisions")
    if not isinstance(decisions, list):
        raise DataError(f'{where}: expected {{"decisions": [...]}}, a list of decision records')
    by_rank = {int(s["rank"]): s for s in suggestions}
    out, seen = [], {}
    for n, d in enumerate(decisions):
        place = f"{where}, decision {n + 1}"
        if not isinstance(d, dict):
            raise DataError(f"{place}: expected an object, got {d!r}")
        if d.get("decision") not in DECISION_VALUES:
            raise DataError(
                f"{place}, field 'decision': {d.get('decision')!r} is not one of {list(DECISION_VALUES)}"
            )
        rank = d.get("rank")
        s = by_rank.get(rank) if isinstance(rank, int) and not isinstance(rank, bool) else None
        if s is None:
            raise DataError(f"{place}, field 'rank': {rank!r} is not the rank of a suggestion")
        for key in ("row", "label", "kind"):
            if key in d and d[key] != s[key]:
                raise DataError(
                    f"{place}, field {key!r}: {d[key]!r} but suggestion {rank} has {s[key]!r} "
                    "(the decisions belong to another audit)"
                )
        record = {"rank": rank, "row": s["row"], "image": s.get("image"), "label": s["label"],
                  "kind": s["kind"], "decision": d["decision"]}  # fmt: skip
        if rank in seen:
            out[seen[rank]] = record  # the last decision on a suggestion stands
        else:
            seen[rank] = len(out)
            out.append(record)
    return out


def write_decisions(path: Path, decisions: list[dict]) -> Path:
    atomic_write_text(path, json.dumps({"decisions": decisions}, indent=1) + "\n")
    return path


def read_decisions(path: str | Path, suggestions: list[dict]) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (the review page saves it; see mlic audit review)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None
    return check_decisions(data, suggestions, str(path))


# -- apply --------------------------------------------------------------------------------------
def audited_data(audit_dir: Path) -> Manifest:
    """The data as audited (``AUDIT/data.jsonl``, under the schema the audit recorded)."""
    settings = read_settings(audit_dir)
    schema = LabelSchema.from_dict(settings["schema"])
    return read_jsonl(audit_dir / "data.jsonl", schema=schema)


def read_settings(audit_dir: Path) -> dict:
    path = Path(audit_dir) / SETTINGS
    if not path.is_file():
        raise ConfigError(
            f"{audit_dir}: not an audit folder (no {SETTINGS}); pass the folder mlic audit wrote"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def apply_decisions(
    audit_dir: str | Path, out: str | Path, *, decisions: str | Path | list[dict] | None = None,
    overwrite: bool = False,
) -> dict:  # fmt: skip
    """Write a new JSON lines data file: the audited data with exactly the accepted suggestions applied.

    An accepted ``missing`` suggestion makes the label present (from 0 or
    unknown); an accepted ``wrong`` one makes it absent (0). Rejected and
    undecided suggestions change nothing; unknowns and attributes are kept.
    ``decisions``: a decisions file or list (default ``AUDIT/decisions.json``).
    ``out`` must not be the audited data, nor exist unless ``overwrite``.
    Returns the path and the counts of changes.
    """
    audit_dir, out = Path(audit_dir), Path(out)
    settings = read_settings(audit_dir)
    originals = {Path(p).resolve() for p in (settings.get("data_file"), audit_dir / "data.jsonl") if p}
    if out.resolve() in originals:
        raise ConfigError(f"{out}: that is the audited data; apply writes a new file (choose another path)")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists already; pass overwrite=True (--overwrite) to replace it")
    suggestions = read_suggestions(audit_dir / SUGGESTIONS)
    if decisions is None or isinstance(decisions, (str, Path)):
        decided = read_decisions(decisions or audit_dir / DECISIONS, suggestions)
    else:
        decided = check_decisions(decisions, suggestions, "decisions")
    manifest = audited_data(audit_dir)
    accepted = [d for d in decided if d["decision"] == "accept"]
    index = {name: j for j, name in enumerate(manifest.schema.labels)}
    rows = np.array([d["row"] for d in accepted], dtype=np.int64)
    cols = np.array([index[d["label"]] for d in accepted], dtype=np.int64)
    values = np.array([1 if d["kind"] == MISSING else 0 for d in accepted], dtype=np.int8)
    if len(rows) and rows.max() >= len(manifest):
        raise DataError(
            f"{audit_dir}: a decision names row {rows.max()} but the data has {len(manifest)} images"
        )
    lists = set_targets(manifest.label_lists, rows, cols, values)
    changed = Manifest(manifest.schema, manifest.paths, lists, manifest.attributes, None, manifest.source)
    write_jsonl(changed, out)
    return {
        "data": str(out),
        "added": int((values == 1).sum()),
        "removed": int((values == 0).sum()),
        "rejected": sum(d["decision"] == "reject" for d in decided),
        "undecided": len(suggestions) - len(decided),
    }


def set_targets(lists: LabelLists, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> LabelLists:
    """``lists`` with the targets at ``(rows, cols)`` set to ``values``, everything else as it was."""
    n = len(lists.indptr) - 1
    old_rows = entry_rows(lists.indptr)
    key = np.concatenate([old_rows * lists.n_labels + lists.indices, rows * lists.n_labels + cols])
    val = np.concatenate([lists.values, values.astype(np.int8)])
    order = np.argsort(key, kind="stable")
    key, val = key[order], val[order]
    last = np.append(key[1:] != key[:-1], True)  # the later entry (the change) of equal keys wins
    key, val = key[last], val[last]
    keep = val != lists.fill
    key, val = key[keep], val[keep]
    r = key // lists.n_labels
    return LabelLists(lists.n_labels, row_pointers(r, n), key % lists.n_labels, val, lists.fill)


__all__ = ["WRONG", "apply_decisions", "read_decisions", "read_suggestions", "write_decisions"]
