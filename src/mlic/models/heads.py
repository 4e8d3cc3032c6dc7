"""Heads: map backbone features to the schema's logit layout.

Heads live in a small registry; ``create_head`` builds one by name and an
unknown name lists the valid ones. A head whose ``pooled`` is True receives
the backbone's pooled features ``[B, C]``; otherwise the unpooled
``forward_features`` output.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import nn

from mlic.errors import ConfigError

_HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str) -> Callable:
    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _HEADS[name] = cls
        return cls

    return wrap


def list_heads() -> list[str]:
    return sorted(_HEADS)


def create_head(name: str, num_features: int, num_outputs: int, **kwargs: object) -> nn.Module:
    """Head ``name`` from ``num_features`` backbone features to ``num_outputs`` logits."""
    if name not in _HEADS:
        close = difflib.get_close_matches(name, list(_HEADS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown head {name!r}{hint} (valid: {', '.join(list_heads())})")
    return _HEADS[name](num_features, num_outputs, **kwargs)


@register_head("linear")
class LinearHead(nn.Module):
    """One linear layer on pooled features: logits = W f + b."""

    pooled = True

    def __init__(self, num_features: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(features))
