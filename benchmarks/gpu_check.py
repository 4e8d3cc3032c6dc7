"""Prove mlic's GPU path on a real GPU: five checks, one JSON object of figures.

    python benchmarks/gpu_check.py --out gpu-check          # on a GPU machine: about 5 minutes on one H100
    python benchmarks/gpu_check.py --dry --out gpu-dry      # anywhere: the same code at tiny sizes on the CPU
    python benchmarks/gpu_check.py --only train,onnx        # some of the checks

The checks, each a function that returns a dict with ``passed`` (``None`` when
skipped), its figures and a ``reason`` when skipped or failed:

- ``train``: ``mlic train --accelerator auto`` on MultiDigits (mlic's defaults,
  12 epochs); Lightning must report the GPU used, the run must be bf16-mixed,
  and the artifact's test mAP must reach the CPU run's quality (0.997).
- ``resume``: ``mlic train --deterministic`` killed with SIGKILL mid-epoch, then
  ``mlic train --resume``; the resumed run's ``model.safetensors`` must equal an
  uninterrupted run's tensor for tensor. If deterministic kernels are missing
  on this GPU, the check names them and does the kill and resume without
  ``--deterministic`` (then only finishing is asked for).
- ``throughput``: ``mlic.train`` against a plain PyTorch loop on the same
  model (resnet50, 224 px), data (MultiDigits canvases in memory, resized:
  loading is cheap), batches, optimiser, precision and memory format, with a
  validation pass per epoch in both; images/s of each whole fit, their ratio
  (goal >= 0.9) and the GPU memory at the peak.
- ``ddp``: ``mlic train --devices -1 --strategy ddp`` on every GPU: the
  validation figures logged at the epoch's end (gathered over the processes)
  must equal those computed again in one process for the artifact. Run in
  float32 with TF32 off (``NVIDIA_TF32_OVERRIDE=0``), since the one-process
  figures are computed on the CPU in float32. Skipped with one GPU.
- ``onnx``: the ``train`` artifact exported (``mlic.export.export_onnx``) and run
  by ONNX Runtime's CUDA execution provider through ``mlic.inference.onnx_runtime.OnnxModel``:
  logits within 1e-3 of PyTorch's, and the same test mAP through
  ``Predictor(runtime="onnx", device="cuda")``. Skipped where onnxruntime has
  no CUDA provider (``pip install onnxruntime-gpu``).

``--dry`` runs every check on the CPU at tiny sizes (mlic_cnn, 1 epoch, a few
hundred 32 px images, two CPU processes for DDP, the CPU provider for ONNX),
with the quality and speed marks off: it checks this script's own logic, and
``tests/test_gpu_check.py`` runs it so that the script cannot rot.

Progress goes to stderr; stdout gets the JSON alone, which is also written to
``OUT/gpu_check.json`` with each mlic command's output in ``OUT/logs/``. The
runs themselves go to a temporary folder (``--work``), removed at the end
unless ``--keep``. The exit code is 1 when a check that ran failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import mlic
from mlic.artifact import load_artifact

CHECKS = ("train", "resume", "throughput", "ddp", "onnx")
DETERMINISM_ERROR = re.compile(r"(\w+) does not have a deterministic implementation")
LIGHTNING_DEVICE = re.compile(r"GPU available: (\w+)(?: \((\w+)\))?, used: (\w+)")
VALIDATION_FIGURES = ("mAP", "micro_f1", "count_accuracy", "largest_accuracy")


@dataclass(frozen=True)
class Settings:
    """Sizes, budgets and pass marks of one mode: the GPU run, or the dry run of the logic on a CPU.

    ``train``, ``resume``, ``throughput`` and ``ddp`` are ``mlic.train`` options
    (``TrainConfig`` fields); the checks pass them as ``mlic train`` options
    (``cli_args``) or as keywords.
    """

    dry: bool
    train: dict
    """The quality run (with ``--epochs``: its max_epochs)."""
    test_samples: int | None
    """MultiDigits test canvases for the quality figures (None: the split's 2,000)."""
    min_map: float
    resume: dict
    kill_after_s: float
    """Seconds between the first mid-epoch checkpoint and the SIGKILL."""
    throughput: dict
    """The speed comparison (the plain loop reads the same sizes)."""
    min_ratio: float
    ddp: dict
    ddp_atol: float
    onnx_device: str
    onnx_atol: float
    budgets: dict = field(default_factory=dict)
    """Seconds each check may take; a subprocess past its check's budget is killed."""

    @property
    def accelerator(self) -> str:
        return self.train["accelerator"]

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch of the resume runs (one process: the last ragged batch is dropped)."""
        return self.resume["demo_train"] // self.resume["batch_size"]


def cli_args(options: dict) -> list[str]:
    """``mlic train`` options for ``TrainConfig`` fields, spelt as declared: ``image_size=32`` ->
    ``--image-size 32``, ``num_workers=2`` -> ``--workers 2``."""
    from mlic.cli.train import flag as declared_flag

    args = []
    for name, value in options.items():
        flag = declared_flag(name)
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def gpu_settings(epochs: int | None) -> Settings:
    """The real run: about 5 minutes on one H100 (the budgets add up to 8)."""
    return Settings(
        dry=False,
        train={"accelerator": "auto", "max_epochs": epochs or 12},
        test_samples=None,
        min_map=0.997,
        resume={
            "accelerator": "auto",
            "demo_train": 5120,
            "demo_val": 512,
            "batch_size": 128,
            "max_epochs": 2,
            "checkpoint_steps": 8,
        },
        kill_after_s=0.1,
        throughput={
            "accelerator": "auto",
            "backbone": "resnet50",
            "image_size": 224,
            "demo_train": 25_600,
            "demo_val": 1_024,
            "batch_size": 128,
            "max_epochs": 2,
            "num_workers": min(8, os.cpu_count() or 1),
            "augment": "light",
        },
        min_ratio=0.9,
        ddp={"accelerator": "gpu", "devices": "-1", "demo_train": 4096, "demo_val": 997, "batch_size": 128},
        ddp_atol=1e-4,
        onnx_device="cuda",
        onnx_atol=1e-3,
        budgets={"train": 150, "resume": 90, "throughput": 120, "ddp": 75, "onnx": 45},
    )


def dry_settings(epochs: int | None) -> Settings:
    """Tiny sizes on the CPU in float32, marks off: every line of the checks runs, in well under a minute."""
    tiny = {"accelerator": "cpu", "precision": "32-true", "image_size": 32}
    return Settings(
        dry=True,
        train={**tiny, "max_epochs": epochs or 1, "demo_train": 256, "demo_val": 64, "batch_size": 64},
        test_samples=64,
        min_map=0.0,
        resume={
            **tiny,
            "demo_train": 128,
            "demo_val": 32,
            "batch_size": 32,
            "max_epochs": 2,
            "checkpoint_steps": 2,
        },
        kill_after_s=0.0,
        throughput={
            **tiny,
            "backbone": "mlic_cnn",
            "demo_train": 256,
            "demo_val": 64,
            "batch_size": 64,
            "max_epochs": 1,
            "num_workers": 0,
            "augment": "light",
        },
        min_ratio=0.0,
        ddp={**tiny, "devices": "2", "demo_train": 128, "demo_val": 67, "batch_size": 32},
        ddp_atol=2e-6,
        onnx_device="cpu",
        onnx_atol=1e-3,
        budgets=dict.fromkeys(CHECKS, 600),  # a limit for hangs only: shared CPUs can be 10x slower
    )


@dataclass
class Context:
    """What the checks share: settings, folders, and the quality run's artifact for the ONNX check."""

    settings: Settings
    out: Path
    work: Path
    artifact: Path | None = None


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


# -- running mlic ------------------------------------------------------------------------------------


@dataclass
class Finished:
    """An mlic command that ended: exit code, stdout, the stderr it logged, and its wall time."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def mlic_command(*args: str) -> list[str]:
    """``python -m mlic ARGS`` with this interpreter: needs no installed ``mlic`` script."""
    return [sys.executable, "-m", "mlic", *args]


def start(args: Sequence[str], log_file: Path, env: dict | None = None) -> subprocess.Popen:
    """Start an mlic command in a session of its own (so that it and its children end together).

    Its stderr goes to ``log_file`` and its stdout beside it (``.stdout``): files,
    not pipes, so that no process (a DDP rank, a loader worker) blocks on a full pipe.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as stderr, open(stdout_file(log_file), "w") as stdout:  # the child keeps copies
        return subprocess.Popen(
            mlic_command(*args),
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stdout_file(log_file: Path) -> Path:
    return log_file.with_suffix(".stdout")


def finish(process: subprocess.Popen, log_file: Path, timeout: float, started: float) -> Finished:
    """Wait for ``process``; past ``timeout`` kill its session (exit code -9)."""
    try:
        process.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        kill_session(process)
    return Finished(process.returncode, stdout_file(log_file).read_text(errors="replace"),
                    log_file.read_text(errors="replace"), time.perf_counter() - started)  # fmt: skip


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and every process it started (loader workers, DDP ranks)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_mlic(args: Sequence[str], log_file: Path, timeout: float, env: dict | None = None) -> Finished:
    started = time.perf_counter()
    return finish(start(args, log_file, env), log_file, timeout, started)


def failure(done: Finished, what: str) -> str:
    """Why a command failed, in one line: a timeout, a missing deterministic kernel, or its last line."""
    if done.returncode == -signal.SIGKILL:
        return f"{what} ran past its budget ({done.seconds:.0f} s) and was killed"
    kernels = deterministic_blockers(done.stderr)
    if kernels:
        return f"{what}: no deterministic implementation of {', '.join(kernels)}"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return f"{what} exited with {done.returncode}: {lines[-1] if lines else '(no output)'}"


def deterministic_blockers(text: str) -> list[str]:
    """The kernels that PyTorch named as lacking a deterministic implementation, in order, once each."""
    return list(dict.fromkeys(DETERMINISM_ERROR.findall(text)))


def device_line(stderr: str) -> dict:
    """Lightning's "GPU available: True (cuda), used: True" line, parsed."""
    match = LIGHTNING_DEVICE.search(stderr)
    if match is None:
        return {"gpu_available": None, "gpu_kind": None, "gpu_used": None}
    available, kind, used = match.groups()
    return {"gpu_available": available == "True", "gpu_kind": kind, "gpu_used": used == "True"}


def artifact_path(done: Finished) -> Path | None:
    """The artifact path that ``mlic train`` printed as its last stdout line."""
    lines = done.stdout.strip().splitlines()
    return Path(lines[-1]) if done.returncode == 0 and lines else None


def elapsed_over(check: dict, budget: float) -> dict:
    """Mark a check that took longer than its budget (in-process work cannot be cut short)."""
    if check.get("seconds", 0) > budget:
        check["over_budget"] = True
    return check


# -- train: the quality run --------------------------------------------------------------------------


def check_train(ctx: Context) -> dict:
    """``mlic train --accelerator auto`` on MultiDigits: on the GPU, in bf16, at the CPU run's quality."""
    s = ctx.settings
    run = ctx.work / "train"
    args = ["train", *cli_args(s.train), "--no-progress", "--out", str(run)]
    done = run_mlic(args, ctx.out / "logs" / "train.log", s.budgets["train"])
    artifact = artifact_path(done)
    result: dict = {"command": "mlic " + " ".join(args[:-1]) + " RUN", "seconds": round(done.seconds, 1)}
    if artifact is None:
        return {**result, "passed": False, "reason": failure(done, "mlic train")}
    ctx.artifact = artifact
    training = load_artifact(artifact).training
    figures = mlic.evaluate(artifact, "demo", demo_samples=s.test_samples)
    result |= {
        **device_line(done.stderr),
        "precision": training["precision"],
        "epochs": training["epochs"],
        "fit_seconds": training["seconds"],
        "train_images_per_s": images_per_second(training),
        "test_images": figures["n_samples"],
        "test_mAP": round(figures["mAP"], 5),
        "test_micro_f1": round(figures["micro_f1"], 5),
        "test_count_accuracy": round(figures["attributes"]["count"]["accuracy"], 5),
        "test_largest_accuracy": round(figures["attributes"]["largest"]["accuracy"], 5),
        "min_test_mAP": s.min_map,
    }
    return {**result, **judge_train(result, s)}


def images_per_second(training: dict) -> float:
    """Training images/s of a one-process run from its artifact: whole batches over the fit's seconds."""
    batch = int(training["config"]["batch_size"])
    seen = training["epochs"] * (training["train_images"] // batch) * batch
    return round(seen / training["seconds"], 1)


def judge_train(result: dict, settings: Settings) -> dict:
    """Passed when the run used the GPU (dry: not), in bf16 (dry: as asked), and reached the mAP mark."""
    reasons = []
    if result["gpu_used"] != (not settings.dry):
        reasons.append(f"Lightning reported GPU used: {result['gpu_used']}")
    expected = settings.train.get("precision", "bf16-mixed")
    if result["precision"] != expected:
        reasons.append(f"precision {result['precision']}, expected {expected}")
    if not result["test_mAP"] >= settings.min_map:
        reasons.append(f"test mAP {result['test_mAP']} < {settings.min_map}")
    return verdict(reasons)


def verdict(reasons: list[str]) -> dict:
    """``passed``, and the ``reason`` when it did not."""
    return {"passed": not reasons, **({"reason": "; ".join(reasons)} if reasons else {})}


# -- resume: SIGKILL mid-epoch, then --resume ---------------------------------------------------------


def check_resume(ctx: Context) -> dict:
    """A deterministic run killed mid-epoch and resumed ends with an uninterrupted run's weights.

    If this GPU lacks a deterministic kernel the model needs, the check names
    the kernels and repeats the kill and resume without ``--deterministic``.
    """
    result = kill_and_resume(ctx, deterministic=True)
    blockers = result.get("deterministic_blockers")
    if not blockers:
        return result
    log(f"resume: no deterministic kernels for {', '.join(blockers)}; again without --deterministic")
    again = kill_and_resume(ctx, deterministic=False)
    passed = again["passed"] is not False  # finished; equal weights are not promised without determinism
    reason = f"no deterministic implementation of {', '.join(blockers)} here, so without --deterministic "
    reason += "the killed run resumed and finished" if passed else f"the resume failed: {again['reason']}"
    return {**again, "deterministic_blockers": blockers, "passed": passed, "reason": reason}


def kill_and_resume(ctx: Context, *, deterministic: bool) -> dict:
    """``mlic train`` killed after its first mid-epoch checkpoint and resumed, against a run never stopped.

    The killed and the resumed runs are ``mlic train`` processes, as a user
    starts them; the uninterrupted one is ``mlic.train`` with the same options
    in this process, while the resumed one runs (one start of Python less).
    """
    s = ctx.settings
    tag = "resume" if deterministic else "resume-nondeterministic"
    whole, killed = ctx.work / f"{tag}-whole", ctx.work / f"{tag}-killed"
    options = {**s.resume, "deterministic": deterministic}
    logs, started = ctx.out / "logs", time.perf_counter()
    args = ["train", *cli_args(options), "--no-progress", "--out", str(killed)]
    kill = kill_mid_epoch(args, logs / f"{tag}-killed.log", killed, s)
    killed_log = kill.pop("stderr")
    result: dict = {"deterministic": deterministic, "steps_per_epoch": s.steps_per_epoch, **kill}
    if deterministic_blockers(killed_log):
        return {**result, "passed": False, "deterministic_blockers": deterministic_blockers(killed_log)}
    if not kill["killed_while_running"]:
        last = (killed_log.strip().splitlines() or ["(no output)"])[-1]
        return {**result, "passed": False, "reason": f"the run had ended before the kill: {last}"}
    if kill["resumed_from_step"] is None:
        return {**result, "passed": False, "reason": "the run wrote no checkpoint within the check's budget"}
    resume_log = logs / f"{tag}-resumed.log"
    resuming = start(["train", "--resume", str(killed), "--no-progress"], resume_log)
    try:
        blockers = reference_run(whole, options)
    finally:
        resumed = finish(resuming, resume_log, s.budgets["resume"] - (time.perf_counter() - started), started)
    result["seconds"] = round(time.perf_counter() - started, 1)
    blockers = blockers or deterministic_blockers(resumed.stderr)
    if blockers:
        return {**result, "passed": False, "deterministic_blockers": blockers}
    if artifact_path(resumed) is None:
        return {**result, "passed": False, "reason": failure(resumed, "mlic train --resume")}
    result |= compare_runs(whole / "artifact", killed / "artifact")
    return {**result, **judge_resume(result, deterministic)}


def reference_run(run: Path, options: dict) -> list[str]:
    """The uninterrupted run, in this process; the kernels that prevent ``deterministic``, if any.

    Lightning's deterministic mode is process-wide: the flags are put back after.
    """
    deterministic, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    benchmark, workspace = torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        mlic.train(out=str(run), progress=False, **options)
    except RuntimeError as e:
        if not deterministic_blockers(str(e)):
            raise
        return deterministic_blockers(str(e))
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        os.environ.update({"CUBLAS_WORKSPACE_CONFIG": workspace} if workspace else {})
    return []


def kill_mid_epoch(args: list[str], log_file: Path, run: Path, s: Settings) -> dict:
    """Start ``args``, SIGKILL it ``kill_after_s`` after its first ``last.ckpt``, and say where it was.

    A run that writes no checkpoint within the check's budget is killed then.
    """
    last = run / "checkpoints" / "last.ckpt"
    process = start(args, log_file)
    deadline = time.perf_counter() + s.budgets["resume"]
    while process.poll() is None and not last.exists() and time.perf_counter() < deadline:
        time.sleep(0.005)
    time.sleep(s.kill_after_s)
    running = process.poll() is None
    kill_session(process)
    state = checkpoint_position(last) if last.exists() else {"resumed_from_step": None}
    step = state["resumed_from_step"]
    mid_epoch = step is not None and step % s.steps_per_epoch != 0
    return {"killed_while_running": running, **state, "mid_epoch": mid_epoch,
            "artifact_before_resume": (run / "artifact").exists(),
            "stderr": log_file.read_text(errors="replace")}  # fmt: skip


def checkpoint_position(path: Path) -> dict:
    """The optimiser step and epoch that a checkpoint holds (where the resumed run starts)."""
    from mlic.training.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(path)
    return {
        "resumed_from_step": int(checkpoint["global_step"]),
        "resumed_from_epoch": int(checkpoint["epoch"]),
    }


def compare_runs(a: Path, b: Path) -> dict:
    """Tensor-for-tensor comparison of two artifacts' ``model.safetensors``, thresholds and figures."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    differing = sorted(
        k for k in wa.keys() | wb.keys() if k not in wa or k not in wb or not torch.equal(wa[k], wb[k])
    )
    same_shape = [k for k in differing if k in wa and k in wb and wa[k].shape == wb[k].shape]
    diff = max((float((wa[k].double() - wb[k].double()).abs().max()) for k in same_shape), default=0.0)
    ta, tb = load_artifact(a), load_artifact(b)
    return {
        "weights_equal": not differing,
        "tensors": len(wa),
        "tensors_differing": len(differing),
        "max_abs_weight_diff": diff,
        "thresholds_equal": bool(np.array_equal(ta.thresholds, tb.thresholds)),
        "validation_equal": ta.training["validation"] == tb.training["validation"],
        "epochs": tb.training["epochs"],
    }


def judge_resume(result: dict, deterministic: bool) -> dict:
    """Deterministic: equal weights after a mid-epoch resume. Otherwise: the resumed run finished."""
    reasons = []
    if result["artifact_before_resume"]:
        reasons.append("the killed run had written an artifact")
    if not result["mid_epoch"]:
        reasons.append(f"the kill left a checkpoint at an epoch's end (step {result['resumed_from_step']})")
    if deterministic and not (result["weights_equal"] and result["thresholds_equal"]):
        reasons.append(f"{result['tensors_differing']} of {result['tensors']} tensors differ "
                       f"(max {result['max_abs_weight_diff']:.3g}) from the uninterrupted run")  # fmt: skip
    return verdict(reasons)


# -- throughput: mlic.train against a plain loop --------------------------------------------------------


def check_throughput(ctx: Context) -> dict:
    """Images/s of ``mlic.train`` and of a plain PyTorch loop, same model, data and precision; peak memory."""
    s = ctx.settings
    options = s.throughput
    device = torch.device("cuda" if not s.dry and torch.cuda.is_available() else "cpu")
    warm_up(device)
    started = time.perf_counter()
    mlic_run = measure(lambda: mlic_fit(ctx, options), device)
    hand = measure(lambda: hand_fit(options, device, mlic_run["precision"]), device)
    ratio = mlic_run["images_per_s"] / hand["images_per_s"]
    result = {
        "model": f"{options['backbone']} at {options['image_size']} px, batches of {options['batch_size']}",
        "data": f"{options['demo_train']} MultiDigits canvases in memory, resized, {options['augment']} "
        f"augmentation, {options['num_workers']} loader workers",
        "epochs": options["max_epochs"],
        "device": str(device),
        "mlic": mlic_run,
        "plain_loop": hand,
        "ratio": round(ratio, 3),
        "min_ratio": s.min_ratio,
        "loading_bound": hand["loader_images_per_s"] < 1.5 * hand["images_per_s"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    passed = ratio >= s.min_ratio
    reason = {} if passed else {"reason": f"mlic.train ran at {ratio:.2f} of the plain loop's speed"}
    return elapsed_over({**result, "passed": passed, **reason}, s.budgets["throughput"])


def warm_up(device: torch.device) -> None:
    """Start CUDA and its libraries before either timed run, so that neither pays for it."""
    if device.type == "cuda":
        conv = torch.nn.Conv2d(3, 8, 3).to(device)
        conv(torch.zeros(2, 3, 16, 16, device=device)).sum().backward()
        torch.cuda.synchronize()


def measure(fit: Callable[[], dict], device: torch.device) -> dict:
    """Run ``fit`` and add the GPU memory it held at the peak (MiB; None on the CPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    figures = fit()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {**figures, "peak_gpu_memory_mib": None if peak is None else round(peak, 1)}


def mlic_fit(ctx: Context, options: dict) -> dict:
    """``mlic.train`` with its defaults besides ``options``; images/s over the fit, validation included.

    ``wall_seconds`` is the whole call: the data made before the fit, and after
    it the per-label thresholds chosen over the validation images (on the CPU).
    """
    started = time.perf_counter()
    artifact = mlic.train(out=str(ctx.work / "throughput"), checkpoint_minutes=0, progress=False, **options)
    wall = time.perf_counter() - started
    training = load_artifact(artifact).training
    return {"images_per_s": images_per_second(training), "fit_seconds": training["seconds"],
            "wall_seconds": round(wall, 1), "precision": training["precision"],
            "val_mAP": round(training["validation"]["mAP"], 5)}  # fmt: skip


def hand_fit(options: dict, device: torch.device, precision: str) -> dict:
    """A plain loop: forward, loss, backward, AdamW step, warm-up + cosine schedule; validation each epoch."""
    from mlic.data import multidigits
    from mlic.data.formats.demo import SCHEMA
    from mlic.losses import SchemaLoss
    from mlic.models import ModelConfig, build_classifier
    from mlic.training import warmup_cosine

    torch.manual_seed(0)
    train_loader, val_loader = plain_loaders(options, multidigits, device)
    model = build_classifier(SCHEMA, ModelConfig(backbone=options["backbone"]))
    loss_fn = SchemaLoss(model.schema).to(device)  # inside Lightning the module moves it with the model
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    epochs, steps = options["max_epochs"], len(train_loader)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    started, seen = time.perf_counter(), 0
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=3e-3)  # fmt: skip
    warmup = min(epochs * steps // 2, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: warmup_cosine(i, warmup, epochs * steps)
    )

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return model(images)

    for _ in range(epochs):
        model.train()
        for images, labels, attributes in train_loader:
            optimizer.zero_grad(set_to_none=True)
            labels, attributes = (
                labels.to(device, non_blocking=True),
                attributes.to(device, non_blocking=True),
            )
            scaler.scale(loss_fn(forward(images), labels, attributes)["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            seen += len(images)
        val_map = plain_validation(model, val_loader, forward)
    seconds = time.perf_counter() - started
    return {"images_per_s": round(seen / seconds, 1), "fit_seconds": round(seconds, 1),
            "precision": precision, "val_mAP": round(val_map, 5),
            "loader_images_per_s": loader_speed(train_loader)}  # fmt: skip


def plain_loaders(options: dict, multidigits, device: torch.device) -> tuple:
    """Train and validation loaders over the canvases ``mlic.train`` reads, with the same transforms."""
    from torch.utils.data import DataLoader

    from mlic.data.images import ImageDataset, Preprocessing, build_transform

    pre = Preprocessing(image_size=(options["image_size"],) * 2, hflip=False)
    workers = options["num_workers"]
    loaders = []
    for split, n in (("train", options["demo_train"]), ("val", options["demo_val"])):
        train = split == "train"
        dataset = ImageDataset(multidigits(split, n, seed=0),
                               build_transform(pre, train=train, augment=options["augment"]))  # fmt: skip
        loaders.append(DataLoader(dataset, batch_size=options["batch_size"], shuffle=train, drop_last=train,
                                  num_workers=workers, persistent_workers=workers > 0,
                                  pin_memory=device.type == "cuda", collate_fn=dataset.collate))  # fmt: skip
    return tuple(loaders)


@torch.inference_mode()
def plain_validation(model, loader, forward) -> float:
    from mlic.metrics import mean_average_precision

    model.eval()
    scores, targets = [], []
    for images, labels, _ in loader:
        scores.append(torch.sigmoid(forward(images)[:, model.schema.label_slice].float()).cpu())
        targets.append(labels)
    return float(mean_average_precision(torch.cat(targets).numpy(), torch.cat(scores).numpy()))


def loader_speed(loader, batches: int = 20) -> float:
    """Images/s of the training loader alone (no model): far above the training speed, or loading binds."""
    iterator = iter(loader)
    next(iterator)  # workers started
    started, seen = time.perf_counter(), 0
    for _, (images, _, _) in zip(range(batches), iterator):
        seen += len(images)
    return round(seen / max(time.perf_counter() - started, 1e-9), 1) if seen else math.nan


# -- ddp: every GPU, validation figures as in one process -----------------------------------------------


def check_ddp(ctx: Context) -> dict:
    """``--strategy ddp`` over every GPU: the gathered validation figures equal one process's."""
    s = ctx.settings
    gpus = torch.cuda.device_count() if not s.dry else 0
    if not s.dry and gpus < 2:
        return {"passed": None, "gpus": gpus,
                "reason": f"{gpus} GPU here: DDP across GPUs needs at least 2"}  # fmt: skip
    run = ctx.work / "ddp"
    # transfer off: the artifact's validation figures are then the classifier's, as each epoch logs them
    options = {**s.ddp, "strategy": "ddp", "precision": "32-true", "max_epochs": 1, "transfer": "off"}
    args = ["train", *cli_args(options), "--no-progress", "--out", str(run)]
    done = run_mlic(args, ctx.out / "logs" / "ddp.log", s.budgets["ddp"], env={"NVIDIA_TF32_OVERRIDE": "0"})
    result: dict = {"command": "mlic " + " ".join(args[:-1]) + " RUN", "seconds": round(done.seconds, 1)}
    if artifact_path(done) is None:
        return {**result, "passed": False, "reason": failure(done, "mlic train --strategy ddp")}
    printed = done.stdout.strip().splitlines()
    logged = epoch_end_figures(run / "logs" / "metrics.csv")
    single = load_artifact(run / "artifact").training["validation"]
    diffs = {name: abs(logged[name] - single[name]) for name in VALIDATION_FIGURES}
    result |= {"processes": gpus or int(s.ddp["devices"]), "logged": logged,
               "one_process": {k: single[k] for k in VALIDATION_FIGURES},
               "max_abs_diff": max(diffs.values()), "atol": s.ddp_atol,
               "artifact_printed_once": printed == [str(run / "artifact")]}  # fmt: skip
    reasons = [f"{k} differs by {d:.3g}" for k, d in diffs.items() if d > s.ddp_atol]
    reasons += [] if result["artifact_printed_once"] else [f"stdout was {printed!r}, not the artifact once"]
    return {**result, **verdict(reasons)}


def epoch_end_figures(metrics_csv: Path) -> dict[str, float]:
    """The validation figures logged at the last epoch's end (by the processes together)."""
    rows = list(csv.DictReader(metrics_csv.read_text().splitlines()))
    row = [r for r in rows if r.get("val/mAP")][-1]
    return {name: float(row[f"val/{name}"]) for name in VALIDATION_FIGURES}


# -- onnx: ONNX Runtime's CUDA provider -------------------------------------------------------------


def check_onnx(ctx: Context) -> dict:
    """The quality run's model under ONNX Runtime (CUDA provider): logits and mAP equal PyTorch's."""
    s = ctx.settings
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = "CUDAExecutionProvider" if s.onnx_device == "cuda" else "CPUExecutionProvider"
    if wanted not in available:
        return {"passed": None, "providers_available": available,
                "reason": f"onnxruntime {onnxruntime.__version__} has no {wanted} "
                          "(pip install onnxruntime-gpu to check it)"}  # fmt: skip
    started = time.perf_counter()
    artifact = onnx_artifact(ctx)
    from mlic.export import export_onnx

    export_onnx(artifact)
    result = {"artifact": "the train check's" if ctx.artifact else "a one-epoch run's",
              **onnx_parity(artifact, s.onnx_device)}  # fmt: skip
    result |= onnx_evaluation(artifact, s)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return elapsed_over({**result, **judge_onnx(result, wanted, s)}, s.budgets["onnx"])


def onnx_artifact(ctx: Context) -> Path:
    """A copy of the quality run's artifact (the export writes into it), or a quick one without it."""
    source = ctx.artifact
    if source is None:
        log("onnx: no train artifact; training one epoch of tiny MultiDigits")
        tiny = {"demo_train": 256, "demo_val": 64, "max_epochs": 1, "image_size": 32, "progress": False}
        source = mlic.train(out=str(ctx.work / "onnx-run"), accelerator=ctx.settings.accelerator, **tiny)
    copy = ctx.work / "onnx-artifact"
    shutil.copytree(source, copy, dirs_exist_ok=True)
    return copy


def onnx_inputs(artifact: Path) -> list[torch.Tensor]:
    """Test canvases at the model's input size (batches of 1 and 64) and a batch of random pixels."""
    from mlic.data import multidigits
    from mlic.data.images import ImageDataset, build_transform

    pre = load_artifact(artifact).preprocessing
    dataset = ImageDataset(multidigits("test", 64, seed=1), build_transform(pre, train=False))
    canvases = torch.stack([dataset[i][0] for i in range(len(dataset))])
    noise = torch.randint(0, 256, (16, 3, *pre.image_size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    return [canvases[:1], canvases, noise]


def onnx_parity(artifact: Path, device: str) -> dict:
    """Largest logit difference of mlic's ``OnnxModel`` on ``device`` from the float32 PyTorch model."""
    from mlic.inference.onnx_runtime import OnnxModel

    loaded = load_artifact(artifact)
    onnx_model = OnnxModel(loaded, device=device)
    model = loaded.build_model().eval()
    diff = 0.0
    with torch.inference_mode():
        for images in onnx_inputs(artifact):
            expected = model(images).double()
            diff = max(diff, float((onnx_model(images).double() - expected).abs().max()))
    figures = {"providers_in_use": onnx_model.session.get_providers(), "max_abs_diff": diff}
    if device == "cuda":
        figures["max_abs_diff_tf32_off"] = ort_without_tf32(artifact, model)
    return figures


def ort_without_tf32(artifact: Path, model) -> float | str:
    """The same difference from a CUDA session with TF32 off: tells TF32 rounding from a real mismatch."""
    import onnxruntime

    from mlic.inference.onnx_runtime import INPUT_NAME, OUTPUT_NAME

    try:
        data = (artifact / "model.onnx").read_bytes()
        providers = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(data, providers=providers)
        diff = 0.0
        for images in onnx_inputs(artifact):
            got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
            with torch.inference_mode():
                diff = max(diff, float(np.abs(got - model(images).numpy()).max()))
        return diff
    except Exception as e:  # an onnxruntime without the option: say so, the main figure stands
        return f"not measured: {type(e).__name__}: {e}"


def onnx_evaluation(artifact: Path, s: Settings) -> dict:
    """Test mAP through ``Predictor`` with the ONNX runtime on the device, and with PyTorch on the CPU."""
    onnx = mlic.evaluate(mlic.Predictor(load_artifact(artifact), runtime="onnx", device=s.onnx_device),
                         "demo", demo_samples=s.test_samples)  # fmt: skip
    torch_cpu = mlic.evaluate(artifact, "demo", demo_samples=s.test_samples)
    return {"test_mAP_onnx": round(onnx["mAP"], 6), "test_mAP_torch": round(torch_cpu["mAP"], 6)}


def judge_onnx(result: dict, wanted: str, s: Settings) -> dict:
    reasons = []
    if result["providers_in_use"][:1] != [wanted]:
        reasons.append(f"ONNX Runtime fell back to {result['providers_in_use']}")
    if not result["max_abs_diff"] <= s.onnx_atol:
        reasons.append(f"logits differ by {result['max_abs_diff']:.3g} > {s.onnx_atol:g}")
    if not abs(result["test_mAP_onnx"] - result["test_mAP_torch"]) <= s.onnx_atol:
        reasons.append("test mAP differs between the runtimes")
    return {"atol": s.onnx_atol, **verdict(reasons)}


# -- the whole check --------------------------------------------------------------------------------

CHECK_FUNCTIONS: dict[str, Callable[[Context], dict]] = {
    "train": check_train,
    "resume": check_resume,
    "throughput": check_throughput,
    "ddp": check_ddp,
    "onnx": check_onnx,
}


def run_check(name: str, ctx: Context) -> dict:
    """One check; an exception is that check's failure, with its message, and the others still run."""
    log(f"{name}: started")
    started = time.perf_counter()
    try:
        result = CHECK_FUNCTIONS[name](ctx)
    except Exception as e:
        result = {"passed": False, "reason": f"{type(e).__name__}: {e}"}
    result.setdefault("seconds", round(time.perf_counter() - started, 1))
    result["budget_s"] = ctx.settings.budgets[name]
    verdict = {True: "passed", False: "FAILED", None: "skipped"}[result["passed"]]
    log(
        f"{name}: {verdict} in {result['seconds']} s"
        + (f" ({result['reason']})" if "reason" in result else "")
    )
    return result


def describe_device(settings: Settings) -> dict:
    if settings.dry:
        return {"device": "cpu (dry)", "gpus": 0}
    if not torch.cuda.is_available():
        return {"device": "cpu (no CUDA device)", "gpus": 0}
    count = torch.cuda.device_count()
    return {"device": torch.cuda.get_device_name(0), "gpus": count}


def versions() -> dict:
    import lightning
    import onnxruntime
    import timm

    return {"mlic": mlic.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "lightning": lightning.__version__, "timm": timm.__version__,
            "onnxruntime": onnxruntime.__version__}  # fmt: skip


def summary(settings: Settings, checks: dict[str, dict], seconds: float) -> dict:
    """The final JSON: device, versions, every check, and whether all that ran passed."""
    return {
        "benchmark": "gpu_check",
        "mode": "dry" if settings.dry else "gpu",
        **describe_device(settings),
        "versions": versions(),
        "seconds": round(seconds, 1),
        "checks": checks,
        "skipped": [name for name, c in checks.items() if c["passed"] is None],
        "all_passed": all(c["passed"] is not False for c in checks.values()),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("gpu-check"), help="folder for the JSON and the logs"
    )
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folder")
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU: checks this script")
    parser.add_argument("--epochs", type=int, help="epochs of the quality run (default 12; dry 1)")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks of {CHECKS}")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(CHECKS))
    if unknown or not args.only:
        parser.error(f"--only takes names from {', '.join(CHECKS)}; got {unknown or 'none'}")
    if not args.dry and not torch.cuda.is_available():
        parser.error("no CUDA device here; --dry runs the checks on the CPU at tiny sizes")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = (dry_settings if args.dry else gpu_settings)(args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "logs", ignore_errors=True)  # an earlier run's logs
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=args.work))
    ctx = Context(settings, args.out, work)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # whatever the libraries print: stdout is the JSON's
            checks = {name: run_check(name, ctx) for name in CHECKS if name in args.only}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = summary(settings, checks, time.perf_counter() - started)
    text = json.dumps(result, indent=1, default=str)
    (args.out / "gpu_check.json").write_text(text + "\n")
    print(text)
    return 0 if result["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
