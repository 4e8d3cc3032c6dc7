"""Tests of mlic.cli.data: mlic data inspect, mlic data split and mlic data pack."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from helpers import invoke
from mlic.cli import app

runner = CliRunner()


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


def test_data_pack_writes_shards_that_the_other_commands_read(digit_files, tmp_path):
    out = tmp_path / "shards"
    text = invoke("data", "pack", digit_files["root"] / "tags.csv", "--out", out, "--val-fraction", "0.25")
    assert text.startswith("packed ") and "train " in text and "val " in text
    figures = json.loads(invoke("data", "inspect", out / "val", "--json"))
    assert 0 < figures["images"] < 48 and figures["format"] == "mlic-shards" and figures["files"] is None
    again = runner.invoke(app, ["data", "pack", str(digit_files["root"] / "tags.csv"), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    info = json.loads(invoke("data", "pack", "demo", "--out", tmp_path / "d", "--demo-train", "8",
                             "--demo-val", "4", "--max-side", "32", "--json"))  # fmt: skip
    assert info["max_side"] == 32 and info["splits"]["val"]["images"] == 4
