"""The PyTorch runtime: the artifact's ``Classifier`` with its weights, on a device, in eval mode.

In ``fp32`` the network is the ``Classifier`` itself. In ``bf16`` it runs
under ``torch.autocast`` to bfloat16 with channels-last memory, the layout
oneDNN's bf16 convolutions want (measured on a two-core AVX-512 bf16 CPU:
resnet18 at 224 px, batch 32, 87 images/s against 46 in float32 channels-last
and 36 in float32 contiguous). Autocast keeps the pixel normalisation in float32 and
the logits come back as float32, so everything after the network is unchanged.
"""

from __future__ import annotations

import torch

from mlic.artifact import Artifact
from mlic.inference.precision import native_precision
from mlic.models import Classifier


class Bfloat16Network:
    """A classifier called under bf16 autocast with channels-last inputs; returns float32 logits.

    With ``parts``, it calls ``Classifier.forward_parts`` instead and returns
    float32 logits and embeddings (training's label-transfer bank).
    """

    def __init__(self, model: Classifier, device: torch.device, *, parts: bool = False) -> None:
        self.model = model.to(memory_format=torch.channels_last)
        self.device_type = device.type
        self.parts = parts

    def __call__(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            if not self.parts:
                return self.model(images).float()
            logits, embeddings = self.model.forward_parts(images)
        return logits.float(), None if embeddings is None else embeddings.float()


def torch_model(
    artifact: Artifact, *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> Classifier | Bfloat16Network:
    """The network the artifact describes, with its checked weights, in eval mode on ``device``.

    ``precision``: ``fp32``, or ``bf16`` where the device runs it natively
    (elsewhere ``fp32`` after a one-line warning; see ``mlic.inference.precision``).
    """
    device = torch.device(device)
    model = artifact.build_model().to(device)
    if native_precision("torch", precision, device) == "bf16":
        return Bfloat16Network(model, device)
    return model
