"""The exercise notebooks are generated from the solutions and must stay in sync."""

from __future__ import annotations

import pytest

from labs import exercises


def test_solution_line_keeps_its_name() -> None:
    src = "x = 1\nceiling_tok_s = bw / weights  # SOLUTION\nprint(x)"
    assert exercises.blank_exercise(src) == "x = 1\nceiling_tok_s = ...  # your answer\nprint(x)"


def test_solution_block_is_removed() -> None:
    src = "a = 1\n    # BEGIN SOLUTION\n    b = 2\n    c = 3\n    # END SOLUTION\nd = 4"
    assert exercises.blank_exercise(src) == "a = 1\n    # your code here\nd = 4"


def test_unclosed_block_is_refused() -> None:
    with pytest.raises(ValueError):
        exercises.blank_exercise("# BEGIN SOLUTION\nx = 1")


def test_exercise_cells_in_solutions_actually_hide_something() -> None:
    for path, text in exercises.expected_twins().items():
        assert "# SOLUTION" not in text and "# BEGIN SOLUTION" not in text, path


def test_notebooks_are_in_sync_with_solutions() -> None:
    assert exercises.main(["--check"]) == 0, "run `make notebooks`"
