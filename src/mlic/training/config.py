"""Training options: one declaration each, grouped, with its help text beside it.

Every option of a run is a field of ``TrainConfig`` declared with
:func:`option`: its default, its help, its group (``GROUPS``) and, where the
command line spells it differently, its flag. From these declarations come
the ``mlic train`` command's options (``mlic.cli.train``), the YAML file that
``--config`` reads and ``--print-config`` prints, the run's ``config.json``
and the keyword options of ``mlic.train``; adding an option is one field here.

Options whose default depends on the data or the weights (input size,
augmentation, flips, batch size and the backbone's learning-rate share,
precision, loader processes) default to None and are filled in by
:func:`mlic.training.defaults.resolve`, so that ``config.json`` holds what the
run used. ``--resume`` may change only the options in ``RESUMABLE``.

This module imports nothing heavy: the command line reads it at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mlic.errors import ConfigError

GROUPS = ("data", "model", "loss", "optimisation", "runtime")
DEMO = "demo"
"""The data name of MultiDigits (``mlic.data.formats.demo.DEMO``)."""
MAX_IMAGE_PIXELS = 89_478_485
"""``mlic.data.images.MAX_IMAGE_PIXELS``, repeated here so the command line starts without torch (a test
checks that the two agree)."""
TRANSFER = ("auto", "off")
"""Values of ``transfer``: label transfer where it adds validation mAP (``training.transfer``), or none."""
CALIBRATIONS = ("auto", "off", "temperature", "platt")
"""Values of ``calibration``: ``auto`` (the default) fits per-label temperatures on validation and keeps
them only where cross-validation on the validation images shows the ECE falling
(``mlic.models.calibration.choose_calibration``); ``temperature`` and ``platt`` always keep the map;
``off`` fits none. Measured on held-out test images: models trained with BCE on photos were calibrated
already (macro ECE 0.0045 on Corel-5k, 0.0052 on apparel; no monotone map lowered it by more than 6%,
and ``auto`` leaves them alone), MultiDigits fell 37% and a Corel-5k model trained with ``asl`` 90%
(``auto`` keeps both)."""
AUTO_CACHE_SHARE = 0.25
"""The share of available memory that the decoded-image cache may take when ``cache_images`` is None."""
RESUMABLE = (
    "max_epochs", "devices", "num_nodes", "strategy", "accelerator", "num_workers",
    "checkpoint_steps", "checkpoint_minutes", "progress",
)  # fmt: skip
"""Options that ``--resume`` may change: how long and where the run goes on, not what it trains."""
LOGGERS = ("csv", "tensorboard", "mlflow")
"""Values of ``logger``: where the per-epoch figures go. ``logs/metrics.csv`` is written whatever the choice
(the run's own readers need it), so ``csv`` adds nothing to it; ``tensorboard`` and ``mlflow`` add those
trackers (``mlic.training.trackers``), which need the ``track`` extra."""


def option(
    default: Any = None,
    help: str = "",
    *,
    group: str,
    flag: str | None = None,
    cli: Callable[[Any], Any] | None = None,
    cli_type: Any = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare one training option: a dataclass field carrying what the command line needs.

    ``flag``: the command-line spelling when it is not ``--field-name`` (a bool
    gets ``--name/--no-name``); ``cli_type`` and ``cli``: the type the command
    line reads and the function that turns it into the option's value
    (``NAME=VALUE`` pairs into a dict, ``0`` into no limit).
    """
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    metadata = {"help": help, "group": group, "flag": flag, "cli": cli, "cli_type": cli_type}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_options(items: list[str] | None) -> dict:
    """``NAME=VALUE`` strings as a dict; a VALUE that reads as JSON (2, 0.5, true, [1, 99]) is parsed."""
    options: dict = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"option {item!r} is not NAME=VALUE")
        try:
            options[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[name.strip()] = value
    return options


def parse_pos_weight(value: str | float) -> float | str:
    """``--pos-weight``: a number, or ``auto``."""
    if value == "auto":
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--pos-weight takes a number or 'auto', got {value!r}") from None


def no_limit_at_zero(value: int | None) -> int | None:
    """``--max-image-pixels 0``: no limit."""
    return value or None


@dataclass
class TrainConfig:
    """Every training option; saved, resolved, as the run's ``config.json`` (which ``--resume`` reads)."""

    # -- data ------------------------------------------------------------------------------------------
    data: str | None = option(
        None, "Training data file or folder; omit (or 'demo') to train MultiDigits.", group="data"
    )
    val_data: str | None = option(
        None, "Validation data; default: --val-fraction split off --data (MultiDigits has its own).",
        group="data", flag="--val",
    )  # fmt: skip
    val_fraction: float = option(
        0.1, "Share of --data set aside for validation when --val is not given (stratified).", group="data"
    )
    format: str | None = option(
        None, "Force the data format: csv-tags, csv-multihot, jsonl, coco, voc or folders.", group="data"
    )
    images_root: str | None = option(
        None, "Folder that relative image paths resolve against (default: the data file's folder; "
        "VOC: JPEGImages/; COCO: also tries the usual layouts).", group="data",
    )  # fmt: skip
    tag_separator: str = option(" ", "Separator of the tags column in a tags CSV.", group="data")
    drop_unannotated: bool = option(
        False, "COCO: leave out images without annotations (default: all-negative).", group="data"
    )
    image_size: int | None = option(
        None, "Square input size (default 64 on MultiDigits, 224 else).", group="data"
    )
    augment: str | None = option(
        None, "Training augmentation: light, trivial (light + TrivialAugment), shift or none "
        "(default shift on MultiDigits, light else).",
        group="data",
    )  # fmt: skip
    resize: str = option(
        "crop", "How prediction fits an image to the input: crop (cover, keep the centre; aspect kept) or "
        "squash (stretch the whole image).", group="data",
    )  # fmt: skip
    hflip: bool | None = option(
        None, "Mirror images in training (default: yes, except on MultiDigits, whose mirrored digits are "
        "other digits).", group="data", flag="--hflip/--no-hflip",
    )  # fmt: skip
    bad_images: str = option(
        "skip", "Unreadable images: skip (listed in RUN/bad_images.txt) or fail.", group="data"
    )
    cache_images: bool | None = option(
        None, "Decode the training images into memory once; default: when they fit in a quarter of the "
        "memory available and training runs in one process.", group="data",
        flag="--cache-images/--no-cache-images",
    )  # fmt: skip
    max_image_pixels: int | None = option(
        MAX_IMAGE_PIXELS, "Refuse larger images unread (default 89,478,485, Pillow's limit; 0: none).",
        group="data", cli=no_limit_at_zero, cli_type=int | None,
    )  # fmt: skip
    repeat_threshold: float = option(
        0.0, "Repeat-factor sampling (LVIS): an image whose rarest label is on a share f of the training "
        "images is drawn max(1, sqrt(T / f)) times as often, epochs keep their length; 0: off (LVIS: 0.001).",
        group="data",
    )  # fmt: skip
    progressive_resize: float = option(
        0.0, "Progressive resizing: train the first epoch at this share of the input size (e.g. 0.6), "
        "growing linearly to the full size in the last; 0: off.", group="data",
    )  # fmt: skip
    hide_positives: float = option(
        0.0, "Simulate incomplete labels: hide this share of the train and val positives (seeded).",
        group="data",
    )  # fmt: skip
    hidden_as: str = option(
        "unknown", "Hidden positives become 'unknown' (-1) or 'negative' (silently missing).", group="data"
    )
    demo_train: int = option(10_000, "MultiDigits training canvases.", group="data")
    demo_val: int = option(1_000, "MultiDigits validation canvases.", group="data")

    # -- model -----------------------------------------------------------------------------------------
    backbone: str = option("mlic_cnn", "Any timm model name.", group="model")
    pretrained: bool = option(False, "Start from timm's pretrained weights (downloads).", group="model")
    weights: str | None = option(None, "Local backbone weights file (offline).", group="model")
    head: str = option("linear", "Classifier head: linear, csra or ml-decoder.", group="model")
    head_options: dict = option(
        help="Head option NAME=VALUE, repeatable (e.g. num_groups=100).", group="model",
        flag="--head-option", cli=parse_options, cli_type=list[str] | None, factory=dict,
    )  # fmt: skip
    prior_bias: bool | None = option(
        None, "Start the head's label biases at the log-odds of each label's training frequency (default: "
        "yes fine-tuning pretrained weights, else no; not with --head csra, which has no biases).",
        group="model", flag="--prior-bias/--no-prior-bias",
    )  # fmt: skip
    transfer: str = option(
        "auto", "Label transfer from the nearest training images: auto (kept where it adds validation mAP) "
        "or off.", group="model",
    )  # fmt: skip
    calibration: str = option(
        "auto", "Probability calibration fitted on validation after training: auto (temperatures kept where "
        "5-fold cross-validation on the validation images shows the ECE falling), off, temperature (one per "
        "label and attribute, always kept) or platt (scale and bias per label); thresholded decisions are "
        "unchanged either way.",
        group="model",
    )  # fmt: skip

    # -- loss ------------------------------------------------------------------------------------------
    loss: str = option("bce", "Label loss: bce, focal, asl, hill or splc.", group="loss")
    loss_options: dict = option(
        help="Loss option NAME=VALUE, repeatable (e.g. gamma_neg=4).", group="loss",
        flag="--loss-option", cli=parse_options, cli_type=list[str] | None, factory=dict,
    )  # fmt: skip
    pos_weight: float | str = option(
        1.0, "Weight w_p of positives: a number, or 'auto' (negatives/positives per label).",
        group="loss", cli=parse_pos_weight, cli_type=str,
    )  # fmt: skip
    max_pos_weight: float = option(100.0, "Upper bound of --pos-weight auto.", group="loss")
    neg_weight: float | None = option(
        None, "Weight w_n of negative label targets (default 0.5 fine-tuning pretrained weights on "
        "mostly rare labels, whose priors average under 5%; else 1).",
        group="loss",
    )  # fmt: skip
    label_smoothing: float = option(0.0, "Label smoothing epsilon for labels.", group="loss")
    missing: str = option(
        "ignore", "Unknown (-1) targets: ignore (masked), negative or selective.", group="loss"
    )
    missing_weight: float = option(1.0, "Weight of unknowns taken as negatives.", group="loss")

    # -- optimisation ----------------------------------------------------------------------------------
    max_epochs: int = option(12, "Epochs.", group="optimisation")
    batch_size: int | None = option(
        None, "Images per step (default 32 fine-tuning pretrained weights, else 128).", group="optimisation"
    )
    lr: float = option(3e-3, "Peak learning rate of AdamW (cosine schedule).", group="optimisation")
    backbone_lr_scale: float | None = option(
        None, "The backbone's learning rate as a share of --lr (the head's); default 1/3 fine-tuning "
        "pretrained weights (they need less change than a new head), else 1.", group="optimisation",
    )  # fmt: skip
    weight_decay: float = option(0.05, "AdamW weight decay (not on biases and norms).", group="optimisation")
    warmup_epochs: float = option(1.0, "Epochs of linear learning-rate warm-up.", group="optimisation")
    ema: float = option(
        0.0, "Decay of an exponential moving average of the weights, updated each step after the warm-up "
        "and validated and kept instead of them (0: off; e.g. 0.99).", group="optimisation",
    )  # fmt: skip
    seed: int = option(
        0, "Seed of the split, the order, the augmentation and the weights.", group="optimisation"
    )
    refit: bool = option(
        False, "After training, train again from the start on the training and validation images together "
        "for as many epochs, keeping the decision rule, calibration and label-transfer setting chosen on "
        "validation (RUN/validated keeps the first model; twice the training time; files, one process).",
        group="optimisation", flag="--refit/--no-refit",
    )  # fmt: skip

    # -- runtime ---------------------------------------------------------------------------------------
    out: str | None = option(None, "Run directory (default: runs/<date>-<time>).", group="runtime")
    accelerator: str = option(
        "auto",
        "auto (a CUDA GPU when one is visible, else the CPU), cpu, gpu, or another of Lightning's (mps).",
        group="runtime",
    )
    devices: str | int = option(
        "1", "Device count, 'auto' or a list like 0,1.", group="runtime", cli_type=str
    )
    num_nodes: int = option(1, "Machines (Lightning; under SLURM or torchrun).", group="runtime")
    strategy: str = option("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...", group="runtime")
    precision: str | None = option(
        None, "Lightning precision (default: bf16-mixed where supported, else 32-true).", group="runtime"
    )
    compile: bool = option(False, "torch.compile the model (GPU; slower on CPUs).", group="runtime")
    channels_last: bool = option(
        True, "Channels-last memory format.", group="runtime", flag="--channels-last/--no-channels-last"
    )
    num_workers: int | None = option(
        None, "Data loader processes (default: 0 on MultiDigits, else one per core, at most 8).",
        group="runtime", flag="--workers",
    )  # fmt: skip
    deterministic: bool = option(
        False, "Deterministic algorithms only: the same seed gives the same weights.", group="runtime"
    )
    checkpoint_steps: int = option(
        0, "Also checkpoint every N steps within an epoch (0: by --checkpoint-minutes).", group="runtime"
    )
    checkpoint_minutes: float = option(
        10.0, "Also checkpoint every M minutes within an epoch (0: at epoch ends only).", group="runtime"
    )
    progress: bool = option(True, "Show a progress bar and the model summary.", group="runtime",
                            flag="--progress/--no-progress")  # fmt: skip
    logger: list[str] = option(
        help="Experiment tracker, repeatable: csv (RUN/logs/metrics.csv, always written), tensorboard "
        "(RUN/logs/tensorboard) or mlflow (a local store in RUN/logs/mlflow.db, or --mlflow-uri); the "
        "configuration, per-epoch figures and final validation figures go to each. Needs mlic[track].",
        group="runtime", flag="--logger", cli=list, cli_type=list[str] | None, factory=lambda: ["csv"],
    )  # fmt: skip
    mlflow_uri: str | None = option(
        None, "MLflow tracking URI for --logger mlflow (default: $MLFLOW_TRACKING_URI if set, else the "
        "run's own sqlite:///RUN/logs/mlflow.db).", group="runtime",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.transfer not in TRANSFER:
            raise ConfigError(f"transfer must be one of {list(TRANSFER)}, got {self.transfer!r}")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {list(CALIBRATIONS)}, got {self.calibration!r}")
        unknown = [name for name in self.logger if name not in LOGGERS]
        if unknown:
            raise ConfigError(f"logger must be among {list(LOGGERS)}, got {unknown[0]!r}")
        if not 0.0 <= self.repeat_threshold <= 1.0:
            raise ConfigError(f"repeat_threshold must lie in [0, 1], got {self.repeat_threshold!r}")
        if not (self.progressive_resize == 0.0 or 0.1 <= self.progressive_resize <= 1.0):
            raise ConfigError(
                f"progressive_resize must be 0 (off) or lie in [0.1, 1], got {self.progressive_resize!r}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must lie in [0, 1), got {self.ema!r}")
        if self.backbone_lr_scale is not None and not self.backbone_lr_scale > 0:
            raise ConfigError(f"backbone_lr_scale must be positive, got {self.backbone_lr_scale!r}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from option names and values; an unknown name or a value of the wrong type is an error."""
        check_names(data)
        return cls(**{name: check_value(name, value) for name, value in data.items()})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resumed(self, changes: dict) -> TrainConfig:
        """This (saved) config with ``changes``, which may only touch ``RESUMABLE`` options."""
        check_names(changes)
        fixed = [name for name in changes if name not in RESUMABLE]
        if fixed:
            raise ConfigError(
                f"option {fixed[0]!r} cannot change when resuming a run (it would not continue the same "
                f"training); these may: {', '.join(RESUMABLE)}"
            )
        return dataclasses.replace(self, **{k: check_value(k, v) for k, v in changes.items()})


OPTIONS: dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}
"""Every option's declaration by name, in declaration (group) order."""
_HINTS = typing.get_type_hints(TrainConfig)


def check_names(data: dict) -> None:
    """Refuse option names that ``TrainConfig`` does not declare, suggesting the closest."""
    unknown = [name for name in data if name not in OPTIONS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), OPTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown training options {unknown}{hint}; valid: {', '.join(OPTIONS)}")


def check_value(name: str, value: Any) -> Any:
    """``value`` if it has the declared type of option ``name`` (ints pass as floats; a float written as
    text, such as YAML's ``3e-3``, is read); otherwise a ``ConfigError`` naming the option."""
    allowed = _allowed_types(_HINTS[name])
    if value is None and type(None) in allowed:
        return value
    if float in allowed and isinstance(value, str) and str not in allowed:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    ok = any(
        isinstance(value, t) and not (isinstance(value, bool) and t in (int, float))
        for t in allowed
        if t is not type(None)
    )
    if isinstance(value, int) and not isinstance(value, bool) and float in allowed:
        ok = True
    if not ok:
        expected = " or ".join(_WORDS.get(t, t.__name__) for t in allowed)
        raise ConfigError(f"option {name!r} must be {expected}, got {value!r}")
    return float(value) if float in allowed and int not in allowed and isinstance(value, int) else value


_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string", dict: "a mapping",
          list: "a list", type(None): "null"}  # fmt: skip


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
    return (typing.get_origin(hint) or hint,)


def is_demo(config: TrainConfig) -> bool:
    """Whether the run trains MultiDigits."""
    return config.data is None or config.data == DEMO


def loss_summary(config: TrainConfig) -> dict:
    """The loss settings recorded in the artifact and shown by ``mlic evaluate``."""
    summary = {"name": config.loss, **config.loss_options, "pos_weight": config.pos_weight,
               "neg_weight": config.neg_weight, "label_smoothing": config.label_smoothing,
               "missing": config.missing}  # fmt: skip
    if config.pos_weight == "auto":
        summary["max_pos_weight"] = config.max_pos_weight
    if config.missing != "ignore":
        summary["missing_weight"] = config.missing_weight
    if config.hide_positives:
        summary["hidden_positives"] = {"fraction": config.hide_positives, "as": config.hidden_as}
    return summary


def parse_devices(devices: str | int) -> int | str | list[int]:
    """Lightning's devices: a count, "auto", or a comma-separated list of indices."""
    text = str(devices)
    if text == "auto" or text.lstrip("-").isdigit():
        return text if text == "auto" else int(text)
    try:
        return [int(d) for d in text.split(",") if d]
    except ValueError:
        raise ConfigError(f"devices must be a count, 'auto' or a list like '0,1'; got {devices!r}") from None


def read_run_config(run_dir: Path) -> TrainConfig:
    """The config a run saved (its ``config.json``)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json); pass the folder train wrote")
    return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


# -- YAML -------------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict:
    """The options of a YAML file (flat ``name: value`` pairs, as ``--print-config`` writes them)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the file ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    try:
        check_names(data)
        return {name: check_value(name, value) for name, value in data.items()}
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_yaml(config: TrainConfig) -> str:
    """The config as YAML: flat ``name: value`` lines under a ``# group`` comment per group, in declaration
    order (what ``read_config_file`` reads back)."""
    import yaml

    values = config.to_dict()
    lines: list[str] = []
    for group in GROUPS:
        lines.append(f"# {group}")
        for name, f in OPTIONS.items():
            if f.metadata["group"] == group:
                pair = {name: values[name]}
                lines.append(yaml.safe_dump(pair, default_flow_style=False, width=1000).strip())
    return "\n".join(lines) + "\n"
