"""Tests of mlic.cli.export: export, then predict and evaluate with --runtime onnx; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import invoke
from mlic.cli import app

runner = CliRunner()


# -- mlic export and --runtime onnx ----------------------------------------------------------------
def exported_copy(tiny_run: Path, folder: Path) -> Path:
    """A copy of the tiny artifact (the session's run stays without exports)."""
    import shutil

    return Path(shutil.copytree(tiny_run / "artifact", folder / "artifact"))


def test_export_onnx_then_predict_and_evaluate_with_the_onnx_runtime(tiny_run, digit_files, tmp_path):
    artifact = exported_copy(tiny_run, tmp_path)
    lines = invoke("export", artifact, "--format", "onnx").strip().splitlines()
    assert lines[0] == str(artifact / "model.onnx") and (artifact / "model.onnx").is_file()
    assert "max |onnxruntime - torch| logit difference" in lines[1] and "batch sizes 1, 5" in lines[1]
    record = json.loads((artifact / "mlic.json").read_text())["exports"]["onnx"]
    assert record["max_abs_diff"] <= 1e-4

    images = digit_files["root"] / "images"
    by_torch = [json.loads(line) for line in invoke("predict", artifact, images).splitlines()]
    by_onnx = [
        json.loads(line) for line in invoke("predict", artifact, images, "--runtime", "onnx").splitlines()
    ]
    assert len(by_onnx) == len(by_torch) == 48
    for t, o in zip(by_torch, by_onnx):
        assert (o["path"], o["labels"]) == (t["path"], t["labels"])
        assert max(abs(o["scores"][k] - t["scores"][k]) for k in t["scores"]) <= 1e-4
        assert {k: v["class"] for k, v in o["attributes"].items()} == {
            k: v["class"] for k, v in t["attributes"].items()
        }

    data = digit_files["root"] / "data.jsonl"
    torch_figures = json.loads(invoke("evaluate", artifact, data, "--json"))
    onnx_figures = json.loads(invoke("evaluate", artifact, data, "--json", "--runtime", "onnx"))
    assert onnx_figures["mAP"] == pytest.approx(torch_figures["mAP"], abs=1e-4)
    assert onnx_figures["micro_f1"] == pytest.approx(torch_figures["micro_f1"], abs=1e-4)

    as_json = json.loads(invoke("export", artifact, "--opset", "18", "--json"))
    assert as_json["path"] == str(artifact / "model.onnx") and as_json["opset"] == 18


def test_export_and_runtime_errors_are_one_line_messages(tiny_run, digit_files, tmp_path):
    artifact = exported_copy(tiny_run, tmp_path)
    image = digit_files["paths"][0]
    for args, message in [
        (("predict", artifact, image, "--runtime", "onnx"), "--format onnx` first"),
        (("evaluate", artifact, "--runtime", "onnx"), "--format onnx` first"),
        (("predict", artifact, image, "--runtime", "tvm"), "unknown runtime 'tvm'"),
        (("export", artifact, "--format", "tflite"), "unknown export format 'tflite'"),
        (("export", artifact, "--opset", "11"), "opset must be an integer >= 18"),
        (("export", tmp_path / "missing"), "not an mlic artifact"),
    ]:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not (artifact / "model.onnx").exists()


# -- int8 and bf16 -----------------------------------------------------------------------------------
def test_int8_export_outside_the_limits_is_refused_and_writes_nothing(tiny_run, tmp_path):
    artifact = exported_copy(tiny_run, tmp_path)
    error = invoke("export", artifact, "--quantize", "int8", "--calibration", "demo", code=2)
    assert error.startswith("error: ") and "outside the parity limits" in error and "Traceback" not in error
    assert not (artifact / "model.int8.onnx").exists()
    assert (artifact / "model.onnx").is_file()  # the float32 export stands on its own


def test_int8_export_then_predict_and_evaluate_at_int8_and_bf16(tiny_run, digit_files, tmp_path, monkeypatch):
    import mlic.quantize
    from mlic.inference import precision

    monkeypatch.setattr(mlic.quantize, "LIMITS", mlic.quantize.Limits(0.9, 0.05))  # the tiny model is weak
    # both precisions run on any CPU (emulated where it lacks the instructions): whatever this CPU has, pass
    monkeypatch.setattr(precision, "cpu_supports_int8", lambda: True)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    artifact = exported_copy(tiny_run, tmp_path)
    lines = invoke("export", artifact, "--quantize", "int8", "--calibration", "demo").strip().splitlines()
    assert lines[2] == str(artifact / "model.int8.onnx") and (artifact / "model.int8.onnx").is_file()
    assert lines[3].startswith("int8 (minmax, 128 calibration images): decisions agree on ")
    assert "held-out images" in lines[3]
    images = digit_files["paths"][:4]
    records = [json.loads(x) for x in invoke("predict", artifact, *images, "--runtime", "onnx",
                                             "--precision", "int8").splitlines()]  # fmt: skip
    assert [r["path"] for r in records] == [str(p) for p in images] and all("scores" in r for r in records)
    figures = json.loads(invoke("evaluate", artifact, "--json", "--runtime", "onnx", "--precision", "int8"))
    assert figures["runtime"] == {"runtime": "onnx", "precision": "int8"}
    assert (
        figures["parity"]["against"] == "onnx fp32" and figures["parity"]["label_decision_agreement"] >= 0.9
    )
    text = invoke("evaluate", artifact, "--precision", "bf16")
    assert (
        "precision: bf16 (torch runtime)" in text
        and "parity with torch fp32: label decisions agree on" in text
    )
    quiet = json.loads(invoke("evaluate", artifact, "--json", "--precision", "bf16", "--no-parity"))
    assert "parity" not in quiet and quiet["runtime"]["precision"] in ("bf16", "fp32")


def test_int8_calibration_reads_a_data_file_with_its_format_options(tiny_run, digit_files, tmp_path):
    # 48 files: 16 calibrate, the other 32 are too few to hold out, so parity is measured on all 48
    from PIL import Image

    pillow_limit = Image.MAX_IMAGE_PIXELS
    artifact = exported_copy(tiny_run, tmp_path)
    data = digit_files["root"] / "tags.csv"
    args = (
        "--quantize",
        "int8",
        "--calibration",
        data,
        "--calibration-images",
        "16",
        "--data-format",
        "csv-tags",
    )
    error = invoke("export", artifact, *args, "--calibration-method", "percentile", code=2)
    assert f"outside the parity limits on 48 images of {data}" in error  # the weak tiny model, as above
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # reading the files left Pillow's bomb limit alone
    error = invoke("export", artifact, *args, "--images-root", tmp_path, code=2)
    assert "48 of 48 image files are missing" in error  # looked up under --images-root, where they are not


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("export", "{a}", "--quantize", "int8"), "needs calibration images: give --calibration DATA"),
        (("export", "{a}", "--calibration", "demo"), "--calibration is only used with --quantize int8"),
        (("export", "{a}", "--quantize", "int4", "--calibration", "demo"), "unknown quantization 'int4'"),
        (("predict", "{a}", "{i}", "--precision", "int8"), "precision 'int8' is not offered by the torch"),
        (
            ("evaluate", "{a}", "--runtime", "onnx", "--precision", "bf16"),
            "'bf16' is not offered by the onnx",
        ),
    ],
)
def test_precision_and_quantization_errors_are_one_line_messages(
    tiny_run, digit_files, tmp_path, args, message
):
    artifact = exported_copy(tiny_run, tmp_path)
    filled = [str(a).format(a=artifact, i=digit_files["paths"][0]) for a in args]
    error = invoke(*filled, code=2)
    assert message in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
