"""The course's diagrams: each returns a Figure that says what it promises, the same every run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from labs.course import diagrams, plots


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_prefill_vs_decode_says_what_each_phase_is_bound_by() -> None:
    fig = diagrams.prefill_vs_decode()
    text = _texts(fig)
    assert isinstance(fig, Figure)
    for label in ("prefill", "whole prompt in one step", "compute-bound", "TTFT",
                  "decode", "one token per step per sequence", "re-reads the weights",
                  "memory-bound"):
        assert label in text, label


@pytest.mark.parametrize("block_size", [16, 128])
def test_paged_kv_blocks_shows_blocks_filling_and_a_new_block_needed(block_size: int) -> None:
    text = _texts(diagrams.paged_kv_blocks(block_size=block_size))
    assert f"fixed blocks of {block_size} tokens" in text
    assert "free" in text and "needs a new block" in text
    assert f"request A: {round(2.4 * block_size)} tokens -> 3 blocks" in text
    assert f"{block_size}/{block_size}" in text   # a full block


def test_paged_kv_blocks_refuses_more_blocks_than_it_draws() -> None:
    with pytest.raises(ValueError):
        diagrams.paged_kv_blocks(block_size=16, requests=[16 * 20], pool_blocks=16)


def test_where_requests_wait_names_every_queue() -> None:
    text = _texts(diagrams.where_requests_wait())
    for label in ("client", "gateway queue", "bounded", "503 + Retry-After",
                  "engine's\nwaiting queue", "max-num-seqs", "KV pool", "naive", "invisible"):
        assert label in text, label


@pytest.mark.parametrize("draw", [diagrams.prefill_vs_decode, diagrams.paged_kv_blocks,
                                  diagrams.where_requests_wait])
def test_diagrams_are_deterministic(draw) -> None:
    assert _texts(draw()) == _texts(draw())


def test_blocks_against_users_plot_draws_the_arithmetic_line() -> None:
    table = pd.DataFrame({"users": [1, 4, 16], "peak_kv_blocks": [3, 12, 47]})
    fig = plots.kv_blocks_by_users(table, block_size=128, tokens_per_request=320,
                                   meta={"model": "SmolLM2"}, num_blocks=60)
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [3, 12, 48]          # users x ceil(320 / 128)
    assert ax.get_ylabel() == "KV blocks in use"
    assert "the pool: 60 blocks" in _texts(fig)
