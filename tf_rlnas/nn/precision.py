"""Choosing the compute dtype: ``auto`` = bfloat16 where the CPU multiplies bfloat16 natively.

Imports no TensorFlow (the CLI uses it before TF loads).
"""

from __future__ import annotations

import functools
import os
import sys


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """True where the CPU has native bfloat16 dot products (AVX512_BF16 or AMX): there oneDNN's
    bfloat16 matmuls and convolutions run faster than float32; elsewhere they are emulated and slower.
    Read once per process."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
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
# the CLI asks for it only for a run whose config wants it (request_bf16_fpmath / wants_bf16_fpmath).

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


def wants_bf16_fpmath(cfg) -> bool:
    """Whether a config computes matmuls in bfloat16 through the math mode: an ``agent.matmul_dtype``
    resolving to bfloat16 (SAC, ACE) and no XLA (``train.jit_compile``: XLA compiles its own dots)."""
    dtype = getattr(getattr(cfg, "agent", None), "matmul_dtype", None)
    if dtype is None or getattr(getattr(cfg, "train", None), "jit_compile", False):
        return False
    return resolve_dtype(dtype) == "bfloat16"
