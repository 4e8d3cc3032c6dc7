"""End to end through the ``mlic`` command: train, evaluate, predict, on the demo and on files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from drawing import draw_free_digits
from helpers import TINY, label_matrix
from mlic.cli import app
from mlic.data.formats.demo import SCHEMA

runner = CliRunner()
TINY_ARGS = [
    "--demo-train", str(TINY["demo_train"]), "--demo-val", str(TINY["demo_val"]),
    "--max-epochs", "1", "--batch-size", "64", "--image-size", "32", "--no-progress",
]  # fmt: skip


def invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def artifact_of(stdout: str) -> Path:
    """The artifact path that ``mlic train`` prints on its last line."""
    return Path(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("source", ["tags.csv", "multihot.csv", "data.jsonl"])
def test_train_evaluate_predict_from_files(source, digit_files, tmp_path):
    root = digit_files["root"]
    artifact = artifact_of(invoke("train", "--data", root / source, "--out", tmp_path / "run", *TINY_ARGS))
    assert (artifact / "mlic.json").is_file() and artifact.parent == tmp_path / "run"
    meta = json.loads((artifact / "mlic.json").read_text())
    assert meta["schema"]["labels"] == list(SCHEMA.labels)
    assert bool(meta["schema"]["attributes"]) == (source != "tags.csv")

    figures = json.loads(invoke("evaluate", artifact, root / source, "--json"))
    assert figures["n_samples"] == 48 and 0.0 <= figures["mAP"] <= 1.0

    lines = invoke("predict", artifact, root / "images").strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 48
    assert {"path", "labels", "scores", "attributes"} <= set(records[0])
    thresholds = np.array([meta["thresholds"][n] for n in SCHEMA.labels])
    scores = np.array([[r["scores"][n] for n in SCHEMA.labels] for r in records])
    assert (label_matrix(records, SCHEMA.labels) == (scores >= thresholds)).all()


def test_predict_overrides_with_top_k_and_threshold(tiny_run, digit_files):
    files = digit_files["paths"][:5]
    top2 = [json.loads(line) for line in invoke("predict", tiny_run, *files, "--top-k", "2").splitlines()]
    assert all(len(r["labels"]) == 2 for r in top2)
    for r in top2:
        best = sorted(r["scores"], key=r["scores"].get, reverse=True)[:2]
        assert set(r["labels"]) == set(best)
    none = [
        json.loads(line) for line in invoke("predict", tiny_run, *files, "--threshold", "1.0").splitlines()
    ]
    assert all(r["labels"] == [n for n, s in r["scores"].items() if s >= 1.0] for r in none)
    record = top2[0]
    assert set(record["attributes"]) == {"count", "largest"}
    assert record["attributes"]["largest"]["class"] in ("small", "medium", "large")


def test_errors_are_one_line_messages_with_exit_code_2(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2
    assert "not an mlic artifact" in result.stderr
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none.csv"), "--no-progress"])
    assert result.exit_code == 2 and "none.csv" in result.stderr
    result = runner.invoke(
        app, ["train", "--backbone", "resnet_5O", "--no-progress", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "unknown backbone" in result.stderr
    small = ["--demo-train", "64", "--demo-val", "16", "--no-progress"]
    refused = [("--strategy", "bogus", "strategy='bogus'"), ("--num-nodes", "0", "num_nodes"),
               ("--precision", "bf17", "Precision 'bf17'")]  # fmt: skip
    for option, value, named in refused:
        result = runner.invoke(app, ["train", option, value, *small, "--out", str(tmp_path / option)])
        assert result.exit_code == 2 and result.stderr.startswith("error: Lightning refused"), option
        assert named in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_default_demo_training_meets_the_promised_figures(tmp_path):
    """`mlic train` with no data, then `mlic evaluate ARTIFACT demo --json` (the README's first command)."""
    artifact = artifact_of(invoke("train", "--out", tmp_path / "run", "--no-progress"))
    figures = json.loads(invoke("evaluate", artifact, "demo", "--json"))
    assert figures["mAP"] >= 0.99
    assert figures["micro_f1"] >= 0.97
    assert figures["attributes"]["count"]["accuracy"] >= 0.98
    assert figures["attributes"]["largest"]["accuracy"] >= 0.97

    paths, truth = draw_free_digits(tmp_path / "free", 300)
    records = [json.loads(line) for line in invoke("predict", artifact, tmp_path / "free").splitlines()]
    by_path = {r["path"]: r for r in records}
    scores = np.array([[by_path[str(p)]["scores"][n] for n in SCHEMA.labels] for p in paths])
    assert average_precision_score(truth, scores, average="macro") >= 0.95


def test_calibrate_command_reports_before_and_after(tiny_run, tmp_path):
    import shutil

    artifact = shutil.copytree(tiny_run / "artifact", tmp_path / "artifact")
    out = invoke("calibrate", artifact, "demo", "--policy", "global")
    assert "global chosen on demo" in out and "micro_f1" in out and "->" in out
    auto = json.loads(invoke("calibrate", artifact, "demo", "--policy", "auto", "--json"))
    assert auto["decision"]["policy"] in ("fixed", "global", "per-label")
    assert set(auto["decision"]["chosen_by"]["candidates"]) == {"fixed", "global", "per-label"}
    assert f"auto chose {auto['decision']['policy']} on demo" in invoke(
        "calibrate", artifact, "demo", "--policy", "auto"
    )
    result = json.loads(invoke("calibrate", artifact, "--policy", "top-k", "--k", "2", "--json"))
    assert result["decision"]["policy"] == "top-k" and result["decision"]["k"] == 2
    assert json.loads((Path(artifact) / "mlic.json").read_text())["decision"]["k"] == 2
    bad = runner.invoke(app, ["calibrate", str(artifact), "--policy", "top-k"])
    assert bad.exit_code == 2 and "top-k needs k" in bad.stderr


def test_evaluate_writes_a_report_that_references_only_its_own_files(tiny_run, tmp_path):
    out = invoke("evaluate", tiny_run, "demo", "--report", tmp_path / "report")
    assert f"report: {tmp_path / 'report' / 'index.html'}" in out
    page = (tmp_path / "report" / "index.html").read_text()
    assert "digit_9" in page and "largest" in page and "http" not in page
    import re

    sources = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert sources and all((tmp_path / "report" / s).is_file() for s in sources)


def test_loss_flags_train_and_show_in_evaluate(tmp_path):
    args = [*TINY_ARGS, "--demo-train", "128", "--demo-val", "32"]
    artifact = artifact_of(
        invoke("train", "--out", tmp_path / "run", "--loss", "asl", "--loss-option", "gamma_neg=2",
               "--pos-weight", "auto", "--label-smoothing", "0.1", "--hide-positives", "0.3",
               "--hidden-as", "negative", *args)
    )  # fmt: skip
    meta = json.loads((artifact / "mlic.json").read_text())["training"]["loss"]
    assert meta["name"] == "asl" and meta["gamma_neg"] == 2 and meta["pos_weight"] == "auto"
    shown = invoke("evaluate", artifact, "demo")
    assert "loss name=asl" in shown and "trained with 30% of its positives hidden as negative" in shown
    bad = runner.invoke(app, ["train", "--hidden-as", "zero", "--no-progress", "--out", str(tmp_path / "z")])
    assert bad.exit_code == 2 and "'unknown', 'negative'" in bad.stderr
    bad = runner.invoke(
        app, ["train", "--pos-weight", "heavy", "--no-progress", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "--pos-weight takes a number or 'auto'" in bad.stderr
    bad = runner.invoke(
        app, ["train", "--loss-option", "gamma", "--no-progress", "--out", str(tmp_path / "y")]
    )
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.stderr


def test_head_flags_train_a_csra_model_that_predicts(tmp_path, digit_files):
    args = [*TINY_ARGS, "--demo-train", "128", "--demo-val", "32"]
    artifact = artifact_of(
        invoke("train", "--out", tmp_path / "run", "--head", "csra", "--head-option", "temperatures=[1, 4]",
               "--head-option", "lam=0.2", *args)
    )  # fmt: skip
    model = json.loads((artifact / "mlic.json").read_text())["model"]
    assert model["head"] == "csra" and model["head_kwargs"] == {"temperatures": [1, 4], "lam": 0.2}
    records = [
        json.loads(line) for line in invoke("predict", artifact, *digit_files["paths"][:3]).splitlines()
    ]
    assert len(records) == 3 and set(records[0]["attributes"]) == {"count", "largest"}


def test_data_inspect_prints_figures_and_json(digit_files, tmp_path):
    source = digit_files["root"] / "data.jsonl"
    text = invoke("data", "inspect", source)
    assert "images       48" in text and "co-occurring pairs" in text and "missing      0" in text
    figures = json.loads(invoke("data", "inspect", source, "--json", "--full"))
    assert figures["images"] == 48 and figures["labels"] == 10 and figures["files"]["checked"] == "full"
    assert figures["files"]["missing"]["count"] == 0 and figures["files"]["formats"] == {"PNG": 48}
    assert json.loads(invoke("data", "inspect", "demo", "--json", "--no-check-images"))["files"] is None
    bad = runner.invoke(app, ["data", "inspect", str(tmp_path / "nothing.csv")])
    assert bad.exit_code == 2 and "no such file" in bad.stderr


def test_data_split_writes_stratified_jsonl_and_refuses_to_overwrite(digit_files, tmp_path):
    source, out = digit_files["root"] / "multihot.csv", tmp_path / "splits"
    text = invoke("data", "split", source, "--val", "0.25", "--test", "0.25", "--out", out, "--seed", "1")
    assert "label share vs split fraction" in text and str(out / "split.json") in text
    sizes = [len((out / f"{k}.jsonl").read_text().splitlines()) for k in ("train", "val", "test")]
    assert sum(sizes) == 48 and min(sizes) >= 10
    again = runner.invoke(app, ["data", "split", str(source), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    result = json.loads(invoke("data", "split", source, "--test", "0", "--out", out, "--overwrite", "--json"))
    assert set(result["files"]) == {"train", "val", "summary"} and not (out / "test.jsonl").exists()
    assert result["report"]["images"] == 48
    bad = runner.invoke(app, ["data", "split", str(source), "--val", ".6", "--test", ".5", "--out", str(out)])
    assert bad.exit_code == 2 and "no images for training" in bad.stderr


def test_bad_images_skip_lists_them_and_fail_stops_naming_the_file(digit_files, tmp_path):
    """A corrupt PNG among the training images: skipped and listed, or a one-line error with exit code 2."""
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(digit_files["root"] / "images", folder / "images")
    broken = folder / "images" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    rows = (digit_files["root"] / "tags.csv").read_text().splitlines()
    (folder / "tags.csv").write_text("\n".join([*rows, "images/broken.png,digit_1"]) + "\n")
    args = ["train", "--data", folder / "tags.csv", *TINY_ARGS]
    skipped = runner.invoke(app, [str(a) for a in (*args, "--out", tmp_path / "skip", "--workers", "2")])
    assert skipped.exit_code == 0
    warned = [line for line in skipped.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == [f"warning: 1 unreadable image(s) were skipped; they are listed in {tmp_path / 'skip'}"
                      f"{os.sep}bad_images.txt"]  # fmt: skip
    artifact = artifact_of(skipped.stdout)
    listed = (tmp_path / "skip" / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{broken}\tcannot decode image")
    assert json.loads((artifact / "mlic.json").read_text())["training"]["bad_images"] == 1

    fail_args = (*args, "--out", tmp_path / "fail", "--bad-images", "fail", "--cache-images")
    failed = runner.invoke(app, [str(a) for a in fail_args])
    assert failed.exit_code == 2
    assert failed.stderr.startswith(f"error: {broken}: cannot decode image")
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1

    records = [json.loads(line) for line in invoke("predict", artifact, folder / "images").splitlines()]
    assert len(records) == 49 and [r["path"] for r in records if "error" in r] == [str(broken)]
    refused = runner.invoke(app, ["predict", str(artifact), str(folder / "images"), "--bad-images", "fail"])
    assert refused.exit_code == 2 and "broken.png: cannot decode image" in refused.stderr
    evaluated = runner.invoke(app, ["evaluate", str(artifact), str(folder / "tags.csv"), "--workers", "2"])
    assert evaluated.exit_code == 2 and evaluated.stderr.startswith(f"error: {broken}: cannot decode image")


def test_serve_help_flags_and_bad_options(tiny_run, tmp_path, monkeypatch):
    """``mlic serve`` hands its flags to uvicorn as limits; bad options fail cleanly without serving."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda server_app, **kw: served.append((server_app, kw)))
    help_text = invoke("serve", "--help")
    for flag in ("--host", "--port", "--max-upload-mb", "--max-files", "--max-image-pixels", "--runtime"):
        assert flag in help_text
    limit_flags = ["--max-upload-mb", "1.5", "--max-files", "2", "--max-image-pixels", "0"]
    invoke("serve", tiny_run, "--port", "9001", *limit_flags)
    server_app, kw = served[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 9001
    limits = server_app.state.service.limits
    assert (limits.max_upload_bytes, limits.max_files, limits.max_image_pixels) == (1_572_864, 2, None)
    invoke("serve", tiny_run)
    assert served[-1][0].state.service.limits.max_image_pixels == 50_000_000
    for args, message in [
        ((tiny_run, "--port", "0"), "--port"),
        ((tiny_run, "--max-files", "0"), "--max-files"),
        ((tiny_run, "--port", "http"), "--port"),
        ((tiny_run, "--max-upload-mb", "0"), "error: max_upload_bytes must be a positive integer"),
        ((tiny_run, "--log-level", "loud"), "error: unknown log level 'loud'"),
        ((tmp_path / "missing",), "error: "),
    ]:
        result = runner.invoke(app, ["serve", *map(str, args)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.stderr
    assert len(served) == 2


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


def test_every_file_the_workflow_writes_goes_through_a_temporary_file(digit_files, tmp_path, monkeypatch):
    """Split, train (with mid-epoch checkpoints), calibrate, evaluate with a report and export: every file
    under the output folders is written to a temporary name and renamed, so a kill never leaves half a file.
    """
    import builtins
    import io

    real_open, real_os_open = builtins.open, os.open
    direct: list[str] = []

    def note(path, what) -> None:
        if not isinstance(path, str | bytes | os.PathLike):
            return  # a file descriptor
        path = Path(os.fsdecode(path))
        temporary = path.name.startswith(".") and path.name.endswith(".tmp")
        if path.is_relative_to(tmp_path) and not temporary:
            direct.append(f"{path.relative_to(tmp_path)} ({what})")

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            note(file, mode)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND):
            note(path, f"flags {flags:#o}")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    split, run = tmp_path / "split", tmp_path / "run"
    data = digit_files["root"] / "data.jsonl"
    invoke("data", "split", data, "--out", split, "--val", "0.25", "--test", "0.25")
    invoke("train", "--data", split / "train.jsonl", "--val", split / "val.jsonl", "--image-size", "32",
           "--batch-size", "8", "--max-epochs", "2", "--checkpoint-steps", "1", "--workers", "0",
           "--no-progress", "--out", run)  # fmt: skip
    invoke("calibrate", run, split / "val.jsonl", "--policy", "global")
    invoke("evaluate", run, split / "test.jsonl", "--report", tmp_path / "report")
    invoke("export", run)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"run/checkpoints/last.ckpt", "run/logs/metrics.csv", "run/artifact/model.onnx",
            "report/index.html", "split/split.json"} <= written  # fmt: skip
    assert direct == []
    assert not [name for name in written if name.endswith(".tmp")]
