"""The exercise notebooks are generated from the solutions and must stay in sync."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from labs.course import exercises

ROOT = Path(__file__).resolve().parent.parent


def test_solution_line_keeps_its_name() -> None:
    src = "x = 1\nceiling_tok_s = bw / weights  # SOLUTION\nprint(x)"
    assert exercises.blank_exercise(src) == "x = 1\nceiling_tok_s = ...  # your answer\nprint(x)"


def test_solution_block_is_removed() -> None:
    src = "a = 1\n    # BEGIN SOLUTION\n    b = 2\n    c = 3\n    # END SOLUTION\nd = 4"
    assert exercises.blank_exercise(src) == "a = 1\n    # your code here\nd = 4"


def test_a_solution_line_may_carry_its_reason() -> None:
    src = "my_gain = 12  # SOLUTION: 64 users share one step's fixed cost"
    assert exercises.blank_exercise(src) == "my_gain = ...  # your answer"


def test_a_block_of_reasoning_alone_asks_for_reasoning() -> None:
    src = "# BEGIN SOLUTION\n# 64 users share a step\n\n# END SOLUTION\nmy_gain = 12  # SOLUTION"
    assert exercises.blank_exercise(src) == "# your reasoning here\nmy_gain = ...  # your answer"


def test_a_solution_mark_that_cannot_be_blanked_is_refused() -> None:
    for src in ("print(answer)  # SOLUTION", "# SOLUTION: the answer is 12", "# END SOLUTION"):
        with pytest.raises(ValueError):
            exercises.blank_exercise(src)


def test_unclosed_block_is_refused() -> None:
    with pytest.raises(ValueError):
        exercises.blank_exercise("# BEGIN SOLUTION\nx = 1")


def test_exercise_cells_in_solutions_actually_hide_something() -> None:
    for path, text in exercises.expected_twins().items():
        assert "# SOLUTION" not in text and "# BEGIN SOLUTION" not in text, path


def test_notebooks_are_in_sync_with_solutions() -> None:
    assert exercises.main(["--check"]) == 0, "run `make notebooks`"


# --- No answer before its exercise -------------------------------------------------------------
# An exercise asks for a number the learner has to work out. If an earlier cell of the same
# notebook already assigns the answer's name or prints it, the exercise is answered by scrolling
# up. An exercise's answer variables are the names its cell assigns, in the learner's notebook
# (notebooks/: `name = ...  # your answer`). Earlier cells may *use* such a name only if they
# neither assign it nor print it (print(), display(), an f-string, or the cell's last line).

# (notebook, answer name): why the earlier cell is left as it is, for a later session to remove.
# Names only: a value printed earlier under another name is not caught here, so each check
# computes its own expected value and the notebooks print none before the exercise asks.
KNOWN_LEAKS: dict[tuple[str, str], str] = {}


def _cell_tree(source: str) -> ast.Module:
    """The cell as Python; IPython's `%magic` and `!shell` lines do not parse and are dropped."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _assigned(tree: ast.AST) -> set[str]:
    names = {n.id for n in ast.walk(tree)
             if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(tree)
              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return names


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _printed(tree: ast.Module) -> set[str]:
    shown: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("print", "display")):
            shown |= set().union(*(_names(a) for a in (*node.args, *node.keywords)))
        elif isinstance(node, ast.FormattedValue):
            shown |= _names(node.value)
    if tree.body and isinstance(tree.body[-1], ast.Expr):  # the cell's value is displayed
        last = tree.body[-1].value
        if not isinstance(last, ast.Call):  # a call's own arguments are not what it shows
            shown |= _names(last)
    return shown


def answer_leaks(path: Path) -> list[tuple[str, str, str]]:
    """(answer name, where its exercise is, what an earlier cell does with it)."""
    cells = json.loads(path.read_text())["cells"]
    code = [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    trees = {i: _cell_tree("".join(c["source"])) for i, c in code}
    found = []
    for i, cell in code:
        if "exercise" not in cell.get("metadata", {}).get("tags", []):
            continue
        for name in sorted(_assigned(trees[i])):
            for j, _ in code:
                if j >= i:
                    break
                what = [w for w, names in (("assigns", _assigned(trees[j])),
                                           ("prints", _printed(trees[j]))) if name in names]
                if what:
                    found.append((name, f"exercise cell {i}", f"cell {j} {' and '.join(what)} it"))
    return found


def test_no_answer_is_assigned_or_printed_before_its_exercise() -> None:
    leaks, expected = [], set()
    for path in sorted((exercises.ROOT / "notebooks").glob("*.ipynb")):
        for name, exercise, earlier in answer_leaks(path):
            if (path.name, name) in KNOWN_LEAKS:
                expected.add((path.name, name))
            else:
                leaks.append(f"{path.name}: `{name}` ({exercise}): {earlier}")
    assert not leaks, "answers given away before the exercise asks:\n" + "\n".join(leaks)
    stale = set(KNOWN_LEAKS) - expected
    assert not stale, f"KNOWN_LEAKS lists leaks that are gone, remove them: {sorted(stale)}"


def test_the_leak_finder_sees_assignments_and_prints(tmp_path: Path) -> None:
    def cell(source: str, tags: tuple[str, ...] = ()) -> dict:
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source}

    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"cells": [
        cell("rate = 3\nprint(f'{gain:.1f}')"), cell("other = rate * gain\nother"),
        cell("top\n"), cell("labs.checks.gain(gain)"),
        cell("gain = ...  # your answer\nrate = ...  # your answer\ntop = ...  # your answer",
             ("exercise",))]}))
    assert answer_leaks(notebook) == [
        ("gain", "exercise cell 4", "cell 0 prints it"),
        ("rate", "exercise cell 4", "cell 0 assigns it"),
        ("top", "exercise cell 4", "cell 2 prints it")]


def _learner_blanks(source: str) -> set[str]:
    """Names a learner's exercise cell leaves undefined or `...`: the left-hand sides of
    `# SOLUTION` lines, and names assigned only inside a BEGIN/END SOLUTION block."""
    names: set[str] = set()
    inside, block = False, list[str]()
    for line in source.splitlines():
        marker = line.strip()
        if marker == "# BEGIN SOLUTION":
            inside, block = True, []
        elif marker == "# END SOLUTION":
            inside = False
            names |= _assigned(_cell_tree("\n".join(block)))
        elif inside:
            block.append(line.strip())
        elif re.search(r"#\s*SOLUTION\b", line):
            names |= _assigned(_cell_tree(line.split("#")[0].strip()))
    return names


def _blank_uses(cells: list[dict]) -> list[str]:
    """Cells (index: names) that compute with an exercise's blanked answer."""
    problems, blanked = [], set()
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        tags = cell.get("metadata", {}).get("tags", [])
        if "exercise" in tags:
            blanked |= _learner_blanks(source)
            continue
        tree = _cell_tree(source)
        passed: set[int] = set()
        if {"check", "prediction"} & set(tags):  # the answer may be handed to the call
            passed = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call)
                      for a in [*n.args, *(k.value for k in n.keywords)]}
        for fn in ast.walk(tree):  # a parameter of the same name is another variable
            if isinstance(fn, ast.Lambda | ast.FunctionDef):
                params = {a.arg for a in fn.args.args}
                passed |= {id(n) for n in ast.walk(fn)
                           if isinstance(n, ast.Name) and n.id in params}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Load) and n.id in blanked and id(n) not in passed}
        used -= _assigned(tree)  # a cell that sets the name itself is fine
        if used:
            problems.append(f"cell {i}: uses {sorted(used)}")
    return problems


def test_no_later_cell_of_a_learner_notebook_uses_a_blanked_answer() -> None:
    """In notebooks/, an exercise's answer is `...` until the learner writes it. A later cell
    other than its own check or the prediction score must not compute with it, or "Run All"
    stops there (02's check cell once divided by a blank)."""
    problems = [f"{path.name} {p}" for path in sorted((ROOT / "solutions").glob("*.ipynb"))
                for p in _blank_uses(json.loads(path.read_text())["cells"])]
    assert not problems, problems


def test_the_blank_finder_sees_a_check_cell_computing_with_the_answer() -> None:
    def code(source: str, *tags: str) -> dict:
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": [source]}

    cells = [code("x = 2 * y  # SOLUTION", "exercise"),
             code("check(x)\nshow(10 / x)", "check"),
             code("f = lambda x: x + 1\nprint(x)")]
    assert _blank_uses(cells) == ["cell 1: uses ['x']", "cell 2: uses ['x']"]
