"""01's exercise check: how many users of a stated length the measured KV pool holds at once.

The check is arithmetic on the server's own pool, so it is tested on three pools built here:
the embedded default (SmolLM2-135M on the CPU, the naive profile's 2 GiB pool: 364 blocks of
128), the article's RTX 4000 Ada with Qwen2.5-7B (2,426 blocks of 16) and an H200 with the
same model (its datasheet pool, blocks of 16). Each wrong answer is named by its mistake.
"""

from __future__ import annotations

import pytest

from labs.course import checks
from labs.course.checks.provision import users_at_once, users_at_once_range
from labs.model import article, predict

PROMPT, ANSWER = 1000, 250  # the exercise's support chat

CPU = {"num_blocks": 364, "block_size": 128, "max_num_seqs": 256}
CARD = {"num_blocks": article.NUM_GPU_BLOCKS, "block_size": article.BLOCK_SIZE,
        "max_num_seqs": 256}


def _h200() -> dict[str, int]:
    limits = predict.datasheet_limits("h200", article.MODEL, "bfloat16")
    return {"num_blocks": limits.num_blocks, "block_size": limits.block_size,
            "max_num_seqs": limits.max_num_seqs}


POOLS = {"cpu": CPU, "rtx-4000-ada": CARD, "h200": _h200()}


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


def _check(value: object, pool: dict[str, int]):
    return users_at_once(value, prompt_tokens=PROMPT, output_tokens=ANSWER, **pool)


def _solution(pool: dict[str, int]) -> int:
    """The notebook's solution: the pool's blocks less the one kept back, over whole blocks."""
    return (pool["num_blocks"] - 1) // -(-(PROMPT + ANSWER) // pool["block_size"])


@pytest.mark.parametrize("name", POOLS)
def test_accepts_the_solution_on_each_pool(name: str) -> None:
    assert _check(_solution(POOLS[name]), POOLS[name]).ok is True


def test_the_three_pools_give_the_expected_numbers() -> None:
    assert _solution(CPU) == 36                    # 363 // 10 blocks of 128
    assert _solution(CARD) == 30                   # 2,425 // 79 blocks of 16
    assert _solution(POOLS["h200"]) > 1000         # the H200 holds a crowd


def test_accepts_the_whole_pool_without_the_kept_back_block() -> None:
    pool = {"num_blocks": 40, "block_size": 128}
    low, high = users_at_once_range(prompt_tokens=PROMPT, output_tokens=ANSWER, **pool)
    assert (low, high) == (3, 4)      # 39 // 10 and 40 // ceil(1,249 / 128)
    assert _check(4, pool).ok is True and _check(3, pool).ok is True


@pytest.mark.parametrize("name", POOLS)
def test_rejects_pool_tokens_over_request_tokens_without_rounding_to_blocks(name: str) -> None:
    pool = POOLS[name]
    wrong = pool["num_blocks"] * pool["block_size"] // (PROMPT + ANSWER)
    verdict = _check(wrong, pool)
    assert verdict.ok is False and "whole blocks" in verdict.message


@pytest.mark.parametrize("name", POOLS)
def test_rejects_counting_the_prompt_only(name: str) -> None:
    pool = POOLS[name]
    wrong = (pool["num_blocks"] - 1) // -(-PROMPT // pool["block_size"])
    verdict = _check(wrong, pool)
    assert verdict.ok is False and "answer" in verdict.message


def test_rejects_max_num_seqs_for_a_memory_limit() -> None:
    verdict = _check(CPU["max_num_seqs"], CPU)
    assert verdict.ok is False and "max-num-seqs" in verdict.message


def test_rejects_a_fraction_of_a_user() -> None:
    verdict = _check(363 / 10, CPU)
    assert verdict.ok is False and "whole number" in verdict.message


def test_unanswered_is_not_a_crash() -> None:
    assert _check(..., CPU).ok is None


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABS_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError):
        _check(40, CPU)
    assert checks.provision.users_at_once(36, prompt_tokens=PROMPT, output_tokens=ANSWER,
                                          **CPU).ok is True
