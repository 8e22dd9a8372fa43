"""Notebook 05's gateway run: a gateway started with the learner's limits, in its own process
on a free port, in front of the running `gateway` profile's engine, for one run."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from ...errors import ConfigError
from ...load.loadgen import run_sync
from ...results.records import RunResult
from ...serving.connect import connect
from ...serving.server import running_server
from ...settings import Settings
from ...workload import Shape, Workload


def run_through_gateway(max_in_flight: int, max_queue: int, shape: Shape, workload: Workload,
                        *, max_queue_wait_s: float = 30.0) -> RunResult:
    """Start a gateway with these limits in front of the running gateway profile's engine,
    on a free port, run `shape` through it, and stop it again."""
    from ... import gateway as gw  # heavy: starlette and uvicorn only for a gateway run

    record = running_server()
    if record is None or record.engine_url is None:
        raise ConfigError("start the `gateway` profile first: labs.ensure_server('gateway').")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = gw.GatewayConfig(upstream=record.engine_url, max_in_flight=max_in_flight,
                              max_queue=max_queue, max_queue_wait_s=max_queue_wait_s)
    log = Path(tempfile.gettempdir()) / f"labs-gateway-{port}.log"
    proc = gw.start_gateway_process(config, port, log)
    try:
        gw.wait_gateway_healthy(f"http://127.0.0.1:{port}", 30, proc=proc, log_path=log)
        conn = connect(Settings.from_env(base_url_override=f"http://127.0.0.1:{port}"))
        return run_sync(shape, workload, conn=conn, warmup=1, progress=False,
                        label=f"gateway N={max_in_flight} M={max_queue}")
    finally:
        gw.stop_gateway_process(proc)
