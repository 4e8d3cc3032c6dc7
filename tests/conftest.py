"""Shared fixtures: a tiny trained MultiDigits run, image folders written to disk, Chromium.

Helpers that are not fixtures live in ``helpers.py`` (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers import TINY
from mlic.data import multidigits


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
