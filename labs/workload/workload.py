"""The workload: what every request asks for (API, prompt and answer lengths, shared prefixes,
cache salts), the JSON body it sends, and the batches a static batcher would cut lengths into."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from .prompts import chat_messages
from .values import positive_int

API_KINDS = ("chat", "completions")


@dataclass(frozen=True)
class Workload:
    """What every request asks for.

    api            "chat" (/v1/chat/completions) or "completions" (/v1/completions)
    prompt_tokens  about this many prompt tokens, measured with the server's tokenizer (for
                   chat, chat template included); None: a one-line prompt
    max_tokens     output length: one number, or several to draw from (uniformly, seeded by
                   `seed`) for a mixed workload; with `ignore_eos` every answer is exactly as
                   long as asked, so two runs do the same work whatever the model says
    in_order       with several max_tokens values: hand them out in the order given (then
                   again from the start) instead of drawing them, so two runs of the same
                   list do exactly the same requests (static against continuous batching)
    prefix_seed    every prompt starts with random words so prefix caching cannot help;
                   None (default) draws new ones each run, so re-running a cell does not hit
                   the cache the last run warmed; an int makes prompts reproducible
    shared_prefix_tokens  instead, every prompt opens with the same system prompt of about
                   this many tokens, followed by a short question of its own (random words):
                   what prefix caching shares (notebook 06); excludes prompt_tokens
    salt_each_request  every request carries a `cache_salt` of its own (vLLM's per-request
                   cache isolation, meant for tenants who must not see each other's prefixes):
                   prefix caching stays on, yet no request can use another's blocks. Notebook
                   06's control, on the same server as the cached run: the one difference
                   between the two runs is whether prompts can share blocks
    """

    api: Literal["chat", "completions"] = "chat"
    prompt_tokens: int | None = None
    max_tokens: int | tuple[int, ...] = 64
    ignore_eos: bool = True
    temperature: float = 0.0
    seed: int = 0
    prefix_seed: int | None = None
    in_order: bool = False
    shared_prefix_tokens: int | None = None
    salt_each_request: bool = False

    def __post_init__(self) -> None:
        if self.api not in API_KINDS:
            raise ConfigError(f"api={self.api!r} is not valid; use one of: {', '.join(API_KINDS)}.")
        if self.prompt_tokens is not None:
            positive_int(self.prompt_tokens, "Workload prompt_tokens")
        if self.shared_prefix_tokens is not None:
            positive_int(self.shared_prefix_tokens, "Workload shared_prefix_tokens")
            if self.prompt_tokens is not None:
                raise ConfigError("give prompt_tokens (unique prompts of that length) or "
                                  "shared_prefix_tokens (one shared system prompt, then a "
                                  "short question), not both.")
        if isinstance(self.max_tokens, Sequence) and not isinstance(self.max_tokens, str):
            values = tuple(positive_int(v, "each max_tokens value") for v in self.max_tokens)
            if not values:
                raise ConfigError("max_tokens needs at least one value.")
            object.__setattr__(self, "max_tokens", values if len(values) > 1 else values[0])
        else:
            positive_int(self.max_tokens, "Workload max_tokens")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ConfigError(f"temperature must be 0 or more, not {self.temperature!r}.")

    @property
    def label(self) -> str:
        out = (f"{min(self.max_tokens)}-{max(self.max_tokens)} mixed"
               if isinstance(self.max_tokens, tuple) else str(self.max_tokens))
        prompt = (f"{self.prompt_tokens}" if self.prompt_tokens else
                  f"shared {self.shared_prefix_tokens} + short" if self.shared_prefix_tokens
                  else "short")
        salted = " salted" if self.salt_each_request else ""
        return f"{self.api} in={prompt}{salted} out={out}"

    @property
    def target_tokens(self) -> int | None:
        """The length the prompt filler is fitted to: the whole prompt, or the shared part."""
        return self.prompt_tokens if self.prompt_tokens is not None else self.shared_prefix_tokens

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    def output_lengths(self, stream: int = 0) -> Iterator[int]:
        """max_tokens for request 0, 1, 2...: the same draws for the same seed and stream."""
        if isinstance(self.max_tokens, int):
            return itertools.repeat(self.max_tokens)
        if self.in_order:
            return itertools.cycle(self.max_tokens)
        values = np.asarray(self.max_tokens)
        rng = np.random.default_rng([self.seed, stream])

        def draws() -> Iterator[int]:
            while True:
                yield from rng.choice(values, size=256).tolist()

        return draws()

    def body(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        """The JSON body of one streaming request (usage asked for in the last chunk)."""
        body: dict[str, Any] = {"model": model}
        if self.api == "chat":
            body["messages"] = chat_messages(prompt)
        else:
            body["prompt"] = prompt
        body.update(
            max_tokens=int(max_tokens),
            temperature=self.temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        if self.ignore_eos:
            body["ignore_eos"] = True  # vLLM extension: generate exactly max_tokens
        if self.salt_each_request:
            body["cache_salt"] = secrets.token_hex(8)  # vLLM extension: a cache of its own
        return body

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workload:
        fields = dict(data)
        if isinstance(fields.get("max_tokens"), list):
            fields["max_tokens"] = tuple(fields["max_tokens"])
        return cls(**fields)


def in_batches(lengths: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """`lengths` cut into consecutive batches of `size` (the last may be shorter): the batches
    a static batcher would run, in order."""
    return [tuple(lengths[i:i + size]) for i in range(0, len(lengths), size)]
