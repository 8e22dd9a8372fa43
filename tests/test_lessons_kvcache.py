"""04's lessons (labs.lessons.kvcache): a full KV pool fails nobody, caps who runs, and makes
most of the last user's wait; each check returns its numbers when the lesson held and raises
LessonNotHeld, naming the lesson and the numbers, when it did not."""

from __future__ import annotations

import pytest

from labs.course.lessons import LessonNotHeld, kvcache
from labs.errors import LabsError


def failure(check, *args, **kwargs) -> str:
    with pytest.raises(LessonNotHeld) as failed:
        check(*args, **kwargs)
    assert isinstance(failed.value, LabsError) and isinstance(failed.value, AssertionError)
    return str(failed.value)


# nothing_failed -------------------------------------------------------------------------------

def test_every_request_answered_holds() -> None:
    assert kvcache.nothing_failed(12, 12) == {"requests": 12, "ok": 12}


def test_a_failed_request_fails_with_the_counts() -> None:
    message = failure(kvcache.nothing_failed, 12, 11)
    assert message.startswith("lesson not held: a full KV pool makes requests wait, "
                              "it does not fail them")
    assert "requests = 12, ok = 11" in message


def test_an_empty_run_does_not_count_as_nothing_failed() -> None:
    assert "requests = 0, ok = 0" in failure(kvcache.nothing_failed, 0, 0)


# pool_caps_running ------------------------------------------------------------------------------

def test_running_at_what_the_blocks_admit_holds() -> None:
    # The CPU's 40 blocks, 504-token prompts (4 blocks): 10 admitted of 12 users.
    assert kvcache.pool_caps_running(10, 10, 12) == {
        "most running": 10, "the blocks admit": 10, "users": 12}
    # one more than the arithmetic: a finishing request and its successor in one scrape
    assert kvcache.pool_caps_running(11, 10, 12)["most running"] == 11


def test_running_past_the_blocks_fails_with_the_numbers() -> None:
    message = failure(kvcache.pool_caps_running, 12, 10, 16)
    assert message.startswith("lesson not held: the pool, not the number of users, decides how "
                              "many run at once")
    assert "most running = 12, the blocks admit = 10, users = 16" in message


def test_everyone_running_at_once_fails_even_where_the_arithmetic_allows_it() -> None:
    # A pool that admits every user caps nothing: the burst did not press on it.
    message = failure(kvcache.pool_caps_running, 8, 8, 8)
    assert "most running = 8" in message and "users = 8" in message


# control_held_everyone ----------------------------------------------------------------------------

def test_the_control_running_what_the_replay_predicts_holds() -> None:
    assert kvcache.control_held_everyone(32, 32) == {
        "most running (control)": 32, "predicted by the replay": 32}
    assert kvcache.control_held_everyone(31, 32)  # within one
    # Fewer than the users, where the replay says the first finish before the last arrive.
    assert kvcache.control_held_everyone(20, 20)


def test_the_control_running_far_fewer_than_predicted_fails() -> None:
    message = failure(kvcache.control_held_everyone, 9, 12)
    assert message.startswith("lesson not held: on a pool that holds the burst, nobody waits "
                              "for blocks")
    assert "most running (control) = 9, predicted by the replay = 12" in message


# pool_makes_the_wait ------------------------------------------------------------------------------

def test_the_redesigned_burst_where_the_pool_makes_most_of_the_wait_holds() -> None:
    numbers = kvcache.pool_makes_the_wait(37.3, 14.7)  # share 61 %
    assert numbers["pool's share"] == pytest.approx(0.606)
    assert numbers["last TTFT, small pool (s)"] == 37.3
    assert numbers["last TTFT, pool that holds it (s)"] == 14.7


def test_the_old_04_on_the_avx512_epyc_fails_prefill_made_the_wait() -> None:
    # Fresh clone of the first 04: 17.4 s on the small pool, 14.5 s on one that holds it.
    message = failure(kvcache.pool_makes_the_wait, 17.4, 14.5)
    assert message.startswith("lesson not held: the small pool, not prefill, makes most of the "
                              "last user's wait (at least 50%)")
    assert "last TTFT, small pool (s) = 17.4" in message
    assert "last TTFT, pool that holds it (s) = 14.5" in message
    assert "pool's share = 0.167" in message
    assert "python -m labs calibrate" in message


def test_the_old_04_on_the_avx2_epyc_fails_too() -> None:
    assert "pool's share = 0.224" in failure(kvcache.pool_makes_the_wait, 52.7, 40.9)


def test_a_control_slower_than_the_pressure_run_fails() -> None:
    message = failure(kvcache.pool_makes_the_wait, 10.0, 12.0)
    assert "pool's share = -0.2" in message


def test_no_pressure_ttft_fails_rather_than_divides_by_zero() -> None:
    assert "pool's share = 0" in failure(kvcache.pool_makes_the_wait, 0.0, 0.0)


def test_the_share_threshold_can_be_raised() -> None:
    assert kvcache.pool_makes_the_wait(37.3, 14.7, min_share=0.6)
    assert "(at least 65%)" in failure(kvcache.pool_makes_the_wait, 37.3, 14.7, min_share=0.65)


# kv_full_only_under_pressure ----------------------------------------------------------------------

def test_kv_pinned_only_on_the_small_pool_holds() -> None:
    full = 10 * 4 / 39  # 10 prompts of 4 blocks; the gauge divides by blocks - 1
    numbers = kvcache.kv_full_only_under_pressure(0.97, 0.21, min(1.0, full))
    assert numbers == {"peak KV usage, small pool": 0.97, "peak KV usage, large pool": 0.21,
                       "full": 1.0}
    # a sample that missed the top by one request's blocks (3 of 39) still holds
    assert kvcache.kv_full_only_under_pressure(1 - 3 / 39, 0.21, 1.0)


def test_a_small_pool_that_never_filled_fails_with_the_numbers() -> None:
    message = failure(kvcache.kv_full_only_under_pressure, 0.6, 0.2, 0.93)
    assert message.startswith("lesson not held: KV usage pins at the pool's limit only when the "
                              "pool is too small")
    assert ("peak KV usage, small pool = 0.6, peak KV usage, large pool = 0.2, full = 0.93"
            in message)


def test_a_control_pool_as_full_as_the_small_one_fails() -> None:
    message = failure(kvcache.kv_full_only_under_pressure, 1.0, 1.0, 0.93)
    assert "peak KV usage, large pool = 1" in message
