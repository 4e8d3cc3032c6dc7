"""The batch runner: images through a network, in batches, into logits. The one loop that runs a model.

``Predictor`` (and so evaluation and the server) and training's final
threshold pass all call ``run_batches``. It decodes with a ``Decoding``,
resizes with the artifact's transform, batches in ``num_workers`` loader
processes, runs the network without gradients, and keeps every row in the
order given: an image skipped as unreadable gets a NaN row and its error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from mlic.data.images import Decoding, ImageCache, ImageInput, InputImages, worker_error
from mlic.data.manifest import Manifest
from mlic.errors import DataError
from mlic.models.calibration import Calibration
from mlic.models.outputs import Probabilities, probabilities
from mlic.schema import LabelSchema

Network = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]]
"""uint8 images ``[B, 3, H, W]`` -> float logits ``[B, num_outputs]`` (a ``Classifier``, an ``OnnxModel``),
or logits and features ``[B, D]`` (``Classifier.forward_parts``, for training's label transfer)."""


@dataclass
class Outputs:
    """What a network gave for each image: logits (NaN rows where unread) and the error of each unread one.

    With ``targets``, also each image's label targets ``[N, L]`` and attribute targets ``[N, A]``; from a
    network that returns features too, those ``[N, D]`` (NaN rows where unread).
    """

    logits: torch.Tensor
    errors: list[str | None]
    labels: np.ndarray | None = None
    attributes: np.ndarray | None = None
    features: torch.Tensor | None = None

    @property
    def read(self) -> np.ndarray:
        """Bool ``[N]``: which images were decoded (the rest were skipped as unreadable)."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def probabilities(self, schema: LabelSchema, calibration: Calibration | None = None) -> Probabilities:
        """Every row as probabilities (NaN rows stay NaN), calibrated with ``calibration`` if given."""
        return probabilities(schema, self.logits, calibration)


@torch.inference_mode()
def run_batches(
    network: Network,
    images: Sequence[ImageInput],
    transform: v2.Compose,
    decoding: Decoding,
    *,
    num_outputs: int,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    targets: Manifest | None = None,
    cache: ImageCache | None = None,
) -> Outputs:
    """Logits of every image in order, batch by batch.

    Images that ``decoding`` skips get a NaN row and their error message;
    under ``bad_images="fail"`` the first unreadable image raises a
    ``DataError`` that names it (without the loader worker's traceback).
    ``targets``: the manifest the images come from, whose targets then come
    back with the logits, gathered batch by batch (training's threshold pass);
    ``cache``: its images decoded already (``mlic.data.images.build_cache``).
    """
    dataset = InputImages(images, transform, decoding, targets, cache)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=dataset.collate)
    device = torch.device(device)
    outputs, errors, labels, attributes, features = [], [], [], [], []
    try:
        for batch, batch_errors, *batch_targets in loader:
            logits = torch.full((len(batch_errors), num_outputs), float("nan"))
            rows = None
            if batch is not None:
                read = torch.tensor([e is None for e in batch_errors])
                out = network(batch.to(device))
                out, extra = out if isinstance(out, tuple) else (out, None)
                logits[read] = out.float().cpu()
                if extra is not None:
                    rows = torch.full((len(batch_errors), extra.shape[1]), float("nan"))
                    rows[read] = extra.float().cpu()
            outputs.append(logits)
            features.append(rows)
            errors += batch_errors
            if batch_targets:
                labels.append(batch_targets[0])
                attributes.append(batch_targets[1])
    except DataError as e:
        raise worker_error(e) from None
    out = Outputs(torch.cat(outputs) if outputs else torch.empty(0, num_outputs), errors)
    if targets is not None and labels:
        out.labels, out.attributes = torch.cat(labels).numpy(), torch.cat(attributes).numpy()
    width = next((f.shape[1] for f in features if f is not None), None)
    if width is not None:  # batches where nothing was read have no features: NaN rows of the same width
        out.features = torch.cat([f if f is not None else torch.full((len(o), width), float("nan"))
                                  for f, o in zip(features, outputs)])  # fmt: skip
    return out
