"""Masked multi-label losses, computed from logits.

The total loss of a schema (``SchemaLoss``) is a label loss over the label
logits plus a cross-entropy per attribute over that attribute's slice.
Unknown label targets (-1) first go through a missing-label policy
(``ignore``: masked, contributing nothing to the value or the gradient;
``negative``; ``selective``); unknown attribute targets contribute nothing.

Label losses (``create_label_loss``): ``bce``, ``focal``, ``asl``, ``hill``,
``splc``; all share ``forward(logits [B, L], targets [B, L], weight [B, L] |
None) -> scalar``, summed over labels and averaged over images
(``mlic.losses.label``).
"""

from mlic.losses.label import AsymmetricLoss, FocalLoss, HillLoss, LabelLoss, SPLCLoss, WeightedBCE
from mlic.losses.missing import (
    IgnoreMissing,
    NegativeMissing,
    SelectiveMissing,
    auto_pos_weight,
    label_priors,
)
from mlic.losses.registry import (
    create_label_loss,
    create_missing_policy,
    list_losses,
    list_missing_policies,
)
from mlic.losses.schema_loss import SchemaLoss

__all__ = [
    "AsymmetricLoss",
    "FocalLoss",
    "HillLoss",
    "IgnoreMissing",
    "LabelLoss",
    "NegativeMissing",
    "SPLCLoss",
    "SchemaLoss",
    "SelectiveMissing",
    "WeightedBCE",
    "auto_pos_weight",
    "create_label_loss",
    "create_missing_policy",
    "label_priors",
    "list_losses",
    "list_missing_policies",
]
