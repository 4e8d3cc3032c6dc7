"""Tests of mlic.cli.serve: its flags reach uvicorn as limits; bad options fail without serving."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from helpers import invoke
from mlic.cli import app

runner = CliRunner()


def test_serve_help_flags_and_bad_options(tiny_run, tmp_path, monkeypatch):
    """``mlic serve`` hands its flags to uvicorn as limits; bad options fail cleanly without serving."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda server_app, **kw: served.append((server_app, kw)))
    help_text = invoke("serve", "--help")
    flags = ("--host", "--port", "--max-upload-mb", "--max-files", "--max-image-pixels", "--runtime")
    for flag in (*flags, "--max-batch", "--max-wait-ms", "--workers"):
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
        ((tiny_run, "--max-batch", "0"), "--max-batch"),
        ((tiny_run, "--max-wait-ms", "-1"), "--max-wait-ms"),
        ((tiny_run, "--workers", "0"), "--workers"),
        ((tiny_run, "--port", "http"), "--port"),
        ((tiny_run, "--max-upload-mb", "0"), "error: max_upload_bytes must be a positive integer"),
        ((tiny_run, "--log-level", "loud"), "error: unknown log level 'loud'"),
        ((tmp_path / "missing",), "error: "),
    ]:
        result = runner.invoke(app, ["serve", *map(str, args)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.stderr
    assert len(served) == 2


def test_batching_and_workers_flags_reach_serve(tiny_run, monkeypatch):
    """``--max-batch`` and ``--max-wait-ms`` reach the app (library defaults), ``--workers`` uvicorn."""
    import uvicorn

    from mlic.serve import Batching
    from mlic.serve.app import CONFIG_VARIABLE

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda server_app, **kw: served.append((server_app, kw)))
    invoke("serve", tiny_run, "--max-batch", "8", "--max-wait-ms", "2.5")
    service = served[-1][0].state.service
    assert service.batching == Batching(8, 2.5) and "workers" not in served[-1][1]
    assert service.predictor.batch_size >= 8  # a whole batch goes through the model in one pass
    invoke("serve", tiny_run)
    assert served[-1][0].state.service.batching == Batching()  # the CLI's defaults are the library's
    invoke("serve", tiny_run, "--max-batch", "1")
    assert served[-1][0].state.service.batcher is None  # off: one request at a time
    record = lambda target, **kw: served.append((target, kw, os.environ[CONFIG_VARIABLE]))  # noqa: E731
    monkeypatch.setattr(uvicorn, "run", record)
    invoke("serve", tiny_run, "--workers", "3", "--max-batch", "4", "--max-files", "2")
    target, kw, config = served[-1]
    assert target == "mlic.serve.app:app_from_environment" and (kw["workers"], kw["factory"]) == (3, True)
    config = json.loads(config)
    assert (config["artifact"], config["max_batch"], config["max_files"]) == (str(tiny_run), 4, 2)


def test_precision_flag_reaches_the_served_predictor(tiny_run, monkeypatch):
    import uvicorn

    from mlic.inference import precision

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda server_app, **kw: served.append(server_app))
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    invoke("serve", tiny_run, "--precision", "bf16")
    predictor = served[-1].state.service.predictor
    assert predictor.precision == "bf16" and predictor.runtime == "torch"
    error = invoke("serve", tiny_run, "--precision", "int8", code=2)
    assert "precision 'int8' is not offered by the torch runtime" in error and len(served) == 1
