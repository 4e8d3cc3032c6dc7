"""The classifier: a timm backbone and an mlic head, returning the schema's logits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from mlic.errors import ConfigError
from mlic.models.backbones import DEFAULT_BACKBONE, create_backbone
from mlic.models.heads import create_head, is_pooled
from mlic.models.transfer import LabelTransfer
from mlic.schema import LabelSchema

PRIOR_CLIP = 1e-4
"""Label priors are clipped to [PRIOR_CLIP, 1 - PRIOR_CLIP] before their log-odds start a bias."""


@dataclass
class ModelConfig:
    """What is needed to rebuild the network; saved in the artifact."""

    backbone: str = DEFAULT_BACKBONE
    head: str = "linear"
    head_kwargs: dict = field(default_factory=dict)
    in_chans: int = 3
    drop_rate: float = 0.0
    transfer: dict | None = None
    """Label transfer from the nearest training images (``mlic.models.transfer``): ``size`` and ``dim``
    of its bank, ``k``, ``temperature`` and ``alpha``, and ``reference`` (true where the bank's
    embeddings join the features of a frozen copy of the pretrained backbone); None (the default)
    for none."""

    def __post_init__(self) -> None:
        if self.in_chans != 3:
            raise ConfigError(f"in_chans must be 3: mlic decodes every image to RGB, got {self.in_chans}")

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["transfer"] is None:  # absent, so that a model without it reads as before
            del data["transfer"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Classifier(nn.Module):
    """Backbone + head. ``forward`` returns logits ``[B, schema.num_outputs]``, never probabilities.

    Input: images ``[B, 3, H, W]`` with values 0-255 (uint8, or float). The
    classifier normalises them with ``mean`` / ``std`` (given for 0-1 values)
    as its first operation, so that batches travel as uint8 and an exported
    model takes raw pixels. With ``transfer`` (a ``LabelTransfer``), the label
    logits are those of the classifier's scores mixed with the votes of the
    nearest training images; the attributes' logits are the head's. With
    ``reference`` (a frozen copy of the backbone's pretrained weights), the
    images label transfer compares are described by both networks' features:
    fine-tuning on a few thousand photos specialises the features to the
    frequent labels, where the pretrained ones still tell apart the scenes a
    rare label comes with.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        schema: LabelSchema,
        config: ModelConfig,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        transfer: LabelTransfer | None = None,
        reference: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.transfer = transfer
        self.reference = reference
        self.schema = schema
        self.config = config
        scale = 255.0 * torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("pixel_shift", 255.0 * torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_scale", 1.0 / scale, persistent=False)

    def train(self, mode: bool = True) -> Classifier:
        """As ``nn.Module.train``; the reference backbone stays frozen in eval mode."""
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def start_from_priors(self, priors: Sequence[float]) -> bool:
        """Start the head's label biases at the log-odds of the training ``priors``; False without biases.

        A new head scores every label at 0.5, where most labels of a large set
        are on a few percent of the images, so the first steps of training
        only push every logit down, with large gradients through a pretrained
        backbone. Starting from the priors (as RetinaNet does for its rare
        foreground class: Lin et al., ICCV 2017) skips that phase. Heads
        without output biases (CSRA) keep theirs at none.
        """
        bias = getattr(self.head, "output_bias", None)
        if bias is None:
            return False
        p = torch.as_tensor(priors, dtype=torch.float32).clamp(PRIOR_CLIP, 1.0 - PRIOR_CLIP)
        if p.shape != (self.schema.n_labels,):
            raise ValueError(f"expected {self.schema.n_labels} label priors, got shape {tuple(p.shape)}")
        with torch.no_grad():
            bias[self.schema.label_slice] = torch.logit(p).to(bias.dtype)
        return True

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.pixel_shift) * self.pixel_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, embeddings = self.forward_parts(images, embed=self.transfer is not None)
        if self.transfer is None:
            return logits
        labels = self.schema.label_slice
        mixed = self.transfer(embeddings, logits[:, labels])
        return torch.cat([mixed.to(logits.dtype), logits[:, labels.stop :]], dim=1)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head's logits from ``forward_features`` output (pooled first for a pooled head)."""
        if getattr(self.head, "pooled", True):
            features = self.backbone.forward_head(features, pre_logits=True)
        return self.head(features)

    def forward_parts(
        self, images: torch.Tensor, embed: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's logits (no label transfer) and, with ``embed``, label transfer's embedding."""
        pixels = self.normalize(images)
        features = self.backbone.forward_features(pixels)
        pooled = None
        if embed or getattr(self.head, "pooled", True):
            pooled = self.backbone.forward_head(features, pre_logits=True)
        logits = self.head(pooled if getattr(self.head, "pooled", True) else features)
        return logits, self.embedding(pixels, pooled) if embed else None

    def embedding(self, pixels: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """What label transfer compares: the pooled features, joined by the reference backbone's if any.

        ``pixels`` are the normalised images, ``pooled`` the backbone's pooled
        features of them. With a reference backbone the two feature vectors
        are each L2-normalised before they are joined, so that the cosine
        similarity of two embeddings is the mean of the two networks' own.
        """
        if self.reference is None:
            return pooled
        reference = self.reference.forward_head(self.reference.forward_features(pixels), pre_logits=True)
        unit = [nn.functional.normalize(f.float(), dim=1) for f in (pooled, reference)]
        return torch.cat(unit, dim=1).to(pooled.dtype)


def build_classifier(
    schema: LabelSchema,
    config: ModelConfig | None = None,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> Classifier:
    """A classifier for ``schema``; backbone weights random, timm's (``pretrained``) or a local file."""
    config = config or ModelConfig()
    backbone = create_backbone(
        config.backbone,
        pretrained=pretrained,
        weights=weights,
        in_chans=config.in_chans,
        drop_rate=config.drop_rate,
    )
    # Pooled heads read forward_head(pre_logits=True), which for timm models with a hidden
    # pre-logits layer (MobileNetV3, ...) has head_hidden_size features; unpooled heads read
    # forward_features, which has num_features channels.
    width = backbone.num_features
    if is_pooled(config.head):
        width = getattr(backbone, "head_hidden_size", None) or width
    head = create_head(config.head, width, schema.num_outputs, **config.head_kwargs)
    transfer, reference = None, None
    if config.transfer is not None:
        options = dict(config.transfer)
        if options.pop("reference", False):  # its pretrained weights come with the model's
            reference = reference_backbone(config.backbone, in_chans=config.in_chans)
        transfer = LabelTransfer(options.pop("size"), options.pop("dim"), schema.n_labels, **options)
    return Classifier(backbone, head, schema, config, mean, std, transfer, reference)


def reference_backbone(
    name: str, *, pretrained: bool = False, weights: str | Path | None = None, in_chans: int = 3
) -> nn.Module:
    """A frozen backbone for label transfer's embedding (``Classifier.reference``), in eval mode."""
    backbone = create_backbone(name, pretrained=pretrained, weights=weights, in_chans=in_chans)
    return backbone.eval().requires_grad_(False)
