"""Shared fixtures: small artifacts made on demand, a tiny trained MultiDigits run, image folders, Chromium.

Helpers that are not fixtures live in ``helpers.py`` (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import EXPORT_HEADS, EXPORT_PRE, EXPORT_SCHEMA, EXPORT_THRESHOLDS, TINY, perturb_batchnorm
from mlic.artifact import Artifact, save_artifact
from mlic.data import multidigits
from mlic.data.images import Preprocessing
from mlic.models import Classifier, ModelConfig, build_classifier
from mlic.schema import Attribute, LabelSchema
from mlic.thresholds import Decision


def pytest_configure(config) -> None:
    """litdata keeps the chunks it fetches from S3 in a folder of this session, not under ~/.lightning."""
    os.environ.setdefault("LITDATA_CACHE_DIR", tempfile.mkdtemp(prefix="mlic-test-litdata-"))


def pytest_unconfigure(config) -> None:
    folder = os.environ.get("LITDATA_CACHE_DIR", "")
    if os.path.basename(folder).startswith("mlic-test-litdata-"):
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> str:
    """An S3-compatible server (moto's) on 127.0.0.1, for this session; boto3 and litdata are pointed at it.

    The endpoint and made-up credentials are set in the environment, so that
    the ``mlic`` processes a test starts reach the same server. Its URL is returned.
    """
    pytest.importorskip("moto", reason="the S3 tests need moto[server] (pip install -e '.[test]')")
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in failure reports
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket on the session's S3 server, as ``s3://NAME``."""
    import boto3

    name = f"mlic-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


SMALL_SCHEMA = LabelSchema(("cat", "dog", "bird"), (Attribute("size", ("s", "m", "l")),))
"""The default schema of ``make_artifact``: three labels and one attribute."""


@dataclass
class Made:
    """What ``make_artifact`` made: the folder, the saved artifact, and the model that was saved."""

    path: Path
    artifact: Artifact
    model: Classifier


@pytest.fixture(scope="session")
def make_artifact(tmp_path_factory) -> Callable[..., Made]:
    """The one factory of small untrained artifacts for every test that needs one.

    ``make_artifact(schema=SMALL_SCHEMA, *, head="linear", head_options=None, backbone="mlic_cnn",
    drop_rate=0, preprocessing=32 x 32 without flips, decision=0.5 for every label (a ``Decision``
    or per-label thresholds), seed=0, tweak=None (a function that changes the model before it is
    saved, e.g. ``helpers.perturb_batchnorm``), training=None, path=None (a new temporary folder))``
    -> ``Made``.
    """

    def make(
        schema: LabelSchema = SMALL_SCHEMA,
        *,
        head: str = "linear",
        head_options: dict | None = None,
        backbone: str = "mlic_cnn",
        drop_rate: float = 0.0,
        preprocessing: Preprocessing | None = None,
        decision: Decision | np.ndarray | None = None,
        seed: int = 0,
        tweak: Callable[[Classifier], None] | None = None,
        training: dict | None = None,
        path: Path | None = None,
    ) -> Made:
        pre = preprocessing or Preprocessing(image_size=(32, 32), hflip=False)
        torch.manual_seed(seed)
        options = dict(head_options or {})
        config = ModelConfig(backbone=backbone, head=head, head_kwargs=options, drop_rate=drop_rate)
        model = build_classifier(schema, config, mean=pre.mean, std=pre.std)
        if tweak is not None:
            with torch.no_grad():
                tweak(model)
        model = model.eval()
        rule = np.full(schema.n_labels, 0.5) if decision is None else decision
        path = path or tmp_path_factory.mktemp("artifact") / "artifact"
        return Made(path, save_artifact(path, model, pre, rule, training=training), model)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory from one short epoch on a small MultiDigits (trained once per session)."""
    from mlic.training import train

    run = tmp_path_factory.mktemp("tiny") / "run"
    train(out=str(run), **TINY)
    return run


@pytest.fixture(scope="session")
def digit_files(tmp_path_factory) -> dict:
    """MultiDigits test canvases as PNG files, with a tags CSV, a multi-hot CSV and a JSONL beside them."""
    root = tmp_path_factory.mktemp("digits")
    m = multidigits("test", 48, seed=1)
    (root / "images").mkdir()
    names = []
    for i, pixels in enumerate(m.pixels):
        name = f"images/{i:03d}.png"
        Image.fromarray(pixels).save(root / name)
        names.append(name)
    schema = m.schema
    rows = [schema.decode(m.labels[i], m.attributes[i]) for i in range(len(m))]
    with open(root / "tags.csv", "w") as f:
        f.write("image,tags\n")
        for name, row in zip(names, rows):
            f.write(f"{name},{' '.join(row['labels'])}\n")
    with open(root / "multihot.csv", "w") as f:
        f.write(",".join(["path", *schema.labels, *schema.attribute_names]) + "\n")
        for i, name in enumerate(names):
            attrs = [rows[i]["attributes"][a] for a in schema.attribute_names]
            f.write(",".join([name, *map(str, m.labels[i]), *attrs]) + "\n")
    with open(root / "data.jsonl", "w") as f:
        for name, row in zip(names, rows):
            f.write(
                json.dumps({"path": name, "labels": row["labels"], "attributes": row["attributes"]}) + "\n"
            )
    return {"root": root, "manifest": m, "paths": [root / n for n in names]}


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture
def chromium():
    """Debian's headless Chromium driven by Playwright's Python package.

    Skipped where either is missing, except in CI (``CI`` set), where the
    browser tests guard the report and the served page and must run.
    """
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    try:
        from playwright import sync_api
    except ImportError:
        missing("the browser tests need playwright (pip install -e '.[test]')")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def exported(make_artifact, tmp_path_factory) -> dict[str, Path]:
    """One random-weight artifact per head (BatchNorm statistics moved, so buffers travel), exported to ONNX
    once per session."""
    from mlic.export import export_onnx

    root = tmp_path_factory.mktemp("export")
    folders = {head: unexported_artifact(make_artifact, root / head, head) for head in EXPORT_HEADS}
    for folder in folders.values():
        export_onnx(folder)
    return folders


@pytest.fixture
def unexported(make_artifact, tmp_path) -> Path:
    """An artifact like those of ``exported``, not exported yet, for tests that change it."""
    return unexported_artifact(make_artifact, tmp_path / "artifact")


def unexported_artifact(make_artifact, path: Path, head: str = "linear") -> Path:
    made = make_artifact(EXPORT_SCHEMA, head=head, preprocessing=EXPORT_PRE, decision=EXPORT_THRESHOLDS,
                         tweak=perturb_batchnorm, path=path)  # fmt: skip
    return made.path


@pytest.fixture
def fake_train(monkeypatch, make_artifact):
    """``mlic.training.run.train`` replaced by a stand-in that writes an untrained MultiDigits artifact
    (another seed per call); returns the list of the options of every call."""
    import mlic.training.run as run_module

    calls = []

    def train(resume=None, **options):
        out = Path(resume or options["out"])
        calls.append(options)
        (out / "config.json").write_text("{}")
        schema = multidigits("test", 1).schema
        return make_artifact(schema, path=out / "artifact", seed=len(calls)).path

    monkeypatch.setattr(run_module, "train", train)
    return calls
