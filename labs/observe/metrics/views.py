"""Typed views of parts of one scrape: a `Histogram` (mean, quantiles, deltas) and the
`CacheConfig` of the KV pool the engine built. Nothing here fetches or parses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ...errors import ConfigError

# --- histograms ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound (the last bound is +inf).

    Bounds are in the metric's unit (seconds for `*_seconds`). The buckets are vLLM's, so a
    quantile is only as sharp as they are: a p95 between 0.25 s and 0.5 s is interpolated.
    """
    name: str
    upper_bounds: tuple[float, ...]
    cumulative_counts: tuple[float, ...]
    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) as Prometheus' histogram_quantile computes it; None if empty.

        Linear interpolation inside the bucket holding rank q x count, the first bucket
        starting at 0; a rank in the +Inf bucket returns the largest finite bound, because
        nothing is known above it.
        """
        if not 0 <= q <= 1:  # also refuses NaN
            raise ConfigError(f"quantile q must be between 0 and 1, got {q!r}.")
        if not self.cumulative_counts or self.cumulative_counts[-1] <= 0:
            return None
        total = self.cumulative_counts[-1]
        rank = q * total
        prev_count, prev_bound = 0.0, 0.0
        for bound, count in zip(self.upper_bounds, self.cumulative_counts):
            if count >= rank and count > prev_count:
                if math.isinf(bound):
                    finite = [b for b in self.upper_bounds if not math.isinf(b)]
                    return finite[-1] if finite else None
                if bound <= 0 and prev_count == 0:
                    return bound
                share = (rank - prev_count) / (count - prev_count)
                return prev_bound + (bound - prev_bound) * share
            prev_count, prev_bound = count, bound
        return None  # unreachable for a well-formed histogram

    def delta(self, earlier: Histogram) -> Histogram:
        """What was observed between `earlier` and this one (same buckets, same series).

        If the counts went down the server restarted in between; everything since the
        restart is this histogram itself, so it is returned unchanged.
        """
        if earlier.upper_bounds != self.upper_bounds:
            raise ConfigError(f"cannot subtract histograms of {self.name} with different buckets.")
        if self.count < earlier.count:
            return self
        return Histogram(
            self.name, self.upper_bounds,
            tuple(a - b for a, b in zip(self.cumulative_counts, earlier.cumulative_counts)),
            self.sum - earlier.sum, self.count - earlier.count,
        )

    def to_dict(self) -> dict[str, float | None]:
        """Count, mean and the usual quantiles, JSON-able (None where empty)."""
        return {"count": self.count, "mean": self.mean, "p50": self.quantile(0.5),
                "p90": self.quantile(0.9), "p95": self.quantile(0.95), "p99": self.quantile(0.99)}


# --- cache config -------------------------------------------------------------------------

def _int_label(value: str | None) -> int | None:
    if value is None or value in ("None", ""):
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class CacheConfig:
    """The KV pool the engine built, from the labels of `vllm:cache_config_info`.

    `num_gpu_blocks` is the number the article multiplies by `block_size`; it is called GPU
    blocks on the CPU backend too. `labels` keeps everything else vLLM reports there.
    """
    num_gpu_blocks: int | None
    block_size: int | None
    kv_cache_size_tokens: int | None
    kv_cache_memory_bytes: int | None
    labels: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pool_tokens(self) -> int | None:
        """Tokens the pool holds: num_gpu_blocks x block_size (None if either is unknown)."""
        if self.num_gpu_blocks is None or self.block_size is None:
            return None
        return self.num_gpu_blocks * self.block_size

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> CacheConfig:
        return cls(
            num_gpu_blocks=_int_label(labels.get("num_gpu_blocks")),
            block_size=_int_label(labels.get("block_size")),
            kv_cache_size_tokens=_int_label(labels.get("kv_cache_size_tokens")),
            kv_cache_memory_bytes=_int_label(labels.get("kv_cache_memory_bytes")),
            labels=dict(labels),
        )
