"""int8 ONNX models by static quantization on calibration images, written only within measured parity limits.

``quantize_onnx(artifact, data)`` turns the artifact's ``model.onnx`` (from
``mlic export``) into ``model.int8.onnx`` with ONNX Runtime's static
quantization, and records it under ``exports.onnx_int8`` in ``mlic.json``
with its measured parity; ``Predictor(runtime="onnx", precision="int8")``
runs it. Needs the ``onnx`` extra.

- **Format**: QDQ (QuantizeLinear / DequantizeLinear pairs around float
  operators, ONNX Runtime's recommended form), uint8 activations and int8
  weights per output channel: the u8s8 pair that VNNI and AMX run. Measured on
  the two-core AVX-512 VNNI development CPU (resnet18, 224 px, batch 32): QDQ
  u8s8 203 images/s, QOperator u8s8 205, QDQ s8s8 46, QOperator s8s8 14, and
  float32 62; QDQ is as fast as QOperator and portable, so it is the one.
- **Calibration**: activation ranges from ``images`` images of ``data``
  (a seeded sample; ``min-max`` by default, or ``entropy`` / ``percentile``),
  decoded and resized exactly as prediction does, so the ranges are those the
  model will see.
- **Parity**, measured on the images of ``data`` not used for calibration
  (all of them when fewer than ``MIN_PARITY_IMAGES`` remain), against the
  float32 ``model.onnx``: the share of (image, label) decisions under the
  artifact's rule that agree, the share of attribute classes that agree, and
  the mAP of both. Outside ``LIMITS`` nothing is written and the error gives
  the figures.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mlic.artifact import Artifact, load_artifact
from mlic.data.formats import load_data
from mlic.data.images import MAX_IMAGE_PIXELS, Decoding, build_transform, decode_size, manifest_images
from mlic.data.manifest import Manifest
from mlic.errors import ArtifactError, ConfigError
from mlic.extras import require
from mlic.fileio import atomic_write_bytes
from mlic.inference import run_batches
from mlic.inference.onnx_runtime import EXPORTS, FILES, INPUT_NAME, OnnxNetwork, first_line, onnx_bytes
from mlic.metrics import mean_average_precision
from mlic.models.outputs import Probabilities

METHODS = ("minmax", "entropy", "percentile")
"""Calibration methods: ONNX Runtime's ``MinMax``, ``Entropy`` and ``Percentile`` calibrators."""
CALIBRATION_IMAGES = 128
"""Default number of calibration images: ranges settle well before this for convolutional networks."""
MIN_PARITY_IMAGES = 100
"""Fewest held-out images parity is measured on; with fewer left, parity uses every image of the data."""


@dataclass(frozen=True)
class Limits:
    """How close an int8 model's outputs must stay to float32's to be written (the issue's limits)."""

    min_decision_agreement: float = 0.995
    """Share of (image, label) decisions, and of attribute classes, that must agree."""
    max_map_difference: float = 0.003
    """Largest |mAP(int8) - mAP(float32)| on the parity images."""


LIMITS = Limits()


@dataclass(frozen=True)
class Parity:
    """A variant's outputs against float32's on the same images (``None``: nothing to compare)."""

    images: int
    label_decision_agreement: float | None
    attribute_agreement: float | None
    map_reference: float | None
    map_variant: float | None
    max_abs_probability_difference: float

    @property
    def map_difference(self) -> float | None:
        if self.map_reference is None or self.map_variant is None:
            return None
        return abs(self.map_variant - self.map_reference)

    def failures(self, limits: Limits = LIMITS) -> list[str]:
        """What lies outside ``limits``, as readable phrases (empty: within)."""
        out = []
        for name, value in (("label decisions", self.label_decision_agreement),
                            ("attribute classes", self.attribute_agreement)):  # fmt: skip
            if value is not None and value < limits.min_decision_agreement:
                out.append(
                    f"{name} agree on {value:.2%} (at least {limits.min_decision_agreement:.1%} needed)"
                )
        if self.map_difference is not None and self.map_difference > limits.max_map_difference:
            out.append(
                f"mAP {self.map_variant:.4f} against {self.map_reference:.4f} float32 "
                f"(at most {limits.max_map_difference} apart)"
            )
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "map_difference": self.map_difference}


def measure_parity(reference: Probabilities, variant: Probabilities, manifest: Manifest, decide) -> Parity:
    """Parity of ``variant`` against ``reference`` on ``manifest``; ``decide``: scores -> decisions."""
    labels = manifest.labels
    known = labels >= 0
    label_agreement = None
    if reference.labels.shape[1]:
        label_agreement = float((decide(reference.labels) == decide(variant.labels)).mean())
    attribute_agreement = None
    if reference.attributes:
        same = [(r.argmax(1) == v.argmax(1)) for r, v in zip(reference.attributes, variant.attributes)]
        attribute_agreement = float(np.concatenate(same).mean())
    has_positives = ((labels == 1) & known).any(axis=0)
    map_ref = map_var = None
    if has_positives.any():
        map_ref = float(mean_average_precision(labels, reference.labels))
        map_var = float(mean_average_precision(labels, variant.labels))
    pairs = [(reference.labels, variant.labels), *zip(reference.attributes, variant.attributes)]
    difference = max((float(np.abs(v - r).max()) for r, v in pairs if r.size), default=0.0)
    return Parity(len(manifest), label_agreement, attribute_agreement, map_ref, map_var, difference)


def quantize_onnx(
    artifact: str | Path | Artifact,
    data: str | Path = "demo",
    *,
    images: int = CALIBRATION_IMAGES,
    method: str = "minmax",
    seed: int = 0,
    batch_size: int = 32,
    num_workers: int = 0,
    limits: Limits | None = None,
    demo_samples: int | None = None,
    **source_options: object,
) -> Path:
    """Write ``ARTIFACT/model.int8.onnx`` from its ``model.onnx`` and calibration images from ``data``.

    ``data``: labelled data mlic reads (a data file, or ``"demo"``: the
    MultiDigits validation split); ``images``: how many of them calibrate the
    activation ranges; ``method``: one of ``METHODS``. Returns the file's path.
    Raises ``ArtifactError`` (nothing written) when the parity measured on the
    rest of ``data`` lies outside ``limits`` (default ``LIMITS``).
    """
    limits = limits or LIMITS
    require("onnx", "int8 quantization")
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"calibration images must be a positive integer, got {images!r}")
    artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    reference = onnx_bytes(artifact, "fp32")
    manifest = load_data(data, schema=artifact.schema, split="val", demo_samples=demo_samples, seed=seed,
                         **source_options)  # fmt: skip
    manifest.check_files()
    calibration, held_out = _split(manifest, images, seed)
    loader = _Loader(artifact, batch_size, num_workers)
    quantized = _quantize(reference, loader.batches(calibration), method)
    parity = _parity(artifact, loader, reference, quantized, held_out)
    failures = parity.failures(limits)
    if failures:
        raise ArtifactError(
            f"{artifact.path}: the int8 model is outside the parity limits on {parity.images} images "
            f"of {data}: "
            + "; ".join(failures)
            + "; nothing was written (try --calibration-method entropy or percentile, "
            "more calibration images, or keep float32)"
        )
    path = artifact.path / FILES["int8"]
    atomic_write_bytes(path, quantized)
    artifact.exports[EXPORTS["int8"]] = _record(
        artifact, quantized, reference, parity, limits,
        calibration={"data": str(data), "images": len(calibration), "method": method, "seed": seed},
        parity_on="held-out images" if held_out is not calibration else "the calibration images",
    )  # fmt: skip
    artifact.save_config()
    return path


def _split(manifest: Manifest, images: int, seed: int) -> tuple[Manifest, Manifest]:
    """Calibration images (a seeded sample) and the parity images: the rest, or all if too few remain."""
    order = np.random.default_rng(seed).permutation(len(manifest))
    calibration = manifest.subset(np.sort(order[:images]))
    rest = np.sort(order[images:])
    return calibration, manifest.subset(rest) if len(rest) >= MIN_PARITY_IMAGES else manifest


class _Loader:
    """A manifest's images as uint8 batches at the input size, decoded and resized as prediction does."""

    def __init__(self, artifact: Artifact, batch_size: int, num_workers: int) -> None:
        self.transform = build_transform(artifact.preprocessing, train=False)
        # the default pixel limit, as Predictor's: None would lift Pillow's own limit for the whole process
        self.decoding = Decoding(decode_size(artifact.preprocessing), MAX_IMAGE_PIXELS, "fail")
        self.num_outputs = artifact.schema.num_outputs
        self.batch_size, self.num_workers = batch_size, num_workers

    def run(self, network, manifest: Manifest):
        return run_batches(
            network, manifest_images(manifest), self.transform, self.decoding, num_outputs=self.num_outputs,
            batch_size=self.batch_size, num_workers=self.num_workers,
        )  # fmt: skip

    def batches(self, manifest: Manifest) -> list[np.ndarray]:
        """Every batch of ``manifest`` as a uint8 array (the batch runner, with a network that keeps them)."""
        kept: list[np.ndarray] = []

        def keep(batch: torch.Tensor) -> torch.Tensor:
            kept.append(batch.numpy().copy())
            return torch.zeros(len(batch), self.num_outputs)

        self.run(keep, manifest)
        return kept


def _quantize(reference: bytes, batches: list[np.ndarray], method: str) -> bytes:
    """The QDQ u8s8 per-channel model of ``reference``, with ranges from ``batches``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{INPUT_NAME: b} for b in batches])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    calibrators = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mlic-quantize-") as tmp:
        source, prepared, out = (Path(tmp) / name for name in ("model.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(reference)
        try:
            _prepare(source, prepared)
            quantize_static(
                str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                calibrate_method=calibrators[method],
            )  # fmt: skip
        except Exception as e:  # ONNX Runtime's tools raise many types; the cause stays chained
            raise ArtifactError(f"int8 quantization failed: {type(e).__name__}: {first_line(e)}") from e
        return out.read_bytes()


def _prepare(source: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing before quantization: shape inference and graph folding, as it advises.

    Its symbolic shape inference fails on some graphs (label transfer's
    ``Expand``); ONNX's own shape inference then does, as ORT's tool allows.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared))
    except Exception:  # any failure of the symbolic pass: retry without it
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)


def _parity(
    artifact: Artifact, loader: _Loader, reference: bytes, quantized: bytes, manifest: Manifest
) -> Parity:
    """Both models over ``manifest``'s images, compared under the artifact's decision rule.

    The probabilities are the artifact's calibrated ones where it has a calibration, as predict gives
    them: its thresholds are on those.
    """
    cpu = ["CPUExecutionProvider"]
    ref = loader.run(OnnxNetwork(reference, cpu, "model.onnx"), manifest)
    var = loader.run(OnnxNetwork(quantized, cpu, "the int8 model"), manifest)
    schema, calibration = artifact.schema, artifact.calibration
    return measure_parity(
        ref.probabilities(schema, calibration), var.probabilities(schema, calibration), manifest,
        artifact.decision.decide,
    )  # fmt: skip


def _record(artifact: Artifact, data: bytes, reference: bytes, parity: Parity, limits: Limits, *,
            calibration: dict, parity_on: str) -> dict:  # fmt: skip
    """What ``mlic.json`` says about ``model.int8.onnx``: file, checksums, format, calibration, parity."""
    import onnxruntime

    height, width = artifact.preprocessing.image_size
    return {
        "file": FILES["int8"],
        "sha256": hashlib.sha256(data).hexdigest(),
        "weights_sha256": artifact.weights_sha256,
        "from_sha256": hashlib.sha256(reference).hexdigest(),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 3, height, width]},
        "quantization": {"format": "QDQ", "activations": "uint8", "weights": "int8 per channel"},
        "calibration": calibration,
        "parity": {**parity.to_dict(), "on": parity_on, "against": "model.onnx (float32)"},
        "limits": asdict(limits),
        "onnxruntime": onnxruntime.__version__,
    }
