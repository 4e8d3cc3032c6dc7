"""Throughput and latency of ``mlic serve``, batching off and on, at several loads; print one JSON object.

    python benchmarks/serve.py                              # trains a small demo artifact first
    python benchmarks/serve.py --random resnet18@224        # a 224 px resnet18 with random weights
    python benchmarks/serve.py --artifact runs/demo/artifact --concurrency 1 8 32 --requests 400

Two ``mlic serve`` processes (uvicorn, ``--workers`` each) run on free
loopback ports with the same settings but one: ``off`` has ``--max-batch 1``
(each request decoded and predicted on its own, one at a time), ``on`` has
``--max-batch``/``--max-wait-ms``. This process waits for ``GET /health``,
then for each ``--concurrency`` level sends ``--warmup`` untimed requests to
each, then ``--requests`` timed ``POST /predict`` requests to each in
``--rounds`` alternating runs (off, on, off, on, ...: a burst of load on a
shared machine falls on both alike), ``concurrency`` at a time: threads sharing
one httpx client and its keep-alive connections (kept across the rounds), each
request one MultiDigits PNG (64 x 64, cycled over ``--distinct`` test
canvases; the server resizes it to the model's input).

Figures per level and mode, over its rounds together: requests/s (requests
over the rounds' wall seconds), p50 / p99 / max latency in ms (request sent to
answer read), and ``errors``: answers that are not a 200 with one prediction,
or failed connections. ``ratio_rps`` is on's requests/s over off's. Every
error count must be 0 (the exit code is 1 otherwise). Without ``--artifact``
or ``--random`` a demo model (``mlic_cnn``, 64 px input) is trained for one
short epoch, since accuracy does not change its speed; ``--random
BACKBONE@SIDE`` saves an artifact of that timm backbone with random weights
(speed does not depend on them). Client and servers share the machine's cores,
so the load average is reported before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from mlic.data import multidigits
from mlic.serve import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS

MODES = ("off", "on")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_artifact(folder: Path) -> Path:
    """A MultiDigits artifact from one short epoch (the demo's model and input size)."""
    from mlic.training import train

    return Path(train(out=str(folder / "run"), demo_train=512, demo_val=128, max_epochs=1, progress=False))


def random_artifact(folder: Path, spec: str) -> Path:
    """An artifact of ``BACKBONE@SIDE`` (e.g. ``resnet18@224``) with random weights, MultiDigits' labels."""
    import torch

    from mlic.artifact import save_artifact
    from mlic.data.formats.demo import SCHEMA
    from mlic.data.images import Preprocessing
    from mlic.models import ModelConfig, build_classifier

    backbone, _, side = spec.partition("@")
    torch.manual_seed(0)
    model = build_classifier(SCHEMA, ModelConfig(backbone=backbone)).eval()
    size = int(side or 224)
    save_artifact(
        folder / "artifact", model, Preprocessing(image_size=(size, size), hflip=False), np.full(10, 0.5)
    )
    return folder / "artifact"


def pngs(n: int) -> list[bytes]:
    """``n`` MultiDigits test canvases as PNG files in memory."""
    out = []
    for pixels in multidigits("test", n, seed=0).pixels:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def prepare(artifact: Path, runtime: str, precision: str, random_weights: bool) -> None:
    """Export (and quantize) the artifact when the runtime and precision need files it lacks.

    Random weights are quantized for speed whatever their parity (which says nothing of a
    trained model); a trained artifact is held to ``mlic export``'s limits.
    """
    from mlic.artifact import load_artifact
    from mlic.export import export_onnx
    from mlic.quantize import Limits, quantize_onnx

    loaded = load_artifact(artifact)  # an artifact or its run directory
    artifact, exports = loaded.path, loaded.exports
    if runtime == "onnx" and "onnx" not in exports:
        export_onnx(artifact)
    if precision == "int8" and "onnx_int8" not in exports:
        speed_only = Limits(min_decision_agreement=0.0, max_map_difference=float("inf"))
        quantize_onnx(artifact, "demo", demo_samples=512, limits=speed_only if random_weights else None)


def start_server(artifact: Path, port: int, options: list[str]) -> subprocess.Popen:
    """``mlic serve`` with ``options`` in a subprocess (``wait_healthy`` says when it answers)."""
    command = [sys.executable, "-m", "mlic", "serve", str(artifact), "--port", str(port), *options]
    return subprocess.Popen([*command, "--log-level", "warning"])


def wait_healthy(server: subprocess.Popen, url: str, timeout: float = 180) -> None:
    """Return once ``GET /health`` answers; exit if the server died or never answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlic serve exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"mlic serve did not answer /health within {timeout:.0f} s")


class Clients:
    """``concurrency`` client threads of one server, sharing one httpx client and its keep-alive connections.

    Made once per level and mode and kept across its rounds, so that no round pays for new connections.
    """

    def __init__(self, url: str, images: list[bytes], concurrency: int) -> None:
        self.url, self.images = url, images
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.Client(limits=limits, timeout=60)
        self.pool = ThreadPoolExecutor(concurrency)

    def one(self, i: int) -> tuple[float, bool]:
        """One upload: its latency (s), and whether it was answered 200 with one prediction."""
        files = [("files", (f"{i}.png", self.images[i % len(self.images)], "image/png"))]
        start = time.perf_counter()
        try:
            answer = self.client.post(f"{self.url}/predict", files=files)
            ok = answer.status_code == 200 and len(answer.json()["predictions"]) == 1
        except (httpx.HTTPError, ValueError, KeyError):
            ok = False
        return time.perf_counter() - start, ok

    def load(self, requests: int) -> tuple[list[float], int, float]:
        """Send ``requests`` uploads, ``concurrency`` at a time: latencies (s), errors, wall seconds."""
        start = time.perf_counter()
        results = list(self.pool.map(self.one, range(requests)))
        wall = time.perf_counter() - start
        return [r[0] for r in results], sum(not r[1] for r in results), wall

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


def figures(latencies: list[float], errors: int, wall: float) -> dict:
    """Requests/s, latency percentiles in ms and errors of one timed run."""
    ms = np.array(latencies) * 1000
    return {
        "throughput_rps": round(len(latencies) / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1),
        },
        "errors": errors,
    }


def measure(
    urls: dict, images: list[bytes], concurrency: int, requests: int, rounds: int, warmup: int
) -> dict:
    """Both modes' figures at one level: ``rounds`` alternating runs of each, taken together.

    Each mode's latencies and wall seconds are pooled over its rounds, so a burst of load from
    elsewhere falls on both modes alike rather than on whichever ran at that moment.
    """
    runs = {mode: ([], 0, 0.0) for mode in MODES}
    clients = {mode: Clients(urls[mode], images, concurrency) for mode in MODES}
    try:
        for mode in MODES:
            clients[mode].load(warmup)  # opens the connections
        for r in range(rounds):
            for mode in MODES:
                latencies, errors, wall = clients[mode].load(requests // rounds + (r < requests % rounds))
                pooled = runs[mode]
                runs[mode] = (pooled[0] + latencies, pooled[1] + errors, pooled[2] + wall)
    finally:
        for client in clients.values():
            client.close()
    level = {mode: figures(*runs[mode]) for mode in MODES}
    level["ratio_rps"] = round(level["on"]["throughput_rps"] / level["off"]["throughput_rps"], 2)
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--artifact", type=Path, help="Artifact to serve (default: train a demo one).")
    model.add_argument("--random", metavar="BACKBONE@SIDE", help="Random weights, e.g. resnet18@224.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="Timed requests per level and mode.")
    parser.add_argument("--rounds", type=int, default=4, help="Alternating runs per level and mode.")
    parser.add_argument("--warmup", type=int, default=32, help="Untimed requests per level and mode.")
    parser.add_argument("--distinct", type=int, default=64, help="Different images cycled over.")
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="Batching on: images per pass."
    )
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS, help="Batching on: wait.")
    parser.add_argument("--workers", type=int, default=1, help="Server processes (both modes).")
    parser.add_argument("--runtime", default="torch", help="torch or onnx (both modes; exported if needed).")
    parser.add_argument(
        "--precision", default="fp32", help="fp32, bf16 (torch) or int8 (onnx; quantized if needed)."
    )
    args = parser.parse_args()
    common = ["--workers", str(args.workers), "--runtime", args.runtime, "--precision", args.precision]
    options = {
        "off": [*common, "--max-batch", "1"],
        "on": [*common, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
    }
    with tempfile.TemporaryDirectory(prefix="mlic-serve-bench-") as tmp:
        if args.random:
            artifact = random_artifact(Path(tmp), args.random)
        else:
            artifact = args.artifact or demo_artifact(Path(tmp))
        if (args.runtime, args.precision) != ("torch", "fp32"):
            prepare(Path(artifact), args.runtime, args.precision, random_weights=bool(args.random))
        images = pngs(args.distinct)
        load_before = os.getloadavg()
        urls = {mode: f"http://127.0.0.1:{free_port()}" for mode in MODES}
        servers = {
            mode: start_server(artifact, int(urls[mode].rsplit(":", 1)[1]), options[mode]) for mode in MODES
        }
        runs = {}
        try:
            for mode in MODES:
                wait_healthy(servers[mode], urls[mode])
            for concurrency in args.concurrency:
                level = measure(urls, images, concurrency, args.requests, args.rounds, args.warmup)
                runs[str(concurrency)] = level
                print(f"concurrency {concurrency}: {json.dumps(level)}", file=sys.stderr)
        finally:
            for server in servers.values():
                server.terminate()
            for server in servers.values():
                server.wait(30)
    errors = sum(level[mode]["errors"] for level in runs.values() for mode in MODES)
    result = {
        "model": str(args.artifact)
        if args.artifact
        else args.random or "demo mlic_cnn@64 (trained for this run)",
        "requests_per_level": args.requests,
        "rounds": args.rounds,
        "images_per_request": 1,
        "settings": {
            "off": {"max_batch": 1},
            "on": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        },
        "workers": args.workers,
        "runtime": {"runtime": args.runtime, "precision": args.precision},
        "concurrency": runs,
        "errors": errors,
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
