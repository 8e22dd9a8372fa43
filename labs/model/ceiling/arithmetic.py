"""The ceiling itself: one stream decodes no faster than bandwidth / bytes read per step.

480 GB/s over 14 GB of weights is 34.3 tok/s. The bytes come from `anatomy.ModelSize`, the
bandwidth from `datasheets`, `bandwidth` or a number you type; GB/s is 1e9 bytes/s.
"""

from __future__ import annotations

import math
from typing import Any

from ...errors import ConfigError
from .anatomy import GB


def _positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def bytes_per_step(weight_bytes: float, kv_bytes_per_token: float | None = None,
                   context_tokens: int = 0) -> float:
    """Bytes one decode step of one sequence reads: all weights plus the KV of its context."""
    _positive("weight_bytes", weight_bytes)
    if context_tokens < 0:
        raise ConfigError(f"context_tokens must be >= 0, got {context_tokens}.")
    if context_tokens and kv_bytes_per_token is None:
        raise ConfigError("a context length needs the KV bytes per token; give a model "
                          "(--model) or --kv-bytes-per-token.")
    return weight_bytes + (kv_bytes_per_token or 0) * context_tokens


def decode_ceiling_tok_s(bandwidth_gbs: float, weight_bytes: float,
                         kv_bytes_per_token: float | None = None,
                         context_tokens: int = 0) -> float:
    """Upper bound on one stream's decode speed: bandwidth / bytes read per step.

    480 GB/s over 14 GB of weights is 34.3 tok/s, however fast the arithmetic units are;
    batching raises the total, not this per-stream bound.
    """
    bandwidth = _positive("bandwidth_gbs", bandwidth_gbs) * GB
    return bandwidth / bytes_per_step(weight_bytes, kv_bytes_per_token, context_tokens)


def ceiling_report(bandwidth_gbs: float, weight_bytes: float,
                   kv_bytes_per_token: int | None = None,
                   context_tokens: int = 0, step_bytes: float | None = None) -> dict[str, Any]:
    """The ceiling and its inputs as a JSON-able dict (what `labs ceiling --json` prints).

    `step_bytes` is what a step reads of the weights (`ModelSize.step_bytes`; default all of
    them); `bytes_per_step` adds the KV of `context_tokens`, and the ceiling divides by it."""
    read = weight_bytes if step_bytes is None else step_bytes
    step = bytes_per_step(read, kv_bytes_per_token, context_tokens)
    ceiling = decode_ceiling_tok_s(bandwidth_gbs, read, kv_bytes_per_token, context_tokens)
    report: dict[str, Any] = {
        "bandwidth_gbs": float(bandwidth_gbs),
        "weight_bytes": int(weight_bytes),
        "step_bytes": int(read),
        "context_tokens": int(context_tokens),
        "bytes_per_step": int(step),
        "ceiling_tok_s": ceiling,
        "min_step_ms": 1000.0 / ceiling,
    }
    if kv_bytes_per_token is not None:
        report["kv_bytes_per_token"] = int(kv_bytes_per_token)
        report["kv_bytes"] = int(kv_bytes_per_token) * int(context_tokens)
    return report
