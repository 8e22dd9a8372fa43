"""What a request must be before it may wait for an engine slot.

Checked in order of cost, cheapest first, so a flood of bad requests costs the gateway
microseconds each and the engine nothing: the key (401), then the body's size and arrival
time (413, 408), then its shape (400), and last its prompt length, which costs a round trip
to the upstream's tokenizer (413).

One request is one sequence. `n > 1`, `best_of > 1`, beam search and a list of prompts each
ask the engine for several sequences in one request, which would let one caller take every
slot the admission bound is meant to share; the gateway refuses them with a 400 that says to
send separate requests (each then waits its turn) rather than charging several slots to one
request, which could wait for ever behind single ones or never fit (n > N).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.types import Receive

from ..connections import ConnectionLeases
from .answers import Rejected
from .config import GatewayConfig

logger = logging.getLogger("labs.gateway")

TOKENIZE_TIMEOUT_S = 10.0


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


def parse(path: str, raw: bytes) -> dict[str, Any]:
    """The request as a dict, or Rejected(400) saying what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(400, "invalid", f"the request body is not valid JSON ({exc}); send a "
                       "JSON object with Content-Type: application/json.") from None
    if not isinstance(body, dict):
        raise Rejected(400, "invalid",
                       f"the request body must be a JSON object, not {type(body).__name__}.")
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Rejected(400, "invalid",
                           'a chat request needs a non-empty "messages" list, e.g. '
                           '{"model": "...", "messages": [{"role": "user", "content": '
                           '"Hello"}]}; for a plain prompt use /v1/completions.')
    elif "prompt" not in body or body["prompt"] in (None, "", []):
        raise Rejected(400, "invalid",
                       'a completions request needs a "prompt", e.g. {"model": "...", '
                       '"prompt": "Once upon a time"}; for messages use /v1/chat/completions.')
    _one_sequence(body)
    return body


def _one_sequence(body: Mapping[str, Any]) -> None:
    """Refuse what would run several sequences under one admission slot (module docstring)."""
    advice = ("this gateway admits one sequence per request, so that its cap on requests is a "
              "cap on the engine's work; send separate requests instead (each waits its turn).")
    for name in ("n", "best_of"):
        value = body.get(name)
        if value is not None and value != 1:
            raise Rejected(400, "unsupported", f'"{name}": {json.dumps(value)[:20]} asks for '
                           f"several answers in one request; {advice}")
    if body.get("use_beam_search"):
        raise Rejected(400, "unsupported", f"beam search runs several sequences; {advice}")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) > 1 and not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        raise Rejected(400, "unsupported", f'"prompt" is a list of {len(prompt)} prompts; '
                       f"{advice}")


async def prompt_tokens(config: GatewayConfig, upstream: ConnectionLeases,
                        body: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[int, str]:
    """(prompt length in tokens, how it was counted): the upstream's /tokenize (the model's
    own tokenizer, chat template included), else about 4 characters per token."""
    model = body.get("model")
    if "messages" in body:
        payload: dict[str, Any] = {"model": model, "messages": body["messages"]}
    else:
        prompt = body["prompt"]
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return len(prompt), "token ids"
        payload = {"model": model, "prompt": prompt[0] if isinstance(prompt, list) else prompt}
    try:
        async with upstream.lease() as client:
            resp = await client.post(config.upstream + "/tokenize", json=payload,
                                     headers=dict(headers), timeout=TOKENIZE_TIMEOUT_S)
            resp.raise_for_status()
            return int(resp.json()["count"]), "upstream /tokenize"
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.warning("POST %s/tokenize failed (%s); estimating prompt tokens as characters "
                       "/ 4 instead", config.upstream, f"{type(exc).__name__}: {exc}"[:200])
        return max(1, round(_text_chars(body) / 4)), "estimate, 4 characters per token"


def _text_chars(body: Mapping[str, Any]) -> int:
    """Characters of prompt text in a chat or completions body (for the 4-per-token guess)."""
    if "messages" in body:
        total = 0
        for message in body["messages"]:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return max((len(p) for p in prompt if isinstance(p, str)), default=0)
    return len(prompt) if isinstance(prompt, str) else 0
