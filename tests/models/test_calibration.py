"""mlic.models.calibration: fitting recovers a known miscalibration, thresholds keep decisions, JSON form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from helpers import fuzz
from mlic.errors import ConfigError, DataError
from mlic.models.calibration import (
    MAX_TEMPERATURE,
    MIN_ECE_FALL,
    MIN_TEMPERATURE,
    Calibration,
    choose_calibration,
    fit_calibration,
    identity,
)
from mlic.models.outputs import probabilities
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("a", "b", "c"), (Attribute("size", ("s", "m", "l")),))


def sample(n: int = 4000, seed: int = 0, overconfidence: float = 3.0):
    """Logits ``overconfidence`` times those of a calibrated model, targets drawn from the calibrated one."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, 3))
    y = (rng.random((n, 3)) < 1 / (1 + np.exp(-z))).astype(np.int8)
    a = rng.normal(0, 1.5, (n, 3))
    p = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    attr = np.array([rng.choice(3, p=row) for row in p])[:, None]
    logits = torch.tensor(np.concatenate([overconfidence * z, overconfidence * a], 1), dtype=torch.float32)
    return logits, y, attr


def test_temperature_recovers_a_known_overconfidence():
    logits, y, attr = sample()
    c = fit_calibration(SCHEMA, logits, y, attr, "temperature")
    assert c.method == "temperature" and np.all(c.bias == 0)
    np.testing.assert_allclose(c.scale, 1 / 3, rtol=0.1)
    np.testing.assert_allclose(c.attribute_temperatures, 3, rtol=0.1)


def test_platt_recovers_scale_and_a_shift():
    logits, y, attr = sample(seed=1)
    shifted = logits.clone()
    shifted[:, 0] += 2.0  # label a: biased upwards
    c = fit_calibration(SCHEMA, shifted, y, attr, "platt")
    np.testing.assert_allclose(c.scale, 1 / 3, rtol=0.15)
    assert c.bias[0] == pytest.approx(-2 / 3, abs=0.15) and abs(c.bias[1]) < 0.15


def test_calibration_lowers_the_likelihood_loss_and_keeps_rankings():
    logits, y, attr = sample(seed=2)
    c = fit_calibration(SCHEMA, logits, y, attr)
    raw, cal = probabilities(SCHEMA, logits), probabilities(SCHEMA, logits, c)

    def nll(p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()

    assert nll(cal.labels) < nll(raw.labels)
    for j in range(3):  # increasing: sorted by the raw scores (ties by the new ones), the new never fall
        order = np.lexsort((cal.labels[:, j], raw.labels[:, j]))
        assert (np.diff(cal.labels[order, j]) >= 0).all()
    assert (raw.attributes[0].argmax(1) == cal.attributes[0].argmax(1)).all()


def test_labels_without_both_classes_and_unknowns_and_unread_rows():
    logits, y, attr = sample(n=500, seed=3)
    y[:, 1] = 0  # no positive: identity
    y[:200, 2] = -1  # unknown entries are left out
    logits[5] = float("nan")  # an unreadable image
    attr[:] = -1  # no known attribute target: temperature 1
    c = fit_calibration(SCHEMA, logits, y, attr)
    assert c.attribute_temperatures[0] == 1 and np.isfinite(c.scale).all() and c.scale[2] != 1
    assert c.scale[1] == pytest.approx(np.sqrt(c.scale[0] * c.scale[2]), rel=0.5)  # the shared temperature
    p = fit_calibration(SCHEMA, logits, y, attr, "platt")
    assert p.scale[1] == 1 and p.bias[1] == 0 and np.isfinite(p.scale).all()


def test_rare_labels_take_the_shared_temperature():
    logits, y, attr = sample(n=2000, seed=4)
    y[:, 1] = 0
    y[:3, 1] = 1  # three positives: mostly the shared temperature
    c = fit_calibration(SCHEMA, logits, y, attr)
    assert abs(np.log(c.scale[1]) - np.log(1 / 3)) < abs(np.log(c.scale[1]) - np.log(1 / MIN_TEMPERATURE))


def test_separable_scores_stay_within_bounds():
    y = np.array([[1], [0]] * 50, dtype=np.int8)
    logits = torch.tensor(np.where(y == 1, 0.1, -0.1), dtype=torch.float32)
    schema = LabelSchema(("x",))
    for method in ("temperature", "platt"):
        c = fit_calibration(schema, logits, y, np.zeros((100, 0)), method)
        assert np.isfinite(c.scale).all() and 1 / MAX_TEMPERATURE <= c.scale[0] <= 1 / MIN_TEMPERATURE + 1e-9


def test_bad_method_and_shapes():
    with pytest.raises(ConfigError, match="unknown calibration method 'isotonic'"):
        fit_calibration(SCHEMA, torch.zeros(2, 6), np.zeros((2, 3)), np.zeros((2, 1)), "isotonic")
    with pytest.raises(DataError, match=r"logits must be \[N, 6\]"):
        fit_calibration(SCHEMA, torch.zeros(2, 5), np.zeros((2, 3)), np.zeros((2, 1)))


@given(
    scale=st.floats(0.05, 20), bias=st.floats(-5, 5),
    z=st.lists(st.floats(-30, 30), min_size=1, max_size=50), t=st.floats(0.001, 0.999),
)  # fmt: skip
@fuzz(300)
def test_re_expressed_thresholds_decide_as_before(scale, bias, z, t):
    """Where neither threshold is within float32 rounding of 0 or 1 (|logit| < 15), decisions stay."""
    assume(abs(scale * np.log(t / (1 - t)) + bias) < 15)
    schema = LabelSchema(("x",))
    c = Calibration("platt", np.array([scale]), np.array([bias]), np.zeros(0), {})
    logits = torch.tensor(z, dtype=torch.float32)[:, None]
    raw = probabilities(schema, logits).labels[:, 0]
    cal = probabilities(schema, logits, c).labels[:, 0]
    new = c.thresholds(np.array([t]))[0]
    # Away from float32 ties at the threshold, the decisions are the same.
    clear = (np.abs(raw.astype(np.float64) - t) > 1e-6) & (np.abs(cal.astype(np.float64) - new) > 1e-6)
    assert ((raw >= t) == (cal >= new))[clear].all()
    assert c.thresholds(np.array([new]), inverse=True)[0] == pytest.approx(t, abs=1e-9)


def test_thresholds_zero_and_one_stay():
    c = Calibration("platt", np.array([2.0, 0.5]), np.array([1.0, -1.0]), np.zeros(0), {})
    np.testing.assert_array_equal(c.thresholds(np.array([0.0, 1.0])), [0.0, 1.0])
    np.testing.assert_array_equal(c.thresholds(np.array([1.0, 0.0]), inverse=True), [1.0, 0.0])


def test_json_round_trip_and_refusals():
    logits, y, attr = sample(n=300)
    c = fit_calibration(SCHEMA, logits, y, attr, "platt", fitted_on={"data": "val", "images": 300})
    back = Calibration.from_dict(c.to_dict(SCHEMA), SCHEMA)
    for field in ("scale", "bias", "attribute_temperatures"):
        np.testing.assert_array_equal(getattr(back, field), getattr(c, field))
    assert back.method == "platt" and back.fitted_on == {"data": "val", "images": 300}
    data = c.to_dict(SCHEMA)
    bad = [
        ({**data, "method": "isotonic"}, "calibration.method"),
        ({**data, "labels": {"a": {"scale": 1.0, "bias": 0.0}}}, r"calibration.labels.b"),
        (
            {**data, "labels": {**data["labels"], "c": {"scale": -1.0, "bias": 0}}},
            "labels.c.scale must be pos",
        ),
        ({**data, "attributes": {"size": {"temperature": "1"}}}, "attributes.size.temperature"),
        ([], "calibration must be an object"),
    ]
    for value, message in bad:
        with pytest.raises(ValueError, match=message):
            Calibration.from_dict(value, SCHEMA)


def test_identity_changes_nothing():
    logits = torch.randn(7, 6)
    out = identity(SCHEMA).apply(SCHEMA, logits)
    torch.testing.assert_close(out, logits)


def test_choose_keeps_a_map_that_cuts_held_out_ece_and_refits_it_on_all_images():
    logits, y, attr = sample(n=1500, seed=4)
    c, record = choose_calibration(SCHEMA, logits, y, attr, seed=0, fitted_on={"data": "v"})
    assert record["kept"] and record["method"] == "temperature"
    before, after = record["uncalibrated"]["ece_macro"], record["out_of_fold"]["ece_macro"]
    assert after <= (1 - MIN_ECE_FALL) * before
    assert record["out_of_fold"]["ece_micro"] <= record["uncalibrated"]["ece_micro"]
    refit = fit_calibration(SCHEMA, logits, y, attr, "temperature")
    np.testing.assert_allclose(c.scale, refit.scale)  # the kept map is fitted on every image
    assert c.fitted_on == {"data": "v"}


def test_choose_leaves_calibrated_scores_alone():
    logits, y, attr = sample(n=1500, seed=5, overconfidence=1.0)
    c, record = choose_calibration(SCHEMA, logits, y, attr, seed=0)
    assert c is None and not record["kept"]
    assert record["out_of_fold"]["ece_macro"] > (1 - MIN_ECE_FALL) * record["uncalibrated"]["ece_macro"]


def test_choose_counts_attribute_classes_and_skips_unread_rows():
    logits, y, attr = sample(n=1500, seed=6, overconfidence=1.0)
    logits[:, 3:] *= 4.0  # only the attribute is overconfident
    logits[:7] = float("nan")
    c, record = choose_calibration(SCHEMA, logits, y, attr, seed=0)
    assert record["kept"] and c.attribute_temperatures[0] > 2
