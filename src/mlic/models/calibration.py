"""Calibration of probabilities: per-label temperature (or Platt) scaling, per-attribute temperature.

A model's probabilities rank well but are often over- or under-confident: a
label scored 0.8 is not present 80% of the time. Post-hoc calibration fits a
monotone map of each logit on validation data and leaves rankings alone:

- **temperature** (Guo et al., "On Calibration of Modern Neural Networks",
  ICML 2017), one per label: ``z' = z / T_l``, each label's own temperature
  shrunk toward one shared by all labels by the evidence it rests on
  (``SHRINKAGE``), so that rare labels do not calibrate on two examples;
- **platt** (Platt, 1999), one per label: ``z' = a_l z + b_l`` with ``a_l > 0``,
  fitted on Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``
  so that separable validation scores do not send ``a`` to infinity;
- every attribute gets one temperature over its softmax slice (argmax
  unchanged).

Both minimise the negative log-likelihood over the known validation entries
(unknown targets, -1, are left out) with ``torch.optim.LBFGS``, all labels at
once (the per-label losses are separable, so the joint minimum is each label's
own). A label with no known positive or no known negative has no finite
optimum of its own: under ``platt`` it keeps the identity, under
``temperature`` it takes the shared temperature. Temperatures are kept in
``[MIN_TEMPERATURE, MAX_TEMPERATURE]`` (see there why).

The map is increasing, so per-label AP, AUROC and mAP are unchanged, and a
threshold ``t`` on the old probabilities decides exactly as
``sigmoid(a logit(t) + b)`` on the new ones (:meth:`Calibration.thresholds`).
The artifact keeps the map under ``calibration`` in ``mlic.json``; it is
applied to the logits in :mod:`mlic.models.outputs`, outside the network, so
that neither the weights nor an ONNX export change when it is refitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mlic.errors import ConfigError, DataError
from mlic.metrics import calibration_figures
from mlic.schema import LabelSchema

METHODS = ("temperature", "platt")
SHRINKAGE = 10.0
"""Prior strength of per-label temperatures, in examples of a label's rarer class (as the shrunk
per-label thresholds of ``mlic.thresholds``): a label needs 10 positives (and 10 negatives) before its
own temperature outweighs the one shared by all labels. On Corel-5k (374 words, 364 validation photos,
most words with one to three positives) unshrunk temperatures raised the test ECE by 31%."""
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.5, 20.0
"""Bounds of every temperature (and of ``1 / scale`` under Platt). Below 0.5, logits would more than
double: a label that makes no mistake on validation pulls its temperature toward 0, which saturates its
probabilities at 0 and 1 in float32, ties them, and so changes its AP; on MultiDigits a bound of 0.05
cost 0.0002 test mAP, 0.5 cost nothing and calibrated as well (ECE -37% either way)."""
CV_FOLDS = 5
"""Folds of the validation images over which :func:`choose_calibration` measures a map before keeping it."""
MIN_ECE_FALL = 0.1
"""The share by which out-of-fold macro ECE must fall for :func:`choose_calibration` to keep a map."""


@dataclass
class Calibration:
    """A per-label affine map of logits ``z' = scale z + bias`` (``scale > 0``), per-attribute temperatures.

    ``method``: ``temperature`` (``bias`` 0, ``scale = 1 / T``) or ``platt``;
    ``scale``, ``bias``: float64 ``[n_labels]``; ``attribute_temperatures``:
    float64 ``[n_attributes]``; ``fitted_on``: where it was fitted (data,
    images), for the record.
    """

    method: str
    scale: np.ndarray
    bias: np.ndarray
    attribute_temperatures: np.ndarray
    fitted_on: dict

    def apply(self, schema: LabelSchema, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated logits: labels ``scale z + bias``, each attribute's slice over its temperature."""
        out = logits.float().clone()
        labels = schema.label_slice
        scale = torch.as_tensor(self.scale, dtype=torch.float32)
        bias = torch.as_tensor(self.bias, dtype=torch.float32)
        out[:, labels] = out[:, labels] * scale + bias
        for sl, t in zip(schema.attribute_slices, self.attribute_temperatures):
            out[:, sl] = out[:, sl] / float(t)
        return out

    def thresholds(self, thresholds: np.ndarray, *, inverse: bool = False) -> np.ndarray:
        """Thresholds on calibrated probabilities that decide as ``thresholds`` did on raw ones.

        ``sigmoid(scale logit(t) + bias)`` (``inverse``: back from calibrated to raw), in
        float64; 0 and 1 stay 0 and 1.
        """
        t = np.asarray(thresholds, dtype=np.float64)
        with np.errstate(divide="ignore"):
            z = np.log(t) - np.log1p(-t)
        z = (z - self.bias) / self.scale if inverse else self.scale * z + self.bias
        with np.errstate(over="ignore"):
            out = 1.0 / (1.0 + np.exp(-z))
        return np.where(t <= 0.0, 0.0, np.where(t >= 1.0, 1.0, out))

    def to_dict(self, schema: LabelSchema) -> dict:
        """``mlic.json``'s ``calibration``: the method, each label's scale and bias, each attribute's T."""
        return {
            "method": self.method,
            "labels": {
                name: {"scale": float(a), "bias": float(b)}
                for name, a, b in zip(schema.labels, self.scale, self.bias)
            },
            "attributes": {
                name: {"temperature": float(t)}
                for name, t in zip(schema.attribute_names, self.attribute_temperatures)
            },
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: object, schema: LabelSchema) -> Calibration:
        """The inverse of :meth:`to_dict`; a malformed field raises ``ValueError`` naming it."""
        if not isinstance(data, dict):
            raise ValueError(f"calibration must be an object, got {data!r}")
        method = data.get("method")
        if method not in METHODS:
            raise ValueError(f"calibration.method must be one of {METHODS}, got {method!r}")
        labels, attributes = data.get("labels"), data.get("attributes", {})
        if not isinstance(labels, dict) or not isinstance(attributes, dict):
            raise ValueError("calibration.labels and calibration.attributes must be objects")
        scale = [_positive(_field(labels, name, "scale", "labels"), f"calibration.labels.{name}.scale")
                 for name in schema.labels]  # fmt: skip
        bias = [_finite(_field(labels, name, "bias", "labels"), f"calibration.labels.{name}.bias")
                for name in schema.labels]  # fmt: skip
        temps = [
            _positive(_field(attributes, name, "temperature", "attributes"),
                      f"calibration.attributes.{name}.temperature")
            for name in schema.attribute_names
        ]  # fmt: skip
        fitted_on = data.get("fitted_on", {})
        if not isinstance(fitted_on, dict):
            raise ValueError(f"calibration.fitted_on must be an object, got {fitted_on!r}")
        as_array = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
        return cls(method, as_array(scale), as_array(bias), as_array(temps), fitted_on)


def _field(table: dict, name: str, key: str, where: str) -> object:
    row = table.get(name)
    if not isinstance(row, dict) or key not in row:
        raise ValueError(f"calibration.{where}.{name} must be an object with {key!r}, got {row!r}")
    return row[key]


def _finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    return float(value)


def _positive(value: object, field: str) -> float:
    if _finite(value, field) <= 0:
        raise ValueError(f"{field} must be positive, got {value!r}")
    return float(value)


def identity(schema: LabelSchema) -> Calibration:
    """The map that changes nothing."""
    ones, zeros = np.ones(schema.n_labels), np.zeros(schema.n_labels)
    return Calibration("temperature", ones, zeros, np.ones(schema.n_attributes), {})


def fit_calibration(
    schema: LabelSchema,
    logits: torch.Tensor,
    label_true: np.ndarray,
    attr_true: np.ndarray,
    method: str = "temperature",
    *,
    fitted_on: dict | None = None,
) -> Calibration:
    """Fit the calibration of ``logits`` ``[N, num_outputs]`` (uncalibrated) on their targets.

    ``label_true`` int ``[N, n_labels]`` (1, 0, -1 unknown), ``attr_true`` int
    ``[N, n_attributes]`` (class index, -1 unknown). Rows with a NaN logit
    (unreadable images) are left out. See the module docstring for the methods.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}")
    logits = torch.as_tensor(logits).float()
    if logits.ndim != 2 or logits.shape[1] != schema.num_outputs:
        raise DataError(f"logits must be [N, {schema.num_outputs}], got {tuple(logits.shape)}")
    read = ~torch.isnan(logits).any(dim=1)
    logits = logits[read]
    mask = read.numpy()
    y = torch.as_tensor(np.asarray(label_true)[mask]).reshape(len(logits), schema.n_labels)
    scale, bias = _fit_labels(logits[:, schema.label_slice], y, method)
    attrs = np.asarray(attr_true)[mask].reshape(len(logits), schema.n_attributes)
    temps = [_fit_attribute(logits[:, sl], torch.as_tensor(attrs[:, j])) for j, sl
             in enumerate(schema.attribute_slices)]  # fmt: skip
    return Calibration(method, scale, bias, np.asarray(temps, dtype=np.float64), fitted_on or {})


def _lbfgs(params: list[torch.Tensor], loss_fn) -> None:
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=200, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)  # fmt: skip

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimiser.step(closure)


def _fit_labels(z: torch.Tensor, y: torch.Tensor, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-label scale and bias; the identity for labels without a known positive and a known negative."""
    n_labels = z.shape[1]
    known = (y >= 0).double()
    positives, negatives = (y == 1).sum(dim=0), (y == 0).sum(dim=0)
    fit = (positives > 0) & (negatives > 0)
    target = (y == 1).double()
    if method == "platt":  # Platt's smoothed targets
        target = torch.where(y == 1, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0)).double()
    z = torch.nan_to_num(z.double())
    log_scale = torch.zeros(n_labels, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_labels, dtype=torch.float64, requires_grad=method == "platt")
    low, high = -math.log(MAX_TEMPERATURE), -math.log(MIN_TEMPERATURE)

    def loss() -> torch.Tensor:
        scaled = z * log_scale.clamp(low, high).exp() + bias
        nll = torch.nn.functional.binary_cross_entropy_with_logits(scaled, target, reduction="none")
        return (nll * known).sum() / max(1, len(z))

    if len(z) and bool(fit.any()):
        _lbfgs([log_scale, bias] if method == "platt" else [log_scale], loss)
    own = log_scale.detach().clamp(low, high).numpy()
    b = bias.detach().numpy()
    keep = fit.numpy() & np.isfinite(own) & np.isfinite(b)
    if method == "platt":
        return np.where(keep, np.exp(own), 1.0), np.where(keep, b, 0.0)
    # Temperature: each label's own, shrunk in log space toward the one shared by all labels, by the
    # evidence of its rarer class: (n log T_own + SHRINKAGE log T_shared) / (n + SHRINKAGE).
    shared = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    pooled = z[:, fit] if bool(fit.any()) else z[:, :0]

    def pooled_loss() -> torch.Tensor:
        scaled = pooled * shared.clamp(low, high).exp()
        nll = torch.nn.functional.binary_cross_entropy_with_logits(scaled, target[:, fit], reduction="none")
        return (nll * known[:, fit]).sum() / max(1, len(z))

    if pooled.numel():
        _lbfgs([shared], pooled_loss)
    common = float(shared.detach().clamp(low, high)) if np.isfinite(float(shared.detach())) else 0.0
    n = torch.minimum(positives, negatives).double().numpy()
    mixed = (n * np.where(keep, own, common) + SHRINKAGE * common) / (n + SHRINKAGE)
    return np.exp(mixed), np.zeros(n_labels)


def _fit_attribute(z: torch.Tensor, y: torch.Tensor) -> float:
    """One temperature for an attribute's softmax; 1 without known targets of two classes."""
    known = y >= 0
    if int(known.sum()) == 0 or len(torch.unique(y[known])) < 2:
        return 1.0
    z, y = z[known].double(), y[known].long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    _lbfgs([log_t], lambda: torch.nn.functional.cross_entropy(z / log_t.clamp(low, high).exp(), y))
    t = float(log_t.detach().clamp(low, high).exp())
    return t if math.isfinite(t) else 1.0


def choose_calibration(
    schema: LabelSchema,
    logits: torch.Tensor,
    label_true: np.ndarray,
    attr_true: np.ndarray,
    method: str = "temperature",
    *,
    folds: int = CV_FOLDS,
    seed: int = 0,
    fitted_on: dict | None = None,
) -> tuple[Calibration | None, dict]:
    """The calibration of :func:`fit_calibration`, kept only where it lowers held-out ECE; and why.

    Each of ``folds`` shares of the validation images is scored by a map fitted
    on the others; the map is kept (refitted on all of them) when these
    out-of-fold probabilities lower the macro ECE of every output (labels, and
    each attribute's classes one-vs-rest) by at least ``MIN_ECE_FALL`` without
    raising the micro ECE. A model trained with BCE is often calibrated
    already, and then a map fitted on a few hundred images only adds noise;
    one trained with a focusing loss (``asl``) is not, and the map cuts its
    ECE several times over. Returns ``(calibration or None, record)``.
    """
    logits = torch.as_tensor(logits).float()
    read = ~torch.isnan(logits).any(dim=1)
    rows = np.flatnonzero(read.numpy())
    raw, out_of_fold = logits[rows], logits[rows].clone()
    labels, attrs = np.asarray(label_true)[rows], np.asarray(attr_true)[rows]
    order = np.random.default_rng(seed).permutation(len(rows))
    shares = np.array_split(order, max(2, min(folds, len(rows))))
    for held in shares:
        rest = np.setdiff1d(order, held)
        part = fit_calibration(schema, raw[rest], labels[rest], attrs[rest], method)
        out_of_fold[held] = part.apply(schema, raw[held])
    target = _one_vs_rest(schema, labels, attrs)
    before = _ece(schema, raw, target)
    after = _ece(schema, out_of_fold, target)
    kept = bool(
        np.isfinite(before["ece_macro"]) and after["ece_macro"] <= (1 - MIN_ECE_FALL) * before["ece_macro"]
        and after["ece_micro"] <= before["ece_micro"]
    )  # fmt: skip
    record = {
        "method": method,
        "kept": kept,
        "rule": f"{len(shares)}-fold cross-validation on the validation images: kept when macro ECE "
        f"falls by {MIN_ECE_FALL:.0%} or more and micro ECE does not rise",
        "uncalibrated": before,
        "out_of_fold": after,
    }
    if not kept:
        return None, record
    return fit_calibration(schema, logits, label_true, attr_true, method, fitted_on=fitted_on), record


def _one_vs_rest(schema: LabelSchema, labels: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """Targets of every output ``[N, num_outputs]``: the labels', then each attribute's classes (1/0/-1)."""
    columns = [labels.reshape(len(labels), schema.n_labels)]
    for j, sl in enumerate(schema.attribute_slices):
        cls = attrs[:, j][:, None]
        classes = np.arange(sl.stop - sl.start)[None, :]
        columns.append(np.where(cls < 0, -1, (cls == classes).astype(np.int64)))
    return np.concatenate(columns, axis=1)


def _ece(schema: LabelSchema, logits: torch.Tensor, target: np.ndarray) -> dict[str, float]:
    """Macro and micro ECE of every output's probability (sigmoid for labels, softmax per attribute)."""
    parts = [torch.sigmoid(logits[:, schema.label_slice])]
    parts += [torch.softmax(logits[:, sl], dim=1) for sl in schema.attribute_slices]
    figures = calibration_figures(target, torch.cat(parts, dim=1).double().numpy())
    return {k: round(float(figures[k]), 6) for k in ("ece_macro", "ece_micro")}
