"""The prompt-token budget (`max_prompt_tokens`): count exactly what each endpoint renders.

A budget that counts a field the endpoint ignores refuses good requests, and one that misses
a field the endpoint uses lets long ones through, so the count follows vLLM 0.32's own
request handling, endpoint by endpoint (never by which fields happen to be present):

    /v1/chat/completions  the chat template over `messages`, with `tools`, `documents`,
                          `chat_template(_kwargs)`, `add_generation_prompt`,
                          `continue_final_message`, `add_special_tokens`, `reasoning_effort`
                          (as vLLM folds it into the template's kwargs): sent to the engine's
                          /tokenize as a chat request. `prompt` is ignored there, so here too.
    /v1/completions       `prompt` (one string, or a list of one), with `suffix` appended
                          and `add_special_tokens`; token ids are counted as they are (no
                          tokenizer needed). `messages` is ignored there, so here too.
                          `prompt_embeds` cannot be counted without the model (its length
                          is a tensor's first dimension), so with a budget it is refused.
    both                  `truncate_prompt_tokens` >= 1: the engine keeps at most that many.

What counting needs is taken from the parsed request by `prompt_of`, as bytes, before the
parsed tree is dropped; the request then holds a place in the admission (labs.gateway
.admission) while it is counted, so the requests waiting on the tokenizer are inside N + M.
The /tokenize answer lists every token id; it is read up to the length that `max_prompt_tokens`
tokens could take (labs.gateway.bound), and one longer is a prompt over the budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import httpx

from ..load.pool import ConnectionLeases
from .answers import Rejected
from .bound import tokenize_answer_cap
from .config import GatewayConfig

logger = logging.getLogger("labs.gateway")

TOKENIZE_TIMEOUT_S = 10.0
CHARS_PER_TOKEN = 4  # the estimate when the engine's /tokenize cannot answer
# TokenizeChatRequest's fields that ChatCompletionRequest renders the same way.
_CHAT_FIELDS = ("messages", "tools", "chat_template", "chat_template_kwargs",
                "add_generation_prompt", "continue_final_message", "add_special_tokens",
                "mm_processor_kwargs", "media_io_kwargs")


@dataclass(frozen=True)
class Prompt:
    """What counting a request's prompt needs, and nothing else of it."""

    token_ids: int | None     # the prompt is token ids: their number
    tokenize: bytes | None    # else the /tokenize payload, JSON
    chars: int                # characters of what is counted (for the estimate)
    truncate: int | None      # truncate_prompt_tokens >= 1


@dataclass(frozen=True)
class Count:
    tokens: int
    how: str
    at_least: bool = False  # the answer was longer than the budget's tokens could take


def prompt_of(path: str, body: Mapping[str, Any], config: GatewayConfig) -> Prompt:
    """The prompt of a validated request, as counting needs it (module docstring)."""
    truncate = body.get("truncate_prompt_tokens")
    truncate = truncate if _whole(truncate) and truncate >= 1 else None
    if path == "/v1/chat/completions":
        payload = {"model": body.get("model")}
        payload.update({k: body[k] for k in _CHAT_FIELDS if k in body})
        kwargs = dict(body["chat_template_kwargs"]) if isinstance(
            body.get("chat_template_kwargs"), dict) else {}
        effort = body.get("reasoning_effort")
        extra = {"documents": body.get("documents"), "reasoning_effort": effort}
        if effort is not None and "enable_thinking" not in kwargs:
            extra["enable_thinking"] = effort != "none"
        kwargs.update({k: v for k, v in extra.items() if v not in (None, "auto")})
        if kwargs:
            payload["chat_template_kwargs"] = kwargs
        return _tokenized(payload, config, truncate)
    if body.get("prompt_embeds") not in (None, [], ""):
        raise Rejected(400, "unsupported",
                       "this gateway counts prompt tokens (max_prompt_tokens), and the length "
                       'of "prompt_embeds" cannot be counted without the model; send the '
                       'prompt as text or token ids in "prompt".')
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a list of one prompt (of text, or of token ids)
    ids = _ids(prompt)
    if ids is not None:
        return Prompt(ids, None, 0, truncate)
    if not isinstance(prompt, str):
        return Prompt(None, None, len(json.dumps(prompt, ensure_ascii=False)), truncate)
    suffix = body.get("suffix")
    text = prompt + suffix if isinstance(suffix, str) else prompt
    payload = {"model": body.get("model"), "prompt": text}
    if isinstance(body.get("add_special_tokens"), bool):
        payload["add_special_tokens"] = body["add_special_tokens"]
    return _tokenized(payload, config, truncate)


def _tokenized(payload: dict[str, Any], config: GatewayConfig,
               truncate: int | None) -> Prompt:
    try:
        text = json.dumps(payload, ensure_ascii=False)
        data = text.encode()
    except UnicodeEncodeError:
        raise Rejected(400, "invalid", "a string in the request holds an unpaired UTF-16 "
                       "surrogate (an escape such as \\ud800 alone); send valid Unicode.") from None
    if len(data) > config.max_body_bytes:
        raise Rejected(413, "body_too_large",
                       f"the prompt takes more than {config.max_body_bytes:,} bytes "
                       "(max_body_bytes) once written out for counting; send a shorter one.")
    return Prompt(None, data, len(text), truncate)


async def count(config: GatewayConfig, upstream: ConnectionLeases, prompt: Prompt,
                headers: Sequence[tuple[bytes, bytes]]) -> Count:
    """The prompt's length in tokens: the upstream's /tokenize (the model's own tokenizer,
    chat template included), else about CHARS_PER_TOKEN characters per token."""
    if prompt.token_ids is not None:
        return _truncated(Count(prompt.token_ids, "token ids"), prompt)
    if prompt.tokenize is None:
        return _truncated(_estimate(prompt), prompt)
    budget = config.max_prompt_tokens or 0
    cap = tokenize_answer_cap(budget)
    try:
        async with upstream.lease() as client:
            async with client.stream("POST", config.upstream + "/tokenize",
                                     content=prompt.tokenize, headers=list(headers),
                                     timeout=TOKENIZE_TIMEOUT_S) as resp:
                resp.raise_for_status()
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > cap:
                        # over the budget for sure; truncate_prompt_tokens may still cut it
                        return _truncated(Count(budget + 1, "upstream /tokenize",
                                                at_least=True), prompt)
        counted = json.loads(data)["count"]
        if not _whole(counted):
            raise TypeError(f"count is {type(counted).__name__}")
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.warning("POST %s/tokenize failed (%s); estimating prompt tokens as characters "
                       "/ %d instead", config.upstream, f"{type(exc).__name__}: {exc}"[:200],
                       CHARS_PER_TOKEN)
        return _truncated(_estimate(prompt), prompt)
    return _truncated(Count(counted, "upstream /tokenize"), prompt)


def over_budget(config: GatewayConfig, counted: Count) -> Rejected | None:
    """The 413 for a prompt over max_prompt_tokens, or None."""
    budget = config.max_prompt_tokens
    if budget is None or counted.tokens <= budget:
        return None
    size = f"more than {budget}" if counted.at_least else str(counted.tokens)
    return Rejected(413, "prompt_too_long",
                    f"the prompt is {size} tokens ({counted.how}); this gateway accepts at "
                    f"most {budget} prompt tokens (max_prompt_tokens={budget}). Shorten the "
                    "prompt or the conversation history.")


def _estimate(prompt: Prompt) -> Count:
    return Count(max(1, round(prompt.chars / CHARS_PER_TOKEN)),
                 f"estimate, {CHARS_PER_TOKEN} characters per token")


def _truncated(counted: Count, prompt: Prompt) -> Count:
    if prompt.truncate is not None and counted.tokens > prompt.truncate:
        return Count(prompt.truncate, f"{counted.how}, truncated by truncate_prompt_tokens")
    return counted


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(prompt: object) -> int | None:
    """How many token ids, when the prompt is a list of whole numbers; else None."""
    if isinstance(prompt, list) and prompt and all(_whole(t) for t in prompt):
        return len(prompt)
    return None
