"""Lower-precision inference: the precisions each runtime offers, and whether this machine runs them natively.

- ``torch`` runs ``fp32`` or ``bf16`` (autocast to bfloat16 with channels-last
  memory: oneDNN's bf16 kernels on CPUs with AVX-512 bf16 or AMX, tensor cores
  on GPUs);
- ``onnx`` runs ``fp32`` (``model.onnx``) or ``int8`` (``model.int8.onnx``,
  written by ``mlic export --quantize int8`` with calibration images; ONNX
  Runtime's u8s8 kernels use AVX-512 VNNI, AVX-VNNI or AMX on x86 and the
  dot-product instructions on ARM).

Elsewhere the lower precision is emulated and slower than float32, so
:func:`native_precision` falls back to ``fp32`` with a one-line warning
rather than run slowly. Parity against float32 is measured, never assumed:
``mlic export --quantize int8`` refuses a variant outside the limits of
``mlic.quantize``, and ``mlic evaluate --precision`` prints the agreement.
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path

import torch

from mlic.errors import ConfigError

PRECISIONS: dict[str, tuple[str, ...]] = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}
"""Runtime -> the precisions it runs; ``fp32`` first, the default."""
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
"""``/proc/cpuinfo`` flags of int8 dot-product instructions (x86 VNNI, AMX; ARM's ``asimddp``)."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as Linux lists them (empty elsewhere, or when unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work natively (AVX-512 bf16 or AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_supports_int8() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI, AMX, ARM dot product, Apple silicon)."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True
    return bool(cpu_flags() & INT8_FLAGS)


def check_precision(runtime: str, precision: str) -> None:
    """Refuse a precision that ``runtime`` does not run, naming the ones it does."""
    offered = PRECISIONS.get(runtime, ("fp32",))
    if precision not in offered:
        raise ConfigError(
            f"precision {precision!r} is not offered by the {runtime} runtime; "
            f"expected one of {list(offered)}"
            + ("; int8 runs in the onnx runtime (mlic export --quantize int8)" if precision == "int8" else "")
            + ("; bf16 runs in the torch runtime" if precision == "bf16" and runtime == "onnx" else "")
        )


def native_precision(runtime: str, precision: str, device: str | torch.device = "cpu") -> str:
    """``precision`` if this device runs it natively, else ``fp32`` after a one-line warning.

    A ``ConfigError`` if ``runtime`` does not offer ``precision`` at all.
    """
    check_precision(runtime, precision)
    if precision == "fp32":
        return precision
    kind = torch.device(device).type
    if precision == "bf16":
        native = torch.cuda.is_bf16_supported() if kind == "cuda" else kind == "cpu" and cpu_supports_bf16()
        what = "bf16 matrix instructions (AVX-512 bf16 or AMX)"
    else:  # int8: ONNX Runtime's quantized kernels are the CPU provider's
        native = kind == "cpu" and cpu_supports_int8()
        what = "int8 dot-product instructions (VNNI, AMX or ARM dot product)"
    if native:
        return precision
    where = "this CPU" if kind == "cpu" else f"device {kind}"
    reason = f"has no {what}" if kind == "cpu" or precision == "bf16" else "does not run the int8 model"
    warnings.warn(f"{where} {reason}; running float32 instead of {precision}", UserWarning, stacklevel=3)
    return "fp32"
