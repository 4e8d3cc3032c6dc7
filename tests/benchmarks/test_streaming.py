"""benchmarks/streaming.py on a few hundred tiny images, so that the benchmark cannot rot unseen."""

from __future__ import annotations

import pytest

from helpers import benchmark_script

pytest.importorskip("litdata", reason="the streaming benchmark needs the stream extra")
pytest.importorskip("moto", reason="the streaming benchmark starts moto's S3 server")


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("streaming") as module:
        yield module


def test_packs_streams_and_compares_memory_at_two_sizes(bench, tmp_path, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, "")  # restored after the test: the benchmark sets its own
    figures = bench.run(images=300, small=100, size=16, folder=tmp_path, workers=1, batch_size=64)
    for n in (100, 300):
        reads = figures[f"at_{n}"]
        assert reads["files"]["images"] == reads["folder"]["images"] == reads["s3"]["images"] == n
        assert all(
            reads[w]["images_per_second"] > 0 and reads[w]["peak_rss_mib"] > 0
            for w in reads
            if w != "pack_seconds"
        )
        assert reads["pack_seconds"]["folder"] > 0 and reads["s3"]["ratio_vs_files"] > 0
    assert set(figures["memory_growth"]) == {"files", "folder", "s3"}
    assert isinstance(figures["memory_flat"], bool)
