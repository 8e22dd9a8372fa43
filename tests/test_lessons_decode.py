"""labs.lessons.decode: notebook 02's lesson, held and not held."""

from __future__ import annotations

import pytest

from labs.course.lessons import LessonNotHeld, decode
from labs.errors import LabsError


@pytest.mark.parametrize("measured, ceiling", [
    (26.0, 65.0),   # the AVX2 CPU: ~40 % of the ceiling
    (20.0, 65.0),   # the slowest AVX2 EPYC: 20 tok/s alone
    (45.0, 130.0),  # the AVX-512 CPU
    (28.0, 27.0),  # a GPU close to its ceiling, inside the bandwidth's error
])
def test_a_stream_below_its_ceiling_holds(measured, ceiling):
    numbers = decode.single_stream_below_ceiling(measured, ceiling)
    assert numbers["fraction_of_ceiling"] == pytest.approx(measured / ceiling)


def test_a_stream_above_its_ceiling_fails_with_the_numbers():
    # the article: 28-30 tok/s measured against 25.5 computed from the datasheet
    with pytest.raises(LessonNotHeld) as err:
        decode.single_stream_below_ceiling(29.0, 25.5)
    text = str(err.value)
    assert "one stream decodes no faster than the bandwidth ceiling" in text
    assert "measured_tok_s = 29" in text and "ceiling_tok_s = 25.5" in text
    assert "re-measure the bandwidth" in text
    assert isinstance(err.value, LabsError) and isinstance(err.value, AssertionError)


@pytest.mark.parametrize("measured, ceiling", [(0.0, 65.0), (26.0, 0.0), (float("nan"), 65.0)])
def test_nonsense_inputs_fail(measured, ceiling):
    with pytest.raises(LessonNotHeld, match="positive"):
        decode.single_stream_below_ceiling(measured, ceiling)
