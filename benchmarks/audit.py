"""How well ``mlic audit`` finds labels that were hidden or flipped on purpose; prints one JSON object.

    python benchmarks/audit.py --out runs/audit-md30            # MultiDigits, 30% hidden, 2% flipped
    python benchmarks/audit.py --hide 0.5 --out runs/audit-md50
    python benchmarks/audit.py --features --backbone tf_efficientnet_lite0 --weights W.safetensors \
        --out runs/f
    python benchmarks/audit.py --data corel5k/train.csv --features --backbone tf_efficientnet_lite0 \
        --weights W.safetensors --flip 0 --out runs/audit-corel --sheet runs/audit-corel/sheet.png

A share ``--hide`` of the data's positives is written as 0 (silently
missing) and a share ``--flip`` of its negatives as 1 (wrong), seeded; then
the audit runs on that data (``mlic.auditing.audit``; K-fold trainings, or
``--features``). The defaults train each fold as ``mlic train`` trains the
demo (10,000 canvases, 12 epochs, MultiDigits' own input settings): each fold
model then sees 7,200 canvases, and ranks the digits of the images it never
saw with mAP 0.997 against the true labels. With the earlier 2,500 canvases
and 8 epochs (112 steps) it reached 0.48, and no ranking can find what such
scores do not hold.

Figures, from the out-of-fold probabilities the audit made:

- ``hidden``: precision and recall of the hidden positives among the top N
  "missing" suggestions, N = the number hidden (they are equal unless fewer
  than N pairs can be suggested); and of the suggestions the audit's review
  file keeps (confidence >= 0.5).
- ``flipped``: the share of flipped labels among the top 2 x (number flipped)
  "wrong" suggestions.
- ``cleanlab`` (when importable; AGPL, an optional comparison only): the same
  figures from ``cleanlab.multilabel_classification`` on the same
  probabilities: its per-class label-quality ranking
  (``get_label_quality_scores_per_class``, self-confidence) and its flagged
  pairs (``find_multilabel_issues_per_class``).
- ``oof_map``: the out-of-fold probabilities' mAP against the true labels
  (how well the fold models rank; what any ranking can build on) and
  against the corrupted ones (what each fold's validation reports).
- ``seconds``: the audit's wall time; ``ranking_10k``: the ranking step alone
  on random scores for 10,000 images x 10,000 labels (``--ranking-size``).

Rerunning with the same ``--out`` continues the audit (finished folds are kept).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def corrupt(manifest, hide: float, flip: float, seed: int):
    """The manifest with ``hide`` of its positives set to 0 and ``flip`` of its negatives set to 1.

    Returns the new manifest and the (row, label) pairs hidden and flipped, as sets of flat indices.
    """
    from mlic.data.manifest import Manifest

    rng = np.random.default_rng(seed)
    labels = manifest.labels.copy()
    n_labels = labels.shape[1]
    positives = np.flatnonzero(labels.ravel() == 1)
    negatives = np.flatnonzero(labels.ravel() == 0)
    hidden = rng.choice(positives, size=round(hide * len(positives)), replace=False)
    flipped = rng.choice(negatives, size=round(flip * len(negatives)), replace=False)
    flat = labels.ravel()
    flat[hidden] = 0
    flat[flipped] = 1
    changed = Manifest(manifest.schema, manifest.paths, labels, manifest.attributes, manifest.pixels,
                       manifest.source, manifest.meta)  # fmt: skip
    _ = n_labels
    return changed, set(hidden.tolist()), set(flipped.tolist())


def hits(rows: np.ndarray, cols: np.ndarray, n_labels: int, truth: set[int]) -> int:
    return sum(int(k) in truth for k in rows * n_labels + cols)


def figures_at(rows, cols, n_labels, truth: set[int], n: int) -> dict:
    found = hits(np.asarray(rows[:n]), np.asarray(cols[:n]), n_labels, truth)
    return {"n": n, "listed": int(min(n, len(rows))), "found": found,
            "precision": round(found / max(1, min(n, len(rows))), 4),
            "recall": round(found / max(1, len(truth)), 4)}  # fmt: skip


def mlic_figures(probs, targets, n_labels, hidden: set[int], flipped: set[int]) -> dict:
    from mlic.auditing import rank_suggestions

    out = {}
    if hidden:
        s = rank_suggestions(probs, targets, min_confidence=None, limit=len(hidden), kinds=("missing",))
        out["hidden_at_n"] = figures_at(s.image, s.label, n_labels, hidden, len(hidden))
        kept = rank_suggestions(probs, targets, kinds=("missing",), limit=None)
        out["hidden_in_review_file"] = figures_at(kept.image, kept.label, n_labels, hidden, len(kept))
        out["estimated_missing_share"] = round(
            float(kept.table["likely_missing"].sum()) / max(1, len(hidden)), 4
        )
    if flipped:
        n = 2 * len(flipped)
        s = rank_suggestions(probs, targets, min_confidence=None, limit=n, kinds=("wrong",))
        f = figures_at(s.image, s.label, n_labels, flipped, n)
        out["flipped_in_top_2x"] = {"n": n, "found": f["found"], "share_found": f["recall"]}
    return out


def cleanlab_figures(probs, labels, hidden: set[int], flipped: set[int]) -> dict | None:
    try:
        from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
        from cleanlab.multilabel_classification.rank import get_label_quality_scores_per_class
    except ImportError:
        return None
    n_labels = labels.shape[1]
    given = [list(np.flatnonzero(row == 1)) for row in labels]
    p = np.nan_to_num(probs.astype(np.float64), nan=0.0)
    started = time.perf_counter()
    quality = np.asarray(get_label_quality_scores_per_class(given, p))  # [N, L], low: likely an issue
    out: dict = {}
    cases = (("hidden_at_n", hidden, labels == 0, len(hidden)),
             ("flipped_in_top_2x", flipped, labels == 1, 2 * len(flipped)))  # fmt: skip
    for name, truth, mask, size in cases:
        if not truth:
            continue
        flat = np.flatnonzero(mask.ravel())
        order = flat[np.argsort(quality.ravel()[flat], kind="stable")][:size]
        f = figures_at(order // n_labels, order % n_labels, n_labels, truth, size)
        out[name] = (
            f if name == "hidden_at_n" else {"n": size, "found": f["found"], "share_found": f["recall"]}
        )
    issues = np.asarray(find_multilabel_issues_per_class(given, p))  # [N, L] bool
    for name, truth, mask in (
        ("hidden_flagged", hidden, labels == 0),
        ("flipped_flagged", flipped, labels == 1),
    ):
        if truth:
            flagged = np.flatnonzero((issues & mask).ravel())
            found = sum(int(k) in truth for k in flagged)
            out[name] = {"flagged": len(flagged), "found": found,
                         "precision": round(found / max(1, len(flagged)), 4),
                         "recall": round(found / len(truth), 4)}  # fmt: skip
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def oof_map(probs, truth, given) -> dict:
    """mAP of the out-of-fold probabilities against the true labels and against the corrupted ones.

    The first says how well the fold models rank (what any ranking of them can find); the second is what
    a fold's own validation measures, at most about 1 - hide for a perfect model.
    """
    from mlic.metrics import mean_average_precision

    p = np.nan_to_num(probs.astype(np.float32), nan=0.0)
    return {
        "true": round(mean_average_precision(truth, p), 4),
        "given": round(mean_average_precision(given, p), 4),
    }


def ranking_time(size: int, seed: int = 0) -> dict:
    """Seconds to rank ``size`` images x ``size`` labels of random scores (about 5 positives per image).

    No confidence cut: every pair is a candidate, and the best ``size`` of each kind are kept.
    """
    from mlic.auditing import rank_suggestions
    from mlic.data.targets import LabelLists

    rng = np.random.default_rng(seed)
    per_image = 5
    cols = np.sort(rng.choice(size, size=(size, per_image)), axis=1)
    lists = [sorted(set(row.tolist())) for row in cols]
    targets = LabelLists.from_lists(lists, size)
    probs = rng.random((size, size), dtype=np.float32) * 0.3
    rows = np.repeat(np.arange(size), [len(x) for x in lists])
    probs[rows, np.concatenate(lists)] = 0.9
    started = time.perf_counter()
    s = rank_suggestions(
        probs, targets, min_confidence=None, limit=size
    )  # every pair a candidate: the most work
    return {
        "images": size,
        "labels": size,
        "seconds": round(time.perf_counter() - started, 2),
        "suggestions": len(s),
    }


def contact_sheet(path: Path, records: list[dict], title: str) -> None:
    """An HTML page of suggestions: each image with its word, probability and the words it was given."""
    from mlic.auditing.page import thumbnail

    cards = []
    for r in records:
        uri = thumbnail(r["image"], 220)
        given = ", ".join(r.get("given_labels", []))
        cards.append(f'<figure><img src="{uri}"><figcaption><b>+ {html.escape(r["label"])}</b> '
                     f'({r["probability"]:.2f})<br><small>{html.escape(Path(r["image"]).name)}; given: '
                     f'{html.escape(given)}</small></figcaption></figure>')  # fmt: skip
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>body{{font:14px "
            "sans-serif}}figure{display:inline-block;width:230px;margin:6px;vertical-align:top}</style>"
            f"<h1>{html.escape(title)}</h1>" + "".join(cards))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")


def contact_sheet_png(
    path: Path, records: list[dict], title: str, *, columns: int = 5, size: int = 200
) -> None:
    """The same suggestions as one PNG image: a grid of thumbnails, each captioned with its words."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    caption = 48
    rows = max(1, -(-len(records) // columns))
    sheet = Image.new("RGB", (columns * (size + 8) + 8, 28 + rows * (size + caption + 8)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), title, fill="black", font=font)
    for k, r in enumerate(records):
        x, y = 8 + (k % columns) * (size + 8), 28 + (k // columns) * (size + caption + 8)
        try:
            with Image.open(r["image"]) as image:
                image = image.convert("RGB")
                image.thumbnail((size, size))
                sheet.paste(image, (x + (size - image.width) // 2, y + (size - image.height) // 2))
        except OSError:
            draw.rectangle((x, y, x + size, y + size), outline="red")
        lines = [f"+ {r['label']} ({r['probability']:.2f})"]
        lines += textwrap.wrap("words: " + " ".join(r.get("given_labels", [])), 34)[:2]
        for n, line in enumerate(lines):
            draw.text((x, y + size + 2 + 14 * n), line, fill="darkgreen" if n == 0 else "black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="A data file; default: MultiDigits training canvases.")
    parser.add_argument(
        "--images", type=int, default=10_000, help="MultiDigits canvases (as many as the demo trains on)."
    )
    parser.add_argument("--hide", type=float, default=0.3)
    parser.add_argument("--flip", type=float, default=0.02)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12, help="Epochs of each fold (the demo's 12).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", action="store_true")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--transfer", default="off", help="Label transfer in the folds' trainings (auto or off)."
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ranking-size", type=int, default=10_000, help="0: skip the 10k x 10k timing.")
    parser.add_argument(
        "--sheet",
        default=None,
        help="Write the top 20 suggestions not hidden here: an HTML page, or a PNG contact sheet (.png).",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from mlic.auditing import audit
    from mlic.data import load_data, multidigits

    source = load_data(args.data) if args.data else multidigits("train", args.images, seed=args.seed)
    data, hidden, flipped = corrupt(source, args.hide, args.flip, args.seed)
    options: dict = {"progress": False}
    if not args.features:
        options |= {"max_epochs": args.epochs, "transfer": args.transfer}
    given = {"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size,
             "batch_size": args.batch_size, "num_workers": args.workers}  # fmt: skip
    options |= {key: value for key, value in given.items() if value is not None}
    started = time.perf_counter()
    summary = audit(data, args.out, folds=args.folds, seed=args.seed, features=args.features, verbose=False,
                    **options)  # fmt: skip
    seconds = time.perf_counter() - started
    probs = np.load(Path(args.out) / "scores.npy")
    n_labels = data.schema.n_labels
    result = {
        "data": args.data or f"MultiDigits train, {args.images} canvases",
        "images": len(data), "labels": n_labels, "positives": int((source.labels == 1).sum()),
        "hidden": len(hidden), "flipped": len(flipped), "hide": args.hide, "flip": args.flip,
        "mode": summary["mode"], "folds": args.folds, "options": options,
        "seconds": round(seconds, 1), "audit_seconds": summary.get("seconds"),
        "oof_map": oof_map(probs, source.labels, data.labels),
        "mlic": mlic_figures(probs, data.label_lists, n_labels, hidden, flipped),
        "cleanlab": cleanlab_figures(probs, data.labels, hidden, flipped),
    }  # fmt: skip
    if args.ranking_size:
        result["ranking_10k"] = ranking_time(args.ranking_size)
    if args.sheet:
        from mlic.auditing import rank_suggestions

        s = rank_suggestions(probs, data.label_lists, min_confidence=None, limit=len(hidden) + 200,
                             kinds=("missing",))  # fmt: skip
        files = [str(p) for p in data.paths]
        records = []
        for i, j, p in zip(s.image, s.label, s.probability):
            if int(i) * n_labels + int(j) in hidden:
                continue
            given = [data.schema.labels[k] for k in np.flatnonzero(source.labels[i] == 1)]
            records.append({"image": files[i], "label": data.schema.labels[j], "probability": float(p),
                            "given_labels": given})  # fmt: skip
            if len(records) == 20:
                break
        title = "mlic audit: top 20 suggestions that were not hidden"
        write = contact_sheet_png if args.sheet.lower().endswith(".png") else contact_sheet
        write(Path(args.sheet), records, title)
        result["not_hidden_top20"] = [
            (Path(r["image"]).name, r["label"], round(r["probability"], 3)) for r in records
        ]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
