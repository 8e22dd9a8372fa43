"""Each notebook's time: its reading and exercise time, estimated by a stated rule
(`ReadingRule`, counted from the notebook), beside its measured compute, its budget and its
sized runs (`NotebookTime`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ...model.timebudget import BUDGETS
from .runresults import NOTEBOOKS, Results


@dataclass(frozen=True)
class ReadingRule:
    """How long a person spends in a notebook besides its compute, counted from the notebook:

    - reading: its markdown words at `words_per_min` (technical prose, read with care);
    - code: `code_cell_min` per code cell (read a short cell, run it, look at the output);
    - predictions: `prediction_min` per prediction (an `exercise` cell whose next tagged
      cell is a `prediction` cell: write a number, compare it);
    - exercises: `exercise_min` per other `exercise` cell (reason, write code, run its check).

    Live in a class, the instructor tells the story in `live_talk_share` of the reading time
    while the compute runs (start the long cell, then talk), so a live notebook takes
    max(compute, talk) + predictions + exercises; a demo drops the exercises."""

    words_per_min: float = 150.0
    code_cell_min: float = 0.25
    prediction_min: float = 2.0
    exercise_min: float = 5.0
    live_talk_share: float = 0.5


RULE = ReadingRule()


@dataclass(frozen=True)
class Counts:
    """What a notebook holds that takes a person's time."""

    words: int = 0
    code_cells: int = 0
    predictions: int = 0
    exercises: int = 0
    found: bool = True

    def reading_min(self, rule: ReadingRule = RULE) -> float:
        return self.words / rule.words_per_min + self.code_cells * rule.code_cell_min

    def doing_min(self, rule: ReadingRule = RULE) -> float:
        return self.predictions * rule.prediction_min + self.exercises * rule.exercise_min


def count(path: Path) -> Counts:
    """Count markdown words, code cells, predictions and exercises of one notebook."""
    if not path.exists():
        return Counts(found=False)
    cells = json.loads(path.read_text())["cells"]
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in cells]
    words = sum(len(re.findall(r"\S+", "".join(c["source"]))) for c in cells
                if c["cell_type"] == "markdown")
    sources = ["".join(c["source"]) for c in cells]
    # A prediction is the exercise cell that assigns the name a `prediction` cell scores as
    # `mine=` (06 asks for its prediction first and its exercises after, so order says nothing).
    scored = {m for src, t in zip(sources, tags) if "prediction" in t
              for m in re.findall(r"mine=(\w+)", src)}
    predictions = exercises = 0
    for src, cell_tags in zip(sources, tags):
        if "exercise" not in cell_tags:
            continue
        if any(re.search(rf"^\s*{re.escape(name)}\s*=", src, re.M) for name in scored):
            predictions += 1
        else:
            exercises += 1
    return Counts(words, sum(c["cell_type"] == "code" for c in cells), predictions, exercises)


def title(path: Path, notebook: str) -> str:
    """The notebook's first heading, for a notebook this module has no prose for."""
    if path.exists():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                first = "".join(cell["source"]).strip().splitlines()[0]
                return first.lstrip("# ").split("·", 1)[-1].strip()
    return notebook


DEFAULT_UNMEASURED_COMPUTE_S = 60.0  # a notebook with no measurement and no budget (00)


@dataclass(frozen=True)
class NotebookTime:
    notebook: str
    counts: Counts
    measured_s: float | None
    budget_ci_s: float | None
    budget_full_s: float | None
    runs_predicted_s: float | None
    runs_actual_s: float | None

    @property
    def compute_s(self) -> float:
        """What the plan counts on: the measured wall time, else the full-size budget."""
        if self.measured_s is not None:
            return self.measured_s
        return self.budget_full_s if self.budget_full_s is not None else DEFAULT_UNMEASURED_COMPUTE_S

    @property
    def self_paced_min(self) -> float:
        return self.compute_s / 60 + self.counts.reading_min() + self.counts.doing_min()

    def talk_min(self, rule: ReadingRule = RULE) -> float:
        return self.counts.reading_min(rule) * rule.live_talk_share


def notebooks(solutions_dir: Path) -> list[str]:
    """Every notebook of the course: those in solutions/ and those the course plans for."""
    found = {p.stem for p in solutions_dir.glob("*.ipynb")}
    return sorted(found | set(NOTEBOOKS) | set(BUDGETS))


def notebook_times(r: Results, solutions_dir: Path) -> list[NotebookTime]:
    rows = []
    for nb in notebooks(solutions_dir):
        budget = BUDGETS.get(nb)
        timings = r.findings(nb).get("timings") or []
        predicted = [t.get("predicted_s") for t in timings if isinstance(t, dict)]
        actual = [t.get("actual_s") for t in timings if isinstance(t, dict)]
        rows.append(NotebookTime(
            nb, count(solutions_dir / f"{nb}.ipynb"), r.wall_s(nb),
            budget.ci_s if budget else None, budget.full_s if budget else None,
            sum(p for p in predicted if p is not None) if timings else None,
            sum(a for a in actual if a is not None) if timings else None))
    return rows
