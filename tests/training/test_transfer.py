"""Tests of mlic.training.transfer: label transfer is kept where the neighbours know the labels, only then."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlic.models import ModelConfig, build_classifier
from mlic.models.transfer import LabelTransfer
from mlic.schema import LabelSchema
from mlic.training.transfer import Embedded, fit_transfer


def clustered(n: int, n_labels: int, seed: int, noise: float):
    """Embeddings in one tight cluster per label combination; classifier logits that know nothing."""
    rng = np.random.default_rng(seed)
    centres, table = rng.normal(size=(8, 16)), (rng.random((8, n_labels)) < 0.3).astype(np.int8)
    group = rng.integers(0, 8, n)
    labels = table[group]
    embeddings = centres[group] + noise * rng.normal(size=(n, 16))
    logits = rng.normal(size=(n, n_labels))
    return Embedded(
        torch.tensor(logits, dtype=torch.float32), torch.tensor(embeddings, dtype=torch.float32), labels
    )


def test_fit_keeps_transfer_where_neighbours_know_the_labels():
    model = build_classifier(LabelSchema(tuple("abcdef")), ModelConfig())
    setting, logits = fit_transfer(model, clustered(300, 6, 0, 0.05), clustered(100, 6, 0, 0.05))
    assert setting is not None and setting["alpha"] >= 0.5
    assert setting["criterion"] > setting["classifier_criterion"] + 0.2
    assert logits.shape == (100, 6)


def test_fit_drops_transfer_where_neighbours_know_nothing():
    model = build_classifier(LabelSchema(tuple("abcdef")), ModelConfig())
    train, val = clustered(300, 6, 0, 0.05), clustered(100, 6, 1, 0.05)
    val.label_logits = torch.tensor(
        np.where(val.labels == 1, 4.0, -4.0), dtype=torch.float32
    )  # a perfect classifier
    val.embeddings = torch.randn(100, 16, generator=torch.Generator().manual_seed(2))
    setting, logits = fit_transfer(model, train, val)
    assert setting is None
    torch.testing.assert_close(logits, val.label_logits)


def test_fit_never_trades_validation_map_for_the_annotation_term():
    """A classifier that ranks every label perfectly but puts label a above b in every image; neighbours that
    are right four times in five. Votes would lift the top-1 annotation a lot and lower mAP: no transfer."""
    from mlic.training.transfer import MIN_GAIN, figures

    rng = np.random.default_rng(0)

    def part(n):
        is_a = rng.random(n) < 0.5
        labels = np.stack([is_a, ~is_a], axis=1).astype(np.int8)
        logits = np.where(labels == 1, [2.0, -1.0], [1.0, -2.0]) + rng.normal(0, 0.01, (n, 2))
        cluster = np.where(rng.random(n) < 0.8, is_a, ~is_a)  # a fifth of the images sit with the other label
        embeddings = np.where(cluster[:, None], [1.0, 0.0], [0.0, 1.0]) + rng.normal(0, 0.05, (n, 2))
        as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        return Embedded(as_tensor(logits), as_tensor(embeddings), labels)

    train, val = part(400), part(200)
    model = build_classifier(LabelSchema(("a", "b")), ModelConfig())
    setting, logits = fit_transfer(model, train, val)
    assert setting is None
    torch.testing.assert_close(logits, val.label_logits)
    # without the mAP floor, votes alone would have won on the criterion
    base_map, base = figures(val.labels, torch.sigmoid(val.label_logits).numpy(), 1)
    votes = LabelTransfer(400, 2, 2, k=10, temperature=0.05, alpha=1.0)
    votes.fill(train.embeddings, torch.from_numpy(train.labels))
    mixed_map, mixed = figures(val.labels, torch.sigmoid(votes(val.embeddings, val.label_logits)).numpy(), 1)
    assert mixed > base + MIN_GAIN and mixed_map < base_map


def with_reference(own: Embedded, reference: torch.Tensor) -> Embedded:
    """``own`` with ``reference`` features joined after its embeddings, as a reference backbone gives them."""
    unit = torch.nn.functional.normalize
    joined = torch.cat([unit(own.embeddings, dim=1), unit(reference, dim=1)], dim=1)
    return Embedded(own.label_logits, joined, own.labels, reference_dim=reference.shape[1])


@pytest.mark.parametrize("informative", ["reference", "own"])
def test_fit_uses_the_reference_features_only_where_they_win(informative):
    """Each image has the right cluster in one network's features and noise in the other's."""
    model = build_classifier(LabelSchema(tuple("abcdef")), ModelConfig())
    parts = []
    for n, seed in ((300, 3), (100, 4)):
        clean = clustered(n, 6, 0, 0.3)
        noise = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
        clean.label_logits = clustered(n, 6, seed, 0.3).label_logits  # a classifier that knows nothing
        own, ref = (noise, clean.embeddings) if informative == "reference" else (clean.embeddings, noise)
        parts.append(with_reference(Embedded(clean.label_logits, own, clean.labels), ref))
    setting, _ = fit_transfer(model, *parts)
    assert setting is not None and setting["reference"] is (informative == "reference")


def test_embedded_columns_select_the_own_or_all_features():
    joined = with_reference(clustered(4, 2, 0, 0.1), torch.randn(4, 8))
    assert joined.embeddings[:, joined.columns(False)].shape == (4, 16)
    assert joined.embeddings[:, joined.columns(True)].shape == (4, 24)
