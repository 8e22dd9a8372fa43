"""What a request must be before it may wait for an engine slot.

Checked in order of cost, cheapest first, so a flood of bad requests costs the gateway
microseconds each and the engine nothing: the key (401), then the body's size and arrival
time (413, 408), then its shape (400), and last its prompt length (labs.gateway.budget),
which costs a round trip to the upstream's tokenizer (413).

The body is read whole, at most `max_body_bytes`, and the bodies being read at once hold at
most `max_body_reads` x `max_body_bytes` bytes in all (`BodyReads`: each reserves its
declared length first; labs.gateway.bound says why each limit is there). It is parsed once, to
check it; what a held request keeps is those bytes (forwarded as sent) and, with a budget,
the few bytes counting needs, never the parsed tree, which for some JSON shapes is thirty
times the size of its text.

One request is one sequence. `n > 1`, `best_of > 1`, beam search, a list of prompts and a
list of `prompt_embeds` (or embeddings beside a prompt, which vLLM runs as two) each ask the
engine for several sequences in one request, which would let one caller take every slot the
admission bound is meant to share; the gateway refuses them with a 400 that says to send
separate requests (each then waits its turn) rather than charging several slots to one
request, which could wait for ever behind single ones or never fit (n > N).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive

from . import budget
from .answers import Rejected
from .config import GatewayConfig

logger = logging.getLogger("labs.gateway")


class BodyReads:
    """The bytes reserved by the bodies being read now (and by /tokenize and /v1/models while
    they are proxied): at most `limit_bytes`. Each reserves what it may hold, its declared
    Content-Length (max_body_bytes when chunked), so a slow body holds its share and no
    more, and a crowd of small ones fits where a few large ones would not. Not a queue: one
    that does not fit is refused at once (503 intake_full), because a body nobody reads costs
    nothing but the connection it came on."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.reserved_bytes = 0
        self.active = 0

    def enter(self, size: int) -> bool:
        if self.reserved_bytes + size > self.limit_bytes:
            return False
        self.reserved_bytes += size
        self.active += 1
        return True

    def leave(self, size: int) -> None:
        self.reserved_bytes -= size
        self.active -= 1


def reservation(config: GatewayConfig, headers: Mapping[str, str]) -> int:
    """What a body will hold at most: its declared length (within max_body_bytes), else
    max_body_bytes. At least 1, so even an empty request counts while it is served."""
    declared = headers.get("content-length", "").strip()
    if "transfer-encoding" not in headers and declared.isdigit():
        return max(1, min(int(declared), config.max_body_bytes))
    return config.max_body_bytes


def declares_body(headers: Mapping[str, str]) -> bool:
    """Does the request say a body follows (Content-Length > 0, or chunked)?"""
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or length not in ("", "0")


def too_long_to_discard(config: GatewayConfig, headers: Mapping[str, str]) -> bool:
    """Refused before its body was read: close the connection rather than let the server
    discard the rest (labs.gateway.server, within body_timeout_s)? Only for a body declared
    larger than any the gateway reads. Closing on a client still sending would reset the
    connection, and the client could lose the answer with it."""
    declared = headers.get("content-length", "").strip()
    return declared.isdigit() and int(declared) > config.max_body_bytes


def check_key(config: GatewayConfig, headers: Mapping[str, str]) -> None:
    """Raise Rejected(401) unless the request carries the configured key (if one is set)."""
    if config.api_key is None:
        return
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
        raise Rejected(401, "unauthorized",
                       "missing or wrong API key: send the header `Authorization: Bearer "
                       "<key>` (in the course, the key is LABS_API_KEY; the OpenAI client "
                       "sends it as api_key).")


async def read_body(config: GatewayConfig, headers: Mapping[str, str],
                    receive: Receive) -> bytes:
    """The whole request body, at most `max_body_bytes`, arriving within `body_timeout_s`.

    Raises Rejected(413 | 408), or ConnectionError if the client left before sending it all.
    """
    limit = config.max_body_bytes
    too_large = Rejected(413, "body_too_large",
                         f"the request body is larger than this gateway accepts "
                         f"({limit:,} bytes, max_body_bytes); send a shorter prompt.")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(config.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionError("the client left before sending its whole request")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise Rejected(408, "body_timeout",
                       f"the request body did not arrive within {config.body_timeout_s:g} s "
                       "(body_timeout_s); send it whole and promptly.") from None


def parse(path: str, raw: bytes, config: GatewayConfig) -> budget.Prompt | None:
    """Check the request (Rejected(400) saying what is wrong); with a prompt budget, return
    what counting it needs. The parsed tree stays local: it is dropped on return."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise Rejected(400, "invalid", "the request body nests JSON too deeply; send a JSON "
                       "object of messages or a prompt.") from None
    except UnicodeDecodeError:
        raise Rejected(400, "invalid", "the request body is not UTF-8 text; send JSON in "
                       "UTF-8 with Content-Type: application/json.") from None
    except json.JSONDecodeError as exc:
        raise Rejected(400, "invalid", f"the request body is not valid JSON (line {exc.lineno}"
                       f", column {exc.colno}); send a JSON object with Content-Type: "
                       "application/json.") from None
    except ValueError:
        raise Rejected(400, "invalid", "the request body is not valid JSON; send a JSON "
                       "object with Content-Type: application/json.") from None
    if not isinstance(body, dict):
        raise Rejected(400, "invalid",
                       f"the request body must be a JSON object, not {_kind(body)}.")
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Rejected(400, "invalid",
                           'a chat request needs a non-empty "messages" list, e.g. '
                           '{"model": "...", "messages": [{"role": "user", "content": '
                           '"Hello"}]}; for a plain prompt use /v1/completions.')
    elif _empty(body.get("prompt")) and _empty(body.get("prompt_embeds")):
        raise Rejected(400, "invalid",
                       'a completions request needs a "prompt", e.g. {"model": "...", '
                       '"prompt": "Once upon a time"}; for messages use /v1/chat/completions.')
    _one_sequence(path, body)
    if config.max_prompt_tokens is None:
        return None
    try:
        return budget.prompt_of(path, body, config)
    except RecursionError:
        raise Rejected(400, "invalid", "the request nests JSON too deeply to be counted; "
                       "send a JSON object of messages or a prompt.") from None


def _one_sequence(path: str, body: Mapping[str, Any]) -> None:
    """Refuse what would run several sequences under one admission slot (module docstring)."""
    advice = ("this gateway admits one sequence per request, so that its cap on requests is a "
              "cap on the engine's work; send separate requests instead (each waits its turn).")
    for name in ("n", "best_of"):
        value = body.get(name)
        if value is not None and value != 1:
            raise Rejected(400, "unsupported", f'"{name}": {_short(value)} asks for '
                           f"several answers in one request; {advice}")
    if body.get("use_beam_search"):
        raise Rejected(400, "unsupported", f"beam search runs several sequences; {advice}")
    if path != "/v1/completions":
        return  # the chat endpoint reads neither "prompt" nor "prompt_embeds"
    prompt, embeds = body.get("prompt"), body.get("prompt_embeds")
    if isinstance(prompt, list) and len(prompt) > 1 and not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        raise Rejected(400, "unsupported", f'"prompt" is a list of {len(prompt)} prompts; '
                       f"{advice}")
    if isinstance(embeds, list) and len(embeds) > 1:
        raise Rejected(400, "unsupported", f'"prompt_embeds" is a list of {len(embeds)} '
                       f"prompts; {advice}")
    if not _empty(embeds) and not _empty(prompt):
        raise Rejected(400, "unsupported", 'both "prompt" and "prompt_embeds": the engine runs '
                       f"each as a sequence of its own; {advice}")


def _short(value: object) -> str:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return json.dumps(value)[:20]
    return _kind(value) if not isinstance(value, dict) else "an object"


def _empty(value: object) -> bool:
    return value is None or value == "" or value == []


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
