"""Tests of mlic.export: ONNX parity per head, dynamic batch, the mlic.json record, and the onnx runtime."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import mlic
from mlic.artifact import CONFIG_FILE, WEIGHTS_FILE, load_artifact, save_artifact
from mlic.data.images import Preprocessing
from mlic.errors import ArtifactError, ConfigError, DataError
from mlic.export import export, export_onnx
from mlic.inference.onnx_runtime import ONNX_FILE, OnnxModel, providers_for
from mlic.models import ModelConfig, build_classifier
from mlic.predict import Predictor, find_images, load
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(
    ("cat", "dog", "bird", "fish"),
    (Attribute("size", ("s", "m", "l")), Attribute("indoor", ("no", "yes"))),
)
PRE = Preprocessing(image_size=(32, 40), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), hflip=False)
THRESHOLDS = np.array([0.3, 0.5, 0.5, 0.7])
HEADS = ("linear", "csra", "ml-decoder")
ATOL = 1e-4


def make_artifact(path: Path, head: str = "linear", seed: int = 0) -> Path:
    """A random-weight artifact (non-default BatchNorm statistics, so buffers are exported too)."""
    torch.manual_seed(seed)
    model = build_classifier(SCHEMA, ModelConfig(head=head), mean=PRE.mean, std=PRE.std)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    save_artifact(path, model.eval(), PRE, THRESHOLDS)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """One exported artifact per head, exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    folders = {head: make_artifact(root / head, head) for head in HEADS}
    for folder in folders.values():
        export_onnx(folder)
    return folders


@pytest.fixture
def fresh(tmp_path) -> Path:
    """An artifact without exports, for tests that change it."""
    return make_artifact(tmp_path / "artifact")


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


def test_onnx_model_matches_the_classifier_directly(exported):
    artifact = load_artifact(exported["csra"])
    images = uint8_images(3)
    with torch.no_grad():
        expected = artifact.build_model()(images)
    torch.testing.assert_close(OnnxModel(artifact)(images), expected, rtol=0, atol=ATOL)


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
    assert record["atol"] == ATOL and record["check_batch_sizes"] == [1, 5]
    assert record["torch"] == torch.__version__ and record["onnxruntime"] == onnxruntime.__version__
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE])


def test_rewriting_mlic_json_keeps_the_record(exported, tmp_path):
    folder = shutil.copytree(exported["linear"], tmp_path / "a")
    artifact = load_artifact(folder)
    artifact.decision = replace(artifact.decision, thresholds=np.array([0.1, 0.2, 0.3, 0.4]))  # as calibrate
    artifact.save_config()
    again = load_artifact(folder)
    assert again.exports == artifact.exports
    OnnxModel(again)  # still loads: thresholds are outside the graph


def test_artifact_without_exports_reads_and_writes_as_before(fresh):
    data = json.loads((fresh / CONFIG_FILE).read_text())
    assert "exports" not in data
    assert load_artifact(fresh).exports == {}


def test_malformed_exports_field_is_an_artifact_error(fresh):
    path = fresh / CONFIG_FILE
    data = json.loads(path.read_text())
    data["exports"] = {"onnx": "model.onnx"}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"malformed field.*exports"):
        load_artifact(fresh)


def test_export_with_an_explicit_opset_and_no_check(fresh):
    path = export_onnx(fresh, opset=18, check=False)
    record = load_artifact(fresh).exports["onnx"]
    assert path == fresh / ONNX_FILE
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
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE])
    OnnxModel(load_artifact(folder))


def test_failed_parity_writes_nothing_and_names_the_difference(exported, tmp_path):
    folder = shutil.copytree(exported["ml-decoder"], tmp_path / "a")
    config_before = (folder / CONFIG_FILE).read_bytes()
    onnx_before = (folder / ONNX_FILE).read_bytes()
    with pytest.raises(ArtifactError, match=r"parity check failed: the logit of '.+' differs by .* at batch"):
        export_onnx(folder, atol=1e-12)  # ML-Decoder's attention differs by ~1e-6 in float32
    assert (folder / CONFIG_FILE).read_bytes() == config_before
    assert (folder / ONNX_FILE).read_bytes() == onnx_before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"opset": 17}, ConfigError, "opset must be an integer >= 18"),
        ({"opset": "20"}, ConfigError, "opset must be an integer"),
        ({"batch_size": 1}, ConfigError, "batch size must be an integer >= 2"),
        ({"atol": 0.0}, ConfigError, "atol must be > 0"),
    ],
)
def test_bad_export_options(fresh, kwargs, error, message):
    with pytest.raises(error, match=message):
        export_onnx(fresh, **kwargs)
    assert not (fresh / ONNX_FILE).exists()


def test_unknown_export_format(fresh):
    with pytest.raises(ConfigError, match=r"unknown export format 'tflite'.*\['onnx'\]"):
        export(fresh, "tflite")


def test_export_of_a_non_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not an mlic artifact"):
        export_onnx(tmp_path)


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


def test_onnx_runtime_without_an_export_says_how_to_make_one(fresh):
    message = r"no ONNX export; run `mlic export .* --format onnx` first"
    with pytest.raises(ArtifactError, match=message) as info:
        load(fresh, runtime="onnx")
    assert str(fresh) in str(info.value)


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
