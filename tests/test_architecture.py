"""docs/architecture.md's rule, held against the code: every import inside labs/ goes from a
package to one before it in the chain, never after (the front and `python -m labs` excepted)."""

from __future__ import annotations

import re
from pathlib import Path

LABS = Path(__file__).resolve().parent.parent / "labs"
# The chain, as docs/architecture.md writes it: "labs" is errors, settings, hardware, workload.
CHAIN = ["labs", "serving", "results", "load", "gateway", "observe", "model", "course"]
BOTTOM = {"errors", "settings", "hardware", "workload"}  # "labs" itself, as a module or a package
TOP = ["deploy", "card"]  # both may import the whole chain, neither the other
FRONT = {LABS / "__init__.py", LABS / "__main__.py"}
IMPORT = re.compile(r"^\s*from (\.+)([\w.]*) import \(?([\w, ]+)", re.M)


def _package(module: list[str], root: Path) -> str:
    top = module[1] if len(module) > 1 else ""
    return top if top and top not in BOTTOM and (root / top).is_dir() else "labs"


def _imports(path: Path, root: Path) -> list[list[str]]:
    """Each module `path` imports from inside labs (relative imports), as a dotted path."""
    package = ["labs", *path.relative_to(root).parent.parts]
    found = []
    for m in IMPORT.finditer(path.read_text()):
        base = package[: len(package) - (len(m[1]) - 1)]
        target = base + (m[2].split(".") if m[2] else [])
        names = [n.strip().split(" ")[0] for n in m[3].split(",") if n.strip()]
        found += [target] if m[2] else [[*target, n] for n in names]
    return found


def _rank(package: str) -> int:
    return CHAIN.index(package) if package in CHAIN else len(CHAIN)


def _violations(root: Path = LABS) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        if path in FRONT:
            continue
        here = _package(["labs", *path.relative_to(root).parts], root)
        for target in _imports(path, root):
            there = _package(target, root)
            wrong = (there in TOP and there != here) or _rank(there) > _rank(here)
            if wrong:
                bad.append(f"{path.relative_to(root.parent)} ({here}) imports "
                           f"{'.'.join(target)} ({there})")
    return bad


def test_every_import_goes_down_the_chain() -> None:
    assert _violations() == []


def test_workload_imports_only_errors_settings_and_itself() -> None:
    """Nearly every package imports `workload`, so it stays at the bottom with these two."""
    for path in sorted((LABS / "workload").rglob("*.py")):
        for target in _imports(path, LABS):
            assert target[1] in {"errors", "settings", "workload"}, (
                f"{path.relative_to(LABS.parent)} imports {'.'.join(target)}")


def test_the_rule_would_catch_an_import_going_up(tmp_path: Path) -> None:
    """The same reader on a tree where `serving` imports `model`: one violation, named."""
    for package in ("serving", "model"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "model" / "steps.py").write_text("X = 1\n")
    (tmp_path / "serving" / "server.py").write_text("from ..model.steps import X\n")
    assert [v.split(" imports ")[1] for v in _violations(tmp_path)] == ["labs.model.steps (model)"]


def test_the_chain_is_the_one_the_docs_write() -> None:
    text = (LABS.parent / "docs" / "architecture.md").read_text()
    written = "`labs` (errors, settings, hardware, workload) → " + " → ".join(
        f"`{p}`" for p in CHAIN[1:])
    assert " ".join(written.split()) in " ".join(text.split())
