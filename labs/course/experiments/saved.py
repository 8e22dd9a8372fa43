"""A notebook's findings and runs, saved to the results folder and read back.

`save` writes what a notebook found (for the results card and a neighbour's machine) and its
raw runs; `load_runs` gives a later notebook those runs back instead of running them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ...errors import ConfigError
from ...results.records import RunResult, load_sweep, save_sweep, sweep_frame
from ...settings import Settings
from .recipes import Experiment


def save(name: str, findings: dict[str, object], runs: Sequence[RunResult] = (),
         results_dir: Path | None = None) -> Path:
    """Write a notebook's findings (numbers, small tables) to `<results>/<name>.json` and its
    raw runs beside it, so a learner can compare with a neighbour's machine or re-analyse.
    """
    out_dir = results_dir or Settings.from_env().results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = runs[0].metadata if runs else {}
    doc = {
        "schema_version": 1,
        "notebook": name,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": meta.get("model"), "vllm_version": meta.get("vllm_version"),
        "hardware": meta.get("hardware"), "profile": meta.get("profile"),
        "findings": {k: _jsonable(v) for k, v in findings.items()},
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if runs:
        save_sweep(list(runs), out_dir / f"{name}-runs.json")
    return path


def load_runs(name: str, results_dir: Path | None = None) -> Experiment:
    """The runs an earlier notebook saved with `save(name, ..., runs)`, and their table: 03b
    analyses 03's sweep request by request instead of running it again."""
    path = (results_dir or Settings.from_env().results_dir) / f"{name}-runs.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run notebook {name} first (it saves its runs "
                          "there), then this cell again.")
    runs = load_sweep(path)
    return Experiment(sweep_frame(runs), tuple(runs))


def _jsonable(value: object) -> object:
    if isinstance(value, pd.DataFrame):
        return value.astype(object).where(value.notna(), None).to_dict(orient="records")
    return value
