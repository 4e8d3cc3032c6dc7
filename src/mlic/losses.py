"""Masked multi-label losses, computed from logits.

The total loss of a schema is a label loss over the label logits plus a
cross-entropy per attribute over that attribute's slice. Unknown targets
(-1) contribute nothing, to the value or to the gradient.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import ConfigError
from mlic.schema import UNKNOWN, LabelSchema


class WeightedBCE(nn.Module):
    """Binary cross-entropy on logits with separate weights for positives and negatives.

    For logit x and target y in {0, 1}, with log-sigmoid for stability::

        l(x, y) = -(w_p * y * log(sigmoid(x)) + w_n * (1 - y) * log(1 - sigmoid(x)))

    summed over each image's known labels (y != -1) and averaged over images,
    so that every label logit gets as much gradient as an attribute's
    cross-entropy (a mean over all entries would shrink it by the number of
    labels, and labels then learn far slower than attributes). ``pos_weight`` w_p and
    ``neg_weight`` w_n are scalars or per-label tensors ``[L]``; w_p = w_n = 1
    is plain BCE. Inputs: logits ``[B, L]`` float, targets ``[B, L]`` in {-1, 0, 1}.
    """

    def __init__(
        self, pos_weight: float | torch.Tensor = 1.0, neg_weight: float | torch.Tensor = 1.0
    ) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))
        self.register_buffer("neg_weight", torch.as_tensor(neg_weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = targets != UNKNOWN
        y = (targets == 1).to(logits.dtype)
        per_entry = -(
            self.pos_weight * y * F.logsigmoid(logits) + self.neg_weight * (1 - y) * F.logsigmoid(-logits)
        )
        per_entry = torch.where(known, per_entry, torch.zeros_like(per_entry))
        return per_entry.sum() / max(1, logits.shape[0])


_LABEL_LOSSES: dict[str, Callable[..., nn.Module]] = {"bce": WeightedBCE}


def list_losses() -> list[str]:
    return sorted(_LABEL_LOSSES)


def create_label_loss(name: str = "bce", **kwargs: object) -> nn.Module:
    """Label loss ``name``; an unknown name lists the valid ones."""
    if name not in _LABEL_LOSSES:
        close = difflib.get_close_matches(name, list(_LABEL_LOSSES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown loss {name!r}{hint} (valid: {', '.join(list_losses())})")
    return _LABEL_LOSSES[name](**kwargs)


class SchemaLoss(nn.Module):
    """The loss of a whole schema: label loss + sum of per-attribute cross-entropies.

    ``forward(logits [B, num_outputs], label_targets [B, L], attribute_targets
    [B, A])`` returns a dict with ``loss`` (the sum, to optimise) and its
    parts ``labels`` and ``attributes`` (detached, for logging). Each
    attribute's cross-entropy is a mean over its known targets.
    """

    def __init__(self, schema: LabelSchema, label_loss: nn.Module | None = None) -> None:
        super().__init__()
        self.schema = schema
        self.label_loss = label_loss if label_loss is not None else WeightedBCE()

    def forward(
        self, logits: torch.Tensor, label_targets: torch.Tensor, attribute_targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits = logits.float()
        zero = logits.new_zeros(())
        label_part = (
            self.label_loss(logits[:, self.schema.label_slice], label_targets)
            if self.schema.n_labels
            else zero
        )
        attribute_part = zero
        for j, sl in enumerate(self.schema.attribute_slices):
            target = attribute_targets[:, j]
            if (target != UNKNOWN).any():
                attribute_part = attribute_part + F.cross_entropy(logits[:, sl], target, ignore_index=UNKNOWN)
        return {
            "loss": label_part + attribute_part,
            "labels": label_part.detach(),
            "attributes": attribute_part.detach(),
        }
