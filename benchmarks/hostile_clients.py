"""Does the gateway hold against clients that misbehave? Every answer documented, nothing lost,
no 5xx but a documented 503, and its memory within the bound it states.

Run it against the live `gateway` profile (a real vLLM engine behind the course gateway):

    python benchmarks/hostile_clients.py                  # starts the `gateway` profile (~40 s)
    python -m labs serve gateway                          # or against one that runs already:
    python benchmarks/hostile_clients.py --url http://127.0.0.1:8000 \\
        --upstream http://127.0.0.1:8001 --json           # the gateway, and the engine behind it

`--upstream` (the engine) adds the drain case, which SIGTERMs a gateway of its own (N = 1,
M = 1) in front of that engine; without it the case is skipped, said so. The key is the
course's (LABS_API_KEY). It takes about a minute, most of it waiting out the gateway's
header timeout (10 s by default) and its slowest cases.

One client per class of misbehaviour, each with the answer the gateway documents:

    malformed JSON, 8 MiB body, n=64, 32 prompts, wrong key, /tokenize without a key   4xx
    slow headers        connections holding most of max_header_bytes, unfinished     408
    idle connections    max_connections open and silent, then more                   closed
    many slow bodies    max_body_reads bodies of almost max_body_bytes, stalled      503 beyond
    heavy JSON          N requests of nested arrays (45x their bytes once parsed)    200
    bad header bytes    NUL, a space in a name, too long, not ASCII                  400/431/200
    pathological JSON   deep nesting, not UTF-8, a lone surrogate, 5,000 digits      400
    budget shapes       fields the endpoint ignores / uses, prompt_embeds            200/413/400
    unauthenticated     300 /readyz and 100 /version at once, no key                 200, no fd kept
    redirect Host       GET /v1/models/ with Host: evil.example                     404, no Location
    300 requests at once, a client that stops reading, one that leaves mid-stream
    drain (--upstream)  SIGTERM, one streaming and one waiting: the waiter 503 at once, the
                        stream whole or ended by an error event

Then: the gateway is still ready and empty, every request it admitted has its one outcome
(admitted = completed + disconnected + upstream errors + failed), and its resident memory
(`process_resident_memory_bytes`, sampled while the slow clients hold it) stayed within
`gateway_memory_bound_bytes` (labs.gateway.bound): printed side by side.

tests/test_gateway_live.py runs it against the session's engine and asserts on its JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

BURST = 300
MIB = 1024 * 1024


# An answer far longer than any case holds it, within every profile's max-model-len (the CPU
# `gateway` profile's engine has 1,280: a prompt plus 2,000 would be refused with a 400).
LONG_ANSWER = 1000

@dataclass
class Case:
    """One hostile client: what it sent, what the gateway is documented to answer, and what
    it did answer (statuses as `status: count`, reasons from the error bodies)."""

    name: str
    expected: str
    statuses: dict[str, int]
    reasons: list[str]
    ok: bool
    note: str = ""


def _reason(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"].get("reason", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def _single(name: str, expected_status: int, expected_reason: str,
            resp: httpx.Response) -> Case:
    reason = _reason(resp)
    return Case(name, f"{expected_status} {expected_reason}", {str(resp.status_code): 1},
                [reason], resp.status_code == expected_status and reason == expected_reason)


def _many(name: str, expected: str, got: list[tuple[int, str]], ok: bool,
          note: str = "") -> Case:
    return Case(name, expected, dict(Counter(str(s) for s, _ in got)),
                sorted({r for _, r in got if r}), ok, note)


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Count to ten."}],
            "max_tokens": 16, **extra}


class Gateway:
    """The gateway under test: its URL, the course key, the served model and its limits."""

    def __init__(self, url: str, key: str, model: str) -> None:
        self.url, self.key, self.model = url, key, model
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.auth = {"Authorization": f"Bearer {key}"}
        health = self.health()
        self.limits: dict[str, Any] = health.get("limits", {})
        self.n, self.m = health["max_in_flight"], health["max_queue"]

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=10).json()

    def metrics(self) -> Any:
        from labs.observe.metrics import Snapshot

        return Snapshot.parse(httpx.get(self.url + "/metrics", timeout=10).text)

    def limit(self, name: str, default: Any) -> Any:
        value = self.limits.get(name)
        return default if value is None else value

    def head(self, path: str, length: int, *, extra: bytes = b"") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer "
                f"{self.key}\r\nContent-Type: application/json\r\nContent-Length: "
                f"{length}\r\n").encode() + extra + b"\r\n"


class Memory:
    """The gateway's resident memory, sampled while hostile clients hold it, and its bound."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        snap = gw.metrics()
        self.bound = snap.value("gateway_memory_bound_bytes", term="total") or 0.0
        self.base = snap.value("gateway_memory_bound_bytes", term="base") or 0.0
        self.before = snap.value("process_resident_memory_bytes") or 0.0
        self.samples: dict[str, float] = {}

    def sample(self, during: str) -> None:
        rss = self.gw.metrics().value("process_resident_memory_bytes") or 0.0
        self.samples[during] = max(rss, self.samples.get(during, 0.0))

    def report(self) -> dict[str, Any]:
        peak = max(self.samples.values(), default=self.before)
        return {"rss_before_mib": round(self.before / MIB, 1),
                "rss_peak_mib": round(peak / MIB, 1),
                "growth_mib": round((peak - self.before) / MIB, 1),
                "bound_mib": round(self.bound / MIB, 1),
                "bound_growth_mib": round((self.bound - self.base) / MIB, 1),
                "by_case_mib": {k: round(v / MIB, 1) for k, v in self.samples.items()},
                "within": bool(self.bound) and peak <= self.bound
                and peak - self.before <= self.bound - self.base}


# --------------------------------------------------------------------------------------------
# Raw connections (asyncio streams): what an HTTP client library would not send


async def _connect(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(gw.host, gw.port)


async def _until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes | None:
    """All the server sends until it closes; None if it is still open after `timeout_s`."""
    out = b""
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return out


def _status(reply: bytes | None) -> tuple[int, str]:
    """(status, reason) of a raw reply; (0, 'closed') for none, (-1, 'open') if it hung."""
    if reply is None:
        return -1, "open"
    if not reply:
        return 0, "closed"
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, str(json.loads(body)["error"].get("reason", ""))
    except (ValueError, KeyError, TypeError):
        return status, ""


def _close(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()


async def slow_headers(gw: Gateway, memory: Memory) -> Case:
    """Connections that each send most of max_header_bytes of a head and never finish it:
    the C x H term. Each must get 408 at header_timeout_s."""
    count = max(1, min(gw.limit("max_connections", 2048) - 16, 2000))
    pad = max(0, gw.limit("max_header_bytes", 16384) - 1024)
    timeout_s = gw.limit("header_timeout_s", 10.0)
    conns = await asyncio.gather(*(_connect(gw) for _ in range(count)))
    for _, w in conns:
        w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad)
    await asyncio.gather(*(w.drain() for _, w in conns))
    await asyncio.sleep(min(2.0, timeout_s / 3))
    await asyncio.to_thread(memory.sample, "slow headers")
    got = [_status(r) for r in await asyncio.gather(
        *(_until_closed(r, timeout_s + 10) for r, _ in conns))]
    _close([w for _, w in conns])
    ok = all(s == 408 and r == "header_timeout" for s, r in got)
    return _many(f"slow headers x{count} ({pad:,} B each)", "408 header_timeout", got, ok)


async def idle_connections(gw: Gateway, memory: Memory) -> Case:
    """max_connections open and silent, then 20 more: those are closed at once, the rest
    after header_timeout_s, all without an answer (nothing was asked)."""
    limit = gw.limit("max_connections", 2048)
    timeout_s = gw.limit("header_timeout_s", 10.0)
    held = await asyncio.gather(*(_connect(gw) for _ in range(limit - 2)))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(memory.sample, "idle connections")
    extra = [await _connect(gw) for _ in range(22)]
    started = time.monotonic()
    early = await asyncio.gather(*(_until_closed(r, 2.0) for r, _ in extra))
    refused_at_once = sum(reply == b"" for reply in early)
    late = [r for (r, _), reply in zip(extra, early) if reply is None]  # accepted, idle
    rest = await asyncio.gather(*(_until_closed(r, timeout_s + 10)
                                  for r in [r for r, _ in held] + late))
    took = time.monotonic() - started
    _close([w for _, w in held + extra])
    got = [_status(r) for r in [e for e in early if e is not None] + list(rest)]
    ok = refused_at_once >= 18 and all(r == b"" for r in rest)
    return _many(f"idle connections x{limit + 20}", "closed unanswered (20 at once)", got, ok,
                 f"{refused_at_once} closed at once, the rest after {took:.1f} s")


async def many_slow_bodies(gw: Gateway, memory: Memory) -> Case:
    """max_body_reads bodies of almost max_body_bytes, stalled before their end (the R x B
    term), then one more: 503 intake_full. Then they hang up (slots come back)."""
    reads = gw.limit("max_body_reads", 16)
    size = gw.limit("max_body_bytes", 1 << 20)
    sent = size - 4096
    conns = [await _connect(gw) for _ in range(reads)]
    for _, w in conns:
        w.write(gw.head("/v1/chat/completions", size) + b'{"padding": "' + b"x" * (sent - 13))
        await w.drain()
    deadline = time.monotonic() + 10
    while gw.health().get("body_reads", reads) < reads and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(memory.sample, "slow bodies")
    async with httpx.AsyncClient(timeout=30, headers=gw.auth) as client:
        one_more = await client.post(gw.url + "/v1/chat/completions", json=_chat(gw.model))
    _close([w for _, w in conns])
    await asyncio.sleep(0.5)
    freed = gw.health().get("body_reads", 0) == 0
    got = [(one_more.status_code, _reason(one_more))]
    ok = (one_more.status_code == 503 and _reason(one_more) == "intake_full"
          and "retry-after" in one_more.headers and freed)
    return _many(f"slow bodies x{reads} (+1)", "503 intake_full for the one more", got, ok)


def heavy_json(gw: Gateway, memory: Memory) -> Case:
    """N requests, each about 90 % of max_body_bytes of deeply nested one-element arrays
    (the worst shape for json.loads: ~45x its bytes), streaming at once: all 200."""
    size = int(gw.limit("max_body_bytes", 1 << 20) * 0.9)
    item = "[" * 20 + "0" + "]" * 20
    padding = "[" + ",".join([item] * (size // (len(item) + 1))) + "]"
    body = json.dumps(_chat(gw.model, stream=True, max_tokens=64)).encode()[:-1] \
        + b', "padding": ' + padding.encode() + b"}"
    results: list[tuple[int, str]] = []

    def one() -> None:
        try:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", content=body,
                              headers={**gw.auth, "content-type": "application/json"},
                              timeout=300) as resp:
                text = resp.read().decode(errors="replace")
            results.append((resp.status_code, "" if text.rstrip().endswith("[DONE]")
                            else "incomplete"))
        except httpx.HTTPError as exc:
            results.append((0, type(exc).__name__))

    threads = [threading.Thread(target=one) for _ in range(gw.n)]
    for t in threads:
        t.start()
    for _ in range(10):
        memory.sample("heavy JSON")
        time.sleep(0.2)
    for t in threads:
        t.join(300)
    ok = all(s == 200 and not r for s, r in results)
    return _many(f"heavy JSON x{gw.n} ({len(body) / MIB:.1f} MiB each)", "200 whole stream",
                 results, ok)


async def bad_header_bytes(gw: Gateway) -> Case:
    big = gw.limit("max_header_bytes", 16384) + 1024
    frames = [
        (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", 400, "bad_request"),
        (b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400, "bad_request"),
        # no end to it: all it sends is read before the 431, so closing resets nothing
        (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * big, 431, "header_too_large"),
    ]
    body = json.dumps(_chat(gw.model)).encode()
    frames.append((gw.head("/v1/chat/completions", len(body),
                           extra=b"User-Agent: caf\xe9/1.0\r\nConnection: close\r\n") + body,
                   200, ""))
    got, ok = [], True
    for frame, status, reason in frames:
        reader, writer = await _connect(gw)
        writer.write(frame)
        await writer.drain()
        answer = _status(await _until_closed(reader, 120))
        writer.close()
        got.append(answer)
        ok &= answer == (status, reason)
    return _many("bad header bytes", "400 bad_request x2, 431, 200 (not ASCII: forwarded)",
                 got, ok)


def pathological_json(gw: Gateway) -> Case:
    chat = "/v1/chat/completions"
    bodies = [
        (chat, b"[" * 100_000 + b"]" * 100_000, "invalid"),
        (chat, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid"),
        (chat, b'{"messages": [{"role": "user", "content": "hi"}], "seed": '
         + b"9" * 5000 + b"}", "invalid"),
        (chat, b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
         b'"n": {"a": 1}}', "unsupported"),
        ("/v1/completions", b'{"prompt": [[1, 2], [3]]}', "unsupported"),
        ("/v1/completions", b"", "invalid"),
        ("/v1/completions", b"null", "invalid"),
    ]
    if gw.limits.get("max_prompt_tokens"):  # written out for counting: a lone surrogate
        bodies.append((chat, b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                       "invalid"))
    got, ok = [], True
    with httpx.Client(timeout=60, headers={**gw.auth, "content-type": "application/json"}) as h:
        for path, raw, reason in bodies:
            resp = h.post(gw.url + path, content=raw)
            got.append((resp.status_code, _reason(resp)))
            message = resp.text
            ok &= resp.status_code == 400 and _reason(resp) == reason and not any(
                leak in message for leak in ("Expecting", "Traceback", "codec", "Exceeds"))
    return _many("pathological JSON", "400, no decoder text", got, ok)


def budget_shapes(gw: Gateway) -> Case:
    """The prompt budget counts what each endpoint renders: a field it ignores is not
    counted, one it uses is; prompt_embeds is refused (several: always; one: uncountable)."""
    budget = gw.limits.get("max_prompt_tokens")
    chat, completions = gw.url + "/v1/chat/completions", gw.url + "/v1/completions"
    long = "lorem ipsum " * (2 * (budget or 1024))  # about 4x the budget in tokens
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (completions, {"model": gw.model, "prompt": "Hi", "max_tokens": 4,
                       "prompt_embeds": ["AAAA", "AAAA"]}, 400, "unsupported"),
    ]
    if budget:
        cases += [
            (chat, {**_chat(gw.model, max_tokens=4), "prompt": long}, 200, ""),  # ignored
            (completions, {"model": gw.model, "prompt": "Hi", "max_tokens": 4,
                           "messages": [{"role": "user", "content": long}]}, 200, ""),
            (chat, {"model": gw.model, "max_tokens": 4,
                    "messages": [{"role": "user", "content": long}]}, 413, "prompt_too_long"),
            (completions, {"model": gw.model, "prompt": [[1] * (budget + 1)], "max_tokens": 4},
             413, "prompt_too_long"),
            (completions, {"model": gw.model, "prompt": "Hi", "prompt_embeds": "AAAA"}, 400,
             "unsupported"),
        ]
    got, ok = [], True
    with httpx.Client(timeout=120, headers=gw.auth) as h:
        for url, body, status, reason in cases:
            resp = h.post(url, json=body)
            got.append((resp.status_code, _reason(resp)))
            ok &= resp.status_code == status and _reason(resp) == reason
    note = "" if budget else "no max_prompt_tokens: only the prompt_embeds rule"
    return _many("budget shapes", "as each endpoint renders (200/413/400)", got, ok, note)


async def unauthenticated_fanout(gw: Gateway) -> Case:
    """300 /readyz and 100 /version at once (fewer if max_connections is lower), without a
    key: answered, and the gateway keeps no connection per request (its open file
    descriptors come back)."""
    n = min(400, gw.limit("max_connections", 2048) - 16)
    fds_before = gw.metrics().value("process_open_fds") or 0.0
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        resps = await asyncio.gather(*(client.get(gw.url + "/readyz") for _ in range(n * 3 // 4)),
                                     *(client.get(gw.url + "/version") for _ in range(n // 4)))
    await asyncio.sleep(1.0)
    fds_after = gw.metrics().value("process_open_fds") or 0.0
    got = [(r.status_code, "") for r in resps]
    ok = all(s == 200 for s, _ in got) and fds_after <= fds_before + 8
    return _many(f"unauthenticated fan-out x{len(got)}", "200, no connection kept per request", got,
                 ok, f"open fds {fds_before:.0f} before, {fds_after:.0f} after")


async def redirect_host(gw: Gateway) -> Case:
    reader, writer = await _connect(gw)
    writer.write(b"GET /v1/models/ HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer "
                 + gw.key.encode() + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    reply = await _until_closed(reader, 30) or b""
    writer.close()
    status, _ = _status(reply)
    head = reply.partition(b"\r\n\r\n")[0].lower()
    models = httpx.get(gw.url + "/v1/models", headers=gw.auth, timeout=30)
    ok = (status == 404 and b"location:" not in head and b"evil" not in reply
          and models.status_code == 200 and all("root" not in card
                                                 for card in models.json()["data"]))
    return _many("redirect Host / model path", "404, no Location; /v1/models without root",
                 [(status, ""), (models.status_code, "")], ok)


# --------------------------------------------------------------------------------------------
# The original clients


def bad_inputs(gw: Gateway) -> list[Case]:
    url, model = gw.url, gw.model
    chat_url = url + "/v1/chat/completions"
    with httpx.Client(timeout=60, headers=gw.auth) as http:
        cases = [
            _single("malformed JSON", 400, "invalid", http.post(
                chat_url, content=b'{"model": ', headers={"content-type": "application/json"})),
            _single("8 MiB body", 413, "body_too_large", http.post(
                chat_url, json=_chat(model, padding="x" * (8 << 20)))),
            _single("n=64", 400, "unsupported", http.post(chat_url, json=_chat(model, n=64))),
            _single("32 prompts in one request", 400, "unsupported", http.post(
                url + "/v1/completions",
                json={"model": model, "prompt": ["Hello"] * 32, "max_tokens": 4})),
            _single("wrong key", 401, "unauthorized", http.post(
                chat_url, json=_chat(model), headers={"Authorization": "Bearer wrong"})),
        ]
    with httpx.Client(timeout=60) as anonymous:
        cases.append(_single("/tokenize without a key", 401, "unauthorized", anonymous.post(
            url + "/tokenize", json={"model": model, "prompt": "hi"})))
    return cases


async def _one_of_many(client: httpx.AsyncClient, url: str, model: str) -> tuple[int, bool, str]:
    """(status, complete: a whole stream or a 503 with Retry-After, reason)."""
    try:
        async with client.stream("POST", url + "/v1/chat/completions",
                                 json=_chat(model, stream=True)) as resp:
            body = (await resp.aread()).decode(errors="replace")
    except httpx.HTTPError as exc:
        return 0, False, type(exc).__name__
    if resp.status_code == 200:
        return 200, body.rstrip().endswith("data: [DONE]"), ""
    reason = ""
    try:
        reason = json.loads(body)["error"]["reason"]
    except (ValueError, KeyError, TypeError):
        pass
    return resp.status_code, resp.status_code == 503 and "retry-after" in resp.headers, reason


async def burst(gw: Gateway, n: int = BURST) -> Case:
    n = min(n, gw.limit("max_connections", 2048) - 16)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=300, limits=limits, headers=gw.auth) as client:
        results = await asyncio.gather(*(_one_of_many(client, gw.url, gw.model)
                                         for _ in range(n)))
    statuses = Counter(str(status) for status, _, _ in results)
    ok = all(done and status in (200, 503) for status, done, _ in results)
    return Case(f"{n} requests at once", "200 whole stream, or 503 + Retry-After",
                dict(statuses), sorted({r for _, _, r in results if r}), ok)


def _until_empty(gw: Gateway, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = gw.health()
        if state["in_flight"] == 0 and state["queue_depth"] == 0:
            return True
        time.sleep(0.2)
    return False


def stops_reading(gw: Gateway, hold_s: float = 1.0) -> Case:
    """Sends a streamed request and reads nothing for `hold_s`, then hangs up. Its slot must
    come back: at once when it hangs up, or after the gateway's send timeout if its buffers
    fill first (a real engine at tens of tokens/s takes minutes to fill them; the unit test
    with a fire-hose upstream covers that path)."""
    # An answer far longer than the hold (ignore_eos: vLLM's own knob), on any hardware.
    body = json.dumps(_chat(gw.model, stream=True, max_tokens=LONG_ANSWER, ignore_eos=True)).encode()
    with socket.create_connection((gw.host, gw.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(gw.head("/v1/chat/completions", len(body)) + body)
        time.sleep(hold_s)
        held = gw.health()["in_flight"]
    freed = _until_empty(gw, 30)
    return Case("stops reading, then hangs up", "slot held while connected, freed after",
                {"in_flight while stalled": held}, [], held >= 1 and freed)


def leaves_mid_stream(gw: Gateway) -> Case:
    _until_empty(gw, 30)  # the cases before may still hold slots: a 503 here would be theirs
    with httpx.Client(timeout=60, headers=gw.auth) as http:
        with http.stream("POST", gw.url + "/v1/chat/completions",
                         json=_chat(gw.model, stream=True, max_tokens=LONG_ANSWER,
                                    ignore_eos=True)) as resp:
            status = resp.status_code
            got = [chunk for chunk, _ in zip(resp.iter_raw(), range(2))]  # two, then hang up
    freed = _until_empty(gw, 30)
    return Case("leaves mid-stream", "200, then its slot freed", {str(status): 1},
                [] if len(got) == 2 else [f"the stream ended after {len(got)} chunk(s)"],
                status == 200 and freed)


# --------------------------------------------------------------------------------------------
# The drain, on a gateway of its own


def drain_with_a_waiter(upstream: str | None, key: str, model: str) -> Case:
    """A gateway of its own (N = 1, M = 1, 3 s to drain) in front of the engine: one long
    stream in flight, one waiting, then SIGTERM. The waiter gets 503 draining at once; the
    stream ends whole, or at the deadline with an error event; the process exits."""
    name, expected = "drain with a waiter", "waiter 503 at once; stream whole or error event"
    if upstream is None:
        return Case(name, expected, {}, [], True, "skipped: pass --upstream (the engine)")
    from labs import gateway as lg
    from labs.serving.server import free_port

    port = free_port()
    config = lg.GatewayConfig(upstream=upstream, max_in_flight=1, max_queue=1,
                              max_queue_wait_s=60, shutdown_timeout_s=3.0, api_key=key)
    log = Path(tempfile.mkdtemp()) / "drain-gateway.log"
    proc = lg.start_gateway_process(config, port, log)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, dict[str, Any]] = {"stream": {}, "waiter": {}}

    def send(which: str, max_tokens: int) -> None:
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=120,
                              headers={"Authorization": f"Bearer {key}"},
                              json=_chat(model, stream=True, max_tokens=max_tokens,
                                         ignore_eos=True)) as resp:
                text = resp.read().decode(errors="replace")
            out[which] = {"status": resp.status_code, "text": text, "at": time.monotonic()}
        except httpx.HTTPError as exc:
            out[which] = {"status": 0, "text": type(exc).__name__, "at": time.monotonic()}

    try:
        lg.wait_gateway_healthy(url, 30, proc=proc, log_path=log)
        stream = threading.Thread(target=send, args=("stream", LONG_ANSWER))
        stream.start()
        _wait(lambda: httpx.get(url + "/health").json()["in_flight"] == 1, 60)
        waiter = threading.Thread(target=send, args=("waiter", 16))
        waiter.start()
        _wait(lambda: httpx.get(url + "/health").json()["queue_depth"] == 1, 30)
        time.sleep(0.5)
        sent_at = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        waiter.join(30)
        stream.join(60)
        try:
            exited = proc.wait(30) is not None
        except subprocess.TimeoutExpired:
            exited = False
    finally:
        lg.stop_gateway_process(proc)
    w, s = out["waiter"], out["stream"]
    waiter_ok = (w.get("status") == 503 and '"draining"' in w.get("text", "")
                 and w["at"] - sent_at < 2.0)
    text = s.get("text", "").rstrip()
    whole = text.endswith("data: [DONE]")
    cut = '"code": 503' in text.rsplit("data: ", 1)[-1]
    ok = waiter_ok and s.get("status") == 200 and (whole or cut) and exited
    how = "whole" if whole else "error event at the deadline" if cut else "TRUNCATED"
    return Case(name, expected, {f"waiter {w.get('status')}": 1, f"stream {s.get('status')}": 1},
                [], ok, f"waiter after {w.get('at', sent_at) - sent_at:.2f} s; stream {how}")


def _wait(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not get there")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------


def aftermath(gw: Gateway) -> dict[str, Any]:
    """Is the gateway still well, and did it lose any request it admitted?"""
    ready = httpx.get(gw.url + "/readyz", timeout=10).status_code
    after = httpx.post(gw.url + "/v1/chat/completions", json=_chat(gw.model), timeout=120,
                       headers=gw.auth).status_code
    _until_empty(gw, 30)
    snap = gw.metrics()

    def total(name: str, label: str, values: tuple[str, ...]) -> float:
        return sum(snap.value(name, **{label: v}) or 0.0 for v in values)

    admitted = snap.value("gateway_admitted_total") or 0.0
    completed = snap.value("gateway_completed_total") or 0.0
    disconnected = total("gateway_client_disconnects_total", "stage", ("streaming", "stalled"))
    upstream = total("gateway_upstream_errors_total", "stage", ("connect", "stream"))
    failed = total("gateway_failed_total", "reason", ("drain", "error"))
    state = gw.health()
    return {"readyz": ready, "a normal request after": after, "admitted": admitted,
            "completed": completed, "client left": disconnected, "upstream errors": upstream,
            "failed": failed, "lost": admitted - completed - disconnected - upstream - failed,
            "in_flight": state["in_flight"], "queue_depth": state["queue_depth"]}


def run(url: str, key: str, model: str, upstream: str | None = None) -> dict[str, Any]:
    started = time.monotonic()
    gw = Gateway(url, key, model)
    from labs.gateway.server import ensure_descriptors

    ensure_descriptors(gw.limit("max_connections", 2048) + 512)  # this side opens as many
    memory = Memory(gw)
    cases = bad_inputs(gw)
    cases.append(asyncio.run(slow_headers(gw, memory)))
    cases.append(asyncio.run(idle_connections(gw, memory)))
    cases.append(asyncio.run(many_slow_bodies(gw, memory)))
    cases.append(heavy_json(gw, memory))
    cases.append(asyncio.run(bad_header_bytes(gw)))
    cases.append(pathological_json(gw))
    cases.append(budget_shapes(gw))
    cases.append(asyncio.run(unauthenticated_fanout(gw)))
    cases.append(asyncio.run(redirect_host(gw)))
    cases.append(asyncio.run(burst(gw)))
    cases.append(stops_reading(gw))
    cases.append(leaves_mid_stream(gw))
    cases.append(drain_with_a_waiter(upstream, key, model))
    after = aftermath(gw)
    unexpected_5xx = sum(n for c in cases for status, n in c.statuses.items()
                         if status[:1] == "5" and status != "503")
    mem = memory.report()
    healthy = (after["readyz"] == 200 and after["a normal request after"] == 200
               and after["lost"] == 0 and after["in_flight"] == 0)
    return {"url": url, "cases": [asdict(c) for c in cases], "after": after, "memory": mem,
            "unexpected_5xx": unexpected_5xx,
            "all_documented": all(c.ok for c in cases) and unexpected_5xx == 0,
            "healthy_after": healthy, "memory_within_bound": mem["within"],
            "seconds": round(time.monotonic() - started, 1)}


def _print(report: dict[str, Any]) -> None:
    print(f"{'case':40} {'expected':46} {'got':30} ok")
    for c in report["cases"]:
        got = ", ".join(f"{k}: {v}" for k, v in c["statuses"].items())
        if c["reasons"]:
            got += f" ({', '.join(c['reasons'])})"
        print(f"{c['name']:40} {c['expected']:46} {got:30} {'yes' if c['ok'] else 'NO'}")
        if c["note"]:
            print(f"{'':40} {c['note']}")
    print("after:", ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in report["after"].items()))
    m = report["memory"]
    print(f"memory: bound {m['bound_mib']} MiB (growth allowed {m['bound_growth_mib']} MiB); "
          f"measured RSS {m['rss_before_mib']} -> peak {m['rss_peak_mib']} MiB (growth "
          f"{m['growth_mib']} MiB); by case {m['by_case_mib']}; within: {m['within']}")
    print(f"every answer as documented: {report['all_documented']} (unexpected 5xx: "
          f"{report['unexpected_5xx']}); gateway healthy after: {report['healthy_after']}; "
          f"memory within its bound: {report['memory_within_bound']} ({report['seconds']} s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running gateway (default: start the `gateway` profile)")
    p.add_argument("--upstream", help="the engine behind it, for the drain case (default: "
                   "the course server's, when --url is the course server)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args()
    import labs

    settings = labs.Settings.from_env()
    if args.url:
        url = args.url.rstrip("/")
        upstream = args.upstream
        record = labs.running_server()
        if upstream is None and record is not None and record.base_url.rstrip("/") == url:
            upstream = record.engine_url
        report = run(url, settings.api_key, _served_model(url, settings), upstream)
    else:
        with labs.VLLMServer("gateway", settings) as server:
            engine = server.record.engine_url if server.record else None
            report = run(server.base_url, settings.api_key,
                         _served_model(server.base_url, settings), engine)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    ok = report["all_documented"] and report["healthy_after"] and report["memory_within_bound"]
    return 0 if ok else 1


def _served_model(url: str, settings: Any) -> str:
    resp = httpx.get(url.rstrip("/") + "/v1/models", timeout=10,
                     headers={"Authorization": f"Bearer {settings.api_key}"})
    resp.raise_for_status()
    return resp.json()["data"][0]["id"]


if __name__ == "__main__":
    sys.exit(main())
