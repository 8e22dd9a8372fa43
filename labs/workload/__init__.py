"""What load to offer: the arrival shape (when requests go out) and the workload (what they say).

Both are small frozen values with a readable `label`, so a result file says exactly what was
measured and a sweep is just a list of shapes. Nothing here talks to the server except
`PromptFactory`, which asks the server's own tokenizer (`POST /tokenize`) how long a prompt is.

The package, one job per module:
    shapes    Burst, Closed, Poisson: when requests go out; saved and loaded as dicts; the
              request count `labs bench` sends per level by default (bench_requests)
    workload  Workload: what each request asks for and the body it sends; in_batches
    prompts   prompts of a given length (PromptFactory, PromptStream), token counting
              (TokenCounter), the chat form of a prompt (chat_messages)
    values    the checks on a caller's numbers, shared by shapes and workload
"""

from __future__ import annotations

from .prompts import PromptFactory, PromptStream, TokenCounter, chat_messages, filler
from .shapes import (
    BENCH_MIN_REQUESTS,
    BENCH_REQUESTS_PER_USER,
    BENCH_REQUESTS_RULE,
    Burst,
    Closed,
    Poisson,
    Shape,
    bench_requests,
    shape_from_dict,
)
from .workload import API_KINDS, Workload, in_batches

__all__ = [
    "Burst", "Closed", "Poisson", "Shape", "shape_from_dict",
    "BENCH_REQUESTS_PER_USER", "BENCH_MIN_REQUESTS", "BENCH_REQUESTS_RULE", "bench_requests",
    "API_KINDS", "Workload", "in_batches",
    "TokenCounter", "chat_messages", "filler", "PromptFactory", "PromptStream",
]
