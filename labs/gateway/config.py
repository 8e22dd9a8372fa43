"""What the gateway lets through, and to where: one validated, frozen configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigError

DEFAULT_PORT = 8001
API_KEY_ENV = "LABS_GATEWAY_API_KEY"  # the key arrives in the environment, never in `ps`


@dataclass(frozen=True)
class GatewayConfig:
    """How much the gateway lets through, and to where.

    upstream              root URL of the vLLM server (a trailing /v1 is dropped)
    max_in_flight         requests forwarded to the engine at once (N); match the engine's
                          --max-num-seqs so the engine never queues on its own
    max_queue             requests waiting here for a slot (M); more are refused at once
    max_queue_wait_s      a waiter still without a slot after this long is refused
    retry_after_s         the `Retry-After` value (whole seconds, >= 1) on every 503
    max_prompt_tokens     refuse longer prompts with 413 before they reach the engine
                          (counted by the upstream's /tokenize); None: no check
    forward_authorization pass the client's Authorization header upstream unchanged (vLLM
                          checks the key too); False: send none
    api_key               when set, the gateway checks `Authorization: Bearer <key>` itself,
                          before a request takes a queue place (401), and on /tokenize and
                          /v1/models; None: only vLLM checks, after admission
    request_timeout_s     httpx timeout for each upstream operation (connect, each read)
    max_body_bytes        the largest request body read (413 beyond): a body is held in
                          memory whole (labs.gateway.bound), and the gateway's pod has 512 MiB;
                          1 MiB is some 250,000 tokens of text, 30x the longest prompt here
    body_timeout_s        the whole request body must arrive within this long (408)
    max_body_reads        bodies read at once, in bytes: max_body_reads x max_body_bytes in
                          all (each reserves its declared length; /tokenize and /v1/models
                          while proxied too); beyond, 503 intake_full
    max_connections       client connections open at once; one more is closed unanswered
    max_header_bytes      request line + headers (431 beyond), h11's incomplete-event limit
    header_timeout_s      a request's line and headers must arrive within this long of its
                          first byte, or of the connection opening (408, or closed if nothing
                          was sent); idle time between requests is the keep-alive (75 s)
    send_timeout_s        a client that takes no bytes for this long while its answer streams
                          is treated as gone: its engine slot is freed
    shutdown_timeout_s    on SIGTERM, how long open streams may finish before they are cut;
                          keep it below the pod's terminationGracePeriodSeconds
    """

    upstream: str
    max_in_flight: int = 4
    max_queue: int = 8
    max_queue_wait_s: float = 30.0
    retry_after_s: int = 2
    max_prompt_tokens: int | None = None
    forward_authorization: bool = True
    api_key: str | None = None
    request_timeout_s: float = 600.0
    max_body_bytes: int = 1024 * 1024
    body_timeout_s: float = 30.0
    max_body_reads: int = 16
    max_connections: int = 2048
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    send_timeout_s: float = 30.0
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        url = str(self.upstream).strip().rstrip("/").removesuffix("/v1")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"upstream {self.upstream!r} is not an http(s) URL; give the vLLM "
                              "server's root, e.g. http://127.0.0.1:8000.")
        object.__setattr__(self, "upstream", url)
        _whole(self.max_in_flight, "max_in_flight", minimum=1)
        _whole(self.max_queue, "max_queue", minimum=0)
        _whole(self.retry_after_s, "retry_after_s", minimum=1)
        _whole(self.max_body_bytes, "max_body_bytes", minimum=1024)
        _whole(self.max_body_reads, "max_body_reads", minimum=1)
        _whole(self.max_connections, "max_connections", minimum=1)
        _whole(self.max_header_bytes, "max_header_bytes", minimum=1024)
        if self.max_prompt_tokens is not None:
            _whole(self.max_prompt_tokens, "max_prompt_tokens", minimum=1)
        for name in ("max_queue_wait_s", "request_timeout_s", "body_timeout_s",
                     "header_timeout_s", "send_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, not {value!r}.")
        if self.api_key is not None and not self.api_key.strip():
            object.__setattr__(self, "api_key", None)

    def to_args(self) -> list[str]:
        """The command-line flags of `python -m labs.gateway` that rebuild this config (all
        but the key, which travels in the environment as LABS_GATEWAY_API_KEY)."""
        args = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("api_key", "forward_authorization") or value is None:
                continue
            args.append(f"--{field.name.replace('_', '-')}={value}")
        if not self.forward_authorization:
            args.append("--no-forward-authorization")
        return args

    def __repr__(self) -> str:  # never print the key
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        return (f"GatewayConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())}, "
                f"api_key={'set' if self.api_key else None})")


def _whole(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, not {value!r}.")
