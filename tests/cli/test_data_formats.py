"""Tests of the command line on COCO and folder data: train, evaluate, --format."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from helpers import coco, coco_data, image
from mlic.cli import app

runner = CliRunner()


TRAIN_ARGS = [
    "--max-epochs", "1", "--batch-size", "8", "--image-size", "32", "--workers", "0", "--no-progress",
]  # fmt: skip


# -- COCO -------------------------------------------------------------------------
# -- the command line ---------------------------------------------------------------------
def invoke(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def test_cli_trains_on_folders(tmp_path):
    root = tmp_path / "data"
    for i in range(10):
        image(root / ("cat" if i % 2 else "dog") / f"{i}.png", seed=i)
    image(root / "cat" / "0.png", seed=0)  # 0.png: cat and dog
    out = invoke("train", "--data", root, "--out", tmp_path / "run", *TRAIN_ARGS)
    meta = json.loads((Path(out.strip().splitlines()[-1]) / "mlic.json").read_text())
    assert meta["schema"]["labels"] == ["cat", "dog"]


def test_cli_trains_and_evaluates_on_coco_and_format_forces(tmp_path):
    data = coco_data(12)
    data["annotations"] += [
        {"id": 10 + i, "image_id": 10 + i, "category_id": 1 + 2 * (i % 2)} for i in range(2, 10)
    ]
    f = coco(tmp_path / "annotations" / "instances_train.json", data, images=tmp_path / "train")
    args = ["--drop-unannotated", "--out", tmp_path / "run", *TRAIN_ARGS]
    artifact = Path(invoke("train", "--data", f, *args).strip().splitlines()[-1])
    meta = json.loads((artifact / "mlic.json").read_text())
    assert meta["schema"]["labels"] == ["cat", "dog", "zebra"]
    figures = json.loads(invoke("evaluate", artifact, f, "--drop-unannotated", "--json", "--workers", "0"))
    assert figures["n_samples"] == 10
    assert json.loads(invoke("evaluate", artifact, f, "--json"))["n_samples"] == 12
    bad = runner.invoke(app, ["evaluate", str(artifact), str(tmp_path / "train"), "--format", "voc"])
    assert bad.exit_code == 2 and "not a VOC root" in bad.stderr
