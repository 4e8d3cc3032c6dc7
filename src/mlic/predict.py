"""Prediction: images -> probabilities -> decisions, from an artifact.

Sigmoid per label, softmax per attribute and thresholds live here only; the
models return logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mlic.artifact import Artifact, load_artifact
from mlic.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    Decoding,
    ImageDataset,
    build_transform,
    decode_image,
    decode_size,
    worker_error,
)
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.schema import LabelSchema
from mlic.thresholds import apply_thresholds, top_k

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor


@dataclass
class Probabilities:
    """Model outputs as probabilities: labels ``[N, L]`` and one ``[N, classes]`` array per attribute."""

    labels: np.ndarray
    attributes: list[np.ndarray]


def probabilities(schema: LabelSchema, logits: torch.Tensor) -> Probabilities:
    """Sigmoid over the label slice, softmax over each attribute's slice."""
    logits = logits.float()
    return Probabilities(
        torch.sigmoid(logits[:, schema.label_slice]).cpu().numpy(),
        [torch.softmax(logits[:, sl], dim=1).cpu().numpy() for sl in schema.attribute_slices],
    )


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


class _Images(Dataset):
    """Prediction inputs as ``(image, None)``; ``(None, error)`` if unreadable under ``bad_images="skip"``."""

    def __init__(self, images: Sequence[ImageInput], transform, decoding: Decoding) -> None:
        self.images, self.transform, self.decoding = images, transform, decoding

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, str | None]:
        d = self.decoding
        try:
            image = to_tensor(self.images[i], min_side=d.min_side, max_pixels=d.max_pixels)
        except DataError as e:
            if d.bad_images == "fail":
                raise
            return None, str(e)
        return self.transform(image), None

    @staticmethod
    def collate(samples: list) -> tuple[torch.Tensor | None, list[str | None]]:
        """The readable images stacked (None if there are none), and each sample's error or None."""
        images = [s[0] for s in samples if s[0] is not None]
        return (torch.stack(images) if images else None), [s[1] for s in samples]


def to_tensor(
    image: ImageInput, *, min_side: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """Any supported image input as a uint8 RGB tensor ``[3, H, W]`` (``decode_image``)."""
    return decode_image(image, min_side=min_side, max_pixels=max_pixels)


class Predictor:
    """A trained model ready to predict: ``mlic.load(path).predict(images)``.

    Files are decoded as in training (``mlic.data.images.read_image`` at the
    artifact's ``decode_size``). An unreadable file raises a ``DataError`` that
    names it, or under ``bad_images="skip"`` gets a NaN row of probabilities and
    an ``error`` record from ``predict``, so rows always match the inputs.
    ``predict_manifest`` (evaluation) always fails: figures over fewer images
    than the data holds would not compare with another model's.

    ``runtime``: ``"torch"`` (default) runs the PyTorch network;
    ``"onnx"`` runs the artifact's ``model.onnx`` (written by ``mlic export``)
    with ONNX Runtime at its default thread settings, on the CPU provider, or
    CUDA for a ``cuda`` device. Preprocessing, probabilities and decisions are
    the same code either way.
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
    ):
        self.artifact = artifact
        self.schema = artifact.schema
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.runtime = runtime
        self.model = _network(artifact, runtime, self.device)
        self.transform = build_transform(artifact.preprocessing, train=False)
        self.decoding = Decoding(decode_size(artifact.preprocessing), max_pixels, bad_images)

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: object) -> Predictor:
        return cls(load_artifact(path), **kwargs)

    @torch.inference_mode()
    def _run(self, dataset: _Images | ImageDataset) -> tuple[Probabilities, list[str | None]]:
        """Probabilities of every sample in order (NaN rows for skipped ones), and each sample's error."""
        loader = DataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=dataset.collate
        )
        outputs, errors = [], []
        try:
            for batch in loader:
                images, batch_errors = (
                    batch if isinstance(dataset, _Images) else (batch[0], [None] * len(batch[0]))
                )
                logits = torch.full((len(batch_errors), self.schema.num_outputs), float("nan"))
                if images is not None:
                    read = torch.tensor([e is None for e in batch_errors])
                    logits[read] = self.model(images.to(self.device)).float().cpu()
                outputs.append(logits)
                errors += batch_errors
        except DataError as e:
            raise worker_error(e) from None
        logits = torch.cat(outputs) if outputs else torch.empty(0, self.schema.num_outputs)
        return probabilities(self.schema, logits), errors

    def predict_proba(self, images: Sequence[ImageInput]) -> Probabilities:
        """Probabilities for a list of images (paths, PIL images or uint8 arrays); NaN rows if skipped."""
        return self._run(_Images(list(images), self.transform, self.decoding))[0]

    def predict_manifest(self, manifest: Manifest) -> Probabilities:
        """Probabilities for every image of a manifest, in its order; an unreadable one is a ``DataError``."""
        decoding = replace(self.decoding, bad_images="fail")
        return self._run(ImageDataset(manifest, self.transform, decoding=decoding))[0]

    def decide(
        self, probs: Probabilities, *, top_k_labels: int | None = None, threshold: float | None = None
    ) -> np.ndarray:
        """Bool ``[N, L]``: the artifact's decision rule, one ``threshold``, or the ``top_k_labels`` best."""
        if top_k_labels is not None:
            if top_k_labels < 1:
                raise ConfigError(f"top-k must be at least 1, got {top_k_labels}")
            return top_k(probs.labels, min(top_k_labels, self.schema.n_labels))
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must lie in [0, 1], got {threshold}")
        if threshold is not None:
            return apply_thresholds(probs.labels, threshold)
        return self.artifact.decider().decide(probs.labels)

    def predict(
        self, images: Sequence[ImageInput], *, top_k: int | None = None, threshold: float | None = None
    ) -> list[dict]:
        """One dict per image: decided labels, every label's score, each attribute's class and probability."""
        images = list(images)
        probs, errors = self._run(_Images(images, self.transform, self.decoding))
        read = np.array([e is None for e in errors], dtype=bool)
        decided = np.zeros(probs.labels.shape, dtype=bool)
        if read.any():  # decisions over the images that were read: skipped ones have NaN rows
            readable = Probabilities(probs.labels[read], [p[read] for p in probs.attributes])
            decided[read] = self.decide(readable, top_k_labels=top_k, threshold=threshold)
        return [
            self._record(i, image, probs, decided)
            if errors[i] is None
            else {"path": _path(image), "error": errors[i]}
            for i, image in enumerate(images)
        ]

    def _record(self, i: int, image: ImageInput, probs: Probabilities, decided: np.ndarray) -> dict:
        schema = self.schema
        record: dict = {"path": _path(image)}
        record["labels"] = [schema.labels[j] for j in np.flatnonzero(decided[i])]
        record["scores"] = {name: float(p) for name, p in zip(schema.labels, probs.labels[i])}
        record["attributes"] = {}
        for a, p in zip(schema.attributes, probs.attributes):
            k = int(p[i].argmax())
            record["attributes"][a.name] = {"class": a.classes[k], "probability": float(p[i, k])}
        return record


RUNTIMES = ("torch", "onnx")


def _network(artifact: Artifact, runtime: str, device: torch.device):
    """What turns a uint8 batch into logits: the PyTorch classifier, or the ONNX export under ORT."""
    if runtime == "torch":
        return artifact.build_model().to(device)
    if runtime == "onnx":
        from mlic.export import OnnxModel  # ONNX Runtime loads only when asked for

        return OnnxModel(artifact, device=device)
    raise ConfigError(f"unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")


def _path(image: ImageInput) -> str | None:
    return str(image) if isinstance(image, str | Path) else None


def load(path: str | Path, **kwargs: object) -> Predictor:
    """A ``Predictor`` for the artifact at ``path`` (the artifact directory or its run directory)."""
    return Predictor.from_path(path, **kwargs)
