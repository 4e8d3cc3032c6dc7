"""The ONNX runtime: an artifact's ``model.onnx`` under ONNX Runtime, called like the ``Classifier``.

``mlic export`` writes the file (``mlic.export``), and ``mlic export
--quantize int8`` its int8 variant ``model.int8.onnx`` (``mlic.quantize``);
this module only reads them. Each file takes uint8 ``images`` ``[batch, 3, H, W]`` and returns float32
``logits``, so the same batch runner, probabilities and decisions serve both
runtimes. Needs the ``onnx`` extra (``pip install 'mlic[onnx]'``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from mlic.artifact import Artifact
from mlic.errors import ArtifactError, ConfigError, DataError
from mlic.extras import require
from mlic.inference.precision import native_precision

ONNX_FILE = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EXPORTS = {"fp32": "onnx", "int8": "onnx_int8"}
"""Precision -> the key of its record under ``exports`` in ``mlic.json``."""
FILES = {"fp32": ONNX_FILE, "int8": "model.int8.onnx"}
"""Precision -> the file its export writes into the artifact."""


def onnx_bytes(artifact: Artifact, precision: str = "fp32") -> bytes:
    """The bytes of the artifact's ONNX file at ``precision``, once its record, checksum and weights check."""
    record = artifact.exports.get(EXPORTS[precision])
    if not isinstance(record, dict) or not record.get("file"):
        how = "--format onnx" + (" --quantize int8 --calibration DATA" if precision == "int8" else "")
        raise ArtifactError(
            f"{artifact.path}: the artifact has no {'int8 ' if precision == 'int8' else ''}ONNX export; "
            f"run `mlic export {artifact.path} {how}` first"
        )
    path = artifact.path / str(record["file"])
    if not path.is_file():
        raise ArtifactError(f"{path}: the ONNX file named in mlic.json is missing; export again")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ArtifactError(
            f"{path}: checksum does not match mlic.json; the file is corrupt or was replaced; export again"
        )
    if record.get("weights_sha256") and record["weights_sha256"] != artifact.weights_sha256:
        raise ArtifactError(
            f"{path}: exported from other weights than the artifact's model.safetensors; export again"
        )
    return data


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (exporters and ONNX Runtime write pages)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def session(data: bytes, providers: list[str], what: str):
    """An ONNX Runtime session with default options (threads: ORT's defaults, all cores)."""
    require("onnx", "running ONNX models")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are about its own graph rewrites
    try:
        return onnxruntime.InferenceSession(data, options, providers=providers)
    except Exception as e:
        raise ArtifactError(f"ONNX Runtime cannot load {what}: {first_line(e)}") from e


def providers_for(device: str | torch.device) -> list[str]:
    """ONNX Runtime execution providers for a torch-style device: CPU, or CUDA (with CPU fallback)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    require("onnx", "running ONNX models")
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if kind == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(
        f"device {str(device)!r} has no ONNX Runtime provider here (available: {', '.join(available)}); "
        "use device 'cpu', or install onnxruntime-gpu for 'cuda'"
    )


class OnnxNetwork:
    """An ONNX Runtime session called like the ``Classifier``: uint8 images in, float32 logits out, on CPU."""

    def __init__(self, data: bytes, providers: list[str], what: str) -> None:
        self.session = session(data, providers, what)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise DataError(f"the ONNX model takes uint8 images, got {images.dtype}")
        batch = np.ascontiguousarray(images.detach().cpu().numpy())
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])


class OnnxModel(OnnxNetwork):
    """The artifact's ``model.onnx`` under ONNX Runtime, called like the ``Classifier``.

    ``model(images)``: uint8 ``[B, 3, H, W]`` at the artifact's input size ->
    float32 logits ``[B, num_outputs]`` on CPU. Loading checks the file's
    checksum against ``mlic.json``. ``precision``: ``fp32`` (``model.onnx``)
    or ``int8`` (``model.int8.onnx``; ``fp32`` after a warning on a device
    without native int8 kernels).
    """

    def __init__(
        self, artifact: Artifact, *, device: str | torch.device = "cpu", precision: str = "fp32"
    ) -> None:
        require("onnx", "running ONNX models")
        self.artifact = artifact
        self.schema = artifact.schema
        self.precision = native_precision("onnx", precision, device)
        data = onnx_bytes(artifact, self.precision)
        super().__init__(data, providers_for(device), str(artifact.path / FILES[self.precision]))
