"""mlic: multi-label image classification.

Every image carries any number of independent yes/no **labels** (one sigmoid
each) and optionally **attributes** with exclusive classes (one softmax each).

    >>> import mlic
    >>> artifact = mlic.train(max_epochs=12)           # MultiDigits, on CPU
    >>> mlic.evaluate(artifact, "demo")["mAP"]
    >>> mlic.load(artifact).predict(["image.png"])
    >>> mlic.audit("labels.csv", "audit")              # likely missing and wrong labels, by K folds
    >>> mlic.apply_audit("audit", "labels-fixed.jsonl")  # the accepted ones, into a new file

The names below load their modules when first used, so ``import mlic`` is
quick, and predicting (``mlic.load``) never imports Lightning or FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mlic.errors import ArtifactError, ConfigError, DataError, MissingExtraError, MlicError, SchemaError
from mlic.schema import Attribute, LabelSchema

if TYPE_CHECKING:
    from mlic.artifact import Artifact, load_artifact
    from mlic.auditing import apply_audit, audit, rank_suggestions
    from mlic.evaluation import evaluate
    from mlic.predict import Predictor, load
    from mlic.training.config import TrainConfig
    from mlic.training.run import train

__version__ = "0.1.0"

_LAZY = {
    "Artifact": "mlic.artifact",
    "load_artifact": "mlic.artifact",
    "audit": "mlic.auditing",
    "apply_audit": "mlic.auditing",
    "rank_suggestions": "mlic.auditing",
    "evaluate": "mlic.evaluation",
    "Predictor": "mlic.predict",
    "load": "mlic.predict",
    "TrainConfig": "mlic.training.config",
    "train": "mlic.training.run",
}
"""Public names and the modules that define them, imported on first use."""


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'mlic' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Artifact",
    "ArtifactError",
    "Attribute",
    "ConfigError",
    "DataError",
    "LabelSchema",
    "MissingExtraError",
    "MlicError",
    "Predictor",
    "SchemaError",
    "TrainConfig",
    "__version__",
    "apply_audit",
    "audit",
    "evaluate",
    "load",
    "load_artifact",
    "rank_suggestions",
    "train",
]
