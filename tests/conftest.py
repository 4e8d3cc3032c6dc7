"""Shared fixtures: a tiny trained MultiDigits artifact, and image folders written to disk."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

from mlic.data import multidigits


def fuzz(examples: int) -> settings:
    """Hypothesis settings of a fuzz test: ``examples`` fixed (derandomized) cases, as CI runs them.

    ``MLIC_FUZZ_EXAMPLES=20000`` runs that many random cases instead, to search for new failures.
    """
    n = os.environ.get("MLIC_FUZZ_EXAMPLES")
    return settings(
        max_examples=int(n) if n else examples,
        deadline=None,
        derandomize=not n,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


TINY = {
    "demo_train": 256,
    "demo_val": 64,
    "max_epochs": 1,
    "batch_size": 64,
    "image_size": 32,
    "progress": False,
}


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


def label_matrix(records: list[dict], labels: tuple[str, ...]) -> np.ndarray:
    """Decided labels of predict records as a 0/1 matrix."""
    return np.array([[name in r["labels"] for name in labels] for r in records], dtype=np.int8)


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture
def chromium():
    """Debian's headless Chromium driven by Playwright's Python package; skipped where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
