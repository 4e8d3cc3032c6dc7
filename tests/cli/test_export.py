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
