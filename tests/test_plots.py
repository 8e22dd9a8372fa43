"""Plots that carry an argument of their own (more than a line of a table)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from labs.course import plots
from labs.results.records import RequestRecord, RunResult
from labs.workload import Burst, Closed, Workload


def _run(label: str, spans: list[tuple[float, float]], shape: object) -> RunResult:
    records = tuple(RequestRecord(index=i, scheduled_s=s, sent_s=s, end_s=e)
                    for i, (s, e) in enumerate(spans))
    return RunResult(label, shape, Workload(), {"model": "m", "hardware": "cpu"}, records)  # type: ignore[arg-type]  # a bare shape is enough here


def test_slot_timeline_lays_static_batches_end_to_end() -> None:
    static = [_run("batch 1", [(0, 1), (0, 4)], Burst(2)),
              _run("batch 2", [(0, 2), (0, 1)], Burst(2))]
    continuous = _run("continuous", [(0, 1), (0, 4), (1, 3), (3, 4)], Closed(2, requests=4))
    fig = plots.slot_timeline([*static, continuous], slots=2)
    static_ax, continuous_ax = fig.axes
    assert "static batches of 2: 6 s" in static_ax.get_title()  # 4 s, then 2 s
    assert "continuous batching, 2 slots: 4 s" in continuous_ax.get_title()
    assert len(static_ax.patches) == 4 and len(continuous_ax.patches) == 4
