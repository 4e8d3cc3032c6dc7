"""Policies for unknown label targets (-1), and statistics of the training targets.

A policy runs before the label loss: ``policy(targets [B, L]) -> (targets
[B, L] in {-1, 0, 1}, weight [B, L] float | None)``. Entries that stay -1 are
masked by the label loss (exactly zero value and gradient); entries turned
into 0 are trained as negatives, with the returned weight.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlic.errors import ConfigError
from mlic.schema import UNKNOWN


def target_counts(train_targets: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label: present, absent and unknown counts (float64 ``[L]``) of the training targets.

    ``train_targets`` is an int8 matrix ``[N, L]`` in {-1, 0, 1}, or label
    lists (``mlic.data.targets.LabelLists``, anything with ``counts()``),
    which are counted without building the matrix.
    """
    if hasattr(train_targets, "counts"):
        counts = train_targets.counts()
        return tuple(counts[k].astype(np.float64) for k in ("positive", "negative", "unknown"))
    targets = np.asarray(train_targets)
    if targets.ndim != 2:
        raise ConfigError(f"train_targets must be a [N, L] matrix; got shape {targets.shape}")
    bad = ~np.isin(targets, (UNKNOWN, 0, 1))
    if bad.any():
        raise ConfigError(f"train_targets must hold -1, 0 or 1; got {targets[bad][0]!r}")
    return tuple((targets == v).sum(0).astype(np.float64) for v in (1, 0, UNKNOWN))


def auto_pos_weight(train_targets: object, max_weight: float = 100.0) -> torch.Tensor:
    """Per-label positive weight: negatives / positives over known entries, clipped to [1, max_weight].

    ``train_targets``: see ``target_counts``; returns float32 ``[L]``.
    Unknown entries are not counted. Labels without any positive get
    ``max_weight`` (their positive term never occurs in training anyway);
    labels with more positives than negatives get 1, never a weight below 1,
    so frequent labels are not down-weighted. The bound keeps very rare
    labels from dominating the loss.
    """
    if max_weight < 1:
        raise ConfigError(f"max_weight must be >= 1; got {max_weight!r}")
    positives, negatives, _ = target_counts(train_targets)
    ratio = np.divide(negatives, positives, out=np.full_like(positives, max_weight), where=positives > 0)
    return torch.as_tensor(np.clip(ratio, 1.0, max_weight), dtype=torch.float32)


def label_priors(train_targets: object) -> torch.Tensor:
    """Per-label prior: positives / known entries, float32 ``[L]``; 1.0 for a label with no known entry."""
    positives, negatives, _ = target_counts(train_targets)
    known = positives + negatives
    prior = np.divide(positives, known, out=np.ones_like(positives), where=known > 0)
    return torch.as_tensor(prior, dtype=torch.float32)


class IgnoreMissing(nn.Module):
    """``ignore``: unknown targets stay -1 and are masked out (zero value, exactly zero gradient)."""

    def forward(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return targets, None


class NegativeMissing(nn.Module):
    """``negative``: unknown targets are treated as absent (0), each with weight ``missing_weight``.

    Known entries keep weight 1. This is the usual "assume negative" baseline
    of learning with missing labels; Hill and SPLC are designed for it.
    """

    def __init__(self, missing_weight: float = 1.0) -> None:
        super().__init__()
        if missing_weight < 0:
            raise ConfigError(f"missing_weight must be >= 0; got {missing_weight!r}")
        self.missing_weight = float(missing_weight)

    def forward(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        unknown = targets == UNKNOWN
        weight = torch.where(unknown, self.missing_weight, 1.0).float()
        return torch.where(unknown, torch.zeros_like(targets), targets), weight


class SelectiveMissing(nn.Module):
    """``selective``: per label, unknowns are ignored if the label is common, negatives otherwise.

    After Ben-Baruch et al., "Multi-label Classification with Partial
    Annotations using Class-aware Selective Loss", CVPR 2022: an unknown entry
    of label j is ignored (masked) when prior_j >= ``threshold`` (it may well
    be a positive) and treated as a negative with weight ``missing_weight``
    otherwise. Simplification: the paper estimates priors from a model's
    average predictions and also ignores the top-k most likely unknowns per
    batch; here ``priors [L]`` are fixed, estimated from the training
    targets' known entries (``label_priors``: positives / known; 1.0 for a
    label never annotated), with the paper code's default threshold 0.05.
    Priors from annotated entries are biased upwards when annotators mark
    positives more often than negatives.
    """

    def __init__(self, priors: torch.Tensor, threshold: float = 0.05, missing_weight: float = 1.0) -> None:
        super().__init__()
        if not 0 <= threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1]; got {threshold!r}")
        if missing_weight < 0:
            raise ConfigError(f"missing_weight must be >= 0; got {missing_weight!r}")
        priors = torch.as_tensor(priors, dtype=torch.float32)
        self.threshold, self.missing_weight = float(threshold), float(missing_weight)
        self.register_buffer("ignored", priors >= threshold, persistent=False)

    @classmethod
    def from_targets(
        cls, train_targets: object, threshold: float = 0.05, missing_weight: float = 1.0
    ) -> SelectiveMissing:
        return cls(label_priors(train_targets), threshold=threshold, missing_weight=missing_weight)

    def forward(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if targets.shape[-1] != self.ignored.shape[0]:
            raise ConfigError(
                f"targets have {targets.shape[-1]} labels; the priors have {self.ignored.shape[0]}"
            )
        negative = (targets == UNKNOWN) & ~self.ignored
        weight = torch.where(negative, self.missing_weight, 1.0).float()
        return torch.where(negative, torch.zeros_like(targets), targets), weight
