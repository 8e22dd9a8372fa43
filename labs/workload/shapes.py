"""What load to offer: the arrival shape (when requests go out) and the workload (what they say).

Both are small frozen values with a readable `label`, so a result file says exactly what was
measured and a sweep is just a list of shapes. Nothing here talks to the server except
`PromptFactory`, which asks the server's own tokenizer (`POST /tokenize`) how long a prompt is:
a prompt "of 128 tokens" measured with some other tokenizer is not 128 tokens to the model.

Shapes:
    Burst(n)                      n requests sent at the same instant (the article's test)
    Closed(concurrency, ...)      a fixed number of users, each sending the next request as
                                  soon as the last one finished (a closed loop)
    Poisson(rate_rps, ...)        open loop: arrivals at random times on an absolute clock, so
                                  a slow server cannot slow the arrivals down (it can in a
                                  closed loop, which is why closed loops hide queueing)
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError

API_KINDS = ("chat", "completions")

# --------------------------------------------------------------------------------------------
# Shapes


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{what} must be a whole number of at least 1, not {value!r}.")
    return int(value)


def _positive_float(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]  # any caller input, checked by the except
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} must be a number greater than 0, not {value!r}.")
    return number


def _check_stop(requests: int | None, duration_s: float | None, shape: str) -> None:
    if requests is None and duration_s is None:
        raise ConfigError(f"{shape} needs requests=N or duration_s=SECONDS (or both) "
                          "to know when to stop.")
    if requests is not None:
        _positive_int(requests, f"{shape} requests")
    if duration_s is not None:
        _positive_float(duration_s, f"{shape} duration_s")


@dataclass(frozen=True)
class Burst:
    """`n` requests at the same instant: the shape of the article's "32 users" test."""

    n: int

    def __post_init__(self) -> None:
        _positive_int(self.n, "Burst n")

    @property
    def label(self) -> str:
        return f"burst {self.n}"

    @property
    def concurrency(self) -> int:
        return self.n

    @property
    def requests(self) -> int:
        return self.n

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "burst", **asdict(self)}


@dataclass(frozen=True)
class Closed:
    """`concurrency` users in a closed loop: each sends again the moment its answer is done.

    Stops after `requests` in total or `duration_s` seconds (no new request starts after
    that; the ones in flight finish), whichever comes first.
    """

    concurrency: int
    requests: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self.concurrency, "Closed concurrency")
        _check_stop(self.requests, self.duration_s, "Closed")

    @property
    def label(self) -> str:
        return f"closed c={self.concurrency}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "closed", **asdict(self)}


# `labs bench`'s requests per level when --requests-per-level is not given; `labs predict` and
# `labs.simulate.predict_closed` replay the same count, so a prediction and a bench compare.
BENCH_REQUESTS_PER_USER = 4
BENCH_MIN_REQUESTS = 8
BENCH_REQUESTS_RULE = f"{BENCH_REQUESTS_PER_USER} x concurrency, at least {BENCH_MIN_REQUESTS}"


def bench_requests(concurrency: int) -> int:
    """Requests `labs bench` sends at a level of `concurrency` users by default (the rule in
    BENCH_REQUESTS_RULE): 8 at 1 user, 128 at 32."""
    return max(BENCH_MIN_REQUESTS, BENCH_REQUESTS_PER_USER * concurrency)


@dataclass(frozen=True)
class Poisson:
    """Open-loop arrivals at `rate_rps` on average, exponential gaps from a seeded generator.

    Send times are fixed in advance on an absolute clock; each record keeps the scheduled and
    the actual send time, so a client that falls behind shows up as lag, not as a quietly
    lower rate. `max_concurrency` caps requests in flight (arrivals wait for a slot, which
    also shows up as lag), as `vllm bench serve --max-concurrency` does.
    """

    rate_rps: float
    requests: int | None = None
    duration_s: float | None = None
    seed: int = 0
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        _positive_float(self.rate_rps, "Poisson rate_rps")
        _check_stop(self.requests, self.duration_s, "Poisson")
        if self.max_concurrency is not None:
            _positive_int(self.max_concurrency, "Poisson max_concurrency")

    @property
    def label(self) -> str:
        cap = f" max {self.max_concurrency}" if self.max_concurrency else ""
        return f"poisson {self.rate_rps:g} rps{cap}"

    @property
    def concurrency(self) -> int | None:
        return self.max_concurrency

    def arrival_times_s(self) -> np.ndarray:
        """Send times in seconds from the run start; the first request goes at 0."""
        rng = np.random.default_rng(self.seed)
        limit = self.requests if self.requests is not None else math.inf
        horizon = self.duration_s if self.duration_s is not None else math.inf
        times: list[np.ndarray] = []
        last, count = 0.0, 0
        while count < limit:
            batch = int(min(limit - count, 4096))
            gaps = rng.exponential(1.0 / self.rate_rps, size=batch)
            if not count:
                gaps[0] = 0.0  # the first request goes at t=0
            chunk = last + np.cumsum(gaps)
            if math.isfinite(horizon):
                chunk = chunk[chunk < horizon]
            times.append(chunk)
            count += len(chunk)
            if len(chunk) < batch:
                break
            last = float(chunk[-1])
        return np.concatenate(times) if times else np.zeros(0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "poisson", **asdict(self)}


Shape = Burst | Closed | Poisson
_SHAPES: dict[str, type] = {"burst": Burst, "closed": Closed, "poisson": Poisson}


def shape_from_dict(data: Mapping[str, Any]) -> Shape:
    """Rebuild a shape from `shape.to_dict()` (used when loading a result file)."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in _SHAPES:
        raise ConfigError(f"unknown load shape {kind!r}; use one of: {', '.join(_SHAPES)}.")
    return _SHAPES[kind](**fields)


# --------------------------------------------------------------------------------------------
# Workload


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
            _positive_int(self.prompt_tokens, "Workload prompt_tokens")
        if self.shared_prefix_tokens is not None:
            _positive_int(self.shared_prefix_tokens, "Workload shared_prefix_tokens")
            if self.prompt_tokens is not None:
                raise ConfigError("give prompt_tokens (unique prompts of that length) or "
                                  "shared_prefix_tokens (one shared system prompt, then a "
                                  "short question), not both.")
        if isinstance(self.max_tokens, Sequence) and not isinstance(self.max_tokens, str):
            values = tuple(_positive_int(v, "each max_tokens value") for v in self.max_tokens)
            if not values:
                raise ConfigError("max_tokens needs at least one value.")
            object.__setattr__(self, "max_tokens", values if len(values) > 1 else values[0])
        else:
            _positive_int(self.max_tokens, "Workload max_tokens")
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


# --------------------------------------------------------------------------------------------
# Prompts of a given length

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


def in_batches(lengths: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """`lengths` cut into consecutive batches of `size` (the last may be shorter): the batches
    a static batcher would run, in order."""
    return [tuple(lengths[i:i + size]) for i in range(0, len(lengths), size)]


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
