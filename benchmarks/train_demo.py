"""Train the default MultiDigits model as `mlic train` does, evaluate it, print one JSON object.

    python benchmarks/train_demo.py [--out DIR] [--max-epochs N] [--precision 32-true]

Figures: wall time of the whole `train` call (data generation included) and
of the fit alone, training images/s, and the test-split metrics that the
foundation issue promises (mAP >= 0.99, micro-F1 >= 0.97, count accuracy
>= 0.98, largest accuracy >= 0.97, within 5 minutes on two CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

import mlic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--precision", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="mlic-bench-")
    options = {"out": out, "progress": False}
    if args.max_epochs:
        options["max_epochs"] = args.max_epochs
    if args.precision:
        options["precision"] = args.precision

    started = time.perf_counter()
    artifact = mlic.train(**options)
    wall = time.perf_counter() - started
    training = mlic.load_artifact(artifact).training
    figures = mlic.evaluate(artifact, "demo")
    images_seen = training["train_images"] * training["epochs"]
    print(json.dumps({
        "benchmark": "train_demo",
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": training["precision"],
        "epochs": training["epochs"],
        "train_images": training["train_images"],
        "wall_seconds": round(wall, 1),
        "fit_seconds": training["seconds"],
        "train_images_per_second": round(images_seen / training["seconds"], 1),
        "test": {
            "mAP": figures["mAP"],
            "micro_f1": figures["micro_f1"],
            "macro_f1": figures["macro_f1"],
            "count_accuracy": figures["attributes"]["count"]["accuracy"],
            "largest_accuracy": figures["attributes"]["largest"]["accuracy"],
            "subset_accuracy": figures["subset_accuracy"],
        },
        "artifact": str(artifact),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
