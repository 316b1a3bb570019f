"""Choosing the compute dtype: ``auto`` = bfloat16 where the CPU multiplies bfloat16 natively.

Imports no TensorFlow (the CLI uses it before TF loads).
"""

from __future__ import annotations

import functools
import os
import sys


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("unknown CPU", {}) where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "unknown CPU", frozenset()
    model, flags = "unknown CPU", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def cpu_line() -> str:
    """One line naming this machine's CPU for benchmark headers: model, cores, the ISA flags that decide
    the matmul paths, and what ``auto`` resolves to here."""
    model, flags = _cpuinfo()
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "none of " + "/".join(ISA_FLAGS)
    why = ("native bf16 dot products: " + "/".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags)
           if native_bfloat16() else "no avx512_bf16/amx_bf16: bf16 would be emulated")
    return (f"cpu: {model}, {os.cpu_count()} cores; isa: {isa}; "
            f"compute dtype auto -> {resolve_dtype('auto')} ({why})")


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """True where the CPU has native bfloat16 dot products (AVX512_BF16 or AMX): there oneDNN's
    bfloat16 matmuls and convolutions run faster than float32; elsewhere they are emulated and slower.
    Read once per process."""
    flags = _cpuinfo()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(value: str) -> str:
    """``auto`` -> ``bfloat16`` where native (:func:`native_bfloat16`), else ``float32``; other values as given."""
    if value != "auto":
        return value
    return "bfloat16" if native_bfloat16() else "float32"


# ---- oneDNN's float32 math mode (process-wide, chosen before TensorFlow is imported) ----------------
#
# With TF_SET_ONEDNN_FPMATH_MODE=BF16, TensorFlow creates its oneDNN *BatchMatMul* primitives in the
# bf16 floating-point math mode: float32 tensors in and out, the products in bfloat16 with float32
# accumulation (AMX / AVX512-BF16). TF reads the variable once, when it loads; plain MatMul and the
# convolutions are not affected. The SAC networks' bfloat16 hidden layers use it
# (tf_rlnas.nn.fpmath.fpmath_matmul): no Cast ops around the product and a float32 result. Because
# it holds for every float32 BatchMatMul of the process (MAML-TRPO's einsums, the ENAS controller's),
# the CLI asks for it only for a run whose config wants it (prepare_process, through SAC's registry hook).

FPMATH_ENV = "TF_SET_ONEDNN_FPMATH_MODE"


def request_bf16_fpmath() -> bool:
    """Set ``TF_SET_ONEDNN_FPMATH_MODE=BF16`` for this process (and the processes it starts) if
    TensorFlow is not imported yet and the variable is unset (a value the user set wins). Returns
    whether the mode will be on."""
    if FPMATH_ENV in os.environ:
        return os.environ[FPMATH_ENV].upper() == "BF16"
    if "tensorflow" in sys.modules:
        return False
    os.environ[FPMATH_ENV] = "BF16"
    return True


def wants_fpmath(matmul_dtype: str, xla: bool = False) -> bool:
    """Whether layers with this ``matmul_dtype`` setting compute through the math mode: it resolves to
    bfloat16 and the update is not XLA-compiled (XLA compiles its own dots)."""
    return not xla and resolve_dtype(matmul_dtype) == "bfloat16"


def prepare_process(matmul_dtype: str, xla: bool = False) -> bool:
    """The one decision of this process's matmul precision, made before TensorFlow loads (an
    algorithm's registry ``prepare`` hook calls it with its config's values): request the math mode
    where :func:`wants_fpmath`, else note a mode the user's environment forces. Whether the mode then
    really acts is probed once after TF loads (:func:`tf_rlnas.nn.fpmath.bf16_path`)."""
    if wants_fpmath(matmul_dtype, xla):
        return request_bf16_fpmath()
    note_user_fpmath()
    return False


def note_user_fpmath() -> None:
    """One note line when the environment sets the mode for a run that does not compute that way."""
    if os.environ.get(FPMATH_ENV, "").upper() == "BF16":
        print(f"note: {FPMATH_ENV}=BF16 is set in the environment: this run's float32 BatchMatMuls "
              f"(einsums) compute in bfloat16; unset it for exact float32", file=sys.stderr)
