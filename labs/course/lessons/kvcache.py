"""Notebook 04's lessons: a full KV pool fails nobody, caps who runs, and makes the wait.

Each check compares two runs of the identical burst made one after the other on the same
machine (a small pool and one that holds everyone), or a run with the block arithmetic,
so no threshold is an absolute time.
"""

from __future__ import annotations

from . import require


def nothing_failed(requests: int, ok: int) -> dict:
    """Every request of the burst answered 200: exhaustion is silent."""
    return require("a full KV pool makes requests wait, it does not fail them",
                   requests > 0 and ok == requests, {"requests": requests, "ok": ok})


def pool_caps_running(max_running: int, admit_at_once: int, users: int) -> dict:
    """The small pool ran at most what its blocks admit (`num_blocks // prompt blocks`, vLLM
    admits on a prompt's blocks), fewer than the users. One more than the arithmetic is
    allowed: the sampler can see a finishing request and its successor in the same scrape."""
    return require("the pool, not the number of users, decides how many run at once",
                   max_running <= admit_at_once + 1 and max_running < users,
                   {"most running": max_running, "the blocks admit": admit_at_once,
                    "users": users})


def control_held_everyone(max_running: int, predicted_max_running: int) -> dict:
    """On the pool that holds the burst, the engine ran (within one) as many at once as the
    replay of vLLM's scheduler predicts: every user once prefill let them in. The replay, not
    `users`, is the reference: where prefill is slow next to the answers, the first requests
    finish before the last are admitted, on any pool."""
    return require("on a pool that holds the burst, nobody waits for blocks",
                   max_running >= predicted_max_running - 1,
                   {"most running (control)": max_running,
                    "predicted by the replay": predicted_max_running})


def pool_makes_the_wait(pressure_last_ttft_s: float, control_last_ttft_s: float, *,
                        min_share: float = 0.5) -> dict:
    """The pool's share of the last user's wait, `1 - control / pressure`, is at least
    `min_share`: the burst was designed (labs.kvwait) for a predicted share of 0.65, and never
    below 0.6 while a longer burst reaches it. Two runs of a few tens of seconds on one machine
    differ by ~10 %: at a predicted 0.6, a control 10 % slow and a pressure run 10 % fast give
    1 - 0.4 x 1.1 / 0.9 = 0.51, still above 0.5; at 0.65, 0.57. Measured here: 0.62-0.66 on
    predictions of 0.65-0.68."""
    share = 1 - control_last_ttft_s / pressure_last_ttft_s if pressure_last_ttft_s > 0 else 0.0
    return require(f"the small pool, not prefill, makes most of the last user's wait "
                   f"(at least {min_share:.0%})",
                   share >= min_share and control_last_ttft_s < pressure_last_ttft_s,
                   {"last TTFT, small pool (s)": pressure_last_ttft_s,
                    "last TTFT, pool that holds it (s)": control_last_ttft_s,
                    "pool's share": round(share, 3)},
                   hint="If prefill dominates, this machine computes prompts slower than the "
                        "calibration says: re-run `python -m labs calibrate`.")


def kv_full_only_under_pressure(pressure_peak: float, control_peak: float, full: float) -> dict:
    """KV usage came near what the admitted requests fill (`full`, from the block arithmetic)
    on the small pool, and stayed below that on the large one. The gauge is sampled every
    0.25 s while requests finish and others are admitted in their place, so a sample can miss
    the top by a request's blocks (3 of 39 on the CPU: 8 %); 85 % of `full` leaves room for it."""
    return require("KV usage pins at the pool's limit only when the pool is too small",
                   pressure_peak >= 0.85 * full and control_peak < pressure_peak,
                   {"peak KV usage, small pool": pressure_peak,
                    "peak KV usage, large pool": control_peak, "full": full})
