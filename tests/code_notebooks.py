"""Notebooks of code cells written by a test (the browser's and nbmake's own fixtures)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def write_code_notebook(path: Path, cells: Sequence[str]) -> None:
    """A notebook of `cells`, each one code cell, never run, for the default Python kernel."""
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                   "outputs": [], "source": src} for i, src in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}))
