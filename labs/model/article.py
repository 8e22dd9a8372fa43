"""The source article's figures, in one place, so notebooks can put them beside ours.

"Stop treating your LLM like a web server" (Akamai, June 2026): one NVIDIA RTX 4000 Ada
(20 GB), Qwen2.5-7B-Instruct in bf16, vLLM on Kubernetes. Its inputs are quoted as written;
notebook 02 checks them against datasheets (the card is usually listed at 360 GB/s, and the
model's bf16 weights are ~15.2 GB).
"""

from __future__ import annotations

import pandas as pd

GPU = "NVIDIA RTX 4000 Ada (20 GB)"
MODEL = "Qwen/Qwen2.5-7B-Instruct"
BANDWIDTH_GBS = 480.0          # as the article states it
WEIGHTS_GB = 14.0              # as the article states it
CEILING_TOK_S = 34.28          # 480 / 14
MEASURED_SINGLE_STREAM_TOK_S = (28.0, 30.0)
FIRST_REQUEST_TTFT_S = 0.25

# Concurrent users -> (aggregate tok/s, per-user tok/s)
BATCHING = {1: (34.0, 34.0), 32: (525.0, 16.0), 64: (1041.0, 16.0)}

NUM_GPU_BLOCKS = 2426
BLOCK_SIZE = 16
POOL_TOKENS = 38_816           # 2426 x 16
KV_USERS = 32
KV_PROMPT_TOKENS = 4_000
KV_DEMAND_TOKENS = 128_000     # 32 x 4,000: 3.3x the pool
KV_TTFT_PLATEAU_S = 55.0
KV_FAST_REQUESTS = 9           # "the first nine or so requests landed in a few seconds"

BOUNDED_FLAGS = ("--max-num-seqs=8", "--max-model-len=8192")
# The article gives no numbers for the bounded run ("admitted requests stay near baseline").
# Its repository's demo notes (akamai-developers/vllm-on-lke, demo/README.md) state, for the
# same 32 x 4,000-token load: "TTFT for the 8 admitted requests stays around 2-4s". Stated, not
# a published measurement; a different workload from notebook 05's.
BOUNDED_ADMITTED_TTFT_S = (2.0, 4.0)


def batching_table() -> pd.DataFrame:
    """The article's batching table, in the same columns as `labs.results.records.sweep_frame`."""
    return pd.DataFrame(
        [{"concurrency": c, "agg_tok_s": a, "per_user_tok_s": u} for c, (a, u) in BATCHING.items()]
    )
