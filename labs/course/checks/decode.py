"""Checks for 02: the bytes a decode step reads, and the ceiling they set.

Both exercises are about the *inputs* of `bandwidth / bytes per step`: a bound is only as good
as them, so a wrong answer is named by the input it got wrong (a dtype's bytes, the card's
bandwidth, the untied embedding, the KV of the context).
"""

from __future__ import annotations

import math
from typing import Any

from ...model.ceiling import model_config, model_size
from . import Verdict, _number, missing, report

INPUTS = {"bandwidth": "bandwidth", "gb/s": "bandwidth", "memory bandwidth": "bandwidth",
          "bytes": "bytes", "weights": "bytes", "weight bytes": "bytes", "dtype": "bytes",
          "bytes per step": "bytes", "step bytes": "bytes", "model size": "bytes"}
CLOSE = 0.03  # the bound is arithmetic on datasheet figures: 3 % is rounding, not a mistake


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=CLOSE)


def wrong_inputs(*, claimed_bandwidth_gbs: float, claimed_bytes: float, bandwidth_gbs: float,
                 step_bytes: float) -> set[str]:
    """Which of a claimed bound's two inputs are off the datasheet / model config by > 3 %."""
    wrong = set()
    if not _near(claimed_bandwidth_gbs, bandwidth_gbs):
        wrong.add("bandwidth")
    if not _near(claimed_bytes, step_bytes):
        wrong.add("bytes")
    return wrong


def _ceiling_mistake(number: float, *, claimed_bandwidth_gbs: float, claimed_bytes: float,
                     bandwidth_gbs: float, size: Any) -> str:
    """What a wrong ceiling most likely came from, in words that name the input."""
    step = float(size.step_bytes or size.weight_bytes)
    tries = [
        (claimed_bandwidth_gbs * 1e9 / step, "you kept the claim's bandwidth: use the card's "
         f"datasheet figure, {bandwidth_gbs:,.0f} GB/s"),
        (bandwidth_gbs * 1e9 / claimed_bytes, f"you kept the claim's {claimed_bytes / 1e9:.1f} GB: "
         f"price the weights at the dtype served ({size.dtype}, the bytes a step reads are "
         f"{step / 1e9:.2f} GB)"),
        (bandwidth_gbs * 1e9 / size.weight_bytes, "you divided by all the weights: a step reads "
         "one row of an untied input embedding, not the table (use `step_bytes`)"),
        (claimed_bandwidth_gbs * 1e9 / claimed_bytes, "that is the claim itself, unchanged"),
        (bandwidth_gbs / step, "the bandwidth is in GB/s: multiply by 1e9 to divide bytes/s by "
         "bytes"),
    ]
    for value, why in tries:
        if value != bandwidth_gbs * 1e9 / step and _near(number, value):
            return why
    return "divide the card's bandwidth (bytes/s) by the bytes one step reads"


def wrong_input_in_bound(which: object, ceiling_tok_s: object, *, claimed_bandwidth_gbs: float,
                         claimed_bytes: float, bandwidth_gbs: float, size: Any) -> Verdict:
    """02: a back-of-envelope bound `claimed_bandwidth_gbs / claimed_bytes` for `size` (a
    `labs.ceiling.ModelSize` at the dtype served) on a card of `bandwidth_gbs`: name the wrong
    input ("bandwidth" or "bytes") and give the right ceiling, tokens/s of one stream."""
    if (v := missing("wrong_input", which)) is not None:
        return report(v)
    number = _number("h200_ceiling_tok_s", ceiling_tok_s)
    if isinstance(number, Verdict):
        return report(number)
    step = float(size.step_bytes or size.weight_bytes)
    wrong = wrong_inputs(claimed_bandwidth_gbs=claimed_bandwidth_gbs, claimed_bytes=claimed_bytes,
                         bandwidth_gbs=bandwidth_gbs, step_bytes=step)
    named = INPUTS.get(str(which).strip().lower())
    expected = bandwidth_gbs * 1e9 / step
    problems = []
    if named is None:
        problems.append(f"`wrong_input` is {which!r}: say \"bandwidth\" or \"bytes\"")
    elif named not in wrong:
        right_one = " and the ".join(sorted(wrong)) or "neither"
        fact = (f"{claimed_bandwidth_gbs:,.0f} GB/s is the card's datasheet figure"
                if named == "bandwidth" else
                f"{claimed_bytes / 1e9:.2f} GB is what a step of {size.dtype} weights reads")
        problems.append(f"the {named} is right ({fact}); the wrong input is the {right_one}")
    if not _near(number, expected):
        problems.append(f"the ceiling {number:,.4g} tok/s should be about {expected:,.4g}: "
                        + _ceiling_mistake(number, claimed_bandwidth_gbs=claimed_bandwidth_gbs,
                                           claimed_bytes=claimed_bytes,
                                           bandwidth_gbs=bandwidth_gbs, size=size))
    if problems:
        return report(Verdict(False, "; ".join(problems) + "."))
    return report(Verdict(True, f"right: the {' and '.join(sorted(wrong))} input was off, and "
                                f"{bandwidth_gbs:,.0f} GB/s / {step / 1e9:.2f} GB = "
                                f"{expected:,.4g} tok/s (you said {number:,.4g})."))


def bytes_read_at_context(value: object, *, model_root: str, context_tokens: int,
                          dtype: str | None = None) -> Verdict:
    """02: what one decode step of this server's model reads at `context_tokens` of context:
    the weights a step reads plus the KV cache of the whole context."""
    size = model_size(model_root, dtype=dtype)
    step = size.step_bytes or size.weight_bytes
    kv = size.kv_bytes_per_token or 0
    expected = step + context_tokens * kv
    number = _number("step_bytes_at_context", value)
    if isinstance(number, Verdict):
        return report(number)
    # 1 % of the total, but never a quarter of the KV part: for a 7B model the KV of 4,096
    # tokens is under 2 % of the read, and K without V must still fail.
    tolerance = min(0.01 * expected, 0.25 * context_tokens * kv) if kv else 0.01 * expected
    if abs(number - expected) <= tolerance:
        return report(Verdict(True, f"right: {step / 1e9:.3f} GB of weights + {context_tokens:,} "
                                    f"x {kv:,} B of KV = {expected / 1e9:.3f} GB a step."))
    config = model_config(model_root) or {}
    layers = int(config.get("num_hidden_layers") or 1)
    mistakes = [
        (step, "that is the weights alone: a step also reads the KV of every token of context"),
        (context_tokens * kv, "that is the KV alone: the step reads the weights too"),
        (step + context_tokens * kv / layers, "that is one layer's KV: `kv_bytes_per_token` "
         "already counts every layer, so use it as is"),
        (step + context_tokens * kv / 2, "that is K or V alone: the cache holds both"),
        (size.weight_bytes + context_tokens * kv, "you counted all the weights: a step reads one "
         "row of an untied input embedding, not the table (use `step_bytes`)"),
    ]
    near = sorted((abs(number - v), w) for v, w in mistakes
                  if abs(v - expected) > tolerance and abs(number - v) <= tolerance)
    why = near[0][1] if near else ("a step reads the weights once and every token of "
                                   "context's KV (kv_bytes_per_token x context, all layers)")
    return report(Verdict(False, f"`step_bytes_at_context` = {number:,.4g}, but it should be "
                                 f"about {expected:,.4g} bytes: {why}."))
