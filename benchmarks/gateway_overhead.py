"""What does the admission gateway cost? p50 TTFT direct to vLLM against through the gateway.

The gateway is one more hop (a second HTTP server and client in Python) between the user and
the engine; it should cost a millisecond or two, not tens. This benchmark starts
`python -m labs.gateway` on a free port in front of the server, then runs the same small
closed-loop workload (one user, 20 requests, 8 output tokens) direct and through the gateway,
alternating the order each round so drift hits both sides alike, and prints p50 TTFT both
ways and the difference.

    python benchmarks/gateway_overhead.py                # the live server (labs.connect())
    python benchmarks/gateway_overhead.py --upstream http://127.0.0.1:8000
    python benchmarks/gateway_overhead.py --stub         # a built-in fake vLLM, no GPU/CPU model

`--stub` starts a vLLM-shaped fake (this file, `--serve-stub PORT`) in a subprocess: it
streams `max_tokens` chunks with a fixed TTFT and gap, so the difference is the gateway's alone.
A benchmark, not a test: it prints numbers and passes or fails nothing.

On a machine with few cores, give the gateway a core of its own, or you measure CPU
contention instead of the hop: vLLM's CPU build binds its OpenMP threads to every core it may
use, and any other busy process (the gateway relaying each token) stalls a whole decode step.
Measured on 2 cores (2026-11-23): +18 ms with everything sharing both cores. With the engine on
core 0 and the client and gateway on core 1 the difference drowns in the engine's own jitter
(rounds from -36 to +18 ms; +4.6 ms over 8 rounds x 20, -15.5 ms over 6 rounds x 50). The
gateway's own cost, against the stub where nothing else moves: +2.3 to +2.5 ms.

    taskset -c 0 python -m labs serve
    taskset -c 1 python benchmarks/gateway_overhead.py --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STUB_MODEL = "stub-model"


# --------------------------------------------------------------------------------------------
# The stub upstream (runs in its own process)


def _chunk(model: str, **fields: Any) -> bytes:
    payload = {"id": "cmpl-stub", "object": "chat.completion.chunk", "created": 0,
               "model": model, **fields}
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class StubVLLM:
    """A raw ASGI app answering like vLLM's OpenAI server: /health, /version, /v1/models,
    /tokenize (4 characters per token), and streamed or whole completions, `ttft_s` to the
    first token and `itl_s` between tokens. A client that goes away aborts its stream."""

    def __init__(self, ttft_s: float, itl_s: float) -> None:
        self.ttft_s, self.itl_s = ttft_s, itl_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw, more = b"", True
        while more:
            message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path == "/health":
            return await _reply(send, 200, b"")
        if path == "/version":
            return await _reply(send, 200, b'{"version": "stub"}')
        if path == "/v1/models":
            return await _reply(send, 200, json.dumps(
                {"object": "list", "data": [{"id": STUB_MODEL, "root": STUB_MODEL}]}).encode())
        body = json.loads(raw or b"{}")
        if path == "/tokenize":
            text = body.get("prompt") or json.dumps(body.get("messages"))
            return await _reply(send, 200, json.dumps({"count": max(1, len(text) // 4)}).encode())
        if path not in ("/v1/chat/completions", "/v1/completions"):
            return await _reply(send, 404, b'{"error": {"message": "not found"}}')
        chat = path == "/v1/chat/completions"
        n = int(body.get("max_tokens") or 16)
        model = body.get("model", STUB_MODEL)
        if not body.get("stream"):
            await asyncio.sleep(self.ttft_s + self.itl_s * (n - 1))
            text = " tok" * n
            choice = ({"message": {"role": "assistant", "content": text}} if chat
                      else {"text": text})
            return await _reply(send, 200, json.dumps({
                "id": "cmpl-stub", "model": model,
                "choices": [{"index": 0, "finish_reason": "length", **choice}],
                "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n},
            }).encode())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        delta = (lambda t: {"delta": {"content": t}}) if chat else (lambda t: {"text": t})
        for i in range(n):
            gap = self.ttft_s if i == 0 else self.itl_s
            try:  # sleep, but notice a client that goes away (as vLLM does, to abort)
                message = await asyncio.wait_for(receive(), gap)
                if message["type"] == "http.disconnect":
                    return
            except TimeoutError:
                pass
            await send({"type": "http.response.body", "more_body": True, "body": _chunk(
                model, choices=[{"index": 0, "finish_reason": None, **delta(" tok")}])})
        tail = (_chunk(model, choices=[{"index": 0, "finish_reason": "length", **delta("")}])
                + _chunk(model, choices=[], usage={"prompt_tokens": 8, "completion_tokens": n,
                                                   "total_tokens": 8 + n})
                + b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": tail})


async def _reply(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def serve_stub(port: int, ttft_s: float, itl_s: float) -> None:
    import uvicorn

    uvicorn.run(StubVLLM(ttft_s, itl_s), host="127.0.0.1", port=port, log_level="warning",
                lifespan="off", timeout_graceful_shutdown=2)


# --------------------------------------------------------------------------------------------
# Processes the benchmarks start and always stop


def start_stub(ttft_s: float, itl_s: float) -> tuple[subprocess.Popen[bytes], str]:
    """The stub in a subprocess (its own core's worth of Python, like a real server)."""
    import httpx

    from labs.serving.server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-stub", str(port),
         f"--stub-ttft-s={ttft_s}", f"--stub-itl-s={itl_s}"],
        stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise SystemExit(f"error: the stub upstream did not start (exit {proc.poll()})")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        from labs.gateway import stop_gateway_process

        stop_gateway_process(proc)


@dataclass
class Upstream:
    base_url: str
    api_key: str | None
    model: str | None


def resolve_upstream(args: argparse.Namespace) -> Upstream:
    """--upstream URL, else the live server (labs.connect()); --stub is handled by callers."""
    from labs.settings import Settings

    if args.upstream:
        return Upstream(args.upstream.rstrip("/").removesuffix("/v1"),
                        args.api_key or Settings.from_env().api_key, None)
    from labs import connect

    conn = connect()
    return Upstream(conn.base_url, conn.api_key, conn.model)


def add_upstream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", default=None,
                   help="root URL of the vLLM server (default: labs.connect())")
    p.add_argument("--api-key", default=None, help="API key (default: LABS_API_KEY)")
    p.add_argument("--stub", action="store_true", help="use a built-in fake vLLM instead")
    p.add_argument("--stub-ttft-s", type=float, default=0.02, help="stub: time to first token")
    p.add_argument("--stub-itl-s", type=float, default=0.005, help="stub: gap between tokens")
    p.add_argument("--serve-stub", type=int, default=None, metavar="PORT",
                   help=argparse.SUPPRESS)


@dataclass
class Behind:
    """An upstream with the gateway in front of it, as `behind_gateway` yields them."""
    upstream: Upstream
    gateway_url: str
    gateway: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def behind_gateway(args: argparse.Namespace, make_config: Callable[[str], Any],
                   label: str) -> Iterator[Behind]:
    """The upstream (--stub, --upstream or the live server) and `python -m labs.gateway`
    in front of it (configured by `make_config(upstream_url)`); both stopped on the way out."""
    from labs.gateway import start_gateway_process, stop_gateway_process, wait_gateway_healthy
    from labs.serving.server import free_port

    stub = gateway = None
    try:
        if args.stub:
            stub, url = start_stub(args.stub_ttft_s, args.stub_itl_s)
            upstream = Upstream(url, None, STUB_MODEL)
        else:
            upstream = resolve_upstream(args)
        port = free_port()
        log = Path(tempfile.gettempdir()) / f"labs-gateway-{label}-{os.getpid()}.log"
        gateway = start_gateway_process(make_config(upstream.base_url), port, log)
        gateway_url = f"http://127.0.0.1:{port}"
        wait_gateway_healthy(gateway_url, 60, proc=gateway, log_path=log)
        yield Behind(upstream, gateway_url, gateway, log)
    finally:
        if gateway is not None:
            stop_gateway_process(gateway)
        stop_process(stub)


# --------------------------------------------------------------------------------------------
# The measurement


def _p50_ms(values: list[float]) -> float | None:
    from labs.results.records import percentile

    p = percentile(values, 50)
    return None if p is None else p * 1000


def _fmt(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:8.2f}"


def measure(upstream: Upstream, gateway_url: str, requests: int, max_tokens: int,
            rounds: int, warmup: int) -> dict[str, list[float]]:
    from labs.load import loadgen
    from labs.workload import Closed, Workload

    workload = Workload(max_tokens=max_tokens)  # a one-line prompt: the hop, not prefill
    ttft: dict[str, list[float]] = {"direct": [], "gateway": []}
    per_round: dict[str, list[float]] = {"direct": [], "gateway": []}
    failed: dict[str, int] = {"direct": 0, "gateway": 0}
    targets = {"direct": upstream.base_url, "gateway": gateway_url}
    print(f"{'round':>5} {'path':>8} {'ok':>4} {'TTFT p50 ms':>12} {'e2e p50 ms':>11}")
    for r in range(rounds):
        order = ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct")
        for path in order:
            result = loadgen.run_sync(
                Closed(1, requests=requests), workload, base_url=targets[path],
                api_key=upstream.api_key, model=upstream.model, progress=False,
                warmup=warmup if r < 2 else 0, timeout_s=60)
            ok = [rec for rec in result.records if rec.ok]
            failed[path] += len(result.records) - len(ok)
            values = [rec.ttft_s for rec in ok if rec.ttft_s is not None]
            ttft[path] += values
            per_round[path].append(_p50_ms(values) or 0.0)
            print(f"{r:>5} {path:>8} {len(ok):>4} {_fmt(_p50_ms(values)):>12} "
                  f"{_fmt(_p50_ms([rec.e2e_s for rec in ok])):>11}")
            if not ok:
                first = next(rec.error for rec in result.records if rec.error)
                raise SystemExit(f"error: every request {path} failed (first: {first})")
    for path, n in failed.items():
        if n:
            print(f"warning: {n} requests {path} failed; they are left out", file=sys.stderr)
    # Paired by round, so slow drift of the machine cancels out.
    diffs = [g - d for g, d in zip(per_round["gateway"], per_round["direct"])]
    print("per-round difference (gateway - direct), ms: "
          + ", ".join(f"{d:+.1f}" for d in diffs)
          + f"; median {statistics.median(diffs):+.1f}")
    return ttft


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_upstream_args(p)
    p.add_argument("--requests", type=int, default=20, help="requests per run (default 20)")
    p.add_argument("--max-tokens", type=int, default=8, help="output tokens (default 8)")
    p.add_argument("--rounds", type=int, default=4,
                   help="direct/gateway pairs, order alternating (default 4)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up requests per path (default 3)")
    args = p.parse_args(argv)
    if args.serve_stub is not None:
        serve_stub(args.serve_stub, args.stub_ttft_s, args.stub_itl_s)
        return 0

    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from labs.gateway import GatewayConfig

    def config(upstream: str) -> GatewayConfig:
        return GatewayConfig(upstream, max_in_flight=4, max_queue=8)

    with behind_gateway(args, config, "overhead") as run:
        print(f"upstream {run.upstream.base_url}{' (stub)' if args.stub else ''}, gateway "
              f"{run.gateway_url} (log {run.log}); closed loop of 1 user, {args.requests} "
              f"requests, max_tokens {args.max_tokens}, {args.rounds} rounds")
        started = time.perf_counter()
        ttft = measure(run.upstream, run.gateway_url, args.requests, args.max_tokens,
                       args.rounds, args.warmup)
        direct, through = _p50_ms(ttft["direct"]), _p50_ms(ttft["gateway"])
        print(f"p50 TTFT direct {_fmt(direct).strip()} ms, through the gateway "
              f"{_fmt(through).strip()} ms: the gateway adds "
              f"{(through or 0) - (direct or 0):+.2f} ms "
              f"({len(ttft['direct'])} + {len(ttft['gateway'])} requests, "
              f"{time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
