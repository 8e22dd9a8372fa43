"""Measuring this machine's memory bandwidth: a GPU copy and read when CUDA is there, else
numpy over all cores. Its `read_gbs` is the bandwidth the ceiling divides."""

from __future__ import annotations

import itertools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...settings import gpu_present
from .anatomy import GB


@dataclass(frozen=True)
class BandwidthMeasurement:
    """Best-of-N memory bandwidth of this machine.

    `copy_gbs` counts read + write bytes (2 x array_bytes per copy), as STREAM does;
    `read_gbs` is a pure read (a reduction), closer to what decode does, since a decode step
    mostly reads weights. Use `read_gbs` for the ceiling.
    """
    device: str
    method: str
    array_bytes: int
    repeats: int
    copy_s: float
    read_s: float
    copy_gbs: float
    read_gbs: float


def _best_time(fn: Any, repeats: int, sync: Any = None) -> float:
    best = math.inf
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def _cuda_available() -> bool:
    if not gpu_present():  # avoid importing torch (seconds) where no GPU can answer
        return False
    try:
        import torch  # heavy: torch only to ask about CUDA
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def measure_bandwidth(array_bytes: int = 512 * 2**20, repeats: int = 5, device: str = "auto",
                      threads: int | None = None) -> BandwidthMeasurement:
    """Measure memory bandwidth: a GPU device-to-device copy when CUDA is there, else numpy.

    On the CPU the work is split over `threads` (default: all cores), because vLLM's CPU
    backend decodes with all of them and a single core cannot saturate memory. Each figure
    is the best of `repeats` runs after one warm-up, so a busy neighbour lowers it less.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid devices: auto, cpu, cuda.")
    if int(array_bytes) < 4096 or repeats < 1:
        raise ConfigError("array_bytes must be >= 4096 and repeats >= 1.")
    use_cuda = device == "cuda" or (device == "auto" and _cuda_available())
    if use_cuda:
        return _measure_cuda(int(array_bytes), repeats)
    return _measure_numpy(int(array_bytes), repeats, threads or os.cpu_count() or 1)


def _measure_numpy(array_bytes: int, repeats: int, threads: int) -> BandwidthMeasurement:
    import numpy as np  # heavy: numpy only when the CPU is measured

    n = array_bytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    # numpy releases the GIL inside copyto and ufunc reductions, so threads run in parallel.
    with ThreadPoolExecutor(threads) as pool:
        def copy() -> None:
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), parts))

        def read() -> None:
            list(pool.map(lambda s: np.maximum.reduce(src[s]), parts))

        copy()  # warm-up: page faults and thread start-up are not bandwidth
        read()
        copy_s = _best_time(copy, repeats)
        read_s = _best_time(read, repeats)
    nbytes = n * 4
    return BandwidthMeasurement(
        device=f"cpu ({os.cpu_count()} cores)",
        method=f"numpy copyto / maximum.reduce, float32, {threads} thread(s)",
        array_bytes=nbytes, repeats=repeats, copy_s=copy_s, read_s=read_s,
        copy_gbs=2 * nbytes / copy_s / GB, read_gbs=nbytes / read_s / GB,
    )


def _measure_cuda(array_bytes: int, repeats: int) -> BandwidthMeasurement:
    import torch  # heavy: torch only when the GPU is measured

    if not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but torch sees no CUDA GPU.")
    n = array_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize
    dst.copy_(src), src.amax()  # warm-up
    copy_s = _best_time(lambda: dst.copy_(src), repeats, sync)
    read_s = _best_time(lambda: src.amax(), repeats, sync)
    nbytes = n * 4
    return BandwidthMeasurement(
        device=f"cuda ({torch.cuda.get_device_name()})",
        method="torch device-to-device copy_ / amax, float32",
        array_bytes=nbytes, repeats=repeats, copy_s=copy_s, read_s=read_s,
        copy_gbs=2 * nbytes / copy_s / GB, read_gbs=nbytes / read_s / GB,
    )
