"""Scaling on demand: the requests that arrive while a new replica starts, the weights'
download as a lower bound on a cold start, and `measure_cold_start`, the one function here
that talks to the server (the timing 07 starts from)."""

from __future__ import annotations

import time
from typing import Any

from ...errors import ConfigError, ServerError
from ...serving.profiles import get_profile
from ...settings import Settings
from ...workload import Closed, Workload
from .plan import _positive

# --------------------------------------------------------------------------------------------
# Scaling on demand


def arrivals_during(seconds: float, rate_rps: float) -> float:
    """Requests that arrive while a new replica starts (`seconds`) at `rate_rps` beyond what
    the running replicas serve: each waits for the start, or is shed (503)."""
    if seconds < 0:
        raise ConfigError(f"seconds must be >= 0, not {seconds!r}.")
    _positive("rate_rps", rate_rps)
    return seconds * rate_rps


def download_s(weight_bytes: float, link_gbit_s: float) -> float:
    """Seconds to copy the weights over a link of `link_gbit_s` (decimal Gbit/s): a lower
    bound for a cold replica without the weights on local disk."""
    _positive("weight_bytes", weight_bytes)
    _positive("link_gbit_s", link_gbit_s)
    return weight_bytes * 8 / (link_gbit_s * 1e9)


def measure_cold_start(profile: str = "naive", settings: Any = None) -> tuple[
        dict[str, Any] | None, list[Any]]:
    """Stop this port's server, start `profile` again and time it: (timings, [the first
    request's run]). Timings: `stop_s` (not counted), `start_to_ready_s` (until /health
    answers), `start_to_first_token_s` (until one request's first token arrives), and
    `enforce_eager` (a start that compiles nothing). (None, []) when LABS_BASE_URL names a
    server this notebook cannot restart."""
    from ...load import loadgen  # heavy: httpx only for the live cold start
    from ...serving.connect import connect  # heavy: httpx only for the live cold start
    from ...serving.server import ensure_server, stop  # heavy: httpx only for the live cold start

    settings = settings or Settings.from_env()
    if settings.base_url_override:
        return None, []
    t0 = time.perf_counter()
    stop(settings)
    t_start = time.perf_counter()
    ensure_server(profile, settings)
    t_ready = time.perf_counter()
    first = loadgen.run_sync(Closed(1, requests=1), Workload(max_tokens=16), conn=connect(),
                             progress=False, label="first request after a cold start")
    record = first.records[0]
    if not record.ok:
        raise ServerError(f"the first request after a cold start failed: {record.error}")
    t_first = first.metadata["perf_counter_t0"] + record.first_token_s
    return {"stop_s": t_start - t0, "start_to_ready_s": t_ready - t_start,
            "start_to_first_token_s": t_first - t_start,
            "enforce_eager": "--enforce-eager" in get_profile(profile).flags(settings.backend)
            }, [first]
