"""Shared fixtures: a tiny trained MultiDigits artifact, and image folders written to disk."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from mlic.data import multidigits
from mlic.errors import MlicError


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


def check_manifest(m) -> None:
    """The invariants of every manifest a reader returns."""
    n = len(m)
    assert n > 0 and m.label_lists.shape == (n, m.schema.n_labels)
    assert m.attributes.shape == (n, m.schema.n_attributes)
    assert all(isinstance(p, str) and os.path.isabs(p) and "\x00" not in p for p in m.paths)
    assert set(np.unique(m.labels).tolist()) <= {-1, 0, 1}


def read_or_error(call, path: Path) -> object:
    """``call()``'s manifest, checked; None when it raised an MlicError naming ``path``; else fail."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = call()
    except MlicError as e:
        assert str(path) in str(e), f"the error does not name {path}: {e}"
        return None
    check_manifest(m)
    return m


@st.composite
def mutated(draw, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    """A seed file after a few edits: truncation, deletion, insertion (of ``tokens`` or bytes), flips,
    swapped or repeated lines."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "delete", "insert", "flip", "swap", "repeat"]))
        i = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[i:]
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from(tokens) | st.binary(min_size=1, max_size=8))
        elif op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op in ("swap", "repeat"):
            lines = bytes(data).split(b"\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "swap":
                lines[a], lines[b] = lines[b], lines[a]
            else:
                lines.insert(b, lines[a])
            data = bytearray(b"\n".join(lines))
    return bytes(data)


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
