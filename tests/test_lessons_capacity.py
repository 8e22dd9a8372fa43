"""07's lesson (labs.lessons.capacity): the operating point is at or below the throughput
maximum."""

from __future__ import annotations

import pandas as pd
import pytest

from labs.course.lessons import LessonNotHeld, capacity
from labs.errors import ConfigError
from labs.model import cost


def sweep() -> pd.DataFrame:
    """Notebook 03's shape on the CPU default: the throughput maximum at 128 users."""
    return pd.DataFrame({
        "concurrency": [1, 4, 16, 64, 128],
        "agg_tok_s": [44.0, 176.0, 425.0, 610.0, 738.0],
        "per_user_tok_s": [44.3, 44.2, 26.7, 9.5, 5.8],
        "ttft_s_p95": [0.053, 0.126, 0.41, 1.70, 2.51],
    })


def test_the_operating_point_below_the_maximum_holds() -> None:
    point = cost.operating_point(sweep(), cost.Target(ttft_p95_s=0.45, per_user_tok_s=6.7))
    numbers = capacity.operating_point_within_max(sweep(), point)
    assert numbers["operating point (users)"] == 16 and numbers["throughput maximum (users)"] == 128
    assert numbers["point / maximum tok/s"] == pytest.approx(425 / 738)
    # records work as well as a table; the maximum itself is "at" the maximum
    top = {"concurrency": 128, "agg_tok_s": 738.0}
    assert capacity.operating_point_within_max(sweep().to_dict("records"), top)


def test_a_point_on_the_plateau_past_the_noisy_maximum_holds() -> None:
    # Past the cliff the levels differ by noise: the maximum fell at 64 by chance, 128 is 5 % lower.
    flat = sweep().assign(agg_tok_s=[44.0, 176.0, 425.0, 740.0, 703.0])
    numbers = capacity.operating_point_within_max(flat, {"concurrency": 128, "agg_tok_s": 703.0})
    assert numbers["throughput maximum (users)"] == 64


def test_a_point_past_the_maximum_whose_throughput_fell_fails_with_the_numbers() -> None:
    # A lax target accepted 128 users where throughput had fallen to half the maximum.
    fallen = sweep().assign(agg_tok_s=[44.0, 176.0, 425.0, 610.0, 300.0])
    with pytest.raises(LessonNotHeld) as failed:
        capacity.operating_point_within_max(fallen, {"concurrency": 128, "agg_tok_s": 300.0})
    message = str(failed.value)
    assert message.startswith("lesson not held: the operating point is at or below the throughput")
    assert "operating point (users) = 128" in message
    assert "throughput maximum (users) = 64" in message
    assert "point / maximum tok/s = 0.492" in message and "tighten it" in message


def test_a_point_above_what_the_sweep_made_fails() -> None:
    with pytest.raises(LessonNotHeld, match="more tok/s than the sweep"):
        capacity.operating_point_within_max(sweep(), {"concurrency": 32, "agg_tok_s": 1041.0})


def test_a_sweep_without_throughput_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="column"):
        capacity.operating_point_within_max(sweep().drop(columns="agg_tok_s"),
                                            {"concurrency": 16, "agg_tok_s": 425.0})
    with pytest.raises(ConfigError, match="no level"):
        capacity.operating_point_within_max(sweep().assign(agg_tok_s=None),
                                            {"concurrency": 16, "agg_tok_s": 425.0})
