"""The two ways to install the course must install the same thing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip_list if not r.startswith("-e")}
    assert listed == wanted, "environment.yml and pyproject.toml disagree"
    assert "python=3.11" in env["dependencies"]
    assert project["requires-python"] == ">=3.11"


def test_course_packages_are_all_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert {"jupyterlab", "openai", "httpx", "pandas", "matplotlib", "ipywidgets"} <= names


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme


def test_notebooks_are_committed_without_outputs() -> None:
    import json

    for path in list(ROOT.glob("solutions/*.ipynb")) + list(ROOT.glob("notebooks/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"], f"{path.name} has outputs; strip them"
                assert cell["execution_count"] is None, f"{path.name} has execution counts"
