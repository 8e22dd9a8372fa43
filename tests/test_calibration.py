"""labs.calibration without a server: the fit recovers the costs it was made from, a saved
calibration loads back, and the sizes it measures fit every profile."""

from __future__ import annotations

import json

import pytest
from cpu_calibrations import ARTICLE, CPU_BOUNDED, CPU_KV_PRESSURE, CPU_NAIVE, FAST_CPU, SLOW_CPU

from labs.errors import ConfigError
from labs.model import calibration, simulate
from labs.model.steps import LinearSteps
from labs.workload import Burst


def _points(truth: LinearSteps) -> tuple[list, list]:
    steps = [calibration.StepPoint(b, ctx, truth.step_s(b, ctx, 0), f"b{b}")
             for b, ctx in ((1, 48), (8, 384), (32, 1536), (64, 3072), (4, 3136))]
    ttfts = [calibration.TTFTPoint(p, truth.request_overhead_s + truth.fixed_s
                                   + p / truth.prefill_tok_s
                                   + truth.per_prefill_pair_s * p * p / 2)
             for p in (64, 256, 512, 1024)]
    return steps, ttfts


@pytest.mark.parametrize("truth", [FAST_CPU, SLOW_CPU])
def test_the_fit_recovers_the_costs_it_was_made_from(truth):
    steps, ttfts = _points(truth)
    got = calibration.fit(steps, ttfts)
    assert got.fixed_s == pytest.approx(truth.fixed_s, rel=1e-6)
    assert got.per_seq_s == pytest.approx(truth.per_seq_s, rel=1e-6)
    assert got.per_context_token_s == pytest.approx(truth.per_context_token_s, rel=1e-6)
    assert got.prefill_tok_s == pytest.approx(truth.prefill_tok_s, rel=1e-6)
    assert got.request_overhead_s == pytest.approx(truth.request_overhead_s, abs=1e-9)
    assert got.per_prefill_pair_s == pytest.approx(truth.per_prefill_pair_s, abs=1e-15)


def test_ttft_alone_is_what_the_replay_says():
    cal = calibration.Calibration(steps=FAST_CPU, limits=CPU_NAIVE, model="m", hardware="h",
                                  vllm_version=None, backend="cpu", measured_at="", wall_s=0)
    for n in (64, 1024, 5000):  # 5,000 tokens: three chunks, each attending to the last
        replayed = simulate.replay(FAST_CPU, CPU_NAIVE, Burst(1), n, 2).requests[0].ttft_s
        assert cal.predict_ttft_alone_s(n) == pytest.approx(replayed, rel=1e-9)


def test_the_fit_never_returns_a_negative_cost():
    steps = [calibration.StepPoint(b, ctx, t, "") for b, ctx, t in
             ((1, 48, 0.020), (8, 384, 0.026), (32, 1536, 0.048), (4, 3000, 0.021))]
    got = calibration.fit(steps, _points(FAST_CPU)[1])
    assert got.per_context_token_s == 0 and got.per_seq_s > 0 and got.fixed_s > 0
    with pytest.raises(ConfigError, match="3 or more"):
        calibration.fit(steps[:2], _points(FAST_CPU)[1])


def test_calibration_saves_and_loads_with_where_it_was_measured(tmp_path):
    steps, ttfts = _points(FAST_CPU)
    cal = calibration.Calibration(
        steps=calibration.fit(steps, ttfts), limits=CPU_NAIVE, model="m", hardware="h",
        vllm_version="0.32.0", backend="cpu", measured_at="2026-12-01T06:41:44+0000",
        wall_s=14.0, step_points=tuple(steps), ttft_points=tuple(ttfts), cpu_signature="x")
    path = cal.save(tmp_path / "c.json")
    again = calibration.load(path)
    assert again == cal
    doc = json.loads(path.read_text())
    assert doc["steps"]["kind"] == "measured" and max(
        abs(r["error_pct"]) for r in doc["fit_errors"]) < 1e-6
    doc["schema_version"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="calibrate"):
        calibration.load(path)
    with pytest.raises(ConfigError, match="python -m labs calibrate"):
        calibration.load(tmp_path / "none.json")


def test_calibration_sizes_fit_every_profile():
    for lim in (CPU_NAIVE, CPU_KV_PRESSURE, CPU_BOUNDED, ARTICLE):
        sizes = calibration.batch_sizes(lim)
        assert len(sizes) >= 3 and max(sizes) <= lim.max_num_seqs
        b, p = calibration.long_context(lim)
        assert b * (p + calibration.DECODE_TOKENS) <= lim.pool_tokens
        assert p + calibration.DECODE_TOKENS <= lim.max_model_len
        assert max(calibration.prompt_lengths(lim)) <= lim.max_num_batched_tokens
