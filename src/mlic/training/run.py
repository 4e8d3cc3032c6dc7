"""``train``: one run from options to artifact, through Lightning's Trainer, resumable."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only

from mlic.artifact import CONFIG_FILE, Artifact, load_artifact, save_artifact, save_history
from mlic.data.images import (
    Decoding,
    ImageCache,
    Preprocessing,
    decode_size,
    manifest_images,
    tidy_bad_images,
    worker_error,
)
from mlic.data.manifest import Manifest, concat
from mlic.data.shards import Shards
from mlic.errors import ConfigError, DataError
from mlic.fileio import atomic_write_text
from mlic.inference import run_batches
from mlic.inference.precision import cpu_supports_bf16
from mlic.inference.torch_runtime import Bfloat16Network
from mlic.metrics import calibration_figures
from mlic.models import Classifier, ModelConfig, build_classifier, reference_backbone
from mlic.models.calibration import Calibration, choose_calibration, fit_calibration
from mlic.models.outputs import probabilities
from mlic.schema import LabelSchema
from mlic.thresholds import Decision, choose_balance, choose_thresholds, label_priors
from mlic.training.checkpoints import BEST, LAST, AtomicCheckpointIO, checkpoint_callbacks, load_checkpoint
from mlic.training.config import TrainConfig, loss_summary, parse_devices, read_run_config
from mlic.training.datamodule import DataModule, image_cache, load_splits, training_repeats, training_sizes
from mlic.training.defaults import resolve, resolve_neg_weight, resolve_preprocessing, uses_cuda
from mlic.training.metrics_log import MetricsLog, epoch_history
from mlic.training.module import MultiLabelModule, WarmedUpEMA, build_loss, validation_figures
from mlic.training.trackers import check_trackers, log_final, make_trackers
from mlic.training.transfer import (
    MAX_BANK_BYTES,
    Embedded,
    annotation_size,
    attach_transfer,
    bank_bytes,
    fit_transfer,
)

BAD_IMAGES_FILE = "bad_images.txt"
"""In the run directory: the images skipped as unreadable, one ``path<TAB>reason`` per line."""
VALIDATED = "validated"
"""In a run directory with ``--refit``: the artifact of the training on the training split, whose
decision rule, calibration and label-transfer setting (chosen on validation) the refit keeps."""
REFIT = "refit"
"""In a run directory with ``--refit``: the second training's checkpoints and logs."""


QUIET_WARNINGS = (  # library notices that say nothing to an mlic user
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*is not supported by the model summary.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*dataloader yielded None.*",  # a batch of unreadable images only, skipped; mlic counts them
    r".*lr_scheduler.step\(\)` before `optimizer.step\(\)`.*",  # the same skipped batch, first
    r".*torch.distributed.nn.functional.all_gather is deprecated.*",  # inside Lightning's all_gather
)


def metrics_log(run_dir: Path, resumed: bool) -> MetricsLog:
    """Per-epoch metrics in ``logs/metrics.csv``; a resumed run writes ``logs/resume-N/metrics.csv``.

    A resumed run starts a file of its own, so that the earlier epochs' log
    stays as it was written.
    """
    version = ""
    if resumed:
        n = 1
        while (run_dir / "logs" / f"resume-{n}").exists():
            n += 1
        version = f"resume-{n}"
    return MetricsLog(run_dir / "logs" / version)


def default_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / stamp, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stamp}-{n}"
    return path


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None, **options: object) -> Path:
    """Train a model and return the path of its artifact.

    ``config`` or keyword ``options`` (the fields of ``TrainConfig``) set the
    run; ``resume`` continues the run directory of an interrupted ``train``
    from its last checkpoint, where ``options`` may change only the options
    in ``RESUMABLE`` (epochs, devices, workers, checkpoint intervals, ...).
    The run's ``config.json`` holds the resolved config (``resolve``). With
    ``refit``, the model trained on the training split is kept in
    ``RUN/validated`` and a second one is trained on all images (``refit``).
    """
    if config is not None and (options or resume is not None):
        raise ConfigError("pass either a TrainConfig, or keyword options, or resume= with options")
    if resume is not None:
        run_dir = Path(resume)
        config = read_run_config(run_dir).resumed(options)
    else:
        config = config or TrainConfig.from_dict(options)
        run_dir = Path(config.out) if config.out else default_run_dir()
    config = resolve(replace(config, out=str(run_dir)))
    check_trackers(config.logger)  # a missing package fails before the data is read
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_set, val_set = load_splits(config)
    config = resolve_neg_weight(config, train_set.label_lists)  # the default that follows the labels
    if config.refit and not isinstance(train_set, Manifest):
        raise ConfigError(f"{config.data}: --refit joins image files or MultiDigits, not streamed shards")
    preprocessing = resolve_preprocessing(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        (run_dir / BAD_IMAGES_FILE).unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    validated_dir = run_dir / (VALIDATED if config.refit else "artifact")
    if config.refit and resume is not None and (validated_dir / CONFIG_FILE).is_file():
        validated = load_artifact(validated_dir)  # killed while refitting: the first training is done
    else:
        fitted = fit(config, run_dir, train_set, val_set, preprocessing, resumed=resume is not None)
        if fitted.trainer.global_rank != 0:
            return run_dir / "artifact"
        validated = finish(fitted.module.model, preprocessing, fitted.data, validated_dir, config,
                           fitted.trainer, fitted.seconds)  # fmt: skip
        save_history(validated.path, epoch_history(run_dir / "logs"))  # the report's training curves
        log_final(fitted.trackers, validated, fitted.trainer.global_step)
    artifact = validated
    if config.refit:
        artifact = refit(config, run_dir, concat([train_set, val_set]), val_set, preprocessing, validated)
    if artifact.training["bad_images"]:
        n, listed = artifact.training["bad_images"], run_dir / BAD_IMAGES_FILE
        warnings.warn(f"{n} unreadable image(s) were skipped; they are listed in {listed}", stacklevel=2)
    return artifact.path


@dataclass
class Fitted:
    """A training run's module (with the weights it keeps), data, trainer, trackers and seconds."""

    module: MultiLabelModule
    data: DataModule
    trainer: L.Trainer
    trackers: list
    seconds: float


def fit(
    config: TrainConfig,
    run_dir: Path,
    train_set: Manifest | Shards,
    val_set: Manifest,
    preprocessing: Preprocessing,
    *,
    resumed: bool,
    validate: bool = True,
) -> Fitted:
    """Build the model and train it, checkpointing to ``run_dir/checkpoints``, logging to ``run_dir/logs``.

    The module ends with the weights of the best validation loss, or without
    ``validate`` (a refit, whose validation images are in training) the last.
    ``resumed`` continues from ``run_dir/checkpoints/last.ckpt`` where it exists.
    """
    model = build_classifier(
        train_set.schema,
        ModelConfig(backbone=config.backbone, head=config.head, head_kwargs=dict(config.head_options)),
        pretrained=config.pretrained,
        weights=config.weights,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )
    if config.prior_bias:  # a resumed run then loads its biases from the checkpoint
        model.start_from_priors(training_priors(train_set))
    loss = build_loss(config, train_set)
    module = MultiLabelModule(
        model,
        loss,
        lr=config.lr,
        backbone_lr_scale=config.backbone_lr_scale,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        channels_last=config.channels_last,
        compile=config.compile,
    )
    workers = config.num_workers
    bad_log = Path(config.out) / BAD_IMAGES_FILE
    decoding = Decoding(decode_size(preprocessing), config.max_image_pixels, config.bad_images,
                        str(bad_log) if config.bad_images == "skip" else None)  # fmt: skip
    cache = image_cache(config, train_set, preprocessing, workers)
    data = DataModule(
        train_set, val_set, preprocessing, batch_size=config.batch_size, num_workers=workers,
        augment=config.augment, decoding=decoding, cache=cache, pin_memory=uses_cuda(config),
        seed=config.seed, repeats=training_repeats(config, train_set),
        sizes=training_sizes(config, preprocessing.image_size),
    )  # fmt: skip
    trackers = make_trackers(config, run_dir, resumed=resumed)
    checkpoints = run_dir / "checkpoints"
    callbacks = checkpoint_callbacks(
        checkpoints, steps=config.checkpoint_steps, minutes=config.checkpoint_minutes, best=validate
    )
    if config.ema:  # before the checkpoint writers, which must save the average of the step they write
        callbacks.insert(0, WarmedUpEMA(decay=config.ema))
    trainer = make_trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=parse_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        use_distributed_sampler=False,  # DataModule shards; validation without Lightning's padding
        precision=config.precision,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=[metrics_log(run_dir, resumed=resumed), *trackers],
        deterministic=config.deterministic,
        enable_progress_bar=config.progress,
        enable_model_summary=config.progress,
        log_every_n_steps=max(1, min(10, len(train_set) // config.batch_size)),
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
    )
    if config.refit and trainer.world_size > 1:
        raise ConfigError("--refit trains in one process; run it without several devices or nodes")
    started = time.perf_counter()
    last = checkpoints / LAST
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        resume_from = str(last) if resumed and last.exists() else None
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
        except DataError as e:
            raise worker_error(e) from None
    seconds = time.perf_counter() - started
    if trainer.global_rank == 0:
        kept = checkpoints / BEST if validate else last  # the average, where --ema averages
        if kept.is_file():
            module.load_state_dict(load_checkpoint(kept)["state_dict"])
    return Fitted(module, data, trainer, trackers, seconds)


def refit(
    config: TrainConfig,
    run_dir: Path,
    everything: Manifest,
    val_set: Manifest,
    preprocessing: Preprocessing,
    validated: Artifact,
) -> Artifact:
    """Train again from the start on ``everything`` (training and validation images) for as many epochs.

    The second training checkpoints and logs in ``RUN/refit`` (a resume
    continues it) and keeps its last weights: with its validation images in
    training, there is no held-out loss to choose an epoch by. The decision
    rule, calibration, top-k balance and label-transfer setting of
    ``validated`` were chosen on held-out images and are kept; label transfer's
    bank is rebuilt from the refitted model's embeddings of every image.
    """
    where = run_dir / REFIT
    resumed = (where / "checkpoints" / LAST).is_file()
    L.seed_everything(config.seed, workers=True, verbose=False)  # as if it were a run of its own
    fitted = fit(config, where, everything, val_set, preprocessing, resumed=resumed, validate=False)
    model = fitted.module.model.to(memory_format=torch.contiguous_format).cpu().eval()
    setting = validated.training.get("label_transfer")
    if setting:
        if setting.get("reference"):
            model.reference = reference_backbone(config.backbone, pretrained=config.pretrained,
                                                 weights=config.weights)  # fmt: skip
        fast = "bf16" in str(fitted.trainer.precision) and cpu_supports_bf16()
        bank, _, _ = embed(model, fitted.data, everything, "training", cache=fitted.data.cache, bf16=fast)
        attach_transfer(model, setting, bank.embeddings[:, bank.columns(setting["reference"])], bank.labels)
    training = dict(validated.training, refit={
        "train_images": len(everything), "epochs": fitted.trainer.current_epoch,
        "seconds": round(fitted.seconds, 1), "kept_from": VALIDATED,
    })  # fmt: skip
    artifact = save_artifact(run_dir / "artifact", model, preprocessing, validated.decision,
                             training=training, calibration=validated.calibration)  # fmt: skip
    save_history(artifact.path, epoch_history(run_dir / "logs"))  # the curves of the validated training
    log_final(fitted.trackers, artifact, fitted.trainer.global_step)
    return artifact


def make_trainer(**options: object) -> L.Trainer:
    """Lightning's Trainer; a setting it refuses (strategy, accelerator, precision) is a ``ConfigError``."""
    try:
        return L.Trainer(**options)
    except (ValueError, MisconfigurationException) as e:
        raise ConfigError(f"Lightning refused the training settings: {e}") from None


def is_global_zero() -> bool:
    """Whether this is the first process of a (possibly distributed) run, the one that writes and prints."""
    return rank_zero_only.rank == 0


def finish(
    model: Classifier,
    preprocessing: Preprocessing,
    data: DataModule,
    path: Path,
    config: TrainConfig,
    trainer: L.Trainer,
    seconds: float,
) -> Artifact:
    """Fit label transfer (where it wins), choose the decision rule, calibrate, write the artifact.

    The images go through the batch runner as prediction runs them, so the
    rule is chosen on the probabilities the artifact will give. Validation
    scores for the decision rule come from a bank of the training images only;
    the validation images join the bank afterwards. Training streamed from
    shards has no label transfer: its bank would hold every training image.
    Fine-tuned from pretrained weights, label transfer is also tried with a
    frozen copy of the pretrained backbone (``Classifier.reference``), which
    the artifact keeps only where that setting wins. The probability
    calibration is fitted on the same validation logits
    (``auto``, the default: kept only where cross-validation shows it lowering
    the ECE), the rule's thresholds re-expressed on the calibrated
    probabilities, so that they decide as before, and the top-k balance chosen
    on the calibrated probabilities that top-k will rank. Without a
    calibration the artifact stays format version 1.
    """
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    schema = model.schema
    streamed = not isinstance(data.train_manifest, Manifest)  # shards: no training bank in memory
    transferring = config.transfer == "auto" and schema.n_labels and not streamed
    if transferring and (config.pretrained or config.weights):  # label transfer tries the pretrained features
        pretrained = {"pretrained": config.pretrained, "weights": config.weights}
        model.reference = reference_backbone(config.backbone, **pretrained)
    val, attributes, attribute_logits = embed(model, data, data.val_manifest, "validation")
    transfer, label_logits = None, val.label_logits
    if transferring:
        fast = "bf16" in str(trainer.precision) and cpu_supports_bf16()
        train, _, _ = embed(model, data, data.train_manifest, "training", cache=data.cache, bf16=fast)
        size = len(train.labels) + len(val.labels)
        if bank_bytes(size, train.embeddings.shape[1], schema.n_labels) <= MAX_BANK_BYTES:
            transfer, label_logits = fit_transfer(model, train, val)
        if transfer is not None:
            columns = train.columns(transfer["reference"])
            bank = torch.cat([train.embeddings[:, columns], val.embeddings[:, columns]])
            attach_transfer(model, transfer, bank, np.concatenate([train.labels, val.labels]))
    if transfer is None:  # nothing compares with the pretrained copy (attach_transfer drops an unused one)
        model.reference = None
    logits = torch.cat([label_logits, attribute_logits], dim=1)
    probs = probabilities(schema, logits)
    decision = choose_thresholds(val.labels, probs.labels, "auto", seed=config.seed)
    figures = validation_figures(schema.attribute_names, probs, val.labels, attributes)
    calibration, calibrated, ranked = None, None, probs.labels
    if config.calibration != "off":
        on = {"data": "validation", "images": len(val.labels)}
        calibration, calibrated = fit_or_choose(config, schema, logits, val.labels, attributes, on)
    if calibration is not None:
        decision = replace(decision, thresholds=calibration.thresholds(decision.thresholds))
        ranked = probabilities(schema, logits, calibration).labels
        calibrated |= calibration_summary(val.labels, probs.labels, ranked)
    balance = None
    if schema.n_labels:  # top-k ranks the probabilities predict gives: the calibrated ones, if calibrated
        decision, balance = with_balance(decision, data.train_manifest, val.labels, ranked)
    summary = {
        "data": config.data,
        "train_images": len(data.train_manifest),
        "val_images": len(data.val_manifest),
        "epochs": trainer.current_epoch,
        "seconds": round(seconds, 1),
        "precision": str(trainer.precision),
        "loss": loss_summary(config),
        "validation": {k: round(float(v), 6) for k, v in figures.items()},
        "label_transfer": transfer,
        "top_k_balance": balance,
        "calibration": calibrated,
        "bad_images": len(tidy_bad_images(data.decoding.bad_log)) if data.decoding.bad_log else 0,
        "config": config.to_dict(),
    }
    return save_artifact(path, model, preprocessing, decision, training=summary, calibration=calibration)


def fit_or_choose(
    config: TrainConfig,
    schema: LabelSchema,
    logits: torch.Tensor,
    labels: np.ndarray,
    attributes: np.ndarray,
    on: dict,
) -> tuple[Calibration | None, dict]:
    """The calibration ``config.calibration`` asks for (``auto``: temperatures where they win), and why."""
    if config.calibration == "auto":
        return choose_calibration(schema, logits, labels, attributes, seed=config.seed, fitted_on=on)
    calibration = fit_calibration(schema, logits, labels, attributes, config.calibration, fitted_on=on)
    return calibration, {"method": config.calibration, "kept": True}


def calibration_summary(labels: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    """Validation ECE and Brier score (macro and micro) of the label probabilities before and after."""
    if not labels.shape[1]:
        return {}
    out = {}
    for when, scores in (("before", before), ("after", after)):
        f = calibration_figures(labels, scores)
        out[when] = {k: None if np.isnan(f[k]) else round(f[k], 6)
                     for k in ("ece_macro", "ece_micro", "brier_macro", "brier_micro")}  # fmt: skip
    return out


def with_balance(
    decision: Decision, train: Manifest | Shards, val_labels: np.ndarray, val_scores: np.ndarray
) -> tuple[Decision, dict]:
    """``decision`` with the training label priors and the top-k balance chosen on validation, and how."""
    priors = training_priors(train)
    balance, figures = choose_balance(val_labels, val_scores, priors, annotation_size(val_labels))
    return replace(decision, priors=priors, balance=balance), {"balance": balance, **figures}


def training_priors(train: Manifest | Shards) -> np.ndarray:
    """Each label's share of positives among the training split's known targets (``label_priors``)."""
    counts = train.label_lists.counts()
    return label_priors(counts["positive"], counts["positive"] + counts["negative"])


def embed(
    model: Classifier,
    data: DataModule,
    manifest: Manifest,
    what: str,
    cache: ImageCache | None = None,
    bf16: bool = False,
) -> tuple[Embedded, np.ndarray, torch.Tensor]:
    """One pass of ``manifest`` through the batch runner without label transfer (``forward_parts``).

    Returns the images that could be read as ``Embedded`` (label logits,
    pooled features, label targets), their attribute targets and attribute
    logits. ``bf16`` runs the network under bf16 autocast, channels-last, as
    training did: for the training bank only, whose embeddings are stored in
    float16 anyway (tf_efficientnet_lite0 at 160 px on the two-core CPU: 271
    images/s against 54 in float32). Validation stays in float32, the
    precision prediction runs in, since the decision rule is chosen on it.
    """
    network = Bfloat16Network(model, torch.device("cpu"), parts=True) if bf16 else model.forward_parts
    try:
        outputs = run_batches(
            network, manifest_images(manifest), data.eval_transform, data.decoding,
            num_outputs=model.schema.num_outputs, batch_size=data.batch_size, num_workers=data.num_workers,
            targets=manifest, cache=cache,
        )  # fmt: skip
    finally:
        model.to(memory_format=torch.contiguous_format)
    read = outputs.read
    if not read.any():
        raise DataError(f"no {what} image could be decoded")
    logits, n_labels = outputs.logits[read], model.schema.n_labels
    features = outputs.features[read]
    # A reference backbone has the backbone's architecture: its features are the second half.
    reference_dim = features.shape[1] // 2 if model.reference is not None else 0
    embedded = Embedded(logits[:, :n_labels], features, outputs.labels[read], reference_dim)
    return embedded, outputs.attributes[read], logits[:, n_labels:]
