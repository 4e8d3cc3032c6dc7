"""Real photos: mlic's defaults against a plain timm fine-tuning loop, side by side in one run.

    python benchmarks/real_photos.py --data corel5k/train.csv --weights tf_efficientnet_lite0.safetensors \
        --image-size 160 --epochs 6
    python benchmarks/real_photos.py --data apparel/train.csv --test apparel/test.csv --weights ...

Both columns train the same backbone from the same weights at the same input
size for the same epochs on the same training images, and are scored on the
same held-out images (``--test``, or a stratified ``--holdout`` share of
``--data``, seeded). The plain loop is what a user would write in 150 lines:
images decoded once and held in memory, AdamW at 1e-3, batch 64, bf16
autocast where the CPU runs bf16 natively (float32 elsewhere, where emulated
bf16 would only slow it down, as mlic's own default does), cosine schedule,
random flips, BCE on logits (cross-entropy per attribute), and decisions at
0.5. mlic trains through ``mlic.train`` with its defaults (plus any
``--mlic-option``) and decides with the artifact's rule.

Printed as one JSON object: per column mAP, micro- and macro-F1 at the
column's decision rule and at 0.5, attribute accuracy, the classic top-5
protocol of image annotation (per-word precision, recall, F1 and N+ over the
words of the held-out images: Duygulu et al. 2002, Guillaumin et al. 2009;
mlic's top-k as ``mlic predict --top-k`` ranks, with its label balance, and
also by score alone),
wall time and training images/s; then the ratios mlic / loop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import mlic
from mlic.data import load_data, stratified_split, write_splits
from mlic.data.images import decode_image
from mlic.inference.precision import cpu_supports_bf16
from mlic.metrics import attribute_scores, mean_average_precision, papers_scores, precision_recall_f1
from mlic.models.outputs import Probabilities, probabilities
from mlic.thresholds import top_k

LOOP_BF16 = cpu_supports_bf16()
"""The loop autocasts to bf16 where the CPU runs it natively (AVX-512 bf16 or AMX), as a user would."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="training data in any format mlic reads")
    p.add_argument("--test", help="held-out data; without it --holdout of --data is held out")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of --data held out (stratified), or a number of images if 1 or more "
                        "(499: the classic Corel-5k protocol's test size)")  # fmt: skip
    p.add_argument("--weights", help="backbone weights file (e.g. tf_efficientnet_lite0.safetensors)")
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=5, help="words per image in the annotation protocol")
    p.add_argument("--mlic-option", action="append", default=[], metavar="KEY=JSON",
                   help="an extra mlic.train option, e.g. lr=0.001 (JSON values); repeatable")  # fmt: skip
    p.add_argument("--skip", choices=("mlic", "loop"), action="append", default=[])
    p.add_argument("--out", help="folder for the split files and mlic's run (default: a temporary one)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- data


def prepare(args: argparse.Namespace, out: Path) -> tuple[str, str]:
    """The training and held-out data files: as given, or a stratified holdout of ``--data``."""
    if args.test:
        return args.data, args.test
    data = load_data(args.data)
    share = args.holdout / len(data) if args.holdout >= 1 else args.holdout
    if not 0 < share < 1:
        raise SystemExit(f"--holdout {args.holdout:g}: {args.data} has {len(data)} images; hold out fewer")
    splits = stratified_split(data, {"train": 1 - share, "test": share}, args.seed)
    files = write_splits(splits, out / "split", overwrite=True)
    return str(files["train"]), str(files["test"])


def decode_all(paths: list[str], size: int) -> torch.Tensor:
    """Every image decoded once, resized to ``size`` x ``size``: uint8 ``[N, 3, size, size]`` in memory."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for i, path in enumerate(paths):
        image = decode_image(path, min_side=size)
        out[i] = (
            F.interpolate(image[None].float(), (size, size), mode="bilinear", antialias=True)
            .round()
            .clamp(0, 255)[0]
        )
    return out


# ---------------------------------------------------------------- the plain loop


def plain_model(backbone: str, n_outputs: int, weights: str | None) -> torch.nn.Module:
    """A timm model with a fresh classifier, loading every backbone tensor the file has."""
    model = timm.create_model(backbone, num_classes=n_outputs)
    if weights:
        own = model.state_dict()
        state = {k: v for k, v in load_file(weights).items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(state, strict=False)
    return model


def plain_loss(logits: torch.Tensor, labels: torch.Tensor, attributes: torch.Tensor, schema) -> torch.Tensor:
    """BCE over the known labels and cross-entropy per attribute (unknown targets are -1 and left out)."""
    loss = logits.new_zeros(())
    if schema.n_labels:
        known = labels >= 0
        z = logits[:, : schema.n_labels]
        loss = loss + F.binary_cross_entropy_with_logits(z[known], labels[known].float())
    for j, sl in enumerate(schema.attribute_slices):
        loss = loss + F.cross_entropy(logits[:, sl], attributes[:, j], ignore_index=-1)
    return loss


def plain_train(args, schema, pixels: torch.Tensor, labels: np.ndarray, attributes: np.ndarray, mean, std):
    """The loop: AdamW 1e-3, batch 64, bf16 autocast, one-cycle cosine, random flips; (model, images/s)."""
    torch.manual_seed(args.seed)
    model = plain_model(args.backbone, schema.num_outputs, args.weights).to(memory_format=torch.channels_last)
    batch = 64
    steps = args.epochs * math.ceil(len(pixels) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.1)
    mean, std = torch.tensor(mean).view(1, 3, 1, 1) * 255, torch.tensor(std).view(1, 3, 1, 1) * 255
    y, a = torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(attributes.astype(np.int64))
    model.train()
    started = time.perf_counter()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(pixels)).split(batch):
            x = pixels[idx].float()
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(-1)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=LOOP_BF16):
                logits = model(x)
            loss = plain_loss(logits.float(), y[idx], a[idx], schema)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model, args.epochs * len(pixels) / (time.perf_counter() - started)


@torch.inference_mode()
def plain_predict(model: torch.nn.Module, pixels: torch.Tensor, schema, mean, std) -> Probabilities:
    model.eval()
    mean, std = torch.tensor(mean).view(1, 3, 1, 1) * 255, torch.tensor(std).view(1, 3, 1, 1) * 255
    logits = []
    for x in pixels.split(128):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=LOOP_BF16):
            logits.append(
                model(((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)).float()
            )
    return probabilities(schema, torch.cat(logits))


def run_loop(args, train, test) -> dict:
    started = time.perf_counter()
    cfg = timm.models.get_pretrained_cfg(args.backbone)
    mean, std = (
        (cfg.mean, cfg.std)
        if cfg is not None and args.weights
        else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    )
    train_pixels = decode_all(list(train.paths), args.image_size)
    model, ips = plain_train(args, train.schema, train_pixels, train.labels, train.attributes, mean, std)
    probs = plain_predict(model, decode_all(list(test.paths), args.image_size), train.schema, mean, std)
    seconds = time.perf_counter() - started
    decided = probs.labels >= 0.5
    return {"wall_s": round(seconds, 1), "train_images_per_s": round(ips, 2),
            **figures(test, probs, decided, args.top_k), "rule": "0.5",
            "precision": "bf16" if LOOP_BF16 else "fp32"}  # fmt: skip


# ---------------------------------------------------------------- mlic


def run_mlic(args, train_file: str, test, out: Path) -> dict:
    options = {"data": train_file, "backbone": args.backbone, "image_size": args.image_size,
               "max_epochs": args.epochs, "seed": args.seed, "out": str(out / "mlic-run"),
               "progress": False}  # fmt: skip
    if args.weights:
        options["weights"] = args.weights
    for item in args.mlic_option:
        key, _, value = item.partition("=")
        options[key] = json.loads(value)
    started = time.perf_counter()
    artifact = mlic.train(**options)
    predictor = mlic.load(artifact)
    probs = predictor.predict_manifest(test)
    seconds = time.perf_counter() - started
    training = predictor.artifact.training
    epochs = training["epochs"] or args.epochs
    ips = training["train_images"] * epochs / training["seconds"]
    rule = predictor.artifact.decision
    return {"wall_s": round(seconds, 1), "train_images_per_s": round(ips, 2),
            **figures(test, probs, predictor.decide(probs), args.top_k, rule.top), "rule": rule.policy,
            "top_k_balance": rule.balance, "precision": training.get("precision"),
            "options": {k: v for k, v in options.items() if k not in ("data", "out", "progress")},
            "label_transfer": training.get("label_transfer"),
            "decision": rule.to_dict()}  # fmt: skip


# ---------------------------------------------------------------- figures


def top_k_annotation(y_true: np.ndarray, decided: np.ndarray) -> dict:
    """The annotation protocol: each image gets its ``k`` best words; per-word P and R over test words.

    P and R are averaged over the words with a positive in the held-out images
    (a word never predicted has precision 0), F1 = 2 P R / (P + R) of those
    means: the papers' CP, CR and CF1 of ``mlic.metrics.papers_scores``. N+
    counts the words with recall > 0.
    """
    papers = papers_scores(y_true, decided)
    words = (y_true == 1).sum(axis=0) > 0
    recall = precision_recall_f1(y_true, decided)["recall"]
    return {"P": round(100 * papers["CP"], 1), "R": round(100 * papers["CR"], 1),
            "F1": round(100 * papers["CF1"], 1), "N+": int((recall[words] > 0).sum()),
            "words": int(words.sum())}  # fmt: skip


def figures(test, probs, decided: np.ndarray, k: int, top=None) -> dict:
    """The figures of one column; ``top(scores, k)`` makes its top-k annotation (by score if None)."""
    out: dict = {}
    if test.schema.n_labels:
        y = test.labels
        out["mAP"] = round(mean_average_precision(y, probs.labels), 4)
        for name, d in (("rule", decided), ("0.5", probs.labels >= 0.5)):
            for avg in ("micro", "macro"):
                out[f"{avg}_f1@{name}"] = round(precision_recall_f1(y, d, average=avg)["f1"], 4)
        if test.schema.n_labels > 2 * k:
            out[f"top{k}"] = top_k_annotation(y, (top or top_k)(probs.labels, k))
            if top is not None:
                out[f"top{k}_by_score"] = top_k_annotation(y, top_k(probs.labels, k))
    for name, s in attribute_scores(test.attributes, probs.attributes, test.schema.attribute_names).items():
        out[f"{name}_accuracy"] = round(s["accuracy"], 4)
    return out


def ratios(m: dict, loop: dict) -> dict:
    keys = [k for k in m if isinstance(m[k], float | int) and k in loop and loop[k]]
    return {k: round(m[k] / loop[k], 3) for k in keys}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        train_file, test_file = prepare(args, out)
        train, test = load_data(train_file), load_data(test_file)
        test = test.to_schema(train.schema)
        result = {"data": args.data, "train_images": len(train), "test_images": len(test),
                  "labels": train.schema.n_labels, "attributes": train.schema.attribute_names,
                  "backbone": args.backbone, "weights": bool(args.weights), "image_size": args.image_size,
                  "epochs": args.epochs, "seed": args.seed}  # fmt: skip
        if "mlic" not in args.skip:
            result["mlic"] = run_mlic(args, train_file, test, out)
            print(json.dumps({"mlic": result["mlic"]}), file=sys.stderr, flush=True)
        if "loop" not in args.skip:
            result["loop"] = run_loop(args, train, test)
            print(json.dumps({"loop": result["loop"]}), file=sys.stderr, flush=True)
        if "mlic" in result and "loop" in result:
            result["mlic/loop"] = ratios(result["mlic"], result["loop"])
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
