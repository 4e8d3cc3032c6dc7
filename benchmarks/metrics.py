"""Time mlic's full metric set against scikit-learn's equivalents; print one JSON object.

    python benchmarks/metrics.py                       # 50,000 x 1,000 and 50,000 x 10,000
    python benchmarks/metrics.py --sizes 20000x500 --sklearn-full

Data (deterministic from --seed): labels with Zipf-like frequencies, about
--positives-per-image positives per image (density 1% at 1,000 labels, 0.1% at
10,000), and float32 sigmoid scores correlated with the targets (positives'
logits N(0.5, 1.5), negatives' N(-5.5, 1.5), plus a per-label offset N(0, 1));
thresholds 0.5; two attributes (3 and 5 classes) decided by argmax.

mlic: one ``all_metrics`` call (every figure of the issue). scikit-learn: the
same figures with its functions (``average_precision_score`` and
``roc_auc_score`` with ``average=None``; ``precision_recall_fscore_support``
micro, macro, samples and per label; ``hamming_loss``; ``accuracy_score``;
``jaccard_score(average="samples")``; ``label_ranking_average_precision_score``;
``label_ranking_loss``; ``coverage_error``; and per attribute ``accuracy_score``,
``f1_score(average="macro")``, ``confusion_matrix``). scikit-learn has no
one-error or precision@k; they are left out of its time. Its per-label metrics
are timed on at most --sklearn-labels labels (all samples) and its per-sample and
decision metrics on at most --sklearn-samples samples (all labels), then scaled
linearly; the JSON says which. The same subsets check mlic's figures against
scikit-learn's (max absolute difference).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
import warnings

import numpy as np
from sklearn import metrics as skm

from mlic.metrics import all_metrics


def make_data(n: int, n_labels: int, positives_per_image: float, seed: int):
    """Targets int8 [n, n_labels], float32 scores, attribute targets and probabilities."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(n_labels) + 10.0) ** 0.9
    freq = np.minimum(weights / weights.sum() * positives_per_image, 0.5)[rng.permutation(n_labels)]
    freq = freq.astype(np.float32)
    offset = rng.normal(0.0, 1.0, n_labels).astype(np.float32)
    y = np.empty((n, n_labels), np.int8)
    s = np.empty((n, n_labels), np.float32)
    step = max(1, (1 << 22) // n_labels)
    for r in range(0, n, step):  # blocks keep the temporaries small
        rows = slice(r, min(r + step, n))
        pos = rng.random((rows.stop - r, n_labels), dtype=np.float32) < freq
        z = rng.standard_normal((rows.stop - r, n_labels), dtype=np.float32) * np.float32(1.5)
        z += np.where(pos, np.float32(0.5), np.float32(-5.5)) + offset
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += np.float32(1)
        np.reciprocal(z, out=s[rows])
        y[rows] = pos
    attr_true = np.stack([rng.integers(0, c, n) for c in (3, 5)], axis=1)
    attr_probs = []
    for j, c in enumerate((3, 5)):
        logits = rng.normal(0.0, 1.0, (n, c))
        logits[np.arange(n), attr_true[:, j]] += 1.5
        p = np.exp(logits)
        attr_probs.append(p / p.sum(axis=1, keepdims=True))
    return y, s, attr_true, attr_probs


def sklearn_per_label(y, s):
    """scikit-learn's per-label ranking metrics; returns (seconds, figures)."""
    t0 = time.perf_counter()
    ap = skm.average_precision_score(y, s, average=None)
    auroc = skm.roc_auc_score(y, s, average=None)
    seconds = time.perf_counter() - t0
    support = y.sum(axis=0)
    return seconds, {
        "mAP": float(np.mean(ap)),
        "weighted_mAP": float(np.average(ap, weights=support)),
        "macro_auroc": float(np.mean(auroc)),
    }


def sklearn_per_sample(y, s, thresholds, attr_true, attr_probs):
    """scikit-learn's per-sample and decision metrics (and attributes); returns (seconds, figures)."""
    t0 = time.perf_counter()
    pred = (s >= thresholds).astype(np.int8)
    with_pos = np.flatnonzero(y.any(axis=0))
    out = {}
    for avg in ("micro", "macro", "samples"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, average=avg, zero_division=0, labels=with_pos if avg == "macro" else None
        )
        out |= {f"{avg}_precision": p, f"{avg}_recall": r, f"{avg}_f1": f}
    skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out["hamming_loss"] = skm.hamming_loss(y, pred)
    out["label_subset_accuracy"] = skm.accuracy_score(y, pred)
    out["jaccard_samples"] = skm.jaccard_score(y, pred, average="samples", zero_division=0)
    out["lrap"] = skm.label_ranking_average_precision_score(y, s)
    out["ranking_loss"] = skm.label_ranking_loss(y, s)
    out["coverage_error"] = skm.coverage_error(y, s)
    for j, p in enumerate(attr_probs):
        decided = p.argmax(axis=1)
        skm.accuracy_score(attr_true[:, j], decided)
        skm.f1_score(attr_true[:, j], decided, average="macro")
        skm.confusion_matrix(attr_true[:, j], decided, labels=range(p.shape[1]))
    return time.perf_counter() - t0, {k: float(v) for k, v in out.items()}


def compare(mine: dict, theirs: dict) -> dict:
    diffs = {k: abs(mine[k] - v) for k, v in theirs.items()}
    worst = max(diffs, key=diffs.get)
    return {
        "figures": sorted(diffs),
        "max_abs_diff": diffs[worst],
        "worst": worst,
        "ok": diffs[worst] <= 1e-6,
    }


def run_size(n, n_labels, args) -> dict:
    log(f"{n} x {n_labels}: generating data")
    y, s, attr_true, attr_probs = make_data(n, n_labels, args.positives_per_image, args.seed)
    thresholds = 0.5
    log(f"{n} x {n_labels}: mlic")
    load_before = os.getloadavg()[0]
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        figures = all_metrics(y, s, thresholds, attr_true, attr_probs)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    tracemalloc.start()
    all_metrics(y, s, thresholds, attr_true, attr_probs)
    mlic_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    load_after = os.getloadavg()[0]

    log(f"{n} x {n_labels}: mlic took {min(times):.2f} s; scikit-learn")
    n_lab = n_labels if args.sklearn_full else min(n_labels, args.sklearn_labels)
    n_smp = n if args.sklearn_full else min(n, args.sklearn_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = np.flatnonzero(y[:, :n_lab].any(axis=0))  # scikit-learn's AP needs a positive per label
        # C order: y[:, keep] is F-ordered, and scikit-learn's per-label take() would copy it per label
        ys, ss = np.ascontiguousarray(y[:, keep]), np.ascontiguousarray(s[:, keep])
        t_label, sk_label = sklearn_per_label(ys, ss)
        t_label *= n_labels / n_lab
        yr, sr = y[:n_smp], s[:n_smp]
        attrs = (attr_true[:n_smp], [p[:n_smp] for p in attr_probs])
        t_sample, sk_sample = sklearn_per_sample(yr, sr, thresholds, *attrs)
        t_sample *= n / n_smp
    mine_label = all_metrics(ys, ss, thresholds)
    mine_sample = all_metrics(yr, sr, thresholds)
    sk_seconds = t_label + t_sample
    return {
        "n_samples": n,
        "n_labels": n_labels,
        "density": float(np.count_nonzero(y) / y.size),
        "data_gb": round((y.nbytes + s.nbytes) / 2**30, 3),
        "mlic_seconds": round(min(times), 3),
        "mlic_seconds_all_runs": [round(t, 3) for t in times],
        "mlic_cpu_seconds": round(cpu[int(np.argmin(times))], 3),
        "mlic_peak_extra_gb": round(mlic_peak / 2**30, 3),
        "sklearn_seconds": round(sk_seconds, 2),
        "sklearn_seconds_per_label_metrics": round(t_label, 2),
        "sklearn_seconds_per_sample_and_decision_metrics": round(t_sample, 2),
        "sklearn_seconds_estimated_from": {
            "per_label_metrics": f"{n_lab} of {n_labels} labels, all samples, scaled x{n_labels / n_lab:g}",
            "per_sample_and_decision_metrics": f"{n_smp} of {n} samples, all labels, scaled x{n / n_smp:g}",
        },
        "speedup": round(sk_seconds / min(times), 1),
        "consistency_per_label_subset": compare(mine_label, sk_label),
        "consistency_per_sample_subset": compare(mine_sample, sk_sample),
        "figures": {k: figures[k] for k in ("mAP", "macro_auroc", "micro_f1", "lrap", "precision_at_1")},
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
    }


def log(message: str) -> None:
    """Progress on stderr; stdout carries only the JSON."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000x1000,50000x10000", help="NxL[,NxL...]")
    parser.add_argument("--positives-per-image", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="mlic runs per size; the best is reported")
    parser.add_argument("--sklearn-labels", type=int, default=2000)
    parser.add_argument("--sklearn-samples", type=int, default=10000)
    parser.add_argument("--sklearn-full", action="store_true", help="run scikit-learn on all the data")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",")]
    results = [run_size(n, n_labels, args) for n, n_labels in sizes]
    print(
        json.dumps(
            {
                "benchmark": "mlic.metrics.all_metrics vs scikit-learn",
                "cpu_count": os.cpu_count(),
                "python": sys.version.split()[0],
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "sizes": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
