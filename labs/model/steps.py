"""A model of one vLLM server: what an engine step costs, and the limits it schedules under.

Two ways to get the step costs, one shape of answer:
- `LinearSteps`, fitted from the live server by `labs.calibration`: a step costs a fixed part
  (scheduler, sampling, launching every layer), a part per sequence that decodes in it, a part
  per token of context those sequences read from the KV cache, and a part per prompt token it
  prefills. Plain sums, so each number can be read, printed with its unit, and checked.
- `RooflineSteps`, from a datasheet: a step reads the weights once plus the KV of every
  context, and does 2 FLOPs per weight per token; it costs the larger of bytes / bandwidth
  and FLOPs / peak, plus a stated fixed overhead. No measurement at all.

`ServerLimits` are what vLLM schedules within: the KV pool (blocks x block size), the cap on
sequences in a step (`max_num_seqs`), the token budget of a step (`max_num_batched_tokens`),
and `max_model_len`. `labs.simulate` turns steps and limits into latencies and throughputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from ..errors import ConfigError
from ..serving.profiles import (
    flag_value,  # the one reader of a flag; importable from here as before
)

# vLLM 0.32's defaults when a flag is not given (EngineArgs.get_batch_defaults, for the
# OpenAI API server): the CPU build, GPUs under 70 GiB (and every A100), larger GPUs.
VLLM_DEFAULT_LIMITS: dict[str, tuple[int, int]] = {  # name -> (max_num_seqs, batched tokens)
    "cpu": (128, 2048),
    "gpu": (256, 2048),
    "gpu-70gib": (1024, 8192),
    "gpu-160gib": (1024, 16384),
}


class StepCost(Protocol):
    """How long one engine step takes, given what is in it."""

    def step_s(self, decode_seqs: int, context_tokens: int, prefill_tokens: int,
               prefill_pairs: float = 0.0) -> float:
        """`decode_seqs` sequences each make one token, reading `context_tokens` KV tokens in
        all; `prefill_tokens` prompt tokens are processed in the same step, and
        `prefill_pairs` is how many (token, earlier token) pairs their attention scores: a
        chunk of n tokens after k already computed scores n x k + n^2 / 2."""
        ...

    def describe(self) -> list[tuple[str, str, str]]:
        """(parameter, value with unit, what it means) rows for a person to read."""
        ...

    @property
    def prefill_tok_s(self) -> float:
        """Prompt tokens a second when prefill is all a step does (prefixcache uses it)."""
        ...


@dataclass(frozen=True)
class LinearSteps:
    """step = fixed + per_seq x decoding sequences + per_context_token x KV tokens read
    + prefill tokens / prefill rate + per_prefill_pair x attention pairs of the prefill; and
    a request pays `request_overhead_s` outside the engine (HTTP, tokenizing, the first
    chunk's trip back). The pair term is why a 1,024-token prompt costs more than 16 of 64:
    every prompt token attends to every token before it."""

    fixed_s: float
    per_seq_s: float
    per_context_token_s: float
    prefill_tok_s: float
    request_overhead_s: float
    per_prefill_pair_s: float = 0.0

    kind = "measured"

    def step_s(self, decode_seqs: int, context_tokens: int, prefill_tokens: int,
               prefill_pairs: float = 0.0) -> float:
        return (self.fixed_s + self.per_seq_s * decode_seqs
                + self.per_context_token_s * context_tokens
                + prefill_tokens / self.prefill_tok_s
                + self.per_prefill_pair_s * prefill_pairs)

    def describe(self) -> list[tuple[str, str, str]]:
        return [
            ("fixed_s", f"{self.fixed_s * 1e3:.2f} ms", "every step, whatever is in it"),
            ("per_seq_s", f"{self.per_seq_s * 1e3:.3f} ms",
             "each sequence that decodes in the step"),
            ("per_context_token_s", f"{self.per_context_token_s * 1e6:.3f} us",
             "each token of context a decoding sequence reads from the KV cache"),
            ("prefill_tok_s", f"{self.prefill_tok_s:,.0f} tok/s",
             "prompt tokens per second, before attention"),
            ("per_prefill_pair_s", f"{self.per_prefill_pair_s * 1e9:.3f} ns",
             "each (prompt token, earlier token) pair attention scores"),
            ("request_overhead_s", f"{self.request_overhead_s * 1e3:.1f} ms",
             "per request, outside the engine's steps"),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RooflineSteps:
    """A datasheet step: max(bytes / bandwidth, FLOPs / peak) + overhead.

    bytes = the weights a step reads (`step_bytes`: the input-embedding table is read one
    row per token, not whole) + KV bytes of every context; FLOPs = 2 x `active_params` per
    token computed (decode or prefill). The overhead is an assumption, stated in `source`.
    """

    bandwidth_gbs: float
    peak_tflops: float
    step_bytes: float
    kv_bytes_per_token: float
    active_params: float
    overhead_s: float
    request_overhead_s: float
    source: str
    attention_flops_per_pair: float = 0.0  # 4 x layers x heads x head_dim (QK^T and AV)

    kind = "roofline"

    def step_s(self, decode_seqs: int, context_tokens: int, prefill_tokens: int,
               prefill_pairs: float = 0.0) -> float:
        read = self.step_bytes + self.kv_bytes_per_token * context_tokens
        flops = (2 * self.active_params * (decode_seqs + prefill_tokens)
                 + self.attention_flops_per_pair * (context_tokens + prefill_pairs))
        return (max(read / (self.bandwidth_gbs * 1e9), flops / (self.peak_tflops * 1e12))
                + self.overhead_s)

    @property
    def prefill_tok_s(self) -> float:
        return self.peak_tflops * 1e12 / (2 * self.active_params)

    def describe(self) -> list[tuple[str, str, str]]:
        return [
            ("bandwidth_gbs", f"{self.bandwidth_gbs:,.0f} GB/s", "datasheet memory bandwidth"),
            ("peak_tflops", f"{self.peak_tflops:,.0f} TFLOP/s", "datasheet dense bf16/fp16"),
            ("step_bytes", f"{self.step_bytes / 1e9:.2f} GB", "weights one decode step reads"),
            ("kv_bytes_per_token", f"{self.kv_bytes_per_token:,.0f} B", "KV per context token"),
            ("overhead_s", f"{self.overhead_s * 1e3:.1f} ms", "assumed fixed cost per step"),
            ("prefill_tok_s", f"{self.prefill_tok_s:,.0f} tok/s", "peak FLOPs / (2 x params)"),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


def steps_from_dict(data: Mapping[str, Any]) -> LinearSteps | RooflineSteps:
    fields = {k: v for k, v in data.items() if k != "kind"}
    if data.get("kind") == RooflineSteps.kind:
        return RooflineSteps(**fields)
    return LinearSteps(**fields)


@dataclass(frozen=True)
class ServerLimits:
    """What the scheduler works within. `source` says where each number came from."""

    num_blocks: int
    block_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "max_model_len", "max_num_seqs",
                     "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ServerLimits.{name} must be a whole number >= 1, "
                                  f"not {value!r}.")

    @property
    def pool_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def blocks_for(self, tokens: int) -> int:
        """KV blocks a sequence of `tokens` tokens holds (whole blocks only)."""
        return math.ceil(tokens / self.block_size)

    def fit_at_once(self, tokens_per_request: int) -> int:
        """How many requests of this many tokens hold their whole KV at once, within
        max_num_seqs."""
        return max(0, min(self.max_num_seqs,
                          self.num_blocks // self.blocks_for(tokens_per_request)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scheduler_defaults(backend: str, gpu_memory_gib: float | None = None,
                       gpu_name: str = "") -> tuple[int, int]:
    """vLLM 0.32's (max_num_seqs, max_num_batched_tokens) when neither flag is given."""
    if backend == "cpu":
        return VLLM_DEFAULT_LIMITS["cpu"]
    memory = gpu_memory_gib or 0
    if memory >= 160:
        return VLLM_DEFAULT_LIMITS["gpu-160gib"]
    if memory >= 70 and "a100" not in gpu_name.lower():
        return VLLM_DEFAULT_LIMITS["gpu-70gib"]
    return VLLM_DEFAULT_LIMITS["gpu"]


def limits_from(cache_config: Any, max_model_len: int, flags: Sequence[str], backend: str,
                gpu_memory_gib: float | None = None, gpu_name: str = "") -> ServerLimits:
    """Limits of a server from its `/metrics` cache config, its `/v1/models` max_model_len,
    and the flags it was started with (vLLM's defaults where a flag is absent)."""
    seqs, tokens = scheduler_defaults(backend, gpu_memory_gib, gpu_name)
    given_seqs, given_tokens = (flag_value(flags, "max-num-seqs"),
                                flag_value(flags, "max-num-batched-tokens"))
    source = ("pool from /metrics, max_model_len from /v1/models, "
              f"max_num_seqs {'from --max-num-seqs' if given_seqs else 'vLLM default'}, "
              f"max_num_batched_tokens {'from flag' if given_tokens else 'vLLM default'} "
              f"({backend})")
    return ServerLimits(
        num_blocks=int(cache_config.num_gpu_blocks), block_size=int(cache_config.block_size),
        max_model_len=int(max_model_len),
        max_num_seqs=int(given_seqs) if given_seqs else seqs,
        max_num_batched_tokens=int(given_tokens) if given_tokens else tokens,
        source=source)


def with_flags(limits: ServerLimits, flags: Sequence[str]) -> ServerLimits:
    """`limits` as another profile's flags would change them (max-num-seqs, max-model-len,
    max-num-batched-tokens, num-gpu-blocks-override); what no flag names stays as it is. Lets a
    notebook predict a profile before restarting the server with it."""
    changes: dict[str, int] = {}
    for flag, name in (("max-num-seqs", "max_num_seqs"), ("max-model-len", "max_model_len"),
                       ("max-num-batched-tokens", "max_num_batched_tokens"),
                       ("num-gpu-blocks-override", "num_blocks")):
        value = flag_value(flags, flag)
        if value is not None:
            changes[name] = int(value)
    return replace(limits, **changes, source=limits.source + "; changed by profile flags")
