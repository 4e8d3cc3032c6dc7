"""Heads: map backbone features to the schema's logit layout.

Heads live in a small registry; ``create_head`` builds one by name and an
unknown name lists the valid ones. A head whose ``pooled`` is True receives
the backbone's pooled features ``[B, C]``; otherwise the unpooled
``forward_features`` output: ``[B, C, H, W]`` from a convnet, ``[B, H, W, C]``
from a channels-last model (Swin, ...) or ``[B, N, C]`` tokens from a
transformer (every token, class and register tokens included, counts as one
spatial position). Every head returns logits ``[B, num_outputs]``; the schema's
layout (labels, then each attribute's classes) is a flat vector to a head, so
labels, attributes and mixed schemas all work alike.

Heads:

- ``linear``: one linear layer on pooled features (``dropout=0.0``).
- ``csra``: class-specific residual attention (Zhu and Wu, ICCV 2021)
  (``temperatures=(1, 99)``, ``lam=0.1``, ``dropout=0.0``).
- ``ml-decoder``: a cross-attention decoder with group decoding (Ridnik et al.,
  WACV 2023) (``num_groups=None`` meaning ``min(num_outputs, 100)``,
  ``d_model=256``, ``num_layers=1``, ``num_heads=8``, ``dim_feedforward=None``
  meaning ``4 * d_model``, ``dropout=0.1``, ``learn_queries=True``).

Options are plain numbers, booleans, lists or ``None``, since they are saved in
the artifact's JSON; an unknown option or a bad value is a ``ConfigError``
that names the head and its options with their defaults.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import ConfigError

_HEADS: dict[str, Callable[..., nn.Module]] = {}


class _BadOption(ValueError):
    """A head option has a value the head cannot use; ``create_head`` adds the head and its options."""


def register_head(name: str) -> Callable:
    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _HEADS[name] = cls
        return cls

    return wrap


def list_heads() -> list[str]:
    return sorted(_HEADS)


def is_pooled(name: str) -> bool:
    """Whether head ``name`` takes pooled features ``[B, C]`` (else ``forward_features`` output)."""
    return bool(getattr(_HEADS.get(name), "pooled", True))


def head_options(name: str) -> dict[str, object]:
    """The options of head ``name`` (its keyword arguments) and their defaults."""
    params = inspect.signature(_HEADS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in ("num_features", "num_outputs")}


def create_head(name: str, num_features: int, num_outputs: int, **kwargs: object) -> nn.Module:
    """Head ``name`` from ``num_features`` backbone features to ``num_outputs`` logits."""
    if name not in _HEADS:
        close = difflib.get_close_matches(name, list(_HEADS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown head {name!r}{hint} (valid: {', '.join(list_heads())})")
    options = head_options(name)
    described = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
    unknown = [k for k in kwargs if k not in options]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(options), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"head {name!r} has no option {unknown[0]!r}{hint} (options: {described})")
    try:
        return _HEADS[name](num_features, num_outputs, **kwargs)
    except _BadOption as e:
        raise ConfigError(f"head {name!r}: {e} (options: {described})") from None


# -- option checks ---------------------------------------------------------------------------------
def _number(
    option: str, value: object, low: float, high: float = math.inf, *, integer: bool = False
) -> float:
    """``value`` as a finite number in ``[low, high)``, else _BadOption."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and not float(value).is_integer()) or not low <= value < high:
        upper = "" if high == math.inf else f" and < {high}"
        raise _BadOption(f"{option} must be {kind} >= {low}{upper}, got {value!r}")
    return int(value) if integer else float(value)


def _flag(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _BadOption(f"{option} must be true or false, got {value!r}")
    return value


def positions(features: torch.Tensor, num_features: int, head: str) -> torch.Tensor:
    """Unpooled features as ``[B, N, C]``: one row per spatial position (or token)."""
    c = num_features
    if features.ndim == 4 and features.shape[1] == c:
        return features.flatten(2).transpose(1, 2)
    if features.ndim == 4 and features.shape[-1] == c:
        return features.flatten(1, 2)
    if features.ndim == 3 and features.shape[-1] == c:
        return features
    raise ConfigError(
        f"head {head!r} was built for {c} feature channels, but the backbone's forward_features "
        f"gives shape {tuple(features.shape)}; expected [B, {c}, H, W], [B, H, W, {c}] or [B, N, {c}]"
    )


# -- linear ----------------------------------------------------------------------------------------
@register_head("linear")
class LinearHead(nn.Module):
    """One linear layer on pooled features: logits = W f + b."""

    pooled = True

    def __init__(self, num_features: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(_number("dropout", dropout, 0.0, 1.0))
        self.fc = nn.Linear(num_features, num_outputs)

    @property
    def output_bias(self) -> nn.Parameter:
        """The bias of each output (``Classifier.start_from_priors`` sets the labels' ones)."""
        return self.fc.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(features))


# -- CSRA ------------------------------------------------------------------------------------------
MAX_POOLING = 99
"""A CSRA temperature of 99 (or infinity) means max pooling, as in the authors' code."""


@register_head("csra")
class CSRAHead(nn.Module):
    r"""Class-specific residual attention on unpooled features.

    Zhu and Wu, "Residual Attention: A Simple but Effective Method for
    Multi-Label Recognition", ICCV 2021 (https://arxiv.org/abs/2108.02456).

    For features :math:`x_1 \dots x_N` (the ``H x W`` positions, or the
    tokens) and each output :math:`i`, head :math:`h` (temperature
    :math:`T_h`) scores every position with its own normalised 1x1 classifier,
    :math:`s^h_{ij} = w^h_i \cdot x_j / \lVert w^h_i \rVert`, and

    .. math::

        \text{logit}_i = \sum_h \Big( \frac{1}{N} \sum_j s^h_{ij}
            + \lambda \sum_j \operatorname{softmax}_j(T_h s^h_{ij}) \, s^h_{ij} \Big)

    where a temperature of 99 (the authors' marker) or ``inf`` replaces the
    attention-weighted sum by :math:`\max_j s^h_{ij}`.

    Options: ``temperatures`` (one head per entry; default ``(1, 99)``, the
    authors' two-head setting: softmax with T=1 plus max pooling), ``lam``
    (:math:`\lambda`, default 0.1, the authors' default and their VOC2007
    setting), ``dropout`` on the features (default 0; not in the paper). As in
    the authors' code, the classifiers have no bias; the pooling runs in
    float32 even under bf16 autocast.
    """

    pooled = False

    def __init__(
        self,
        num_features: int,
        num_outputs: int,
        temperatures: Sequence[float] = (1, MAX_POOLING),
        lam: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (
            isinstance(temperatures, str | bytes)
            or not isinstance(temperatures, Sequence)
            or not temperatures
        ):
            raise _BadOption(f"temperatures must be a non-empty list of numbers > 0, got {temperatures!r}")
        self.temperatures = tuple(
            math.inf if t == math.inf else _number(f"temperatures[{i}]", t, 1e-6)
            for i, t in enumerate(temperatures)
        )
        self.lam = _number("lam", lam, 0.0)
        self.num_features = num_features
        self.drop = nn.Dropout(_number("dropout", dropout, 0.0, 1.0))
        # One [num_outputs, C] 1x1-conv classifier per temperature, stacked.
        bound = 1.0 / math.sqrt(num_features)
        self.weight = nn.Parameter(
            torch.empty(len(self.temperatures), num_outputs, num_features).uniform_(-bound, bound)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.drop(positions(features, self.num_features, "csra")).transpose(1, 2)  # [B, C, N]
        weight = F.normalize(self.weight, dim=-1)
        logits = None
        for h, t in enumerate(self.temperatures):
            score = torch.matmul(weight[h].to(x.dtype), x).float()  # [B, K, N]
            base = score.mean(dim=-1)
            if t in (MAX_POOLING, math.inf):
                attention = score.amax(dim=-1)
            else:
                attention = (score * torch.softmax(score * t, dim=-1)).sum(dim=-1)
            part = base + self.lam * attention
            logits = part if logits is None else logits + part
        return logits


# -- ML-Decoder ------------------------------------------------------------------------------------
class _CrossAttentionLayer(nn.Module):
    """A transformer decoder layer without self-attention (post-norm, as in ML-Decoder)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        # Where self-attention was: the authors keep its LayerNorm, on the queries alone.
        self.norm_queries = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.drop_attention = nn.Dropout(dropout)
        self.norm_attention = nn.LayerNorm(d_model)
        self.feedforward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.drop_feedforward = nn.Dropout(dropout)
        self.norm_feedforward = nn.LayerNorm(d_model)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.norm_queries(queries)
        attended = self.attention(q, memory, memory, need_weights=False)[0]
        q = self.norm_attention(q + self.drop_attention(attended))
        return self.norm_feedforward(q + self.drop_feedforward(self.feedforward(q)))


@register_head("ml-decoder")
class MLDecoderHead(nn.Module):
    r"""ML-Decoder: learned queries cross-attend to the spatial features; group decoding.

    Ridnik, Sharir, Ben-Cohen, Ben-Baruch and Noy, "ML-Decoder: Scalable and
    Versatile Classification Head", WACV 2023 (https://arxiv.org/abs/2111.12933).

    The positions (or tokens) ``[B, N, C]`` are projected to ``d_model`` (a
    linear layer and ReLU). ``num_groups`` queries go through ``num_layers``
    decoder layers that have cross-attention (``num_heads`` heads) and a
    feed-forward block but no self-attention, which the paper removes. Group
    decoding: query :math:`g`'s output goes through its own fully-connected
    layer to :math:`k = \lceil \text{num\_outputs} / \text{num\_groups} \rceil`
    logits; the ``num_groups * k`` logits are concatenated, cut to
    ``num_outputs``, and a bias per output is added. Output ``i`` is thus
    decoded by query ``i // k``, and the head's cost grows with
    ``num_groups``, not with the number of outputs: 10,000 outputs with 100
    groups cost 100 queries and a ``[100, d_model, 100]`` group weight.

    Options and where they depart from the paper:

    - ``num_groups``: default ``None``, meaning ``min(num_outputs, 100)`` (the
      paper's default of 100 groups); more groups than outputs are cut to one
      group per output.
    - ``d_model``: 256 (the paper uses 768); enough for the small backbones
      mlic trains on CPU, and a third of the projection and decoder cost.
    - ``num_layers`` 1 and ``num_heads`` 8, as in the paper.
    - ``dim_feedforward``: default ``None``, meaning ``4 * d_model`` (the
      paper: 2048 at ``d_model`` 768).
    - ``dropout``: 0.1 in attention, feed-forward and residuals, as in the paper.
    - ``learn_queries``: True learns the queries. The paper's own code uses
      fixed random queries (or word embeddings, for zero-shot); False gives
      fixed random queries, saved with the weights.
    """

    pooled = False

    def __init__(
        self,
        num_features: int,
        num_outputs: int,
        num_groups: int | None = None,
        d_model: int = 256,
        num_layers: int = 1,
        num_heads: int = 8,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        learn_queries: bool = True,
    ) -> None:
        super().__init__()
        groups = 100 if num_groups is None else _number("num_groups", num_groups, 1, integer=True)
        d_model = _number("d_model", d_model, 1, integer=True)
        num_heads = _number("num_heads", num_heads, 1, integer=True)
        if d_model % num_heads:
            raise _BadOption(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        num_layers = _number("num_layers", num_layers, 1, integer=True)
        if dim_feedforward is None:
            dim_feedforward = 4 * d_model
        dim_feedforward = _number("dim_feedforward", dim_feedforward, 1, integer=True)
        dropout = _number("dropout", dropout, 0.0, 1.0)
        learn_queries = _flag("learn_queries", learn_queries)

        self.num_features = num_features
        self.num_outputs = num_outputs
        self.num_groups = min(groups, num_outputs)
        self.group_size = math.ceil(num_outputs / self.num_groups)
        self.project = nn.Linear(num_features, d_model)
        queries = torch.randn(self.num_groups, d_model)
        if learn_queries:
            self.queries = nn.Parameter(queries)
        else:
            self.register_buffer("queries", queries)
        self.layers = nn.ModuleList(
            _CrossAttentionLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.group_weight = nn.Parameter(torch.empty(self.num_groups, d_model, self.group_size))
        nn.init.xavier_normal_(self.group_weight)
        self.group_bias = nn.Parameter(torch.zeros(num_outputs))

    @property
    def output_bias(self) -> nn.Parameter:
        """The bias of each output (``Classifier.start_from_priors`` sets the labels' ones)."""
        return self.group_bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        memory = F.relu(self.project(positions(features, self.num_features, "ml-decoder")))
        q = self.queries.to(memory.dtype).unsqueeze(0).expand(memory.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, memory)
        # Group fully-connected: [B, G, d] x [G, d, k] -> [B, G, k] -> [B, G * k].
        # (Contiguous operands: bmm's backward is very slow on CPU with some strided gradients.)
        grouped = torch.bmm(q.transpose(0, 1).contiguous(), self.group_weight.to(q.dtype))
        logits = grouped.transpose(0, 1).contiguous().view(q.shape[0], -1)[:, : self.num_outputs]
        return logits + self.group_bias
