"""Connection details, token counting, metadata: which server and model a run talks to, how
its prompts are measured (the server's /tokenize, or an estimate), and the server's version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ...errors import ConfigError, ServerNotRunning
from ...serving.connect import Connection
from ...workload import TokenCounter, chat_messages


def _resolve(conn: Connection | None, base_url: str | None, api_key: str | None,
             model: str | None) -> tuple[str, str | None, str | None, str | None]:
    """(base_url, api_key, model, profile): explicit arguments win over `conn`."""
    if conn is not None:
        base_url = base_url or conn.base_url
        api_key = api_key if api_key is not None else conn.api_key
        model = model or conn.model
    if base_url is None:
        raise ConfigError("no server given: pass conn=labs.connect() or base_url=...")
    base_url = base_url.rstrip("/").removesuffix("/v1")
    return base_url, api_key, model, conn.profile if conn else None


async def _discover_model(client: httpx.AsyncClient, base_url: str,
                          headers: Mapping[str, str]) -> str:
    try:
        resp = await client.get(base_url + "/v1/models", headers=headers, timeout=10.0)
        resp.raise_for_status()
        return resp.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise ServerNotRunning(f"could not learn the model name from {base_url}/v1/models "
                               f"({exc}); pass model=... or conn=labs.connect().") from None


def tokenize_payload(api: str, model: str, text: str) -> dict[str, Any]:
    """The body of vLLM's `POST /tokenize` for a prompt as the load generator sends it: the
    chat form (template included in the count) or a plain completions prompt."""
    if api == "chat":
        return {"model": model, "messages": chat_messages(text)}
    return {"model": model, "prompt": text}


def server_token_counter(client: httpx.AsyncClient, base_url: str, model: str,
                         headers: Mapping[str, str]) -> TokenCounter:
    """Count with the server's tokenizer (`POST /tokenize`, served at the root by vLLM).

    For chat the count includes the chat template, as the server will apply it.
    """

    async def count(api: str, text: str) -> int:
        resp = await client.post(base_url + "/tokenize", json=tokenize_payload(api, model, text),
                                 headers=headers, timeout=30.0)
        resp.raise_for_status()
        return int(resp.json()["count"])

    return count


async def _estimate_tokens(api: str, text: str) -> int:
    """Fallback when /tokenize is not there: about 4 characters per token."""
    return max(1, round(len(text) / 4))


async def _vllm_version(client: httpx.AsyncClient, base_url: str,
                        headers: Mapping[str, str]) -> str | None:
    try:
        resp = await client.get(base_url + "/version", headers=headers, timeout=5.0)
        return str(resp.json()["version"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
