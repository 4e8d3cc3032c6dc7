"""Tests of mlic.inference.onnx_runtime: ONNX Runtime equals PyTorch; a changed or missing file is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import mlic
from helpers import EXPORT_HEADS, EXPORT_PRE, EXPORT_SCHEMA, EXPORT_THRESHOLDS
from mlic.artifact import load_artifact
from mlic.errors import ArtifactError, ConfigError, DataError
from mlic.export import export_onnx
from mlic.inference.onnx_runtime import ONNX_FILE, OnnxModel, providers_for
from mlic.predict import Predictor, find_images, load

SCHEMA, PRE, THRESHOLDS, HEADS = EXPORT_SCHEMA, EXPORT_PRE, EXPORT_THRESHOLDS, EXPORT_HEADS


ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    """A copy of the trained tiny MultiDigits artifact, exported (the session's run stays untouched)."""
    folder = tmp_path_factory.mktemp("tiny-onnx") / "artifact"
    shutil.copytree(tiny_run / "artifact", folder)
    export_onnx(folder)
    return folder


def uint8_images(n: int, seed: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *PRE.image_size), generator=generator, dtype=torch.uint8)


def test_onnx_model_matches_the_classifier_directly(exported):
    artifact = load_artifact(exported["csra"])
    images = uint8_images(3)
    with torch.no_grad():
        expected = artifact.build_model()(images)
    torch.testing.assert_close(OnnxModel(artifact)(images), expected, rtol=0, atol=ATOL)


# -- the onnx runtime ------------------------------------------------------------------------------
def test_predict_with_onnx_equals_torch_on_the_trained_model(tiny_onnx, digit_files):
    files = find_images([digit_files["root"] / "images"])
    torch_records = load(tiny_onnx).predict(files)
    onnx_predictor = mlic.load(tiny_onnx, runtime="onnx", batch_size=16)
    assert onnx_predictor.runtime == "onnx"
    onnx_records = onnx_predictor.predict(files)
    assert len(onnx_records) == len(torch_records) == 48
    for t, o in zip(torch_records, onnx_records):
        assert o.keys() == t.keys() and o["path"] == t["path"]
        assert o["labels"] == t["labels"]
        assert o["scores"].keys() == t["scores"].keys()
        assert max(abs(o["scores"][k] - t["scores"][k]) for k in t["scores"]) <= ATOL
        for name, value in t["attributes"].items():
            assert o["attributes"][name]["class"] == value["class"]
            assert abs(o["attributes"][name]["probability"] - value["probability"]) <= ATOL


def test_predict_proba_with_onnx_handles_skipped_images(exported, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    images = [np.full((20, 30, 3), 9, np.uint8), bad, np.zeros((50, 40), np.uint8)]
    kwargs = {"bad_images": "skip", "batch_size": 2}
    t = Predictor.from_path(exported["ml-decoder"], **kwargs).predict(images)
    o = Predictor.from_path(exported["ml-decoder"], runtime="onnx", **kwargs).predict(images)
    assert "error" in o[1] and o[1] == t[1]
    for i in (0, 2):
        assert o[i]["labels"] == t[i]["labels"]
        np.testing.assert_allclose(list(o[i]["scores"].values()), list(t[i]["scores"].values()), atol=ATOL)


def test_onnx_runtime_without_an_export_says_how_to_make_one(unexported):
    message = r"no ONNX export; run `mlic export .* --format onnx` first"
    with pytest.raises(ArtifactError, match=message) as info:
        load(unexported, runtime="onnx")
    assert str(unexported) in str(info.value)


def test_tampered_onnx_file_is_refused(exported, tmp_path):
    folder = shutil.copytree(exported["linear"], tmp_path / "a")
    data = bytearray((folder / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"checksum does not match mlic\.json") as info:
        load(folder, runtime="onnx")
    assert str(folder / ONNX_FILE) in str(info.value)


def test_missing_onnx_file_is_refused(exported, tmp_path):
    folder = shutil.copytree(exported["linear"], tmp_path / "a")
    (folder / ONNX_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"ONNX file named in mlic\.json is missing"):
        load(folder, runtime="onnx")


def test_export_of_other_weights_is_refused(exported, tmp_path):
    folder = shutil.copytree(exported["linear"], tmp_path / "a")
    artifact = load_artifact(folder)
    artifact.exports["onnx"]["weights_sha256"] = "0" * 64
    artifact.save_config()
    with pytest.raises(ArtifactError, match="exported from other weights"):
        load(folder, runtime="onnx")


def test_unknown_runtime(exported):
    with pytest.raises(ConfigError, match=r"unknown runtime 'tensorrt'.*\['torch', 'onnx'\]"):
        load(exported["linear"], runtime="tensorrt")


def test_onnx_model_takes_uint8_only(exported):
    model = OnnxModel(load_artifact(exported["linear"]))
    with pytest.raises(DataError, match="uint8"):
        model(uint8_images(1).float())


def test_providers_for_devices():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert providers_for("cuda")[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            providers_for("cuda")
