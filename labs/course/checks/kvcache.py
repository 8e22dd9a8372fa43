"""Checks for 04: how many requests a KV pool admits, and the pool that would hold them all.

Both answers are block arithmetic on the burst (users, prompt and answer tokens) and the
pool (blocks, block size), so each check computes its own expected value from the same
inputs the learner has, and names the usual slips: dividing tokens instead of counting whole
blocks per request, counting the answer's blocks at admission, rounding the whole burst once.

vLLM keeps one block of the pool aside (the "null" block its block tables point at), so a pool
of N blocks lends N - 1. The notebooks count the pool as `/metrics` reports it (N); an answer
that counts the block aside is right too, and the verdict says why.
"""

from __future__ import annotations

import math

from . import Verdict, _whole_number, report


def _blocks(tokens: int, block_size: int) -> int:
    return math.ceil(tokens / block_size)


def admitted_at_once(value: object, *, users: int, prompt_tokens: int, output_tokens: int,
                     num_blocks: int, block_size: int,
                     max_num_seqs: int | None = None) -> Verdict:
    """04: requests of the burst the pool admits at once. vLLM admits a waiting request when
    its *prompt's* blocks are free (the answer's blocks are taken one at a time later), never
    more than `users` or `max_num_seqs`."""
    number = _whole_number("admitted_at_once", value)
    if isinstance(number, Verdict):
        return report(number)
    cap = min(users, max_num_seqs or users)
    prompt_blocks = _blocks(prompt_tokens, block_size)
    expected = min(cap, num_blocks // prompt_blocks)
    lent = min(cap, (num_blocks - 1) // prompt_blocks)  # the block vLLM keeps aside
    if number in (expected, lent):
        aside = (f" ({lent} if you count the block vLLM keeps aside: {num_blocks - 1} lent)"
                 if lent != expected else "")
        return report(Verdict(True, f"right: a prompt of {prompt_tokens:,} tokens holds "
                                    f"{prompt_blocks} blocks of {block_size}, so "
                                    f"{num_blocks:,} blocks admit {expected}{aside}; "
                                    f"the other {users - min(number, users)} wait."))
    whole = min(cap, num_blocks // _blocks(prompt_tokens + output_tokens, block_size))
    if number == users and expected < users:
        hint = ("that is every user: the pool, not the number of users, decides who runs; "
                "count how many prompts its blocks hold.")
    elif number == min(cap, num_blocks * block_size // prompt_tokens):
        hint = ("that divides the pool's tokens by a prompt's tokens; a request holds whole "
                "blocks, so round each prompt up to whole blocks first, then divide the blocks.")
    elif number == whole:
        hint = ("that many hold their whole answer too; vLLM admits a request on its "
                "prompt's blocks and takes the answer's blocks one at a time as it decodes.")
    elif prompt_tokens >= block_size and number == min(cap, num_blocks
                                                       // (prompt_tokens // block_size)):
        hint = ("rounded a prompt's blocks down: its last, partly filled block is a whole "
                "block of the pool too.")
    else:
        hint = ("blocks per prompt = prompt tokens / block size, rounded up; the pool's "
                "blocks divided by that (rounded down) is how many are admitted together.")
    return report(Verdict(False, f"`admitted_at_once` = {number}: {hint}"))


def blocks_for_everyone(value: object, *, users: int, prompt_tokens: int, output_tokens: int,
                        block_size: int) -> Verdict:
    """04: the smallest pool, in KV blocks, that runs every user to the end of the answer at
    once: each request holds whole blocks for its prompt and its answer."""
    number = _whole_number("blocks_for_everyone", value)
    if isinstance(number, Verdict):
        return report(number)
    per_request = _blocks(prompt_tokens + output_tokens, block_size)
    expected = users * per_request
    if number in (expected, expected + 1):
        aside = (" (one more for the block vLLM keeps aside: right too)"
                 if number == expected + 1 else "")
        return report(Verdict(True, f"right: {users} x {per_request} blocks = {expected:,} "
                                    f"blocks, {expected * block_size:,} tokens{aside}; "
                                    f"`--num-gpu-blocks-override={number}` would hold them."))
    total = users * (prompt_tokens + output_tokens)
    if number == users * ((prompt_tokens + output_tokens) // block_size):
        hint = ("rounded each request down: its last, partly filled block is a whole block, "
                "so round up per request.")
    elif number == math.ceil(total / block_size):
        hint = ("that rounds the whole burst once; blocks are not shared between requests, so "
                "each request rounds up to whole blocks on its own, then multiply by the users.")
    elif number == users * _blocks(prompt_tokens, block_size):
        hint = ("that holds the prompts only; every answer token is stored too, so count "
                "prompt + answer per request.")
    elif number in (total, expected * block_size):
        hint = f"that is tokens; the answer is in blocks of {block_size} tokens."
    elif number == per_request:
        hint = f"that is one request's blocks; the pool must hold all {users} users at once."
    else:
        hint = (f"each request holds whole blocks of {block_size} tokens for its prompt and "
                "its answer: round up per request, then multiply by the users.")
    return report(Verdict(False, f"`blocks_for_everyone` = {number}: {hint}"))
