"""Tests of mlic.inference.precision: what each runtime offers, native support, the float32 fallback."""

from __future__ import annotations

import warnings

import pytest

from mlic.errors import ConfigError
from mlic.inference import precision
from mlic.inference.precision import PRECISIONS, check_precision, native_precision


@pytest.mark.parametrize(("runtime", "asked"), [("torch", "int8"), ("onnx", "bf16"), ("torch", "fp16")])
def test_a_precision_the_runtime_does_not_offer_is_refused_with_the_offered_ones(runtime, asked):
    with pytest.raises(
        ConfigError, match=f"precision '{asked}' is not offered by the {runtime} runtime"
    ) as e:
        check_precision(runtime, asked)
    assert str(list(PRECISIONS[runtime])) in str(e.value)


def test_fp32_is_always_native_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native_precision("torch", "fp32") == native_precision("onnx", "fp32") == "fp32"


@pytest.mark.parametrize(("runtime", "asked", "check"), [("torch", "bf16", "cpu_supports_bf16"),
                                                          ("onnx", "int8", "cpu_supports_int8")])  # fmt: skip
def test_a_cpu_without_the_instructions_falls_back_to_fp32_with_one_warning(
    monkeypatch, runtime, asked, check
):
    monkeypatch.setattr(precision, check, lambda: False)
    with pytest.warns(UserWarning, match=f"this CPU has no .*; running float32 instead of {asked}") as record:
        assert native_precision(runtime, asked) == "fp32"
    assert len(record) == 1 and "\n" not in str(record[0].message)


@pytest.mark.parametrize(("runtime", "asked", "check"), [("torch", "bf16", "cpu_supports_bf16"),
                                                          ("onnx", "int8", "cpu_supports_int8")])  # fmt: skip
def test_a_cpu_with_the_instructions_runs_the_lower_precision(monkeypatch, runtime, asked, check):
    monkeypatch.setattr(precision, check, lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native_precision(runtime, asked) == asked


def test_int8_on_a_gpu_falls_back_since_the_int8_model_runs_on_the_cpu_provider():
    with pytest.warns(UserWarning, match="device cuda does not run the int8 model; running float32"):
        assert native_precision("onnx", "int8", "cuda") == "fp32"


@pytest.mark.parametrize(("flags", "expected"), [({"avx2", "avx512_vnni"}, True), ({"avx_vnni"}, True),
                                                 ({"amx_int8"}, True), ({"asimddp"}, True),
                                                 ({"avx2", "avx512f"}, False), (set(), False)])  # fmt: skip
def test_int8_support_is_read_from_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.cpu_supports_int8() is expected


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512_vnni\n\nprocessor\t: 1\n"
    )
    real_path = precision.Path
    monkeypatch.setattr(
        precision, "Path", lambda p: real_path(info) if p == "/proc/cpuinfo" else real_path(p)
    )
    precision.cpu_flags.cache_clear()
    try:
        assert precision.cpu_flags() == frozenset({"fpu", "sse2", "avx512_vnni"})
    finally:
        precision.cpu_flags.cache_clear()
