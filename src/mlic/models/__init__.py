"""Networks: timm backbones, mlic heads and the classifier that joins them."""

from mlic.models.backbones import DEFAULT_BACKBONE, create_backbone
from mlic.models.classifier import Classifier, ModelConfig, build_classifier, reference_backbone
from mlic.models.heads import create_head, list_heads

__all__ = [
    "DEFAULT_BACKBONE",
    "Classifier",
    "ModelConfig",
    "build_classifier",
    "create_backbone",
    "create_head",
    "list_heads",
    "reference_backbone",
]
