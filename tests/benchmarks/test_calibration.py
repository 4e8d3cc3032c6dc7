"""benchmarks/calibration.py on the tiny run: the figures it prints hold together."""

from __future__ import annotations

import pytest

from helpers import benchmark_script


@pytest.fixture(scope="module")
def calibration():
    with benchmark_script("calibration") as module:
        yield module


@pytest.mark.parametrize("fit", [None, "auto", "temperature"])
def test_calibration_keeps_decisions_and_map_and_says_what_it_measured(calibration, tiny_run, fit):
    figures = calibration.measure(tiny_run, "demo", "run", fit, {})
    assert figures["decisions_changed"] == 0
    assert figures["mAP_calibrated"] == pytest.approx(figures["mAP_uncalibrated"], abs=1e-4)
    assert figures["test_images"] > 0 and figures["decisions"] == figures["test_images"] * 10
    if fit == "temperature":
        assert figures["method"] == "temperature" and figures["fitted_here"]
    else:  # auto, at training (None) or refitted here: the record says why, and the method follows it
        assert figures["chosen_by"]["kept"] == (figures["method"] == "temperature")
    if figures["method"] is None:
        assert figures["calibrated"] == figures["uncalibrated"]
