"""Prompts of a given length, and counting their tokens.

Nothing else in `labs.workload` talks to the server: `PromptFactory` asks the server's own
tokenizer (`POST /tokenize`, through a `TokenCounter`) how long a prompt is, because a prompt
"of 128 tokens" measured with some other tokenizer is not 128 tokens to the model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from .workload import Workload

# Common words that are one token each in most BPE vocabularies, so the random prefix has a
# nearly constant length: 6 of 64 words give 64**6 (about 7e10) different prefixes.
_PREFIX_WORDS = (
    "apple river stone cloud green house light table water music paper horse winter garden "
    "silver window bread forest summer dog cat bird road city night morning ocean mountain "
    "yellow blue red black white friend king queen story letter chair door field sun moon star "
    "tree fire snow rain wind ship train car book pencil glass metal wood sand grass fish milk "
    "honey salt lamp").split()
_FILLER = (
    "The committee reviewed the annual report and discussed several proposals for the coming "
    "year, including new training for staff, better maintenance of the old buildings, and a "
    "plan to share results with the public in a clear and timely way. ").split()
_PREFIX_LEN = 6

# (api, text) -> token count, as the model's tokenizer counts it.
TokenCounter = Callable[[str, str], Awaitable[int]]

_MAX_ADJUST_ROUNDS = 6


def chat_messages(prompt: str) -> list[dict[str, str]]:
    """The chat form of a prompt: its first line, the random prefix, as the system message.

    Without a system message, chat templates (Qwen's, SmolLM's) open with a default system
    prompt, the same tokens for every request: enough to fill a 16-token KV block that prefix
    caching would share. A system message of our own that starts with the random words
    leaves no full block in common.
    """
    head, newline, rest = prompt.partition("\n")
    if not newline:
        return [{"role": "user", "content": prompt}]
    return [{"role": "system", "content": head}, {"role": "user", "content": rest or "Go on."}]


def filler(words: int) -> str:
    """`words` words of plain, repetitive prose."""
    return " ".join(_FILLER[i % len(_FILLER)] for i in range(max(0, words)))


class PromptFactory:
    """Hands out prompt texts of about `workload.prompt_tokens` tokens, each one unique.

    The filler length is found once per (api, target) by measuring with `count_tokens` and
    adjusting, then reused: building the i-th prompt afterwards is only string concatenation,
    so nothing slow happens between a request's scheduled and actual send time.
    """

    def __init__(self, workload: Workload, count_tokens: TokenCounter | None,
                 cache: dict[tuple[str, int], int] | None = None) -> None:
        if workload.target_tokens is not None and count_tokens is None:
            raise ConfigError("a prompt_tokens target needs a token counter "
                              "(the server's /tokenize endpoint).")
        self.workload = workload
        self._count = count_tokens
        self._cache = cache if cache is not None else {}
        self._filler_words: int | None = None

    async def prepare(self) -> None:
        """Measure the filler length for the target (a few /tokenize calls, then cached)."""
        target = self.workload.target_tokens
        if target is None or self._filler_words is not None:
            return
        key = (self.workload.api, target)
        if key not in self._cache:
            self._cache[key] = await self._fit(target)
        self._filler_words = self._cache[key]

    async def _fit(self, target: int) -> int:
        assert self._count is not None
        sample = " ".join(_PREFIX_WORDS[:_PREFIX_LEN])
        base = await self._count(self.workload.api, self._text(sample, 0))  # prefix + template
        words = max(0, target - base)
        best = (abs(base - target), 0)
        for _ in range(_MAX_ADJUST_ROUNDS):
            got = await self._count(self.workload.api, self._text(sample, words))
            best = min(best, (abs(got - target), words))
            if got == target:
                break
            per_word = max(0.25, (got - base) / words) if words else 1.0
            step = round((target - got) / per_word)
            if step == 0:
                break
            words = max(0, words + step)
        return best[1]

    @staticmethod
    def _text(prefix: str, words: int) -> str:
        return f"{prefix}.\n{filler(words)}"

    def prompts(self, stream: int = 0) -> PromptStream:
        """An endless source of unique prompts; `stream` keeps warm-up and sweep levels apart."""
        if self.workload.target_tokens is not None and self._filler_words is None:
            raise RuntimeError("call `await prepare()` first")
        seed = self.workload.prefix_seed
        rng = np.random.default_rng(None if seed is None else [seed, stream])
        shared = None
        if self.workload.shared_prefix_tokens is not None:
            # Drawn once per stream: every prompt of this run shares it, and the next run's
            # differs, so re-running a cell does not find the last run's prefix cached.
            head = " ".join(_PREFIX_WORDS[i] for i in rng.integers(0, len(_PREFIX_WORDS),
                                                                    size=_PREFIX_LEN))
            shared = f"{head}. {filler(self._filler_words or 0)}"
        return PromptStream(rng, self._filler_words, shared)


@dataclass
class PromptStream:
    rng: np.random.Generator
    filler_words: int | None
    shared: str | None = None  # one system prompt for every request; its own question each

    def next(self) -> str:
        picks = self.rng.integers(0, len(_PREFIX_WORDS), size=_PREFIX_LEN)
        prefix = " ".join(_PREFIX_WORDS[i] for i in picks)
        if self.shared is not None:
            return f"{self.shared}\n{prefix}: which of these words is in the report above?"
        if self.filler_words is None:
            return f"{prefix}.\nWrite a long story about a journey across the sea."
        return PromptFactory._text(prefix, self.filler_words)
