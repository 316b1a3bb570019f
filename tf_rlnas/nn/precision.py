"""Choosing the compute dtype: ``auto`` = bfloat16 where the CPU multiplies bfloat16 natively."""

from __future__ import annotations

import functools


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
