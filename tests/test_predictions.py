"""labs.predictions: the learner's number scored beside the model's and the measurement."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from labs.course import predictions
from labs.course.predictions import Scored, score

ROOT = Path(__file__).resolve().parent.parent
HIGH, LOW = "you assumed the fixed part grows", "you forgot the fixed part"


def _score(mine: object, measured: object = 8.0, model: object = 7.0) -> Scored:
    return score("TTFT ratio", mine=mine, model=model, measured=measured, high=HIGH, low=LOW)


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under `make test`: a prediction must not fail a notebook even then."""
    monkeypatch.setenv("LABS_STRICT_CHECKS", "1")


def test_right_on_within_the_tolerance_needs_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    s = _score(9.0)
    assert (s.status, s.direction, s.answered) == ("scored", "right", True)
    assert s.factor == pytest.approx(9 / 8)
    assert "right on" in s.verdict and "1.12x" in s.verdict
    assert HIGH not in s.verdict and LOW not in s.verdict
    out = capsys.readouterr().out
    assert out.startswith("Prediction: TTFT ratio") and out.strip() == s.table()


@pytest.mark.parametrize(("mine", "factor", "grade"), [
    (12.0, 1.5, "close"), (24.0, 3.0, "off"), (80.0, 10.0, "far off")])
def test_too_high_is_scored_by_its_factor_with_the_high_hint(mine: float, factor: float,
                                                             grade: str) -> None:
    s = _score(mine)
    assert s.direction == "high" and s.factor == pytest.approx(factor)
    assert s.verdict.split(":")[0].endswith(grade), s.verdict
    assert "too high" in s.verdict and HIGH in s.verdict and LOW not in s.verdict


def test_too_low_gets_the_low_hint_and_the_same_factor_as_high() -> None:
    low, high = _score(4.0), _score(16.0)
    assert low.direction == "low" and LOW in low.verdict and HIGH not in low.verdict
    assert low.factor == pytest.approx(high.factor) == pytest.approx(2.0)
    assert "2.00x too low" in low.verdict


def test_the_verdict_says_who_was_closer() -> None:
    assert "closer than the model" in _score(12.0, model=2.0).verdict
    assert "the model was closer" in _score(12.0, model=8.5).verdict
    assert "as close as the model" in _score(12.0, model=12.0).verdict


def test_exact_and_numpy_numbers() -> None:
    s = _score(np.int64(8), measured=np.float64(8.0), model=np.float32(7.5))
    assert (s.mine, s.factor, s.direction) == (8.0, 1.0, "right")
    assert "exactly" in s.verdict


@pytest.mark.parametrize("unanswered", [..., None])
def test_unanswered_says_not_predicted_yet_and_still_shows_both(unanswered: object) -> None:
    s = _score(unanswered)
    assert (s.status, s.answered, s.mine, s.factor, s.direction) == (
        "not predicted yet", False, None, None, None)
    assert "not predicted yet" in s.verdict
    table = s.table()
    assert "not predicted yet" in table.splitlines()[1]
    assert table.splitlines()[2].split()[:2] == ["model", "7"]  # model and measurement, anyway
    assert table.splitlines()[3].split() == ["measured", "8"]


@pytest.mark.parametrize("junk", ["12", "twelve", [12], True, math.nan, math.inf, {"a": 1}])
def test_something_not_a_number_is_named_and_nothing_raises(junk: object) -> None:
    s = _score(junk)
    assert s.status == "not a number" and s.answered and s.mine is None and s.factor is None
    assert repr(junk)[:5] in s.verdict and "finite number" in s.verdict
    assert "not a number" in s.table()


@pytest.mark.parametrize(("mine", "measured", "direction", "hint"), [
    (3.0, 0.0, "high", HIGH), (-1.0, 0.0, "low", LOW), (0.0, -2.0, "high", HIGH),
    (2.0, -2.0, "high", HIGH), (-3.0, 2.0, "low", LOW)])
def test_zero_or_negative_numbers_are_scored_by_difference(mine: float, measured: float,
                                                           direction: str, hint: str) -> None:
    s = _score(mine, measured=measured)
    assert s.status == "scored" and s.factor is None and s.direction == direction
    assert f"❌ {abs(mine - measured):g} too {direction} (zero or negative" in s.verdict
    assert hint in s.verdict


def test_zero_measured_and_zero_predicted_is_exact() -> None:
    assert _score(0, measured=0).direction == "right"


@pytest.mark.parametrize("missing", [None, math.nan, "n/a"])
def test_no_measurement_is_said_not_scored(missing: object) -> None:
    s = _score(5.0, measured=missing)
    assert (s.status, s.mine, s.factor, s.direction) == ("not measured", 5.0, None, None)
    assert "not measured" in s.table()


def test_no_model_prediction_is_allowed() -> None:
    s = _score(9.0, model=None)
    assert s.direction == "right" and "no model prediction" in s.table()
    assert "model" not in s.verdict


def test_the_table_shows_the_model_against_the_measurement() -> None:
    lines = _score(16.0, model=10.0).table().splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["you", "model", "measured"]
    assert "(1.25x high)" in lines[2]


def test_counts_stay_counts_and_small_numbers_keep_three_figures() -> None:
    assert predictions.format_number(16.0) == "16" and predictions.format_number(1536) == "1,536"
    assert predictions.format_number(0.36) == "0.360" and predictions.format_number(8.68) == "8.68"
    assert predictions.format_number(None) == "—"


# --- the notebooks' prediction cells --------------------------------------------------------------

def _cells(name: str) -> list[dict]:
    return json.loads((ROOT / "solutions" / name).read_text())["cells"]


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (ROOT / "solutions").glob("0[1-7]_*.ipynb")))
def test_every_notebook_asks_for_a_prediction_before_scoring_it(name: str) -> None:
    """01-07 each have an exercise cell that assigns `mine`, and a later cell that scores it."""
    scored = []
    for i, cell in enumerate(_cells(name)):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "score" and "predictions" in ast.unparse(node.func)):
                keywords = {k.arg: k.value for k in node.keywords}
                assert {"mine", "model", "measured", "high", "low"} <= set(keywords), source
                scored.append((i, ast.unparse(keywords["mine"])))
    assert scored, f"{name} scores no prediction"
    for at, mine in scored:
        asked = [i for i, cell in enumerate(_cells(name)[:at])
                 if "exercise" in cell["metadata"].get("tags", [])
                 and any(ln.startswith(f"{mine} = ") and "# SOLUTION" in ln
                         for ln in "".join(cell["source"]).splitlines())]
        assert asked, f"{name}: `{mine}` is scored in cell {at} but no exercise cell asks for it"
