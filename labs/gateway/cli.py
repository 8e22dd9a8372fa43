"""`python -m labs.gateway`: run the gateway in this process until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import ConfigError, PortInUse
from ..serving.startup import check_port_free
from .app import create_app
from .config import API_KEY_ENV, DEFAULT_PORT, GatewayConfig


def serve(config: GatewayConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          log_level: str = "warning") -> None:
    """Run the gateway until SIGINT/SIGTERM; on either it drains (labs.gateway.server):
    nothing more is admitted, and open streams get `shutdown_timeout_s` to finish before
    they are cut with an error event."""
    from .server import GatewayServer

    GatewayServer(create_app(config), host=host, port=port, log_level=log_level).run()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's is NoReturn; ours raises a ConfigError instead
        self.exit(2, f"error: {message} (see `python -m labs.gateway --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The gateway's command line (`python -m labs.gateway --help`), one flag a GatewayConfig
    field; tests and the k8s manifests' check parse with it too."""
    defaults = GatewayConfig("http://default")
    p = _Parser(prog="python -m labs.gateway",
                description="Bounded-admission gateway in front of a vLLM server. With "
                            f"{API_KEY_ENV} set, it checks that key itself before a request "
                            "takes a queue place.")
    p.add_argument("--upstream", default=None,
                   help="root URL of the vLLM server (default: the course's, "
                        "LABS_BASE_URL or http://127.0.0.1:LABS_PORT)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    for flag, kind, what in (
            ("max-in-flight", int, "requests forwarded to the engine at once"),
            ("max-queue", int, "requests waiting in the gateway"),
            ("max-queue-wait-s", float, "longest wait for a slot before a 503"),
            ("retry-after-s", int, "Retry-After seconds on a 503"),
            ("max-prompt-tokens", int, "refuse longer prompts with 413 (default: no limit)"),
            ("request-timeout-s", float, "upstream timeout per operation"),
            ("max-body-bytes", int, "largest request body accepted (413 beyond)"),
            ("body-timeout-s", float, "time for a request body to arrive (408 after)"),
            ("max-body-reads", int, "requests reading a body at once (503 beyond)"),
            ("max-connections", int, "client connections open at once (more: closed)"),
            ("max-header-bytes", int, "request line + headers (431 beyond)"),
            ("header-timeout-s", float, "time for a request's headers to arrive (408 after)"),
            ("send-timeout-s", float, "a client taking no bytes this long is treated as gone"),
            ("shutdown-timeout-s", float, "on SIGTERM, time open streams get to finish")):
        default = getattr(defaults, flag.replace("-", "_"))
        p.add_argument(f"--{flag}", type=kind, default=default,
                       help=what + (f" (default {default:g})" if default is not None else ""))
    p.add_argument("--no-forward-authorization", action="store_true",
                   help="do not pass the client's Authorization header upstream")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"))
    return p


def config_from(args: argparse.Namespace) -> GatewayConfig:
    """The configuration the parsed flags (and LABS_GATEWAY_API_KEY) describe."""
    upstream = args.upstream
    if upstream is None:
        from ..settings import Settings
        upstream = Settings.from_env().base_url
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a port number (1-65535).")
    return GatewayConfig(
        upstream=upstream, max_in_flight=args.max_in_flight, max_queue=args.max_queue,
        max_queue_wait_s=args.max_queue_wait_s, retry_after_s=args.retry_after_s,
        max_prompt_tokens=args.max_prompt_tokens,
        forward_authorization=not args.no_forward_authorization,
        api_key=os.environ.get(API_KEY_ENV) or None,
        request_timeout_s=args.request_timeout_s, max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout_s, max_body_reads=args.max_body_reads,
        max_connections=args.max_connections, max_header_bytes=args.max_header_bytes,
        header_timeout_s=args.header_timeout_s, send_timeout_s=args.send_timeout_s,
        shutdown_timeout_s=args.shutdown_timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_port_free(args.host, args.port)
    except PortInUse:
        print(f"error: {port_taken(args.host, args.port)}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config, args.host, args.port, args.log_level)
    return 0


def port_taken(host: str, port: int) -> str:
    return (f"port {port} on {host} is already in use by another program; stop it or pass "
            f"another --port, e.g. --port {port + 1}.")
