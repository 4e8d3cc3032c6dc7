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
from helpers import TINY, invoke, label_matrix
from mlic.cli import app
from mlic.data.formats.demo import SCHEMA

runner = CliRunner()


TINY_ARGS = [
    "--demo-train", str(TINY["demo_train"]), "--demo-val", str(TINY["demo_val"]),
    "--max-epochs", "1", "--batch-size", "64", "--image-size", "32", "--no-progress",
]  # fmt: skip


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
