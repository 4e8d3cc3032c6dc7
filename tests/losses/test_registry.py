"""Tests of mlic.losses.registry: the factories, their names, options and errors."""

from __future__ import annotations

import pytest
import torch

from mlic.errors import ConfigError
from mlic.losses import (
    AsymmetricLoss,
    FocalLoss,
    HillLoss,
    SelectiveMissing,
    SPLCLoss,
    WeightedBCE,
    create_label_loss,
    create_missing_policy,
    list_losses,
    list_missing_policies,
)


# -- registry --------------------------------------------------------------------------------------
def test_create_label_loss():
    assert "bce" in list_losses()
    loss = create_label_loss("bce", pos_weight=2.0)
    assert isinstance(loss, WeightedBCE) and loss.pos_weight.item() == 2.0
    assert isinstance(create_label_loss(), WeightedBCE)


def test_create_label_loss_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown loss 'bc'; did you mean 'bce'\? \(valid: bce") as info:
        create_label_loss("bc")
    for name in list_losses():
        assert name in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown loss 'zzzz' \(valid: "):
        create_label_loss("zzzz")


def test_missing_policy_registry_errors():
    assert list_missing_policies() == ["ignore", "negative", "selective"]
    with pytest.raises(ConfigError, match=r"unknown missing-label policy 'negativ'; did you mean 'negative'"):
        create_missing_policy("negativ")
    with pytest.raises(ConfigError, match="needs train_targets"):
        create_missing_policy("selective")
    with pytest.raises(ConfigError, match=r"unknown options \['threshold'\]"):
        create_missing_policy("negative", threshold=0.5)
    with pytest.raises(ConfigError, match="missing_weight"):
        create_missing_policy("negative", missing_weight=-1.0)
    with pytest.raises(ConfigError, match="labels"):
        SelectiveMissing(torch.tensor([0.1, 0.9]))(torch.zeros(2, 3, dtype=torch.int8))


# == registry ============================================================================================
def test_registry_lists_every_loss():
    assert list_losses() == ["asl", "bce", "focal", "hill", "splc"]
    classes = {
        "bce": WeightedBCE,
        "focal": FocalLoss,
        "asl": AsymmetricLoss,
        "hill": HillLoss,
        "splc": SPLCLoss,
    }
    for name, cls in classes.items():
        assert type(create_label_loss(name)) is cls


@pytest.mark.parametrize("name", ["asl", "bce", "focal", "hill", "splc"])
def test_every_loss_takes_the_common_options(name):
    loss = create_label_loss(name, pos_weight=[1.0, 2.0], neg_weight=0.5, label_smoothing=0.1)
    assert loss.pos_weight.tolist() == [1.0, 2.0] and loss.label_smoothing == 0.1
    with pytest.raises(ConfigError, match=rf"loss '{name}' got unknown options \['gama', 'zzz'\]"):
        create_label_loss(name, gama=2.0, zzz=1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        create_label_loss(name, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="pos_weight"):
        create_label_loss(name, pos_weight=-1.0)


def test_loss_option_values_are_checked():
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ConfigError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ConfigError, match="clip"):
        AsymmetricLoss(clip=1.0)
    with pytest.raises(ConfigError, match="tau"):
        SPLCLoss(tau=2.0)
    with pytest.raises(ConfigError, match="unknown loss 'hil'; did you mean 'hill'"):
        create_label_loss("hil")
