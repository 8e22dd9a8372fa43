"""06's lesson (labs.lessons.prefix): cached TTFT below uncached, by a margin noise
cannot cross."""

from __future__ import annotations

import math

import pytest

from labs.course.lessons import LessonNotHeld, prefix
from labs.errors import ConfigError


def test_the_required_ratio_is_half_the_prediction_or_one_and_a_half() -> None:
    assert prefix.required_ratio(5.35) == pytest.approx(2.675)
    assert prefix.required_ratio(10.7) == pytest.approx(5.35)
    assert prefix.required_ratio(2.0) == 1.5   # half of it is too close to 1
    assert prefix.required_ratio(1.2) == 1.5


def test_the_cpu_run_holds() -> None:
    # tests/fixtures/results_cpu/06: p95 14.20 s off, 2.68 s on; the model predicted 14.89 / 2.78.
    numbers = prefix.cached_faster(2.68, 14.20, predicted_ratio=14.89 / 2.78)
    assert numbers["uncached / cached"] == pytest.approx(5.30, abs=0.01)
    assert numbers["required"] == pytest.approx(14.89 / 2.78 / 2)


def test_a_cache_that_saved_too_little_fails_with_the_numbers() -> None:
    # Faster, but 2x where 5.4x was predicted: more than the noise of a burst can explain.
    with pytest.raises(LessonNotHeld) as failed:
        prefix.cached_faster(7.1, 14.2, predicted_ratio=5.35)
    message = str(failed.value)
    assert message.startswith("lesson not held: cached TTFT (p95) is below uncached")
    assert "uncached / cached = 2" in message and "predicted = 5.35" in message
    assert "required = 2.67" in message and "hit rate" in message


def test_slower_with_the_cache_fails() -> None:
    with pytest.raises(LessonNotHeld):
        prefix.cached_faster(3.0, 2.9, predicted_ratio=5.0)


def test_a_small_predicted_gain_still_needs_one_and_a_half() -> None:
    assert prefix.cached_faster(1.0, 1.6, predicted_ratio=1.8)["required"] == 1.5
    with pytest.raises(LessonNotHeld, match=r"under 1\.5x"):
        prefix.cached_faster(1.0, 1.3, predicted_ratio=1.2)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, None, True])
def test_numbers_must_be_positive(bad: object) -> None:
    with pytest.raises(ConfigError):
        prefix.cached_faster(bad, 14.2, predicted_ratio=5.0)  # type: ignore[arg-type]  # a bad value on purpose
