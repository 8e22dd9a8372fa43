"""How many streamed tokens per second can the load generator take in on one core?

A load generator that cannot keep up measures itself, not the server: its TTFT and ITL
grow with its own parsing backlog. This benchmark starts a stub SSE server (a raw asyncio
HTTP/1.1 server in a subprocess, pinned to one core) that streams vLLM-shaped chat chunks as
fast as it can, one token per chunk, with usage and `[DONE]`; it runs `labs.loadgen` against
it pinned to another core and prints the tokens/s the client achieved. The course wants at
least 20,000 tokens/s on one core, far above what one GPU serves to a single client.

    python benchmarks/client_throughput.py [--concurrency 1,8,32] [--tokens 1024]

A benchmark, not a test: it prints numbers and passes or fails nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_TOK_S = 20_000


# --------------------------------------------------------------------------------------------
# The stub server (runs in the subprocess)


def _chunk(payload: dict) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP/1.1 chunk per SSE event


def _events(n_tokens: int, model: str) -> list[bytes]:
    base = {"id": "chatcmpl-0123456789abcdef0123456789abcdef", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": model}
    token = _chunk({**base, "choices": [{"index": 0, "delta": {"content": " token"},
                                         "logprobs": None, "finish_reason": None}]})
    first = _chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                               "content": ""},
                                         "logprobs": None, "finish_reason": None}]})
    last = _chunk({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "length"}]})
    usage = _chunk({**base, "choices": [], "usage": {
        "prompt_tokens": 16, "completion_tokens": n_tokens, "total_tokens": 16 + n_tokens}})
    done = b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
    return [first, *[token] * n_tokens, last, usage, done, b"0\r\n\r\n"]


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # keep-alive: one request after another on this connection
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            request = json.loads(await reader.readexactly(length)) if length else {}
            events = _events(int(request.get("max_tokens", 256)), request.get("model", "stub"))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for i, event in enumerate(events):
                writer.write(event)
                if i % 8 == 7:  # let other connections and the socket move
                    await writer.drain()
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)  # tell the parent the port
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------------------------
# The client side


def _start_stub(core: int | None) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--stub"] + ([f"--stub-core={core}"] if core is not None
                                                  else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"stub server did not start (exit {proc.poll()})")
    return proc, int(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measure(port: int, concurrency: int, requests: int, tokens: int) -> dict:
    from labs.load.loadgen import run_sync
    from labs.workload import Closed, Workload

    started = time.process_time()
    result = run_sync(Closed(concurrency, requests=requests), Workload(max_tokens=tokens),
                      base_url=f"http://127.0.0.1:{port}", model="stub", api_key="x",
                      progress=False)
    cpu_s = time.process_time() - started
    s = result.summary()
    arrivals = sum(len(r.token_times_s) for r in result.records)
    return {"concurrency": concurrency, "requests": requests, "ok": s["ok"],
            "tokens": s["output_tokens"], "seconds": s["duration_s"], "tok_s": s["agg_tok_s"],
            "chunks_s": arrivals / s["duration_s"] if s["duration_s"] else None,
            "client_cpu_s": cpu_s, "itl_p99_ms": (s["itl_s_p99"] or 0) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per answer")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per level (default max(8, 2 x concurrency))")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per level; the median is shown (shared VMs are noisy)")
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--stub-core", type=int, default=1)
    parser.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub:
        asyncio.run(_serve(args.stub_core))
        return 0

    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    cores = os.sched_getaffinity(0)
    pin = {args.client_core, args.stub_core} <= cores and args.client_core != args.stub_core
    if not pin:
        print(f"note: cores {sorted(cores)} cannot host client and stub apart; not pinning",
              file=sys.stderr)
    proc, port = _start_stub(args.stub_core if pin else None)
    try:
        if pin:
            os.sched_setaffinity(0, {args.client_core})
        print(f"stub on core {args.stub_core if pin else '-'} at 127.0.0.1:{port}, client on "
              f"core {args.client_core if pin else '-'}; {args.tokens} tokens per answer")
        _measure(port, 4, 4, 64)  # warm up imports, connections and the allocator
        print(f"{'conc':>5} {'reqs':>5} {'ok':>4} {'tokens':>8} {'s':>6} {'tok/s':>9} "
              f"{'chunks/s':>9} {'cpu s':>6} {'ITL p99 ms':>10}")
        medians = []
        for c in (int(x) for x in args.concurrency.split(",")):
            runs = sorted((_measure(port, c, args.requests or max(8, 2 * c), args.tokens)
                           for _ in range(max(1, args.repeat))), key=lambda m: m["tok_s"] or 0)
            m = runs[len(runs) // 2]
            medians.append(m["tok_s"] or 0.0)
            print(f"{m['concurrency']:>5} {m['requests']:>5} {m['ok']:>4} {m['tokens']:>8} "
                  f"{m['seconds']:>6.2f} {m['tok_s']:>9,.0f} {m['chunks_s']:>9,.0f} "
                  f"{m['client_cpu_s']:>6.2f} {m['itl_p99_ms']:>10.2f}")
        print(f"client throughput: {min(medians):,.0f} to {max(medians):,.0f} streamed "
              f"tokens/s on one core, median of {max(1, args.repeat)} runs per level "
              f"(course target {TARGET_TOK_S:,})")
    finally:
        _stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
