"""A LabsError in a notebook is one line for a person and a failure for nbmake.

Runs nbmake, as `make test` does, on a two-cell notebook whose first cell raises a LabsError.
Before the fix the handler only printed: the notebook stopped at that cell and still passed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from code_notebooks import write_code_notebook


def _notebook(path: Path, marker: Path) -> None:
    cells = [
        "import labs\nraise labs.ConfigError('the profile is wrong; pick another')",
        f"open({str(marker)!r}, 'w').write('reached')",
    ]
    write_code_notebook(path, cells)


def test_a_labs_error_fails_the_notebook_under_nbmake_in_one_line(tmp_path: Path) -> None:
    notebook, marker = tmp_path / "raises.ipynb", tmp_path / "reached"
    _notebook(notebook, marker)
    out = subprocess.run([sys.executable, "-m", "pytest", str(notebook), "--nbmake", "-q",
                          "-p", "no:cacheprovider", "-p", "no:randomly"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "1 failed" in out.stdout
    assert "ConfigError: the profile is wrong; pick another" in out.stdout
    assert not marker.exists(), "the cells after the error must not run"
