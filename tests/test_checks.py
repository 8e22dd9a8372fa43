from __future__ import annotations

import pytest

from labs import checks


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


def test_unanswered_is_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    verdict = checks.close_to("ceiling_tok_s", ..., 34.28)
    assert verdict.ok is None
    assert "not answered yet" in capsys.readouterr().out


def test_right_and_wrong_answers() -> None:
    assert checks.close_to("x", 34.3, 34.28).ok is True
    wrong = checks.close_to("x", 48, 34.28, why="divide bandwidth by weights")
    assert wrong.ok is False and "34.28" in wrong.message and "divide" in wrong.message
    assert checks.close_to("x", "fast", 34.28).ok is False


def test_within_factor() -> None:
    assert checks.within_factor("p", 30, 50).ok is True
    assert checks.within_factor("p", 10, 50).ok is False


def test_strict_mode_raises_on_wrong_or_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABS_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError):
        checks.close_to("x", 48, 34.28)
    with pytest.raises(AssertionError):
        checks.close_to("x", ..., 34.28)
    assert checks.close_to("x", 34.28, 34.28).ok is True


# --- each exercise's check: a right answer passes, a plausible wrong one fails ---------------

def test_max_running_reads_the_series_and_agrees_with_the_pool() -> None:
    import pandas as pd
    engine = pd.DataFrame({"running": [0, 2, 4, 4, 3, 1]})
    assert checks.kvcache.max_running(4, engine, fit_at_once=4).ok is True
    assert checks.kvcache.max_running(16, engine, fit_at_once=4).ok is False   # the users, not the pool
    assert checks.kvcache.max_running(3, engine, fit_at_once=4).ok is False    # the last sample


def test_blocks_for_everyone_rounds_up_per_request() -> None:
    kw = {"users": 16, "prompt_tokens": 1055, "output_tokens": 64, "block_size": 128}
    assert checks.kvcache.blocks_for_everyone(144, **kw).ok is True
    assert checks.kvcache.blocks_for_everyone(140, **kw).ok is False   # 16 x 1,119 / 128, not rounded
    assert checks.kvcache.blocks_for_everyone(9, **kw).ok is False     # one request's


def _sweep07():
    import pandas as pd
    return pd.DataFrame({"concurrency": [1, 8, 16, 32],
                         "agg_tok_s": [44.0, 300.0, 425.0, 560.0],
                         "per_user_tok_s": [44.0, 36.0, 26.7, 17.5],
                         "ttft_s_p95": [0.05, 0.20, 0.41, 0.80]})


def test_replicas_for_users_at_the_operating_point() -> None:
    import numpy as np
    kw = {"users": 500, "ttft_p95_limit_s": 0.45, "min_per_user_tok_s": 6.7}
    assert checks.capacity.replicas_for_users(32, _sweep07(), **kw).ok is True       # 500 / 16, up
    assert checks.capacity.replicas_for_users(np.int64(32), _sweep07(), **kw).ok is True
    wrong = checks.capacity.replicas_for_users(16, _sweep07(), **kw)                 # the top level, 32
    assert wrong.ok is False and "largest level" in wrong.message
    assert checks.capacity.replicas_for_users(31, _sweep07(), **kw).ok is False      # rounded down
    assert checks.capacity.replicas_for_users(31.25, _sweep07(), **kw).ok is False   # not whole
    assert checks.capacity.replicas_for_users(..., _sweep07(), **kw).ok is None
    # The stream speed decides when the TTFT limit is lax: 30 tok/s leaves 8 users a replica.
    strict_reader = {**kw, "ttft_p95_limit_s": 5.0, "min_per_user_tok_s": 30.0}
    assert checks.capacity.replicas_for_users(63, _sweep07(), **strict_reader).ok is True
    # A level with no answer (None) meets nothing: here 16 users, so 8 a replica.
    table = _sweep07().astype(object)
    table.loc[table.concurrency == 16, "ttft_s_p95"] = None
    assert checks.capacity.replicas_for_users(63, table, **kw).ok is True


def test_break_even_utilisation() -> None:
    kw = {"usd_per_hour": 0.50, "tok_s": 732.0, "api_usd_per_million": 0.50}
    right = 0.50 / (3600 * 732) * 1e6 / 0.50                                 # ~0.38
    assert checks.capacity.break_even_utilisation(right, **kw).ok is True
    assert checks.capacity.break_even_utilisation(round(right, 3), **kw).ok is True
    upside_down = checks.capacity.break_even_utilisation(1 / right, **kw)
    assert upside_down.ok is False and "upside down" in upside_down.message
    assert checks.capacity.break_even_utilisation(100 * right, **kw).ok is False      # a percentage
    per_token = 0.50 / (3600 * 732) / 0.50                                   # no x 1e6
    assert "units" in checks.capacity.break_even_utilisation(per_token, **kw).message
    per_user = 0.50 / (3600 * 732 / 32) * 1e6 / 0.50                         # per-user tok/s
    assert checks.capacity.break_even_utilisation(per_user, **kw).ok is False
    assert checks.capacity.break_even_utilisation(..., **kw).ok is None
