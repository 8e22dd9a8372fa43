"""labs.model.steps: a step's cost, and the server's limits from its flags or vLLM's defaults.
No server."""

from __future__ import annotations

import pytest

from labs.errors import ConfigError
from labs.model.steps import LinearSteps, ServerLimits, flag_value, limits_from, scheduler_defaults


def test_linear_step_is_the_sum_of_its_parts():
    s = LinearSteps(0.01, 0.001, 1e-6, 1000, 0.0)
    assert s.step_s(8, 1000, 500) == pytest.approx(0.01 + 0.008 + 0.001 + 0.5)


def test_limits_come_from_flags_or_vllm_defaults():
    assert flag_value(["--max-num-seqs=4", "--x"], "max-num-seqs") == "4"
    assert flag_value(["--max-num-seqs", "8"], "max-num-seqs") == "8"
    assert scheduler_defaults("cpu") == (128, 2048)
    assert scheduler_defaults("gpu", 20) == (256, 2048)
    assert scheduler_defaults("gpu", 80, "NVIDIA H100 80GB HBM3") == (1024, 8192)
    assert scheduler_defaults("gpu", 80, "NVIDIA A100-SXM4-80GB") == (256, 2048)

    class Pool:
        num_gpu_blocks, block_size = 40, 128

    lim = limits_from(Pool(), 1280, ("--max-num-seqs=4",), "cpu")
    assert (lim.max_num_seqs, lim.max_num_batched_tokens, lim.pool_tokens) == (4, 2048, 5120)
    assert "from --max-num-seqs" in lim.source
    with pytest.raises(ConfigError):
        ServerLimits(0, 16, 100, 1, 1)
