"""Throughput and latency of ``mlic serve`` under a bounded load from a second process; print one JSON object.

    python benchmarks/serve.py                                   # trains a small demo artifact first
    python benchmarks/serve.py --artifact runs/demo/artifact --requests 2000 --concurrency 16

The server is ``mlic serve`` (uvicorn, one process) started as a subprocess on
a free loopback port; this process waits for ``GET /health``, sends
``--warmup`` untimed requests, then ``--requests`` timed ``POST /predict``
requests, ``--concurrency`` at a time (threads sharing one httpx client and its
keep-alive connections), each with one MultiDigits PNG (64 x 64, cycled over
``--distinct`` test canvases). Figures: requests/s over the timed run, p50 /
p99 / max latency in ms (request sent to answer read), and ``errors``:
answers that are not a 200 with one prediction, or failed connections; it must
be 0 (the exit code is 1 otherwise). Without ``--artifact`` a demo model
(``mlic_cnn``, 64 px input) is trained for one short epoch, since accuracy does
not change its speed. Client and server share the machine's cores, so the load
average is reported before and after.
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


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_artifact(folder: Path) -> Path:
    """A MultiDigits artifact from one short epoch (the demo's model and input size)."""
    from mlic.training import train

    return Path(train(out=str(folder / "run"), demo_train=512, demo_val=128, max_epochs=1, progress=False))


def pngs(n: int) -> list[bytes]:
    """``n`` MultiDigits test canvases as PNG files in memory."""
    out = []
    for pixels in multidigits("test", n, seed=0).pixels:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def start_server(artifact: Path, port: int, timeout: float = 120) -> subprocess.Popen:
    """``mlic serve`` in a subprocess, returned once ``/health`` answers."""
    command = [sys.executable, "-m", "mlic.cli", "serve", str(artifact), "--port", str(port)]
    server = subprocess.Popen([*command, "--log-level", "warning"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlic serve exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"mlic serve did not answer /health within {timeout:.0f} s")


def load(url: str, images: list[bytes], requests: int, concurrency: int) -> tuple[list[float], int, float]:
    """Send ``requests`` uploads, ``concurrency`` at a time: latencies (s), the error count, wall seconds."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, timeout=60) as client:

        def one(i: int) -> tuple[float, bool]:
            files = [("files", (f"{i}.png", images[i % len(images)], "image/png"))]
            start = time.perf_counter()
            try:
                answer = client.post(f"{url}/predict", files=files)
                ok = answer.status_code == 200 and len(answer.json()["predictions"]) == 1
            except (httpx.HTTPError, ValueError, KeyError):
                ok = False
            return time.perf_counter() - start, ok

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    return [r[0] for r in results], sum(not r[1] for r in results), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="Artifact to serve (default: train a demo one).")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--distinct", type=int, default=64, help="Different images cycled over.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlic-serve-bench-") as tmp:
        artifact = args.artifact or demo_artifact(Path(tmp))
        images, port = pngs(args.distinct), free_port()
        load_before = os.getloadavg()
        server = start_server(artifact, port)
        try:
            url = f"http://127.0.0.1:{port}"
            load(url, images, args.warmup, args.concurrency)
            latencies, errors, wall = load(url, images, args.requests, args.concurrency)
        finally:
            server.terminate()
            server.wait(30)
    ms = np.array(latencies) * 1000
    figures = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "images_per_request": 1,
        "seconds": round(wall, 2),
        "throughput_rps": round(args.requests / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1),
        },
        "errors": errors,
        "artifact": str(args.artifact) if args.artifact else "demo (trained for this run)",
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures, indent=2))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
