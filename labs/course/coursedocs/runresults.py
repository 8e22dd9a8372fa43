"""Reading the results of one run: each notebook's saved findings and runs, the course run's
timings, where they came from, and the numbers written from them ("not measured" where a key
is absent, never a zero)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...results.records import load_sweep

ROOT = Path(__file__).resolve().parents[3]
NOT_MEASURED = "not measured"
RUN_FILE = "course_run.json"

# Notebooks the course has, in order; solutions/ may add more (they get a row from their title).
NOTEBOOKS = ("00_smoke", "01_provision", "02_bandwidth_ceiling", "03_continuous_batching",
             "03b_arrivals_and_goodput", "04_kv_cache_exhaustion", "05_bounded_admission",
             "06_prefix_caching", "07_capacity_and_cost")

# Results saved before 03 was split: 03b's keys lived in 03's file. Read only when 03b's own
# file is absent, so an older results folder still fills 03b's row.
LEGACY_SOURCE = {"03b_arrivals_and_goodput": "03_continuous_batching"}


class Results:
    """What one results folder holds: each notebook's findings, its runs, and the course run."""

    def __init__(self, results_dir: Path) -> None:
        self.dir = Path(results_dir)
        self._docs: dict[str, dict[str, Any]] = {}
        path = self.dir / RUN_FILE
        self.course_run: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.exists() else {})

    def doc(self, notebook: str) -> dict[str, Any]:
        """The notebook's saved JSON ({} when it has not saved one)."""
        if notebook not in self._docs:
            self._docs[notebook] = {}
            for name in (notebook, LEGACY_SOURCE.get(notebook)):
                path = self.dir / f"{name}.json" if name else None
                if path is not None and path.exists():
                    self._docs[notebook] = json.loads(path.read_text())
                    break
        return self._docs[notebook]

    def findings(self, notebook: str) -> dict[str, Any]:
        return self.doc(notebook).get("findings") or {}

    def runs(self, notebook: str) -> list[Any]:
        """The notebook's raw runs (`labs.results.records.RunResult`), [] when none were saved."""
        path = self.dir / f"{notebook}-runs.json"
        return load_sweep(path) if path.exists() else []

    def wall_s(self, notebook: str) -> float | None:
        entry = self.course_run.get(notebook) or {}
        return entry.get("wall_s") if entry.get("ok") else None

    def run_scales(self) -> set[str]:
        return {e["scale"] for e in self.course_run.values() if e.get("scale")}

    def run_cpu(self) -> str | None:
        return next((e.get("cpu") for e in self.course_run.values() if e.get("cpu")), None)


def at(data: Any, *path: Any) -> Any:
    """data[path[0]][path[1]]..., or None where any step is missing (a key not measured)."""
    for key in path:
        if isinstance(data, Mapping):
            data = data.get(key)
        elif isinstance(data, Sequence) and not isinstance(data, str) and isinstance(key, int):
            data = data[key] if -len(data) <= key < len(data) else None
        else:
            return None
        if data is None:
            return None
    return data


def row(table: Any, column: str, value: Any) -> dict[str, Any] | None:
    """The first row of a saved table (list of dicts) whose `column` equals `value`."""
    if not isinstance(table, list):
        return None
    return next((r for r in table if isinstance(r, dict) and r.get(column) == value), None)


def num(value: Any, digits: int = 0, unit: str = "") -> str:
    """A number with thousands separators and its unit, or "not measured"."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return NOT_MEASURED
    text = f"{value:,.{digits}f}"
    return text + (unit if unit in ("x", "") else f" {unit}")


def secs(value: Any) -> str:
    """Seconds as people read them: 147 ms, 6.8 s, 1,277 s."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return NOT_MEASURED
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if abs(value) < 100 else f"{value:,.0f} s"


def pct(value: Any) -> str:
    """A fraction (0-1) as a percentage."""
    return num(value * 100 if isinstance(value, (int, float)) else None, 0, "%")


def minutes(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return NOT_MEASURED
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


def _source_line(r: Results) -> str:
    scales = r.run_scales()
    scale = ("full size" if scales == {"full"} else "CI size" if scales == {"ci"}
             else "mixed sizes (" + ", ".join(sorted(scales)) + ")" if scales else None)
    docs = [r.doc(nb) for nb in NOTEBOOKS if r.doc(nb)]
    dates = sorted({d.get("saved_at", "")[:10] for d in docs if d.get("saved_at")})
    hardware = next((d.get("hardware") for d in docs if d.get("hardware")), None)
    model = next((d.get("model") for d in docs if d.get("model")), None)
    vllm = next((d.get("vllm_version") for d in docs if d.get("vllm_version")), None)
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else NOT_MEASURED
    return (f"Generated by `python -m labs.course.coursedocs write` from one run: compute timed by "
            f"`python -m labs.course.coursedocs run` at {scale or 'a size not recorded (no course_run.json)'}"
            f" on {r.run_cpu() or hardware or NOT_MEASURED}; results saved {when} by "
            f"{model or NOT_MEASURED} on vLLM {vllm or NOT_MEASURED}. Do not edit by hand.")
