"""GPU datasheets: each card's memory, bandwidth and dense bf16 peak, with the line they
come from."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError


@dataclass(frozen=True)
class GpuProfile:
    """One GPU's memory, bandwidth and dense bf16 tensor peak, with the datasheet line they
    come from. Peaks are dense (datasheets often print the 2:4-sparse figure, twice this)."""
    name: str
    memory_gb: float
    bandwidth_gbs: float
    source: str
    peak_bf16_tflops: float = 0.0


GPUS: dict[str, GpuProfile] = {
    g.name: g
    for g in (
        GpuProfile("rtx-4000-ada", 20, 360,
                   "NVIDIA RTX 4000 Ada datasheet: 20 GB GDDR6, 360 GB/s (the article's "
                   "480 GB/s is not this card's figure); tensor 327.6 TFLOPS is FP8 with "
                   "sparsity, so dense bf16 is a quarter of it", 81.9),
        GpuProfile("l4", 24, 300, "NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, "
                   "bf16 242 TFLOPS sparse", 121),
        GpuProfile("a10g", 24, 600, "NVIDIA A10 datasheet / AWS G5: 24 GB GDDR6, 600 GB/s, "
                   "bf16 125 TFLOPS dense (the A10's figure; the A10G is clocked lower)", 125),
        GpuProfile("l40s", 48, 864, "NVIDIA L40S datasheet: 48 GB GDDR6, 864 GB/s, "
                   "bf16 733 TFLOPS sparse", 362),
        GpuProfile("a100-40gb", 40, 1555, "NVIDIA A100 datasheet: 40 GB HBM2, 1,555 GB/s, "
                   "bf16 312 TFLOPS dense", 312),
        GpuProfile("a100-80gb", 80, 2039, "NVIDIA A100 datasheet: 80 GB HBM2e SXM, "
                   "2,039 GB/s, bf16 312 TFLOPS dense", 312),
        GpuProfile("h100-sxm", 80, 3350, "NVIDIA H100 datasheet: 80 GB HBM3 SXM, 3.35 TB/s, "
                   "bf16 1,979 TFLOPS sparse", 989),
        GpuProfile("h100-pcie", 80, 2000, "NVIDIA H100 datasheet: 80 GB HBM2e PCIe, 2 TB/s, "
                   "bf16 1,513 TFLOPS sparse", 756),
        GpuProfile("h200", 141, 4800, "NVIDIA H200 datasheet: 141 GB HBM3e, 4.8 TB/s, "
                   "bf16 1,979 TFLOPS sparse", 989),
    )
}


def get_gpu(name: str) -> GpuProfile:
    """The GPU called `name` (any case), or a ConfigError that lists the valid names."""
    try:
        return GPUS[name.strip().lower()]
    except KeyError:
        valid = ", ".join(GPUS)
        raise ConfigError(f"unknown GPU {name!r}; valid GPUs: {valid}.") from None
