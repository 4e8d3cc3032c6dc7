"""Model outputs: the logits a classifier returns, and the probabilities they stand for.

A classifier (or its ONNX export) returns one float tensor of logits
``[B, n_labels + sum(classes per attribute)]`` in the schema's layout. Here,
and only here, they become probabilities: a sigmoid per label, a softmax over
each attribute's slice. Training's validation figures, prediction,
evaluation and serving all read probabilities from ``probabilities``, which
also applies an artifact's calibration (``mlic.models.calibration``) to the
logits first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlic.models.calibration import Calibration
from mlic.schema import LabelSchema


@dataclass
class Probabilities:
    """Model outputs as probabilities: labels ``[N, L]`` and one ``[N, classes]`` array per attribute."""

    labels: np.ndarray
    attributes: list[np.ndarray]

    def rows(self, which: np.ndarray) -> Probabilities:
        """The probabilities of the rows ``which`` selects (a bool mask or indices)."""
        return Probabilities(self.labels[which], [p[which] for p in self.attributes])


def probabilities(
    schema: LabelSchema, logits: torch.Tensor, calibration: Calibration | None = None
) -> Probabilities:
    """Sigmoid over the label slice, softmax over each attribute's slice (float32, on the CPU).

    With ``calibration``, the logits are calibrated first (``Calibration.apply``).
    """
    logits = logits.float().cpu()
    if calibration is not None:
        logits = calibration.apply(schema, logits)
    return Probabilities(
        torch.sigmoid(logits[:, schema.label_slice]).cpu().numpy(),
        [torch.softmax(logits[:, sl], dim=1).cpu().numpy() for sl in schema.attribute_slices],
    )
