"""Make the learner's notebooks (notebooks/) from the solved ones (solutions/).

The solutions are the single source. In a cell tagged `exercise`:
  - a line ending in `# SOLUTION` keeps its left-hand side and loses its answer:
        ceiling_tok_s = bandwidth / weights  # SOLUTION      ->   ceiling_tok_s = ...  # your answer
  - so does `name = answer  # SOLUTION: why`: the reason goes with the answer;
  - lines between `# BEGIN SOLUTION` and `# END SOLUTION` become one `# your code here` line,
    or `# your reasoning here` when they are only comments (a prediction's reasoning).
Every other cell is copied as is, outputs and execution counts stripped. Check cells (tagged
`check`) call labs.checks, which says in words what is missing when an answer is still `...`.

    python -m labs.course.exercises           rewrite notebooks/ from solutions/
    python -m labs.course.exercises --check   exit 1 if notebooks/ is out of date (used by the
    tests)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOLUTION_LINE = re.compile(r"^(?P<indent>\s*)(?P<lhs>[^=#]+?)\s*=(?!=).*#\s*SOLUTION(?::.*)?\s*$")
SOLUTION_MARK = re.compile(r"#\s*SOLUTION\b")


def blank_exercise(source: str) -> str:
    out: list[str] = []
    block: list[str] | None = None  # the lines of an open BEGIN/END SOLUTION block
    begin = ""
    for line in source.splitlines():
        marker = line.strip()
        if marker == "# BEGIN SOLUTION":
            block, begin = [], line
            continue
        if marker == "# END SOLUTION":
            if block is None:
                raise ValueError("an `# END SOLUTION` has no `# BEGIN SOLUTION`")
            reasoning = all(not b.strip() or b.strip().startswith("#") for b in block)
            out.append(begin.replace("# BEGIN SOLUTION",
                                     "# your reasoning here" if reasoning else "# your code here"))
            block = None
            continue
        if block is not None:
            block.append(line)
            continue
        match = SOLUTION_LINE.match(line)
        if match:
            out.append(f"{match['indent']}{match['lhs']} = ...  # your answer")
        elif SOLUTION_MARK.search(line):
            raise ValueError(f"cannot blank a `# SOLUTION` line that is not `name = ...`: {line!r}")
        else:
            out.append(line)
    if block is not None:
        raise ValueError("a `# BEGIN SOLUTION` has no `# END SOLUTION`")
    return "\n".join(out)


def strip_outputs(nb: dict) -> dict:
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def exercise_notebook(solution: dict) -> dict:
    nb = json.loads(json.dumps(solution))  # deep copy
    for cell in nb["cells"]:
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = blank_exercise(source)
    return strip_outputs(nb)


def render(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def expected_twins(root: Path = ROOT) -> dict[Path, str]:
    twins = {}
    for path in sorted((root / "solutions").glob("*.ipynb")):
        solution = json.loads(path.read_text())
        twins[root / "notebooks" / path.name] = render(exercise_notebook(solution))
    return twins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check notebooks/ is in sync")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_twins().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"out of date: {names}; run `make notebooks`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
