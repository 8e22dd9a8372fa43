"""04's checks: how many requests a KV pool admits at once, and the pool that holds a burst.

Each is judged on three setups whose numbers are built here: the embedded default (the CPU's
`kv-pressure` pool, 40 blocks of 128 tokens, and a burst the way labs.kvwait designs it), the
article's card (RTX 4000 Ada, Qwen2.5-7B in bf16: 2,426 blocks of 16, 32 x 4,000-token
prompts) and an H200 (Qwen2.5-7B from its datasheet, the pressure pool labs.kvwait sizes for
64 users). Wrong answers are the slips a learner makes, each with its own lesson.
"""

from __future__ import annotations

import math

import pytest

from labs.course import checks
from labs.model import article, kvwait, predict
from labs.model.steps import ServerLimits

CPU_POOL = ServerLimits(num_blocks=40, block_size=128, max_model_len=2048, max_num_seqs=128,
                        max_num_batched_tokens=2048)  # the kv-pressure profile
CPU_BURST = {"users": 16, "prompt_tokens": 8 * 128 - 8, "output_tokens": 128}  # kvwait's shape


def _card_pool() -> ServerLimits:
    return predict.datasheet_limits("rtx-4000-ada", article.MODEL,
                                    num_blocks=article.NUM_GPU_BLOCKS)


CARD_BURST = {"users": article.KV_USERS, "prompt_tokens": article.KV_PROMPT_TOKENS,
              "output_tokens": 64}
H200_BURST = {"users": 64, "prompt_tokens": 24 * 16 - 8, "output_tokens": 256}


def _h200_pool() -> ServerLimits:
    control = predict.datasheet_limits("h200", article.MODEL)
    return kvwait.pressure_pool(control, **H200_BURST)


def _pool_kw(pool: ServerLimits) -> dict[str, int]:
    return {"num_blocks": pool.num_blocks, "block_size": pool.block_size,
            "max_num_seqs": pool.max_num_seqs}


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


# admitted_at_once ------------------------------------------------------------------------------

def test_admitted_accepts_the_embedded_default() -> None:
    verdict = checks.kvcache.admitted_at_once(5, **CPU_BURST, **_pool_kw(CPU_POOL))
    assert verdict.ok is True and "8 blocks of 128" in verdict.message   # 40 // ceil(1016 / 128)


def test_admitted_counts_the_block_vllm_keeps_aside_as_right() -> None:
    verdict = checks.kvcache.admitted_at_once(4, **CPU_BURST, **_pool_kw(CPU_POOL))  # 39 // 8
    assert verdict.ok is True and "aside" in verdict.message


def test_admitted_accepts_the_articles_card_and_its_first_nine() -> None:
    pool = _card_pool()
    assert pool.block_size == 16 and pool.num_blocks == 2426
    verdict = checks.kvcache.admitted_at_once(article.KV_FAST_REQUESTS, **CARD_BURST,
                                              **_pool_kw(pool))
    assert verdict.ok is True   # 2,426 // 250: the article's "first nine or so requests"


def test_admitted_accepts_an_h200() -> None:
    pool = _h200_pool()
    expected = pool.num_blocks // math.ceil(H200_BURST["prompt_tokens"] / pool.block_size)
    assert checks.kvcache.admitted_at_once(expected, **H200_BURST, **_pool_kw(pool)).ok is True
    assert checks.kvcache.admitted_at_once(expected + 2, **H200_BURST, **_pool_kw(pool)).ok is False


def test_admitted_never_exceeds_max_num_seqs() -> None:
    pool = _h200_pool()
    kw = {**_pool_kw(pool), "max_num_seqs": 8}
    assert checks.kvcache.admitted_at_once(8, **H200_BURST, **kw).ok is True


def test_admitted_rejects_every_user() -> None:
    verdict = checks.kvcache.admitted_at_once(16, **CPU_BURST, **_pool_kw(CPU_POOL))
    assert verdict.ok is False and "not the number of users" in verdict.message


def test_admitted_rejects_dividing_tokens_without_whole_blocks() -> None:
    # 136-token prompts: two blocks each (20 admitted), though 5,120 / 136 = 37 by tokens
    burst = {"users": 64, "prompt_tokens": 136, "output_tokens": 64}
    assert checks.kvcache.admitted_at_once(20, **burst, **_pool_kw(CPU_POOL)).ok is True
    verdict = checks.kvcache.admitted_at_once(37, **burst, **_pool_kw(CPU_POOL))
    assert verdict.ok is False and "whole blocks" in verdict.message


def test_admitted_rejects_rounding_a_prompt_down_to_whole_blocks() -> None:
    burst = {"users": 64, "prompt_tokens": 136, "output_tokens": 64}
    verdict = checks.kvcache.admitted_at_once(40, **burst, **_pool_kw(CPU_POOL))  # 40 // 1
    assert verdict.ok is False and "rounded a prompt's blocks down" in verdict.message


def test_admitted_rejects_counting_the_answer_blocks_at_admission() -> None:
    burst = {**CPU_BURST, "output_tokens": 384}   # a whole request: 11 blocks, 40 // 11 = 3
    verdict = checks.kvcache.admitted_at_once(3, **burst, **_pool_kw(CPU_POOL))
    assert verdict.ok is False and "prompt's blocks" in verdict.message


def test_admitted_unanswered_or_not_a_number_is_no_crash() -> None:
    assert checks.kvcache.admitted_at_once(..., **CPU_BURST, **_pool_kw(CPU_POOL)).ok is None
    assert checks.kvcache.admitted_at_once(4.5, **CPU_BURST, **_pool_kw(CPU_POOL)).ok is False


# blocks_for_everyone ---------------------------------------------------------------------------

def _everyone(value: object, burst: dict[str, int], pool: ServerLimits):
    return checks.kvcache.blocks_for_everyone(value, **burst, block_size=pool.block_size)


def test_blocks_accepts_the_embedded_default() -> None:
    verdict = _everyone(16 * 9, CPU_BURST, CPU_POOL)            # 16 x ceil(1,144 / 128)
    assert verdict.ok is True and "18,432 tokens" in verdict.message


def test_blocks_accepts_one_more_for_the_block_vllm_keeps_aside() -> None:
    verdict = _everyone(16 * 9 + 1, CPU_BURST, CPU_POOL)
    assert verdict.ok is True and "aside" in verdict.message


def test_blocks_accepts_the_articles_card() -> None:
    verdict = _everyone(32 * 254, CARD_BURST, _card_pool())     # 4,064 tokens = 254 blocks each
    assert verdict.ok is True and "130,048 tokens" in verdict.message


def test_blocks_accepts_an_h200() -> None:
    assert _everyone(64 * 40, H200_BURST, _h200_pool()).ok is True   # 632 tokens = 40 blocks


def test_blocks_rejects_rounding_down_per_request() -> None:
    verdict = _everyone(16 * 8, CPU_BURST, CPU_POOL)             # 16 x floor(1,144 / 128)
    assert verdict.ok is False and "rounded each request down" in verdict.message


def test_blocks_rejects_rounding_the_whole_burst_once() -> None:
    verdict = _everyone(math.ceil(16 * 1144 / 128), CPU_BURST, CPU_POOL)   # 143
    assert verdict.ok is False and "on its own" in verdict.message


def test_blocks_rejects_holding_the_prompts_only() -> None:
    verdict = _everyone(32 * 250, CARD_BURST, _card_pool())
    assert verdict.ok is False and "prompts only" in verdict.message


def test_blocks_rejects_tokens_for_blocks() -> None:
    verdict = _everyone(16 * 1144, CPU_BURST, CPU_POOL)
    assert verdict.ok is False and "tokens" in verdict.message


def test_blocks_rejects_one_requests_blocks() -> None:
    verdict = _everyone(9, CPU_BURST, CPU_POOL)
    assert verdict.ok is False and "one request" in verdict.message


def test_blocks_unanswered_is_no_crash() -> None:
    assert _everyone(..., CPU_BURST, CPU_POOL).ok is None
