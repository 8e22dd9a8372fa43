"""What load to offer: the arrival shape (when requests go out) and the workload (what they say).

The whole of it is in `shapes` for now; this package re-exports every name its importers use.
"""

from __future__ import annotations

from .shapes import (
    API_KINDS,
    BENCH_MIN_REQUESTS,
    BENCH_REQUESTS_PER_USER,
    BENCH_REQUESTS_RULE,
    Burst,
    Closed,
    Poisson,
    PromptFactory,
    PromptStream,
    Shape,
    TokenCounter,
    Workload,
    bench_requests,
    chat_messages,
    filler,
    in_batches,
    shape_from_dict,
)

__all__ = [
    "Burst", "Closed", "Poisson", "Shape", "shape_from_dict",
    "BENCH_REQUESTS_PER_USER", "BENCH_MIN_REQUESTS", "BENCH_REQUESTS_RULE", "bench_requests",
    "API_KINDS", "Workload", "in_batches",
    "TokenCounter", "chat_messages", "filler", "PromptFactory", "PromptStream",
]
