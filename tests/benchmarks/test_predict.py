"""benchmarks/predict.py on a 32 px model and a few canvases, so that the benchmark cannot rot unseen."""

from __future__ import annotations

import pytest

from helpers import benchmark_script
from mlic.data import multidigits
from mlic.inference import precision


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("predict") as module:
        yield module


def test_every_variant_is_measured_with_its_ratio_limit_parity_and_map_cost(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)  # measure every variant on any CPU
    monkeypatch.setattr(precision, "cpu_supports_int8", lambda: True)
    artifact = bench.make_artifact(tmp_path / "a", "mlic_cnn", 32, None)
    images = list(multidigits("test", 8, seed=0).pixels)
    figures = {"4": bench.measure(artifact, images, 4, repeats=1)}
    by_variant = {v: {b: f[v] for b, f in figures.items()} for v in bench.VARIANTS}
    assert all(f["predictor"] > 0 and f["network"] > 0 for v in by_variant.values() for f in v.values())
    maps = figures["4"][bench.MAPS]  # label maps, timed against the same variant's prediction
    assert maps["maps"] > 0 and maps["maps_cost"] == pytest.approx(maps["predictor"] / maps["maps"], rel=0.05)
    ratios = bench.ratios(by_variant)
    assert ratios["onnx fp32"] == {"4": 1.0} and set(ratios) == set(bench.VARIANTS)
    peak = {"fp32": 1e11, "bf16": 2e11, "int8": 4e11}
    flops = bench.flops_per_image(artifact)
    assert flops > 1e6  # a convolutional network at 32 px: millions of operations
    limits = bench.limits(flops, peak, by_variant)
    assert limits["onnx int8"]["images_per_second"] == pytest.approx(4e11 / flops, rel=0.01)
    share = by_variant["torch fp32"]["4"]["network"] / (1e11 / flops)
    assert limits["torch fp32"]["share_of_limit"]["4"] == pytest.approx(share, abs=0.006)
    parity = bench.parity(artifact)["onnx int8"]
    assert parity["images"] > 0 and 0 <= parity["label_decision_agreement"] <= 1


def test_matmul_throughput_is_measured_at_each_precision(bench):
    peak = bench.matmul_throughput(n=64, repeats=2)
    assert peak["fp32"] > 0 and peak["int8"] > 0
    assert peak["bf16"] is None or peak["bf16"] > 0
