"""mlic: multi-label image classification.

Every image carries any number of independent yes/no **labels** (one sigmoid
each) and optionally **attributes** with exclusive classes (one softmax each).

    >>> import mlic
    >>> artifact = mlic.train(max_epochs=12)           # MultiDigits, on CPU
    >>> mlic.evaluate(artifact, "demo")["mAP"]
    >>> mlic.load(artifact).predict(["image.png"])
"""

from mlic.artifact import Artifact, load_artifact
from mlic.errors import ArtifactError, ConfigError, DataError, MlicError, SchemaError
from mlic.evaluation import evaluate
from mlic.predict import Predictor, load
from mlic.schema import Attribute, LabelSchema
from mlic.training import TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "ArtifactError",
    "Attribute",
    "ConfigError",
    "DataError",
    "LabelSchema",
    "MlicError",
    "Predictor",
    "SchemaError",
    "TrainConfig",
    "__version__",
    "evaluate",
    "load",
    "load_artifact",
    "train",
]
