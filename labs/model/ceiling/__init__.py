"""Serving arithmetic: why one stream cannot decode faster than memory can be read.

The article ("Stop treating your LLM like a web server") argues from one division: every
decode step of one sequence reads all the weights once, plus the KV cache of the context
so far, so

    decode ceiling (tok/s, one stream) = memory bandwidth / bytes read per step

(480 GB/s / 14 GB = 34.3 tok/s), and from one multiplication: the KV pool holds
num_gpu_blocks x block_size tokens (2,426 x 16 = 38,816) while 32 users x 4,000 tokens ask
for 128,000, 3.3x what exists. This package makes the division computable for any model and
GPU, from a datasheet (`GPUS`), a measurement (`measure_bandwidth`) or a number you type; the
multiplication is `labs.model.steps.ServerLimits.pool_tokens`, of the pool a server reports.

GB here is decimal (1e9 bytes) and GB/s is 1e9 bytes/s, as on every GPU datasheet.
Weights are counted from safetensors headers (no tensor is loaded) or from a Hugging Face
config; the counting covers Llama/Qwen2/Qwen3/Mistral-style dense decoders with GQA.

Its modules: `anatomy` (dtypes, parameter and KV counting, safetensors headers, finding a
model's files), `arithmetic` (the ceiling), `datasheets` (GPUs), `bandwidth` (the
measurement) and `cli` (`python -m labs ceiling`).
"""

from __future__ import annotations

from .anatomy import (
    DTYPE_BYTES,
    GB,
    KNOWN_MODELS,
    ModelSize,
    WeightFiles,
    bytes_per_param,
    config_dtype,
    count_parameters,
    head_dim,
    hf_cache_folder,
    kv_bytes_per_token,
    kv_heads,
    model_config,
    model_folder,
    model_size,
    read_safetensors_header,
    safetensors_weights,
    step_bytes_of,
    weight_bytes_from_config,
)
from .arithmetic import bytes_per_step, ceiling_report, decode_ceiling_tok_s
from .bandwidth import BandwidthMeasurement, measure_bandwidth
from .cli import add_cli
from .datasheets import GPUS, GpuProfile, get_gpu

__all__ = [
    "GB", "DTYPE_BYTES", "KNOWN_MODELS", "GPUS", "GpuProfile", "get_gpu", "bytes_per_param",
    "config_dtype", "head_dim", "kv_heads", "count_parameters", "kv_bytes_per_token",
    "weight_bytes_from_config", "step_bytes_of", "model_folder", "model_config",
    "hf_cache_folder", "read_safetensors_header", "WeightFiles",
    "safetensors_weights", "ModelSize", "model_size", "bytes_per_step",
    "decode_ceiling_tok_s", "ceiling_report",
    "BandwidthMeasurement", "measure_bandwidth", "add_cli",
]
