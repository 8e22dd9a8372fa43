"""One way to show a result in a notebook: a small table, not a paragraph of f-strings.

Notebook cells stay short (one idea, a few lines) when the formatting lives here: a cell
builds a mapping of what it found, with the units in the names, and `show` turns it into a
table that reads at a glance and rounds numbers to what the measurement supports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import pandas as pd


def _cell(value: object, digits: int) -> object:
    if isinstance(value, bool) or not isinstance(value, Real):
        return value
    number = float(value)
    if not math.isfinite(number):
        return number
    if number == int(number):
        return int(number)
    return round(number, digits) if abs(number) >= 1 else float(f"{number:.{digits}g}")


def show(values: Mapping[str, object] | pd.DataFrame, *, title: str | None = None,
         digits: int = 2) -> pd.DataFrame:
    """`values` as a table to display: a mapping becomes one row per name ("value" column),
    a DataFrame is rounded. With `title`, the title is printed above it."""
    if title:
        print(title)
    if isinstance(values, pd.DataFrame):
        return values.round(digits)
    cells = {name: _cell(v, digits) for name, v in values.items()}
    return pd.DataFrame({"value": pd.Series(cells, dtype=object)})
