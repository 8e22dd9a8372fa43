"""Pictures of ideas a web engineer has not met yet, drawn by the course (no image files).

Each diagram is a function returning a matplotlib Figure, drawn from boxes, arrows and text
only, so it is the same on every machine and in every run (no data, no randomness). The
labels are the course's own words for the idea, so a test can check that each picture says
what it promises.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def _canvas(title: str, width: float, height: float) -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=12)
    return fig, ax


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, *,
         colour: str = "whitesmoke", edge: str = "black", size: float = 9,
         dashed: bool = False) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", facecolor=colour,
                                edgecolor=edge, linestyle="--" if dashed else "-"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, wrap=True)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "", *,
           colour: str = "black", size: float = 8) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.4})
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center",
                va="bottom", fontsize=size, color=colour)


def prefill_vs_decode(prompt_tokens: int = 6, decode_steps: int = 4) -> Figure:
    """Prefill against decode: why the first token and the next ones cost different things.

    Prefill runs the whole prompt through the model in one step (many tokens per weight read:
    compute-bound, what TTFT pays). Decode makes one token per step per sequence, and every
    step reads all the weights again (one token per weight read: memory-bound, what TPOT pays).
    """
    fig, ax = _canvas("Prefill against decode", 12, 5.2)
    ax.text(0.2, 4.7, "prefill: the whole prompt in one step", fontsize=11, weight="bold")
    for i in range(prompt_tokens):
        _box(ax, 0.3 + i * 0.55, 3.7, 0.45, 0.5, f"p{i + 1}", colour="lightsteelblue", size=8)
    _box(ax, 0.3, 2.4, prompt_tokens * 0.55 - 0.1, 0.8,
         "1 step: all prompt tokens at once\ncompute-bound", colour="lightsteelblue")
    _arrow(ax, (0.3 + prompt_tokens * 0.275, 3.7), (0.3 + prompt_tokens * 0.275, 3.2))
    _box(ax, 0.3 + prompt_tokens * 0.275 - 0.5, 1.1, 1.0, 0.5, "token 1", colour="gold")
    _arrow(ax, (0.3 + prompt_tokens * 0.275, 2.4), (0.3 + prompt_tokens * 0.275, 1.6))
    ax.text(0.4 + prompt_tokens * 0.275, 1.9, "time to first\ntoken (TTFT)", fontsize=8)
    left = 5.0
    ax.text(left, 4.7, "decode: one token per step per sequence", fontsize=11, weight="bold")
    _box(ax, left, 3.7, decode_steps * 1.6 - 0.2, 0.55, "the weights (every byte)",
         colour="mistyrose")
    for i in range(decode_steps):
        x = left + i * 1.6
        _box(ax, x, 2.4, 1.2, 0.8, f"step {i + 1}", colour="mistyrose")
        _arrow(ax, (x + 0.6, 3.7), (x + 0.6, 3.2))
        _box(ax, x + 0.1, 1.1, 1.0, 0.5, f"token {i + 2}", colour="gold")
        _arrow(ax, (x + 0.6, 2.4), (x + 0.6, 1.6))
        if i:
            _arrow(ax, (x - 0.5, 1.35), (x - 0.05, 2.6), colour="gray")
    ax.text(left, 0.45, "each step re-reads the weights: memory-bound\n"
            "one stream <= bandwidth / weight bytes", fontsize=9)
    ax.text(0.2, 0.45, "many tokens share one weight read", fontsize=9)
    return fig


def _default_requests(block_size: int) -> tuple[int, ...]:
    return (round(2.4 * block_size), round(1.5 * block_size), 3 * block_size)


def paged_kv_blocks(block_size: int = 16, requests: Sequence[int] | None = None,
                    pool_blocks: int = 16) -> Figure:
    """Paged KV cache: each request's tokens live in fixed-size blocks of one shared pool.

    A request holds whole blocks (its last one partly empty), the blocks need not be next to
    each other, and a request whose last block is full needs a new block for its next token:
    when the pool has none free, someone waits. `requests` are tokens per request (default:
    2.4, 1.5 and exactly 3 blocks' worth).
    """
    tokens = list(requests) if requests is not None else list(_default_requests(block_size))
    need = [-(-t // block_size) for t in tokens]
    if sum(need) > pool_blocks:
        raise ValueError(f"{sum(need)} blocks do not fit a drawing of {pool_blocks}")
    # Hand blocks out interleaved, as a pool that has served other requests does.
    owner: list[tuple[int, int] | None] = [None] * pool_blocks
    order = [b for start in range(2) for b in range(start, pool_blocks, 2)]
    free = iter(order)
    for r, n in enumerate(need):
        for k in range(n):
            owner[next(free)] = (r, k)
    fig, ax = _canvas(f"Paged KV cache: fixed blocks of {block_size} tokens in one pool", 11, 4.6)
    cols = 8
    for b, who in enumerate(owner):
        x, y = 0.4 + (b % cols) * 1.05, 2.6 - (b // cols) * 1.1
        ax.add_patch(Rectangle((x, y), 0.9, 0.8, facecolor="white", edgecolor="black"))
        if who is None:
            ax.text(x + 0.45, y + 0.4, "free", ha="center", va="center", fontsize=8,
                    color="gray")
            continue
        r, k = who
        used = min(block_size, tokens[r] - k * block_size)
        ax.add_patch(Rectangle((x, y), 0.9 * used / block_size, 0.8, facecolor=_COLOURS[r % 6],
                               alpha=0.6))
        ax.text(x + 0.45, y + 0.4, f"{chr(65 + r)}{k + 1}\n{used}/{block_size}", ha="center",
                va="center", fontsize=8)
    for r, (t, n) in enumerate(zip(tokens, need)):
        full = t % block_size == 0
        note = ": last block full, the next token needs a new block" if full else ""
        ax.text(0.4, 0.95 - r * 0.3, f"request {chr(65 + r)}: {t} tokens -> {n} blocks{note}",
                fontsize=9, color=_COLOURS[r % 6])
    ax.text(0.4, 3.75, "blocks filling as tokens are generated; a request holds them until "
            "it ends", fontsize=9)
    return fig


def where_requests_wait() -> Figure:
    """Where the backlog waits: at a gateway you can see and bound, or inside the engine.

    With a gateway, a request waits in a bounded queue outside the engine (which sheds the
    excess with a fast 503 + Retry-After), then in the engine's waiting queue, then runs in the
    batch (at most max-num-seqs) while its KV sits in the pool. The naive engine accepts
    everything: its backlog waits inside, invisible to the client, as latency.
    """
    fig, ax = _canvas("Where requests wait", 12, 5)
    y, h = 3.0, 0.9
    stages = [(0.2, 1.4, "client", "whitesmoke"),
              (2.2, 2.1, "gateway queue\n(bounded)", "honeydew"),
              (5.1, 2.0, "engine's\nwaiting queue", "lightyellow"),
              (7.9, 2.0, "running batch\n(max-num-seqs)", "lightsteelblue"),
              (10.3, 1.5, "KV pool\n(blocks)", "mistyrose")]
    for x, w, text, colour in stages:
        _box(ax, x, y, w, h, text, colour=colour)
    for (x0, w0, *_), (x1, *_rest) in itertools.pairwise(stages):
        _arrow(ax, (x0 + w0 + 0.05, y + h / 2), (x1 - 0.05, y + h / 2))
    _arrow(ax, (3.25, y), (3.25, y - 0.9), colour="tab:red")
    ax.text(3.25, y - 1.2, "full: sheds with 503 + Retry-After", ha="center", fontsize=9,
            color="tab:red")
    ax.text(0.2, 4.5, "with a gateway: the backlog waits where you can see, bound and shed it",
            fontsize=10, weight="bold")
    ax.text(0.2, 1.05, "naive engine: client -> engine's waiting queue -> running batch "
            "-> KV pool", fontsize=10, weight="bold")
    ax.text(0.2, 0.55, "the backlog waits inside the engine, invisible: no error, only "
            "latency (every answer 200 OK)", fontsize=9)
    return fig
