"""Calibration of the probabilities on held-out data: ECE and Brier before and after, mAP and decisions kept.

    python benchmarks/calibration.py --artifact runs/demo                       # MultiDigits test split
    python benchmarks/calibration.py --artifact runs/apparel/artifact --test apparel/test_tags.csv
    python benchmarks/calibration.py --artifact runs/demo --fit platt --val demo # fit (again) on validation
    python benchmarks/calibration.py --artifact runs/apparel --fit temperature --val run \
        --test apparel/test_tags.csv

The artifact is copied into a temporary folder and never changed. With
``--fit METHOD`` (or for an artifact from before calibration existed, ``--fit
auto``), the copy's calibration is fitted on ``--val`` (validation data;
``demo``: the MultiDigits validation split; ``run``: the validation split of
the artifact's own training run, rebuilt from its ``config.json`` as ``mlic
train`` made it, and scored with a label-transfer bank that leaves those
images out, as training scored them) by
``mlic.evaluation.calibrate_probabilities``, exactly as ``mlic calibrate
--probabilities`` does; otherwise the artifact's own calibration, as ``mlic
train --calibration auto`` (the default) chose it, is measured: where ``auto``
kept none, the calibrated figures are the uncalibrated ones and ``chosen_by``
says why.

The test images go through the network once; the same logits give the
uncalibrated probabilities (decided by the thresholds before calibration) and
the calibrated ones (decided by the re-expressed thresholds). Prints one JSON
object: macro and micro ECE and Brier score of both, the relative fall of each,
mAP of both, the number of decisions (image, label) that differ, and the
calibration's method. Acceptance (issue 17): ``ece_macro`` falls by at least
30%, mAP and decisions unchanged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mlic.artifact import load_artifact
from mlic.data.formats import load_data
from mlic.evaluation import calibrate_probabilities
from mlic.metrics import calibration_figures, mean_average_precision
from mlic.predict import Predictor

KEYS = ("ece_macro", "ece_micro", "brier_macro", "brier_micro")


def run_validation(artifact: Path):
    """The validation manifest of the training run that made ``artifact`` (its ``config.json``)."""
    from mlic.training.config import read_run_config
    from mlic.training.datamodule import load_splits
    from mlic.training.defaults import resolve

    path = load_artifact(artifact).path
    return load_splits(resolve(read_run_config(path.parent)))[1]


def without_own_votes(artifact: Path, n_val: int) -> Predictor:
    """A predictor of ``artifact`` whose label-transfer bank leaves out the run's ``n_val`` validation images.

    Training fills the bank with the training images, then the validation ones
    (``mlic.training.run``); scored with them in the bank, each validation image
    would find itself as its nearest neighbour and look perfectly confident.
    Training fits its calibration on scores from the training images alone, and
    so does this.
    """
    predictor = Predictor.from_path(artifact)
    transfer = getattr(predictor.model, "transfer", None)
    if transfer is not None:
        transfer.bank, transfer.bank_labels = transfer.bank[:-n_val], transfer.bank_labels[:-n_val]
    return predictor


def measure(artifact: Path, test: str, val: str, fit: str | None, source: dict) -> dict:
    """The figures of the module docstring, for a copy of ``artifact`` (see there for ``fit``)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "artifact"
        shutil.copytree(load_artifact(artifact).path, copy)
        fitted, chosen_by = None, (load_artifact(copy).training or {}).get("calibration")
        if fit is not None or (load_artifact(copy).calibration is None and chosen_by is None):
            fitted = fit or "auto"
            data = run_validation(artifact) if val == "run" else val
            target = without_own_votes(copy, len(data)) if val == "run" else copy
            result = calibrate_probabilities(
                target, data, fitted, **(source if val not in ("demo", "run") else {})
            )
            chosen_by = result["chosen_by"]
        predictor = Predictor.from_path(copy)
        calibration = predictor.calibration
        options = source if test != "demo" else {}
        manifest = load_data(test, schema=predictor.schema, split="test", **options)
        outputs = predictor.manifest_outputs(manifest)
        raw = outputs.probabilities(predictor.schema).labels
        calibrated = outputs.probabilities(predictor.schema, calibration).labels  # raw when none is kept
        thresholds = predictor.artifact.thresholds
        raw_thresholds = calibration.thresholds(thresholds, inverse=True) if calibration else thresholds
        y = manifest.labels
        before, after = calibration_figures(y, raw), calibration_figures(y, calibrated)
        changed = int(((raw >= raw_thresholds) != (calibrated >= thresholds)).sum())
        out = {
            "uncalibrated": {k: round(before[k], 5) for k in KEYS},
            "calibrated": {k: round(after[k], 5) for k in KEYS},
            "fall": {k: round(1 - after[k] / before[k], 4) for k in KEYS if before[k] > 0},
            "mAP_uncalibrated": round(float(mean_average_precision(y, raw)), 6),
            "mAP_calibrated": round(float(mean_average_precision(y, calibrated)), 6),
            "decisions": int(y.size),
            "decisions_changed": changed,
            "decision_policy": predictor.artifact.decision.policy,
            "method": calibration.method if calibration else None,
            "chosen_by": chosen_by,
            "fitted_here": fitted is not None,
            "fitted_on": calibration.fitted_on if calibration else None,
            "scale_range": [round(float(f(calibration.scale)), 4) for f in (np.min, np.max)]
            if calibration
            else None,
            "test_images": len(manifest),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True, help="A trained artifact (or run) directory.")
    parser.add_argument("--test", default="demo", help="Held-out data (default: the MultiDigits test split).")
    parser.add_argument("--val", default="demo", help="Validation data for --fit (default: MultiDigits').")
    parser.add_argument(
        "--fit", choices=("auto", "temperature", "platt"), help="Fit the calibration on --val first."
    )
    parser.add_argument("--images-root", type=Path, help="Where relative paths of --test / --val resolve.")
    args = parser.parse_args()
    source = {"images_root": args.images_root} if args.images_root else {}
    started = time.perf_counter()
    figures = measure(args.artifact, args.test, args.val, args.fit, source)
    seconds = round(time.perf_counter() - started, 1)
    figures |= {"artifact": str(args.artifact), "test": args.test, "seconds": seconds}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
