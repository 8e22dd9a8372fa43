"""Checks for 01: how many users' KV the measured pool holds at once.

The check is arithmetic on the server's own pool (blocks, block size), never a metrics sample:
on a fast GPU with 16-token blocks the moment every request holds its last block lasts about
100 ms, so a 0.1 s sample can miss it and fail a right answer. What *can* vary is bookkeeping
vLLM does and a learner cannot see, so the check accepts the whole range it allows: one block
of the pool is kept back (usage is used / (num_gpu_blocks - 1)), and the last answer token
is sampled but never written to the cache (a request holds prompt + answer - 1 tokens).
"""

from __future__ import annotations

import math

from . import Verdict, _whole_number, report


def _per_user_blocks(tokens: int, block_size: int) -> int:
    return math.ceil(tokens / block_size)


def users_at_once_range(*, num_blocks: int, block_size: int, prompt_tokens: int,
                        output_tokens: int) -> tuple[int, int]:
    """The fewest and most users whose whole context the pool holds at once: every request
    holds whole blocks of `block_size` for prompt + answer, so users = blocks // blocks each.
    The range covers the block vLLM keeps back and the last token it never caches."""
    if min(num_blocks, block_size, prompt_tokens, output_tokens) < 1:
        raise ValueError("blocks, block size and token counts must be positive")
    tokens = prompt_tokens + output_tokens
    low = (num_blocks - 1) // _per_user_blocks(tokens, block_size)
    high = num_blocks // _per_user_blocks(tokens - 1, block_size)
    return low, high


def users_at_once(value: object, *, num_blocks: int, block_size: int, prompt_tokens: int,
                  output_tokens: int, max_num_seqs: int | None = None) -> Verdict:
    """01: users of `prompt_tokens` + `output_tokens` whose KV this pool holds at once.

    Judged against `users_at_once_range` of the server's own pool; the usual mistakes get a
    message that names the assumption that is off."""
    number = _whole_number("users_at_once", value)
    if isinstance(number, Verdict):
        return report(number)
    low, high = users_at_once_range(num_blocks=num_blocks, block_size=block_size,
                                    prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    tokens = prompt_tokens + output_tokens
    each = _per_user_blocks(tokens, block_size)
    shown = f"{low}" if low == high else f"{low}-{high}"
    if low <= number <= high:
        return report(Verdict(True, f"right: {num_blocks} blocks // {each} blocks a user = "
                                    f"{shown} users (you said {number})."))
    pool = num_blocks * block_size
    mistakes = {
        pool // tokens: (f"that is the pool's tokens over {tokens:,} tokens a user, but the pool "
                         f"hands out whole blocks: each user holds {tokens:,} tokens rounded "
                         f"up to blocks of {block_size}, so some of every last block is "
                         "unused"),
        (num_blocks - 1) // _per_user_blocks(prompt_tokens, block_size): (
            "that counts only the prompt: the answer's tokens are cached too, in the same "
            "request's blocks, until the request ends"),
        pool // prompt_tokens: (
            "that counts only the prompt, and in tokens: the answer is cached too, and the pool "
            "hands out whole blocks"),
    }
    if max_num_seqs is not None:
        mistakes.setdefault(max_num_seqs, (
            "that is max-num-seqs, the cap on sequences in a step, not what fits in memory"))
    why = mistakes.get(number, f"work it out per user: {tokens:,} tokens in blocks of "
                               f"{block_size}, then the pool's {num_blocks} blocks over that")
    return report(Verdict(False, f"`users_at_once` = {number}, but this pool holds {shown}: "
                                 f"{why}."))
