"""The PyTorch runtime: the artifact's ``Classifier`` with its weights, on a device, in eval mode."""

from __future__ import annotations

import torch

from mlic.artifact import Artifact
from mlic.models import Classifier


def torch_model(artifact: Artifact, *, device: str | torch.device = "cpu") -> Classifier:
    """The network the artifact describes, with its checked weights, in eval mode on ``device``."""
    return artifact.build_model().to(torch.device(device))
