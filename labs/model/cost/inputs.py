"""The numbers a capacity plan takes from outside the measurement: each an `Input` with its
unit and its source (a seed document, or an assumption that says so), and the hourly price
of the machine a curve was measured on (seed 004's GPU table)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

# --------------------------------------------------------------------------------------------
# Inputs: a number, its unit, and where it came from


@dataclass(frozen=True)
class Input:
    """One number the plan takes from outside the measurement."""

    name: str
    value: float
    unit: str
    source: str

    def set(self, value: float) -> Input:
        """This input with the value a learner chose: the source then says so, and keeps
        where the default came from."""
        if value == self.value or (math.isnan(value) and math.isnan(self.value)):
            return self
        return replace(self, value=value,
                       source=f"your value (the default {self.value:g} is from: {self.source})")

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.name, "value": self.value, "unit": self.unit,
                "source": self.source}


def inputs_table(inputs: Sequence[Input]) -> pd.DataFrame:
    """One row per input: name, value, unit, source."""
    return pd.DataFrame([i.to_dict() for i in inputs]).set_index("input")


SEED_SERVING = "003_1ee35b452877a9eb.txt"
SEED_DEPLOYMENT = "004_7f1ae39a2077415d.txt"

TTFT_MULTIPLE = Input(
    "p95 TTFT limit", 10.0, "x the median TTFT of one user alone",
    "course choice: a multiple, so one rule fits any machine; one user alone waits ~45-85 ms "
    "on the CPU default and ~50 ms on the article's card (datasheet prediction), so 10x is "
    f"~0.5-0.9 s, about the chat target of seed {SEED_SERVING} (TTFT 'under 500 milliseconds "
    "or the experience feels sluggish')")
READING_WORDS_PER_S = Input(
    "reading speed", 5.0, "words/s",
    "Brysbaert (2019), 'How many words do we read per minute?', Journal of Memory and "
    "Language 109: adults read English silently at ~238 words/min (~4 words/s) on average; "
    "5 words/s (300 words/min) leaves room for a fast reader")
TOKENS_PER_WORD = Input(
    "tokens per word", 4 / 3, "tokens/word",
    "OpenAI's rule of thumb for English text (1 token is about 0.75 words); other languages "
    "and tokenizers take more")
USERS = Input(
    "concurrent users to serve", 500, "users",
    f"the scenario of seed {SEED_SERVING}: '500 concurrent users at 20 tokens per second "
    "each' (its 20 tok/s is a streaming target, three times faster than anyone reads)")
ARTICLE_CARD_USD_PER_HOUR = Input(
    "RTX 4000 Ada (article's card), price", 0.50, "USD/hour",
    f"seed {SEED_DEPLOYMENT} (2025), GPU table: $0.50/hr is its RTX 4090 row, the other "
    "Ada-generation card in it; no seed prices the RTX 4000 Ada itself (the table's '7B "
    "production' card, the A10, is $1.50/hr). Check your provider's price for the "
    "article's node type, g2-gpu-rtx4000a1-m")
API_USD_PER_MILLION = Input(
    "managed API, price", 0.50, "USD per million output tokens",
    f"seed {SEED_DEPLOYMENT}, '2025 (Current)': distilled models at $0.10-0.50/1M, the tier "
    "a 7B model competes in (production models $1-3/1M, frontier $10-15/1M; seed "
    f"{SEED_SERVING}: GPT-4 Turbo $30/1M output tokens in 2024)")
CPU_USD_PER_HOUR = Input(
    "this machine, price", 0.10, "USD/hour",
    "an assumption, not from a seed (none prices a CPU machine): the order of an on-demand "
    "2-vCPU, 8 GiB general-purpose cloud VM in 2025. Put your own")
THINK_S = Input(
    "think time between a user's requests", 30.0, "s",
    "an assumption, not from a seed: a chat user reads the answer while it streams (at reading "
    "speed, so the reading ends about when the answer does), then types the next question; "
    "~20 words at ~40 words/min is ~30 s. An agent or a batch job thinks ~0 s; a user who "
    "reads, leaves and comes back later thinks minutes. Put your users' own figure")
LINK_GBIT_S = Input(
    "download link for the weights", 1.0, "Gbit/s",
    "an assumption: a 1 Gbit/s path from the model hub or an object store to the node")

# Seed 004's GPU table (2025): card -> USD per hour, most specific name first (an A100 80GB
# before an A100; "A10" must not match "A100").
SEED_GPU_USD_PER_HOUR: tuple[tuple[str, str, float], ...] = (
    # (row as the seed writes it, pattern on the nvidia-smi name, USD/hour)
    ("H200 141GB", r"H200", 15.00),
    ("H100 80GB", r"H100", 10.00),
    ("A100 80GB", r"A100.*80", 6.00),
    ("A100 40GB", r"A100", 4.00),
    ("L40S", r"L40S", 2.00),
    ("A10", r"\bA10G?\b", 1.50),
    ("RTX 4090", r"4090", 0.50),
)


def gpu_price(gpu_name: str) -> Input | None:
    """Seed 004's hourly price for the GPU `nvidia-smi` calls `gpu_name` (the article's card
    gets `ARTICLE_CARD_USD_PER_HOUR`), or None when no seed prices it."""
    if re.search(r"RTX 4000 ADA", gpu_name.upper()):
        return replace(ARTICLE_CARD_USD_PER_HOUR, name=f"this machine ({gpu_name}), price")
    for row, pattern, usd in SEED_GPU_USD_PER_HOUR:
        if re.search(pattern, gpu_name.upper()):
            return Input(f"this machine ({gpu_name}), price", usd, "USD/hour",
                         f"seed {SEED_DEPLOYMENT} (2025), GPU table, row '{row}': ${usd:.2f}/hr")
    return None


def this_machine_price(backend: str, gpu_names: Sequence[str] = ()) -> Input:
    """The hourly price to put on the machine the curve was measured on: the CPU assumption
    on the CPU path, the seeds' price of its (first) GPU, which is the one a course server
    runs on, and NaN (with a source that says to set it) for a GPU no seed prices, rather
    than a made-up figure."""
    if backend != "gpu" or not gpu_names:
        return CPU_USD_PER_HOUR
    found = gpu_price(gpu_names[0])
    if found is not None:
        return found
    return Input(f"this machine ({gpu_names[0]}), price", math.nan, "USD/hour",
                 "no seed prices this GPU: set the machine's price yourself")
