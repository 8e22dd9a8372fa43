"""The gateway's memory bound: a formula of its settings, each term held by a limit it enforces.

N + M bounds the engine, not the gateway: before the key is checked, anyone can open
connections, send headers slowly and send bodies. Every byte the gateway holds for a client is
one of these, each with the limit that caps it:

    bound = BASE                                 the interpreter, its modules, the app
          + C       x (H + 2 x READ + CONN)      each connection: its unparsed header bytes
                                                 (431 beyond H), two socket reads (a read
                                                 size set on every socket, labs.gateway.server)
                                                 and its objects and a short answer
          + R       x (B + UVICORN + READ)       the bodies being read: R x B bytes in all, each
                                                 reserving its declared length (else 503
                                                 intake_full; /tokenize and /v1/models while
                                                 proxied count too), with uvicorn's buffer
                                                 under them (it stops reading beyond UVICORN)
          + (N + M) x B                          each request held (running, waiting or being
                                                 counted): the bytes it sent, validated,
                                                 never a parsed tree
          + (N + M) x (B + 12 x T + 64 KiB)      with max_prompt_tokens = T: each request being
                                                 counted, its /tokenize payload (refused beyond
                                                 B) and the answer, read up to 12 bytes a token
          + (N + R) x RELAY                      each answer being relayed: one upstream read,
                                                 the socket's write buffer, the upstream
                                                 connection's buffers
          + PARSE   x B                          the one JSON parse at a time: json.loads runs
                                                 on the event loop, and the tree is dropped
                                                 before the next await (PARSE = 48)

    C max_connections   H max_header_bytes   R max_body_reads   B max_body_bytes
    N max_in_flight     M max_queue          T max_prompt_tokens

Time bounds the rest: headers must arrive within header_timeout_s, bodies within
body_timeout_s, and a client that takes no bytes for send_timeout_s is dropped, so a slow
client holds its share for a bounded time and never more than its share. With the defaults
(C 2,048, H 16 KiB, R 16, B 1 MiB, N 4, M 8, no T) the bound is about 275 MiB, inside the
gateway pod's 512 MiB limit (connections 128, parse 48, body reads 17, held 12, base 64);
`memory_bound(config)` gives it for any settings, the gateway exports it (and each term) as
`gateway_memory_bound_bytes` beside `process_resident_memory_bytes`, and
benchmarks/hostile_clients.py prints the two side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from .config import GatewayConfig

KIB, MIB = 1024, 1024 * 1024
READ_BYTES = 16 * KIB        # what one socket read takes (set on each transport)
UVICORN_BODY_BYTES = HIGH_WATER_LIMIT  # uvicorn pauses reading a body it holds beyond this
CONNECTION_BYTES = 16 * KIB  # a connection's protocol, parser and transport, and a short answer
RELAY_BYTES = 192 * KIB      # an upstream read (64 KiB), a socket write buffer (64 KiB high
                             # water), the upstream connection's buffers (64 KiB)
TOKENIZE_BYTES_PER_TOKEN = 12  # /tokenize's answer lists the ids: "123456, " is 8 bytes
TOKENIZE_SLACK_BYTES = 64 * KIB
PARSE_FACTOR = 48            # json.loads' tree per byte of text, worst shape: one-element arrays
                             # nested deep, `[[[[0]]]],...`: 45x on CPython 3.11 (flat `[{},...]`
                             # 25x, numbers 5-9x, short strings 13x: tests/test_gateway_bounds.py)
BASE_BYTES = 64 * MIB        # the process before its first request (measured: 46 MiB, 3.11)
# Measured for a connection: 5 KiB idle, 20 KiB holding 15 KB of unfinished headers.


@dataclass(frozen=True)
class MemoryBound:
    """The bound's terms (bytes), in the order of the module docstring's formula."""

    base: int
    connections: int
    body_reads: int
    held: int
    counting: int
    relays: int
    parse: int

    @property
    def total(self) -> int:
        return (self.base + self.connections + self.body_reads + self.held + self.counting
                + self.relays + self.parse)

    def terms(self) -> dict[str, int]:
        return dict(self.__dict__)

    @property
    def growth(self) -> int:
        """What clients can add on top of the idle process: the bound less BASE."""
        return self.total - self.base

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value / MIB:.0f}" for name, value in self.__dict__.items())
        return f"{self.total / MIB:.0f} MiB ({parts} MiB)"


def memory_bound(config: GatewayConfig) -> MemoryBound:
    """The bound for these settings (module docstring)."""
    c = config
    body = c.max_body_bytes
    held = c.max_in_flight + c.max_queue
    counting = 0
    if c.max_prompt_tokens is not None:
        counting = held * (body + tokenize_answer_cap(c.max_prompt_tokens))
    return MemoryBound(
        base=BASE_BYTES,
        connections=c.max_connections * (c.max_header_bytes + 2 * READ_BYTES
                                         + CONNECTION_BYTES),
        body_reads=c.max_body_reads * (body + UVICORN_BODY_BYTES + READ_BYTES),
        held=held * body,
        counting=counting,
        relays=(c.max_in_flight + c.max_body_reads) * RELAY_BYTES,
        parse=PARSE_FACTOR * body,
    )


def tokenize_answer_cap(max_prompt_tokens: int) -> int:
    """The most of a /tokenize answer read: longer means more than max_prompt_tokens tokens."""
    return TOKENIZE_BYTES_PER_TOKEN * max_prompt_tokens + TOKENIZE_SLACK_BYTES
