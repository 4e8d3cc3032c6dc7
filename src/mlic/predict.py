"""Prediction: images -> probabilities -> decisions, from an artifact (``mlic.load(path).predict(images)``).

The network runs through the batch runner (``mlic.inference``), logits become
probabilities in ``mlic.models.outputs``, and the artifact's decision rule
(``mlic.thresholds.Decision``) decides. Importing this module loads neither
Lightning nor FastAPI. The artifact's calibration (``mlic.models.calibration``)
is applied to the logits of either runtime before anything is decided.
``Predictor.explain`` adds a map per output (``mlic.models.maps``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import resize

from mlic.artifact import Artifact, load_artifact
from mlic.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    Decoding,
    ImageInput,
    build_transform,
    decode_image,
    decode_size,
    manifest_images,
)
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.inference import Outputs, load_network, run_batches
from mlic.inference.precision import native_precision
from mlic.inference.torch_runtime import Bfloat16Network
from mlic.models import Classifier
from mlic.models.maps import label_maps, output_names
from mlic.models.outputs import Probabilities, probabilities
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

    @property
    def calibration(self):
        """The artifact's calibration of the probabilities (None: uncalibrated)."""
        return self.artifact.calibration

    def predict_proba(self, images: Sequence[ImageInput]) -> Probabilities:
        """Probabilities for a list of images (paths, PIL images or uint8 arrays); NaN rows if skipped."""
        return self.run(list(images)).probabilities(self.schema, self.calibration)

    def manifest_outputs(self, manifest: Manifest) -> Outputs:
        """Logits (uncalibrated) of every image of a manifest, in its order; an unreadable one is a
        ``DataError``."""
        return self.run(manifest_images(manifest), replace(self.decoding, bad_images="fail"))

    def predict_manifest(self, manifest: Manifest) -> Probabilities:
        """Probabilities for every image of a manifest, in its order; an unreadable one is a ``DataError``."""
        return self.manifest_outputs(manifest).probabilities(self.schema, self.calibration)

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
        probs, read = outputs.probabilities(self.schema, self.calibration), outputs.read
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

    def torch_model(self) -> Classifier:
        """The float32 PyTorch ``Classifier``, for ``explain``.

        Under ``bf16`` it is the classifier the autocast wrapper runs (its weights stay float32); under the
        ONNX runtime the artifact's weights are loaded on first use (the ONNX graph outputs no maps).
        """
        if isinstance(self.model, Classifier):
            return self.model
        if isinstance(self.model, Bfloat16Network):
            return self.model.model
        if getattr(self, "_torch", None) is None:
            self._torch = load_network(self.artifact, "torch", device=self.device, precision="fp32")
        return self._torch

    def explain(
        self,
        images: Sequence[ImageInput],
        labels: Iterable[str] | None = None,
        *,
        method: str | None = None,
        resolution: str = "image",
        max_side: int | None = None,
    ) -> LabelMaps:
        """A map per output for each image: where its evidence lies (``mlic.models.maps``), in one pass.

        ``labels``: which outputs, by name: labels, ``attribute=class``, or an
        attribute's name for all its classes; None for every output.
        ``resolution``: ``image`` (each map the size of its image as decoded,
        EXIF orientation applied) or ``input`` (the model's input size);
        ``max_side``: at ``image`` resolution, shrink larger images (and their maps)
        to this longest side, which bounds memory (maps are float32, one per output).
        ``method``: None (the head's own), or ``grad-cam`` for any head.
        Images are decoded at full size here, one batch of ``batch_size`` at
        a time; an unreadable one raises a ``DataError`` that names it, or with
        ``bad_images="skip"`` gets None for its maps and its error. Also
        returns the (calibrated) probabilities and the artifact's decisions.
        Whatever the predictor's ``runtime`` and ``precision``, the maps and
        these probabilities come from the float32 PyTorch classifier
        (:meth:`torch_model`).
        """
        if resolution not in ("image", "input"):
            raise ConfigError(f"resolution must be 'image' or 'input', got {resolution!r}")
        names, columns = self.output_columns(labels)
        model, images = self.torch_model(), list(images)
        maps: list[np.ndarray | None] = []
        pixels: list[np.ndarray | None] = []
        errors: list[str | None] = []
        logits = torch.full((len(images), self.schema.num_outputs), float("nan"))
        used = method
        for start in range(0, len(images), self.batch_size):
            decoded, tensors = [], []
            for image in images[start : start + self.batch_size]:
                try:
                    raw = decode_image(image, max_pixels=self.decoding.max_pixels)
                    tensors.append(self.transform(raw))
                    shown = raw if resolution == "image" else tensors[-1]
                    if max_side and max(shown.shape[1:]) > max_side:
                        scale = max_side / max(shown.shape[1:])
                        side = [max(1, round(x * scale)) for x in shown.shape[1:]]
                        shown = resize(shown, side, antialias=True)
                    decoded.append(shown.shape[1:])
                    pixels.append(shown.permute(1, 2, 0).numpy())
                    errors.append(None)
                except DataError as e:
                    if self.decoding.bad_images == "fail":
                        raise
                    decoded.append(None)
                    pixels.append(None)
                    errors.append(str(e))
            if not tensors:
                maps += [None] * len(decoded)
                continue
            batch_logits, batch_maps, used = label_maps(model, torch.stack(tensors).to(self.device), method)
            batch_maps = batch_maps[:, columns].float().cpu()
            read = [i for i, size in enumerate(decoded) if size is not None]
            logits[[start + i for i in read]] = batch_logits.float().cpu()
            # The grid covers the (stretched) input, so it is stretched to each image's size at once;
            # images of one size share one call (small calls wait on each other's threads under load).
            sizes = [tuple(size) for size in decoded if size is not None]
            sized: list[np.ndarray | None] = [None] * len(sizes)
            for size in dict.fromkeys(sizes):
                rows = [k for k, other in enumerate(sizes) if other == size]
                grown = F.interpolate(batch_maps[rows], size=size, mode="bilinear", align_corners=False)
                for k, m in zip(rows, grown.numpy()):
                    sized[k] = m
            row = iter(sized)
            maps += [None if size is None else next(row) for size in decoded]
        probs = probabilities(self.schema, logits, self.calibration)
        decided = np.zeros(probs.labels.shape, dtype=bool)
        ok = np.array([e is None for e in errors], dtype=bool)
        if ok.any():
            decided[ok] = self.decide(probs.rows(ok))
        return LabelMaps(names, maps, probs, decided, used or "", errors, pixels)

    def output_columns(self, labels: Iterable[str] | None) -> tuple[list[str], list[int]]:
        """Names and logit columns of ``explain``'s ``labels``; an unknown name is a ``ConfigError``."""
        every = output_names(self.schema)
        if labels is None:
            return every, list(range(len(every)))
        index = {name: j for j, name in enumerate(every)}
        columns: list[int] = []
        for name in labels:
            if name in self.schema.attribute_names:
                sl = self.schema.attribute_slices[self.schema.attribute_names.index(name)]
                columns += range(sl.start, sl.stop)
            elif name in index:
                columns.append(index[name])
            else:
                close = difflib.get_close_matches(name, every, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown label {name!r}{hint} (labels: {', '.join(self.schema.labels[:20])}"
                    f"{', ...' if self.schema.n_labels > 20 else ''}; attributes as name=class)"
                )
        columns = list(dict.fromkeys(columns))
        return [every[j] for j in columns], columns


@dataclass
class LabelMaps:
    """What ``Predictor.explain`` returns.

    ``names``: the outputs mapped (labels, ``attribute=class``); ``maps``: per
    image, float32 ``[len(names), H, W]`` (None for an unreadable image);
    ``probabilities`` and ``decided`` (bool ``[N, n_labels]``, the artifact's
    rule) of every image; ``method``: how the maps were made (``cam``,
    ``csra``, ``attention``, ``grad-cam``); ``errors``: per image, None or why
    it was skipped; ``images``: per image, the uint8 ``[H, W, 3]`` pixels the
    maps lie on (the decoded image, or the model input), for drawing.
    """

    names: list[str]
    maps: list[np.ndarray | None]
    probabilities: Probabilities
    decided: np.ndarray
    method: str
    errors: list[str | None]
    images: list[np.ndarray | None]

    def shown(self, i: int, schema, extra: Iterable[str] = ()) -> list[str]:
        """The outputs to draw for image ``i``: its decided labels, each attribute's most probable class,
        and ``extra``, in that order, among ``names``."""
        chosen = [schema.labels[j] for j in np.flatnonzero(self.decided[i])]
        for a, p in zip(schema.attributes, self.probabilities.attributes):
            if not np.isnan(p[i]).all():
                chosen.append(f"{a.name}={a.classes[int(np.nanargmax(p[i]))]}")
        chosen += list(extra)
        return [n for n in dict.fromkeys(chosen) if n in self.names]


def _path(image: ImageInput | None) -> str | None:
    return str(image) if isinstance(image, str | Path) else None


def load(path: str | Path, **kwargs: object) -> Predictor:
    """A ``Predictor`` for the artifact at ``path`` (the artifact directory or its run directory)."""
    return Predictor.from_path(path, **kwargs)
