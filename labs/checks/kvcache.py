"""Checks for 04: how many requests the KV pool holds."""

from __future__ import annotations

import math

from . import Verdict, report, _whole_number


def max_running(value: object, engine: object, fit_at_once: int) -> Verdict:
    """04: the most requests the engine ran at once, read from its series, against the pool's
    block arithmetic (one off is allowed: the series is sampled)."""
    number = _whole_number("max_running", value)
    if isinstance(number, Verdict):
        return report(number)
    seen = int(engine["running"].max())  # type: ignore[index]
    if number == seen and abs(number - fit_at_once) <= 1:
        return report(Verdict(True, f"right: at most {number} ran at once; the pool's blocks "
                                    f"hold {fit_at_once} such requests."))
    return report(Verdict(False, f"`max_running` = {number}: take the maximum of "
                                 "engine['running'], and compare it with how many requests "
                                 "the pool's blocks hold at once."))


def blocks_for_everyone(value: object, *, users: int, prompt_tokens: int, output_tokens: int,
                        block_size: int) -> Verdict:
    """04: KV blocks the pool would need for every user at once, in whole blocks each."""
    number = _whole_number("blocks_for_everyone", value)
    if isinstance(number, Verdict):
        return report(number)
    expected = users * math.ceil((prompt_tokens + output_tokens) / block_size)
    if number == expected:
        return report(Verdict(True, f"right: {expected} blocks, {expected * block_size:,} tokens."))
    return report(Verdict(False, f"`blocks_for_everyone` = {number}: each request holds whole "
                                 f"blocks of {block_size} tokens for its prompt and its answer; "
                                 "round up per request, then multiply by the users."))

