"""Batch inference speed of ``Predictor`` on CPU: the PyTorch runtime against the ONNX Runtime one.

    python benchmarks/predict.py                       # 4-8 minutes on two busy cores
    python benchmarks/predict.py --artifact runs/x     # a trained 64 px model instead of random weights
    python benchmarks/predict.py --batch-sizes 1 32    # other batch sizes
    python benchmarks/predict.py --runtimes torch      # PyTorch only (no ONNX export), maps included

Two models, each saved as an artifact in a temporary folder and exported with
``mlic.export.export_onnx`` (the parity check included):

- ``mlic_cnn@64``: the default MultiDigits model (linear head), 64 px input;
  random weights unless ``--artifact`` names a trained one (copied, so it is
  left untouched); speed does not depend on the weights' values;
- ``resnet18@224``: timm's ``resnet18`` without pretrained weights, 224 px input,
  linear head: a typical photo model.

Both read the same in-memory MultiDigits test canvases (uint8 arrays, 64x64
grey). For each model, runtime and batch size: ``predictor`` is images/s of
``Predictor.predict_proba`` (conversion to tensors, resize, the network,
sigmoid and softmax), ``network`` the images/s of the network alone on
already-resized uint8 batches: the part the runtime changes, and (PyTorch only)
``maps`` the images/s of ``Predictor.explain`` giving a map of every label and
attribute class at each image's size (class activation maps: both models have the
linear head), with ``maps_cost`` = its time over ``predictor``'s (issue 17 asks
at most 1.3). Each figure is the
best of ``--repeats`` timed passes after one warm-up batch. Threads: torch's
default (``torch.get_num_threads()``), ONNX Runtime's default (one per
physical core). The load average before and after is printed with the figures,
since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from mlic.artifact import save_artifact
from mlic.data import multidigits
from mlic.data.formats.demo import SCHEMA
from mlic.data.images import Preprocessing
from mlic.export import export_onnx
from mlic.models import ModelConfig, build_classifier
from mlic.predict import Predictor

MODELS = {"mlic_cnn@64": ("mlic_cnn", 64, 256), "resnet18@224": ("resnet18", 224, 64)}
"""Name -> (timm backbone, input side, images per timed pass)."""
RUNTIMES = ("torch", "onnx")
KINDS = ("predictor", "network")
MAPS = "maps"


def make_artifact(folder: Path, backbone: str, side: int, trained: Path | None, onnx: bool = True) -> Path:
    """A copy of a trained artifact, or a random-weight one for ``backbone`` at ``side`` px; exported."""
    if trained is not None:
        source = trained / "artifact" if (trained / "artifact" / "mlic.json").is_file() else trained
        shutil.copytree(source, folder)
    else:
        torch.manual_seed(0)
        model = build_classifier(SCHEMA, ModelConfig(backbone=backbone)).eval()
        save_artifact(folder, model, Preprocessing(image_size=(side, side), hflip=False), np.full(10, 0.5))
    if onnx:
        export_onnx(folder)
    return folder


def seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(
    artifact: Path, images: list[np.ndarray], batch_size: int, repeats: int, runtimes=RUNTIMES
) -> dict:
    """``{runtime: {"predictor": images/s, "network": images/s}}`` at one batch size.

    The runtimes' passes alternate, and each figure is the best of ``repeats``,
    so that a burst of load from other processes hits both runtimes alike.
    """
    predictors = {rt: Predictor.from_path(artifact, runtime=rt, batch_size=batch_size) for rt in runtimes}
    side = predictors["torch"].artifact.preprocessing.image_size
    batches = [
        torch.randint(0, 256, (min(batch_size, len(images) - i), 3, *side), dtype=torch.uint8)
        for i in range(0, len(images), batch_size)
    ]

    def network(predictor: Predictor):
        @torch.inference_mode()
        def run() -> None:
            for batch in batches:
                predictor.model(batch)

        return run

    passes = {}
    for rt, predictor in predictors.items():
        predictor.predict_proba(images[:batch_size])  # warm-up: first-call allocations, ORT's graph setup
        passes[rt, "predictor"] = lambda p=predictor: p.predict_proba(images)
        passes[rt, "network"] = network(predictor)
        if rt == "torch":
            predictor.explain(images[:batch_size])
            passes[rt, MAPS] = lambda p=predictor: p.explain(images)
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(repeats):
        for key, run in passes.items():
            best[key] = min(best[key], seconds(run))
    out = {rt: {kind: round(len(images) / best[rt, kind], 1) for kind in KINDS} for rt in runtimes}
    out["torch"][MAPS] = round(len(images) / best["torch", MAPS], 1)
    out["torch"]["maps_cost"] = round(best["torch", MAPS] / best["torch", "predictor"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="A trained 64 px artifact (or run) for mlic_cnn@64.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    args = parser.parse_args()
    if "torch" not in args.runtimes:
        parser.error("--runtimes must include torch")

    load_before = os.getloadavg()
    canvases = list(multidigits("test", max(n for _, _, n in MODELS.values()), seed=0).pixels)
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (backbone, side, n_images) in MODELS.items():
            trained = args.artifact if name == "mlic_cnn@64" else None
            onnx = "onnx" in args.runtimes
            artifact = make_artifact(Path(tmp) / name, backbone, side, trained, onnx)
            by_batch = {
                b: measure(artifact, canvases[:n_images], b, args.repeats, args.runtimes)
                for b in args.batch_sizes
            }
            figures[name] = {rt: {str(b): by_batch[b][rt] for b in args.batch_sizes} for rt in args.runtimes}
            if onnx:
                record = json.loads((artifact / "mlic.json").read_text())["exports"]["onnx"]
                figures[name]["onnx_max_abs_diff"] = record["max_abs_diff"]
            figures[name]["weights"] = "trained" if trained else "random"
    print(
        json.dumps(
            {
                "images_per_second": figures,
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
