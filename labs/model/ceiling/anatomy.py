"""Model anatomy: what a model is, in bytes, before it is served.

Dtype widths; parameters and KV-cache bytes per token counted from a Hugging Face config;
the bytes one decode step reads of the weights; the weights as safetensors headers state
them (no tensor is loaded); and where a model's files are (a folder, the course models dir,
the Hugging Face cache). The counting covers Llama/Qwen2/Qwen3/Mistral-style dense decoders
with GQA. GB here is decimal (1e9 bytes), as on every GPU datasheet.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...settings import Settings

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
