"""Backbones: any timm model by name, plus ``mlic_cnn``, a small convnet for CPU training.

``create_backbone`` returns a timm model without its classifier, so that its
``forward_features`` / ``forward_head(pre_logits=True)`` give features for an
mlic head. ``mlic_cnn*`` are registered in timm's registry, so they are
created, listed and loaded like any timm model.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path

import timm
import torch
from timm.models import register_model
from torch import nn

from mlic.errors import ConfigError

DEFAULT_BACKBONE = "mlic_cnn"


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallConvNet(nn.Module):
    """A plain BatchNorm convnet that pools early: cheap enough to train on two CPU cores.

    A stride-2 stem halves the resolution at once, then each stage is a 3x3
    conv-BN-ReLU followed by 2x2 max-pooling (except the last). On 64x64
    MultiDigits this trains at several hundred images/s on two cores with bf16
    autocast and channels-last, where a ResNet-18 manages a few dozen.
    Exposes timm's surface (``num_features``, ``forward_features``,
    ``forward_head``, ``reset_classifier``).
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        in_chans: int = 3,
        num_classes: int = 0,
        drop_rate: float = 0.0,
        **_: object,
    ) -> None:
        super().__init__()
        layers = _conv_bn_relu(in_chans, widths[0], stride=2)
        for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
            layers += _conv_bn_relu(cin, cout)
            if i < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.num_features = widths[-1]
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _small_cnn(widths: tuple[int, ...], pretrained: bool, **kwargs: object) -> SmallConvNet:
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    if pretrained:
        raise ConfigError("mlic_cnn has no published weights; use --weights FILE for your own")
    return SmallConvNet(widths, **kwargs)


@register_model
def mlic_cnn(pretrained: bool = False, **kwargs: object) -> SmallConvNet:
    """Default backbone: 0.4M parameters, 256 features."""
    return _small_cnn((32, 64, 128, 256), pretrained, **kwargs)


@register_model
def mlic_cnn_wide(pretrained: bool = False, **kwargs: object) -> SmallConvNet:
    """Twice the width of ``mlic_cnn``: 1.6M parameters, 512 features."""
    return _small_cnn((64, 128, 256, 512), pretrained, **kwargs)


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    in_chans: int = 3,
    drop_rate: float = 0.0,
) -> nn.Module:
    """A timm backbone without classifier.

    ``pretrained`` uses timm's own download (needs a network); ``weights``
    loads a local file (``.safetensors``, ``.pth`` or ``.bin``) instead, offline.
    """
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r}{hint} (`timm.list_models()` lists all)")
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans, "drop_rate": drop_rate}
    if weights is not None:
        return _with_local_weights(name, Path(weights), kwargs)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not download pretrained weights for {name!r} ({e}); "
            "offline, pass a local file with --weights FILE"
        ) from None


def _with_local_weights(name: str, path: Path, kwargs: dict) -> nn.Module:
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    model = timm.create_model(name, pretrained=False, **kwargs)
    state = _read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"{path}: no tensor matches backbone {name!r}; is it a {name} checkpoint?")
    missing = [k for k in own if k not in usable]
    if missing:
        raise ConfigError(
            f"{path}: {len(missing)} backbone tensors are missing or mis-shaped, e.g. {missing[:3]}"
        )
    model.load_state_dict(usable)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file; a classifier in it is ignored by the caller."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and zip each raise their own types
        raise ConfigError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
