"""Notebook 02's lesson: one stream cannot decode faster than memory delivers its weights."""

from __future__ import annotations

import math

from . import require

# How far above its ceiling a measured stream may come before the lesson fails. The ceiling
# is the measured bandwidth over the bytes a step reads; the bandwidth is the best of a few
# timed reads, a few percent off what the kernels of one step reach on a quiet machine
# (more on a GPU, where a copy loop and a fused kernel stream memory differently). 5 % is
# beyond that error; a stream faster still means an input of the ceiling is wrong (a low
# bandwidth figure, the wrong dtype, a quantized model), the article's own mistake.
CEILING_TOLERANCE = 0.05


def single_stream_below_ceiling(
        measured_tok_s: float, ceiling_tok_s: float,
        tolerance: float = CEILING_TOLERANCE) -> dict[str, float | int | str]:
    """One stream's decode speed (1 / TPOT) is at or below `bandwidth / bytes per step`.

    A stream may come up to `tolerance` above the ceiling (the measured bandwidth's own
    error, see `CEILING_TOLERANCE`); on a CPU the stream is far below it (~40 %) and on the
    article's GPU ~85 %, so no noise of a TPOT median crosses that line. Returns the
    measured speed, the ceiling and their ratio."""
    numbers: dict[str, float | int | str] = {
        "measured_tok_s": float(measured_tok_s), "ceiling_tok_s": float(ceiling_tok_s),
        "fraction_of_ceiling": (measured_tok_s / ceiling_tok_s if ceiling_tok_s > 0
                                else float("nan")),
        "allowed_fraction": 1 + tolerance}
    require("a measured stream and its ceiling are positive numbers",
            all(math.isfinite(v) and v > 0 for v in (measured_tok_s, ceiling_tok_s)), numbers)
    return require("one stream decodes no faster than the bandwidth ceiling",
                   measured_tok_s <= ceiling_tok_s * (1 + tolerance), numbers,
                   hint="A stream above its ceiling means an input of the ceiling is wrong: "
                        "re-measure the bandwidth on a quiet machine, and check the dtype "
                        "and the bytes a step reads.")
