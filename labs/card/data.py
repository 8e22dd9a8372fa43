"""Layer 1: a results folder -> a summary (a JSON-ready dict: values and series per section).

`summarize` reads what notebooks 01-07 saved with `labs.experiments.save`; `load_summary`
also reads a card.json made elsewhere, so a comparison never re-parses HTML. A notebook not run yet,
a half-written file or a file from another schema version becomes a status and a message in the
summary, never an exception; only "no results at all" is an error. No matplotlib here.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import LabsError, ResultsError
from .extract import _num
from .sections import SECTIONS, Section

CARD_SCHEMA_VERSION = 1
READS_SCHEMA_VERSION = 1  # the version `labs.experiments.save` writes
Summary = dict[str, Any]


def _placeholder(section: Section) -> str:
    return (f"not measured yet — run notebook {section.number} "
            f"(notebooks/{section.notebook}.ipynb); it saves results/{section.notebook}.json")


def _read_section(section: Section, results_dir: Path) -> dict[str, Any]:
    path = results_dir / f"{section.notebook}.json"
    out: dict[str, Any] = {"notebook": section.notebook, "status": "missing",
                           "message": _placeholder(section), "saved_at": None, "profile": None,
                           "hardware": None, "model": None, "vllm_version": None,
                           "values": {row.key: None for row in section.rows}, "series": {}}
    if not path.exists():
        return out
    redo = f"re-run notebook {section.number} to write it again"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {**out, "status": "unreadable",
                "message": f"{path.name} could not be read ({err}); {redo}."}
    if not isinstance(doc, dict) or not isinstance(doc.get("findings", {}), dict):
        return {**out, "status": "unreadable",
                "message": f"{path.name} is not a saved notebook result; {redo}."}
    version = doc.get("schema_version")
    if version != READS_SCHEMA_VERSION:
        return {**out, "status": "schema",
                "message": f"{path.name} has schema_version {version!r}; this card reads "
                           f"version {READS_SCHEMA_VERSION}. Update the course (git pull) if "
                           f"the file is newer, or {redo}."}
    findings = doc.get("findings") or {}
    for key in ("saved_at", "profile", "hardware", "model", "vllm_version"):
        out[key] = doc.get(key) if isinstance(doc.get(key), str) else None
    runs = results_dir / f"{section.notebook}-runs.json"
    try:
        values, series = section.extract(findings, runs)
    except (LabsError, OSError, KeyError, TypeError, ValueError) as err:
        return {**out, "status": "unreadable",
                "message": f"{path.name} could not be read ({err}); {redo}."}
    out["values"].update(values)
    out["series"] = series
    absent = [k for k in section.needs if not _usable(findings.get(k))]
    if section.key == "kv" and series.get("ttft_s") and "ttft_by_request" in absent:
        absent.remove("ttft_by_request")  # recovered from the raw records
    if absent:
        out["status"] = "partial"
        out["message"] = (f"{path.name} is incomplete (no {', '.join(absent)}); "
                          f"{redo} in full.")
    else:
        out["status"], out["message"] = "ok", None
    return out


def _usable(value: object) -> bool:
    """A number, or a table with at least one row: what every saved finding should be."""
    return _num(value) is not None or (isinstance(value, list)
                                       and any(isinstance(r, dict) for r in value))


def has_data(section_summary: Mapping[str, Any]) -> bool:
    return section_summary.get("status") in ("ok", "partial")


def _one_of(values: list[str | None]) -> str | None:
    seen = [v for v in values if v]
    if not seen:
        return None
    distinct = list(Counter(seen))
    return distinct[0] if len(distinct) == 1 else " / ".join(distinct)


def _shown(folder: Path) -> str:
    """The folder relative to here when it is below here: a card names no home directory."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def summarize(results_dir: str | Path) -> Summary:
    """Read what the notebooks saved in `results_dir` into the card's summary (JSON-ready)."""
    results_dir = Path(results_dir).expanduser()
    if not results_dir.is_dir():
        raise ResultsError(f"no results folder at {results_dir}: run the notebooks first (each "
                           "saves to ./results), or pass --results DIR.")
    sections = {s.key: _read_section(s, results_dir) for s in SECTIONS}
    if all(v["status"] == "missing" for v in sections.values()):
        names = ", ".join(f"{s.notebook}.json" for s in SECTIONS)
        raise ResultsError(f"no saved results in {results_dir} (looked for {names}): run "
                           "notebooks 01-07 first, or pass --results DIR.")
    found = [v for v in sections.values() if has_data(v)]
    saved = sorted(v["saved_at"] for v in found if v["saved_at"])
    machine = {
        "hardware": _one_of([v["hardware"] for v in found]),
        "model": _one_of([v["model"] for v in found]),
        "vllm_version": _one_of([v["vllm_version"] for v in found]),
        "first_saved": saved[0] if saved else None,
        "last_saved": saved[-1] if saved else None,
        "results_dir": _shown(results_dir),
    }
    return {"schema_version": CARD_SCHEMA_VERSION, "kind": "card",
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
            "sections": sections}


def load_summary(path: str | Path) -> Summary:
    """A results folder, or the card.json of a card made on another machine."""
    path = Path(path).expanduser()
    if path.is_dir() or not path.exists():
        return summarize(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path} is not a card.json ({err}); pass a results folder or the "
                           "card.json that `python -m labs card` wrote.") from err
    if not isinstance(doc, dict) or doc.get("kind") != "card":
        raise ResultsError(f"{path} is not a card.json; pass a results folder or the card.json "
                           "that `python -m labs card` wrote.")
    if doc.get("schema_version") != CARD_SCHEMA_VERSION:
        raise ResultsError(f"{path} is a card of schema_version {doc.get('schema_version')!r}; "
                           f"this course reads {CARD_SCHEMA_VERSION}. Make the card again with "
                           "this version of the course.")
    if not isinstance(doc.get("machine"), dict):
        doc["machine"] = {}
    if not isinstance(doc.get("sections"), dict):
        doc["sections"] = {}
    for section in SECTIONS:  # a card from an older course may lack a section, or parts of one
        sec = doc["sections"].get(section.key)
        sec = sec if isinstance(sec, dict) else {"status": "missing"}
        sec.setdefault("notebook", section.notebook)
        sec.setdefault("message", _placeholder(section) if sec.get("status") == "missing" else None)
        for key in ("values", "series"):
            if not isinstance(sec.get(key), dict):
                sec[key] = {}
        doc["sections"][section.key] = sec
    return doc


def machine_label(summary: Mapping[str, Any]) -> str:
    m = summary.get("machine", {})
    date = (m.get("last_saved") or "")[:10]
    return " · ".join(p for p in (m.get("hardware") or "unknown machine", date) if p)


def _labels(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    labels = [machine_label(s) for s in summaries]
    if len(set(labels)) < len(labels):
        labels = [f"{chr(65 + i)}: {label}" for i, label in enumerate(labels)]
    return labels
