"""Out-of-sample scores by K-fold cross-validation: every image scored by a model that did not see it.

Two modes:

- **full** (default): K ordinary training runs (``mlic.training.train``), fold
  ``k`` trained on the other K - 1 folds (its own validation share split off as
  any run does) and scoring fold ``k`` through its artifact. Each fold is a run
  directory ``AUDIT/fold-k``; a finished fold (its ``scores.npy`` written) is
  skipped, and an interrupted one resumes from its last checkpoint.
- **features**: one frozen backbone (``backbone`` with ``pretrained`` or
  ``weights``) embeds every image once (``features.npy``), then K linear heads,
  one logistic regression per label with unknown targets masked, are fitted on
  the other folds' embeddings. Minutes instead of K trainings; what it costs in
  quality is measured by ``benchmarks/audit.py``.

The folds come from iterative stratification (``mlic.data.split``), so every
fold holds its share of each label's positives.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from mlic.data.formats.jsonl import write_jsonl
from mlic.data.manifest import Manifest
from mlic.data.split import stratified_assignment
from mlic.errors import ConfigError
from mlic.fileio import atomic_write_bytes

SCORES = "scores.npy"
FEATURES = "features.npy"
FOLDS = "folds.npy"
DATA = "data.jsonl"
AUDIT_OWNED = ("data", "val_data", "out", "format", "images_root", "tag_separator", "drop_unannotated",
               "demo_train", "demo_val", "hide_positives", "hidden_as")  # fmt: skip
"""Training options the audit sets itself (the fold files), refused when given."""
FEATURES_L2 = 0.1
"""The L2 penalty of the linear heads (on standardised features, the loss a mean over known targets).

Measured on one fold with 30% of the positives hidden: hidden positives found among the top N on
Corel-5k (374 words, lite0 features at 160 px) 0.315 at 1e-3 (the former default), 0.351 at 0.01,
0.401 at 0.1, 0.380 at 0.3; on MultiDigits (128 px) 0.413 at 1e-3 and 0.471 at 0.1. Weak penalties
let 1,280 features memorise the images' missing labels and give near-0/1 scores the ranking cannot
compare across labels."""


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` written atomically: a reader sees the whole array or none."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def fold_assignment(manifest: Manifest, folds: int, seed: int, out: Path) -> np.ndarray:
    """The fold of each image (0 .. folds - 1), by iterative stratification; kept in ``out/folds.npy``."""
    if folds < 2:
        raise ConfigError(f"an audit needs at least 2 folds, got {folds}")
    if len(manifest) < folds:
        raise ConfigError(f"{manifest.source or 'data'}: {len(manifest)} image(s) cannot fill {folds} folds")
    path = out / FOLDS
    if path.is_file():
        assigned = load_array(path)
        if len(assigned) == len(manifest) and assigned.max() == folds - 1:
            return assigned
    assigned = stratified_assignment(manifest, [1.0 / folds] * folds, seed)
    save_array(path, assigned)
    return assigned


def image_files(manifest: Manifest, out: Path) -> list[str]:
    """Absolute image paths; in-memory images (MultiDigits) are written once as ``out/images/*.png``."""
    if manifest.pixels is None:
        return [str(Path(p).absolute()) for p in manifest.paths]
    from PIL import Image

    folder = (out / "images").absolute()
    names = [re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("._") or "image" for p in manifest.paths]
    names = [f"{i:06d}-{n}.png" for i, n in enumerate(names)]
    for name, pixels in zip(names, manifest.pixels):
        if not (folder / name).is_file():
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
            atomic_write_bytes(folder / name, buffer.getvalue())
    return [str(folder / n) for n in names]


def out_of_fold_full(
    manifest: Manifest,
    files: list[str],
    assigned: np.ndarray,
    out: Path,
    options: dict,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    log=print,
) -> np.ndarray:
    """Label probabilities ``[N, L]``, each row from the fold model that did not train on it (NaN: unread)."""
    from mlic.predict import Predictor
    from mlic.training.run import train

    folds = int(assigned.max()) + 1
    probs = np.full((len(manifest), manifest.schema.n_labels), np.nan, dtype=np.float32)
    for k in range(folds):
        run = out / f"fold-{k + 1}"
        held = np.flatnonzero(assigned == k)
        scores = run / SCORES
        if scores.is_file():
            log(f"fold {k + 1}/{folds}: done already, skipped")
        else:
            if (run / "artifact" / "mlic.json").is_file():
                artifact = run / "artifact"
            elif (run / "config.json").is_file():
                log(f"fold {k + 1}/{folds}: resuming {run}")
                artifact = train(resume=run)
            else:
                train_rows = np.flatnonzero(assigned != k)
                data = write_jsonl(
                    manifest.subset(train_rows), run / "train.jsonl", [files[i] for i in train_rows]
                )
                log(f"fold {k + 1}/{folds}: training on {len(train_rows)} images, scoring {len(held)}")
                artifact = train(data=str(data), out=str(run), seed=seed, **options)
            predictor = Predictor.from_path(artifact, batch_size=batch_size, num_workers=num_workers,
                                            bad_images="skip")  # fmt: skip
            part = manifest.subset(held)
            got = predictor.predict_proba([files[i] for i in held] if part.pixels is None else part.pixels)
            save_array(scores, _to_schema(got.labels, predictor.schema.labels, manifest.schema.labels))
        probs[held] = load_array(scores)
    return probs


def _to_schema(probs: np.ndarray, have: tuple[str, ...], want: tuple[str, ...]) -> np.ndarray:
    """Columns of ``probs`` (labels ``have``) laid out as ``want``; labels the model lacks are NaN."""
    out = np.full((len(probs), len(want)), np.nan, dtype=np.float32)
    index = {name: j for j, name in enumerate(have)}
    for j, name in enumerate(want):
        if name in index:
            out[:, j] = probs[:, index[name]]
    return out


def extract_features(
    manifest: Manifest, files: list[str], out: Path, options: dict, *, batch_size: int = 64,
    num_workers: int = 0, log=print,
) -> np.ndarray:  # fmt: skip
    """Pooled features ``[N, D]`` of every image from one frozen backbone (NaN rows: unreadable), kept."""
    path = out / FEATURES
    if path.is_file():
        features = load_array(path)
        if len(features) == len(manifest):
            log(f"features: read {path}")
            return features
    from mlic.data.images import Decoding, build_transform, decode_size
    from mlic.inference import run_batches
    from mlic.models import ModelConfig, build_classifier
    from mlic.training.config import TrainConfig
    from mlic.training.defaults import resolve, resolve_preprocessing

    config = resolve(TrainConfig.from_dict({**options, "data": files[0] if files else "x"}))
    if not (config.pretrained or config.weights):
        raise ConfigError(
            "--features embeds the images with a trained backbone: give --weights FILE (or --pretrained); "
            f"a randomly initialised {config.backbone!r} has nothing to offer"
        )
    pre = resolve_preprocessing(config)
    model = build_classifier(
        manifest.schema, ModelConfig(backbone=config.backbone, head="linear"),
        pretrained=config.pretrained, weights=config.weights, mean=pre.mean, std=pre.std,
    ).eval()  # fmt: skip
    log(f"features: embedding {len(manifest)} images with {config.backbone} at {pre.image_size[0]} px")
    images = manifest.pixels if manifest.pixels is not None else files
    outputs = run_batches(
        model.forward_parts, images, build_transform(pre, train=False),
        Decoding(decode_size(pre), config.max_image_pixels, "skip"), num_outputs=manifest.schema.num_outputs,
        batch_size=batch_size, num_workers=num_workers,
    )  # fmt: skip
    features = outputs.features.float().numpy().astype(np.float32)
    save_array(path, features)
    return features


def out_of_fold_features(
    manifest: Manifest, features: np.ndarray, assigned: np.ndarray, out: Path, *, l2: float = FEATURES_L2,
    seed: int = 0, log=print,
) -> np.ndarray:  # fmt: skip
    """Out-of-fold label probabilities from K linear heads on frozen ``features`` (kept per fold)."""
    folds = int(assigned.max()) + 1
    labels = manifest.labels
    probs = np.full(labels.shape, np.nan, dtype=np.float32)
    readable = np.isfinite(features).all(1)
    for k in range(folds):
        scores = out / f"fold-{k + 1}" / SCORES
        held = np.flatnonzero(assigned == k)
        if not scores.is_file():
            fit = np.flatnonzero((assigned != k) & readable)
            log(f"fold {k + 1}/{folds}: linear heads on {len(fit)} embeddings, scoring {len(held)}")
            part = fit_linear_heads(features[fit], labels[fit], features[held], l2=l2, seed=seed + k)
            part[~readable[held]] = np.nan
            save_array(scores, part)
        probs[held] = load_array(scores)
    return probs


def fit_linear_heads(
    x: np.ndarray, y: np.ndarray, x_new: np.ndarray, *, l2: float = FEATURES_L2, seed: int = 0,
    max_iter: int = 200,
) -> np.ndarray:  # fmt: skip
    """One logistic regression per label on ``x`` ``[n, D]`` and targets ``y`` ``[n, L]`` (-1 masked).

    Minimises each label's binary cross-entropy over its known targets,
    summed over labels and averaged over images, plus ``l2 / 2 * |W|^2``, on
    features standardised by ``x``'s mean and spread,
    with full-batch L-BFGS; returns the probabilities of ``x_new`` ``[m, L]``.
    """
    import torch

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
    xn = torch.from_numpy(np.nan_to_num((x_new - mean) / std).astype(np.float32))
    target = torch.from_numpy(np.clip(y, 0, 1).astype(np.float32))
    known = torch.from_numpy((y >= 0).astype(np.float32))
    weight = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
    prevalence = (target * known).sum(0) / known.sum(0).clamp(min=1)
    bias = torch.logit(prevalence.clamp(1e-4, 1 - 1e-4)).clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        logits = xt @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, weight=known, reduction="sum"
        )
        loss = loss / len(xt) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return torch.sigmoid(xn @ weight + bias).numpy()


def check_options(options: dict) -> dict:
    """Training options as ``TrainConfig`` declares them; those the audit sets itself refused."""
    from mlic.training.config import TrainConfig

    owned = sorted(set(options) & set(AUDIT_OWNED))
    if owned:
        raise ConfigError(f"the audit sets {owned} itself (from DATA and its folds); leave them out")
    TrainConfig.from_dict(dict(options))
    return dict(options)
