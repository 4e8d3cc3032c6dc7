"""The Lightning module: optimisation with a ``SchemaLoss``, validation figures gathered over processes."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from mlic.data.manifest import Manifest
from mlic.data.shards import Shards
from mlic.losses import SchemaLoss, create_label_loss, create_missing_policy
from mlic.metrics import attribute_scores, mean_average_precision, multilabel_scores
from mlic.models import Classifier
from mlic.models.outputs import Probabilities, probabilities
from mlic.training.config import TrainConfig
from mlic.training.defaults import resolve_neg_weight


class MultiLabelModule(L.LightningModule):
    """Optimises a ``Classifier`` with a ``SchemaLoss``; reports mAP and attribute accuracy on validation."""

    def __init__(
        self,
        model: Classifier,
        loss: SchemaLoss,
        *,
        lr: float,
        weight_decay: float,
        backbone_lr_scale: float = 1.0,
        warmup_epochs: float,
        channels_last: bool,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.loss = loss
        self.channels_last = channels_last
        self.save_hyperparameters(ignore=["model", "loss"], logger=False)  # the trackers get the whole config
        # a compiled forward *function*, not module: the state dict keeps the model's own keys
        self._model_forward = torch.compile(self.model.forward) if compile else self.model.forward
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._model_forward(images)

    def on_train_epoch_start(self) -> None:
        if hasattr(self.loss, "set_epoch"):  # losses that change with training, e.g. SPLC
            self.loss.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch was unreadable and skipped: no step
            return None
        images, labels, attributes = batch
        out = self.loss(self(images), labels, attributes)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(images))
        self.log("train/loss_epoch", out["loss"], on_step=False, on_epoch=True, batch_size=len(images),
                 sync_dist=True)  # fmt: skip
        return out["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch is None:
            return
        images, labels, attributes = batch
        logits = self(images)
        out = self.loss(logits, labels, attributes)
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=len(images), sync_dist=True)
        self._val_logits.append(logits.float().cpu())
        self._val_targets.append((labels.cpu(), attributes.cpu()))

    def on_validation_epoch_end(self) -> None:
        schema = self.model.schema
        logits = torch.cat(self._val_logits) if self._val_logits else torch.empty(0, schema.num_outputs)
        labels = torch.cat([t[0] for t in self._val_targets]) if self._val_targets else None
        attributes = torch.cat([t[1] for t in self._val_targets]) if self._val_targets else None
        if labels is None:
            labels = torch.empty(0, schema.n_labels, dtype=torch.int8)
            attributes = torch.empty(0, schema.n_attributes, dtype=torch.int64)
        self._val_logits.clear()
        self._val_targets.clear()
        # every process gets the whole validation set, so figures equal those of one process
        logits = self.gather_rows(logits)
        labels = self.gather_rows(labels.to(torch.int32)).to(torch.int8).numpy()
        attributes = self.gather_rows(attributes).numpy()
        if not len(logits):
            return
        probs = probabilities(schema, logits)
        for name, value in validation_figures(schema.attribute_names, probs, labels, attributes).items():
            # the same value on every process: sync_dist averages equal numbers (and keeps Lightning quiet)
            self.log(f"val/{name}", value, prog_bar=name in ("mAP", "micro_f1"), sync_dist=True)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` of every process, concatenated in rank order (processes may hold different counts)."""
        if self.trainer.world_size == 1:
            return rows
        sizes = self.all_gather(torch.tensor([len(rows)], device=self.device)).flatten().tolist()
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: len(rows)] = rows
        gathered = self.all_gather(padded.to(self.device)).cpu()
        return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(self.model, hp.lr, hp.weight_decay, hp.backbone_lr_scale)
        per_epoch = self._steps_per_epoch()
        total = max(1, per_epoch * max(1, self.trainer.max_epochs))
        warmup = min(total // 2, int(self.hparams.warmup_epochs * per_epoch))
        self.warmup_steps = warmup  # where WarmedUpEMA starts averaging
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        """Optimiser steps per epoch, from the length of this process's training loader.

        Not Lightning's ``estimated_stepping_batches``: it sets up the training
        loader before a checkpoint is restored, and the loader's mid-epoch state
        is then never loaded (Lightning 2.6).
        """
        datamodule = self.trainer.datamodule
        if datamodule is None:
            return max(1, int(self.trainer.estimated_stepping_batches) // max(1, self.trainer.max_epochs))
        return max(1, len(datamodule.train_dataloader()))


def build_optimizer(
    model: Classifier, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over up to four groups: backbone and the rest, each with and without weight decay.

    Biases and norm weights (1-d parameters) take no decay; the backbone's
    groups run at ``backbone_lr_scale`` times ``lr``, so that a pretrained
    backbone can move more slowly than a new head.
    """
    backbone = {id(p) for p in model.backbone.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in backbone, p.ndim <= 1), []).append(p)
    return torch.optim.AdamW(
        [
            {"params": params, "lr": lr * (backbone_lr_scale if in_backbone else 1.0),
             "weight_decay": 0.0 if flat else weight_decay}
            for (in_backbone, flat), params in sorted(groups.items())
        ],
        lr=lr,
    )  # fmt: skip


class WarmedUpEMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights (``--ema``), from the end of the warm-up on.

    Validation, checkpoints (so the best epoch) and the artifact see the
    average; checkpoints also keep the current weights, so a resumed run
    continues both. The average starts as the weights after the warm-up's
    last step (those before are far from where training ends), so the first
    validation after the warm-up sees trained weights.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: MultiLabelModule) -> None:
        self.update_starting_at_step = max(0, pl_module.warmup_steps - 1)  # Lightning's index is 0-based


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def validation_figures(
    attribute_names, probs: Probabilities, labels: np.ndarray, attributes: np.ndarray
) -> dict:
    """The figures logged each epoch: mAP, micro-F1 at 0.5 and each attribute's accuracy."""
    figures = {}
    if labels.shape[1]:
        m_ap = mean_average_precision(labels, probs.labels)
        figures["mAP"] = 0.0 if math.isnan(m_ap) else m_ap
        figures["micro_f1"] = multilabel_scores(labels, probs.labels, 0.5)["micro_f1"]
    for name, scores in attribute_scores(attributes, probs.attributes, attribute_names).items():
        if not math.isnan(scores["accuracy"]):
            figures[f"{name}_accuracy"] = scores["accuracy"]
    return figures


def build_loss(config: TrainConfig, train_set: Manifest | Shards) -> SchemaLoss:
    """The schema's loss: the label loss with its options, and the policy for unknown targets.

    Only the training targets' counts are read (``label_lists.counts()``), which shards store.
    ``neg_weight`` left None follows the training labels (``resolve_neg_weight``).
    """
    config = resolve_neg_weight(config, train_set.label_lists)
    label_loss = create_label_loss(
        config.loss,
        pos_weight=config.pos_weight,
        neg_weight=config.neg_weight,
        label_smoothing=config.label_smoothing,
        train_targets=train_set.label_lists,
        max_pos_weight=config.max_pos_weight,
        **config.loss_options,
    )
    missing = create_missing_policy(
        config.missing, missing_weight=config.missing_weight, train_targets=train_set.label_lists
    )
    return SchemaLoss(train_set.schema, label_loss, missing=missing)
