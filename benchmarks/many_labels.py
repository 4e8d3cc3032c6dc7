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
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process's run
    args = parser.parse_args()

    if args.one:
        args.head, args.labels = args.heads[0], args.labels[0]
        print(json.dumps(run_one(args)))
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
    for head in args.heads:
        for labels in args.labels:
            command = [sys.executable, __file__, *common, "--one", "--heads", head, "--labels", str(labels)]
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            if out.returncode:
                results.append({"head": head, "labels": labels, "error": out.stderr.strip()[-2000:]})
            else:
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
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
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
