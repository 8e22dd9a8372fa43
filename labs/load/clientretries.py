"""What the `openai` client does with a 503: K streaming requests at once, with its default
retries and without them, each attempt recorded.

`AsyncOpenAI` retries a 503 (and 408, 409, 429, any 5xx and a lost connection)
`max_retries` times, 2 by default, and before each retry sleeps what the answer's
`retry-after-ms` or `Retry-After` says (up to a limit; otherwise its own 0.5-8 s backoff).
So a request the gateway refuses is sent up to three times, and a refused crowd comes back when
the header tells it to: together, if every refusal carries the same number. With
`max_retries=0` each refusal reaches the caller at once, who then decides.

Attempts are counted with httpx event hooks on the client's own `http_client`: every attempt
the client sends (retries included) passes the request hook, every answer it gets back passes
the response hook (when the status line and headers arrive: for a served stream, before its
tokens). Each request carries a header naming it (`x-labs-request`, which the course gateway
does not forward), so attempts are matched to the request they belong to.

    table = burst(conn.api_url, conn.api_key, conn.model, k=12, max_retries=2)
    summary({"default (max_retries=2)": table, "max_retries=0": other})
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .loadgen import run_blocking

REQUEST_HEADER = "x-labs-request"
DEFAULT_PROMPT = "Count from one to twenty, in words."


@dataclass
class _Request:
    sent_s: list[float] = field(default_factory=list)       # each attempt, when sent
    back_s: list[float] = field(default_factory=list)       # each answer, when it came back
    statuses: list[int] = field(default_factory=list)       # each answer's status
    outcome: str = "error"
    error: str = ""
    done_s: float = float("nan")


async def burst_async(base_url: str, api_key: str, model: str, k: int, *,
                      max_retries: int = 2, max_tokens: int = 32,
                      prompt: str = DEFAULT_PROMPT, timeout_s: float = 120.0) -> pd.DataFrame:
    """K streaming chat requests sent at the same instant through one `AsyncOpenAI(base_url,
    max_retries=...)`; one row per request: outcome (served: its stream ran to the end;
    refused: the client raised for a 503 or 429; error: anything else), the last status,
    attempts (what the server saw from it), when each answer came back (s after the start)
    and its status, and when the request ended for its caller (done_s)."""
    import openai  # heavy: openai only for the SDK's own retries

    requests = {i: _Request() for i in range(k)}
    start = time.perf_counter()

    def which(request: Any) -> _Request | None:
        name = request.headers.get(REQUEST_HEADER)
        return requests.get(int(name)) if name is not None and name.isdigit() else None

    async def on_request(request: Any) -> None:
        if (r := which(request)) is not None:
            r.sent_s.append(time.perf_counter() - start)

    async def on_response(response: Any) -> None:
        if (r := which(response.request)) is not None:
            r.back_s.append(time.perf_counter() - start)
            r.statuses.append(response.status_code)

    http = openai.DefaultAsyncHttpxClient(
        event_hooks={"request": [on_request], "response": [on_response]})
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries,
                                timeout=timeout_s, http_client=http)

    async def one(i: int) -> None:
        r = requests[i]
        try:
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens, stream=True, extra_headers={REQUEST_HEADER: str(i)})
            async for _ in stream:
                pass
            r.outcome = "served"
        except openai.APIStatusError as exc:
            r.outcome = "refused" if exc.status_code in (429, 503) else "error"
            r.error = f"{exc.status_code}"
        except openai.APIError as exc:
            r.error = type(exc).__name__
        r.done_s = time.perf_counter() - start

    try:
        await asyncio.gather(*(one(i) for i in range(k)))
    finally:
        await client.close()
        await http.aclose()
    return pd.DataFrame([
        {"request": i, "outcome": r.outcome,
         "status": r.statuses[-1] if r.statuses else None, "attempts": len(r.sent_s),
         "came_back_s": tuple(round(t, 2) for t in r.back_s), "statuses": tuple(r.statuses),
         "done_s": round(r.done_s, 3),
         "error": r.error}
        for i, r in requests.items()]).set_index("request")


def burst(base_url: str, api_key: str, model: str, k: int, **kwargs: Any) -> pd.DataFrame:
    """`burst_async` from sync code and notebooks (where a loop already runs)."""
    return run_blocking(lambda: burst_async(base_url, api_key, model, k, **kwargs))


def summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per client setting: requests, served, refused, errors, attempts (what the
    server was sent), retries (attempts beyond one per request), the distinct instants at
    which answers came back (to 0.1 s: a wave is many answers at one instant), and when the
    last request ended for its caller."""
    rows = {}
    for label, t in tables.items():
        back = sorted({round(s, 1) for times in t["came_back_s"] for s in times})
        rows[label] = {
            "requests": len(t), "served": int((t["outcome"] == "served").sum()),
            "refused": int((t["outcome"] == "refused").sum()),
            "errors": int((t["outcome"] == "error").sum()),
            "attempts": int(t["attempts"].sum()),
            "retries": int(t["attempts"].sum()) - len(t),
            "answers came back at (s)": tuple(back),
            "last done (s)": float(t["done_s"].max()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def compare(base_url: str, api_key: str, model: str, k: int,
            **kwargs: Any) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The same burst twice, one after the other: the client's default retries (2), then
    none. (summary, {label: per-request table})."""
    kwargs.pop("max_retries", None)
    tables = {label: burst(base_url, api_key, model, k, max_retries=retries, **kwargs)
              for label, retries in (("max_retries=2 (default)", 2), ("max_retries=0", 0))}
    return summary(tables), tables
