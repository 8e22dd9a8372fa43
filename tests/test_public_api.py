"""Notebooks use only `labs`' public front; keep it importable and honest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import labs

ROOT = Path(__file__).resolve().parent.parent


def test_everything_exported_exists() -> None:
    for name in labs.__all__:
        assert hasattr(labs, name), name


def test_notebooks_need_no_path_hacks() -> None:
    for path in ROOT.glob("solutions/*.ipynb"):
        source = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        assert "sys.path" not in source, path.name
        assert re.search(r"^import labs", source, re.M), f"{path.name} should `import labs`"
