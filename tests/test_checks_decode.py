"""02's exercise checks: the wrong input of a back-of-envelope bound, and a step's bytes at a
long context. Each is tested for the embedded default (SmolLM2-135M in float32 on the CPU, its
config built here), the article's card (RTX 4000 Ada, Qwen2.5-7B in bf16) and an H200 with the
same model; each wrong answer is named by the mistake it represents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labs.course.checks.decode import bytes_read_at_context, wrong_input_in_bound, wrong_inputs
from labs.model import article, ceiling, predict

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True, "dtype": "float32"}
CPU_READ_GBS = 35.0  # the embedded default's measured read bandwidth (DESIGN.md)


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


@pytest.fixture
def smollm2(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    return tmp_path


def _qwen() -> ceiling.ModelSize:
    return ceiling.model_size(article.MODEL, dtype="bfloat16")


# --- spot the wrong input -------------------------------------------------------------------
# Three bounds with one wrong input each: the notebook's H200 sheet (float32 bytes for a bf16
# model), the article's own (480 GB/s for a 360 GB/s card) and one for the CPU default (bf16
# bytes for the float32 model it serves).

def _cases(smollm2: Path) -> dict[str, dict]:
    qwen, smol = _qwen(), ceiling.model_size(smollm2)
    h200 = ceiling.get_gpu("h200").bandwidth_gbs
    card = ceiling.get_gpu("rtx-4000-ada").bandwidth_gbs
    return {
        "h200": {"claim": {"claimed_bandwidth_gbs": 4800, "claimed_bytes": 30.5e9},
                 "bandwidth_gbs": h200, "size": qwen, "wrong": "bytes"},
        "rtx-4000-ada": {"claim": {"claimed_bandwidth_gbs": article.BANDWIDTH_GBS,
                                   "claimed_bytes": article.WEIGHTS_GB * 1e9},
                         "bandwidth_gbs": card, "size": qwen, "wrong": "bandwidth"},
        "cpu": {"claim": {"claimed_bandwidth_gbs": CPU_READ_GBS,
                          "claimed_bytes": smol.params * 2.0},
                "bandwidth_gbs": CPU_READ_GBS, "size": smol, "wrong": "bytes"},
    }


def _judge(case: dict, which: object, tok_s: object):
    return wrong_input_in_bound(which, tok_s, bandwidth_gbs=case["bandwidth_gbs"],
                                size=case["size"], **case["claim"])


def _right(case: dict) -> float:
    """The solution: the card's datasheet bandwidth over the bytes a step reads."""
    return case["bandwidth_gbs"] * 1e9 / case["size"].step_bytes


@pytest.mark.parametrize("name", ["h200", "rtx-4000-ada", "cpu"])
def test_wrong_input_accepts_the_solution(smollm2: Path, name: str) -> None:
    case = _cases(smollm2)[name]
    assert _judge(case, case["wrong"], _right(case)).ok is True


def test_the_three_bounds_give_the_expected_ceilings(smollm2: Path) -> None:
    cases = _cases(smollm2)
    assert _right(cases["h200"]) == pytest.approx(339.4, rel=0.01)
    assert _right(cases["rtx-4000-ada"]) == pytest.approx(25.5, rel=0.01)
    assert 60 < _right(cases["cpu"]) < 70            # DESIGN.md: ~65 tok/s
    assert wrong_inputs(claimed_bandwidth_gbs=480, claimed_bytes=14e9, bandwidth_gbs=360,
                        step_bytes=_qwen().step_bytes) == {"bandwidth"}


def test_wrong_input_rejects_float32_bytes_for_bf16(smollm2: Path) -> None:
    case = _cases(smollm2)["h200"]
    verdict = _judge(case, "bytes", 4800e9 / 30.5e9)        # the sheet's own 157 tok/s
    assert verdict.ok is False and "30.5 GB" in verdict.message and "dtype" in verdict.message


def test_wrong_input_rejects_all_weights_with_the_untied_embedding(smollm2: Path) -> None:
    case = _cases(smollm2)["h200"]
    verdict = _judge(case, "bytes", 4800e9 / _qwen().weight_bytes)    # 315 tok/s
    assert verdict.ok is False and "embedding" in verdict.message


def test_wrong_input_rejects_blaming_the_right_bandwidth(smollm2: Path) -> None:
    case = _cases(smollm2)["h200"]
    verdict = _judge(case, "bandwidth", _right(case))
    assert verdict.ok is False and "datasheet" in verdict.message and "bytes" in verdict.message


def test_wrong_input_rejects_the_articles_480_gbs(smollm2: Path) -> None:
    case = _cases(smollm2)["rtx-4000-ada"]
    verdict = _judge(case, "bandwidth", article.CEILING_TOK_S)
    assert verdict.ok is False and "bandwidth" in verdict.message and "360" in verdict.message


def test_wrong_input_rejects_the_h100_bandwidth_for_an_h200(smollm2: Path) -> None:
    case = _cases(smollm2)["h200"]
    h100 = ceiling.get_gpu("h100-sxm").bandwidth_gbs * 1e9 / _qwen().step_bytes   # 237 tok/s
    assert _judge(case, "bytes", h100).ok is False


def test_wrong_input_rejects_bf16_bytes_for_the_float32_cpu_model(smollm2: Path) -> None:
    case = _cases(smollm2)["cpu"]
    verdict = _judge(case, "bytes", CPU_READ_GBS * 1e9 / case["claim"]["claimed_bytes"])
    assert verdict.ok is False and "float32" in verdict.message


def test_wrong_input_rejects_gb_per_s_over_bytes(smollm2: Path) -> None:
    case = _cases(smollm2)["h200"]
    verdict = _judge(case, "bytes", 4800 / _qwen().step_bytes)
    assert verdict.ok is False and "1e9" in verdict.message


def test_wrong_input_asks_for_a_named_input(smollm2: Path) -> None:
    case = _cases(smollm2)["h200"]
    assert _judge(case, "the GPU", _right(case)).ok is False
    assert _judge(case, "Bytes", _right(case)).ok is True
    assert _judge(case, ..., ...).ok is None
    assert _judge(case, "bytes", ...).ok is None


# --- the bytes of a long conversation -------------------------------------------------------
# The bytes depend on the model, not the card: the CPU default's SmolLM2 in float32, and
# Qwen2.5-7B in bf16 (what the article's card and the H200 both serve, at the datasheet
# ceiling of each).

def _bytes_cases(smollm2: Path) -> dict[str, tuple[str, str | None, ceiling.ModelSize]]:
    return {"cpu": (str(smollm2), None, ceiling.model_size(smollm2)),
            "rtx-4000-ada": (article.MODEL, "bfloat16", _qwen()),
            "h200": (article.MODEL, "bfloat16", _qwen())}


@pytest.mark.parametrize("name", ["cpu", "rtx-4000-ada", "h200"])
def test_bytes_at_context_accepts_the_solution(smollm2: Path, name: str) -> None:
    root, dtype, size = _bytes_cases(smollm2)[name]
    right = size.step_bytes + 4096 * size.kv_bytes_per_token
    assert bytes_read_at_context(right, model_root=root, context_tokens=4096, dtype=dtype).ok


def test_bytes_at_context_sets_the_ceilings_it_should(smollm2: Path) -> None:
    _, _, qwen = _bytes_cases(smollm2)["h200"]
    right = qwen.step_bytes + 4096 * qwen.kv_bytes_per_token
    for gpu, tok_s in (("h200", 333.9), ("rtx-4000-ada", 25.04)):
        assert ceiling.get_gpu(gpu).bandwidth_gbs * 1e9 / right == pytest.approx(tok_s, rel=0.01)
    assert predict.datasheet_steps("h200", article.MODEL).step_bytes == qwen.step_bytes


@pytest.mark.parametrize("name", ["cpu", "rtx-4000-ada"])
def test_bytes_at_context_rejects_the_weights_alone(smollm2: Path, name: str) -> None:
    root, dtype, size = _bytes_cases(smollm2)[name]
    verdict = bytes_read_at_context(size.step_bytes, model_root=root, context_tokens=4096,
                                    dtype=dtype)
    assert verdict.ok is False and "KV" in verdict.message


@pytest.mark.parametrize("name", ["cpu", "rtx-4000-ada"])
def test_bytes_at_context_rejects_one_layers_kv(smollm2: Path, name: str) -> None:
    root, dtype, size = _bytes_cases(smollm2)[name]
    layers = 30 if name == "cpu" else 28
    wrong = size.step_bytes + 4096 * size.kv_bytes_per_token / layers
    verdict = bytes_read_at_context(wrong, model_root=root, context_tokens=4096, dtype=dtype)
    assert verdict.ok is False and "every layer" in verdict.message


def test_bytes_at_context_rejects_k_without_v(smollm2: Path) -> None:
    root, dtype, size = _bytes_cases(smollm2)["rtx-4000-ada"]
    wrong = size.step_bytes + 4096 * size.kv_bytes_per_token / 2
    verdict = bytes_read_at_context(wrong, model_root=root, context_tokens=4096, dtype=dtype)
    assert verdict.ok is False and "both" in verdict.message


def test_bytes_at_context_rejects_the_untied_embedding_counted(smollm2: Path) -> None:
    root, dtype, size = _bytes_cases(smollm2)["h200"]
    wrong = size.weight_bytes + 4096 * size.kv_bytes_per_token
    verdict = bytes_read_at_context(wrong, model_root=root, context_tokens=4096, dtype=dtype)
    assert verdict.ok is False and "embedding" in verdict.message


def test_bytes_at_context_unanswered_is_not_a_crash(smollm2: Path) -> None:
    assert bytes_read_at_context(..., model_root=str(smollm2), context_tokens=4096).ok is None
