"""Batch inference speed of ``Predictor`` on CPU: float32, bf16 and int8, in PyTorch and ONNX Runtime.

    python benchmarks/predict.py                       # 10-15 minutes on two busy cores, plus the label maps
    python benchmarks/predict.py --artifact runs/x     # a trained 64 px model instead of random weights
    python benchmarks/predict.py --batch-sizes 1 32    # other batch sizes

Two models, each saved as an artifact in a temporary folder, exported with
``mlic.export.export_onnx`` (the parity check included) and quantized to int8
with ``mlic.quantize.quantize_onnx`` on 128 MultiDigits validation canvases:

- ``mlic_cnn@64``: the default MultiDigits model (linear head), 64 px input;
  random weights unless ``--artifact`` names a trained one (copied, so it is
  left untouched);
- ``resnet18@224``: timm's ``resnet18`` without pretrained weights, 224 px input,
  linear head: a typical photo model.

Speed does not depend on the weights' values, but parity does: the int8 and
bf16 parity of a random-weight model says nothing about a trained one, so
random-weight models are quantized with the parity limits lifted (speed only)
and their parity is printed but marked ``"weights": "random"``; a trained
``--artifact`` is held to the real limits, as ``mlic export`` holds it.

Four variants: ``torch fp32``, ``torch bf16`` (autocast, channels-last),
``onnx fp32`` (``model.onnx``) and ``onnx int8`` (``model.int8.onnx``). For each
model, variant and batch size: ``predictor`` is images/s of
``Predictor.predict_proba`` (conversion to tensors, resize, the network,
sigmoid and softmax), ``network`` the images/s of the network alone on
already-resized uint8 batches. For ``torch fp32`` only, ``maps`` is the images/s
of ``Predictor.explain`` giving a map of every label and attribute class at each
image's size (class activation maps: both models have the linear head), and
``maps_cost`` its time over ``predictor``'s on the same images (issue 17 asks at
most 1.3 for the linear head). Each figure is the best of ``--repeats`` timed
passes after one warm-up batch; the variants' passes alternate so that a burst
of load hits all alike. ``limit`` estimates the machine's ceiling for each
model and precision: the model's FLOPs per image (``torch.utils.flop_counter``)
against the best matrix-multiply throughput measured here at that precision
(float32 and bf16 in torch and ONNX Runtime's ``MatMul``; int8 as ONNX
Runtime's ``MatMulInteger`` u8 x s8), so ``share_of_limit`` is each network
figure as a share of it (convolution kernels can beat a plain matmul, so a
share can pass 1). ``ratio_to_onnx_fp32`` compares each variant's network
figure with ONNX Runtime float32 at the same batch size. The load average
before and after is printed with the figures, since the machine may be shared.
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
from onnx import TensorProto, helper
from torch.utils.flop_counter import FlopCounterMode

from mlic.artifact import load_artifact, save_artifact
from mlic.data import multidigits
from mlic.data.formats.demo import SCHEMA
from mlic.data.images import Preprocessing
from mlic.export import export_onnx
from mlic.models import ModelConfig, build_classifier
from mlic.predict import Predictor
from mlic.quantize import LIMITS, Limits, quantize_onnx

MODELS = {"mlic_cnn@64": ("mlic_cnn", 64, 256), "resnet18@224": ("resnet18", 224, 64)}
"""Name -> (timm backbone, input side, images per timed pass)."""
VARIANTS = {"torch fp32": ("torch", "fp32"), "torch bf16": ("torch", "bf16"),
            "onnx fp32": ("onnx", "fp32"), "onnx int8": ("onnx", "int8")}  # fmt: skip
"""Name -> (runtime, precision)."""
KINDS = ("predictor", "network")
MAPS = "torch fp32"
"""The variant whose label maps are measured against its own prediction (maps run the float32 network)."""
SPEED_ONLY = Limits(min_decision_agreement=0.0, max_map_difference=float("inf"))
"""Random weights: quantize for speed, whatever the parity (printed, and marked as random)."""


def make_artifact(folder: Path, backbone: str, side: int, trained: Path | None) -> Path:
    """A trained artifact's copy, or a random-weight ``backbone`` at ``side`` px; exported and quantized."""
    if trained is not None:
        source = trained / "artifact" if (trained / "artifact" / "mlic.json").is_file() else trained
        shutil.copytree(source, folder)
    else:
        torch.manual_seed(0)
        model = build_classifier(SCHEMA, ModelConfig(backbone=backbone)).eval()
        save_artifact(folder, model, Preprocessing(image_size=(side, side), hflip=False), np.full(10, 0.5))
    export_onnx(folder)
    quantize_onnx(folder, "demo", demo_samples=512, limits=LIMITS if trained else SPEED_ONLY)
    return folder


def seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(artifact: Path, images: list[np.ndarray], batch_size: int, repeats: int) -> dict:
    """``{variant: {"predictor": images/s, "network": images/s}}`` at one batch size.

    ``MAPS``'s entry also has ``maps`` (images/s of ``Predictor.explain``) and
    ``maps_cost`` (its time over ``predict_proba``'s).
    """
    predictors = {name: Predictor.from_path(artifact, runtime=rt, precision=p, batch_size=batch_size)
                  for name, (rt, p) in VARIANTS.items()}  # fmt: skip
    side = predictors["torch fp32"].artifact.preprocessing.image_size
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
    for name, predictor in predictors.items():
        predictor.predict_proba(images[:batch_size])  # warm-up: first-call allocations, ORT's graph setup
        passes[name, "predictor"] = lambda p=predictor: p.predict_proba(images)
        passes[name, "network"] = network(predictor)
        if name == MAPS:
            predictor.explain(images[:batch_size])  # warm-up
            passes[name, "maps"] = lambda p=predictor: p.explain(images)
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(repeats):
        for key, run in passes.items():
            best[key] = min(best[key], seconds(run))
    out = {name: {kind: round(len(images) / best[name, kind], 1) for kind in KINDS} for name in VARIANTS}
    out[MAPS]["maps"] = round(len(images) / best[MAPS, "maps"], 1)
    out[MAPS]["maps_cost"] = round(best[MAPS, "maps"] / best[MAPS, "predictor"], 3)
    return out


def flops_per_image(artifact: Path) -> float:
    """The network's floating-point operations for one image (multiply and add counted apart)."""
    loaded = load_artifact(artifact)
    model = loaded.build_model()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, *loaded.preprocessing.image_size, dtype=torch.uint8))
    return float(counter.get_total_flops())


def matmul_throughput(n: int = 2048, repeats: int = 10) -> dict:
    """FLOP/s of n x n matrix products: float32 and bf16 (torch; ORT too for float32), int8 (ORT u8s8)."""

    def timed(run) -> float:  # the best of three passes: a burst of load from elsewhere only lowers one
        run()
        return max(2 * n**3 * repeats / seconds(lambda: [run() for _ in range(repeats)]) for _ in range(3))

    def ort_matmul(op: str, a: np.ndarray, b: np.ndarray, out: int) -> float:
        types = {np.float32: TensorProto.FLOAT, np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}
        inputs = [
            helper.make_tensor_value_info(x, types[m.dtype.type], None) for x, m in (("a", a), ("b", b))
        ]
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "matmul", inputs,
                                  [helper.make_tensor_value_info("y", out, None)])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return timed(lambda: session.run(None, {"a": a, "b": b}))

    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return {
        "fp32": max(timed(lambda: ta @ tb), ort_matmul("MatMul", a, b, TensorProto.FLOAT)),
        "bf16": timed(lambda: ta.bfloat16() @ tb.bfloat16()) if torch.ops.mkldnn._is_mkldnn_bf16_supported()
        else None,
        "int8": ort_matmul("MatMulInteger", rng.integers(0, 256, (n, n), dtype=np.uint8),
                           rng.integers(-128, 128, (n, n), dtype=np.int8), TensorProto.INT32),
    }  # fmt: skip


def limits(flops: float, peak: dict, figures: dict) -> dict:
    """Per variant: the ceiling images/s at its precision, and each batch size's network figure as a share."""
    out = {}
    for name, (_, precision) in VARIANTS.items():
        if peak[precision] is None:
            continue
        ceiling = peak[precision] / flops
        shares = {b: round(f["network"] / ceiling, 2) for b, f in figures[name].items()}
        out[name] = {"images_per_second": round(ceiling, 1), "share_of_limit": shares}
    return out


def ratios(figures: dict) -> dict:
    """Each variant's network images/s against ONNX Runtime float32 at the same batch size."""
    base = figures["onnx fp32"]
    return {name: {b: round(f["network"] / base[b]["network"], 2) for b, f in by_batch.items()}
            for name, by_batch in figures.items()}  # fmt: skip


def parity(artifact: Path) -> dict:
    """The int8 model's parity as ``mlic export`` recorded it."""
    record = json.loads((artifact / "mlic.json").read_text())["exports"]
    return {"onnx fp32 max_abs_logit_diff": record["onnx"]["max_abs_diff"],
            "onnx int8": record["onnx_int8"]["parity"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="A trained 64 px artifact (or run) for mlic_cnn@64.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load_before = os.getloadavg()
    peak = matmul_throughput()
    canvases = list(multidigits("test", max(n for _, _, n in MODELS.values()), seed=0).pixels)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (backbone, side, n_images) in MODELS.items():
            trained = args.artifact if name == "mlic_cnn@64" else None
            artifact = make_artifact(Path(tmp) / name, backbone, side, trained)
            by_batch = {b: measure(artifact, canvases[:n_images], b, args.repeats) for b in args.batch_sizes}
            figures = {v: {str(b): by_batch[b][v] for b in args.batch_sizes} for v in VARIANTS}
            flops = flops_per_image(artifact)
            results[name] = {
                "images_per_second": figures,
                "ratio_to_onnx_fp32": ratios(figures),
                "gflops_per_image": round(flops / 1e9, 3),
                "limit": limits(flops, peak, figures),
                "parity": parity(artifact),
                "weights": "trained" if trained else "random",
            }
    print(
        json.dumps(
            {
                "models": results,
                "matmul_gflops_per_second": {k: v and round(v / 1e9, 1) for k, v in peak.items()},
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
