"""Checks for 06: blocks and hits with a shared prefix.

Both are asked before the burst runs, from three counts the server's tokenizer measured (a
prompt's tokens, the tokens all prompts share, the block size), so the answer is the
arithmetic of full blocks; the counters measured later are shown beside it when given."""

from __future__ import annotations

import math

from . import Verdict, _number, _whole_number, report

# A hit rate worked out exactly is exact; three decimals are within 0.0005. With 16-token
# blocks the slip of not rounding to full blocks moves the rate by ~0.01, so a looser
# tolerance would pass it.
HIT_RATE_TOLERANCE = 0.002


def blocks_with_shared_prefix(value: object, *, users: int, prompt_tokens: int,
                              shared_tokens: int, output_tokens: int, block_size: int,
                              usable_blocks: int) -> Verdict:
    """06: KV blocks `users` requests hold with prefix caching, the shared full blocks once."""
    number = _whole_number("blocks_shared_burst", value)
    if isinstance(number, Verdict):
        return report(number)
    shared_blocks = shared_tokens // block_size
    own = math.ceil((prompt_tokens + output_tokens) / block_size)
    expected = shared_blocks + users * (own - shared_blocks)
    fits = "fits" if expected <= usable_blocks else "does not fit"
    if number == expected:
        return report(Verdict(True, f"right: {expected} blocks ({shared_blocks} shared once, "
                                    f"{own - shared_blocks} of its own per request), which "
                                    f"{fits} the {usable_blocks} usable blocks."))
    if number == users * own:
        hint = ("that is every request holding all its blocks: with the cache, shared ones are "
                "held once.")
    elif number == shared_blocks + users * math.ceil((prompt_tokens + output_tokens
                                                      - shared_tokens) / block_size):
        hint = ("only *full* blocks of the common tokens are shared; the partial block at the end "
                "of the shared part belongs to each request.")
    elif number == users * (own - shared_blocks):
        hint = ("the shared blocks are held once, not never: add them to what each request "
                "holds of its own.")
    elif number == shared_blocks + users * (math.ceil(prompt_tokens / block_size) - shared_blocks):
        hint = "that holds the prompts only; each request's answer is stored in its own blocks too."
    else:
        hint = ("count the full blocks of the shared tokens once, then each request's blocks "
                "beyond them (round up its prompt + answer to whole blocks first).")
    return report(Verdict(False, f"`blocks_shared_burst` = {number}: {hint}"))


def prefix_hit_rate(value: object, *, users: int, prompt_tokens: int, shared_tokens: int,
                    block_size: int, measured: float | None = None) -> Verdict:
    """06: the share of prompt tokens vLLM's counters find cached, for a burst on a cold cache
    (`measured`: what the counters said, when the burst has run)."""
    number = _number("expected_hit_rate", value)
    if isinstance(number, Verdict):
        return report(number)
    hits = (users - 1) * (shared_tokens // block_size) * block_size
    expected = hits / (users * prompt_tokens)
    seen = "" if measured is None else f" (measured {measured:.3f})"
    if abs(number - expected) <= HIT_RATE_TOLERANCE:
        later = ("the counters will say it when the burst runs." if measured is None
                 else f"the counters measured {measured:.3f}.")
        return report(Verdict(True, f"right: {expected:.3f}; {later}"))
    near = lambda x: abs(number - x) <= HIT_RATE_TOLERANCE
    if near(shared_tokens / prompt_tokens):
        hint = ("that is the shared share of one prompt: the first request finds nothing "
                "cached, and only full blocks are shared.")
    elif near((shared_tokens // block_size) * block_size / prompt_tokens):
        hint = ("that counts a hit for every request; on a cold cache the first one computes "
                "the shared blocks and finds nothing.")
    elif near((users - 1) * shared_tokens / (users * prompt_tokens)):
        hint = "only *full* blocks of the common tokens can be hits; round down to blocks."
    else:
        hint = ("hits are the tokens of the shared full blocks, found by every request but "
                "the first; divide by all the prompt tokens of the burst.")
    return report(Verdict(False, f"`expected_hit_rate` = {number:.3f}: {hint}{seen}"))

