"""In a notebook, show a LabsError as the one sentence it is, not a traceback wall.

`import labs` calls `install()`: when running under IPython it registers a handler for
LabsError that prints `❌ <message>` (the message already says what to do). The cell still
fails, so "Run All" stops there and nbmake still reports it.
"""

from __future__ import annotations

from typing import Any

from .errors import LabsError


def _show(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None):
    print(f"❌ {type(value).__name__}: {value}")
    return None


def install() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc((LabsError,), _show)
    return True
