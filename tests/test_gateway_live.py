"""The gateway in front of the real vLLM server, where the engine's behaviour is the point.

- A client that goes away mid-stream must free its engine slot: the gateway closes the
  upstream request, vLLM aborts it, and `vllm:num_requests_running` falls back to zero.
- The engine and the gateway keep an idle connection open past uvicorn's default 5 s, so the
  clients (which never close one themselves) do not race a closing server.
- 20x overload for half a minute (LABS_OVERLOAD_S, default 30), with the gateway frozen for 5 s
  in the middle: every request ends as a complete answer or a 503 with Retry-After; nothing
  is lost, nothing hangs, and the gateway's own counters agree with what the client saw.
- Hostile clients (benchmarks/hostile_clients.py): each gets its documented answer, and
  every request the gateway admitted is relayed to the end or ended by its client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

import labs
from labs import gateway as gw
from labs.load import loadgen
from labs.load.pool import ONE_CONNECTION
from labs.observe.metrics import Snapshot, scrape
from labs.serving.server import free_port

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def engine(live: labs.Connection) -> labs.Connection:
    """The engine itself, even when the session's server runs behind its own gateway."""
    record = labs.running_server()
    if record is None or record.engine_url is None:
        return live
    return labs.connect(labs.Settings.from_env(base_url_override=record.engine_url))


@pytest.fixture
def gateway(engine: labs.Connection,
            tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(URL, process) of a gateway of 4 slots and 4 queue places in front of the engine."""
    port = free_port()
    config = gw.GatewayConfig(upstream=engine.base_url, max_in_flight=4, max_queue=4,
                              max_queue_wait_s=5.0)
    proc = gw.start_gateway_process(config, port, tmp_path / "gateway.log")
    try:
        url = f"http://127.0.0.1:{port}"
        gw.wait_gateway_healthy(url, 30, proc=proc, log_path=tmp_path / "gateway.log")
        yield url, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # in case a test failed with it frozen
        gw.stop_gateway_process(proc)


@pytest.fixture
def gateway_url(gateway: tuple[str, subprocess.Popen[bytes]]) -> str:
    return gateway[0]


def _running(engine: labs.Connection) -> float:
    return scrape(engine.base_url).running


def _local_port_after_idle(url: str, idle_s: float) -> tuple[int, int]:
    """The client-side port of two GETs `idle_s` apart on one pooled client: equal if the
    server kept the idle connection open (the client never closes one itself)."""
    ports = []
    with httpx.Client(timeout=10, limits=ONE_CONNECTION) as client:
        for pause in (0.0, idle_s):
            time.sleep(pause)
            resp = client.get(url + "/health")
            resp.raise_for_status()
            ports.append(resp.extensions["network_stream"].get_extra_info("client_addr")[1])
    return ports[0], ports[1]


@pytest.mark.parametrize("side", ["engine", "gateway"])
def test_servers_keep_idle_connections_past_five_seconds(side: str, engine: labs.Connection,
                                                         gateway_url: str) -> None:
    # uvicorn's default (vLLM's too) closes an idle connection after 5 s, which races a
    # request sent on it at that instant (labs.load.pool says why it matters).
    url = engine.base_url if side == "engine" else gateway_url
    first, second = _local_port_after_idle(url, 6.0)
    assert first == second, f"the {side} closed a connection idle for 6 s"


def test_disconnect_mid_stream_frees_the_engine_slot(engine: labs.Connection,
                                                     gateway_url: str) -> None:
    body = {"model": engine.model, "max_tokens": 1000, "ignore_eos": True, "stream": True,
            "messages": [{"role": "user", "content": "Count to a million."}]}
    with httpx.Client(timeout=60, headers=engine.headers) as client:
        with client.stream("POST", gateway_url + "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            # Hold on to the iterator: a `for ... break` would let it be collected, and
            # that alone closes the stream, before we have looked at the engine.
            chunks = resp.iter_raw()
            for _ in range(5):
                next(chunks)
            assert _running(engine) >= 1, "the request should be running in the engine"
        # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 20
    while _running(engine) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(engine) == 0, "vLLM kept generating for a client that left"
    gateway_metrics = Snapshot.parse(httpx.get(gateway_url + "/metrics").text)
    assert gateway_metrics.value("gateway_in_flight") == 0


async def _freeze(pid: int, after_s: float, for_s: float) -> None:
    """Stop a process for a while, as a busy CPU or a noisy neighbour would."""
    await asyncio.sleep(after_s)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(for_s)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_twenty_times_overload_loses_nothing(
        engine: labs.Connection, gateway: tuple[str, subprocess.Popen[bytes]]) -> None:
    # The freeze piles up hundreds of requests in the client at once; with one shared httpx
    # pool that pile never drained (labs.load.pool), and CI lost 2,819 of 4,855 requests.
    gateway_url, proc = gateway
    duration_s = float(os.environ.get("LABS_OVERLOAD_S", "30"))
    workload = labs.Workload(max_tokens=16)
    # Capacity: 4 slots; measure one request's time alone to size 20x the capacity.
    one = loadgen.run_sync(labs.Closed(1, requests=2), workload, conn=engine, progress=False)
    capacity_rps = 4 / one.summary()["e2e_s_p50"]
    offered_rps = 20 * capacity_rps
    conn = labs.connect(labs.Settings.from_env(base_url_override=gateway_url))

    async def go() -> labs.RunResult:
        freeze = asyncio.create_task(_freeze(proc.pid, after_s=duration_s / 6, for_s=5.0))
        result = await asyncio.wait_for(loadgen.run(
            labs.Poisson(offered_rps, duration_s=duration_s, seed=3), workload, conn=conn,
            progress=False, timeout_s=120), timeout=duration_s + 180)
        await freeze
        return result

    result = asyncio.run(go())
    records = result.records
    ok = [r for r in records if r.ok]
    shed = [r for r in records if r.error_kind == "shed"]
    counters = Snapshot.parse(httpx.get(gateway_url + "/metrics").text)
    admitted = counters.value("gateway_admitted_total")
    refused = sum(counters.value("gateway_shed_total", reason=r)
                  for r in ("queue_full", "queue_timeout", "intake_full", "draining"))
    # Each loss with when it was sent, how long it lasted and its HTTP status, and whether the
    # gateway counted it: enough to tell a client-side connection race from a gateway fault.
    lost = [f"#{r.index} sent at {r.sent_s:.2f} s, failed after {r.end_s - r.sent_s:.3f} s, "
            f"status {r.status}, {r.error_kind}: {r.error}"
            for r in records if not r.ok and r.error_kind != "shed"]
    assert not lost, (f"{len(lost)} of {len(records)} neither answered nor shed (the gateway "
                      f"counted {admitted + refused:.0f} requests), e.g. {lost[:3]}")
    assert all(r.completion_tokens == 16 for r in ok), "an admitted answer came back short"
    assert all(r.status == 503 and r.retry_after_s for r in shed)
    assert len(shed) > len(ok) > 0
    assert admitted == len(ok) and admitted + refused == len(records)
    assert counters.value("gateway_in_flight") == 0 and counters.value("gateway_queue_depth") == 0
    assert _running(engine) == 0


def test_hostile_clients_get_documented_answers_and_nothing_admitted_is_lost(
        engine: labs.Connection, tmp_path: Path) -> None:
    """benchmarks/hostile_clients.py through a gateway configured as the `gateway` profile
    (its flags, and the course's key checked by the gateway itself)."""
    settings = labs.Settings.from_env()
    flags = labs.get_profile("gateway").gateway(settings.backend)
    args = gw.build_parser().parse_args([*flags, f"--upstream={engine.base_url}"])
    config = replace(gw.cli.config_from(args), api_key=settings.api_key)
    port = free_port()
    proc = gw.start_gateway_process(config, port, tmp_path / "gateway.log")
    try:
        url = f"http://127.0.0.1:{port}"
        gw.wait_gateway_healthy(url, 30, proc=proc, log_path=tmp_path / "gateway.log")
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hostile_clients.py"),
                              "--url", url, "--upstream", engine.base_url, "--json"],
                             capture_output=True, text=True, timeout=300)
    finally:
        gw.stop_gateway_process(proc)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    wrong = [c for c in report["cases"] if not c["ok"]]
    assert not wrong, wrong
    assert report["unexpected_5xx"] == 0, report["cases"]
    assert report["memory_within_bound"], report["memory"]
    assert any("drain" in c["name"] for c in report["cases"]), "the drain case did not run"
    after = report["after"]
    assert after["lost"] == 0 and after["admitted"] >= 1, after
    assert after["readyz"] == 200 and after["a normal request after"] == 200, after
    burst = next(c for c in report["cases"] if "at once" in c["name"])
    assert burst["statuses"].get("503", 0) > 0, "300 at once must overflow N + M"
