"""Registries of label losses and missing-label policies, with their ``create_*`` factories."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mlic.errors import ConfigError
from mlic.losses.label import AsymmetricLoss, FocalLoss, HillLoss, SPLCLoss, WeightedBCE
from mlic.losses.missing import IgnoreMissing, NegativeMissing, SelectiveMissing, auto_pos_weight

_LABEL_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": WeightedBCE,
    "focal": FocalLoss,
    "asl": AsymmetricLoss,
    "hill": HillLoss,
    "splc": SPLCLoss,
}
_MISSING: dict[str, Callable[..., nn.Module]] = {
    "ignore": IgnoreMissing,
    "negative": NegativeMissing,
    "selective": SelectiveMissing.from_targets,
}


def list_losses() -> list[str]:
    return sorted(_LABEL_LOSSES)


def list_missing_policies() -> list[str]:
    return sorted(_MISSING)


def _lookup(kind: str, name: str, registry: dict[str, Callable[..., nn.Module]]) -> Callable[..., nn.Module]:
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(registry)})")
    return registry[name]


def _check_options(kind: str, name: str, factory: Callable[..., nn.Module], options: dict) -> None:
    valid = [p for p in inspect.signature(factory).parameters if p not in ("self", "train_targets")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{kind} {name!r} got unknown options {unknown} (valid: {', '.join(valid)})")


def create_label_loss(
    name: str = "bce",
    *,
    train_targets: np.ndarray | None = None,
    max_pos_weight: float = 100.0,
    **kwargs: object,
) -> nn.Module:
    """Label loss ``name`` built with ``kwargs``; unknown names and options raise ``ConfigError``.

    ``pos_weight="auto"`` is replaced by ``auto_pos_weight(train_targets,
    max_pos_weight)`` (negatives / positives per label, clipped to [1,
    max_pos_weight]); ``train_targets`` is int8 ``[N, L]`` and is used for
    nothing else. Sequences and arrays of weights become ``[L]`` tensors.
    """
    factory = _lookup("loss", name, _LABEL_LOSSES)
    _check_options("loss", name, factory, kwargs)
    for key in ("pos_weight", "neg_weight"):
        value = kwargs.get(key)
        if isinstance(value, str):
            if key == "pos_weight" and value == "auto":
                if train_targets is None:
                    raise ConfigError("pos_weight='auto' needs train_targets to count positives per label")
                kwargs[key] = auto_pos_weight(train_targets, max_pos_weight)
            else:
                raise ConfigError(f"{key} must be a number, one number per label or 'auto'; got {value!r}")
        elif isinstance(value, list | tuple | np.ndarray):
            kwargs[key] = torch.as_tensor(np.asarray(value, dtype=np.float32))
    return factory(**kwargs)


def create_missing_policy(
    name: str = "ignore",
    *,
    missing_weight: float = 1.0,
    train_targets: np.ndarray | None = None,
    **kwargs: object,
) -> nn.Module:
    """Missing-label policy ``name``: ``ignore``, ``negative`` or ``selective``.

    ``missing_weight`` is the weight of unknowns turned into negatives
    (``negative``, ``selective``; unused by ``ignore``). ``selective`` needs
    ``train_targets`` (int8 ``[N, L]``) for its label priors and accepts
    ``threshold`` (default 0.05). Unknown names and options raise ``ConfigError``.
    """
    factory = _lookup("missing-label policy", name, _MISSING)
    _check_options("missing-label policy", name, factory, kwargs)
    if name == "ignore":
        return factory()
    if name == "negative":
        return factory(missing_weight=missing_weight)
    if train_targets is None:
        raise ConfigError(f"missing-label policy {name!r} needs train_targets to estimate label priors")
    return factory(train_targets, missing_weight=missing_weight, **kwargs)
