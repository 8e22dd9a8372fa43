"""The article's serving arithmetic, the model sizing behind it, and the `ceiling` verb."""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

import pytest

from labs.errors import ConfigError
from labs.model import article
from labs.model import ceiling as c
from labs.model.kvwait import ARTICLE_RATIO
from labs.model.steps import ServerLimits

QWEN = c.KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"]
# The course's embedded model (config.json of SmolLM2-135M-Instruct as built by
# labs.serving.cpu_model).
SMOL = {
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True,
    "attention_bias": False, "mlp_bias": False, "dtype": "float32",
}
REAL_SMOL = Path.home() / ".cache" / "vllm-workshop" / "models" / "SmolLM2-135M-Instruct"


# --- the article's numbers ------------------------------------------------------------------

def test_article_decode_ceiling():
    assert c.decode_ceiling_tok_s(480, 14e9) == pytest.approx(34.2857, abs=1e-3)
    assert round(c.decode_ceiling_tok_s(480, 14 * c.GB), 2) == 34.29


def test_article_pool_demand_and_ratio():
    # The pool is ServerLimits.pool_tokens, the one place it is computed (labs.model.steps).
    limits = ServerLimits(num_blocks=article.NUM_GPU_BLOCKS, block_size=article.BLOCK_SIZE,
                          max_model_len=8192, max_num_seqs=256, max_num_batched_tokens=8192)
    demand = article.KV_USERS * article.KV_PROMPT_TOKENS
    assert limits.pool_tokens == article.POOL_TOKENS == 38_816
    assert demand == article.KV_DEMAND_TOKENS == 128_000
    assert round(demand / limits.pool_tokens, 1) == round(ARTICLE_RATIO, 1) == 3.3


def test_qwen_kv_bytes_per_token_is_gqa_aware():
    assert c.kv_bytes_per_token(QWEN, "bfloat16") == 28 * 4 * 128 * 2 * 2 == 57_344
    assert c.kv_bytes_per_token(QWEN) == 57_344  # the config's own dtype is bf16
    assert c.kv_bytes_per_token(QWEN, "fp8") == 28_672


def test_datasheet_ceiling_for_the_course_gpu():
    gpu = c.get_gpu("rtx-4000-ada")
    assert gpu.bandwidth_gbs == 360 and gpu.memory_gb == 20
    assert c.decode_ceiling_tok_s(gpu.bandwidth_gbs, 15.2e9) == pytest.approx(23.7, abs=0.05)
    weights = c.weight_bytes_from_config(QWEN, "bfloat16")
    assert c.decode_ceiling_tok_s(gpu.bandwidth_gbs, weights) == pytest.approx(23.7, abs=0.1)


def test_context_adds_kv_reads():
    kv = c.kv_bytes_per_token(QWEN)
    report = c.ceiling_report(360, 15.2e9, kv, context_tokens=4000)
    assert report["bytes_per_step"] == int(15.2e9 + 4000 * 57_344)
    assert report["ceiling_tok_s"] < c.decode_ceiling_tok_s(360, 15.2e9)
    assert report["kv_bytes_per_token"] == 57_344
    json.dumps(report)  # JSON-able


def test_bad_arithmetic_inputs_are_config_errors():
    with pytest.raises(ConfigError):
        c.decode_ceiling_tok_s(0, 14e9)
    with pytest.raises(ConfigError):
        c.decode_ceiling_tok_s(480, -1)
    with pytest.raises(ConfigError, match="KV bytes per token"):
        c.ceiling_report(480, 14e9, None, context_tokens=10)
    with pytest.raises(ConfigError):
        ServerLimits(num_blocks=0, block_size=16, max_model_len=8192, max_num_seqs=256,
                     max_num_batched_tokens=8192)


# --- GPUs and dtypes ------------------------------------------------------------------------

def test_gpu_table_lookup_is_case_insensitive():
    assert c.get_gpu("H100-SXM").bandwidth_gbs == 3350
    assert c.get_gpu(" L4 ").bandwidth_gbs == 300
    expected = {"rtx-4000-ada": 360, "l4": 300, "a10g": 600, "l40s": 864, "a100-40gb": 1555,
                "a100-80gb": 2039, "h100-sxm": 3350, "h100-pcie": 2000, "h200": 4800}
    assert {n: g.bandwidth_gbs for n, g in c.GPUS.items() if n in expected} == expected
    assert all(g.source and g.memory_gb > 0 for g in c.GPUS.values())


def test_unknown_gpu_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        c.get_gpu("rtx-9090")
    for name in c.GPUS:
        assert name in str(err.value)


def test_dtype_table():
    assert c.bytes_per_param("float32") == 4
    assert c.bytes_per_param("bfloat16") == c.bytes_per_param("float16") == 2
    assert c.bytes_per_param("fp8") == c.bytes_per_param("int8") == 1
    assert c.bytes_per_param("int4") == 0.5
    assert c.bytes_per_param("torch.BFloat16") == 2
    with pytest.raises(ConfigError, match="bfloat16"):
        c.bytes_per_param("q3_k")


# --- counting parameters --------------------------------------------------------------------

def test_qwen_parameter_count_and_bf16_size():
    assert c.count_parameters(QWEN) == 7_615_616_512  # the model card says 7.61 B
    assert c.weight_bytes_from_config(QWEN, "bfloat16") / 1e9 == pytest.approx(15.2, abs=0.05)
    assert c.weight_bytes_from_config(QWEN, "int4") / 1e9 == pytest.approx(3.8, abs=0.05)


def test_smollm_parameter_count_matches_its_safetensors():
    assert c.count_parameters(SMOL) == 134_515_008
    assert c.kv_bytes_per_token(SMOL) == 30 * 3 * 64 * 2 * 4


def test_smollm_kv_matches_the_cpu_servers_pool():
    # The CPU server's 2 GiB pool is 364 blocks of 128 tokens (tests/fixtures/metrics_idle_cpu.txt):
    # whole blocks of 128 x 46,080 bytes that fit in 2**31 bytes.
    assert 2**31 // (128 * c.kv_bytes_per_token(SMOL)) == 364


def test_head_dim_defaults_and_biases():
    cfg = dict(QWEN, model_type="llama")  # same shapes, no qkv bias
    no_bias = c.count_parameters(cfg)
    assert c.count_parameters(QWEN) - no_bias == 28 * (3584 + 2 * 512)  # qkv bias per layer
    assert c.head_dim(QWEN) == 128
    with pytest.raises(ConfigError, match="hidden_size"):
        c.count_parameters({"model_type": "llama"})


# --- model folders --------------------------------------------------------------------------

def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file with zero-filled data (no torch needed)."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        end = offset + math.prod(shape) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


TINY = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 32, "tie_word_embeddings": True, "dtype": "float32"}


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    h, i, hd = 8, 16, 4
    _write_safetensors(folder / "model.safetensors", {
        "model.embed_tokens.weight": ("F32", [32, h]),
        "model.layers.0.self_attn.q_proj.weight": ("F32", [2 * hd, h]),
        "model.layers.0.self_attn.k_proj.weight": ("F32", [hd, h]),
        "model.layers.0.self_attn.v_proj.weight": ("F32", [hd, h]),
        "model.layers.0.self_attn.o_proj.weight": ("F32", [h, 2 * hd]),
        "model.layers.0.mlp.gate_proj.weight": ("F32", [i, h]),
        "model.layers.0.mlp.up_proj.weight": ("F32", [i, h]),
        "model.layers.0.mlp.down_proj.weight": ("F32", [h, i]),
        "model.layers.0.input_layernorm.weight": ("F32", [h]),
        "model.layers.0.post_attention_layernorm.weight": ("F32", [h]),
        "model.norm.weight": ("F32", [h]),
    })
    return folder


def test_folder_is_sized_from_safetensors_headers(tiny_model: Path):
    files = c.safetensors_weights(tiny_model)
    assert files is not None
    assert files.params == c.count_parameters(TINY)
    assert files.stored_bytes == 4 * files.params and files.dtypes == ("F32",)
    size = c.model_size(tiny_model)
    assert (size.dtype, size.weight_bytes) == ("float32", files.stored_bytes)
    assert size.kv_bytes_per_token == 1 * 1 * 4 * 2 * 4
    half = c.model_size(tiny_model, "bfloat16")
    assert half.weight_bytes == 2 * files.params and half.kv_bytes_per_token == 16


def test_folder_without_weights_counts_from_config(tiny_model: Path):
    (tiny_model / "model.safetensors").unlink()
    size = c.model_size(tiny_model, "bfloat16")
    assert size.source == "config.json" and size.weight_bytes == 2 * c.count_parameters(TINY)


def test_not_a_safetensors_file(tmp_path: Path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ConfigError):
        c.safetensors_weights(tmp_path)


def test_unknown_model_lists_known_models(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"Qwen/Qwen2\.5-7B-Instruct"):
        c.model_size("no/such-model", models_dir=tmp_path)


@pytest.mark.skipif(not (REAL_SMOL / "model.safetensors").is_file(),
                    reason="the embedded model is not built on this machine")
def test_real_embedded_model_folder():
    size = c.model_size(REAL_SMOL)
    assert size.params == 134_515_008 and size.dtype == "float32"
    assert size.weight_bytes == 4 * 134_515_008


# --- measuring --------------------------------------------------------------------------

def test_measure_bandwidth_small_array_on_cpu():
    m = c.measure_bandwidth(32 * 2**20, repeats=2, device="cpu")
    assert m.device.startswith("cpu") and m.array_bytes == 32 * 2**20
    for value in (m.read_gbs, m.copy_gbs, m.read_s, m.copy_s):
        assert math.isfinite(value) and value > 0
    with pytest.raises(ConfigError, match="cpu, cuda"):
        c.measure_bandwidth(device="tpu")


# --- CLI ------------------------------------------------------------------------------------

def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="labs")
    c.add_cli(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_cli_json_for_a_known_model(capsys):
    rc, out = _run(["ceiling", "--gpu", "RTX-4000-Ada", "--model", "Qwen/Qwen2.5-7B-Instruct",
                    "--context-tokens", "4000", "--json"], capsys)
    assert rc == 0
    report = json.loads(out)  # exactly one JSON object
    assert report["kv_bytes_per_token"] == 57_344
    assert report["weight_bytes"] == 15_231_233_024
    # A step reads one row of the untied input embedding (152,064 x 3,584 x 2 B), not all.
    table = 152_064 * 3_584 * 2
    assert report["step_bytes"] == 15_231_233_024 - table + 3_584 * 2
    assert report["bytes_per_step"] == report["step_bytes"] + 4000 * 57_344
    assert report["ceiling_tok_s"] == pytest.approx(360e9 / report["bytes_per_step"])
    assert report["weights_fit"] is True


def test_cli_the_articles_card_and_model_read_14_1_gb_a_step(capsys):
    _rc, out = _run(["ceiling", "--gpu", "rtx-4000-ada", "--model", "Qwen/Qwen2.5-7B-Instruct",
                    "--json"], capsys)
    report = json.loads(out)
    assert report["step_bytes"] == pytest.approx(14.14e9, rel=1e-3)
    assert report["ceiling_tok_s"] == pytest.approx(25.5, abs=0.05)


def test_a_tied_model_reads_all_its_weights_each_step():
    assert c.step_bytes_of(SMOL, 538_060_032, "float32") == 538_060_032


def test_cli_article_numbers_and_table(capsys):
    rc, out = _run(["ceiling", "--bandwidth-gbs", "480", "--weights-gb", "14", "--json"], capsys)
    assert rc == 0 and json.loads(out)["ceiling_tok_s"] == pytest.approx(34.2857, abs=1e-3)
    rc, out = _run(["ceiling", "--bandwidth-gbs", "480", "--weights-gb", "14"], capsys)
    assert rc == 0 and "34.3 tok/s" in out


def test_cli_model_folder(tiny_model, capsys):
    _rc, out = _run(["ceiling", "--bandwidth-gbs", "100", "--model", str(tiny_model), "--json"],
                   capsys)
    report = json.loads(out)
    assert report["params"] == c.count_parameters(TINY) and report["kv_bytes_per_token"] == 32


def test_cli_bad_input(capsys):
    with pytest.raises(ConfigError, match="h100-sxm"):
        _run(["ceiling", "--gpu", "b300", "--weights-gb", "14"], capsys)
    with pytest.raises(SystemExit):  # no bandwidth source: argparse usage error
        _run(["ceiling", "--weights-gb", "14"], capsys)


def test_model_size_finds_a_model_in_the_hugging_face_cache(tmp_path, monkeypatch):
    snap = tmp_path / "models--Qwen--Qwen2.5-7B-Instruct" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(QWEN))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert c.hf_cache_folder("Qwen/Qwen2.5-7B-Instruct") == snap
    size = c.model_size("Qwen/Qwen2.5-7B-Instruct", models_dir=tmp_path / "none")
    assert size.source == "config.json" and math.isclose(size.step_bytes, 14.14e9, rel_tol=2e-3)
    assert c.hf_cache_folder("Org/Missing") is None
