"""Label maps: where in the image each output's evidence lies, for every output in one pass.

:func:`label_maps` returns, for a batch of images, the logits and one map per
output (every label, and every class of every attribute) on the backbone's
feature grid ``[B, K, h, w]``. How depends on the head:

- ``cam`` (the ``linear`` head on average-pooled features): class activation
  maps (Zhou et al., "Learning Deep Features for Discriminative
  Localization", CVPR 2016). The logit is ``W mean_x f(x) + b``, so the map
  ``W f(x) + b`` has the logit as its mean: the logit split over the
  positions. One forward pass and one matrix product give every output.
- ``csra`` (the ``csra`` head): each position's share of the logit, from the
  head's own attention: ``sum_h (1 + N lambda a^h_x) s^h_x`` over the ``N``
  positions, where ``s`` is the class-specific score of position ``x`` and
  ``a`` its softmax attention (a one-hot at the maximum for max pooling). Its
  mean over the positions is the logit, as with ``cam``.
- ``attention`` (the ``ml-decoder`` head): the cross-attention weights of the
  last decoder layer (averaged over attention heads) of the query that
  decodes the output; outputs decoded by the same group query share a map.
  Weights are positive and sum to 1 over the positions.
- ``grad-cam`` (any other head, or a ``linear`` head whose backbone does more
  than average the feature map before it, such as MobileNetV3's): Grad-CAM
  (Selvaraju et al., ICCV 2017) without its final ReLU and scaled by the
  number of positions, so that on a ``linear`` head it equals ``cam`` less
  the bias. It is batched: the
  gradients of all outputs come from one vectorised backward call
  (``torch.autograd.grad(..., is_grads_batched=True)``) per chunk of
  ``GRAD_CHUNK`` outputs, instead of one backward pass per output.

Maps are signed (``cam``, ``csra``, ``grad-cam``: positive where the position
speaks for the output, negative where against), in the units of the logit
per position; compare values within one method. Label transfer
(``mlic.models.transfer``) is not spatial: maps show the classifier's own
evidence, while the logits returned include the transfer. Tokens of a
transformer backbone are mapped onto their patch grid (prefix tokens, such
as the class token, dropped).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mlic.errors import ConfigError
from mlic.models.classifier import Classifier
from mlic.models.heads import MAX_POOLING, CSRAHead, LinearHead, MLDecoderHead, positions
from mlic.schema import LabelSchema

METHODS = ("cam", "csra", "attention", "grad-cam")
GRAD_CHUNK = 64
"""Outputs whose gradients one vectorised backward call computes (bounds memory at many labels)."""
POOL_TOLERANCE = 1e-3
"""Largest relative difference between the backbone's pooled features and the feature map's mean for
the ``cam`` method to apply (else ``grad-cam``)."""


def output_names(schema: LabelSchema) -> list[str]:
    """The name of every logit in the schema's layout: each label, then ``attribute=class``."""
    return [*schema.labels, *(f"{a.name}={c}" for a in schema.attributes for c in a.classes)]


def map_method(model: Classifier) -> str:
    """The method :func:`label_maps` uses for ``model``'s head (``cam`` may still fall back per batch)."""
    head = model.head
    if isinstance(head, LinearHead):
        return "cam"
    if isinstance(head, CSRAHead):
        return "csra"
    if isinstance(head, MLDecoderHead):
        return "attention"
    return "grad-cam"


def label_maps(
    model: Classifier, images: torch.Tensor, method: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Logits ``[B, K]`` (as ``model(images)``) and maps ``[B, K, h, w]`` of every output, and the method.

    ``images``: uint8 (or 0-255 float) ``[B, 3, H, W]`` at the model's input size.
    ``method``: one of ``METHODS``, or None for the head's own (see the module
    docstring); ``grad-cam`` works for every head. Runs with gradients only
    for ``grad-cam``; the model stays in eval mode.
    """
    if method is not None and method not in METHODS:
        raise ConfigError(f"unknown map method {method!r}; expected one of {list(METHODS)}")
    method = method or map_method(model)
    if method == "grad-cam":
        return _grad_cam(model, images)
    with torch.no_grad():
        pixels = model.normalize(images)
        features = model.backbone.forward_features(pixels)
        grid, pooled = _grid(model, features), None
        if method == "cam":
            pooled = model.backbone.forward_head(features, pre_logits=True)
            if not isinstance(model.head, LinearHead) or not _pools_by_mean(model, pooled, grid):
                return _grad_cam(model, images)
            weight, bias = model.head.fc.weight.float(), model.head.fc.bias.float()
            maps = torch.einsum("kc,bchw->bkhw", weight, grid.float()) + bias.view(1, -1, 1, 1)
            logits = model.head(pooled).float()
        elif method == "csra":
            _need(model.head, CSRAHead, method)
            maps, logits = _csra(model.head, grid)
        else:
            _need(model.head, MLDecoderHead, method)
            maps = _decoder_attention(model.head, features, grid.shape[-2:])
            logits = model.head(features).float()
        if model.transfer is not None:
            pooled = pooled if pooled is not None else model.backbone.forward_head(features, pre_logits=True)
            labels = model.schema.label_slice
            mixed = model.transfer(model.embedding(pixels, pooled), logits[:, labels])
            logits = torch.cat([mixed.float(), logits[:, labels.stop :]], dim=1)
    return logits, maps, method


def _need(head: object, kind: type, method: str) -> None:
    if not isinstance(head, kind):
        raise ConfigError(f"map method {method!r} needs a {kind.__name__}, not {type(head).__name__}")


def _pools_by_mean(model: Classifier, pooled: torch.Tensor, grid: torch.Tensor) -> bool:
    """Whether the backbone pools by the spatial mean: checked on the first batch, then remembered."""
    known = getattr(model, "_mlic_pools_by_mean", None)
    if known is None:
        known = _is_mean(pooled, grid)
        model._mlic_pools_by_mean = known
    return known


def _is_mean(pooled: torch.Tensor, grid: torch.Tensor) -> bool:
    """Whether ``pooled`` ``[B, C]`` is the spatial mean of ``grid`` ``[B, C, h, w]``."""
    if pooled.ndim != 2 or pooled.shape != grid.shape[:2]:
        return False
    mean = grid.float().mean(dim=(2, 3))
    scale = mean.abs().max().clamp_min(1e-6)
    return bool(((pooled.float() - mean).abs().max() / scale) <= POOL_TOLERANCE)


def _grid(model: Classifier, features: torch.Tensor) -> torch.Tensor:
    """Unpooled features as a ``[B, C, h, w]`` grid (channels-last and token layouts included)."""
    c = model.backbone.num_features
    if features.ndim == 4 and features.shape[1] == c:
        return features
    if features.ndim == 4 and features.shape[-1] == c:
        return features.permute(0, 3, 1, 2)
    if features.ndim == 3 and features.shape[-1] == c:
        tokens = features[:, int(getattr(model.backbone, "num_prefix_tokens", 0)) :]
        side = math.isqrt(tokens.shape[1])
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(len(tokens), c, side, side)
    raise ConfigError(
        f"backbone {model.config.backbone!r} gives features of shape {tuple(features.shape)}, which have "
        "no spatial grid to map labels onto"
    )


def _csra(head: CSRAHead, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's share of every CSRA logit (their mean is the logit), and the logits."""
    b, c, h, w = grid.shape
    x = grid.reshape(b, c, h * w).float()
    weight = F.normalize(head.weight.float(), dim=-1)
    n = h * w
    maps = torch.zeros(b, weight.shape[1], n)
    for k, t in enumerate(head.temperatures):
        score = torch.matmul(weight[k], x)  # [B, K, N]
        if t in (MAX_POOLING, math.inf):
            attention = F.one_hot(score.argmax(dim=-1), n).float()
        else:
            attention = torch.softmax(score * t, dim=-1)
        maps += (1.0 + n * head.lam * attention) * score
    return maps.reshape(b, -1, h, w), maps.mean(dim=-1)


def _decoder_attention(head: MLDecoderHead, features: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The last layer's cross-attention of each output's group query over the positions, ``[B, K, h, w]``."""
    memory = F.relu(head.project(positions(features, head.num_features, "ml-decoder")))
    q = head.queries.to(memory.dtype).unsqueeze(0).expand(memory.shape[0], -1, -1)
    for layer in head.layers[:-1]:
        q = layer(q, memory)
    last = head.layers[-1]
    _, weights = last.attention(last.norm_queries(q), memory, memory, need_weights=True)
    n = size[0] * size[1]
    weights = weights[..., -n:].float()  # prefix tokens dropped, as in the grid
    groups = torch.arange(head.num_outputs) // head.group_size
    return weights[:, groups].reshape(len(weights), head.num_outputs, *size)


def _grad_cam(model: Classifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Batched Grad-CAM of every output on the backbone's feature map (no final ReLU)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = model.normalize(images.clone())
        features = model.backbone.forward_features(x).detach().requires_grad_(True)
        logits = model.head_logits(features)
        grid = _grid(model, features)
        k = logits.shape[1]
        maps = []
        for start in range(0, k, GRAD_CHUNK):
            outputs = torch.arange(start, min(k, start + GRAD_CHUNK))
            one_hot = torch.zeros(len(outputs), *logits.shape)
            one_hot[torch.arange(len(outputs)), :, outputs] = 1.0
            try:
                (grads,) = torch.autograd.grad(logits, features, one_hot, retain_graph=True,
                                               is_grads_batched=True)  # fmt: skip
                grads = [_grid(model, g) for g in grads]
            except RuntimeError:  # an operation without a batching rule: one backward call per output
                grads = [_grid(model, torch.autograd.grad(logits, features, g, retain_graph=True)[0])
                         for g in one_hot]  # fmt: skip
            for g in grads:  # [B, C, h, w]: weights are the spatial means of the gradient
                alpha = g.float().sum(dim=(2, 3), keepdim=True)  # N x the mean: see the module docstring
                maps.append((alpha * grid.detach().float()).sum(dim=1))
        maps = torch.stack(maps, dim=1)
        logits = logits.detach().float()
    if model.transfer is not None:
        with torch.no_grad():
            pooled = model.backbone.forward_head(features.detach(), pre_logits=True)
            labels = model.schema.label_slice
            mixed = model.transfer(model.embedding(x.detach(), pooled), logits[:, labels])
            logits = torch.cat([mixed.float(), logits[:, labels.stop :]], dim=1)
    return logits, maps, "grad-cam"
