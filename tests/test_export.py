"""Tests of mlic.export: the ONNX file per head, parity with PyTorch, its record in mlic.json, refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from helpers import EXPORT_HEADS, EXPORT_PRE, EXPORT_SCHEMA, EXPORT_THRESHOLDS
from mlic.artifact import CONFIG_FILE, WEIGHTS_FILE, load_artifact
from mlic.card import CARD_FILE
from mlic.data.images import Preprocessing
from mlic.errors import ArtifactError, ConfigError
from mlic.export import export, export_onnx
from mlic.inference.onnx_runtime import ONNX_FILE, OnnxModel
from mlic.schema import LabelSchema

SCHEMA, PRE, THRESHOLDS, HEADS = EXPORT_SCHEMA, EXPORT_PRE, EXPORT_THRESHOLDS, EXPORT_HEADS


ATOL = 1e-4


def uint8_images(n: int, seed: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *PRE.image_size), generator=generator, dtype=torch.uint8)


# -- parity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_parity_per_head_at_every_batch_size(exported, head):
    folder = exported[head]
    artifact = load_artifact(folder)
    record = artifact.exports["onnx"]
    assert 0.0 <= record["max_abs_diff"] <= ATOL
    model = artifact.build_model()
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    for n in (1, 3, 7):
        images = uint8_images(n, seed=n)
        with torch.no_grad():
            expected = model(images).numpy()
        got = session.run(["logits"], {"images": images.numpy()})[0]
        assert got.shape == (n, SCHEMA.num_outputs) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("head", HEADS)
def test_onnx_model_has_named_uint8_input_and_a_symbolic_batch(exported, head):
    proto = onnx.load(exported[head] / ONNX_FILE)
    onnx.checker.check_model(proto)
    (graph_input,) = proto.graph.input
    (graph_output,) = proto.graph.output
    assert graph_input.name == "images" and graph_output.name == "logits"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 40]
    out_dims = graph_output.type.tensor_type.shape.dim
    assert out_dims[0].dim_param and out_dims[1].dim_value == SCHEMA.num_outputs
    meta = {p.key: p.value for p in proto.metadata_props}
    assert LabelSchema.from_dict(json.loads(meta["mlic.schema"])) == SCHEMA
    assert Preprocessing.from_dict(json.loads(meta["mlic.preprocessing"])) == PRE


# -- the record ------------------------------------------------------------------------------------
def test_record_in_mlic_json(exported):
    folder = exported["linear"]
    data = json.loads((folder / CONFIG_FILE).read_text())
    record = data["exports"]["onnx"]
    assert record["file"] == ONNX_FILE
    assert record["sha256"] == hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    assert record["weights_sha256"] == data["weights"]["sha256"]
    assert record["opset"] >= 18
    assert record["input"] == {"name": "images", "dtype": "uint8", "shape": ["batch", 3, 32, 40]}
    assert record["output"]["shape"] == ["batch", SCHEMA.num_outputs]
    assert record["atol"] == ATOL and record["rtol"] == 1e-4 and record["check_batch_sizes"] == [1, 5]
    assert record["torch"] == torch.__version__ and record["onnxruntime"] == onnxruntime.__version__
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, CARD_FILE]
    )


def test_rewriting_mlic_json_keeps_the_record(exported, tmp_path):
    folder = shutil.copytree(exported["linear"], tmp_path / "a")
    artifact = load_artifact(folder)
    artifact.decision = replace(artifact.decision, thresholds=np.array([0.1, 0.2, 0.3, 0.4]))  # as calibrate
    artifact.save_config()
    again = load_artifact(folder)
    assert again.exports == artifact.exports
    OnnxModel(again)  # still loads: thresholds are outside the graph


def test_artifact_without_exports_reads_and_writes_as_before(unexported):
    data = json.loads((unexported / CONFIG_FILE).read_text())
    assert "exports" not in data
    assert load_artifact(unexported).exports == {}


def test_malformed_exports_field_is_an_artifact_error(unexported):
    path = unexported / CONFIG_FILE
    data = json.loads(path.read_text())
    data["exports"] = {"onnx": "model.onnx"}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"malformed field.*exports"):
        load_artifact(unexported)


def test_export_with_an_explicit_opset_and_no_check(unexported):
    path = export_onnx(unexported, opset=18, check=False)
    record = load_artifact(unexported).exports["onnx"]
    assert path == unexported / ONNX_FILE
    assert record["opset"] == 18 and record["max_abs_diff"] is None and record["check_batch_sizes"] == []
    assert [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")] == [18]


def test_reexport_overwrites_cleanly(exported, tmp_path):
    folder = shutil.copytree(exported["linear"], tmp_path / "a")
    before = load_artifact(folder).exports["onnx"]
    (folder / ONNX_FILE).write_bytes(b"stale")  # even a damaged export is replaced
    export(folder, "onnx")
    after = load_artifact(folder).exports["onnx"]
    assert after["sha256"] == hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    assert after["weights_sha256"] == before["weights_sha256"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, CARD_FILE]
    )
    OnnxModel(load_artifact(folder))


def test_failed_parity_writes_nothing_and_names_the_difference(exported, tmp_path):
    folder = shutil.copytree(exported["ml-decoder"], tmp_path / "a")
    config_before = (folder / CONFIG_FILE).read_bytes()
    onnx_before = (folder / ONNX_FILE).read_bytes()
    with pytest.raises(ArtifactError, match=r"parity check failed: the logit of '.+' differs by .* at batch"):
        export_onnx(folder, atol=1e-12, rtol=0)  # ML-Decoder's attention differs by ~1e-6 in float32
    assert (folder / CONFIG_FILE).read_bytes() == config_before
    assert (folder / ONNX_FILE).read_bytes() == onnx_before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_the_relative_tolerance_admits_differences_in_proportion_to_the_logit(exported, tmp_path):
    folder = shutil.copytree(exported["ml-decoder"], tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"differs by .* \(tolerance 1e-12 \+ 1e-12 x \|"):
        export_onnx(folder, atol=1e-12, rtol=1e-12)
    export_onnx(folder, atol=1e-12, rtol=0.01)  # ~1e-6 apart on logits of order 0.1-1: within 1%
    assert load_artifact(folder).exports["onnx"]["rtol"] == 0.01


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"opset": 17}, ConfigError, "opset must be an integer >= 18"),
        ({"opset": "20"}, ConfigError, "opset must be an integer"),
        ({"batch_size": 1}, ConfigError, "batch size must be an integer >= 2"),
        ({"atol": 0.0}, ConfigError, "atol must be > 0"),
        ({"rtol": -1e-4}, ConfigError, "rtol must be >= 0"),
    ],
)
def test_bad_export_options(unexported, kwargs, error, message):
    with pytest.raises(error, match=message):
        export_onnx(unexported, **kwargs)
    assert not (unexported / ONNX_FILE).exists()


def test_unknown_export_format(unexported):
    with pytest.raises(ConfigError, match=r"unknown export format 'tflite'.*\['onnx'\]"):
        export(unexported, "tflite")


def test_export_of_a_non_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not an mlic artifact"):
        export_onnx(tmp_path)
