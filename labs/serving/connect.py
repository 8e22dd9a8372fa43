"""Find the live server and hand out clients for it.

`connect()` is the first call of every notebook: it finds the server (LABS_BASE_URL, else the
one `python -m labs serve` recorded, else the default port), checks that it answers, and
learns the served model's name from /v1/models. If nothing answers, the learner gets one
sentence with the command that starts a server, not a connection-refused traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import ServerNotRunning
from ..settings import Settings
from .server import running_server


@dataclass(frozen=True)
class Connection:
    base_url: str
    model: str
    model_root: str
    api_key: str = field(repr=False)
    profile: str | None = None

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def openai(self, **kwargs: Any):
        """An `openai.OpenAI` client pointed at this server."""
        from openai import OpenAI  # heavy: openai only when its SDK client is asked for

        return OpenAI(base_url=self.api_url, api_key=self.api_key, **kwargs)

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)


def connect(settings: Settings | None = None, timeout_s: float = 5.0) -> Connection:
    """Connect to the live server, or raise ServerNotRunning saying how to start one."""
    settings = settings or Settings.from_env()
    record = None if settings.base_url_override else running_server(settings)
    base_url = record.base_url if record else settings.base_url
    hint = ("start one with `python -m labs serve` (or `make lab`), "
            "or set LABS_BASE_URL to a server that is up")
    try:
        with httpx.Client(timeout=timeout_s, headers={
                "Authorization": f"Bearer {settings.api_key}"}) as http:
            http.get(base_url + "/health").raise_for_status()
            models = http.get(base_url + "/v1/models")
    except httpx.HTTPError as exc:
        raise ServerNotRunning(f"no vLLM server answers at {base_url} ({exc}); {hint}.") from None
    if models.status_code == 401:
        raise ServerNotRunning(
            f"the server at {base_url} rejected the API key; set LABS_API_KEY to its key.")
    models.raise_for_status()
    first = models.json()["data"][0]
    return Connection(
        base_url=base_url,
        model=first["id"],
        model_root=first.get("root") or first["id"],
        api_key=settings.api_key,
        profile=record.profile if record else None,
    )
