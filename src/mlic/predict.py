"""Prediction: images -> probabilities -> decisions, from an artifact (``mlic.load(path).predict(images)``).

The network runs through the batch runner (``mlic.inference``), logits become
probabilities in ``mlic.models.outputs``, and the artifact's decision rule
(``mlic.thresholds.Decision``) decides. Importing this module loads neither
Lightning nor FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mlic.artifact import Artifact, load_artifact
from mlic.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    Decoding,
    ImageInput,
    build_transform,
    decode_size,
    manifest_images,
)
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.inference import Outputs, load_network, run_batches
from mlic.inference.precision import native_precision
from mlic.models.outputs import Probabilities
from mlic.thresholds import apply_thresholds


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return found


class Predictor:
    """A trained model ready to predict: ``mlic.load(path).predict(images)``.

    Files are decoded as in training (``mlic.data.images.decode_image`` at the
    artifact's ``decode_size``). An unreadable file raises a ``DataError`` that
    names it, or under ``bad_images="skip"`` gets a NaN row of probabilities and
    an ``error`` record from ``predict``, so rows always match the inputs.
    ``predict_manifest`` (evaluation) always fails: figures over fewer images
    than the data holds would not compare with another model's.

    ``runtime``: ``"torch"`` (default) runs the PyTorch network;
    ``"onnx"`` runs the artifact's ``model.onnx`` (written by ``mlic export``)
    with ONNX Runtime at its default thread settings, on the CPU provider, or
    CUDA for a ``cuda`` device. Preprocessing, probabilities and decisions are
    the same code either way (``mlic.inference``).

    ``precision``: ``fp32`` (default); ``bf16`` with the torch runtime
    (autocast, channels-last); ``int8`` with the onnx runtime (the artifact's
    ``model.int8.onnx``, from ``mlic export --quantize int8``). A precision
    the device does not run natively falls back to ``fp32`` with a warning;
    ``self.precision`` is the one that runs (``mlic.inference.precision``).
    """

    def __init__(
        self,
        artifact: Artifact,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        num_workers: int = 0,
        bad_images: str = "fail",
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        runtime: str = "torch",
        precision: str = "fp32",
    ):
        self.artifact = artifact
        self.schema = artifact.schema
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.runtime = runtime
        self.precision = native_precision(runtime, precision, self.device)
        self.model = load_network(artifact, runtime, device=self.device, precision=self.precision)
        self.transform = build_transform(artifact.preprocessing, train=False)
        self.decoding = Decoding(decode_size(artifact.preprocessing), max_pixels, bad_images)

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: object) -> Predictor:
        return cls(load_artifact(path), **kwargs)

    def run(self, images: Sequence[ImageInput], decoding: Decoding | None = None) -> Outputs:
        """Logits of every image in order (NaN rows for skipped ones) and each image's error."""
        decoding = decoding or self.decoding
        return run_batches(
            self.model, images, self.transform, decoding, num_outputs=self.schema.num_outputs,
            batch_size=self.batch_size, num_workers=self.num_workers, device=self.device,
        )  # fmt: skip

    def predict_proba(self, images: Sequence[ImageInput]) -> Probabilities:
        """Probabilities for a list of images (paths, PIL images or uint8 arrays); NaN rows if skipped."""
        return self.run(list(images)).probabilities(self.schema)

    def predict_manifest(self, manifest: Manifest) -> Probabilities:
        """Probabilities for every image of a manifest, in its order; an unreadable one is a ``DataError``."""
        outputs = self.run(manifest_images(manifest), replace(self.decoding, bad_images="fail"))
        return outputs.probabilities(self.schema)

    def decide(
        self, probs: Probabilities, *, top_k_labels: int | None = None, threshold: float | None = None
    ) -> np.ndarray:
        """Bool ``[N, L]``: the artifact's decision rule, one ``threshold``, or the ``top_k_labels`` best."""
        if top_k_labels is not None:
            if top_k_labels < 1:
                raise ConfigError(f"top-k must be at least 1, got {top_k_labels}")
            return self.artifact.decision.top(probs.labels, top_k_labels)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must lie in [0, 1], got {threshold}")
        if threshold is not None:
            return apply_thresholds(probs.labels, threshold)
        return self.artifact.decision.decide(probs.labels)

    def predict(
        self, images: Sequence[ImageInput], *, top_k: int | None = None, threshold: float | None = None
    ) -> list[dict]:
        """One dict per image: decided labels, every label's score, each attribute's class and probability."""
        images = list(images)
        return self.records(self.run(images), images, top_k=top_k, threshold=threshold)

    def records(
        self,
        outputs: Outputs,
        images: Sequence[ImageInput] | None = None,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
    ) -> list[dict]:
        """``predict``'s records from outputs that ``run`` gave (for ``images``, which name the paths).

        Decisions are made row by row, so the rows of one forward pass can be
        split between callers that each ask for their own rule: the server
        runs several requests' images at once and decides each request's rows
        with its own ``top_k`` or ``threshold``.
        """
        images = list(images) if images is not None else [None] * len(outputs.errors)
        probs, read = outputs.probabilities(self.schema), outputs.read
        decided = np.zeros(probs.labels.shape, dtype=bool)
        if read.any():  # decisions over the images that were read: skipped ones have NaN rows
            decided[read] = self.decide(probs.rows(read), top_k_labels=top_k, threshold=threshold)
        return [
            self._record(i, image, probs, decided)
            if outputs.errors[i] is None
            else {"path": _path(image), "error": outputs.errors[i]}
            for i, image in enumerate(images)
        ]

    def _record(self, i: int, image: ImageInput | None, probs: Probabilities, decided: np.ndarray) -> dict:
        schema = self.schema
        record: dict = {"path": _path(image)}
        record["labels"] = [schema.labels[j] for j in np.flatnonzero(decided[i])]
        record["scores"] = {name: float(p) for name, p in zip(schema.labels, probs.labels[i])}
        record["attributes"] = {}
        for a, p in zip(schema.attributes, probs.attributes):
            k = int(p[i].argmax())
            record["attributes"][a.name] = {"class": a.classes[k], "probability": float(p[i, k])}
        return record


def _path(image: ImageInput | None) -> str | None:
    return str(image) if isinstance(image, str | Path) else None


def load(path: str | Path, **kwargs: object) -> Predictor:
    """A ``Predictor`` for the artifact at ``path`` (the artifact directory or its run directory)."""
    return Predictor.from_path(path, **kwargs)
