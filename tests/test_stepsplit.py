"""labs.stepsplit: a decode step split into its causes, with hand-built numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labs.errors import ConfigError
from labs.model import stepsplit
from labs.model.steps import LinearSteps, RooflineSteps

# A calibrated CPU step: 47 ms fixed, 2.4 ms per sequence, 5.6 us per context token; a
# 0.54 GB model read at 36 GB/s is 15 ms of the fixed part.
CPU = LinearSteps(fixed_s=0.047, per_seq_s=0.0024, per_context_token_s=5.6e-6,
                  prefill_tok_s=650.0, request_overhead_s=0.01)
CPU_BYTES, CPU_GBS = 0.54e9, 36.0
# A datasheet card: 14 GB at 350 GB/s = 40 ms; 7 B params at 70 TFLOP/s; 2 ms overhead.
CARD = RooflineSteps(bandwidth_gbs=350.0, peak_tflops=70.0, step_bytes=14e9,
                     kv_bytes_per_token=50_000.0, active_params=7e9, overhead_s=0.002,
                     request_overhead_s=0.01, source="hand-built")


def test_calibrated_step_at_batch_one():
    s = stepsplit.from_calibration(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                   batch=1, context_tokens=100)
    assert s.weight_read_s == pytest.approx(0.015)
    assert s.other_fixed_s == pytest.approx(0.032)
    assert s.per_seq_s == pytest.approx(0.0024)
    assert s.kv_read_s == pytest.approx(100 * 5.6e-6)
    assert s.compute_s == 0 and s.kind == "measured" and not s.note
    assert s.total_s == pytest.approx(CPU.step_s(1, 100, 0))
    assert s.shared_s == pytest.approx(0.047)
    assert s.shared_cause == "other fixed per-step cost"


def test_calibrated_step_grows_with_the_batch_but_not_its_shared_part():
    one, many = (stepsplit.from_calibration(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                            batch=b, context_tokens=64) for b in (1, 64))
    assert many.shared_s == pytest.approx(one.shared_s)
    assert many.per_seq_s == pytest.approx(64 * 0.0024)
    assert many.kv_read_s == pytest.approx(64 * 64 * 5.6e-6)
    assert many.total_s == pytest.approx(CPU.step_s(64, 64 * 64, 0))
    assert many.shared_fraction < 0.25 < 0.9 < one.shared_fraction
    assert many.per_token_s < one.per_token_s / 10
    assert many.tok_s == pytest.approx(64 / many.total_s)


def test_a_weight_read_longer_than_the_fixed_part_is_clipped_and_said():
    s = stepsplit.from_calibration(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=5.0, batch=1,
                                   context_tokens=0)
    assert s.weight_read_s == pytest.approx(0.047) and s.other_fixed_s == 0
    assert "more than the fitted fixed part" in s.note
    assert s.total_s == pytest.approx(CPU.step_s(1, 0, 0))


def test_roofline_step_memory_bound():
    s = stepsplit.from_roofline(CARD, batch=32, context_tokens=200, label="card, batch 32")
    assert s.weight_read_s == pytest.approx(0.040)
    assert s.kv_read_s == pytest.approx(32 * 200 * 50_000 / 350e9)
    assert s.other_fixed_s == pytest.approx(0.002)
    assert s.per_seq_s == 0 and s.compute_s == 0 and s.kind == "predicted"
    assert s.total_s == pytest.approx(CARD.step_s(32, 32 * 200, 0))
    assert s.shared_cause == "weight read"
    assert s.shared_fraction > 0.95


def test_roofline_step_compute_bound_shows_the_excess_as_compute():
    # 2 x 7e9 x 512 FLOPs at 70 TFLOP/s = 102.4 ms > 40 ms of bytes
    s = stepsplit.from_roofline(CARD, batch=512, context_tokens=0)
    assert s.compute_s == pytest.approx(2 * 7e9 * 512 / 70e12 - 0.040)
    assert s.total_s == pytest.approx(CARD.step_s(512, 0, 0))
    assert s.shared_fraction < 0.5


def test_split_dispatches_on_the_kind_of_step():
    assert stepsplit.split(CARD, batch=1, context_tokens=0, label="c").kind == "predicted"
    assert stepsplit.split(CPU, batch=1, context_tokens=0, label="h", step_bytes=CPU_BYTES,
                           bandwidth_gbs=CPU_GBS).kind == "measured"
    with pytest.raises(ConfigError, match="bandwidth"):
        stepsplit.split(CPU, batch=1, context_tokens=0, label="h")


def test_course_splits_and_their_table():
    splits = stepsplit.course_splits(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                     operating_batch=256, context_tokens=64, card_steps=CARD,
                                     card_context_tokens=192, max_num_seqs=128)
    assert [s.batch for s in splits] == [1, 128, 1, 32]  # at most max_num_seqs in a step
    assert [s.kind for s in splits] == ["measured", "measured", "predicted", "predicted"]
    assert "predicted knee" in splits[1].label
    t = stepsplit.table(splits)
    assert list(t.index) == [s.label for s in splits]
    parts = [f"{name} (ms)" for _, name, _ in stepsplit.CAUSES]
    assert list(t[parts].sum(axis=1)) == pytest.approx(list(t["step (ms)"]))
    assert t["shared by the batch (%)"].iloc[0] == pytest.approx(100 * 0.047 / CPU.step_s(1, 64, 0))
    none = stepsplit.course_splits(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                   operating_batch=None, context_tokens=64, card_steps=CARD,
                                   card_context_tokens=192, max_num_seqs=128)
    assert none[1].batch == 128 and "no knee predicted" in none[1].label
    with pytest.raises(ConfigError):
        stepsplit.course_splits(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                operating_batch=None, context_tokens=64, card_steps=CARD,
                                card_context_tokens=192)
    one = splits[0].table()
    assert one.loc["step", "ms"] == pytest.approx(splits[0].total_s * 1e3)
    assert one.loc["weight read", "shared by the batch"]


def test_sentence_names_both_causes_with_their_numbers():
    here = stepsplit.from_calibration(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                      batch=1, context_tokens=64, label="here, batch 1")
    card = stepsplit.from_roofline(CARD, batch=1, context_tokens=192, label="Card X, batch 1")
    text = stepsplit.shared_cause_sentence(here, card)
    assert "here it is mostly the other fixed per-step cost (32.0 ms" in text
    assert "the weight read is 15.0 ms" in text
    assert "on the Card X it is the weight read (40.0 ms" in text
    same = stepsplit.shared_cause_sentence(card, card)
    assert "alike it is mostly the weight read" in same
    assert "a step of" in here.describe() and "calibrated" in here.describe()
    slow = stepsplit.from_calibration(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=5.0, batch=1,
                                      context_tokens=64, label="here, batch 1")
    assert "Note: the weight read at 5.0 GB/s" in stepsplit.shared_cause_sentence(slow, card)


def test_kv_share_of_the_two_models():
    smol = SimpleNamespace(dtype="float32", step_bytes=538_060_032, weight_bytes=538_060_032,
                           kv_bytes_per_token=46_080)
    qwen = SimpleNamespace(dtype="bfloat16", step_bytes=14_141_245_440,
                           weight_bytes=15_231_233_024, kv_bytes_per_token=57_344)
    assert stepsplit.kv_share(smol.step_bytes, smol.kv_bytes_per_token, 4000) == \
        pytest.approx(0.3426, abs=1e-3)
    t = stepsplit.kv_growth_table({"smol": smol, "qwen": qwen}, 4000)
    assert t.loc["smol", "KV adds to the read (%)"] == pytest.approx(34.26, abs=0.01)
    assert t.loc["qwen", "KV adds to the read (%)"] == pytest.approx(1.62, abs=0.01)
    share = 0.3426
    assert t.loc["smol", "one-stream ceiling falls by (%)"] == \
        pytest.approx(100 * share / (1 + share), abs=0.01)
    with pytest.raises(ConfigError):
        stepsplit.kv_growth_table({"x": SimpleNamespace(dtype="?", step_bytes=1,
                                                        weight_bytes=1,
                                                        kv_bytes_per_token=None)}, 10)


def test_impossible_splits_are_refused():
    with pytest.raises(ConfigError):
        stepsplit.from_calibration(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=0, batch=1,
                                   context_tokens=0)
    with pytest.raises(ConfigError):
        stepsplit.StepSplit("x", 0, 0, 0.01, 0.01, 0, 0)
    with pytest.raises(ConfigError):
        stepsplit.StepSplit("x", 1, 0, -0.01, 0.01, 0, 0)


def test_plot_draws_every_split():
    import matplotlib
    matplotlib.use("Agg")
    from labs.course import plots

    splits = stepsplit.course_splits(CPU, step_bytes=CPU_BYTES, bandwidth_gbs=CPU_GBS,
                                     operating_batch=64, context_tokens=64, card_steps=CARD,
                                     card_context_tokens=192)
    fig = plots.step_split(splits, {"model": "m", "hardware": "h"})
    left, _right = fig.axes[:2]
    assert len(left.get_xticks()) == 4
    heights = sorted(p.get_height() for p in left.patches)  # type: ignore[attr-defined]  # bars are Rectangles
    assert heights[-1] > 0
