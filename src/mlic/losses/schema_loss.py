"""The loss of a whole schema: label loss (after the missing-label policy) + cross-entropy per attribute."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlic.losses.label import WeightedBCE
from mlic.losses.registry import create_missing_policy
from mlic.schema import UNKNOWN, LabelSchema


class SchemaLoss(nn.Module):
    """The loss of a whole schema: label loss + sum of per-attribute cross-entropies.

    ``forward(logits [B, num_outputs], label_targets [B, L], attribute_targets
    [B, A])`` returns a dict with ``loss`` (the sum, to optimise) and its
    parts ``labels`` and ``attributes`` (detached, for logging). Label
    targets first go through ``missing`` (a policy module or its name, default
    ``ignore``), whose weight, if any, is passed to the label loss. Each
    attribute's cross-entropy is a mean over its known targets. Half-precision
    logits are computed in float32; float64 stays float64.
    """

    def __init__(
        self, schema: LabelSchema, label_loss: nn.Module | None = None, missing: nn.Module | str | None = None
    ) -> None:
        super().__init__()
        self.schema = schema
        self.label_loss = label_loss if label_loss is not None else WeightedBCE()
        self.missing = create_missing_policy(missing) if isinstance(missing, str) else missing
        if self.missing is None:
            self.missing = create_missing_policy("ignore")

    def set_epoch(self, epoch: int) -> None:
        """Pass the current epoch to the parts that use it (e.g. SPLC's correction)."""
        for part in (self.label_loss, self.missing):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def forward(
        self, logits: torch.Tensor, label_targets: torch.Tensor, attribute_targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if logits.dtype != torch.float64:
            logits = logits.float()
        zero = logits.new_zeros(())
        label_part = zero
        if self.schema.n_labels:
            targets, weight = self.missing(label_targets)
            label_logits = logits[:, self.schema.label_slice]
            label_part = (
                self.label_loss(label_logits, targets)
                if weight is None
                else self.label_loss(label_logits, targets, weight)
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
