from __future__ import annotations

import pytest

from labs.course import checks


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


def test_unanswered_is_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    verdict = checks.close_to("ceiling_tok_s", ..., 34.28)
    assert verdict.ok is None
    assert "not answered yet" in capsys.readouterr().out


def test_right_and_wrong_answers() -> None:
    assert checks.close_to("x", 34.3, 34.28).ok is True
    wrong = checks.close_to("x", 48, 34.28, why="divide bandwidth by weights")
    assert wrong.ok is False and "34.28" in wrong.message and "divide" in wrong.message
    assert checks.close_to("x", "fast", 34.28).ok is False


def test_within_factor() -> None:
    assert checks.within_factor("p", 30, 50).ok is True
    assert checks.within_factor("p", 10, 50).ok is False


def test_strict_mode_raises_on_wrong_or_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABS_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError):
        checks.close_to("x", 48, 34.28)
    with pytest.raises(AssertionError):
        checks.close_to("x", ..., 34.28)
    assert checks.close_to("x", 34.28, 34.28).ok is True
