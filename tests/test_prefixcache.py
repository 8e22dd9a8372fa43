"""The shared-prefix arithmetic of notebook 06, against the numbers the CPU server measured:
a 1,010-token prompt, 1,003 tokens in common, 128-token blocks, 16 users, 32-token answers
(vLLM's counters found 13,440 of 16,162 prompt tokens cached: 15 x 7 blocks x 128)."""

from __future__ import annotations

import pytest

from labs.course import checks
from labs.errors import ConfigError
from labs.model.prefixcache import SharedPrefix, predicted_ttft_cached
from labs.workload import Workload

SHARED = SharedPrefix(prompt_tokens=1010, shared_tokens=1003, block_size=128)


@pytest.fixture(autouse=True)
def lenient_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks raise on a wrong answer under `make test`; here the verdict is the point."""
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


def test_only_full_blocks_of_the_common_tokens_are_shared() -> None:
    assert SHARED.shared_blocks == 7
    assert SHARED.blocks_per_request(32) == 9
    assert SHARED.blocks_held(16, 32, cached=False) == 144
    assert SHARED.blocks_held(16, 32, cached=True) == 7 + 16 * 2


def test_the_burst_fits_the_small_pool_only_when_shared() -> None:
    usable = 40 - 1
    assert SHARED.fit_at_once(usable, 32, cached=False) == 4
    assert SHARED.fit_at_once(usable, 32, cached=True) == 16


def test_prefill_and_hit_rate_match_vllms_counters() -> None:
    assert SHARED.prefill_tokens(16, cached=False) == 16 * 1010
    assert SHARED.prefill_tokens(16, cached=True) == 16 * 1010 - 15 * 7 * 128
    assert SHARED.hit_rate(16) == pytest.approx(13_440 / 16_160)


def test_a_shared_prefix_workload_excludes_a_prompt_length() -> None:
    assert Workload(shared_prefix_tokens=1000).target_tokens == 1000
    assert Workload(prompt_tokens=500).target_tokens == 500
    with pytest.raises(ConfigError, match="not both"):
        Workload(prompt_tokens=500, shared_prefix_tokens=1000)


def test_blocks_with_shared_prefix_check() -> None:
    kw = dict(users=16, prompt_tokens=1010, shared_tokens=1003, output_tokens=32,
              block_size=128, usable_blocks=39)
    assert checks.prefix.blocks_with_shared_prefix(39, **kw).ok
    assert not checks.prefix.blocks_with_shared_prefix(144, **kw).ok     # nothing shared
    # partial block shared too
    assert not checks.prefix.blocks_with_shared_prefix(7 + 16 * 1, **kw).ok
    assert checks.prefix.blocks_with_shared_prefix(..., **kw).ok is None


def test_prefix_hit_rate_check() -> None:
    kw = dict(users=16, prompt_tokens=1010, shared_tokens=1003, block_size=128,
              measured=0.832)
    assert checks.prefix.prefix_hit_rate(13_440 / 16_160, **kw).ok
    assert not checks.prefix.prefix_hit_rate(1003 / 1010, **kw).ok          # every request hits
    # not rounded to blocks
    assert not checks.prefix.prefix_hit_rate(15 * 1003 / (16 * 1010), **kw).ok


def test_predicted_ttft_cached_prefills_the_first_alone_then_only_what_is_not_shared() -> None:
    from labs.model.steps import LinearSteps, ServerLimits

    cost = LinearSteps(fixed_s=0.02, per_seq_s=0.001, per_context_token_s=1e-6,
                       prefill_tok_s=2000.0, request_overhead_s=0.0, per_prefill_pair_s=0.0)
    limits = ServerLimits(num_blocks=40, block_size=128, max_model_len=2048, max_num_seqs=128,
                          max_num_batched_tokens=2048)
    ttft = predicted_ttft_cached(cost, limits, SHARED, 16)
    first = 0.02 + 1010 / 2000
    assert ttft[0] == pytest.approx(first)
    unique = 1010 - 7 * 128  # 114 tokens each, 15 of them in one 2,048-token step
    assert ttft[1:] == pytest.approx([first + 0.02 + 0.001 + 1e-6 * 1010 + 15 * unique / 2000] * 15)
