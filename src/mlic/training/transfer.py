"""Label transfer fitted at the end of training: a bank of training images, its settings chosen on validation.

``fit_transfer`` embeds the training images with the trained network, scores
the validation images by label transfer from that bank for every setting of a
small grid (``k`` neighbours, softmax ``temperature``, mixing weight
``alpha``), and keeps the setting with the best validation mAP if it beats the
classifier alone by ``MIN_GAIN``. The validation images' scores used later for
thresholds come from the training bank only, so that no image votes for
itself; the validation images then join the bank, which the artifact keeps.
See ``mlic.models.transfer`` for the scores and the literature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlic.metrics import mean_average_precision
from mlic.models import Classifier
from mlic.models.transfer import LabelTransfer, mix

ALPHAS = (0.25, 0.5, 0.75, 1.0)
NEIGHBOURS = (10, 20, 50)
TEMPERATURES = (0.02, 0.05, 0.1)
MIN_GAIN = 0.002
"""Validation mAP that label transfer must add to the classifier alone to be kept."""
MAX_BANK_BYTES = 1 << 30
"""The largest bank (float16 embeddings and labels) an artifact keeps: 1 GiB, about 400,000 images
with 1,280 features and 100 labels. Larger training sets train without label transfer."""
CHUNK = 1024
"""Validation images compared with the bank at a time (a [CHUNK, bank size] similarity matrix)."""


@dataclass
class Embedded:
    """A data set passed through the network once: label logits, pooled features and label targets."""

    label_logits: torch.Tensor
    embeddings: torch.Tensor
    labels: np.ndarray


def bank_bytes(n_images: int, dim: int, n_labels: int) -> int:
    return 2 * n_images * (dim + n_labels)


def fit_transfer(model: Classifier, train: Embedded, val: Embedded) -> tuple[dict | None, torch.Tensor]:
    """The best label-transfer setting on validation (None if none helps) and the validation label logits.

    Returns ``(setting, logits)``: ``setting`` is ``{"k", "temperature",
    "alpha", "validation_mAP", "classifier_mAP"}`` or None; ``logits`` are the
    validation label logits under that setting (the classifier's own when None).
    """
    base = mean_average_precision(val.labels, torch.sigmoid(val.label_logits).numpy())
    best, best_logits = None, val.label_logits
    similarity, index = nearest(val.embeddings, train.embeddings, max(NEIGHBOURS))
    bank_labels = torch.from_numpy(train.labels == 1).float()
    for k in NEIGHBOURS:
        for temperature in TEMPERATURES:
            weights = torch.softmax(similarity[:, :k] / temperature, dim=1)
            votes = (weights.unsqueeze(2) * bank_labels[index[:, :k]]).sum(dim=1)
            for alpha in ALPHAS:
                logits = mix(val.label_logits, votes, alpha)
                score = mean_average_precision(val.labels, torch.sigmoid(logits).numpy())
                if score >= base + MIN_GAIN and (best is None or score > best["validation_mAP"]):
                    best = {"k": k, "temperature": temperature, "alpha": alpha,
                            "validation_mAP": round(score, 6), "classifier_mAP": round(base, 6)}  # fmt: skip
                    best_logits = logits
    return best, best_logits


def nearest(query: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity and index ``[N, k]`` of each query's ``k`` nearest bank rows, in chunks."""
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    k = min(k, len(bank))
    sims, indices = [], []
    for rows in torch.nn.functional.normalize(query.float(), dim=1).split(CHUNK):
        s, i = (rows @ bank.T).topk(k, dim=1)
        sims.append(s)
        indices.append(i)
    return torch.cat(sims), torch.cat(indices)


def attach_transfer(model: Classifier, setting: dict, embeddings: torch.Tensor, labels: np.ndarray) -> None:
    """Give ``model`` a ``LabelTransfer`` with ``setting`` over the bank of ``embeddings`` and ``labels``."""
    size, dim = embeddings.shape
    options = {"k": setting["k"], "temperature": setting["temperature"], "alpha": setting["alpha"]}
    transfer = LabelTransfer(size, dim, model.schema.n_labels, **options)
    transfer.fill(embeddings, torch.from_numpy(np.asarray(labels)))
    model.transfer = transfer
    model.config.transfer = {"size": size, "dim": dim, **options}
