"""Serving arithmetic: why one stream cannot decode faster than memory can be read.

The article ("Stop treating your LLM like a web server") argues from one division: every
decode step of one sequence reads all the weights once, plus the KV cache of the context
so far, so

    decode ceiling (tok/s, one stream) = memory bandwidth / bytes read per step

(480 GB/s / 14 GB = 34.3 tok/s), and from one multiplication: the KV pool holds
num_gpu_blocks x block_size tokens (2,426 x 16 = 38,816) while 32 users x 4,000 tokens ask
for 128,000, 3.3x what exists. This module makes the division computable for any model and
GPU, from a datasheet (`GPUS`), a measurement (`measure_bandwidth`) or a number you type; the
multiplication is `labs.model.steps.ServerLimits.pool_tokens`, of the pool a server reports.

GB here is decimal (1e9 bytes) and GB/s is 1e9 bytes/s, as on every GPU datasheet.
Weights are counted from safetensors headers (no tensor is loaded) or from a Hugging Face
config; the counting covers Llama/Qwen2/Qwen3/Mistral-style dense decoders with GQA.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import struct
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...settings import Settings, gpu_present

GB = 1e9  # decimal, as datasheets use

# Bytes one parameter (or one KV element) takes in each dtype vLLM's --dtype and
# --kv-cache-dtype accept, plus the quantized widths the article's sizing talks about.
DTYPE_BYTES: dict[str, float] = {
    "float32": 4, "fp32": 4, "float": 4,
    "bfloat16": 2, "bf16": 2,
    "float16": 2, "fp16": 2, "half": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1,
    "int4": 0.5,
}

# Configs the CLI knows without a download, so `--model Qwen/Qwen2.5-7B-Instruct` works on a
# machine that cannot reach the hub. Copied from the model's config.json on the hub.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-7B-Instruct": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    },
}


# --- dtypes -------------------------------------------------------------------------------

def bytes_per_param(dtype: str) -> float:
    """Bytes per parameter (or KV element) for `dtype`; ConfigError lists the valid names."""
    key = str(dtype).lower().removeprefix("torch.")
    try:
        return DTYPE_BYTES[key]
    except KeyError:
        valid = ", ".join(DTYPE_BYTES)
        raise ConfigError(f"unknown dtype {dtype!r}; valid dtypes: {valid}.") from None


def config_dtype(config: Mapping[str, Any]) -> str | None:
    """The dtype a config was saved in (`dtype` in transformers 5, `torch_dtype` before)."""
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value) if value else None


# --- counting parameters and KV bytes ----------------------------------------------------

def _require(config: Mapping[str, Any], key: str) -> int:
    try:
        return int(config[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"the model config has no usable {key!r}; parameter counting needs a "
            "Llama/Qwen2-style config (hidden_size, intermediate_size, num_hidden_layers, "
            "num_attention_heads, vocab_size)."
        ) from None


def head_dim(config: Mapping[str, Any]) -> int:
    """Per-head width: `head_dim` when the config says so, else hidden / attention heads."""
    if config.get("head_dim"):
        return int(config["head_dim"])
    return _require(config, "hidden_size") // _require(config, "num_attention_heads")


def kv_heads(config: Mapping[str, Any]) -> int:
    """KV heads (GQA); a config without `num_key_value_heads` is plain multi-head attention."""
    return int(config.get("num_key_value_heads") or _require(config, "num_attention_heads"))


def count_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of a Llama/Qwen2-style dense decoder, from its config alone.

    Embeddings (twice when the LM head is not tied), per layer q/k/v/o projections (GQA:
    k and v are hidden x kv_heads x head_dim), biases where the architecture has them
    (Qwen2: q/k/v; Llama with `attention_bias`: q/k/v/o), a gated MLP (3 matrices), two
    RMSNorm vectors, and the final norm. Exact for Qwen2.5-7B (7,615,616,512) and
    SmolLM2-135M (134,515,008).
    """
    hidden = _require(config, "hidden_size")
    inter = _require(config, "intermediate_size")
    layers = _require(config, "num_hidden_layers")
    heads = _require(config, "num_attention_heads")
    vocab = _require(config, "vocab_size")
    hd, kvh = head_dim(config), kv_heads(config)
    model_type = str(config.get("model_type", "")).lower()

    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    q_out, kv_out = heads * hd, kvh * hd
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    if model_type == "qwen2":  # qkv bias, no o bias
        attention += q_out + 2 * kv_out
    elif config.get("attention_bias"):
        attention += q_out + 2 * kv_out + hidden
    if model_type == "qwen3":  # per-head RMSNorm on q and k
        attention += 2 * hd
    mlp = 3 * hidden * inter + (2 * inter + hidden if config.get("mlp_bias") else 0)
    norms = 2 * hidden
    return embeddings + layers * (attention + mlp + norms) + hidden


def kv_bytes_per_token(config: Mapping[str, Any], dtype: str | None = None) -> int:
    """KV-cache bytes one token takes: layers x KV heads x head_dim x 2 (K and V) x bytes.

    GQA-aware: only the KV heads count, which is why Qwen2.5-7B needs 57,344 bytes per token
    in bf16 and not 7x that. `dtype` is the KV cache dtype (default: the config's dtype).
    """
    dtype = dtype or config_dtype(config) or "bfloat16"
    value = (_require(config, "num_hidden_layers") * kv_heads(config) * head_dim(config)
             * 2 * bytes_per_param(dtype))
    return math.ceil(value)


def weight_bytes_from_config(config: Mapping[str, Any], dtype: str | None = None) -> int:
    """Bytes of the weights at `dtype` (default: the dtype the config was saved in)."""
    dtype = dtype or config_dtype(config)
    if dtype is None:
        raise ConfigError("the config names no dtype; pass one (e.g. bfloat16).")
    return math.ceil(count_parameters(config) * bytes_per_param(dtype))


def step_bytes_of(config: Mapping[str, Any], weight_bytes: int, dtype: str | None) -> int:
    """Bytes of the weights one decode step reads.

    Every matrix is read whole, except the input embedding: a step looks up one row of it
    per token. When the LM head shares that table (tied embeddings) the head reads it
    whole anyway; when it does not (Qwen2.5-7B: 152,064 x 3,584 x 2 B = 1.09 GB), the table
    is not read, and 15.23 GB of weights cost 14.14 GB per step.
    """
    if config.get("tie_word_embeddings", False):
        return int(weight_bytes)
    dtype = dtype or config_dtype(config) or "bfloat16"
    hidden, vocab = _require(config, "hidden_size"), _require(config, "vocab_size")
    table = vocab * hidden * bytes_per_param(dtype)
    return math.ceil(weight_bytes - table + hidden * bytes_per_param(dtype))


# --- safetensors --------------------------------------------------------------------------

def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON).

    Reading only the header gives every tensor's dtype, shape and byte range without
    touching the weights, so sizing a 15 GB model costs a few kilobytes of I/O.
    """
    path = Path(path)
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ConfigError(f"{path} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise ConfigError(f"{path} declares a {length}-byte header; not a safetensors file.")
        try:
            return json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConfigError(f"{path} does not start with a safetensors JSON header.") from None


@dataclass(frozen=True)
class WeightFiles:
    """What the safetensors files of a model folder hold."""
    params: int
    stored_bytes: int
    dtypes: tuple[str, ...]
    files: int


def safetensors_weights(folder: str | Path) -> WeightFiles | None:
    """Parameters and bytes of all *.safetensors in `folder`; None when there are none."""
    paths = sorted(Path(folder).glob("*.safetensors"))
    if not paths:
        return None
    params = stored = 0
    dtypes: set[str] = set()
    for path in paths:
        for name, info in read_safetensors_header(path).items():
            if name == "__metadata__":
                continue
            params += math.prod(info["shape"])
            start, end = info["data_offsets"]
            stored += end - start
            dtypes.add(info["dtype"])
    return WeightFiles(params, stored, tuple(sorted(dtypes)), len(paths))


# --- resolving a model ---------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSize:
    """Everything the ceiling needs to know about one model at one dtype."""
    model: str
    dtype: str
    params: int
    weight_bytes: int
    kv_bytes_per_token: int | None
    source: str  # where the numbers came from: safetensors headers, config.json, built-in
    step_bytes: int | None = None  # what one decode step reads of them (see step_bytes_of)

    def __post_init__(self) -> None:
        if self.step_bytes is None:
            object.__setattr__(self, "step_bytes", self.weight_bytes)


def _default_models_dir() -> Path:
    return Settings.from_env().models_dir


def _load_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err.msg}).") from None


def model_size(model: str | Path, dtype: str | None = None, kv_dtype: str | None = None,
               models_dir: Path | None = None) -> ModelSize:
    """Size `model`: a folder path, a name under the course models dir, or a KNOWN_MODELS id.

    For a folder with safetensors, `dtype=None` means the bytes as stored; a dtype re-prices
    the same parameter count (what `vllm serve --dtype` would hold in memory). The KV dtype
    defaults to `dtype`, then to the config's dtype, as vLLM's `--kv-cache-dtype auto` does.
    """
    text = str(model)
    folder = model_folder(text, models_dir) or Path(text).expanduser()
    if folder.is_dir():
        config = _load_config(folder)
        files = safetensors_weights(folder)
        if files is None and config is None:
            raise ConfigError(f"{folder} has neither *.safetensors nor config.json.")
        if files is not None:
            params = files.params
            if dtype is None:
                weight = files.stored_bytes
                shown = _stored_dtype(files) or "/".join(files.dtypes)
            else:
                weight = math.ceil(params * bytes_per_param(dtype))
                shown = dtype
            source = f"{files.files} safetensors header(s)"
        else:
            assert config is not None
            params = count_parameters(config)
            weight = weight_bytes_from_config(config, dtype)
            shown = dtype or config_dtype(config) or "?"
            source = "config.json"
        kv = step = None
        if config is not None:
            kv_type = kv_dtype or dtype or config_dtype(config) or _stored_dtype(files)
            kv = kv_bytes_per_token(config, kv_type)
            step = step_bytes_of(config, weight, dtype or _stored_dtype(files))
        return ModelSize(text, shown, params, weight, kv, source, step)
    if text in KNOWN_MODELS:
        config = KNOWN_MODELS[text]
        dtype = dtype or config_dtype(config)
        weight = weight_bytes_from_config(config, dtype)
        return ModelSize(text, str(dtype), count_parameters(config), weight,
                         kv_bytes_per_token(config, kv_dtype or dtype), "built-in config",
                         step_bytes_of(config, weight, dtype))
    known = ", ".join(KNOWN_MODELS)
    raise ConfigError(f"no model folder at {text!r} and it is not a known model; pass a "
                      f"folder with config.json or one of: {known}.")


def model_folder(model: str | Path, models_dir: Path | None = None) -> Path | None:
    """Where `model`'s files are: a folder path, a name under the course models dir, or its
    snapshot in the Hugging Face cache; None when none of them is on this machine."""
    text = str(model)
    for folder in (Path(text).expanduser(), (models_dir or _default_models_dir()) / text):
        if folder.is_dir():
            return folder
    return hf_cache_folder(text)


def model_config(model: str | Path, models_dir: Path | None = None) -> dict[str, Any] | None:
    """`model`'s config.json from its folder (see `model_folder`), else the built-in one."""
    folder = model_folder(model, models_dir)
    return (_load_config(folder) if folder else None) or KNOWN_MODELS.get(str(model))


def hf_cache_folder(model_id: str) -> Path | None:
    """The newest snapshot folder of `model_id` (e.g. Qwen/Qwen2.5-3B-Instruct) in the Hugging
    Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), or None."""
    if "/" not in model_id:
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(Path.home(), ".cache", "huggingface")), "hub")
    snapshots = Path(hub).expanduser() / f"models--{model_id.replace('/', '--')}" / "snapshots"
    folders = [p for p in snapshots.glob("*") if (p / "config.json").is_file()]
    return max(folders, key=lambda p: p.stat().st_mtime) if folders else None


def _stored_dtype(files: WeightFiles | None) -> str | None:
    codes = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F8_E4M3": "fp8",
             "F8_E5M2": "fp8", "I8": "int8"}
    if files is None or len(files.dtypes) != 1:
        return None
    return codes.get(files.dtypes[0])


# --- the arithmetic -----------------------------------------------------------------------

def _positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def bytes_per_step(weight_bytes: float, kv_bytes_per_token: float | None = None,
                   context_tokens: int = 0) -> float:
    """Bytes one decode step of one sequence reads: all weights plus the KV of its context."""
    _positive("weight_bytes", weight_bytes)
    if context_tokens < 0:
        raise ConfigError(f"context_tokens must be >= 0, got {context_tokens}.")
    if context_tokens and kv_bytes_per_token is None:
        raise ConfigError("a context length needs the KV bytes per token; give a model "
                          "(--model) or --kv-bytes-per-token.")
    return weight_bytes + (kv_bytes_per_token or 0) * context_tokens


def decode_ceiling_tok_s(bandwidth_gbs: float, weight_bytes: float,
                         kv_bytes_per_token: float | None = None,
                         context_tokens: int = 0) -> float:
    """Upper bound on one stream's decode speed: bandwidth / bytes read per step.

    480 GB/s over 14 GB of weights is 34.3 tok/s, however fast the arithmetic units are;
    batching raises the total, not this per-stream bound.
    """
    bandwidth = _positive("bandwidth_gbs", bandwidth_gbs) * GB
    return bandwidth / bytes_per_step(weight_bytes, kv_bytes_per_token, context_tokens)


def ceiling_report(bandwidth_gbs: float, weight_bytes: float,
                   kv_bytes_per_token: int | None = None,
                   context_tokens: int = 0, step_bytes: float | None = None) -> dict[str, Any]:
    """The ceiling and its inputs as a JSON-able dict (what `labs ceiling --json` prints).

    `step_bytes` is what a step reads of the weights (`ModelSize.step_bytes`; default all of
    them); `bytes_per_step` adds the KV of `context_tokens`, and the ceiling divides by it."""
    read = weight_bytes if step_bytes is None else step_bytes
    step = bytes_per_step(read, kv_bytes_per_token, context_tokens)
    ceiling = decode_ceiling_tok_s(bandwidth_gbs, read, kv_bytes_per_token, context_tokens)
    report: dict[str, Any] = {
        "bandwidth_gbs": float(bandwidth_gbs),
        "weight_bytes": int(weight_bytes),
        "step_bytes": int(read),
        "context_tokens": int(context_tokens),
        "bytes_per_step": int(step),
        "ceiling_tok_s": ceiling,
        "min_step_ms": 1000.0 / ceiling,
    }
    if kv_bytes_per_token is not None:
        report["kv_bytes_per_token"] = int(kv_bytes_per_token)
        report["kv_bytes"] = int(kv_bytes_per_token) * int(context_tokens)
    return report


# --- GPUs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuProfile:
    """One GPU's memory, bandwidth and dense bf16 tensor peak, with the datasheet line they
    come from. Peaks are dense (datasheets often print the 2:4-sparse figure, twice this)."""
    name: str
    memory_gb: float
    bandwidth_gbs: float
    source: str
    peak_bf16_tflops: float = 0.0


GPUS: dict[str, GpuProfile] = {
    g.name: g
    for g in (
        GpuProfile("rtx-4000-ada", 20, 360,
                   "NVIDIA RTX 4000 Ada datasheet: 20 GB GDDR6, 360 GB/s (the article's "
                   "480 GB/s is not this card's figure); tensor 327.6 TFLOPS is FP8 with "
                   "sparsity, so dense bf16 is a quarter of it", 81.9),
        GpuProfile("l4", 24, 300, "NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, "
                   "bf16 242 TFLOPS sparse", 121),
        GpuProfile("a10g", 24, 600, "NVIDIA A10 datasheet / AWS G5: 24 GB GDDR6, 600 GB/s, "
                   "bf16 125 TFLOPS dense (the A10's figure; the A10G is clocked lower)", 125),
        GpuProfile("l40s", 48, 864, "NVIDIA L40S datasheet: 48 GB GDDR6, 864 GB/s, "
                   "bf16 733 TFLOPS sparse", 362),
        GpuProfile("a100-40gb", 40, 1555, "NVIDIA A100 datasheet: 40 GB HBM2, 1,555 GB/s, "
                   "bf16 312 TFLOPS dense", 312),
        GpuProfile("a100-80gb", 80, 2039, "NVIDIA A100 datasheet: 80 GB HBM2e SXM, "
                   "2,039 GB/s, bf16 312 TFLOPS dense", 312),
        GpuProfile("h100-sxm", 80, 3350, "NVIDIA H100 datasheet: 80 GB HBM3 SXM, 3.35 TB/s, "
                   "bf16 1,979 TFLOPS sparse", 989),
        GpuProfile("h100-pcie", 80, 2000, "NVIDIA H100 datasheet: 80 GB HBM2e PCIe, 2 TB/s, "
                   "bf16 1,513 TFLOPS sparse", 756),
        GpuProfile("h200", 141, 4800, "NVIDIA H200 datasheet: 141 GB HBM3e, 4.8 TB/s, "
                   "bf16 1,979 TFLOPS sparse", 989),
    )
}


def get_gpu(name: str) -> GpuProfile:
    """The GPU called `name` (any case), or a ConfigError that lists the valid names."""
    try:
        return GPUS[name.strip().lower()]
    except KeyError:
        valid = ", ".join(GPUS)
        raise ConfigError(f"unknown GPU {name!r}; valid GPUs: {valid}.") from None


# --- measuring bandwidth ------------------------------------------------------------------

@dataclass(frozen=True)
class BandwidthMeasurement:
    """Best-of-N memory bandwidth of this machine.

    `copy_gbs` counts read + write bytes (2 x array_bytes per copy), as STREAM does;
    `read_gbs` is a pure read (a reduction), closer to what decode does, since a decode step
    mostly reads weights. Use `read_gbs` for the ceiling.
    """
    device: str
    method: str
    array_bytes: int
    repeats: int
    copy_s: float
    read_s: float
    copy_gbs: float
    read_gbs: float


def _best_time(fn: Any, repeats: int, sync: Any = None) -> float:
    best = math.inf
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def _cuda_available() -> bool:
    if not gpu_present():  # avoid importing torch (seconds) where no GPU can answer
        return False
    try:
        import torch  # heavy: torch only to ask about CUDA
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def measure_bandwidth(array_bytes: int = 512 * 2**20, repeats: int = 5, device: str = "auto",
                      threads: int | None = None) -> BandwidthMeasurement:
    """Measure memory bandwidth: a GPU device-to-device copy when CUDA is there, else numpy.

    On the CPU the work is split over `threads` (default: all cores), because vLLM's CPU
    backend decodes with all of them and a single core cannot saturate memory. Each figure
    is the best of `repeats` runs after one warm-up, so a busy neighbour lowers it less.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid devices: auto, cpu, cuda.")
    if int(array_bytes) < 4096 or repeats < 1:
        raise ConfigError("array_bytes must be >= 4096 and repeats >= 1.")
    use_cuda = device == "cuda" or (device == "auto" and _cuda_available())
    if use_cuda:
        return _measure_cuda(int(array_bytes), repeats)
    return _measure_numpy(int(array_bytes), repeats, threads or os.cpu_count() or 1)


def _measure_numpy(array_bytes: int, repeats: int, threads: int) -> BandwidthMeasurement:
    import numpy as np  # heavy: numpy only when the CPU is measured

    n = array_bytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    # numpy releases the GIL inside copyto and ufunc reductions, so threads run in parallel.
    with ThreadPoolExecutor(threads) as pool:
        def copy() -> None:
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), parts))

        def read() -> None:
            list(pool.map(lambda s: np.maximum.reduce(src[s]), parts))

        copy()  # warm-up: page faults and thread start-up are not bandwidth
        read()
        copy_s = _best_time(copy, repeats)
        read_s = _best_time(read, repeats)
    nbytes = n * 4
    return BandwidthMeasurement(
        device=f"cpu ({os.cpu_count()} cores)",
        method=f"numpy copyto / maximum.reduce, float32, {threads} thread(s)",
        array_bytes=nbytes, repeats=repeats, copy_s=copy_s, read_s=read_s,
        copy_gbs=2 * nbytes / copy_s / GB, read_gbs=nbytes / read_s / GB,
    )


def _measure_cuda(array_bytes: int, repeats: int) -> BandwidthMeasurement:
    import torch  # heavy: torch only when the GPU is measured

    if not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but torch sees no CUDA GPU.")
    n = array_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize
    dst.copy_(src), src.amax()  # warm-up
    copy_s = _best_time(lambda: dst.copy_(src), repeats, sync)
    read_s = _best_time(lambda: src.amax(), repeats, sync)
    nbytes = n * 4
    return BandwidthMeasurement(
        device=f"cuda ({torch.cuda.get_device_name()})",
        method="torch device-to-device copy_ / amax, float32",
        array_bytes=nbytes, repeats=repeats, copy_s=copy_s, read_s=read_s,
        copy_gbs=2 * nbytes / copy_s / GB, read_gbs=nbytes / read_s / GB,
    )


# --- CLI ------------------------------------------------------------------------------------

def _cmd_ceiling(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {}
    if args.bandwidth_gbs is not None:
        bandwidth = args.bandwidth_gbs
        report["bandwidth_source"] = "given"
    elif args.gpu is not None:
        gpu = get_gpu(args.gpu)
        bandwidth = gpu.bandwidth_gbs
        report.update(gpu=gpu.name, gpu_memory_gb=gpu.memory_gb, bandwidth_source=gpu.source)
    else:
        m = measure_bandwidth()
        bandwidth = m.read_gbs
        report.update(bandwidth_source=f"measured read on {m.device}: {m.method}",
                      measured=asdict(m))

    kv = args.kv_bytes_per_token
    step = None
    if args.weights_gb is not None:
        weight = int(_positive("--weights-gb", args.weights_gb) * GB)
    else:
        size = model_size(args.model, args.dtype, args.kv_dtype)
        weight, step = size.weight_bytes, size.step_bytes
        kv = kv if kv is not None else size.kv_bytes_per_token
        report.update(model=size.model, dtype=size.dtype, params=size.params,
                      weights_source=size.source)
    report.update(ceiling_report(bandwidth, weight, kv, args.context_tokens, step))
    if "gpu_memory_gb" in report:
        report["weights_fit"] = weight < report["gpu_memory_gb"] * GB

    if args.json:
        print(json.dumps(report))
        return 0
    rows = [("bandwidth", f"{bandwidth:,.1f} GB/s", report["bandwidth_source"])]
    if "model" in report:
        rows.append(("weights", f"{weight / GB:,.2f} GB",
                     f"{report['model']}, {report['dtype']}, {report['params'] / 1e9:.3f} B "
                     "params"))
    else:
        rows.append(("weights", f"{weight / GB:,.2f} GB", "given"))
    if kv is not None:
        context_gb = kv * args.context_tokens / GB
        rows.append(("KV per token", f"{kv:,} B",
                     f"{args.context_tokens:,} tokens of context = {context_gb:,.3f} GB"))
    if report["step_bytes"] != weight:
        rows.append(("weights read", f"{report['step_bytes'] / GB:,.2f} GB",
                     "per step: the input embedding is looked up, not read whole"))
    rows.append(("read per step", f"{report['bytes_per_step'] / GB:,.2f} GB",
                 "weights read + KV"))
    rows.append(("decode ceiling", f"{report['ceiling_tok_s']:,.1f} tok/s",
                 f"one stream; >= {report['min_step_ms']:,.1f} ms per token"))
    if report.get("weights_fit") is False:
        rows.append(("WARNING", "does not fit", f"the weights alone exceed the "
                     f"{report['gpu_memory_gb']} GB of {report['gpu']}"))
    for label, value, note in rows:
        print(f"{label:<15} {value:>14}   {note}")
    return 0


def add_cli(verbs: Any) -> None:
    """Register `ceiling` on the argparse subparsers object `verbs` of `python -m labs`."""
    p = verbs.add_parser(
        "ceiling", help="decode ceiling: memory bandwidth / bytes read per step",
        description="One stream cannot decode faster than bandwidth / (weights + KV) bytes.")
    bw = p.add_mutually_exclusive_group(required=True)
    bw.add_argument("--bandwidth-gbs", type=float, metavar="X", help="memory bandwidth, GB/s")
    bw.add_argument("--gpu", metavar="NAME", help=f"datasheet bandwidth of: {', '.join(GPUS)}")
    bw.add_argument("--measure", action="store_true", help="measure this machine's bandwidth")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights-gb", type=float, metavar="X", help="weight bytes, decimal GB")
    w.add_argument("--model", metavar="PATH_OR_ID",
                   help=f"model folder, course model name, or one of: {', '.join(KNOWN_MODELS)}")
    p.add_argument("--dtype", default=None, help="weight dtype (default: as stored/configured)")
    p.add_argument("--kv-dtype", default=None, help="KV cache dtype (default: --dtype)")
    p.add_argument("--kv-bytes-per-token", type=int, default=None, metavar="N",
                   help="override the KV bytes per token (needed with --weights-gb)")
    p.add_argument("--context-tokens", type=int, default=0, metavar="N",
                   help="tokens already in the sequence (their KV is read every step)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_ceiling)


__all__ = [
    "GB", "DTYPE_BYTES", "KNOWN_MODELS", "GPUS", "GpuProfile", "get_gpu", "bytes_per_param",
    "config_dtype", "head_dim", "kv_heads", "count_parameters", "kv_bytes_per_token",
    "weight_bytes_from_config", "step_bytes_of", "model_folder", "model_config",
    "hf_cache_folder", "read_safetensors_header", "WeightFiles",
    "safetensors_weights", "ModelSize", "model_size", "bytes_per_step",
    "decode_ceiling_tok_s", "ceiling_report",
    "BandwidthMeasurement", "measure_bandwidth", "add_cli",
]
