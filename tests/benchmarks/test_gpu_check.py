"""benchmarks/gpu_check.py: its dry mode on the CPU, so that the GPU check cannot rot before a GPU runs it.

The dry mode runs every check's code at tiny sizes. train, throughput and onnx
(one ``mlic train`` process in all) run in the quick suite, in about 30 s on
two busy cores; resume (a run killed and one resumed) and ddp (two ranks)
start several processes each, about 50 s more, and are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def dry_run(gpu_check, tmp_path: Path, capsys, only: str) -> tuple[int, dict]:
    """``gpu_check.py --dry --only ONLY``: its exit code and the JSON it printed (the only stdout)."""
    code = gpu_check.main(["--dry", "--only", only, "--out", str(tmp_path / "out"), "--work", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert printed["mode"] == "dry" and printed["device"] == "cpu (dry)" and printed["gpus"] == 0
    assert set(printed["versions"]) >= {"torch", "cuda", "lightning", "timm", "onnxruntime"}
    assert list(printed["checks"]) == only.split(",") and printed["skipped"] == []
    for name, check in printed["checks"].items():
        assert check["passed"] is True, (name, check.get("reason"))
        assert check["seconds"] >= 0 and check["budget_s"] > 0 and "reason" not in check
    assert printed["all_passed"] is True and code == 0
    assert [p.name for p in tmp_path.glob("gpu-check-*")] == []  # the runs' folder is removed
    return code, printed


def test_dry_train_throughput_and_onnx_checks_pass(gpu_check, tmp_path, capsys):
    _, printed = dry_run(gpu_check, tmp_path, capsys, "train,throughput,onnx")
    train, speed, onnx = (printed["checks"][name] for name in ("train", "throughput", "onnx"))
    assert train["gpu_available"] is False and train["gpu_used"] is False  # parsed from Lightning's line
    assert train["precision"] == "32-true" and train["epochs"] == 1 and train["test_images"] == 64
    assert 0.0 <= train["test_mAP"] <= 1.0 and train["train_images_per_s"] > 0
    assert (tmp_path / "out" / "logs" / "train.log").is_file()
    assert train["command"].startswith("mlic train --accelerator cpu --precision 32-true")
    for run in ("mlic", "plain_loop"):
        assert speed[run]["images_per_s"] > 0 and speed[run]["precision"] == "32-true"
        assert speed[run]["peak_gpu_memory_mib"] is None  # no GPU
    ratio = speed["mlic"]["images_per_s"] / speed["plain_loop"]["images_per_s"]
    assert speed["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert onnx["artifact"] == "the train check's" and onnx["providers_in_use"] == ["CPUExecutionProvider"]
    assert onnx["max_abs_diff"] <= 1e-3 and onnx["test_mAP_onnx"] == pytest.approx(onnx["test_mAP_torch"])


@pytest.mark.slow
def test_dry_resume_and_ddp_checks_pass(gpu_check, tmp_path, capsys):
    """A SIGKILL mid-epoch and a resume equal to the uninterrupted run; two DDP processes on the CPU."""
    _, printed = dry_run(gpu_check, tmp_path, capsys, "resume,ddp")
    resume, ddp = printed["checks"]["resume"], printed["checks"]["ddp"]
    assert resume["deterministic"] is True and resume["killed_while_running"] and resume["mid_epoch"]
    assert resume["weights_equal"] and resume["tensors_differing"] == 0 and resume["epochs"] == 2
    assert resume["thresholds_equal"] and resume["validation_equal"] and not resume["artifact_before_resume"]
    assert ddp["processes"] == 2 and ddp["artifact_printed_once"] and ddp["max_abs_diff"] <= ddp["atol"]


# -- the pieces that judge a GPU's output, on outputs a GPU would give --------------------------------


def test_a_missing_deterministic_kernel_is_named(gpu_check):
    message = (
        "RuntimeError: adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but "
        "you set 'torch.use_deterministic_algorithms(True)'. ...\nRuntimeError: upsample_bilinear2d_backward"
        "_out_cuda does not have a deterministic implementation\nadaptive_avg_pool2d_backward_cuda does not "
        "have a deterministic implementation"
    )
    assert gpu_check.deterministic_blockers(message) == [
        "adaptive_avg_pool2d_backward_cuda",
        "upsample_bilinear2d_backward_out_cuda",
    ]
    done = gpu_check.Finished(1, "", message, 3.0)
    assert "no deterministic implementation of adaptive_avg_pool2d_backward_cuda" in gpu_check.failure(
        done, "mlic train"
    )


def test_lightnings_device_line_is_read(gpu_check):
    line = "Using bfloat16 Automatic Mixed Precision (AMP)\nGPU available: True (cuda), used: True\n"
    assert gpu_check.device_line(line) == {"gpu_available": True, "gpu_kind": "cuda", "gpu_used": True}
    assert gpu_check.device_line("GPU available: False, used: False")["gpu_used"] is False
    assert gpu_check.device_line("no such line")["gpu_used"] is None


def test_options_become_mlic_train_options(gpu_check):
    args = gpu_check.cli_args({"devices": "-1", "image_size": 32, "deterministic": True, "hflip": False})
    assert args == ["--devices", "-1", "--image-size", "32", "--deterministic", "--no-hflip"]
    settings = gpu_check.gpu_settings(None)
    assert settings.train == {"accelerator": "auto", "max_epochs": 12} and settings.steps_per_epoch == 40
    assert sum(settings.budgets.values()) <= 8 * 60


def test_a_failed_check_fails_the_run_and_a_skipped_one_does_not(gpu_check):
    settings = gpu_check.dry_settings(None)
    skipped = {"passed": None, "reason": "1 GPU here"}
    assert gpu_check.summary(settings, {"ddp": skipped}, 1.0)["all_passed"] is True
    failed = gpu_check.summary(settings, {"ddp": skipped, "train": {"passed": False}}, 1.0)
    assert failed["all_passed"] is False and failed["skipped"] == ["ddp"]


def test_a_check_that_raises_is_that_checks_failure(gpu_check, tmp_path, monkeypatch):
    def broken(ctx):
        raise KeyError("precision")

    monkeypatch.setitem(gpu_check.CHECK_FUNCTIONS, "train", broken)
    ctx = gpu_check.Context(gpu_check.dry_settings(None), tmp_path, tmp_path)
    result = gpu_check.run_check("train", ctx)
    assert result["passed"] is False and result["reason"] == "KeyError: 'precision'"
