"""Import time of ``mlic.load``, and what it drags in, for this checkout and, with ``--before``, another.

    python benchmarks/import_time.py                      # this checkout
    python benchmarks/import_time.py --before af758f7     # and the commit before "one shape for the code"

Each figure is the median of ``--repeats`` fresh interpreters (no module
cached in memory; the OS file cache is warm after the first), timed from
start to the end of the statement:

- ``import mlic``: the package alone;
- ``mlic.load``: ``import mlic`` and the attribute ``mlic.load`` (what a
  script that predicts needs before it loads an artifact);
- ``mlic.load(artifact)``: that, and loading a small artifact (the network built,
  weights read and checked).

It also lists which heavy packages each statement imported (Lightning,
FastAPI, ONNX Runtime, timm, torch). ``--before REV`` extracts that revision's
``src/`` with ``git archive`` into a temporary folder and measures it the same
way, in the same run. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("lightning", "fastapi", "onnxruntime", "timm", "torch", "torchvision", "matplotlib", "uvicorn")
STATEMENTS = {
    "import mlic": "import mlic",
    "mlic.load": "import mlic; mlic.load",
    "mlic.load(artifact)": "import mlic; mlic.load({artifact!r})",
}
PROBE = """
import sys, time
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
import json
print(json.dumps({{"seconds": seconds, "loaded": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def measure(src: Path, statement: str, repeats: int) -> dict:
    """Median seconds of ``statement`` in fresh interpreters with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    runs = []
    for _ in range(repeats):
        code = PROBE.format(statement=statement, heavy=HEAVY)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{statement} failed under {src}:\n{out.stderr[-2000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "runs": [round(r["seconds"], 3) for r in runs],
        "loaded": runs[-1]["loaded"],
    }


def make_artifact(src: Path, folder: Path) -> Path:
    """A small untrained artifact (64 px ``mlic_cnn``), written by the checkout under test."""
    code = (
        "import numpy as np\n"
        "from mlic.artifact import save_artifact\n"
        "from mlic.data.images import Preprocessing\n"
        "from mlic.models import build_classifier\n"
        "from mlic.schema import LabelSchema\n"
        "schema = LabelSchema(tuple(f'digit_{d}' for d in range(10)))\n"
        f"save_artifact({str(folder)!r}, build_classifier(schema).eval(), Preprocessing(image_size=(64, 64)),"
        " np.full(10, 0.5))\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)}, check=True)
    return folder


def checkout(rev: str, into: Path) -> Path:
    """``src/`` of revision ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def figures(src: Path, repeats: int, scratch: Path) -> dict:
    artifact = make_artifact(src, scratch / "artifact")
    return {
        name: measure(src, statement.format(artifact=str(artifact)), repeats)
        for name, statement in STATEMENTS.items()
    }


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--before", help="a git revision to measure as well (e.g. af758f7)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "after").mkdir()
        result = {"after": figures(ROOT / "src", args.repeats, tmp / "after")}
        if args.before:
            (tmp / "before").mkdir()
            src = checkout(args.before, tmp / "before")
            before = {"revision": args.before, **figures(src, args.repeats, tmp / "before")}
            result = {"before": before, **result}
    result["load_average"] = os.getloadavg()
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
