"""Label transfer fitted at the end of training: a bank of training images, its settings chosen on validation.

``fit_transfer`` embeds the training images with the trained network, scores
the validation images by label transfer from that bank for every setting of a
small grid (``k`` neighbours, softmax ``temperature``, mixing weight
``alpha``), and keeps the setting with the best criterion if it beats the
classifier alone by ``MIN_GAIN`` without lowering validation mAP.

The criterion adds two label-balanced figures: mAP (each label's ranking of
the images) and the per-label F1 of the top-k annotation (CF1 of each image's
k best labels, k its typical label count: each image's ranking of the
labels). Label transfer matters most for the second, where rare labels are
otherwise drowned by frequent ones: on Corel-5k, selecting by mAP alone gave
up 2-5 points of top-5 F1 for 0.015 mAP. The mAP floor keeps the top-k term
from trading ranking quality for annotation where the classifier is already
right: on MultiDigits the criterion alone picked votes only (alpha 1) and cost
0.003 test mAP.

Where the model carries a frozen copy of its pretrained backbone
(``Classifier.reference``), the grid is searched twice: with the fine-tuned
features alone, and with both networks' features joined; the copy stays only
if the second wins.

The validation images' scores used later for thresholds come from the
training bank only, so that no image votes for itself; the validation images
then join the bank, which the artifact keeps. See ``mlic.models.transfer`` for
the scores and the literature.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mlic.metrics import mean_average_precision, papers_scores
from mlic.models import Classifier
from mlic.models.transfer import LabelTransfer, mix
from mlic.thresholds import top_k

ALPHAS = (0.25, 0.5, 0.75, 1.0)
NEIGHBOURS = (10, 20, 50)
TEMPERATURES = (0.02, 0.05, 0.1)
MIN_GAIN = 0.002
"""Criterion (validation mAP + top-k CF1) that label transfer must add to the classifier alone to be kept."""
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
    reference_dim: int = 0
    """How many of the last embedding columns are the reference backbone's (``Classifier.embedding``)."""

    def columns(self, reference: bool) -> slice:
        """The embedding columns label transfer compares with (``reference``) or without the reference's."""
        return slice(None) if reference else slice(0, self.embeddings.shape[1] - self.reference_dim)


def bank_bytes(n_images: int, dim: int, n_labels: int) -> int:
    return 2 * n_images * (dim + n_labels)


def fit_transfer(model: Classifier, train: Embedded, val: Embedded) -> tuple[dict | None, torch.Tensor]:
    """The best label-transfer setting on validation (None if none helps) and the validation label logits.

    Returns ``(setting, logits)``: ``setting`` is ``{"k", "temperature",
    "alpha", "reference", "criterion", "classifier_criterion", "mAP",
    "classifier_mAP", "top_k"}`` (validation figures) or None;
    ``logits`` are the validation label logits under that setting (the
    classifier's own when None). Where the embeddings hold a reference
    backbone's features, the grid is searched with them (``reference``) and
    without, and the reference is kept only where it wins: on Corel-5k it
    added 0.03 mAP and 3 points of top-5 F1 (offline, one fold), where it
    doubles the cost of prediction.
    """
    k_annotation = annotation_size(train.labels)
    base_map, base = figures(val.labels, torch.sigmoid(val.label_logits).numpy(), k_annotation)
    best, best_logits = None, val.label_logits
    for reference, k, temperature, votes in candidate_votes(train, val):
        for alpha in ALPHAS:
            logits = mix(val.label_logits, votes, alpha)
            m_ap, score = figures(val.labels, torch.sigmoid(logits).numpy(), k_annotation)
            if m_ap < base_map or score < base + MIN_GAIN or (best and score <= best["criterion"]):
                continue
            best = {"k": k, "temperature": temperature, "alpha": alpha, "reference": reference,
                    "criterion": round(score, 6), "classifier_criterion": round(base, 6),
                    "mAP": round(m_ap, 6), "classifier_mAP": round(base_map, 6),
                    "top_k": k_annotation}  # fmt: skip
            best_logits = logits
    return best, best_logits


def candidate_votes(train: Embedded, val: Embedded) -> Iterator[tuple[bool, int, float, torch.Tensor]]:
    """``(reference, k, temperature, votes)`` for every embedding and neighbour setting of the grid.

    ``votes`` ``[N_val, n_labels]`` are the validation images' label votes from
    the training bank; one nearest-neighbour search per embedding serves every
    ``k`` and temperature.
    """
    bank_labels = torch.from_numpy(train.labels == 1).float()
    for reference in (False, True) if val.reference_dim else (False,):
        columns = val.columns(reference)
        similarity, index = nearest(val.embeddings[:, columns], train.embeddings[:, columns], max(NEIGHBOURS))
        for k, temperature in itertools.product(NEIGHBOURS, TEMPERATURES):
            weights = torch.softmax(similarity[:, :k] / temperature, dim=1)
            yield reference, k, temperature, (weights.unsqueeze(2) * bank_labels[index[:, :k]]).sum(dim=1)


def annotation_size(labels: np.ndarray) -> int:
    """The typical number of labels per image (the mean, rounded up): the k of the top-k annotation."""
    return max(1, int(np.ceil((labels == 1).sum(axis=1).mean()))) if len(labels) else 1


def figures(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float]:
    """Validation mAP, and the criterion: mAP + CF1 of the top-``k`` annotation (each label-balanced)."""
    m_ap = float(np.nan_to_num(mean_average_precision(labels, scores)))
    annotated = papers_scores(labels, top_k(scores, min(k, scores.shape[1])))["CF1"]
    return m_ap, m_ap + float(np.nan_to_num(annotated))


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
    """Give ``model`` a ``LabelTransfer`` with ``setting`` over the bank of ``embeddings`` and ``labels``.

    ``embeddings`` are those ``setting["reference"]`` compares; without it the
    model's reference backbone, if any, is dropped.
    """
    size, dim = embeddings.shape
    options = {"k": setting["k"], "temperature": setting["temperature"], "alpha": setting["alpha"]}
    transfer = LabelTransfer(size, dim, model.schema.n_labels, **options)
    transfer.fill(embeddings, torch.from_numpy(np.asarray(labels)))
    model.transfer = transfer
    model.config.transfer = {"size": size, "dim": dim, **options}
    if setting.get("reference"):
        model.config.transfer["reference"] = True
    else:
        model.reference = None
