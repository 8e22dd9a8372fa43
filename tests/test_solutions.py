"""The shape every solution notebook keeps (issue 20): short code cells, a learner's own
prediction scored against the model and the server, at least two exercises with a check each,
and a time budget for its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labs.model import timebudget

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "solutions").glob("0*.ipynb") if p.stem != "00_smoke")
MAX_LINES = 10


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", CHAPTERS + [ROOT / "solutions" / "00_smoke.ipynb"],
                         ids=lambda p: p.stem)
def test_no_code_cell_is_longer_than_ten_lines(path: Path) -> None:
    long = [(i, len("".join(c["source"]).splitlines())) for i, c in enumerate(_cells(path))
            if c["cell_type"] == "code" and len("".join(c["source"]).splitlines()) > MAX_LINES]
    assert not long, f"{path.name}: cells over {MAX_LINES} lines (index, lines): {long}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_two_exercises_with_checks_and_a_scored_prediction(path: Path) -> None:
    cells = _cells(path)
    checks = sum("check" in _tags(c) for c in cells)
    predictions = sum("prediction" in _tags(c) for c in cells)
    assert checks >= 2, f"{path.name}: {checks} checked exercises, want at least 2"
    assert predictions >= 1, f"{path.name}: no learner prediction scored"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_a_time_budget_it_uses(path: Path) -> None:
    assert path.stem in timebudget.BUDGETS
    source = "".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert f'for_notebook("{path.stem}"' in source, f"{path.name} does not size to its budget"
    assert '"timings"' in source, f"{path.name} does not save its runs' predicted and actual time"
