"""This machine's hardware, read in one place: the CPU from /proc/cpuinfo, the GPUs from
`nvidia-smi` (`labs.settings.gpus`).

Three readers use it: a run's metadata (`describe_hardware`, via `labs.loadgen`), a
calibration's key (`cpu_signature`: two "AMD EPYC" with different vector units must not share
one) and the docs' CPU line (`labs.course.coursedocs.cpu_description`). Imports nothing but the
standard library and `labs.settings`.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

from .settings import gpus

CPUINFO = Path("/proc/cpuinfo")
# The CPU features that change vLLM's speed: x86 vector and matrix units, Arm's SIMD and SVE.
SIGNATURE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")


def cpuinfo() -> dict[str, str] | None:
    """/proc/cpuinfo as `field: value`, the first processor's value of each field; None where
    the file cannot be read (not Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str | None:
    """The CPU's model name ("AMD EPYC 7763 64-Core Processor"), None where it is not listed."""
    return (cpuinfo() or {}).get("model name") or None


def cpu_signature() -> str:
    """The machine and the CPU features that change vLLM's speed on it ("x86_64 avx2
    avx512f"): two machines both called "AMD EPYC" (one with AVX2 only, one with AVX-512) must
    not share a calibration."""
    info = cpuinfo()
    if info is None:
        return platform.machine()
    flags = (info.get("flags") or info.get("Features") or "").split()  # x86, Arm
    return " ".join([platform.machine()] + [f for f in SIGNATURE_FLAGS if f in flags])


@cache
def describe_hardware() -> str:
    """This machine (where the client runs; the server's too when it is local)."""
    cpu = cpu_model() or platform.processor() or platform.machine()
    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} x {cpu}"
    listed = "; ".join(f"{name}, {mib:.0f} MiB" for name, mib in gpus())
    return text + (f"; GPU: {listed}" if listed else "")


__all__ = ["cpuinfo", "cpu_model", "cpu_signature", "describe_hardware"]
