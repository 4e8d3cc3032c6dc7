"""Calibration of the probabilities on held-out data: ECE and Brier before and after, mAP and decisions kept.

    python benchmarks/calibration.py --artifact runs/demo                       # MultiDigits test split
    python benchmarks/calibration.py --artifact runs/apparel/artifact --test apparel/test_tags.csv
    python benchmarks/calibration.py --artifact runs/demo --fit platt --val demo # fit (again) on validation
    python benchmarks/calibration.py --artifact runs/apparel --fit temperature --val run \
        --test apparel/test_tags.csv

The artifact is copied into a temporary folder and never changed. With
``--fit METHOD`` (or when the artifact has no calibration, ``--fit
temperature`` by default), the copy's calibration is fitted on ``--val``
(validation data; ``demo``: the MultiDigits validation split; ``run``: the
validation split of the artifact's own training run, rebuilt from its
``config.json`` as ``mlic train`` made it) by
``mlic.evaluation.calibrate_probabilities``, exactly as ``mlic calibrate
--probabilities`` does; otherwise the artifact's own calibration (fitted on
validation at the end of ``mlic train --calibration temperature|platt``, off by
default, or by ``mlic calibrate --probabilities``) is measured.

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


def measure(artifact: Path, test: str, val: str, fit: str | None, source: dict) -> dict:
    """The figures of the module docstring, for a copy of ``artifact`` (see there for ``fit``)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "artifact"
        shutil.copytree(load_artifact(artifact).path, copy)
        fitted = None
        if fit is not None or load_artifact(copy).calibration is None:
            fitted = fit or "temperature"
            data = run_validation(artifact) if val == "run" else val
            calibrate_probabilities(copy, data, fitted, **(source if val not in ("demo", "run") else {}))
        predictor = Predictor.from_path(copy)
        calibration = predictor.calibration
        options = source if test != "demo" else {}
        manifest = load_data(test, schema=predictor.schema, split="test", **options)
        outputs = predictor.manifest_outputs(manifest)
        raw = outputs.probabilities(predictor.schema).labels
        calibrated = outputs.probabilities(predictor.schema, calibration).labels
        thresholds = predictor.artifact.thresholds
        raw_thresholds = calibration.thresholds(thresholds, inverse=True)
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
            "method": calibration.method,
            "fitted_here": fitted is not None,
            "fitted_on": calibration.fitted_on,
            "scale_range": [round(float(f(calibration.scale)), 4) for f in (np.min, np.max)],
            "test_images": len(manifest),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True, help="A trained artifact (or run) directory.")
    parser.add_argument("--test", default="demo", help="Held-out data (default: the MultiDigits test split).")
    parser.add_argument("--val", default="demo", help="Validation data for --fit (default: MultiDigits').")
    parser.add_argument("--fit", choices=("temperature", "platt"), help="Fit the calibration on --val first.")
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
