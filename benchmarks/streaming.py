"""Shards against files: pack time, images/s of one streamed epoch, and peak memory; print one JSON object.

    python benchmarks/streaming.py                    # 200,000 images, memory also at 20,000
    python benchmarks/streaming.py --images 2000 --small 200 --dir /tmp/mlic-streaming

Data: ``--images`` synthetic PNGs of ``--size`` px (random blocks, a few kB
each) with 10 random tags, written once into ``--dir`` and listed in a tags
CSV. They are packed (``mlic.data.pack.pack``) to a local folder and to an
S3-compatible server started here on 127.0.0.1 (moto's), once as all the
images and once as the first ``--small``. Then one epoch is read, each in a
fresh process of its own so that its peak memory is its own:

- ``files``: the images as files through mlic's ``ImageDataset`` (decode, no
  resize, to tensor) and a shuffling ``DataLoader``;
- ``folder`` and ``s3``: the same images streamed from the packs through
  mlic's streamed samples (``mlic.data.streaming``) and litdata's loader.

Each reports images/s and the peak resident memory (high-water RSS) of the
process and, separately, of its largest loader worker. No model runs. The
issue's acceptance: the peak at ``--images`` at most 10% above the peak at
``--small`` (``memory_growth``), for the streamed reads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TAGS = tuple(f"tag{i}" for i in range(10))


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` PNGs and ``tags.csv`` in ``folder``, reused when it already lists ``n`` images."""
    csv = folder / "tags.csv"
    if csv.is_file() and sum(1 for _ in csv.open()) == n + 1:
        return csv
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["path,tags"]
    for i in range(n):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((size // 4, size // 4, 1), dtype=np.uint8))
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png", compress_level=1)
        tags = [t for t in TAGS if rng.random() < 0.2] or [TAGS[i % len(TAGS)]]
        lines.append(f"images/{i}.png,{' '.join(tags)}")
    subset = folder / f"tags-{n}.csv"
    csv.write_text("\n".join(lines) + "\n")
    subset.unlink(missing_ok=True)
    return csv


def first_rows(csv: Path, n: int) -> Path:
    """A CSV of the first ``n`` rows of ``csv``, beside it."""
    out = csv.parent / f"tags-{n}.csv"
    with csv.open() as f:
        out.write_text("".join(line for _, line in zip(range(n + 1), f)))
    return out


def timed_pack(data: Path, dest: str) -> float:
    from mlic.data.pack import pack

    started = time.perf_counter()
    pack(data, dest, overwrite=True)
    return round(time.perf_counter() - started, 2)


def start_s3() -> tuple[object, str]:
    """moto's S3 server on a free port of 127.0.0.1, with boto3 and litdata pointed at it; and a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    boto3.client("s3").create_bucket(Bucket="mlic-bench")
    return server, "s3://mlic-bench"


# -- one epoch, in a process of its own -----------------------------------------------------------------
def decoded(item: dict, epoch: int) -> object:
    """A streamed item decoded to a uint8 tensor, as training decodes it (no transform)."""
    import io

    from mlic.data.images import decode_image

    return decode_image(io.BytesIO(bytes(item["image"])))


def collate(batch: list) -> int:
    return len(batch)


def epoch(kind: str, data: str, workers: int, batch_size: int) -> dict:
    """One epoch of ``data`` (a tags CSV for ``files``, else a pack's split): images/s and peak memory."""
    from torch.utils.data import DataLoader

    started = time.perf_counter()
    if kind == "files":
        from mlic.data import load_data
        from mlic.data.images import ImageDataset

        images = ImageDataset(load_data(data), lambda image: image)
        loader = DataLoader(
            images, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate
        )
    else:
        from mlic.data.shards import open_split
        from mlic.data.streaming import StreamedSamples, stream_loader

        samples = StreamedSamples(open_split(data).url, decoded, seed=0)
        loader = stream_loader(samples, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    n = sum(loader)
    seconds = time.perf_counter() - started
    return {
        "images": n,
        "seconds": round(seconds, 2),
        "images_per_second": round(n / seconds, 1),
        "peak_rss_mib": round(high_water_kib() / 1024, 1),
        "peak_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def high_water_kib() -> int:
    """This process's peak resident memory (``VmHWM``), which starts afresh at ``exec``; ``ru_maxrss`` does
    not: it keeps the forking process's high-water mark (here the parent's, moto's objects included)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def measure(kind: str, data: str, workers: int, batch_size: int) -> dict:
    """``epoch`` in a fresh Python process (this script with ``--epoch``), so its peak memory is its own."""
    command = [sys.executable, __file__, "--epoch", kind, "--data", data, "--workers", str(workers),
               "--batch-size", str(batch_size)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} epoch failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth(small: dict, large: dict) -> float:
    """How much higher the larger read's peak memory (process plus its largest worker) is, as a share."""
    peak = {k: v["peak_rss_mib"] + v["peak_worker_rss_mib"] for k, v in (("s", small), ("l", large))}
    return round(peak["l"] / peak["s"] - 1.0, 4)


def run(images: int, small: int, size: int, folder: Path, workers: int, batch_size: int) -> dict:
    csv = make_images(folder, images, size)
    sizes = [(small, first_rows(csv, small)), (images, csv)]
    server, bucket = start_s3()
    try:
        figures: dict = {"images": images, "small": small, "image_size": size, "workers": workers}
        for n, data in sizes:
            local, remote = str(folder / f"pack-{n}"), f"{bucket}/pack-{n}"
            reads = {
                "pack_seconds": {"folder": timed_pack(data, local), "s3": timed_pack(data, remote)},
                "files": measure("files", str(data), workers, batch_size),
                "folder": measure("folder", local, workers, batch_size),
                "s3": measure("s3", remote, workers, batch_size),
            }
            for where in ("folder", "s3"):
                speed = reads[where]["images_per_second"] / reads["files"]["images_per_second"]
                reads[where]["ratio_vs_files"] = round(speed, 3)
            figures[f"at_{n}"] = reads
        at_small, at_large = figures[f"at_{small}"], figures[f"at_{images}"]
        figures["memory_growth"] = {w: growth(at_small[w], at_large[w]) for w in ("files", "folder", "s3")}
        figures["memory_flat"] = all(figures["memory_growth"][w] <= 0.10 for w in ("folder", "s3"))
        return figures
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=20_000, help="the smaller size memory is compared at")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mlic-streaming")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epoch", choices=["files", "folder", "s3"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch:
        print(json.dumps(epoch(args.epoch, args.data, args.workers, args.batch_size)))
        return
    if not 0 < args.small <= args.images:
        parser.error("--small must lie in (0, --images]")
    figures = run(args.images, args.small, args.size, args.dir, args.workers, args.batch_size)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
