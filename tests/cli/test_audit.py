"""Tests of ``mlic audit``: the default command, training options passed through, review and apply."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlic.cli import app
from mlic.cli.audit import AUDIT_OWNED

runner = CliRunner()


def test_the_options_the_audit_owns_agree_with_the_library():
    from mlic.auditing.folds import AUDIT_OWNED as LIBRARY

    assert AUDIT_OWNED == LIBRARY


def test_audit_data_runs_with_training_options_then_apply(tmp_path, digit_files, fake_train):
    out = tmp_path / "audit"
    data = str(digit_files["root"] / "data.jsonl")
    result = runner.invoke(app, ["audit", data, "--out", str(out), "--folds", "2", "--max-epochs", "1",
                                 "--loss", "hill", "--min-confidence", "0.05", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["folds"] == 2 and summary["options"] == {"max_epochs": 1, "loss": "hill"}
    assert [c["loss"] for c in fake_train] == ["hill", "hill"]
    records = [json.loads(line) for line in (out / "suggestions.jsonl").read_text().splitlines()]
    assert records, "an untrained model at confidence 0.05 suggests something"
    (out / "decisions.json").write_text(json.dumps({"decisions": [{"rank": 1, "decision": "accept"}]}))
    fixed = tmp_path / "fixed.jsonl"
    result = runner.invoke(app, ["audit", "apply", str(out), str(fixed)])
    assert result.exit_code == 0, result.output
    assert "1 labels added" in result.output or "1 removed" in result.output
    result = runner.invoke(app, ["audit", "apply", str(out), str(fixed)])
    assert result.exit_code == 2 and "exists already" in result.output


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    result = runner.invoke(app, ["audit", str(tmp_path / "none.csv"), "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["audit", "apply", str(tmp_path), str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "not an audit folder" in result.output
    result = runner.invoke(app, ["audit", "demo", "--out", str(tmp_path / "b"), "--max-epoch", "1"])
    assert result.exit_code == 2 and "--max-epochs" in result.output
