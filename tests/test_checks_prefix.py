"""06's checks: the blocks a burst with a shared prefix holds, and the hit rate on a cold cache.

Three setups, their counts built here: the embedded default (SmolLM2's tokenizer counts a
~1,000-token system prompt and its question as 1,010 tokens, 1,003 of them shared; 04's pool
of 40 blocks of 128), the article's card (the same counts in its 16-token blocks, its pool of
2,426 blocks) and an H200 (Qwen's tokenizer counts the prompt a little differently, 1,021
and 1,012 tokens; 16-token blocks; the datasheet's pool). The wrong answers are the slips the
block arithmetic invites: sharing the partial block, sharing nothing, every request hitting.
"""

from __future__ import annotations

import pytest

from labs.course import checks
from labs.model import article, predict
from labs.model.prefixcache import SharedPrefix

USERS, OUTPUT = 16, 32
CPU = {"prompt_tokens": 1010, "shared_tokens": 1003, "block_size": 128}
CARD = {"prompt_tokens": 1010, "shared_tokens": 1003, "block_size": 16}
H200 = {"prompt_tokens": 1021, "shared_tokens": 1012, "block_size": 16}


def _usable(gpu: str | None) -> int:
    if gpu is None:
        return 40 - 1
    blocks = article.NUM_GPU_BLOCKS if gpu == "rtx-4000-ada" else None
    return predict.datasheet_limits(gpu, article.MODEL, num_blocks=blocks).num_blocks - 1


def _blocks(value: object, counts: dict[str, int], gpu: str | None = None):
    return checks.prefix.blocks_with_shared_prefix(value, users=USERS, output_tokens=OUTPUT,
                                                   usable_blocks=_usable(gpu), **counts)


def _held(counts: dict[str, int]) -> int:
    return SharedPrefix(**counts).blocks_held(USERS, OUTPUT, cached=True)


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


# blocks_with_shared_prefix ---------------------------------------------------------------------

def test_blocks_accepts_the_embedded_default_and_says_it_fits_04s_pool() -> None:
    verdict = _blocks(7 + 16 * 2, CPU)          # 7 shared once + 16 x (9 - 7) of their own
    assert verdict.ok is True and "fits the 39 usable blocks" in verdict.message


def test_blocks_accepts_the_articles_card() -> None:
    assert _held(CARD) == 62 + 16 * (66 - 62)
    assert _blocks(_held(CARD), CARD, "rtx-4000-ada").ok is True


def test_blocks_accepts_an_h200() -> None:
    assert _held(H200) == 63 + 16 * (66 - 63)
    assert _blocks(_held(H200), H200, "h200").ok is True


def test_blocks_rejects_sharing_nothing() -> None:
    verdict = _blocks(16 * 9, CPU)
    assert verdict.ok is False and "shared ones are held once" in verdict.message


def test_blocks_rejects_sharing_the_partial_block() -> None:
    verdict = _blocks(7 + 16 * 1, CPU)           # the shared tokens past block 7 counted as shared
    assert verdict.ok is False and "full" in verdict.message


def test_blocks_rejects_forgetting_the_shared_blocks_themselves() -> None:
    verdict = _blocks(16 * 2, CPU)
    assert verdict.ok is False and "held once, not never" in verdict.message


def test_blocks_rejects_holding_the_prompts_only() -> None:
    verdict = _blocks(62 + 16 * (64 - 62), CARD, "rtx-4000-ada")   # no answer tokens
    assert verdict.ok is False and "prompts only" in verdict.message


def test_blocks_unanswered_is_no_crash() -> None:
    assert _blocks(..., CPU).ok is None


# prefix_hit_rate -------------------------------------------------------------------------------

def _hit(value: object, counts: dict[str, int], measured: float | None = None):
    return checks.prefix.prefix_hit_rate(value, users=USERS, measured=measured, **counts)


def test_hit_rate_accepts_the_embedded_default_before_the_counters() -> None:
    verdict = _hit(15 * 896 / (16 * 1010), CPU)
    assert verdict.ok is True and "counters will say" in verdict.message


def test_hit_rate_accepts_three_decimals_and_shows_the_measurement() -> None:
    verdict = _hit(0.832, CPU, measured=0.829)
    assert verdict.ok is True and "0.829" in verdict.message


def test_hit_rate_accepts_the_articles_card() -> None:
    assert _hit(15 * 992 / (16 * 1010), CARD).ok is True


def test_hit_rate_accepts_an_h200() -> None:
    assert _hit(SharedPrefix(**H200).hit_rate(USERS), H200).ok is True


def test_hit_rate_rejects_the_shared_share_of_one_prompt() -> None:
    verdict = _hit(1003 / 1010, CPU)
    assert verdict.ok is False and "first request finds nothing" in verdict.message


def test_hit_rate_rejects_a_hit_for_the_first_request_too() -> None:
    verdict = _hit(896 / 1010, CPU)
    assert verdict.ok is False and "cold cache" in verdict.message


def test_hit_rate_rejects_not_rounding_to_full_blocks_even_in_small_blocks() -> None:
    # with 16-token blocks the slip moves the rate by ~0.01: the tolerance must be finer
    verdict = _hit(15 * 1003 / (16 * 1010), CARD)
    assert verdict.ok is False and "round down to blocks" in verdict.message


def test_hit_rate_unanswered_is_no_crash() -> None:
    assert _hit(..., CPU).ok is None
