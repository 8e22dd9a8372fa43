"""labs.model.predict: a card's step costs and pool from its datasheet, and the `predict` verb."""

from __future__ import annotations

import json

import pytest

from labs.__main__ import main
from labs.errors import ConfigError
from labs.model import predict

QWEN = "Qwen/Qwen2.5-7B-Instruct"


H200 = predict.datasheet_limits("h200", QWEN)


def test_the_article_card_from_its_datasheet():
    steps = predict.datasheet_steps("rtx-4000-ada", QWEN)
    assert steps.step_bytes == pytest.approx(14.14e9, rel=0.002)
    one = steps.step_s(1, 0, 0)
    assert 1 / one == pytest.approx(1 / (14.14e9 / 360e9 + predict.GPU_STEP_OVERHEAD_S),
                                    rel=0.01)
    # The reserve is chosen so that 20 GB less the weights gives the article's pool.
    lim = predict.datasheet_limits("rtx-4000-ada", QWEN)
    assert lim.num_blocks == pytest.approx(2426, rel=0.01) and lim.block_size == 16
    # Decode is memory-bound at 64 users too: the step barely grows from 1 to 64.
    assert steps.step_s(64, 64 * 300, 0) / one < 1.3


def test_a_model_too_big_for_the_card_is_a_clear_error():
    with pytest.raises(ConfigError, match="no room"):
        predict.datasheet_limits("l4", QWEN, dtype="float32")


def test_the_h200_pool_is_fifty_times_the_articles():
    assert H200.pool_tokens > 1.5e6  # ~2 M tokens of Qwen2.5-7B KV


def test_predict_json_rows_use_the_columns_of_labs_bench(capsys):
    assert main(["predict", "--gpu", "rtx-4000-ada", "--model", QWEN, "--concurrency",
                 "1,32,64", "--num-gpu-blocks", "2426", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    assert [r["concurrency"] for r in rows] == [1, 32, 64]
    assert {"concurrency", "agg_tok_s", "per_user_tok_s", "ttft_s_p50"} <= set(rows[0])
    assert rows[2]["agg_tok_s"] > 20 * rows[0]["agg_tok_s"]  # memory-bound: near-linear
    assert doc["limits"]["num_blocks"] == 2426


def test_predict_without_a_calibration_says_how_to_make_one(tmp_path, capsys):
    assert main(["predict", "--calibration", str(tmp_path / "none.json")]) == 1
    assert "python -m labs calibrate" in capsys.readouterr().err
    assert main(["predict", "--gpu", "h200"]) == 1
    assert "--gpu and --model go together" in capsys.readouterr().err
