"""Tests of mlic.models.backbones: timm backbones by name, mlic_cnn, local weight files."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from mlic.errors import ConfigError
from mlic.models import (
    DEFAULT_BACKBONE,
    build_classifier,
    create_backbone,
)
from mlic.schema import Attribute, LabelSchema

MIXED = LabelSchema(("a", "b"), (Attribute("size", ("s", "m", "l")),))


BACKBONES = ["mlic_cnn", "mlic_cnn_wide", "resnet10t"]


def features(backbone: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


# -- backbones -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKBONES)
def test_create_backbone_gives_pooled_features(name):
    torch.manual_seed(0)
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        f = features(backbone, torch.randn(2, 3, 64, 64))
        whole = backbone(torch.randn(2, 3, 64, 64))
    assert f.shape == (2, backbone.num_features)
    assert whole.shape == (2, backbone.num_features)  # no classifier: forward gives features too
    assert torch.isfinite(f).all()


def test_mlic_cnn_sizes():
    small, wide = create_backbone("mlic_cnn"), create_backbone("mlic_cnn_wide")
    assert DEFAULT_BACKBONE == "mlic_cnn"
    assert small.num_features == 256 and wide.num_features == 512
    assert sum(p.numel() for p in small.parameters()) == pytest.approx(0.4e6, rel=0.1)
    assert sum(p.numel() for p in wide.parameters()) == pytest.approx(1.6e6, rel=0.1)


def test_mlic_cnn_in_chans_and_drop_rate():
    backbone = create_backbone("mlic_cnn", in_chans=1, drop_rate=0.5)
    assert features(backbone.eval(), torch.randn(2, 1, 32, 32)).shape == (2, 256)
    assert backbone.drop.p == 0.5


def test_unknown_backbone_suggests_a_close_match():
    with pytest.raises(ConfigError, match=r"unknown backbone 'mlic_cn'; did you mean mlic_cnn") as info:
        create_backbone("mlic_cn")
    assert "timm.list_models()" in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet_181'; did you mean .*resnet18"):
        create_backbone("resnet_181")
    with pytest.raises(ConfigError, match=r"unknown backbone 'qqqqqqqq' \("):
        create_backbone("qqqqqqqq")


@pytest.mark.parametrize("name", ["mlic_cnn", "mlic_cnn_wide"])
def test_mlic_cnn_has_no_pretrained_weights(name):
    with pytest.raises(ConfigError, match="no published weights; use --weights FILE"):
        create_backbone(name, pretrained=True)


# -- local weight files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    backbone = create_backbone("mlic_cnn")
    # Non-default BatchNorm statistics, so that buffers are checked as well as parameters.
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(7)
    return {k: v.clone().contiguous() for k, v in backbone.state_dict().items()}


def assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


def test_weights_differ_without_a_file(source_state):
    torch.manual_seed(0)
    fresh = create_backbone("mlic_cnn").state_dict()
    assert not all(torch.equal(fresh[k], v) for k, v in source_state.items())


def test_weights_from_safetensors(tmp_path, source_state):
    save_file(source_state, tmp_path / "w.safetensors")
    torch.manual_seed(0)
    assert_same_state(create_backbone("mlic_cnn", weights=tmp_path / "w.safetensors"), source_state)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s},
        lambda s: {"model": s, "epoch": 3},
        lambda s: {f"module.{k}": v for k, v in s.items()},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    ],
    ids=["plain", "state_dict", "model-key", "module-prefix", "wrapped-and-prefixed"],
)
@pytest.mark.parametrize("suffix", [".pth", ".bin"])
def test_weights_from_torch_save(tmp_path, source_state, wrap, suffix):
    path = tmp_path / f"w{suffix}"
    torch.save(wrap(source_state), path)
    torch.manual_seed(0)
    assert_same_state(create_backbone("mlic_cnn", weights=str(path)), source_state)


def test_weights_from_a_whole_classifier_file(tmp_path):
    """A file of a whole mlic classifier loads into the backbone; the head's tensors are ignored."""
    torch.manual_seed(5)
    classifier = build_classifier(MIXED)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, tmp_path / "c.safetensors")
    backbone = create_backbone("mlic_cnn", weights=tmp_path / "c.safetensors")
    assert_same_state(backbone, classifier.backbone.state_dict())


def test_weights_and_build_classifier(tmp_path, source_state):
    save_file(source_state, tmp_path / "w.safetensors")
    classifier = build_classifier(MIXED, weights=tmp_path / "w.safetensors")
    assert_same_state(classifier.backbone, source_state)


@pytest.mark.parametrize("other", ["mlic_cnn_wide", "resnet10t"])
def test_weights_of_another_architecture(tmp_path, other):
    state = {k: v.contiguous() for k, v in create_backbone(other).state_dict().items()}
    save_file(state, tmp_path / f"{other}.safetensors")
    with pytest.raises(ConfigError) as info:
        create_backbone("mlic_cnn", weights=tmp_path / f"{other}.safetensors")
    assert str(tmp_path / f"{other}.safetensors") in str(info.value)


def test_weights_with_missing_tensors(tmp_path, source_state):
    partial = {k: v for k, v in source_state.items() if not k.startswith("features.0.")}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(
        ConfigError, match=r"backbone tensors are missing or mis-shaped, e\.g\. \['features\.0"
    ):
        create_backbone("mlic_cnn", weights=tmp_path / "partial.safetensors")


def test_weights_file_not_found(tmp_path):
    with pytest.raises(ConfigError, match="weights file not found") as info:
        create_backbone("mlic_cnn", weights=tmp_path / "nope.safetensors")
    assert str(tmp_path / "nope.safetensors") in str(info.value)
    with pytest.raises(ConfigError, match="weights file not found"):
        create_backbone("mlic_cnn", weights=tmp_path)  # a folder is not a weights file


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_damaged(tmp_path, suffix):
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(b"this is not a weights file" * 4)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        create_backbone("mlic_cnn", weights=path)
