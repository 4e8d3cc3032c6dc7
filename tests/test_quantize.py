"""Tests of mlic.quantize: the int8 model, its calibration and parity record, the refusal outside limits."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from mlic.artifact import load_artifact
from mlic.data import multidigits
from mlic.errors import ArtifactError, ConfigError
from mlic.export import export_onnx
from mlic.inference import precision
from mlic.inference.onnx_runtime import FILES
from mlic.models.outputs import Probabilities
from mlic.predict import Predictor
from mlic.quantize import Limits, Parity, measure_parity, quantize_onnx

LOOSE = Limits(min_decision_agreement=0.9, max_map_difference=0.05)
"""The tiny run's model is weak (mAP ~0.4 at 32 px), so its int8 variant is held to looser limits here."""
ANY_PARITY = Limits(min_decision_agreement=0.0, max_map_difference=1.0)
"""Limits no int8 model fails: for tests of what parity compares, not of how close it is."""
IMPOSSIBLE = Limits(min_decision_agreement=1.0, max_map_difference=0.0)
CALIBRATION = {"demo_samples": 200, "images": 64}


@pytest.fixture(scope="module")
def exported_run(tiny_run, tmp_path_factory):
    """A copy of the tiny trained run's artifact with its float32 ONNX export."""
    folder = tmp_path_factory.mktemp("quantize") / "artifact"
    shutil.copytree(tiny_run / "artifact", folder)
    export_onnx(folder)
    return folder


@pytest.fixture(scope="module")
def quantized(exported_run):
    quantize_onnx(exported_run, "demo", limits=LOOSE, **CALIBRATION)
    return exported_run


def test_the_int8_model_is_written_with_its_checksum_calibration_and_measured_parity(quantized):
    artifact = load_artifact(quantized)
    record = artifact.exports["onnx_int8"]
    data = (quantized / FILES["int8"]).read_bytes()
    assert record["file"] == "model.int8.onnx" and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["from_sha256"] == hashlib.sha256((quantized / "model.onnx").read_bytes()).hexdigest()
    assert record["calibration"] == {"data": "demo", "images": 64, "method": "minmax", "seed": 0}
    parity = record["parity"]
    assert parity["images"] == 136 and parity["on"] == "held-out images"  # the 200 canvases less the 64
    assert parity["label_decision_agreement"] >= LOOSE.min_decision_agreement
    assert parity["map_difference"] == pytest.approx(abs(parity["map_variant"] - parity["map_reference"]))
    assert record["quantization"] == {"format": "QDQ", "activations": "uint8", "weights": "int8 per channel"}


def test_the_int8_model_is_smaller_and_predicts_like_float32(quantized, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_int8", lambda: True)
    assert (quantized / FILES["int8"]).stat().st_size < 0.5 * (quantized / "model.onnx").stat().st_size
    images = list(multidigits("test", 64, seed=3).pixels)
    int8 = Predictor.from_path(quantized, runtime="onnx", precision="int8")
    fp32 = Predictor.from_path(quantized, runtime="onnx")
    assert int8.precision == "int8"
    a, b = int8.predict_proba(images), fp32.predict_proba(images)
    assert np.abs(a.labels - b.labels).max() < 0.1
    assert (int8.decide(a) == fp32.decide(b)).mean() >= 0.9
    assert not np.array_equal(a.labels, b.labels)  # a different model really ran


def test_without_int8_instructions_the_float32_model_runs_after_a_warning(quantized, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_int8", lambda: False)
    with pytest.warns(UserWarning, match="running float32 instead of int8"):
        predictor = Predictor.from_path(quantized, runtime="onnx", precision="int8")
    images = list(multidigits("test", 8, seed=3).pixels)
    expected = Predictor.from_path(quantized, runtime="onnx").predict_proba(images)
    assert predictor.precision == "fp32"
    np.testing.assert_array_equal(predictor.predict_proba(images).labels, expected.labels)


def test_outside_the_limits_nothing_is_written_and_the_error_gives_the_figures(exported_run, tmp_path):
    folder = tmp_path / "artifact"
    shutil.copytree(exported_run, folder)
    (folder / FILES["int8"]).unlink(missing_ok=True)
    before = (folder / "mlic.json").read_text()
    with pytest.raises(ArtifactError, match=r"outside the parity limits on 136 images of demo: .*mAP") as e:
        quantize_onnx(folder, "demo", limits=IMPOSSIBLE, **CALIBRATION)
    assert "nothing was written" in str(e.value)
    assert not (folder / FILES["int8"]).exists() and (folder / "mlic.json").read_text() == before


def test_the_default_limits_refuse_the_weak_tiny_model(exported_run, tmp_path):
    # its decisions sit near the thresholds: int8 flips about 1% of them, more than the 0.5% allowed
    folder = tmp_path / "artifact"
    shutil.copytree(exported_run, folder)
    with pytest.raises(ArtifactError, match=r"label decisions agree on 9\d\.\d\d% \(at least 99.5% needed\)"):
        quantize_onnx(folder, "demo", **CALIBRATION)


def test_quantizing_needs_the_float32_export_first(make_artifact):
    made = make_artifact()
    with pytest.raises(ArtifactError, match=r"no ONNX export; run `mlic export .* --format onnx` first"):
        quantize_onnx(made.path, "demo", **CALIBRATION)


def test_an_int8_predictor_without_the_int8_export_says_how_to_make_it(exported_run, monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_supports_int8", lambda: True)
    folder = tmp_path / "artifact"
    shutil.copytree(exported_run, folder)
    artifact = load_artifact(folder)
    artifact.exports.pop("onnx_int8", None)
    artifact.save_config()
    with pytest.raises(ArtifactError, match=r"no int8 ONNX export; run `mlic export .* --quantize int8"):
        Predictor.from_path(folder, runtime="onnx", precision="int8")


def test_a_replaced_int8_file_is_refused(quantized, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_int8", lambda: True)
    folder = tmp_path / "artifact"
    shutil.copytree(quantized, folder)
    (folder / FILES["int8"]).write_bytes((folder / "model.onnx").read_bytes())
    with pytest.raises(ArtifactError, match=r"model\.int8\.onnx: checksum does not match mlic\.json"):
        Predictor.from_path(folder, runtime="onnx", precision="int8")


BAD_OPTIONS = [({"method": "kl"}, "unknown calibration method 'kl'"),
               ({"images": 0}, "calibration images must be a positive"),
               ({"images": True}, "calibration images must be a positive")]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_calibration_options_are_refused_by_name(exported_run, options, message):
    with pytest.raises(ConfigError, match=message):
        quantize_onnx(exported_run, "demo", **options)


def test_parity_counts_agreeing_decisions_attribute_classes_and_both_maps(make_artifact):
    manifest = multidigits("test", 6, seed=0)
    rng = np.random.default_rng(0)
    reference = Probabilities(rng.random((6, 10)), [rng.random((6, 3))])
    variant = Probabilities(reference.labels.copy(), [reference.attributes[0].copy()])
    variant.labels[0, :3] = 1 - variant.labels[0, :3]  # moves three scores across 0.5, or not
    variant.attributes[0][1] = variant.attributes[0][1][::-1]
    decide = lambda s: s >= 0.5  # noqa: E731
    parity = measure_parity(reference, variant, manifest, decide)
    flipped = ((reference.labels[0, :3] >= 0.5) != (variant.labels[0, :3] >= 0.5)).sum()
    assert parity.label_decision_agreement == pytest.approx(1 - flipped / 60)
    changed = reference.attributes[0][1].argmax() != variant.attributes[0][1].argmax()
    assert parity.attribute_agreement == pytest.approx(1 - changed / 6)
    assert parity.max_abs_probability_difference == pytest.approx(
        max(
            np.abs(reference.labels - variant.labels).max(),
            np.abs(reference.attributes[0] - variant.attributes[0]).max(),
        )
    )


def test_parity_failures_name_each_limit_crossed():
    within = Parity(100, 0.999, 1.0, 0.90, 0.899, 0.01)
    assert within.failures() == []
    outside = Parity(100, 0.99, 0.98, 0.90, 0.89, 0.2)
    failures = outside.failures()
    assert len(failures) == 3
    assert failures[0].startswith("label decisions agree on 99.00%")
    assert failures[1].startswith("attribute classes agree on 98.00%")
    assert failures[2].startswith("mAP 0.8900 against 0.9000 float32")


def test_parity_of_a_calibrated_artifact_is_measured_on_its_calibrated_probabilities(
    exported_run, tmp_path, monkeypatch
):
    """Its thresholds are on the calibrated probabilities, so the decisions compared must be made on those."""
    import mlic.quantize
    from mlic.evaluation import calibrate_probabilities

    folder = shutil.copytree(exported_run, tmp_path / "artifact")
    calibrate_probabilities(folder, "demo", "platt", demo_samples=64)
    seen = []
    measure = mlic.quantize.measure_parity
    monkeypatch.setattr(mlic.quantize, "measure_parity", lambda *args: seen.append(args) or measure(*args))
    # which probabilities are compared is the point here, not how well 16 images calibrate int8 (on a CPU
    # without VNNI, ONNX Runtime's int8 kernels agreed on 43 of 48 attribute decisions, just under LOOSE)
    quantize_onnx(folder, "demo", limits=ANY_PARITY, demo_samples=48, images=16)
    ((reference, _, manifest, _),) = seen
    fp32 = Predictor.from_path(folder, runtime="onnx").predict_manifest(manifest)  # calibrated, as predicted
    np.testing.assert_allclose(reference.labels, fp32.labels, atol=1e-6)
    raw = Predictor.from_path(exported_run, runtime="onnx").predict_manifest(manifest)
    assert not np.allclose(reference.labels, raw.labels, atol=1e-3)
