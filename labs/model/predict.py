"""`python -m labs predict`: what a closed-loop run will measure, before running it.

From this server's calibration (`labs.calibration`), or from datasheets alone
(`--gpu NAME --model ID`: a roofline, `labs.model.steps.RooflineSteps`), the replay of
`labs.simulate` predicts each concurrency level of a `labs bench` run, in its columns.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..workload import BENCH_REQUESTS_RULE
from .ceiling import GB, get_gpu, head_dim, model_config, model_size
from .simulate import predict_closed
from .steps import RooflineSteps, ServerLimits, scheduler_defaults

# Assumptions of the datasheet model, stated once. vLLM on a GPU spends about a millisecond
# or two per step outside the kernels (scheduling, sampling, CUDA-graph launch), and keeps
# back some memory for activations and graphs beyond the weights.
GPU_STEP_OVERHEAD_S = 0.002
GPU_REQUEST_OVERHEAD_S = 0.010
GPU_MEMORY_UTILIZATION = 0.90  # vLLM's --gpu-memory-utilization default
GPU_ACTIVATION_RESERVE_GB = 0.55  # what makes 20 GB - 15.2 GB of Qwen2.5-7B the article's
#                                   2,426 blocks x 16 (38,816 tokens); an assumption elsewhere
GPU_BLOCK_SIZE = 16
DATASHEET_ASSUMPTIONS = (
    f"{GPU_STEP_OVERHEAD_S * 1e3:.0f} ms per step beyond max(bytes/bandwidth, FLOPs/peak); "
    f"{GPU_REQUEST_OVERHEAD_S * 1e3:.0f} ms per request outside the engine; "
    f"KV pool = {GPU_MEMORY_UTILIZATION:.0%} of memory - weights - "
    f"{GPU_ACTIVATION_RESERVE_GB} GB, in blocks of {GPU_BLOCK_SIZE}")


def datasheet_steps(gpu_name: str, model: str, dtype: str | None = None) -> RooflineSteps:
    """The roofline step of `model` on `gpu_name`, from the datasheet and the model config."""
    gpu = get_gpu(gpu_name)
    size = model_size(model, dtype)
    if size.kv_bytes_per_token is None:
        raise ConfigError(f"{model}: no config.json, so no KV size; give a model folder or id.")
    if not gpu.peak_bf16_tflops:
        raise ConfigError(f"{gpu.name} has no peak FLOP/s on record.")
    return RooflineSteps(
        bandwidth_gbs=gpu.bandwidth_gbs, peak_tflops=gpu.peak_bf16_tflops,
        step_bytes=float(size.step_bytes or size.weight_bytes),
        kv_bytes_per_token=float(size.kv_bytes_per_token), active_params=float(size.params),
        overhead_s=GPU_STEP_OVERHEAD_S, request_overhead_s=GPU_REQUEST_OVERHEAD_S,
        source=f"{gpu.source}; {size.model} ({size.source}); {DATASHEET_ASSUMPTIONS}",
        attention_flops_per_pair=_attention_flops_per_pair(model))


def datasheet_limits(gpu_name: str, model: str, dtype: str | None = None, *,
                     num_blocks: int | None = None, max_model_len: int | None = None,
                     max_num_seqs: int | None = None) -> ServerLimits:
    """The limits vLLM would pick for `model` on `gpu_name` with the article's flags."""
    gpu = get_gpu(gpu_name)
    size = model_size(model, dtype)
    assert size.kv_bytes_per_token is not None
    free = gpu.memory_gb * GPU_MEMORY_UTILIZATION - size.weight_bytes / GB \
        - GPU_ACTIVATION_RESERVE_GB
    blocks = num_blocks or math.floor(free * GB / (size.kv_bytes_per_token * GPU_BLOCK_SIZE))
    if blocks < 1:
        raise ConfigError(f"{size.model} ({size.weight_bytes / GB:.1f} GB) leaves no room for "
                          f"a KV cache on {gpu.name} ({gpu.memory_gb} GB).")
    seqs, tokens = scheduler_defaults("gpu", gpu.memory_gb * GB / 2**30, gpu.name)
    length = max_model_len or (model_config(model) or {}).get("max_position_embeddings") or 32768
    return ServerLimits(num_blocks=int(blocks), block_size=GPU_BLOCK_SIZE,
                        max_model_len=int(min(length, blocks * GPU_BLOCK_SIZE)),
                        max_num_seqs=max_num_seqs or seqs, max_num_batched_tokens=tokens,
                        source="datasheet: " + DATASHEET_ASSUMPTIONS
                        + (f"; pool pinned at {num_blocks} blocks" if num_blocks else ""))


def _attention_flops_per_pair(model: str) -> float:
    """4 x layers x heads x head_dim: QK^T and AV, 2 FLOPs per multiply-add each."""
    config = model_config(model)
    if not config:
        return 0.0
    return 4.0 * config["num_hidden_layers"] * config["num_attention_heads"] * head_dim(config)


def prediction_table(cost: Any, limits: ServerLimits, levels: list[int], *,
                     prompt_tokens: int, max_tokens: int,
                     requests_per_level: int | None = None) -> pd.DataFrame:
    return pd.DataFrame(predict_closed(cost, limits, levels, prompt_tokens=prompt_tokens,
                                       max_tokens=max_tokens,
                                       requests_per_level=requests_per_level))


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..load.loadgen import parse_levels  # heavy: httpx only for the CLI verb

    levels = parse_levels(args.concurrency)
    if args.max_tokens < 1 or args.prompt_tokens < 1:
        raise ConfigError("--max-tokens and --prompt-tokens must be at least 1.")
    if (args.gpu is None) != (args.model is None):
        raise ConfigError("--gpu and --model go together (a datasheet prediction); give "
                          "neither to predict from this server's calibration.")
    if args.gpu:
        cost: Any = datasheet_steps(args.gpu, args.model)
        limits = datasheet_limits(args.gpu, args.model, num_blocks=args.num_gpu_blocks)
        source = f"datasheet roofline: {args.gpu}, {args.model}"
    else:
        from . import calibration  # heavy: httpx only for the CLI verb
        cal = calibration.load(args.calibration)
        cost, limits = cal.steps, cal.limits
        source = f"calibration of {cal.model} on {cal.hardware}, {cal.measured_at}"
    table = prediction_table(cost, limits, levels, prompt_tokens=args.prompt_tokens,
                             max_tokens=args.max_tokens,
                             requests_per_level=args.requests_per_level)
    if args.json:
        print(json.dumps({"source": source, "limits": limits.to_dict(),
                          "steps": cost.to_dict(),
                          "rows": table.to_dict(orient="records")}))
        return 0
    print(f"predicted from the {source}")
    print(f"{args.prompt_tokens} prompt tokens, {args.max_tokens} output tokens, closed loop")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return 0


def add_cli(verbs: Any) -> None:
    p = verbs.add_parser("predict", help="predict a `labs bench` run from the calibration "
                         "(or from a GPU's datasheet)", description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="1,4,16,64", help="levels (default 1,4,16,64)")
    p.add_argument("--max-tokens", type=int, default=64, help="output tokens (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt tokens (default 128)")
    p.add_argument("--requests-per-level", type=int, default=None, metavar="N",
                   help=f"requests at each level (default as labs bench: {BENCH_REQUESTS_RULE})")
    p.add_argument("--gpu", default=None, help="predict from this GPU's datasheet instead")
    p.add_argument("--model", default=None, help="model id or folder, with --gpu")
    p.add_argument("--num-gpu-blocks", type=int, default=None, metavar="N",
                   help="with --gpu: pin the KV pool (the article's card had 2,426)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="calibration file (default <results>/calibration.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_predict)
