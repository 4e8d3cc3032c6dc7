"""Tests of mlic.models.transfer: votes of the nearest bank images mixed into label logits; artifact, ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlic.artifact import CONFIG_FILE, FORMAT_VERSION, load_artifact, save_artifact
from mlic.data.images import Preprocessing
from mlic.errors import ArtifactError
from mlic.export import export_onnx
from mlic.inference.onnx_runtime import OnnxModel
from mlic.models import ModelConfig, build_classifier, reference_backbone
from mlic.models.transfer import EPS, LabelTransfer, mix
from mlic.schema import Attribute, LabelSchema
from mlic.training.transfer import attach_transfer

SCHEMA = LabelSchema(("cat", "dog", "bird"), (Attribute("size", ("s", "l")),))


PRE = Preprocessing(image_size=(32, 32), hflip=False)


def naive_votes(query, bank, bank_labels, k, temperature):
    """Per query: cosine similarity to every bank row, the k best, softmax weights, weighted labels."""
    out = []
    for q in query:
        sims = [float(q @ b / (q.norm() * b.norm())) for b in bank]
        best = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
        w = torch.softmax(torch.tensor([sims[i] for i in best]) / temperature, dim=0)
        out.append(sum(w[j] * (bank_labels[i] == 1).float() for j, i in enumerate(best)))
    return torch.stack(out)


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.1), (3, 0.05), (8, 1.0)])
def test_votes_equal_a_naive_loop(k, temperature):
    g = torch.Generator().manual_seed(k)
    bank, query = torch.randn(8, 5, generator=g), torch.randn(4, 5, generator=g)
    labels = torch.randint(-1, 2, (8, 3), generator=g)
    transfer = LabelTransfer(8, 5, 3, k=k, temperature=temperature, alpha=0.5)
    transfer.fill(bank, labels)
    expected = naive_votes(query, bank, labels, k, temperature)
    torch.testing.assert_close(transfer.votes(query), expected, atol=2e-3, rtol=0)  # float16 bank


def test_unknown_targets_cast_no_vote_and_k_is_capped_by_the_bank():
    transfer = LabelTransfer(2, 2, 2, k=50, temperature=0.1, alpha=1.0)
    transfer.fill(torch.eye(2), torch.tensor([[1, -1], [0, -1]]))
    assert transfer.k == 2
    votes = transfer.votes(torch.tensor([[1.0, 0.0]]))
    assert votes[0, 1] == 0 and 0.5 < votes[0, 0] <= 1


def test_mix_is_a_logit_of_the_weighted_mean_of_probability_and_votes():
    logits = torch.tensor([[-2.0, 0.0, 3.0]])
    votes = torch.tensor([[1.0, 0.0, 0.5]])
    for alpha in (0.0, 0.3, 1.0):
        expected = ((1 - alpha) * torch.sigmoid(logits) + alpha * votes).clamp(EPS, 1 - EPS)
        torch.testing.assert_close(torch.sigmoid(mix(logits, votes, alpha)), expected)
    assert torch.isfinite(mix(logits, votes, 1.0)).all()  # votes of exactly 0 and 1 stay finite


def model_with_transfer(seed: int = 0):
    torch.manual_seed(seed)
    model = build_classifier(SCHEMA, ModelConfig(), mean=PRE.mean, std=PRE.std).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        _, embeddings = model.forward_parts(images)
    labels = np.array([[1, 0, -1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=np.int8)
    attach_transfer(model, {"k": 3, "temperature": 0.05, "alpha": 0.5}, embeddings, labels)
    return model, images


def test_the_classifier_mixes_label_logits_and_keeps_attribute_logits():
    model, images = model_with_transfer()
    with torch.no_grad():
        out = model(images)
        head, embeddings = model.forward_parts(images)
    labels = SCHEMA.label_slice
    torch.testing.assert_close(out[:, labels], model.transfer(embeddings, head[:, labels]))
    torch.testing.assert_close(out[:, labels.stop :], head[:, labels.stop :])
    # a training image is its own nearest neighbour: its own labels pull its scores
    p = torch.sigmoid(out[:, labels])
    assert p[0, 0] > torch.sigmoid(head[0, 0]) * 0.5 + 0.25 - 1e-6


def test_artifact_round_trip_and_onnx_parity(tmp_path):
    model, images = model_with_transfer()
    save_artifact(tmp_path, model, PRE, np.full(3, 0.5))
    described = json.loads((tmp_path / CONFIG_FILE).read_text())["model"]["transfer"]
    assert described == {
        "size": 6,
        "dim": model.transfer.bank.shape[1],
        "k": 3,
        "temperature": 0.05,
        "alpha": 0.5,
    }
    loaded = load_artifact(tmp_path).build_model()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    export_onnx(tmp_path)
    onnx_logits = OnnxModel(load_artifact(tmp_path))(images)
    torch.testing.assert_close(torch.as_tensor(onnx_logits), model(images).detach(), atol=1e-4, rtol=0)


def test_a_model_without_transfer_is_described_as_before(tmp_path):
    save_artifact(tmp_path, build_classifier(SCHEMA, ModelConfig()), PRE, np.full(3, 0.5))
    assert "transfer" not in json.loads((tmp_path / CONFIG_FILE).read_text())["model"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("k", 0), ("alpha", 1.5), ("temperature", 0), ("size", "6"), ("dim", True), ("extra", 1)],
)
def test_a_damaged_transfer_description_is_an_artifact_error(tmp_path, field, value):
    model, _ = model_with_transfer()
    save_artifact(tmp_path, model, PRE, np.full(3, 0.5))
    data = json.loads((tmp_path / CONFIG_FILE).read_text())
    data["model"]["transfer"][field] = value
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"model\.transfer"):
        load_artifact(tmp_path)


# -- a reference backbone: label transfer compares the pretrained features too ---------------------
def model_with_reference(seed: int = 0):
    """A model whose label transfer compares its own and a frozen reference backbone's features."""
    model, images = model_with_transfer(seed)
    torch.manual_seed(seed + 1)
    model.reference = reference_backbone(model.config.backbone)
    with torch.no_grad():
        _, embeddings = model.forward_parts(images)
    labels = np.array([[1, 0, -1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=np.int8)
    attach_transfer(model, {"k": 3, "temperature": 0.05, "alpha": 0.5, "reference": True}, embeddings, labels)
    return model, images


def test_the_embedding_joins_both_networks_unit_features():
    model, images = model_with_reference()
    with torch.no_grad():
        _, joined = model.forward_parts(images)
        pixels = model.normalize(images)
        own = model.backbone.forward_head(model.backbone.forward_features(pixels), pre_logits=True)
        ref = model.reference.forward_head(model.reference.forward_features(pixels), pre_logits=True)
    half = own.shape[1]
    assert joined.shape == (6, 2 * half)
    torch.testing.assert_close(joined[:, :half], torch.nn.functional.normalize(own, dim=1))
    torch.testing.assert_close(joined[:, half:], torch.nn.functional.normalize(ref, dim=1))
    assert not torch.allclose(joined[:, :half], joined[:, half:])  # two different networks


def test_the_reference_stays_frozen_in_eval_mode_when_the_model_trains():
    model, _ = model_with_reference()
    model.train()
    assert model.backbone.training and not model.reference.training
    assert not any(p.requires_grad for p in model.reference.parameters())


def test_a_reference_travels_in_the_artifact_and_through_onnx(tmp_path):
    model, images = model_with_reference()
    save_artifact(tmp_path, model, PRE, np.full(3, 0.5))
    data = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert data["model"]["transfer"]["reference"] is True and data["format_version"] == FORMAT_VERSION == 3
    loaded = load_artifact(tmp_path).build_model()
    assert loaded.reference is not None and not loaded.reference.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    export_onnx(tmp_path)
    onnx_logits = OnnxModel(load_artifact(tmp_path))(images)
    torch.testing.assert_close(torch.as_tensor(onnx_logits), model(images).detach(), atol=1e-4, rtol=0)


def test_transfer_without_the_reference_drops_it():
    model, images = model_with_transfer()
    model.reference = reference_backbone(model.config.backbone)
    with torch.no_grad():
        _, joined = model.forward_parts(images)
    own = joined[:, : joined.shape[1] // 2]
    setting = {"k": 3, "temperature": 0.05, "alpha": 0.5, "reference": False}
    attach_transfer(model, setting, own, np.zeros((6, 3)))
    assert model.reference is None and "reference" not in model.config.transfer


def test_a_reference_that_is_not_a_boolean_is_an_artifact_error(tmp_path):
    model, _ = model_with_reference()
    save_artifact(tmp_path, model, PRE, np.full(3, 0.5))
    data = json.loads((tmp_path / CONFIG_FILE).read_text())
    data["model"]["transfer"]["reference"] = "yes"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"model\.transfer\.reference"):
        load_artifact(tmp_path)
