"""Tests of mlic.extras and of light imports: predicting needs neither Lightning nor FastAPI, and a missing
extra is an error that names it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from mlic.errors import MissingExtraError, MlicError
from mlic.extras import EXTRAS, require

HEAVY = ("lightning", "pytorch_lightning", "fastapi", "uvicorn", "onnxruntime", "onnx", "matplotlib",
         "mlflow", "tensorboard")  # fmt: skip


def python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (a clean ``sys.modules``); its last line of output."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_import_mlic_loads_nothing_heavy():
    loaded = json.loads(
        python(f"import json, sys, mlic; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    )
    assert loaded == []


def test_load_and_predict_import_neither_lightning_nor_fastapi(make_artifact):
    made = make_artifact()
    code = f"""
        import json, sys
        import numpy as np
        import mlic
        records = mlic.load({str(made.path)!r}).predict([np.zeros((40, 30, 3), np.uint8)])
        assert records[0]["labels"] is not None
        print(json.dumps([m for m in sys.modules if m.split(".")[0] in {HEAVY!r}]))
    """
    assert json.loads(python(code)) == []


@pytest.mark.parametrize(("blocked", "extra", "call"), [
    ("fastapi", "serve", "import mlic.serve"),
    ("onnxruntime", "onnx", "from mlic.export import export_onnx; export_onnx({path!r})"),
    ("onnxruntime", "onnx", "import mlic; mlic.load({path!r}, runtime='onnx')"),
    ("mlflow", "track", "from mlic.training import train; train(logger=['mlflow'], out={path!r} + '-run')"),
])  # fmt: skip
def test_a_missing_extra_is_an_error_that_names_it(make_artifact, blocked, extra, call):
    path = str(make_artifact().path)
    code = f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if it were not installed
        from mlic.errors import MissingExtraError
        try:
            {call.format(path=path)}
        except MissingExtraError as e:
            print(e)
    """
    assert python(code).endswith(
        f"needs the {extra!r} extra ({blocked} not installed): pip install 'mlic[{extra}]'"
    )


def test_mlic_serve_without_the_extra_is_one_line_naming_it(make_artifact):
    code = f"""
        import sys
        sys.modules["uvicorn"] = None
        from typer.testing import CliRunner
        from mlic.cli import app
        result = CliRunner().invoke(app, ["serve", {str(make_artifact().path)!r}])
        print(result.exit_code, result.output.count("\\n"), result.output.strip())
    """
    extra = "'serve' extra (uvicorn not installed): pip install 'mlic[serve]'"
    assert python(code) == f"2 1 error: mlic serve needs the {extra}"


def test_require_checks_without_importing():
    require("serve", "this test")  # installed with the test extra
    assert set(EXTRAS) == {"serve", "onnx", "stream", "track"}
    assert issubclass(MissingExtraError, MlicError | ImportError)
