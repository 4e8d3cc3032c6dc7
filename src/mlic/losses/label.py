"""Label losses: one masked interface over per-entry positive and negative terms.

Every loss here computes, for each entry (image i, label j) with logit x and
hard target y in {0, 1}, a positive term l+(x) (the cost if the label is
present) and a negative term l-(x) (the cost if it is absent), and combines
them as::

    loss_ij = w_p * y_s * l+(x) + w_n * (1 - y_s) * l-(x),    y_s = y (1 - eps) + eps / 2

where w_p (``pos_weight``) and w_n (``neg_weight``) are scalars or per-label
tensors ``[L]`` and eps is ``label_smoothing`` (targets 1 -> 1 - eps/2,
0 -> eps/2). Each entry is multiplied by an optional ``weight [B, L]`` (from a
missing-label policy), entries with target -1 are replaced by exactly 0 with
``torch.where`` (so they get exactly zero gradient, whatever their logits),
and the result is **summed over each image's labels and averaged over
images**: every label logit then gets as much gradient as an attribute's
cross-entropy (a mean over all entries would shrink it by the number of
labels, and labels then learn far slower than attributes).

All terms are computed from logits with ``F.logsigmoid`` (log p =
logsigmoid(x), log(1 - p) = logsigmoid(-x)), never ``log(sigmoid(x) + eps)``;
focusing factors p^g and (1 - p)^g are exp(g * logsigmoid(+-x)), finite with
finite gradients for logits of any size, and work in float32 and float64.

Shapes: ``forward(logits [B, L] float, targets [B, L] in {-1, 0, 1},
weight [B, L] float | None) -> scalar``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import ConfigError
from mlic.schema import UNKNOWN


def _check_range(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{name} must be in [{low}, {high}{bracket}; got {value!r}")


def _sigmoid_pow(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """sigmoid(x) ** gamma, as exp(gamma * logsigmoid(x)): stable for any x, 1 for gamma 0."""
    return torch.exp(gamma * F.logsigmoid(x)) if gamma else torch.ones_like(x)


def _safe_pow(p: torch.Tensor, gamma: float) -> torch.Tensor:
    """p ** gamma for p >= 0 with a finite gradient at p = 0 (where the value is 0, or 1 for gamma 0)."""
    if not gamma:
        return torch.ones_like(p)
    positive = p > 0
    return torch.where(positive, torch.where(positive, p, torch.ones_like(p)) ** gamma, torch.zeros_like(p))


class LabelLoss(nn.Module):
    """Base of the label losses: subclasses define :meth:`terms`; see the module docstring.

    ``pos_weight`` and ``neg_weight`` are scalars or per-label tensors ``[L]``;
    ``label_smoothing`` eps in [0, 1) moves targets 1 -> 1 - eps/2 and
    0 -> eps/2.
    """

    def __init__(
        self,
        pos_weight: float | torch.Tensor = 1.0,
        neg_weight: float | torch.Tensor = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        _check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))
        self.register_buffer("neg_weight", torch.as_tensor(neg_weight, dtype=torch.float32))
        for name in ("pos_weight", "neg_weight"):
            value = getattr(self, name)
            if value.ndim > 1 or (value < 0).any():
                raise ConfigError(f"{name} must be a scalar or a [L] tensor of values >= 0; got {value}")

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-entry positive and negative terms ``(l+, l-)``, each ``[B, L]``."""
        raise NotImplementedError

    def hard_targets(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Targets in {0, 1} as floats (unknowns become 0; they are masked later)."""
        return (targets == 1).to(logits.dtype)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        known = targets != UNKNOWN
        eps = self.label_smoothing
        y = self.hard_targets(logits, targets) * (1 - eps) + eps / 2
        l_pos, l_neg = self.terms(logits, targets)
        per_entry = self.pos_weight * y * l_pos + self.neg_weight * (1 - y) * l_neg
        if weight is not None:
            per_entry = per_entry * weight
        per_entry = torch.where(known, per_entry, torch.zeros_like(per_entry))
        return per_entry.sum() / max(1, logits.shape[0])


class WeightedBCE(LabelLoss):
    """Binary cross-entropy on logits with separate weights for positives and negatives.

    For logit x, p = sigmoid(x) and target y in {0, 1}::

        l(x, y) = -(w_p * y * log p + w_n * (1 - y) * log(1 - p))

    with log p = logsigmoid(x) and log(1 - p) = logsigmoid(-x). w_p = w_n = 1
    is plain BCE; w_p = negatives / positives per label (see
    ``auto_pos_weight``) balances rare labels. Label smoothing replaces y by
    y_s, i.e. BCE against the smoothed target. Summed over each image's known
    labels and averaged over images (module docstring). Inputs: logits
    ``[B, L]``, targets ``[B, L]`` in {-1, 0, 1}, optional weight ``[B, L]``.
    """

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return -F.logsigmoid(logits), -F.logsigmoid(-logits)


class FocalLoss(LabelLoss):
    """Focal loss, Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.

    For p = sigmoid(x)::

        l+ = -a (1 - p)^gamma log p        l- = -(1 - a) p^gamma log(1 - p)

    with a = ``alpha`` (``None``: a = 1 - a = 1, no class balancing; the paper
    uses 0.25). gamma = 0 and alpha = None is BCE. Combined with pos/neg
    weights and smoothing as every label loss (module docstring): with
    smoothing, each term keeps its own focusing factor and is weighted by y_s
    or 1 - y_s. Inputs: logits ``[B, L]``, targets ``[B, L]`` in {-1, 0, 1}.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        pos_weight: float | torch.Tensor = 1.0,
        neg_weight: float | torch.Tensor = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(pos_weight, neg_weight, label_smoothing)
        _check_range("gamma", gamma, 0.0, float("inf"))
        if alpha is not None:
            _check_range("alpha", alpha, 0.0, 1.0)
        self.gamma, self.alpha = float(gamma), alpha

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        l_pos = -_sigmoid_pow(-logits, self.gamma) * F.logsigmoid(logits)
        l_neg = -_sigmoid_pow(logits, self.gamma) * F.logsigmoid(-logits)
        if self.alpha is None:
            return l_pos, l_neg
        return self.alpha * l_pos, (1 - self.alpha) * l_neg


class AsymmetricLoss(LabelLoss):
    """Asymmetric loss (ASL), Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021.

    For p = sigmoid(x) and the shifted probability p_m = max(p - m, 0) with
    m = ``clip``::

        l+ = -(1 - p)^gamma_pos log p        l- = -p_m^gamma_neg log(1 - p_m)

    Defaults are the paper's (gamma_pos 0, gamma_neg 4, clip 0.05). For hard
    targets this equals ``timm.loss.AsymmetricLossMultiLabel`` (which clamps
    probabilities at 1e-8 before the log; we use logsigmoid) with
    ``reduction='batchmean'``; gammas 0 and clip 0 is BCE. 1 - p_m >= m
    bounds the negative log when m > 0. Gradient: by default it flows through
    the focusing factors as in timm's default (``disable_torch_grad_focal_loss
    =False``); ``detach_focal=True`` stops it there, like the ASL authors'
    training script (the value is the same, the gradient is not the exact
    derivative). Smoothing: each term keeps its own focusing factor (timm
    instead mixes the exponents, so the two differ when smoothing > 0).
    Inputs: logits ``[B, L]``, targets ``[B, L]`` in {-1, 0, 1}.
    """

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        detach_focal: bool = False,
        pos_weight: float | torch.Tensor = 1.0,
        neg_weight: float | torch.Tensor = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(pos_weight, neg_weight, label_smoothing)
        _check_range("gamma_pos", gamma_pos, 0.0, float("inf"))
        _check_range("gamma_neg", gamma_neg, 0.0, float("inf"))
        _check_range("clip", clip, 0.0, 1.0, high_open=True)
        self.gamma_pos, self.gamma_neg, self.clip = float(gamma_pos), float(gamma_neg), float(clip)
        self.detach_focal = bool(detach_focal)

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        focus_pos = _sigmoid_pow(-logits, self.gamma_pos)
        if self.clip:
            p_m = (torch.sigmoid(logits) - self.clip).clamp(min=0)
            log_not_p_m, focus_neg = torch.log1p(-p_m), _safe_pow(p_m, self.gamma_neg)
        else:
            log_not_p_m, focus_neg = F.logsigmoid(-logits), _sigmoid_pow(logits, self.gamma_neg)
        if self.detach_focal:
            focus_pos, focus_neg = focus_pos.detach(), focus_neg.detach()
        return -focus_pos * F.logsigmoid(logits), -focus_neg * log_not_p_m


class HillLoss(LabelLoss):
    """Hill loss of Zhang et al. 2021 (arXiv:2112.07368).

    Paper: "Simple and Robust Loss Design for Multi-Label Learning with
    Missing Labels".

    For p = sigmoid(x)::

        l+ = -(1 - p_mg)^gamma log p_mg,  p_mg = sigmoid(x - margin)
        l- = (lambda - p) p^2

    i.e. the paper's negative term -(lambda - p) p^2 negated into a cost. The
    hill-shaped l- is bounded and, for lambda = 1.5, its gradient vanishes as
    p -> 1, so confident "negatives" that are really missing positives pull
    little (BCE pulls hardest there).
    Defaults give BCE for positives (margin 0, gamma 0); the paper's code uses
    its focal margin loss (margin 1, gamma 2). It is meant for missing labels
    treated as negatives (``--missing negative``); with ``ignore`` it only
    softens known negatives. Smoothing weights l+ by y_s and l- by 1 - y_s.
    Inputs: logits ``[B, L]``, targets ``[B, L]`` in {-1, 0, 1}.
    """

    def __init__(
        self,
        lamb: float = 1.5,
        margin: float = 0.0,
        gamma: float = 0.0,
        pos_weight: float | torch.Tensor = 1.0,
        neg_weight: float | torch.Tensor = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(pos_weight, neg_weight, label_smoothing)
        _check_range("lamb", lamb, 1.0, float("inf"))
        _check_range("gamma", gamma, 0.0, float("inf"))
        self.lamb, self.margin, self.gamma = float(lamb), float(margin), float(gamma)

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shifted = logits - self.margin
        l_pos = -_sigmoid_pow(-shifted, self.gamma) * F.logsigmoid(shifted)
        p = torch.sigmoid(logits)
        return l_pos, (self.lamb - p) * p**2


class SPLCLoss(LabelLoss):
    """Self-paced loss correction (SPLC) of Zhang et al. 2021 (arXiv:2112.07368, the Hill paper).

    From epoch ``start_epoch`` on (set by :meth:`set_epoch`, which the
    training loop calls each epoch; before the first call the epoch is 0),
    known negatives whose probability sigmoid(x) exceeds ``tau`` are treated
    as positives: y' = 1 if y = 1 or (y = 0 and p > tau). Then, as in the
    paper's code, a focal margin loss on both terms, with z = x - margin on
    original positives and z = x elsewhere, q = sigmoid(z)::

        l+ = -(1 - q)^gamma log q        l- = -q^gamma log(1 - q)

    Defaults gamma 2, margin 1 are the paper's. Like Hill it is meant for
    missing labels as negatives (``--missing negative``); unknown (-1)
    entries that reach it stay masked and are never corrected. Smoothing is
    applied to the corrected targets. The correction is a hard threshold: no
    gradient flows through it. Inputs: logits ``[B, L]``, targets ``[B, L]``
    in {-1, 0, 1}.
    """

    def __init__(
        self,
        tau: float = 0.6,
        start_epoch: int = 1,
        gamma: float = 2.0,
        margin: float = 1.0,
        pos_weight: float | torch.Tensor = 1.0,
        neg_weight: float | torch.Tensor = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(pos_weight, neg_weight, label_smoothing)
        _check_range("tau", tau, 0.0, 1.0)
        _check_range("gamma", gamma, 0.0, float("inf"))
        self.tau, self.start_epoch = float(tau), int(start_epoch)
        self.gamma, self.margin = float(gamma), float(margin)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current epoch (0-based); correction starts at ``start_epoch``."""
        self.epoch = int(epoch)

    def hard_targets(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = targets == 1
        if self.epoch >= self.start_epoch:
            y = y | ((targets == 0) & (torch.sigmoid(logits.detach()) > self.tau))
        return y.to(logits.dtype)

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.where(targets == 1, logits - self.margin, logits)
        l_pos = -_sigmoid_pow(-z, self.gamma) * F.logsigmoid(z)
        l_neg = -_sigmoid_pow(z, self.gamma) * F.logsigmoid(-z)
        return l_pos, l_neg
