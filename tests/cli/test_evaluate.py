"""Tests of mlic.cli.evaluate: calibrate reports before and after; evaluate writes a self-contained report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from helpers import invoke
from mlic.cli import app

runner = CliRunner()


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
    result = json.loads(invoke("calibrate", artifact, "--policy", "top-k", "--k", "2", "--balance", "0.25",
                               "--json"))  # fmt: skip
    assert result["decision"]["policy"] == "top-k" and result["decision"]["k"] == 2
    assert result["decision"]["balance"] == 0.25
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
    assert 'id="training"' in page and "img/training_curves.png" in sources  # from the artifact's history


def test_calibrate_probabilities_from_the_command_line(tiny_run, tmp_path):
    import shutil

    artifact = shutil.copytree(tiny_run / "artifact", tmp_path / "artifact")
    out = invoke("calibrate", artifact, "demo", "--probabilities", "--method", "platt")
    assert "probabilities platt" in out and "decisions unchanged" in out and "ece_macro" in out
    result = json.loads(invoke("calibrate", artifact, "--probabilities", "--method", "off", "--json"))
    assert result["method"] == "off" and result["calibration"] is None
    assert "unknown calibration method" in invoke(
        "calibrate", artifact, "--probabilities", "--method", "x", code=2
    )


def test_evaluate_card_adds_its_figures_to_the_model_card_once(tiny_run, tmp_path):
    import shutil

    artifact = shutil.copytree(tiny_run / "artifact", tmp_path / "artifact")
    out = invoke("evaluate", artifact, "demo", "--card")
    assert f"model card: {artifact / 'README.md'}" in out
    figures = json.loads(invoke("evaluate", artifact, "demo", "--card", "--json"))  # a rerun, JSON alone
    card = (artifact / "README.md").read_text()
    assert card.count("## Evaluation on demo") == 1
    assert f"| mAP | {figures['mAP']:.4f} |" in card and f"{figures['n_samples']} images of `demo`" in card
    invoke("calibrate", artifact, "demo", "--policy", "fixed")  # a new rule: the old figures are dropped
    card = (artifact / "README.md").read_text()
    assert "| policy | fixed |" in card and "## Evaluation on" not in card
