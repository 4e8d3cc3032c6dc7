"""mlic's training speed against hand-written PyTorch loops on the same model, batch and data.

    python benchmarks/overhead.py                   # 12 epochs each: about 10 minutes on two cores
    python benchmarks/overhead.py --epochs 3        # the overhead ratio only; mAPs are then undertrained

Three trainings of the default MultiDigits model (``mlic_cnn``, linear head,
in-memory data, the same samples, transform, batch size, AdamW with warm-up
and cosine decay, and one validation pass per epoch), one after the other in
this process:

- ``mlic``: ``mlic.train`` with its defaults (Lightning; bf16 autocast and
  channels-last where the CPU supports bf16);
- ``hand``: a minimal loop at the same precision and memory format;
- ``plain_fp32``: the same minimal loop in float32, contiguous memory: what
  a plain PyTorch script does.

Figures: training images/s of each (images seen / seconds of the whole fit,
validation included), ``overhead_ratio`` = mlic / hand (framework cost; the
issue asks for at least 0.9), ``speedup_vs_plain_fp32`` = mlic / plain_fp32
(at least 1.6), and each model's test mAP (mlic within 0.005 of plain_fp32).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader

import mlic
from mlic.data import multidigits
from mlic.data.formats.demo import SCHEMA
from mlic.data.images import ImageDataset, Preprocessing, build_transform
from mlic.losses import SchemaLoss
from mlic.metrics import mean_average_precision
from mlic.models import ModelConfig, build_classifier
from mlic.training import TrainConfig, cpu_supports_bf16, warmup_cosine


def loaders(config: TrainConfig, pre: Preprocessing) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train, validation and test loaders over MultiDigits as ``mlic.train`` builds them."""
    splits = [multidigits(s, n, seed=config.seed) for s, n in
              (("train", config.demo_train), ("val", config.demo_val), ("test", None))]  # fmt: skip
    out = []
    for i, manifest in enumerate(splits):
        dataset = ImageDataset(manifest, build_transform(pre, train=i == 0, augment="shift"))
        out.append(DataLoader(dataset, batch_size=config.batch_size, shuffle=i == 0, drop_last=i == 0,
                              collate_fn=dataset.collate))  # fmt: skip
    return tuple(out)


def hand_loop(config: TrainConfig, epochs: int, bf16: bool, channels_last: bool) -> dict:
    """A minimal training loop: forward, loss, backward, step, schedule; a validation pass per epoch."""
    torch.manual_seed(config.seed)
    pre = Preprocessing(image_size=(64, 64), hflip=False)
    train_loader, val_loader, test_loader = loaders(config, pre)
    model = build_classifier(SCHEMA, ModelConfig())
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    loss_fn = SchemaLoss(model.schema)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)  # fmt: skip
    total = epochs * len(train_loader)
    warmup = min(total // 2, int(config.warmup_epochs * len(train_loader)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(images.contiguous(memory_format=memory))

    started, seen = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        for images, labels, attributes in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(forward(images), labels, attributes)["loss"].backward()
            optimizer.step()
            schedule.step()
            seen += len(images)
        val_map = evaluate_map(model, val_loader, forward)
    seconds = time.perf_counter() - started
    test_map = evaluate_map(model, test_loader, forward)
    return {"images_per_s": round(seen / seconds, 1), "seconds": round(seconds, 1),
            "val_mAP": round(val_map, 5), "test_mAP": round(test_map, 5)}  # fmt: skip


@torch.inference_mode()
def evaluate_map(model, loader: DataLoader, forward) -> float:
    model.eval()
    scores, targets = [], []
    for images, labels, _ in loader:
        scores.append(torch.sigmoid(forward(images)[:, model.schema.label_slice].float()))
        targets.append(labels)
    return mean_average_precision(torch.cat(targets).numpy(), torch.cat(scores).numpy())


def mlic_run(config: TrainConfig, epochs: int) -> dict:
    out = tempfile.mkdtemp(prefix="mlic-overhead-")
    artifact = mlic.train(out=out, max_epochs=epochs, progress=False, seed=config.seed)
    training = mlic.load_artifact(artifact).training
    figures = mlic.evaluate(artifact, "demo")
    seen = training["epochs"] * (training["train_images"] // config.batch_size) * config.batch_size
    return {"images_per_s": round(seen / training["seconds"], 1), "seconds": training["seconds"],
            "precision": training["precision"], "val_mAP": round(training["validation"]["mAP"], 5),
            "test_mAP": round(figures["mAP"], 5)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig.max_epochs)
    parser.add_argument("--runs", nargs="+", default=["hand", "mlic", "plain_fp32"],
                        choices=["hand", "mlic", "plain_fp32"])  # fmt: skip
    args = parser.parse_args()
    config = TrainConfig()
    bf16 = cpu_supports_bf16()
    load_before = os.getloadavg()
    results = {}
    for run in args.runs:
        if run == "mlic":
            results[run] = mlic_run(config, args.epochs)
        elif run == "hand":
            results[run] = hand_loop(config, args.epochs, bf16=bf16, channels_last=config.channels_last)
        else:
            results[run] = hand_loop(config, args.epochs, bf16=False, channels_last=False)
    figures: dict = {}
    if "mlic" in results and "hand" in results:
        ratio = results["mlic"]["images_per_s"] / results["hand"]["images_per_s"]
        figures["overhead_ratio"] = round(ratio, 3)
    if "mlic" in results and "plain_fp32" in results:
        ratio = results["mlic"]["images_per_s"] / results["plain_fp32"]["images_per_s"]
        figures["speedup_vs_plain_fp32"] = round(ratio, 3)
        diff = results["mlic"]["test_mAP"] - results["plain_fp32"]["test_mAP"]
        figures["test_mAP_minus_plain_fp32"] = round(diff, 5) if not math.isnan(diff) else None
    print(json.dumps({
        "benchmark": "overhead",
        "epochs": args.epochs,
        "batch_size": config.batch_size,
        "train_images": config.demo_train,
        "bf16_supported": bf16,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **figures,
        "runs": results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
