"""Helpers shared by the tests: fuzz settings, a byte mutator, reader checks, small training options."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import socket
import sys
import threading
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from mlic.data.formats.demo import multidigits
from mlic.data.images import Preprocessing
from mlic.errors import DataError, MlicError
from mlic.metrics import blocks
from mlic.schema import Attribute, LabelSchema

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mlic.models import Classifier
    from mlic.predict import Predictor


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


def label_matrix(records: list[dict], labels: tuple[str, ...]) -> np.ndarray:
    """Decided labels of predict records as a 0/1 matrix."""
    return np.array([[name in r["labels"] for name in labels] for r in records], dtype=np.int8)


# -- data files for the readers' tests ----------------------------------------------------------
def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


def jsonl(path: Path, *records: object) -> Path:
    return write(path, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


def image(path: Path, seed: int = 0) -> Path:
    """A small random RGB image (PNG or JPEG by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


def coco_data(n_images: int = 3) -> dict:
    """Categories out of id order (one never used); image 3 has no annotation; a crowd and a repeat."""
    return {
        "info": {"description": "tiny"},
        "images": [
            {"id": 10 + i, "file_name": f"{i}.jpg", "width": 16, "height": 16} for i in range(n_images)
        ],
        "categories": [
            {"id": 3, "name": "dog", "supercategory": "animal"},
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 7, "name": "zebra", "supercategory": "animal"},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 1, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 3, "iscrowd": 1},
            {"id": 4, "image_id": 11, "category_id": 3, "iscrowd": 0},
        ],
    }


def coco(path: Path, data: dict | None = None, images: Path | None = None) -> Path:
    """Write a COCO JSON at ``path`` and its images into ``images`` (default: beside it)."""
    data = data or coco_data()
    for i, entry in enumerate(data["images"]):
        image(Path(images or path.parent) / entry["file_name"], seed=i)
    return write(path, json.dumps(data))


def voc_xml(objects: list[tuple[str, int | None]], filename: str | None = None) -> str:
    """An annotation file: objects as (class name, difficult flag or None for no element)."""
    parts = ["<annotation><folder>VOC2012</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    for name, difficult in objects:
        flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        parts.append(f"<object><name>{name}</name>{flag}<part><name>hand</name></part></object>")
    return "".join([*parts, "</annotation>"])


def voc(root: Path) -> Path:
    """A VOC root: a has dog and a difficult dog and person; b a cat (PNG); c no <filename>."""
    write(root / "Annotations" / "a.xml", voc_xml([("dog", 0), ("dog", 1), ("person", 1)], "a.jpg"))
    write(root / "Annotations" / "b.xml", voc_xml([(" cat ", None)], "b.png"))
    write(root / "Annotations" / "c.xml", voc_xml([]))
    write(root / "ImageSets" / "Main" / "train.txt", "b\n\nc\nb\n")
    write(root / "ImageSets" / "Main" / "dog_train.txt", "a  1\nc -1\n")
    for name in ("a.jpg", "b.png", "c.jpg"):
        image(root / "JPEGImages" / name)
    return root


def folders(root: Path) -> Path:
    """cat/a + dog/a (one image), dog/b, loose c, bird/sub/d (nested), and things to ignore."""
    for i, rel in enumerate(["cat/a.png", "dog/a.png", "dog/b.jpg", "c.png", "bird/sub/d.JPG", "e.webp"]):
        image(root / rel, seed=i)
    image(root / ".cache" / "x.png")
    image(root / "__MACOSX" / "cat" / "a.png")
    image(root / "cat" / ".hidden.png")
    write(root / "cat" / "notes.txt", "not an image")
    write(root / "readme.md", "hello")
    (root / "empty").mkdir()
    return root


# -- metric cases ----------------------------------------------------------------------------------
TIES = [-1.0, -0.0, 0.0, 0.1, 0.5, 0.9, 1.0]  # few distinct values: ties everywhere, signed zeros


@contextlib.contextmanager
def block_elements(n: int):
    """Blocks of about ``n`` entries (several blocks even on tiny arrays)."""
    old = blocks.BLOCK_ELEMENTS
    blocks.BLOCK_ELEMENTS = n
    try:
        yield
    finally:
        blocks.BLOCK_ELEMENTS = old


def targets_and_scores(max_n=10, max_labels=5, min_labels=1, unknowns=True):
    """y_true (with unknowns when asked; dense or sparse) and scores (tied or continuous, float32/64)."""
    values = [-1, 0, 1] if unknowns else [0, 1]
    tied = st.sampled_from(TIES)
    continuous = st.floats(-3, 3, allow_nan=False, width=32)
    return st.tuples(st.integers(1, max_n), st.integers(min_labels, max_labels)).flatmap(
        lambda shape: st.tuples(
            hnp.arrays(np.int8, shape, elements=st.sampled_from(values)),
            st.one_of(
                hnp.arrays(np.float64, shape, elements=tied),
                hnp.arrays(np.float64, shape, elements=continuous),
                hnp.arrays(np.float32, shape, elements=tied),
                hnp.arrays(np.float32, shape, elements=continuous),
            ),
            st.sampled_from([1, 3, 1 << 22]),
        )
    )


# -- serving ---------------------------------------------------------------------------------------
MAX_FILES = 4


MAX_BYTES = 200_000


def upload(*paths: Path) -> list[tuple]:
    """``files=`` of an httpx request: each path as a part named ``files``."""
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def expected(predictor: Predictor, paths: list[Path], **kw) -> list[dict]:
    """What ``Predictor.predict`` says of the files, with the file names as paths (as the API answers)."""
    return [dict(r, path=p.name) for r, p in zip(predictor.predict(paths, **kw), paths)]


def assert_records_match(got: list[dict], want: list[dict], tol: float = 1e-6) -> None:
    """The same records up to float rounding: a batch of another size may move a probability by ~1e-7.

    Paths, keys, decided labels and attribute classes exactly; scores and probabilities within ``tol``.
    """
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w) and g["path"] == w["path"] and g["labels"] == w["labels"]
        assert g["scores"] == pytest.approx(w["scores"], abs=tol)
        assert {a: c["class"] for a, c in g["attributes"].items()} == {
            a: c["class"] for a, c in w["attributes"].items()
        }
        for a, c in g["attributes"].items():
            assert c["probability"] == pytest.approx(w["attributes"][a]["probability"], abs=tol)


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread of this process: its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def assert_alive(client: TestClient, digit_files: dict) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    answer = client.post("/predict", files=upload(digit_files["paths"][0]))
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1


# -- models ----------------------------------------------------------------------------------------
def perturb_batchnorm(model: Classifier) -> None:
    """Non-default BatchNorm statistics, so that buffers must travel with the weights."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


# -- the command line ------------------------------------------------------------------------------
def invoke(*args: object, code: int = 0) -> str:
    """``mlic ARGS`` through typer's CliRunner; asserts the exit code; its stdout (stderr when it fails)."""
    from typer.testing import CliRunner

    from mlic.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.stdout if code == 0 else result.stderr


# -- ONNX exports (the session's ``exported`` and ``unexported`` fixtures) -----------------------------
EXPORT_SCHEMA = LabelSchema(
    ("cat", "dog", "bird", "fish"),
    (Attribute("size", ("s", "m", "l")), Attribute("indoor", ("no", "yes"))),
)
EXPORT_PRE = Preprocessing(image_size=(32, 40), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), hflip=False)
EXPORT_THRESHOLDS = np.array([0.3, 0.5, 0.5, 0.7])
EXPORT_HEADS = ("linear", "csra", "ml-decoder")


# -- training data on disk ----------------------------------------------------------------------
def write_png_split(root: Path, split: str, n: int) -> Path:
    """``n`` MultiDigits canvases of ``split`` as PNG files, listed in ``root/<split>.csv``."""
    m = multidigits(split, n, seed=0)
    (root / split).mkdir()
    lines = ["path,tags"]
    for i, pixels in enumerate(m.pixels):
        Image.fromarray(pixels).save(root / split / f"{i}.png")
        lines.append(f"{split}/{i}.png,{' '.join(m.schema.decode(m.labels[i], m.attributes[i])['labels'])}")
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root / f"{split}.csv"


# -- benchmark scripts (tests/benchmarks) --------------------------------------------------------------
@contextlib.contextmanager
def benchmark_script(name: str) -> Iterator[types.ModuleType]:
    """``benchmarks/NAME.py`` imported as the module ``NAME`` while in use (dataclasses look it up there)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
