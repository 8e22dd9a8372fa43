"""What a load run measured: one raw record per request, and every figure derived from them.

Records keep raw timestamps (seconds from the run start, `time.perf_counter()`), never
pre-aggregated numbers, so any summary can be recomputed after loading a file, with other
SLOs or other percentiles, without running the load again. Definitions follow
`vllm bench serve` so that numbers can be compared with it:

    TTFT     first token arrival - send
    ITL      gaps between successive token arrivals (a chunk with non-empty text)
    TPOT     (e2e - TTFT) / (completion_tokens - 1): excludes the first token; None under 2
    goodput  completed requests per second that meet every SLO given (DistServe)

Token totals come from the server's `usage`, never from counting chunks: one chunk may carry
several tokens. Missing data is None, never 0, so "no answer" cannot pass for "instant".
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..workload import Shape, Workload, shape_from_dict

SCHEMA_VERSION = 1
ERROR_KINDS = ("connection", "http_4xx", "http_5xx", "shed", "timeout", "truncated", "protocol")
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it. Times are seconds from the run start."""

    index: int
    scheduled_s: float
    sent_s: float
    end_s: float
    token_times_s: tuple[float, ...] = ()
    max_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int | None = None
    finish_reason: str | None = None
    error_kind: str | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def first_token_s(self) -> float | None:
        return self.token_times_s[0] if self.token_times_s else None

    @property
    def lag_s(self) -> float:
        """How late the client sent it: a client that cannot keep up shows here."""
        return self.sent_s - self.scheduled_s

    @property
    def ttft_s(self) -> float | None:
        return None if not self.token_times_s else self.token_times_s[0] - self.sent_s

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.sent_s

    @property
    def itl_s(self) -> tuple[float, ...]:
        t = self.token_times_s
        return tuple(b - a for a, b in itertools.pairwise(t))

    @property
    def tpot_s(self) -> float | None:
        ttft, n = self.ttft_s, self.completion_tokens
        if ttft is None or n is None or n < 2:
            return None
        return (self.e2e_s - ttft) / (n - 1)

    @property
    def tok_s(self) -> float | None:
        """This user's output rate: completion tokens over the whole request time."""
        if self.completion_tokens is None or self.e2e_s <= 0:
            return None
        return self.completion_tokens / self.e2e_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["token_times_s"] = tuple(values.get("token_times_s") or ())
        return cls(**values)


@dataclass(frozen=True)
class SLO:
    """Service-level objectives, in seconds; a request is "good" when it meets all given."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"SLO {f.name} must be a number of seconds > 0, not {value!r}.")

    @property
    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def met_by(self, r: RequestRecord) -> bool:
        """vLLM's rule: TPOT of a 0/1-token answer counts as 0, so it passes a TPOT SLO."""
        if not r.ok:
            return False
        if self.ttft_s is not None and (r.ttft_s is None or r.ttft_s > self.ttft_s):
            return False
        if self.tpot_s is not None and (r.tpot_s or 0.0) > self.tpot_s:
            return False
        return self.e2e_s is None or r.e2e_s <= self.e2e_s


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The q-th percentile (linear interpolation, as numpy and vLLM), None with no data."""
    data = np.asarray(values, dtype=float)
    return None if data.size == 0 else float(np.percentile(data, q))


def mean(values: Sequence[float] | np.ndarray) -> float | None:
    data = np.asarray(values, dtype=float)
    return None if data.size == 0 else float(data.mean())


def _stats(name: str, values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    out = {f"{name}_mean": mean(values)}
    out.update({f"{name}_p{q}": percentile(values, q) for q in PERCENTILES})
    return out


def summarize(records: Sequence[RequestRecord], slo: SLO | None = None) -> dict[str, Any]:
    """Every headline figure of a run, computed from its raw records alone.

    duration_s is from the first send to the last end of any request, so failed requests
    still count as time spent; rates are per second of that duration.
    """
    ok = [r for r in records if r.ok]
    kinds = Counter(r.error_kind for r in records if not r.ok)
    duration = (max(r.end_s for r in records) - min(r.sent_s for r in records)
                if records else None)
    rate = (lambda n: n / duration) if duration else (lambda n: None)
    out_tokens = [r.completion_tokens for r in ok if r.completion_tokens is not None]
    shed = [r for r in records if r.error_kind == "shed"]
    slo = slo or SLO()
    summary: dict[str, Any] = {
        "requests": len(records),
        "ok": len(ok),
        "errors": {k: kinds[k] for k in ERROR_KINDS if kinds[k]},
        "duration_s": duration,
        "request_rate_rps": rate(len(ok)),
        "prompt_tokens_mean": mean([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
        "output_tokens": sum(out_tokens) if out_tokens else None,
        "agg_tok_s": rate(sum(out_tokens)) if out_tokens else None,
        "per_user_tok_s": mean([r.tok_s for r in ok if r.tok_s is not None]),
    }
    summary.update(_stats("ttft_s", [r.ttft_s for r in ok if r.ttft_s is not None]))
    summary.update(_stats("itl_s", [g for r in ok for g in r.itl_s]))
    summary.update(_stats("tpot_s", [r.tpot_s for r in ok if r.tpot_s is not None]))
    summary.update(_stats("e2e_s", [r.e2e_s for r in ok]))
    lags = [r.lag_s for r in records]
    summary["send_lag_s_p50"] = percentile(lags, 50)
    summary["send_lag_s_max"] = max(lags) if lags else None
    summary["slo"] = {k: v for k, v in asdict(slo).items() if v is not None} or None
    summary["goodput_rps"] = rate(sum(slo.met_by(r) for r in ok)) if slo.given else None
    summary["shed"] = len(shed)
    summary["time_to_shed_s_p50"] = percentile([r.e2e_s for r in shed], 50)
    summary["time_to_shed_s_max"] = max((r.e2e_s for r in shed), default=None)
    return summary


# --------------------------------------------------------------------------------------------
# A run


@dataclass(frozen=True)
class RunResult:
    """One load run: what was offered (shape, workload), where (metadata), and the records."""

    label: str
    shape: Shape
    workload: Workload
    metadata: dict[str, Any]
    records: tuple[RequestRecord, ...]
    schema_version: int = SCHEMA_VERSION

    def summary(self, slo: SLO | None = None) -> dict[str, Any]:
        return {"label": self.label, "concurrency": getattr(self.shape, "concurrency", None),
                **summarize(self.records, slo)}

    def to_frame(self) -> pd.DataFrame:
        """One row per request; the token arrival times stay in the JSON file."""
        rows = []
        for r in self.records:
            gaps = r.itl_s
            rows.append({
                "label": self.label, "index": r.index, "ok": r.ok,
                "error_kind": r.error_kind, "status": r.status,
                "scheduled_s": r.scheduled_s, "sent_s": r.sent_s, "lag_s": r.lag_s,
                "first_token_s": r.first_token_s, "end_s": r.end_s,
                "ttft_s": r.ttft_s, "tpot_s": r.tpot_s, "e2e_s": r.e2e_s,
                "itl_mean_s": mean(gaps), "itl_max_s": max(gaps) if gaps else None,
                "token_arrivals": len(r.token_times_s),
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "max_tokens": r.max_tokens, "tok_s": r.tok_s,
                "finish_reason": r.finish_reason, "retry_after_s": r.retry_after_s,
                "error": r.error,
            })
        return pd.DataFrame(rows)

    def to_dict(self, slo: SLO | None = None) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "kind": "run", "label": self.label,
            "shape": self.shape.to_dict(), "workload": self.workload.to_dict(),
            "metadata": self.metadata, "summary": self.summary(slo),
            "records": [r.to_dict() for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        _check_version(data)
        return cls(
            label=data["label"], shape=shape_from_dict(data["shape"]),
            workload=Workload.from_dict(data["workload"]), metadata=dict(data["metadata"]),
            records=tuple(RequestRecord.from_dict(r) for r in data["records"]),
            schema_version=int(data["schema_version"]),
        )

    def save(self, path: str | Path, slo: SLO | None = None) -> Path:
        """Write `path` (JSON: records, summary, metadata) and the same name with .csv."""
        path = Path(path)
        _write_json(path, self.to_dict(slo))
        self.to_frame().to_csv(path.with_suffix(".csv"), index=False)
        return path


def _check_version(data: Mapping[str, Any]) -> None:
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(f"result file schema_version={version!r} is not readable here "
                          f"(this toolkit reads up to {SCHEMA_VERSION}); update the labs package.")


def _clean(value: Any) -> Any:
    """JSON has no NaN or inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=1, allow_nan=False) + "\n")


def load(path: str | Path) -> RunResult:
    """Read a file written by `RunResult.save`."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") == "sweep":
        raise ConfigError(f"{path} holds a sweep of {len(data.get('runs', []))} runs; "
                          "read it with load_sweep().")
    return RunResult.from_dict(data)


# --------------------------------------------------------------------------------------------
# Sweeps


SWEEP_COLUMNS = (
    "label", "concurrency", "requests", "ok", "errors", "duration_s", "agg_tok_s",
    "per_user_tok_s", "request_rate_rps", "ttft_s_p50", "ttft_s_p95", "tpot_s_p50", "tpot_s_p95",
    "itl_s_p50", "e2e_s_p50", "e2e_s_p95", "goodput_rps", "shed",
)


def sweep_frame(runs: Iterable[RunResult], slo: SLO | None = None) -> pd.DataFrame:
    """One row per run: the table to plot throughput against latency across load levels."""
    rows = []
    for run in runs:
        s = run.summary(slo)
        s["errors"] = sum(s["errors"].values())
        rows.append({c: s.get(c) for c in SWEEP_COLUMNS})
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def save_sweep(runs: Sequence[RunResult], path: str | Path, slo: SLO | None = None) -> Path:
    """Write all runs to `path` (JSON) and every request of every run to the .csv beside it."""
    path = Path(path)
    table = sweep_frame(runs, slo)
    _write_json(path, {
        "schema_version": SCHEMA_VERSION, "kind": "sweep",
        "table": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
        "runs": [r.to_dict(slo) for r in runs],
    })
    frames = [r.to_frame() for r in runs]
    (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(
        path.with_suffix(".csv"), index=False)
    return path


def load_sweep(path: str | Path) -> list[RunResult]:
    """Read a file written by `save_sweep` (a single-run file gives a list of one)."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") != "sweep":
        return [RunResult.from_dict(data)]
    _check_version(data)
    return [RunResult.from_dict(r) for r in data["runs"]]
