"""In a notebook, show a LabsError as the one sentence it is, not a traceback wall.

`import labs` calls `install()`: when running under IPython it registers a handler for
LabsError that shows `❌ <message>` (the message already says what to do) as the cell's
*error output*, a one-line traceback. It must be an error output, not a print: IPython does
not display what a custom handler returns, and nbmake decides a notebook failed by looking for
an error output. A printed message let a notebook stop half-way under nbmake and still pass
(tests/test_notebook.py keeps that from coming back). The cell fails, so "Run All" stops
there.
"""

from __future__ import annotations

from typing import Any

from ..errors import LabsError


def _show(shell: Any, etype: type, value: BaseException, tb: Any,
          tb_offset: int | None = None) -> list[str]:
    short = [f"❌ {type(value).__name__}: {value}"]
    shell._showtraceback(etype, value, short)  # publishes the error output (ipykernel)
    return short


def install() -> bool:
    try:
        from IPython import get_ipython  # optional: the gateway image has no IPython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc((LabsError,), _show)
    return True
