"""ONNX export of an artifact's classifier, checked against PyTorch with ONNX Runtime.

``export_onnx(artifact)`` writes ``model.onnx`` into the artifact directory and
records it under ``exports.onnx`` in ``mlic.json``; ``mlic.inference.onnx_runtime``
runs it for ``Predictor(..., runtime="onnx")``. Needs the ``onnx`` extra. One
format serves predict, evaluate and serve:

- input ``images``: uint8 ``[batch, 3, H, W]`` raw RGB pixels at the artifact's
  input size, batch dynamic. Normalisation (mean / std) is inside the graph, as
  it is inside the ``Classifier``, so the file needs no preprocessing config
  beyond resizing, and a batch travels as 1 byte per pixel.
- output ``logits``: float32 ``[batch, n_labels + sum(classes per attribute)]``,
  the schema's layout. Probabilities and decisions stay outside the graph
  (sigmoid per label, softmax per attribute slice, thresholds from ``mlic.json``)
  so that calibrating thresholds never makes the export stale; the probability
  calibration (``mlic.json``'s ``calibration``) is applied outside the graph too. The schema and the
  preprocessing are also in the file's metadata (``mlic.schema``,
  ``mlic.preprocessing``) for users outside mlic.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` based;
the default since torch 2.9): it exports the linear, CSRA and ML-Decoder heads
with a symbolic batch axis, whereas the TorchScript exporter (``dynamo=False``)
is deprecated and traces Python branches on tensor values. It writes opset 18 or
newer. Every export is checked: ONNX Runtime (CPU) and PyTorch run the same
random images at batch sizes 1 and 5, and a logit that differs by more than
``atol + rtol * |logit|`` (``numpy.allclose``'s rule) is an ``ArtifactError``;
nothing is written unless the check passes. The relative part matters for
large logits: a many-label model with label transfer (logits near 10) differs
by about 5e-4 between the two runtimes in float32, which a fixed 1e-4 refused.
The weights are stored inside the file (no external data), which limits a model
to protobuf's 2 GB.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from mlic.artifact import Artifact, load_artifact
from mlic.errors import ArtifactError, ConfigError
from mlic.extras import require
from mlic.fileio import atomic_write_bytes
from mlic.inference.onnx_runtime import INPUT_NAME, ONNX_FILE, OUTPUT_NAME, first_line, session
from mlic.models import Classifier
from mlic.quantize import quantize_onnx
from mlic.schema import LabelSchema

MIN_OPSET = 18
"""The dynamo exporter's oldest opset; older ones are not converted reliably."""
CHECK_BATCH_SIZES = (1, 5)
"""Batch sizes of the parity check: the smallest, and one the trace did not use."""
FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
_QUIET_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo", "torch.fx")


def export(
    artifact: str | Path | Artifact,
    format: str = "onnx",
    *,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    calibration_options: dict | None = None,
    **options: object,
) -> Path:
    """Export the artifact's model in ``format`` (``onnx``: see :func:`export_onnx` for ``options``).

    With ``quantize="int8"`` and ``calibration`` (labelled data), also its
    int8 variant, whose path is then returned: :func:`mlic.quantize.quantize_onnx`
    with ``calibration_options`` (``images``, ``method``, the data's format options).
    """
    if format != "onnx":
        raise ConfigError(f"unknown export format {format!r}; expected one of {list(FORMATS)}")
    if quantize not in (None, *QUANTIZATIONS):
        raise ConfigError(f"unknown quantization {quantize!r}; expected one of {list(QUANTIZATIONS)}")
    if quantize and calibration is None:
        raise ConfigError(
            "int8 quantization needs calibration images: give --calibration DATA (labelled data)"
        )
    if calibration is not None and not quantize:
        raise ConfigError("--calibration is only used with --quantize int8")
    path = export_onnx(artifact, **options)
    if quantize:
        return quantize_onnx(path.parent, calibration, **(calibration_options or {}))
    return path


def export_onnx(
    artifact: str | Path | Artifact,
    *,
    opset: int | None = None,
    batch_size: int = 2,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> Path:
    """Export the artifact's classifier to ``ARTIFACT/model.onnx``; returns the file's path.

    ``opset``: the ONNX opset (``None``: torch's default; at least 18).
    ``batch_size``: images in the example batch the exporter traces (at least 2,
    so that the batch axis stays symbolic). ``check``: run the ONNX Runtime
    parity check (see the module docstring) with tolerances ``atol`` and ``rtol`` on logits.
    The file is written atomically and ``mlic.json`` then records it (checksum,
    opset, measured difference, versions); exporting again replaces both.
    """
    _check_options(opset, batch_size, atol, rtol)
    require("onnx", "ONNX export")
    artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    model = artifact.build_model()
    data = _to_onnx(model, artifact, opset, batch_size)
    used_opset = _opset_of(data)
    if opset is not None and used_opset != opset:
        raise ArtifactError(
            f"{artifact.path}: the exporter wrote opset {used_opset}, not the requested {opset}; "
            f"choose an opset this torch supports (>= {MIN_OPSET}) or leave it unset"
        )
    max_diff = None
    if check:
        try:
            max_diff = parity(model, data, artifact.preprocessing.image_size, atol=atol, rtol=rtol)
        except ArtifactError as e:
            raise ArtifactError(f"{artifact.path}: {e}") from e.__cause__
    path = artifact.path / ONNX_FILE
    atomic_write_bytes(path, data)
    artifact.exports["onnx"] = _record(artifact, data, used_opset, max_diff, atol, rtol)
    artifact.save_config()
    return path


def _check_options(opset: int | None, batch_size: int, atol: float, rtol: float) -> None:
    """Refuse options the export cannot honour, naming the bad value."""
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET):
        raise ConfigError(f"opset must be an integer >= {MIN_OPSET} (the exporter's oldest), got {opset!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(
            f"the export batch size must be an integer >= 2 (1 fixes the batch), got {batch_size!r}"
        )
    if not atol > 0:
        raise ConfigError(f"atol must be > 0, got {atol!r}")
    if not rtol >= 0:
        raise ConfigError(f"rtol must be >= 0, got {rtol!r}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines, warnings and optimiser log messages (errors still raise)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _to_onnx(model: Classifier, artifact: Artifact, opset: int | None, batch_size: int) -> bytes:
    """The serialised ONNX model of ``model`` (uint8 images in, logits out, dynamic batch)."""
    height, width = artifact.preprocessing.image_size
    example = torch.zeros(batch_size, 3, height, width, dtype=torch.uint8)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                external_data=False,
                verbose=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}},
            )
        proto = program.model_proto
        _add_metadata(proto, artifact)
        return proto.SerializeToString()
    except Exception as e:  # the exporter raises many types; the cause stays chained
        raise ArtifactError(
            f"{artifact.path}: ONNX export of {artifact.model.backbone} + {artifact.model.head} failed: "
            f"{type(e).__name__}: {first_line(e)}"
        ) from e


def _add_metadata(proto, artifact: Artifact) -> None:
    """Schema and preprocessing as file metadata, so the file describes its own outputs."""
    for key, value in (
        ("mlic.schema", artifact.schema.to_dict()),
        ("mlic.preprocessing", artifact.preprocessing.to_dict()),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def _opset_of(data: bytes) -> int:
    import onnx

    proto = onnx.load_model_from_string(data)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def parity(
    model: Classifier,
    data: bytes,
    image_size: Sequence[int],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    seed: int = 0,
) -> float:
    """Largest |ONNX Runtime - PyTorch| logit difference on random images; past atol + rtol x |logit|: error.

    Runs on CPU at each of ``batch_sizes``, so a batch axis that the export fixed
    fails too. The error names the batch size and the output with the largest difference.
    """
    ort = session(data, ["CPUExecutionProvider"], "the exported model")
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batch_sizes:
        images = torch.randint(0, 256, (n, 3, *image_size), generator=generator, dtype=torch.uint8)
        with torch.inference_mode():
            expected = model(images).float().numpy()
        try:
            got = ort.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        except Exception as e:
            raise ArtifactError(f"ONNX Runtime cannot run the exported model at batch size {n}: {e}") from e
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        if got.shape != expected.shape or not np.isfinite(diff).all():
            raise ArtifactError(
                f"ONNX parity check failed at batch size {n}: ONNX Runtime gave shape {got.shape}"
                f"{'' if got.shape != expected.shape else ' with non-finite differences'}, "
                f"PyTorch {expected.shape}"
            )
        excess = diff - (atol + rtol * np.abs(expected.astype(np.float64)))
        if excess.max() > 0:
            row, column = np.unravel_index(int(excess.argmax()), excess.shape)
            raise ArtifactError(
                f"ONNX parity check failed: the logit of {_output_name(model.schema, int(column))!r} differs "
                f"by {diff[row, column]:.3g} at batch size {n} (tolerance {atol:g} + {rtol:g} x "
                f"|{expected[row, column]:.3g}|); nothing was written"
            )
        worst = max(worst, float(diff.max()))
    return worst


def _output_name(schema: LabelSchema, column: int) -> str:
    """The name of logit column ``column``: a label, or ``attribute=class``."""
    names = list(schema.labels) + [f"{a.name}={c}" for a in schema.attributes for c in a.classes]
    return names[column]


def _record(
    artifact: Artifact, data: bytes, opset: int, max_diff: float | None, atol: float, rtol: float
) -> dict:
    """What ``mlic.json`` says about ``model.onnx``: file, checksum, format, check and versions."""
    import onnx
    import onnxruntime

    height, width = artifact.preprocessing.image_size
    return {
        "file": ONNX_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "weights_sha256": artifact.weights_sha256,
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 3, height, width]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", artifact.schema.num_outputs]},
        "exporter": "torch.onnx.export(dynamo=True)",
        "max_abs_diff": max_diff,
        "atol": atol if max_diff is not None else None,
        "rtol": rtol if max_diff is not None else None,
        "check_batch_sizes": list(CHECK_BATCH_SIZES) if max_diff is not None else [],
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
