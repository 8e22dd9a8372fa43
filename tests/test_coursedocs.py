"""labs.course.coursedocs: the docs' numbers come from one results folder, and stay in step
with it."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from labs.course import coursedocs
from labs.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "coursedocs" / "run"
DOCS = tuple(coursedocs.DOC_REGIONS)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the three documents (with their markers) to write into."""
    for rel in DOCS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(FIXTURE, out)
    return out


def _write(results: Path, repo: Path, plots: bool = False) -> list[Path]:
    return coursedocs.write(results, repo, solutions_dir=ROOT / "solutions", plots=plots)


def _region(text: str, name: str) -> str:
    found = re.search(rf"<!-- coursedocs:{name} -->(.*?)<!-- /coursedocs:{name} -->", text, re.S)
    assert found, name
    return found.group(1)


def test_write_fills_every_marker(results: Path, repo: Path) -> None:
    _write(results, repo)
    for rel, names in coursedocs.DOC_REGIONS.items():
        text = (repo / rel).read_text()
        for name in names:
            assert _region(text, name).strip(), f"{rel}: {name} is empty"
    guide = (repo / "docs/instructor-guide.md").read_text()
    assert "1,277 s" in _region(guide, "notebook-times")  # 03's wall time in the fixture run
    assert "full size" in _region(guide, "notebook-times")
    assert "Fixture CPU" in _region(guide, "total-compute")


def test_the_docs_quote_the_same_numbers(results: Path, repo: Path) -> None:
    """One source: each notebook's key numbers are the same text in the README and the guide."""
    _write(results, repo)
    readme = _region((repo / "README.md").read_text(), "course-map")
    rows = _region((repo / "docs/self-paced-guide.md").read_text(), "self-paced-rows")
    r = coursedocs.Results(results)
    for nb in coursedocs.NOTEBOOKS:
        line = coursedocs.facts(r, nb)
        assert line in readme and line in rows, nb
    assert "669 ms / 21.6 s" in readme  # 04's first / last TTFT, from the fixture only


def test_write_is_idempotent(results: Path, repo: Path) -> None:
    first = _write(results, repo, plots=True)
    assert first, "the first write fills the regions"
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert _write(results, repo, plots=True) == []
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert (repo / "docs/reference/01_provision/ttft_by_prompt.png").exists()
    assert "01_provision/ttft_by_prompt.png" in (repo / "docs/reference/README.md").read_text()


def test_a_missing_key_reads_not_measured(results: Path, repo: Path) -> None:
    path = results / "07_capacity_and_cost.json"
    doc = json.loads(path.read_text())
    del doc["findings"]["cold_start"]
    path.write_text(json.dumps(doc))
    (results / "06_prefix_caching.json").unlink()
    _write(results, repo)
    readme = (repo / "README.md").read_text()
    assert "cold start not measured to the first token" in readme
    assert "not measured (no results/06_prefix_caching.json)" in readme
    assert "start-up time not measured" in readme  # the inline server-ready region


def test_a_missing_marker_is_an_error_naming_file_and_marker(results: Path, repo: Path) -> None:
    guide = repo / "docs/instructor-guide.md"
    guide.write_text(guide.read_text().replace("<!-- coursedocs:plan -->", ""))
    readme_before = (repo / "README.md").read_text()
    with pytest.raises(ConfigError, match=r"docs/instructor-guide\.md.*coursedocs:plan"):
        _write(results, repo)
    assert (repo / "README.md").read_text() == readme_before  # nothing half-written


def test_an_unclosed_or_unknown_region_is_an_error() -> None:
    values = {"plan": "x"}
    with pytest.raises(ConfigError, match=r"/coursedocs:plan"):
        coursedocs.fill("<!-- coursedocs:plan -->", values, "f.md", ("plan",))
    with pytest.raises(ConfigError, match="names no region"):
        coursedocs.fill("<!-- coursedocs:nope --><!-- /coursedocs:nope -->", values, "f.md", ())


def test_the_plan_fits_three_hours(results: Path) -> None:
    times = coursedocs.notebook_times(coursedocs.Results(results), ROOT / "solutions")
    plan = coursedocs.build_plan(times)
    assert plan.fits and plan.total_min <= 180, plan.rows
    assert plan.modes["04_kv_cache_exhaustion"] == "live"
    assert set(plan.modes) >= set(coursedocs.NOTEBOOKS)
    # A machine twice as slow cuts more, and still fits.
    slower = [dataclasses.replace(t, measured_s=2 * t.measured_s) for t in times]
    slow_plan = coursedocs.build_plan(slower)
    assert slow_plan.fits, slow_plan.rows
    rank = coursedocs.MODES.index
    assert all(rank(slow_plan.modes[nb]) >= rank(m) for nb, m in plan.modes.items())


def test_every_notebook_in_solutions_has_a_row(results: Path, repo: Path) -> None:
    _write(results, repo)
    stems = [p.stem for p in (ROOT / "solutions").glob("*.ipynb")] + list(coursedocs.NOTEBOOKS)
    regions = [_region((repo / "README.md").read_text(), "course-map"),
               _region((repo / "docs/self-paced-guide.md").read_text(), "self-paced-rows"),
               _region((repo / "docs/instructor-guide.md").read_text(), "notebook-times")]
    for stem in stems:
        for text in regions:
            assert f"| `{stem}` |" in text, stem


def test_counting_follows_the_stated_rule(tmp_path: Path) -> None:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["one two three"]},
             {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "source": ["x = ..."]},
             {"cell_type": "code", "metadata": {}, "source": ["y = 1"]},
             {"cell_type": "code", "metadata": {"tags": ["prediction"]},
              "source": ["score(mine=x)"]},
             {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "source": ["z = ..."]},
             {"cell_type": "code", "metadata": {"tags": ["check"]}, "source": ["check(z)"]}]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))
    counts = coursedocs.count(path)
    assert (counts.words, counts.code_cells, counts.predictions, counts.exercises) == (3, 5, 1, 1)
    rule = coursedocs.RULE
    assert counts.doing_min() == rule.prediction_min + rule.exercise_min
    assert not coursedocs.count(tmp_path / "absent.ipynb").found


def test_numbers_never_read_zero_for_missing_data() -> None:
    assert coursedocs.num(None) == coursedocs.secs(None) == coursedocs.pct(None) == "not measured"
    assert coursedocs.secs(0.147) == "147 ms" and coursedocs.secs(1277) == "1,277 s"
    assert coursedocs.at({"a": [{"b": 1}]}, "a", -1, "b") == 1
    assert coursedocs.at({"a": []}, "a", 0, "b") is None


def test_run_refuses_an_unknown_notebook_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABS_SCALE", "LABS_HEADLESS", "LABS_STRICT_CHECKS", "LABS_OWNER_PID"):
        monkeypatch.setenv(name, "1" if name != "LABS_SCALE" else "ci")
    with pytest.raises(ConfigError, match="no solution notebook named 99_nothing"):
        coursedocs.run("ci", ["99_nothing"])


def test_a_failing_cell_is_named(tmp_path: Path) -> None:
    cells: list[dict[str, Any]]
    cells = [{"id": "a", "cell_type": "code", "metadata": {}, "execution_count": None,
              "outputs": [], "source": "x = 1"},
             {"id": "b", "cell_type": "code", "metadata": {}, "execution_count": None,
              "outputs": [], "source": "raise ValueError('boom')"}]
    path = tmp_path / "fails.ipynb"
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": kernel},
                                "nbformat": 4, "nbformat_minor": 5}))
    failure = coursedocs.execute_notebook(path, cell_timeout_s=120)
    assert failure is not None and failure.startswith("cell 1 (`raise ValueError('boom')`)")
    assert "ValueError: boom" in failure
