"""Label transfer: labels voted by the nearest training images, mixed into the classifier's scores.

The image-annotation literature's strongest answer to long-tailed, incomplete
label sets is nearest-neighbour label transfer (JEC, Makadia et al. 2008;
TagProp, Guillaumin et al. 2009; 2PKNN, Verma and Jawahar 2012): a rare label
seen on a handful of training images is transferred to a new image that looks
like one of them, where a classifier trained on those few positives keeps its
score low. ``LabelTransfer`` keeps the L2-normalised embeddings of the training
images (the backbone's pooled features) and their labels as buffers, so that
they travel in ``model.safetensors`` and through ONNX export like any weight:

    votes_l(x) = sum_k w_k y_kl,   w = softmax(cos(x, x_k) / temperature) over the k nearest
    score_l(x) = (1 - alpha) sigmoid(z_l(x)) + alpha votes_l(x)

and it returns ``logit(score)``, so the classifier still returns logits and
every consumer (prediction, evaluation, export, serving) is unchanged.
``alpha``, ``k`` and ``temperature`` are chosen on validation data
(``mlic.training.transfer``). Departure from TagProp: the neighbour weights
are a fixed softmax over cosine similarity, not learnt, so that choosing them
costs a few passes over validation scores and no extra optimisation.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-6
"""Scores are clipped to [EPS, 1 - EPS] before the logit, so that a vote of exactly 0 or 1 stays finite."""


class LabelTransfer(nn.Module):
    """Mixes the classifier's label probabilities with label votes of the ``k`` nearest bank images.

    Buffers (saved with the weights): ``bank`` ``[N, D]`` L2-normalised
    embeddings and ``bank_labels`` ``[N, n_labels]`` 0/1 (unknown targets are
    stored as 0: they cast no vote).
    """

    def __init__(self, size: int, dim: int, n_labels: int, *, k: int, temperature: float, alpha: float):
        super().__init__()
        self.k, self.temperature, self.alpha = min(int(k), int(size)), float(temperature), float(alpha)
        self.register_buffer("bank", torch.zeros(size, dim, dtype=torch.float16))
        self.register_buffer("bank_labels", torch.zeros(size, n_labels, dtype=torch.float16))

    def fill(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the bank: embeddings ``[N, D]`` (normalised here) and 0/1/-1 labels ``[N, n_labels]``."""
        self.bank.copy_(nn.functional.normalize(embeddings.float(), dim=1).to(self.bank.dtype))
        self.bank_labels.copy_((labels == 1).to(self.bank_labels.dtype))

    def votes(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Label votes ``[B, n_labels]`` in [0, 1]: softmax-weighted labels of the ``k`` nearest images."""
        query = nn.functional.normalize(embeddings.float(), dim=1)
        similarity = query @ self.bank.float().T
        nearest, index = similarity.topk(self.k, dim=1)
        weights = torch.softmax(nearest / self.temperature, dim=1)
        neighbour_labels = self.bank_labels.float()[index]  # [B, k, n_labels]
        return (weights.unsqueeze(2) * neighbour_labels).sum(dim=1)

    def forward(self, embeddings: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
        """Mixed label logits ``[B, n_labels]`` from the embeddings and the classifier's label logits."""
        return mix(label_logits.float(), self.votes(embeddings), self.alpha)


def mix(label_logits: torch.Tensor, votes: torch.Tensor, alpha: float) -> torch.Tensor:
    """``logit((1 - alpha) sigmoid(logits) + alpha votes)``, clipped so that it stays finite."""
    score = (1.0 - alpha) * torch.sigmoid(label_logits) + alpha * votes
    return torch.logit(score.clamp(EPS, 1.0 - EPS))
