"""Tests of mlic.training.defaults: what follows from the options, resolved once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mlic.data.targets import LabelLists
from mlic.training import TrainConfig
from mlic.training.defaults import resolve_neg_weight, resolve_recipe


def test_preprocessing_follows_the_backbones_pretrained_normalisation():
    from mlic.training import resolve_preprocessing

    inception = resolve_preprocessing(TrainConfig(data="x.csv", backbone="inception_v3", pretrained=True))
    assert inception.mean == (0.5, 0.5, 0.5) and inception.image_size == (224, 224) and inception.hflip
    scratch = resolve_preprocessing(TrainConfig(backbone="inception_v3"))
    assert scratch.mean == (0.485, 0.456, 0.406) and scratch.image_size == (64, 64) and not scratch.hflip


def test_accelerator_auto_takes_a_cuda_gpu_when_one_is_visible_else_the_cpu(monkeypatch):
    import torch

    from mlic.training import resolve, resolve_accelerator

    assert TrainConfig().accelerator == "auto"  # the default: no flag needed on a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_accelerator(TrainConfig()) == "cpu" and resolve(TrainConfig()).accelerator == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_accelerator(TrainConfig()) == "gpu"
    assert resolve_accelerator(TrainConfig(accelerator="cpu")) == "cpu"  # asked for: kept, GPU or not
    assert resolve_accelerator(TrainConfig(accelerator="mps")) == "mps"


def test_the_recipe_sets_batch_and_prior_biases_unless_given():
    tuned = resolve_recipe(TrainConfig(backbone="resnet10t", weights="w.safetensors"))
    scratch = resolve_recipe(TrainConfig())
    assert (tuned.batch_size, tuned.prior_bias) == (32, True)
    assert (scratch.batch_size, scratch.prior_bias) == (128, False)
    assert resolve_recipe(TrainConfig(weights="w.safetensors", prior_bias=False)).prior_bias is False


def test_negatives_weigh_half_only_fine_tuning_on_mostly_rare_labels():
    rare = LabelLists.from_dense(np.eye(100, 40, dtype=np.int8))  # 40 labels, each on 1% of the images
    frequent = LabelLists.from_dense((np.arange(21)[:, None] % [2, 3, 5] == 0).astype(np.int8))  # 52, 33, 24%
    tuned, scratch = TrainConfig(weights="w.safetensors"), TrainConfig()
    assert resolve_neg_weight(tuned, rare).neg_weight == 0.5
    assert resolve_neg_weight(tuned, frequent).neg_weight == 1.0
    assert resolve_neg_weight(scratch, rare).neg_weight == 1.0
    assert resolve_neg_weight(replace(tuned, neg_weight=0.8), rare).neg_weight == 0.8  # given: kept
    no_labels = LabelLists.from_dense(np.zeros((5, 0), dtype=np.int8))  # attributes only
    assert resolve_neg_weight(tuned, no_labels).neg_weight == 1.0
