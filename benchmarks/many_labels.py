"""Step time and peak memory of each head at 1,000 and 10,000 labels on CPU; print one JSON object.

    python benchmarks/many_labels.py
    python benchmarks/many_labels.py --heads csra --labels 10000 --batch-size 32 --image-size 96

For each head and label count, in a fresh process (so that peak memory is its
own): ``mlic_cnn`` + the head from ``build_classifier`` (channels-last, as
``mlic train`` runs it), random uint8 images (``--batch-size`` images of 3 x
``--image-size`` x ``--image-size``), random sparse targets (``--positives`` random
positives per image, the rest absent), ``SchemaLoss`` with its default
(BCE, missing labels ignored) and AdamW. Figures:

- ``train_step_ms``: median of ``--steps`` training steps (forward, loss,
  backward, optimiser step) after ``--warmup`` steps, under bf16 autocast where
  ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, else float32
  (``--precision`` forces one); ``precision`` says which.
- ``eval_step_ms``: median of ``--steps`` forward passes in eval mode under
  ``torch.inference_mode`` (same precision), measured before training.
- ``eval_peak_mib`` / ``train_peak_mib``: growth of the peak resident set size
  (``getrusage`` ``ru_maxrss``) over the resident set size once the model, the
  optimiser and the batch exist; eval first, so each peak is its own.
- ``params`` / ``head_params``: parameter counts of the classifier and of the head.

``--pipeline`` adds, per head at the largest label count, one whole run of
the library in a fresh process: ``--pipeline-images`` random PNG files with a
JSON-lines file of ``--positives`` tags each (every label used), then
``mlic.train`` (one epoch) and ``mlic.evaluate`` on the same file. It prints
their seconds, the peak resident set size of that process, and the bytes of
the training targets as label lists against the dense int8 matrix they
replace.

The load average (before and after) is reported because the figures are
wall-clock times on a machine that may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

HEADS = ("linear", "csra", "ml-decoder")
LABELS = (1_000, 10_000)


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_ms(fn, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def run_one(args: argparse.Namespace) -> dict:
    """One head at one label count, in this process."""
    from mlic.losses import SchemaLoss
    from mlic.models import ModelConfig, build_classifier
    from mlic.schema import LabelSchema

    torch.manual_seed(args.seed)
    schema = LabelSchema(tuple(f"label_{i}" for i in range(args.labels)))
    model = build_classifier(schema, ModelConfig(backbone=args.backbone, head=args.head))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = SchemaLoss(schema)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b, size = args.batch_size, args.image_size
    images = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.zeros(b, args.labels, dtype=torch.int8)
    positives = torch.rand(b, args.labels).argsort(dim=1)[:, : min(args.positives, args.labels)]
    targets.scatter_(1, positives, 1)
    attributes = torch.zeros(b, 0, dtype=torch.int64)
    bf16 = args.precision == "bf16" or (
        args.precision == "auto" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def eval_step() -> None:
        with torch.inference_mode(), autocast():
            model(images)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(images)
        loss_fn(logits, targets, attributes)["loss"].backward()
        optimizer.step()

    base = rss_mib()
    model.eval()
    eval_ms = median_ms(eval_step, args.warmup, args.steps)
    eval_peak = peak_rss_mib() - base
    model.train()
    train_ms = median_ms(train_step, args.warmup, args.steps)
    train_peak = peak_rss_mib() - base
    return {
        "head": args.head,
        "labels": args.labels,
        "params": sum(p.numel() for p in model.parameters()),
        "head_params": sum(p.numel() for p in model.head.parameters()),
        "train_step_ms": train_ms,
        "train_images_per_s": round(1000 * b / train_ms, 1),
        "eval_step_ms": eval_ms,
        "eval_images_per_s": round(1000 * b / eval_ms, 1),
        "rss_before_mib": round(base, 1),
        "eval_peak_mib": round(eval_peak, 1),
        "train_peak_mib": round(train_peak, 1),
        "precision": "bf16-autocast" if bf16 else "fp32",
    }


def write_tagged_images(root: str, n_images: int, n_labels: int, positives: int, seed: int) -> str:
    """Random 64 x 64 PNGs and a JSON-lines file naming about ``positives`` of ``n_labels`` tags per image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    data = os.path.join(root, "data.jsonl")
    with open(data, "w") as f:
        for i in range(n_images):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(f"{root}/img/{i}.png")
            # half the tags walk through every label in turn (all are used once images x positives / 2
            # reaches n_labels), half are random
            walk = [(i * (positives // 2) + j) % n_labels for j in range(positives // 2)]
            tags = {*walk, *rng.choice(n_labels, size=positives - len(walk), replace=False).tolist()}
            f.write(json.dumps({"path": f"img/{i}.png", "labels": [f"tag{t:05d}" for t in sorted(tags)]}))
            f.write("\n")
    return data


def run_pipeline(args: argparse.Namespace) -> dict:
    """Train one epoch and evaluate through the library's own entry points; peak memory of the whole."""
    import tempfile

    import mlic
    from mlic.data import load_data

    root = tempfile.mkdtemp(prefix="mlic-many-labels-")
    data = write_tagged_images(root, args.pipeline_images, args.labels, args.positives, args.seed)
    manifest = load_data(data)
    lists_bytes = manifest.label_lists.nbytes
    dense_bytes = len(manifest) * manifest.schema.n_labels
    del manifest
    base = rss_mib()
    started = time.perf_counter()
    artifact = mlic.train(data=data, out=os.path.join(root, "run"), head=args.head, max_epochs=1,
                          image_size=args.image_size, batch_size=args.batch_size, progress=False)  # fmt: skip
    trained = time.perf_counter()
    figures = mlic.evaluate(artifact, data)
    return {
        "head": args.head,
        "labels": args.labels,
        "images": args.pipeline_images,
        "train_seconds": round(trained - started, 1),
        "evaluate_seconds": round(time.perf_counter() - trained, 1),
        "peak_growth_mib": round(peak_rss_mib() - base, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "target_lists_bytes": lists_bytes,
        "target_dense_bytes": dense_bytes,
        "evaluated_labels": len(figures["per_label"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=list(HEADS))
    parser.add_argument("--labels", nargs="+", type=int, default=list(LABELS))
    parser.add_argument("--backbone", default="mlic_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--positives", type=int, default=10, help="positive labels per image")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline", action="store_true", help="also train + evaluate through mlic.train")
    parser.add_argument("--pipeline-images", type=int, default=2_000)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process's run
    parser.add_argument("--one-pipeline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one or args.one_pipeline:
        args.head, args.labels = args.heads[0], args.labels[0]
        print(json.dumps(run_pipeline(args) if args.one_pipeline else run_one(args)))
        return

    load_before = os.getloadavg()
    started = time.perf_counter()
    results = []
    common = [
        *("--backbone", args.backbone, "--batch-size", str(args.batch_size)),
        *("--image-size", str(args.image_size), "--positives", str(args.positives)),
        *("--warmup", str(args.warmup), "--steps", str(args.steps)),
        *("--precision", args.precision, "--seed", str(args.seed)),
        *([] if args.channels_last else ["--no-channels-last"]),
    ]
    jobs = [("--one", head, labels) for head in args.heads for labels in args.labels]
    if args.pipeline:
        jobs += [("--one-pipeline", head, max(args.labels)) for head in args.heads]
    pipeline = []
    for mode, head, labels in jobs:
        command = [sys.executable, __file__, *common, mode, "--heads", head, "--labels", str(labels),
                   "--pipeline-images", str(args.pipeline_images)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode:
            result = {"head": head, "labels": labels, "error": out.stderr.strip()[-2000:]}
        else:
            result = json.loads(out.stdout.strip().splitlines()[-1])
        (pipeline if mode == "--one-pipeline" else results).append(result)
    print(
        json.dumps(
            {
                "benchmark": "many_labels",
                "backbone": args.backbone,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "positives_per_image": args.positives,
                "warmup_steps": args.warmup,
                "timed_steps": args.steps,
                "channels_last": args.channels_last,
                "cpu_cores": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                "torch": torch.__version__,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "wall_seconds": round(time.perf_counter() - started, 1),
                "results": results,
                **({"pipeline": pipeline} if args.pipeline else {}),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
