"""Tests of mlic.cli.common: an mlic error is one line on stderr and exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from mlic.cli import app

runner = CliRunner()


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
