"""Checking the numbers a caller passes to a shape or a workload: each wrong one is a
`ConfigError` that names the field and the value given."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{what} must be a whole number of at least 1, not {value!r}.")
    return int(value)


def positive_float(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]  # any caller input, checked by the except
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} must be a number greater than 0, not {value!r}.")
    return number
