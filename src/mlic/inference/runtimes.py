"""The runtimes by name: what turns a uint8 batch into logits for ``Predictor(runtime=...)``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mlic.artifact import Artifact
from mlic.errors import ConfigError
from mlic.inference.batches import Network
from mlic.inference.torch_runtime import torch_model


def _onnx_model(
    artifact: Artifact, *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> Network:
    from mlic.inference.onnx_runtime import OnnxModel  # ONNX Runtime loads only when asked for

    return OnnxModel(artifact, device=device, precision=precision)


RUNTIMES: dict[str, Callable[..., Network]] = {"torch": torch_model, "onnx": _onnx_model}
"""``torch``: the PyTorch network; ``onnx``: the artifact's ``model.onnx`` under ONNX Runtime."""


def load_network(
    artifact: Artifact, runtime: str = "torch", *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> Network:
    """The artifact's network under ``runtime`` (one of ``RUNTIMES``) on ``device`` at ``precision``.

    ``precision``: one of ``mlic.inference.precision.PRECISIONS[runtime]``;
    one the device does not run natively falls back to ``fp32`` with a warning.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
    return RUNTIMES[runtime](artifact, device=device, precision=precision)
