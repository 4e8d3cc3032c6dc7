"""Tests of mlic.inference.batches: the batch runner keeps every row in order, skips or names bad images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlic.data.images import Decoding, build_transform, manifest_images
from mlic.data.manifest import Manifest
from mlic.errors import DataError
from mlic.inference import load_network, run_batches


@pytest.fixture(scope="module")
def made(make_artifact):
    return make_artifact()


def run(made, images, decoding: Decoding | None = None, **options):
    model = load_network(made.artifact)
    transform = build_transform(made.artifact.preprocessing)
    outputs = made.artifact.schema.num_outputs
    return run_batches(model, images, transform, decoding or Decoding(), num_outputs=outputs, **options)


def arrays(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(n)]


def test_rows_follow_the_inputs_whatever_the_batch_size(made):
    images = arrays(7)
    one = run(made, images, batch_size=1)
    three = run(made, images, batch_size=3)
    assert one.logits.shape == (7, made.artifact.schema.num_outputs) and one.read.all()
    torch.testing.assert_close(one.logits, three.logits)
    transform = build_transform(made.artifact.preprocessing)
    with torch.no_grad():
        expected = made.model(torch.stack([transform(torch.from_numpy(a).permute(2, 0, 1)) for a in images]))
    torch.testing.assert_close(one.logits, expected.float())


def test_skipped_images_keep_their_place_with_nan_rows_and_errors(made, tmp_path):
    images = [*arrays(2), str(tmp_path / "missing.png"), *arrays(1)]
    out = run(made, images, Decoding(bad_images="skip"), batch_size=2)
    assert out.read.tolist() == [True, True, False, True]
    assert torch.isnan(out.logits[2]).all() and not torch.isnan(out.logits[[0, 1, 3]]).any()
    assert "missing.png" in out.errors[2] and out.errors[0] is None
    probs = out.probabilities(made.artifact.schema)
    assert np.isnan(probs.labels[2]).all() and probs.rows(out.read).labels.shape == (3, 3)


def test_fail_names_the_unreadable_image(made, tmp_path):
    with pytest.raises(DataError, match=r"missing\.png: no such file"):
        run(made, [*arrays(1), str(tmp_path / "missing.png")])


def test_a_batch_with_no_readable_image_and_no_images_at_all(made, tmp_path):
    out = run(made, [str(tmp_path / "a.png"), str(tmp_path / "b.png")], Decoding(bad_images="skip"))
    assert not out.read.any() and torch.isnan(out.logits).all()
    empty = run(made, [])
    assert empty.logits.shape == (0, made.artifact.schema.num_outputs) and empty.errors == []


def test_targets_come_back_with_the_logits_batch_by_batch(made, tmp_path):
    schema = made.artifact.schema
    labels = np.array([[1, 0, -1], [0, 0, 1], [1, 1, 0], [-1, 1, 1], [0, 1, 0]], dtype=np.int8)
    attributes = np.array([[0], [2], [-1], [1], [0]])
    pixels = np.stack(arrays(5)[:1] * 5)
    manifest = Manifest(schema, [f"i{i}" for i in range(5)], labels, attributes, pixels=pixels)
    out = run(made, manifest_images(manifest), batch_size=2, targets=manifest)
    np.testing.assert_array_equal(out.labels, labels)
    np.testing.assert_array_equal(out.attributes, attributes)
    assert run(made, manifest_images(manifest)).labels is None
