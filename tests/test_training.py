"""Training through Lightning: run directory, artifact, thresholds, resume, options."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY
from mlic.artifact import load_artifact
from mlic.data import multidigits
from mlic.errors import ConfigError, DataError
from mlic.training import TrainConfig, parse_devices, train, validation_split, warmup_cosine


def test_run_directory_holds_config_checkpoints_logs_and_artifact(tiny_run):
    assert json.loads((tiny_run / "config.json").read_text())["demo_train"] == TINY["demo_train"]
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert (tiny_run / "checkpoints" / "best.ckpt").is_file()
    assert "val/mAP" in (tiny_run / "logs" / "metrics.csv").read_text()
    artifact = load_artifact(tiny_run / "artifact")
    assert artifact.schema == multidigits("val", 1).schema
    assert artifact.preprocessing.image_size == (32, 32)
    assert artifact.preprocessing.hflip is False  # digits must not be mirrored
    assert artifact.training["train_images"] == TINY["demo_train"]
    assert set(artifact.training["validation"]) >= {"mAP", "micro_f1", "count_accuracy", "largest_accuracy"}


def test_thresholds_are_per_label_and_within_unit_interval(tiny_run):
    thresholds = load_artifact(tiny_run).thresholds
    assert thresholds.shape == (10,)
    assert ((thresholds >= 0) & (thresholds <= 1)).all()


@pytest.mark.filterwarnings("error:The dirpath has changed")  # a copied run keeps its best epoch
def test_resume_continues_to_more_epochs(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(tiny_run, run)
    first_log = (run / "logs" / "metrics.csv").read_text()
    artifact = train(resume=run, max_epochs=2)
    assert load_artifact(artifact).training["epochs"] == 2
    assert (run / "logs" / "metrics.csv").read_text() == first_log  # the first epochs' log is kept
    assert "val/mAP" in (run / "logs" / "resume-1" / "metrics.csv").read_text()
    assert json.loads((run / "config.json").read_text())["max_epochs"] == 2


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        train(resume=tmp_path)


def test_training_is_deterministic_for_a_seed(tmp_path):
    options = {**TINY, "demo_train": 128, "demo_val": 32, "deterministic": True}
    a = load_artifact(train(out=str(tmp_path / "a"), **options)).build_model()
    b = load_artifact(train(out=str(tmp_path / "b"), **options)).build_model()
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_unknown_option_and_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"max_epoch": 3})
    with pytest.raises(ConfigError, match="devices"):
        parse_devices("two")
    assert parse_devices("2") == 2 and parse_devices("0,1") == [0, 1] and parse_devices("auto") == "auto"


def test_missing_image_files_are_all_listed_before_training(tmp_path):
    (tmp_path / "tags.csv").write_text("path,tags\na.png,cat\nb.png,dog\nc.png,cat dog\n")
    with pytest.raises(DataError) as err:
        train(data=str(tmp_path / "tags.csv"), out=str(tmp_path / "run"), **TINY)
    for name in ("a.png", "b.png", "c.png"):
        assert name in str(err.value)
    assert "3 of 3" in str(err.value)


def test_validation_split_is_stratified_seeded_disjoint_and_complete():
    m = multidigits("val", 50)
    train_part, val_part = validation_split(m, 0.2, seed=3)
    again, _ = validation_split(m, 0.2, seed=3)
    assert 8 <= len(val_part) <= 12 and len(train_part) + len(val_part) == 50
    assert set(train_part.paths).isdisjoint(val_part.paths)
    assert train_part.paths == again.paths
    assert val_part.meta["split"]["name"] == "val"  # made by mlic.data.split.stratified_split
    with pytest.raises(ConfigError, match="val_fraction"):
        validation_split(m, 1.0, seed=0)
    with pytest.raises(ConfigError, match="cannot fill"):
        validation_split(m.subset([0]), 0.2, seed=0)


def test_training_without_val_data_splits_it_off_stratified(digit_files):
    from mlic.training import load_splits

    config = TrainConfig(data=str(digit_files["root"] / "data.jsonl"), val_fraction=0.25, seed=2)
    train_part, val_part = load_splits(config)
    assert len(train_part) + len(val_part) == 48 and val_part.meta["split"]["seed"] == 2
    share = (val_part.labels == 1).sum(0) / ((train_part.labels == 1).sum(0) + (val_part.labels == 1).sum(0))
    assert np.abs(share - 0.25).max() < 0.15


def test_learning_rate_schedule_warms_up_then_decays_to_zero():
    factors = np.array([warmup_cosine(s, 10, 100) for s in range(101)])
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert (np.diff(factors[10:]) <= 1e-12).all()
    assert factors[100] == pytest.approx(0.0, abs=1e-12)


def test_preprocessing_follows_the_backbones_pretrained_normalisation():
    from mlic.training import resolve_preprocessing

    inception = resolve_preprocessing(TrainConfig(data="x.csv", backbone="inception_v3", pretrained=True))
    assert inception.mean == (0.5, 0.5, 0.5) and inception.image_size == (224, 224) and inception.hflip
    scratch = resolve_preprocessing(TrainConfig(backbone="inception_v3"))
    assert scratch.mean == (0.485, 0.456, 0.406) and scratch.image_size == (64, 64) and not scratch.hflip


def test_options_are_validated_on_resume_and_not_mixed_with_a_config(tiny_run):
    with pytest.raises(ConfigError, match="unknown training options"):
        train(resume=tiny_run, max_epoch=3)
    with pytest.raises(ConfigError, match="either a TrainConfig"):
        train(TrainConfig(), max_epochs=3)


def test_loss_options_reach_the_loss_and_the_artifact(tmp_path):
    from mlic.losses import AsymmetricLoss, SelectiveMissing
    from mlic.training import build_loss, loss_summary

    config = TrainConfig(loss="asl", loss_options={"gamma_neg": 2.0}, pos_weight="auto", missing="selective")
    train_set = multidigits("train", 64)
    loss = build_loss(config, train_set)
    assert isinstance(loss.label_loss, AsymmetricLoss) and loss.label_loss.gamma_neg == 2.0
    assert isinstance(loss.missing, SelectiveMissing)
    assert loss.label_loss.pos_weight.shape == (10,) and (loss.label_loss.pos_weight >= 1).all()
    assert loss_summary(config)["gamma_neg"] == 2.0 and loss_summary(config)["max_pos_weight"] == 100.0
    with pytest.raises(ConfigError, match="gamma_nge"):
        build_loss(TrainConfig(loss="asl", loss_options={"gamma_nge": 2.0}), train_set)

    options = {**TINY, "demo_train": 128, "demo_val": 32}
    artifact = load_artifact(train(out=str(tmp_path / "run"), loss="focal", missing="negative", **options))
    assert artifact.training["loss"]["name"] == "focal" and artifact.training["loss"]["missing"] == "negative"


def test_hidden_positives_reach_both_splits_and_the_loss_summary():
    from mlic.training import load_splits, loss_summary

    config = TrainConfig(demo_train=300, demo_val=100, hide_positives=0.5, hidden_as="unknown")
    full_train, full_val = load_splits(TrainConfig(demo_train=300, demo_val=100))
    train_set, val_set = load_splits(config)
    for full, hidden in ((full_train, train_set), (full_val, val_set)):
        positives = (full.labels == 1).sum()
        assert (hidden.labels == 1).sum() == positives - round(0.5 * positives)
        assert (hidden.labels == -1).sum() == round(0.5 * positives)
    assert loss_summary(config)["hidden_positives"] == {"fraction": 0.5, "as": "unknown"}
    assert "hidden_positives" not in loss_summary(TrainConfig())


def test_ten_thousand_labels_train_and_evaluate_from_label_lists(tmp_path, monkeypatch):
    """At 10,000 labels training never builds the dense target matrix; evaluation reports every label."""
    from PIL import Image

    import mlic
    from mlic.data.targets import LabelLists

    n_images, n_labels = 40, 10_000
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(n_images):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / f"img/{i}.png")
            labels = [f"tag{j:05d}" for j in range(i, n_labels, n_images)]  # every label appears once
            f.write(json.dumps({"path": f"img/{i}.png", "labels": labels}) + "\n")

    def no_dense(self, rows=None):
        raise AssertionError("the dense target matrix was built during training")

    monkeypatch.setattr(LabelLists, "dense", no_dense)
    options = {**TINY, "image_size": 24, "batch_size": 16, "head": "ml-decoder"}
    artifact = train(data=str(tmp_path / "data.jsonl"), out=str(tmp_path / "run"), **options)
    monkeypatch.undo()
    assert load_artifact(artifact).schema.n_labels == n_labels
    figures = mlic.evaluate(artifact, str(tmp_path / "data.jsonl"))
    assert figures["n_samples"] == n_images and len(figures["per_label"]) == n_labels
    assert 0.0 <= figures["mAP"] <= 1.0 and figures["per_label"]["tag09999"]["support"] == 1


def test_two_process_ddp_gathers_validation_exactly_and_writes_one_artifact(tmp_path):
    """Two DDP processes on CPU (gloo): the gathered validation figures equal one process's on the same model.

    67 validation images do not split evenly: Lightning's padded sampler would count one twice.
    Run through the ``mlic`` command, as a user launches it (Lightning starts the second process).
    """
    import csv
    import shutil
    import subprocess
    import sys

    mlic_command = shutil.which("mlic") or pytest.skip("the mlic command is not installed")
    args = ["train", "--devices", "2", "--strategy", "ddp", "--max-epochs", "1", "--precision", "32-true",
            "--demo-train", "256", "--demo-val", "67", "--image-size", "32", "--batch-size", "32",
            "--transfer", "off", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run([sys.executable, mlic_command, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [str(tmp_path / "run" / "artifact")]  # printed once
    logged = list(csv.DictReader((tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()))
    epoch_end = next(row for row in logged if row.get("val/mAP"))
    artifact = load_artifact(tmp_path / "run" / "artifact")
    single = artifact.training["validation"]  # computed again in one process over all 67 images (no transfer)
    for name in ("mAP", "micro_f1", "count_accuracy", "largest_accuracy"):
        assert float(epoch_end[f"val/{name}"]) == pytest.approx(single[name], abs=2e-6), name

    from mlic import evaluate

    assert 0.0 <= evaluate(artifact.path, "demo", demo_samples=64)["mAP"] <= 1.0


@pytest.mark.slow
def test_compiled_training_saves_the_plain_models_weights(tmp_path):
    """--compile compiles the forward only: the artifact holds the model's own parameter names."""
    options = {**TINY, "demo_train": 128, "demo_val": 32, "channels_last": False}
    artifact = load_artifact(train(out=str(tmp_path / "run"), compile=True, **options))
    model = artifact.build_model()
    assert not any("_orig_mod" in name for name in model.state_dict())
    assert artifact.training["config"]["compile"] is True


def write_png_split(root: Path, split: str, n: int) -> Path:
    """``n`` MultiDigits canvases of ``split`` as PNG files, listed in ``root/<split>.csv``."""
    m = multidigits(split, n, seed=0)
    (root / split).mkdir()
    lines = ["path,tags"]
    for i, pixels in enumerate(m.pixels):
        Image.fromarray(pixels).save(root / split / f"{i}.png")
        lines.append(f"{split}/{i}.png,{' '.join(m.schema.decode(m.labels[i], m.attributes[i])['labels'])}")
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root / f"{split}.csv"


def wait_for_write(process: subprocess.Popen, path: Path) -> None:
    """Return once ``process`` has (re)written ``path``, or has ended."""
    before = path.stat().st_mtime_ns if path.exists() else None
    while process.poll() is None and (path.stat().st_mtime_ns if path.exists() else None) == before:
        time.sleep(0.005)


def run_until_killed(command: list[str], last: Path, delay: float) -> bool:
    """Start ``command``, SIGKILL it ``delay`` s after it next writes ``last``; whether it still ran."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_write(process, last)
        time.sleep(delay)
        return process.poll() is None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(tmp_path):
    """``mlic train`` killed twice at random steps and resumed each time ends with the uninterrupted model.

    Real processes, images from files through two loader workers, checkpoints every 2 steps.
    The kills land 10-60% into the training time left (seeded), mid-epoch or between epochs,
    at times while a checkpoint is being written: the result must be exact wherever they land.
    """
    train_csv, val_csv = write_png_split(tmp_path, "train", 192), write_png_split(tmp_path, "val", 48)
    mlic = [sys.executable, "-m", "mlic", "train"]
    options = ["--data", str(train_csv), "--val", str(val_csv), "--image-size", "32", "--batch-size", "16",
               "--max-epochs", "3", "--workers", "2", "--checkpoint-steps", "2", "--deterministic",
               "--no-progress"]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    process = subprocess.Popen([*mlic, *options, "--out", str(whole)], stderr=subprocess.PIPE)
    wait_for_write(process, whole / "checkpoints" / "last.ckpt")
    started = time.time()
    assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    # from the first checkpoint to the last: the kills below must land while the run still trains, not
    # during the work after training (label transfer, the decision rule, the artifact)
    training = (whole / "checkpoints" / "last.ckpt").stat().st_mtime - started

    rng, last = random.Random(8), killed / "checkpoints" / "last.ckpt"
    resume = [*mlic, "--resume", str(killed), "--no-progress"]
    assert run_until_killed([*mlic, *options, "--out", str(killed)], last, rng.uniform(0.1, 0.6) * training)
    assert not (killed / "artifact").exists()
    assert run_until_killed(resume, last, rng.uniform(0.1, 0.3) * training)
    assert not (killed / "artifact").exists()
    done = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = load_artifact(whole / "artifact"), load_artifact(killed / "artifact")
    assert b.weights_sha256 == a.weights_sha256  # bit for bit the same model
    assert np.array_equal(b.thresholds, a.thresholds)
    assert b.training["validation"] == a.training["validation"] and b.training["epochs"] == 3
    # a resumed run logs to a folder of its own, made at its first write (a run killed before has none)
    last_log = max((killed / "logs").glob("resume-*/metrics.csv"), key=lambda p: int(p.parent.name[7:]))
    assert "val/mAP" in last_log.read_text()


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_the_optimizer_runs_the_backbone_at_its_share_of_the_rate_and_decays_no_bias(scale):
    from mlic.models import ModelConfig, build_classifier
    from mlic.schema import LabelSchema
    from mlic.training.module import build_optimizer

    model = build_classifier(LabelSchema(("a", "b")), ModelConfig())
    optimizer = build_optimizer(model, 0.01, 0.05, scale)
    backbone = {id(p) for p in model.backbone.parameters()}
    seen = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen += 1
            assert group["lr"] == pytest.approx(0.01 * (scale if id(p) in backbone else 1.0))
            assert group["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05)
    assert seen == len(list(model.parameters()))


def test_a_backbone_rate_share_must_be_positive():
    with pytest.raises(ConfigError, match="backbone_lr_scale"):
        TrainConfig(backbone_lr_scale=0.0)


@pytest.mark.parametrize(
    ("cache_images", "devices", "memory", "cached"),
    [(None, "1", 1 << 34, True), (None, "2", 1 << 34, False), (None, "1", 1000, False),
     (False, "1", 1 << 34, False), (True, "1", 1 << 34, True)],
)  # fmt: skip
def test_the_image_cache_is_automatic_where_it_fits_in_one_process(
    tmp_path, monkeypatch, cache_images, devices, memory, cached
):
    import mlic.training.datamodule as datamodule
    from mlic.data import load_data
    from mlic.data.images import Preprocessing

    manifest = load_data(write_png_split(tmp_path, "train", 6))
    monkeypatch.setattr(datamodule, "available_memory", lambda: memory)
    config = TrainConfig(data=str(tmp_path / "train.csv"), cache_images=cache_images, devices=devices)
    cache = datamodule.image_cache(config, manifest, Preprocessing(image_size=(32, 32)), workers=0)
    assert (cache is not None) == cached
    if cached:
        assert cache.nbytes > 0 and not cache.errors
