"""Tests of mlic.training.run: options to artifact, resume, determinism, 10,000 labels, DDP, kills."""

from __future__ import annotations

import csv
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY, write_png_split
from mlic.artifact import load_artifact, load_history
from mlic.data import multidigits
from mlic.errors import ConfigError, DataError
from mlic.models.calibration import MIN_ECE_FALL
from mlic.training import TrainConfig, train


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


def test_the_artifact_keeps_the_runs_history_per_epoch(tiny_run):
    history = load_history(tiny_run / "artifact")
    assert list(history["epoch"]) == list(range(TINY["max_epochs"]))
    assert {"train/loss", "val/loss", "val/mAP", "val/micro_f1"} <= set(history)
    with open(tiny_run / "logs" / "metrics.csv", newline="") as f:
        logged = [float(row["val/mAP"]) for row in csv.DictReader(f) if row.get("val/mAP")]
    assert list(history["val/mAP"]) == pytest.approx(logged)


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


def test_ema_validates_and_keeps_the_averaged_weights(tmp_path):
    options = {**TINY, "demo_train": 128, "demo_val": 32, "max_epochs": 3, "deterministic": True}
    plain = load_artifact(train(out=str(tmp_path / "plain"), **options))
    averaged = load_artifact(train(out=str(tmp_path / "ema"), ema=0.5, **options))
    assert averaged.weights_sha256 != plain.weights_sha256
    assert averaged.training["config"]["ema"] == 0.5
    best = torch.load(tmp_path / "ema" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    current, average = best["current_model_state"], best["state_dict"]  # both kept, for --resume
    assert any(not torch.equal(current[k], average[k]) for k in average if average[k].is_floating_point())


def test_ema_outside_zero_to_one_is_a_config_error():
    with pytest.raises(ConfigError, match="ema must lie in"):
        TrainConfig(ema=1.0)


def test_missing_image_files_are_all_listed_before_training(tmp_path):
    (tmp_path / "tags.csv").write_text("path,tags\na.png,cat\nb.png,dog\nc.png,cat dog\n")
    with pytest.raises(DataError) as err:
        train(data=str(tmp_path / "tags.csv"), out=str(tmp_path / "run"), **TINY)
    for name in ("a.png", "b.png", "c.png"):
        assert name in str(err.value)
    assert "3 of 3" in str(err.value)


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
    assert float(loss.label_loss.neg_weight) == 1.0  # from scratch: every negative counts fully
    fine_tuning = build_loss(TrainConfig(weights="w.safetensors"), train_set)
    assert float(fine_tuning.label_loss.neg_weight) == 1.0  # MultiDigits' digits are not rare labels

    options = {**TINY, "demo_train": 128, "demo_val": 32}
    artifact = load_artifact(train(out=str(tmp_path / "run"), loss="focal", missing="negative", **options))
    assert artifact.training["loss"]["name"] == "focal" and artifact.training["loss"]["missing"] == "negative"
    assert artifact.training["loss"]["neg_weight"] == 1.0  # resolved from the labels, and recorded
    assert json.loads((tmp_path / "run" / "config.json").read_text())["neg_weight"] == 1.0


def test_ten_thousand_labels_train_and_evaluate_from_label_lists(tmp_path, monkeypatch):
    """At 10,000 labels training never builds the dense target matrix; evaluation reports every label."""

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


def test_attributes_only_train_calibrate_and_predict(tmp_path):
    """Data with attributes and no labels (a CSV of class columns): training decides no label and predicts."""
    import mlic

    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    rows = ["path,colour,size"]
    for i in range(60):
        colour = ("red", "green", "blue")[i % 3]
        pixels = np.zeros((24, 24, 3), dtype=np.uint8)
        pixels[..., i % 3] = 200 + rng.integers(0, 55)
        Image.fromarray(pixels).save(tmp_path / f"img/{i}.png")
        rows.append(f"img/{i}.png,{colour},{('s', 'l')[i % 2]}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    options = {**TINY, "image_size": 24, "batch_size": 16}
    artifact = load_artifact(train(data=str(tmp_path / "data.csv"), out=str(tmp_path / "run"), **options))
    assert artifact.schema.n_labels == 0 and artifact.schema.attribute_names == ("colour", "size")
    assert artifact.decision.chosen_by == {"rule": "no labels"}
    (result,) = mlic.load(artifact.path).predict([str(tmp_path / "img/0.png")])
    assert set(result["attributes"]) == {"colour", "size"}


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


def test_refit_trains_on_every_image_and_keeps_what_validation_chose(tmp_path, monkeypatch):
    """--refit: the first model (as a run without it) in RUN/validated, a second trained on train + val for
    as many epochs; the rule, calibration and label-transfer setting are the first's, the bank all images."""
    import mlic.training.run as run_module

    setting = {"k": 5, "temperature": 0.1, "alpha": 0.5, "reference": False}
    monkeypatch.setattr(run_module, "fit_transfer", lambda model, train, val: (setting, val.label_logits))
    options = {**TINY, "demo_train": 96, "demo_val": 32, "max_epochs": 2, "deterministic": True}
    run = tmp_path / "run"
    artifact = load_artifact(train(out=str(run), refit=True, **options))
    validated = load_artifact(run / "validated")
    plain = load_artifact(train(out=str(tmp_path / "plain"), **options))

    assert artifact.path == run / "artifact"
    assert validated.weights_sha256 == plain.weights_sha256 != artifact.weights_sha256
    assert artifact.training["refit"] == {**artifact.training["refit"], "train_images": 128, "epochs": 2}
    written = [json.loads((a.path / "mlic.json").read_text()) for a in (artifact, validated)]
    for part in ("decision", "calibration"):
        assert written[0].get(part) == written[1].get(part), part
    assert artifact.training["validation"] == validated.training["validation"]
    # the same setting over a bank of as many images: the first of training, then validation images
    assert artifact.model.transfer == validated.model.transfer
    assert artifact.model.transfer["size"] == 128 and artifact.model.transfer["k"] == setting["k"]
    assert "trained again on 128 images" in (run / "artifact" / "README.md").read_text()  # the model card
    assert (run / "refit" / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "refit" / "checkpoints" / "best.ckpt").exists()  # nothing held out to choose by

    # killed after the first training: a resume refits, and leaves the first model as it was
    written = (run / "validated" / "mlic.json").stat().st_mtime_ns
    for leftover in ("artifact", "refit"):
        shutil.rmtree(run / leftover)
    again = load_artifact(train(resume=run))
    assert again.weights_sha256 == artifact.weights_sha256
    assert (run / "validated" / "mlic.json").stat().st_mtime_ns == written


def test_refit_of_streamed_shards_is_a_config_error(tmp_path):
    pytest.importorskip("litdata")
    from mlic.data.pack import pack

    pack("demo", tmp_path / "p", demo_train=16, demo_val=8)
    with pytest.raises(ConfigError, match="refit"):
        train(data=str(tmp_path / "p"), out=str(tmp_path / "run"), refit=True, **TINY)


@pytest.mark.slow
def test_compiled_training_saves_the_plain_models_weights(tmp_path):
    """--compile compiles the forward only: the artifact holds the model's own parameter names."""
    options = {**TINY, "demo_train": 128, "demo_val": 32, "channels_last": False}
    artifact = load_artifact(train(out=str(tmp_path / "run"), compile=True, **options))
    model = artifact.build_model()
    assert not any("_orig_mod" in name for name in model.state_dict())
    assert artifact.training["config"]["compile"] is True


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
    killed_and_resumed_like_uninterrupted(tmp_path, ["--data", str(train_csv), "--val", str(val_csv)])


@pytest.mark.slow
def test_sigkilled_streamed_training_resumes_to_the_uninterrupted_weights(tmp_path, s3_bucket):
    """The same kills and resumes, training streamed from shards on the S3 server: litdata's loader state,
    saved in the checkpoints, makes the resumed epochs see the batches the uninterrupted run saw."""
    pytest.importorskip("litdata")
    from mlic.data.pack import pack

    data = f"{s3_bucket}/digits"
    pack("demo", data, demo_train=192, demo_val=48, chunk_bytes=50_000)
    killed_and_resumed_like_uninterrupted(tmp_path, ["--data", data])


def killed_and_resumed_like_uninterrupted(tmp_path: Path, data: list[str]) -> None:
    """Train on ``data`` once whole, once killed twice and resumed; the two artifacts must be the same."""
    mlic = [sys.executable, "-m", "mlic", "train"]
    options = [*data, "--image-size", "32", "--batch-size", "16", "--max-epochs", "3", "--workers", "2",
               "--checkpoint-steps", "2", "--deterministic", "--no-progress"]  # fmt: skip
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


def test_training_streams_a_pack_on_s3(tmp_path, s3_bucket):
    """One tiny epoch streamed from shards on the S3 server, validated on the pack's val split."""
    pytest.importorskip("litdata")
    from mlic.data.pack import pack

    data = f"{s3_bucket}/digits"
    pack("demo", data, demo_train=96, demo_val=32)
    options = {**TINY, "batch_size": 32, "num_workers": 1}
    artifact = load_artifact(train(data=data, out=str(tmp_path / "run"), **options))
    summary = artifact.training
    assert summary["train_images"] == 96 and summary["val_images"] == 32 and summary["epochs"] == 1
    assert summary["label_transfer"] is None and 0.0 <= summary["validation"]["mAP"] <= 1.0
    assert artifact.schema == multidigits("val", 1).schema
    with pytest.raises(ConfigError, match="no validation split"):
        train(data=f"{data}/train", out=str(tmp_path / "other"), **options)


def test_training_calibrates_where_cross_validation_says_and_writes_format_1_without(tiny_run):
    data = json.loads((tiny_run / "artifact" / "mlic.json").read_text())
    assert data["training"]["config"]["calibration"] == "auto"  # the default
    record = data["training"]["calibration"]
    assert record["method"] == "temperature" and "cross-validation" in record["rule"]
    before, after = record["uncalibrated"], record["out_of_fold"]
    kept = after["ece_macro"] <= (1 - MIN_ECE_FALL) * before["ece_macro"]
    assert record["kept"] == (kept and after["ece_micro"] <= before["ece_micro"])
    if record["kept"]:
        assert data["format_version"] == 2 and data["calibration"]["method"] == "temperature"
        assert record["after"]["ece_macro"] is not None
    else:  # as before calibration existed
        assert data["format_version"] == 1 and "calibration" not in data
        assert load_artifact(tiny_run).calibration is None


def test_training_without_calibration_writes_format_1(tmp_path):
    run = tmp_path / "run"
    train(out=str(run), **{**TINY, "calibration": "off", "max_epochs": 1})
    data = json.loads((run / "artifact" / "mlic.json").read_text())
    assert data["format_version"] == 1 and "calibration" not in data
    assert data["training"]["calibration"] is None


def test_training_with_calibration_fits_it_on_validation_and_keeps_its_decisions(tmp_path):
    import mlic

    run = tmp_path / "run"
    train(out=str(run), **{**TINY, "calibration": "temperature"})
    data = json.loads((run / "artifact" / "mlic.json").read_text())
    assert data["format_version"] == 2 and data["calibration"]["method"] == "temperature"
    assert data["calibration"]["fitted_on"] == {"data": "validation", "images": TINY["demo_val"]}
    summary = data["training"]["calibration"]
    assert summary["method"] == "temperature"
    assert summary["after"]["ece_micro"] <= summary["before"]["ece_micro"] + 1e-6
    # the thresholds were re-expressed: on test images, calibrated decisions are the raw ones
    predictor = mlic.load(run)
    m = multidigits("test", 200, seed=3)
    outputs = predictor.manifest_outputs(m)
    probs = outputs.probabilities(m.schema, predictor.calibration)
    raw = outputs.probabilities(m.schema).labels.astype(np.float64)
    calibrated = probs.labels.astype(np.float64)
    thresholds = predictor.artifact.thresholds
    raw_thresholds = predictor.calibration.thresholds(thresholds, inverse=True)
    assert not np.allclose(raw, calibrated)  # the probabilities did change
    clear = (np.abs(raw - raw_thresholds) > 1e-6) & (np.abs(calibrated - thresholds) > 1e-6)  # float32 ties
    assert clear.mean() > 0.99
    assert ((raw >= raw_thresholds) == predictor.decide(probs))[clear].all()


@pytest.mark.parametrize("prior_bias", [True, False])
def test_label_biases_start_from_the_training_priors_unless_turned_off(tmp_path, monkeypatch, prior_bias):
    from mlic.models import Classifier

    seen = []
    original = Classifier.start_from_priors
    monkeypatch.setattr(Classifier, "start_from_priors", lambda self, p: seen.append(p) or original(self, p))
    options = {**TINY, "demo_train": 64, "demo_val": 16, "max_epochs": 1}
    train(out=str(tmp_path / "run"), prior_bias=prior_bias, **options)
    if not prior_bias:
        assert seen == []
        return
    (priors,) = seen
    labels = multidigits("train", 64, seed=TrainConfig().seed).labels
    assert np.allclose(priors, np.maximum((labels == 1).sum(0), 0.5) / len(labels))


def test_repeat_factors_and_progressive_sizes_reach_the_training_loader(tmp_path, monkeypatch):
    from mlic.training import datamodule

    seen = {}
    original = datamodule.DataModule.__init__

    def recording(self, *args, **kwargs):
        seen.update(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(datamodule.DataModule, "__init__", recording)
    options = {**TINY, "demo_train": 64, "demo_val": 16, "max_epochs": 2}
    run = train(out=str(tmp_path / "run"), repeat_threshold=0.5, progressive_resize=0.5, **options)
    labels = multidigits("train", 64, seed=TrainConfig().seed).label_lists
    assert np.array_equal(seen["repeats"], datamodule.repeat_factors(labels, 0.5))
    assert seen["repeats"].max() > 1.0  # some digit is on fewer than half of the images
    assert seen["sizes"] == [(16, 16), (32, 32)]  # TINY's inputs are 32 px
    config = load_artifact(run).training["config"]
    assert config["repeat_threshold"] == 0.5 and config["progressive_resize"] == 0.5
