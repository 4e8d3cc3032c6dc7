"""The artifact: everything needed to use a trained model, in one directory.

``model.safetensors`` holds the weights; ``mlic.json`` holds the schema, the
model and preprocessing config, the decision rule (its per-label thresholds
under ``thresholds``, the rest under ``decision``), a checksum of the weights
and a training summary; ``README.md``, the model card (``mlic.card``), is
rewritten with every ``mlic.json`` and never read on load. Predict, evaluate, calibrate, export and serve read
artifacts and nothing else. Loading never unpickles anything.

In memory the decision rule is one ``Decision`` (``Artifact.decision``); the
file keeps the layout of format version 1, so artifacts written before and
after this layout read both ways.

An artifact whose probabilities are calibrated (``mlic.models.calibration``)
keeps the map under ``calibration`` and is written as format version 2, so
that an mlic too old to apply it refuses the artifact instead of reading its
re-expressed thresholds against uncalibrated probabilities; without
calibration it is written as version 1, as before. An artifact whose label
transfer compares images with a frozen copy of the pretrained backbone as well
(``model.transfer.reference``, its weights under ``reference.`` in
``model.safetensors``) is written as format version 3, for the same reason.

An artifact that training wrote also holds ``history.csv``: the run's figures
per epoch (``epoch``, ``train/loss``, ``val/loss``, ``val/mAP``, ...), so that
the evaluation report draws the training curves after the run directory is
gone. It is optional, and nothing but the report reads it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save

from mlic.card import write_card
from mlic.data.images import RESIZES, Preprocessing
from mlic.errors import ArtifactError, ConfigError
from mlic.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from mlic.models import Classifier, ModelConfig, build_classifier
from mlic.models.calibration import Calibration
from mlic.schema import LabelSchema
from mlic.thresholds import POLICIES, Decision

FORMAT = "mlic-artifact"
FORMAT_VERSION = 3
"""The newest format this mlic reads (and writes, for label transfer with a reference backbone)."""
CALIBRATED_FORMAT_VERSION = 2
"""The format of a calibrated artifact without a reference backbone."""
UNCALIBRATED_FORMAT_VERSION = 1
"""The format of an artifact without calibration: what mlic wrote before calibration existed."""
CONFIG_FILE = "mlic.json"
WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.csv"
MAX_INPUT_SIDE = 8192
"""The largest input side an artifact may describe (a guard against a damaged size allocating memory)."""
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")


@dataclass
class Artifact:
    """A trained model on disk: its description, and the weights it builds the network from."""

    path: Path
    schema: LabelSchema
    model: ModelConfig
    preprocessing: Preprocessing
    decision: Decision
    """How scores become labels: policy (per-label, global, fixed, top-k), thresholds, k, and where chosen."""
    training: dict = field(default_factory=dict)
    weights_sha256: str = ""
    exports: dict = field(default_factory=dict)
    """Exported copies of the model by format (``{"onnx": {"file", "sha256", ...}}``; see ``mlic.export``)."""
    calibration: Calibration | None = None
    """The map of logits that calibrates the probabilities (None: uncalibrated); the thresholds of
    ``decision`` are on the calibrated probabilities."""

    @property
    def thresholds(self) -> np.ndarray:
        """The per-label thresholds of the decision rule."""
        return self.decision.thresholds

    def build_model(self) -> Classifier:
        """The network with the artifact's weights, in eval mode, on CPU."""
        weights = self.path / WEIGHTS_FILE
        if not weights.is_file():
            raise ArtifactError(f"{self.path}: {WEIGHTS_FILE} is missing")
        if self.weights_sha256 and sha256_file(weights) != self.weights_sha256:
            raise ArtifactError(
                f"{weights}: checksum does not match {CONFIG_FILE}; the file is corrupt or was replaced"
            )
        try:
            model = build_classifier(
                self.schema, self.model, mean=self.preprocessing.mean, std=self.preprocessing.std
            )
        except (ConfigError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"{self.path / CONFIG_FILE}: cannot build the model it describes ({e})"
            ) from None
        try:
            model.load_state_dict(load_file(str(weights)))
        except Exception as e:  # safetensors raises several types for a damaged file
            raise ArtifactError(f"{weights}: cannot load weights ({e})") from None
        return model.eval()

    def format_version(self) -> int:
        """The oldest format that holds everything this artifact keeps (see the module docstring)."""
        if (self.model.transfer or {}).get("reference"):
            return FORMAT_VERSION
        return CALIBRATED_FORMAT_VERSION if self.calibration else UNCALIBRATED_FORMAT_VERSION

    def to_dict(self) -> dict:
        data = {
            "format": FORMAT,
            "format_version": self.format_version(),
            "schema": self.schema.to_dict(),
            "model": self.model.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "thresholds": dict(zip(self.schema.labels, map(float, self.decision.thresholds))),
            "decision": self.decision.to_dict(),
            "weights": {"file": WEIGHTS_FILE, "sha256": self.weights_sha256},
            "training": self.training,
        }
        if self.decision.priors is not None:  # absent in artifacts written before top-k balance
            data["label_priors"] = dict(zip(self.schema.labels, map(float, self.decision.priors)))
        if self.exports:  # absent when empty, so an artifact without exports reads as before
            data["exports"] = self.exports
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_dict(self.schema)
        return data

    def save_config(self) -> None:
        """Rewrite ``mlic.json`` atomically (e.g. after new thresholds were chosen), then the model card
        ``README.md`` that describes it (``mlic.card``)."""
        atomic_write_text(self.path / CONFIG_FILE, json.dumps(self.to_dict(), indent=2) + "\n")
        write_card(self)


def save_artifact(
    path: str | Path,
    model: Classifier,
    preprocessing: Preprocessing,
    decision: Decision | np.ndarray,
    *,
    training: dict | None = None,
    calibration: Calibration | None = None,
) -> Artifact:
    """Write weights, then ``mlic.json`` (which names their checksum), each atomically.

    ``decision`` is a :class:`Decision`, or per-label thresholds (policy per-label); with
    ``calibration``, its thresholds are on the calibrated probabilities.
    """
    if not isinstance(decision, Decision):
        decision = Decision("per-label", np.asarray(decision, dtype=np.float64))
    decision = replace(decision, thresholds=np.asarray(decision.thresholds, dtype=np.float64))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path / WEIGHTS_FILE, save(state))
    artifact = Artifact(
        path,
        model.schema,
        model.config,
        preprocessing,
        decision,
        training or {},
        sha256_file(path / WEIGHTS_FILE),
        calibration=calibration,
    )
    artifact.save_config()
    return artifact


def save_history(path: str | Path, rows: list[dict[str, float]]) -> None:
    """Write the per-epoch figures of the run (one dict per epoch) as ``history.csv``; nothing if none."""
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path) / HISTORY_FILE, text.getvalue())


def load_history(path: str | Path) -> dict[str, np.ndarray] | None:
    """The artifact's ``history.csv`` as one float array per column (NaN where a figure was not logged),
    rows in epoch order; None when the artifact has none or it cannot be read (it is only drawn)."""
    file = Path(path) / HISTORY_FILE
    try:
        with open(file, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {k: np.array([float(r[k]) if r.get(k) else np.nan for r in rows]) for k in rows[0]}
    except (OSError, ValueError, TypeError, IndexError, UnicodeDecodeError, csv.Error):
        return None
    if "epoch" not in columns:
        return None
    order = np.argsort(columns["epoch"], kind="stable")
    return {k: v[order] for k, v in columns.items()}


def load_artifact(path: str | Path) -> Artifact:
    """Read an artifact directory (a run directory or ``mlic.json`` itself also do)."""
    path = Path(path)
    if path.name == CONFIG_FILE:
        path = path.parent
    if not (path / CONFIG_FILE).is_file() and (path / "artifact" / CONFIG_FILE).is_file():
        path = path / "artifact"
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise ArtifactError(
            f"{path}: not an mlic artifact (no {CONFIG_FILE}); pass the directory that `mlic train` printed"
        )
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{config_file}: not valid JSON ({e}); the file is damaged") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"{config_file}: not an mlic artifact description")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{config_file}: field 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{config_file}: format version {data['format_version']} is newer than "
            f"this mlic understands ({FORMAT_VERSION}); upgrade mlic"
        )
    try:
        schema = LabelSchema.from_dict(data["schema"])
        thresholds = np.array([_number(data["thresholds"][name]) for name in schema.labels], dtype=np.float64)
        priors = _priors(data.get("label_priors"), schema.labels)
        return Artifact(
            path,
            schema,
            _model_config(data["model"]),
            _preprocessing(data["preprocessing"]),
            _decision(data.get("decision"), thresholds, priors),
            _mapping(data.get("training", {}), "training"),
            _text(_mapping(data.get("weights", {}), "weights").get("sha256", ""), "weights.sha256"),
            _exports(data.get("exports")),
            None if data.get("calibration") is None else Calibration.from_dict(data["calibration"], schema),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(f"{config_file}: missing or malformed field ({e!r})") from None


# -- field checks: mlic.json may have been edited or damaged by hand -----------------------------------


def _mapping(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{field} must be an object, got {value!r}")
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, got {value!r}")
    return value


def _number(value: object, field: str = "thresholds", low: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < math.inf:
        raise ValueError(f"{field} must hold finite numbers (>= {low}), got {value!r}")
    return float(value)


def _model_config(value: object) -> ModelConfig:
    data = _mapping(value, "model")
    for name in ("backbone", "head"):
        _text(data.get(name, ""), f"model.{name}")
    _mapping(data.get("head_kwargs", {}), "model.head_kwargs")
    _number(data.get("drop_rate", 0.0), "model.drop_rate", low=0.0)
    if data.get("transfer") is not None:
        _transfer(_mapping(data["transfer"], "model.transfer"))
    return ModelConfig.from_dict(data)


def _transfer(data: dict) -> None:
    """``model.transfer``: the label-transfer bank's shape and its mixing settings."""
    required = {"size", "dim", "k", "temperature", "alpha"}
    if not required <= set(data) <= required | {"reference"}:
        raise ValueError(
            f"model.transfer must hold size, dim, k, temperature and alpha (and optionally "
            f"reference), got {sorted(data)}"
        )
    if not isinstance(data.get("reference", False), bool):
        raise ValueError(f"model.transfer.reference must be true or false, got {data['reference']!r}")
    for name in ("size", "dim", "k"):
        if isinstance(data[name], bool) or not isinstance(data[name], int) or not 1 <= data[name] <= 2**31:
            raise ValueError(f"model.transfer.{name} must be a positive integer, got {data[name]!r}")
    if _number(data["temperature"], "model.transfer.temperature") <= 0:
        raise ValueError(f"model.transfer.temperature must be positive, got {data['temperature']!r}")
    if not 0.0 <= _number(data["alpha"], "model.transfer.alpha") <= 1.0:
        raise ValueError(f"model.transfer.alpha must lie in [0, 1], got {data['alpha']!r}")


def _preprocessing(value: object) -> Preprocessing:
    data = _mapping(value, "preprocessing")
    for name, length in (("image_size", 2), ("mean", 3), ("std", 3)):
        if name in data and not (isinstance(data[name], list) and len(data[name]) == length):
            raise ValueError(f"preprocessing.{name} must be a list of {length} numbers, got {data[name]!r}")
    pre = Preprocessing.from_dict(data)
    for size in pre.image_size:
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_INPUT_SIDE:
            raise ValueError(
                f"preprocessing.image_size must be integers in 1..{MAX_INPUT_SIDE}, got {size!r}"
            )
    for x in pre.mean:
        _number(x, "preprocessing.mean")
    for x in pre.std:
        if _number(x, "preprocessing.std") <= 0:
            raise ValueError(f"preprocessing.std must be positive, got {x!r}")
    if pre.interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"preprocessing.interpolation must be one of {INTERPOLATIONS}, got {pre.interpolation!r}"
        )
    if not isinstance(pre.hflip, bool):
        raise TypeError(f"preprocessing.hflip must be true or false, got {pre.hflip!r}")
    if pre.resize not in RESIZES:
        raise ValueError(f"preprocessing.resize must be one of {RESIZES}, got {pre.resize!r}")
    return pre


def _priors(value: object, labels: tuple[str, ...]) -> np.ndarray | None:
    """The ``label_priors`` field (by label name) in label order; None where absent."""
    if value is None:
        return None
    data = _mapping(value, "label_priors")
    priors = np.array([_number(data[name], "label_priors") for name in labels], dtype=np.float64)
    if not ((priors > 0) & (priors <= 1)).all():
        raise ValueError("label_priors must lie in (0, 1]")
    return priors


def _decision(value: object, thresholds: np.ndarray, priors: np.ndarray | None = None) -> Decision:
    """The ``decision`` field and the thresholds as one rule (``per-label`` when the field is absent)."""
    rest = dict(_mapping(value or {"policy": "per-label"}, "decision"))
    policy, k = rest.pop("policy", None), rest.pop("k", None)
    if policy not in POLICIES:
        raise ValueError(f"decision.policy must be one of {POLICIES}, got {policy!r}")
    if policy == "top-k" and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"decision.k must be a positive integer for top-k, got {k!r}")
    min_precision, min_positives = rest.pop("min_precision", None), rest.pop("min_positives", None)
    shrinkage, chosen_by = rest.pop("shrinkage", None), rest.pop("chosen_by", None)
    balance = _number(rest.pop("balance", 0.0), "decision.balance", low=0.0)
    if balance and priors is None:
        raise ValueError("decision.balance needs label_priors")
    return Decision(
        policy, thresholds, k, min_precision, min_positives, shrinkage, chosen_by, source=rest,
        priors=priors, balance=balance,
    )  # fmt: skip


def _exports(value: object) -> dict:
    """The ``exports`` field: a dict of dicts by format (absent in artifacts written before exports)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(f"exports must map formats to records, got {value!r}")
    return dict(value)
