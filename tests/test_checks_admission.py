"""05's exercise checks (labs.checks.admission), judged on the numbers three machines would
produce: the embedded default on the slowest CPU kind, the article's card (RTX 4000 Ada) and
an H200, each serving the notebook's own overload (labs.sizing.overload at 2x the uncapped
engine's capacity), replayed (labs.simulate.replay; the gateway by
labs.admission_runs.predict_gateway). The replay is the model, not a measurement: these tests
show that the solution the notebook reasons out passes on each machine, and that the named
wrong answers fail, with a message that says why."""

from __future__ import annotations

import math
from functools import cache
from typing import Any, NamedTuple

import pytest

from labs.course import admission_runs, checks
from labs.course.checks import Verdict
from labs.model import article, predict, simulate, sizing
from labs.model.steps import LinearSteps, ServerLimits
from labs.workload import Closed, Poisson

# The slowest CPU kind measured (2-core AMD EPYC, AVX2 only; DESIGN.md, 2026-12-01), on the
# kv-pressure profile's limits (the uncapped engine of the notebook's setup (a)).
EPYC = LinearSteps(fixed_s=0.047, per_seq_s=0.0024, per_context_token_s=5.6e-6,
                   prefill_tok_s=654, request_overhead_s=0.040)
CPU_SMALL_POOL = ServerLimits(40, 128, 2048, 128, 2048)
PROMPT, OUTPUT = 128, 32  # the notebook's workload
MACHINES = ("cpu", "rtx-4000-ada", "h200")


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


class Machine(NamedTuple):
    cost: Any
    uncapped: ServerLimits
    backend: str
    overload: Poisson
    baseline_ttft_s: float  # one user alone on the bounded engine, p95 of 8 (as 05 measures)
    engine_rps: float       # setup (b): the bounded engine, never short of work
    max_num_seqs: int       # the bounded engine's
    gateway_n: int          # the gateway profile's --max-in-flight

    @property
    def slo_ttft_s(self) -> float:
        return 3 * self.baseline_ttft_s  # the notebook's SLO


@cache
def machine(name: str) -> Machine:
    if name == "cpu":
        cost, uncapped, backend = EPYC, CPU_SMALL_POOL, "cpu"
    else:
        cost, uncapped, backend = (predict.datasheet_steps(name, article.MODEL),
                                   predict.datasheet_limits(name, article.MODEL), "gpu")
    slots = sizing.fit_at_once(uncapped, PROMPT, OUTPUT)
    sized = sizing.overload(simulate.capacity_rps(cost, uncapped, PROMPT, OUTPUT), slots,
                            requests=admission_runs.overload_candidates(slots)[0])
    overload = Poisson(rate_rps=sized.rate_rps, requests=sized.requests, seed=1)
    bounded = admission_runs.profile_limits(uncapped, "bounded", backend)
    baseline = simulate.replay(cost, bounded, Closed(1, requests=8), PROMPT, OUTPUT).summary()
    engine = simulate.replay(cost, bounded, overload, PROMPT, OUTPUT).summary()
    return Machine(cost, uncapped, backend, overload, baseline["ttft_s_p95"],
                   engine["request_rate_rps"], bounded.max_num_seqs,
                   admission_runs.gateway_slots(backend))


def judged(name: str, n: int, m: int, *, wait_s: float = 30.0) -> Verdict:
    """The pure judgement of a gateway run with N = n, M = m, replayed on `name`."""
    mc = machine(name)
    bounded = admission_runs.profile_limits(mc.uncapped, "bounded", mc.backend)
    s = admission_runs.predict_gateway(mc.cost, bounded, mc.overload, PROMPT, OUTPUT, n, m,
                                       max_queue_wait_s=wait_s).summary(mc.slo_ttft_s)
    return checks.admission.judge_limits(
        n, m, offered=s["requests"], served=s["ok"], within_slo=s["within_slo"],
        duration_s=s["duration_s"], ttft_p95_s=s["ttft_s_p95"], slo_ttft_s=mc.slo_ttft_s,
        engine_rps=mc.engine_rps, max_num_seqs=mc.max_num_seqs)


# --------------------------------------------------------------------------------------------
# Limits for an SLO and a goodput target


@pytest.mark.parametrize("name", MACHINES)
def test_the_notebooks_solution_passes(name: str) -> None:
    # N: the gateway profile's (max-num-seqs, less one slot on 2 CPU cores); M: 0, since a
    # slot frees less often than the SLO leaves a waiter
    verdict = judged(name, machine(name).gateway_n, 0)
    assert verdict.ok is True, verdict.message
    assert "Both hold" in verdict.message


@pytest.mark.parametrize("name", MACHINES)
def test_n_at_max_num_seqs_passes_too(name: str) -> None:
    mc = machine(name)
    assert judged(name, mc.max_num_seqs, 0).ok is True


@pytest.mark.parametrize("name", MACHINES)
def test_one_slot_and_no_queue_sheds_almost_everything(name: str) -> None:
    verdict = judged(name, 1, 0)
    assert verdict.ok is False
    assert "Goodput is short" in verdict.message and "The SLO failed" not in verdict.message
    assert "max-num-seqs" in verdict.message


@pytest.mark.parametrize("name", MACHINES)
def test_n_far_over_max_num_seqs_with_a_long_queue_waits(name: str) -> None:
    mc = machine(name)
    verdict = judged(name, 4 * mc.max_num_seqs, 4 * mc.max_num_seqs)
    assert verdict.ok is False
    assert "The SLO failed" in verdict.message and "vLLM's own queue" in verdict.message


@pytest.mark.parametrize("name", MACHINES)
def test_n_over_max_num_seqs_without_a_queue_waits_in_the_engine(name: str) -> None:
    mc = machine(name)
    verdict = judged(name, 2 * mc.max_num_seqs, 0)
    assert verdict.ok is False and "vLLM's own queue" in verdict.message


@pytest.mark.parametrize("name", MACHINES)
def test_a_long_gateway_queue_makes_its_waiters_late(name: str) -> None:
    mc = machine(name)
    verdict = judged(name, mc.max_num_seqs, 3 * mc.max_num_seqs)
    assert verdict.ok is False
    assert "The SLO failed" in verdict.message and "queue exercise" in verdict.message


def test_one_slow_request_of_seventeen_does_not_fail_a_true_p95() -> None:
    kw = dict(offered=60, served=17, duration_s=14.0, ttft_p95_s=0.9, slo_ttft_s=0.85,
              engine_rps=1.5, max_num_seqs=4)
    assert checks.admission.judge_limits(3, 0, within_slo=16, **kw).ok is True
    assert checks.admission.judge_limits(3, 0, within_slo=11, **kw).ok is False


def test_a_run_that_served_nothing_says_so() -> None:
    verdict = checks.admission.judge_limits(
        3, 0, offered=60, served=0, within_slo=0, duration_s=1.0, ttft_p95_s=None,
        slo_ttft_s=0.85, engine_rps=1.5, max_num_seqs=4)
    assert verdict.ok is False and "Nothing was served" in verdict.message


@pytest.mark.parametrize("n, m, why", [(..., 0, "not answered"), (0, 0, "1 or more"),
                                       (3, -1, "0 or more"), (2.5, 0, "whole number"),
                                       (3, "0", "whole number")])
def test_bad_limits_are_told_before_any_run(n: object, m: object, why: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from labs.course import experiments

    monkeypatch.setattr(experiments, "run_through_gateway",
                        lambda *a, **k: pytest.fail("no run for an answer that is not one"))
    verdict = checks.admission.gateway_meets_slo(n, m, None, None, slo_ttft_s=1.0,
                                                 engine_rps=1.0, max_num_seqs=4)
    assert verdict.ok is not True and why in verdict.message


def test_the_live_check_judges_the_run_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from labs.course import experiments
    from labs.results.records import RequestRecord, RunResult
    from labs.workload import Workload

    def record(i: int, ttft: float | None) -> RequestRecord:
        if ttft is None:
            return RequestRecord(index=i, scheduled_s=i * 0.1, sent_s=i * 0.1,
                                 end_s=i * 0.1 + 0.003, status=503, error_kind="shed")
        return RequestRecord(index=i, scheduled_s=i * 0.1, sent_s=i * 0.1, end_s=i * 0.1 + 1.0,
                             token_times_s=(i * 0.1 + ttft, i * 0.1 + 1.0), status=200)

    records = tuple(record(i, 0.2 if i % 3 == 0 else None) for i in range(30))
    run = RunResult("gateway N=3 M=0", Poisson(10.0, requests=30), Workload(), {}, records)
    monkeypatch.setattr(experiments, "run_through_gateway", lambda *a, **k: run)
    verdict = checks.admission.gateway_meets_slo(3, 0, run.shape, run.workload, slo_ttft_s=0.6,
                                                 engine_rps=2.0, max_num_seqs=4)
    # 10 served within the SLO over 3.9 s: 2.6 req/s against a target of 1.0
    assert verdict.ok is True and "served 10 of 30" in verdict.message


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABS_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError):
        checks.admission.gateway_meets_slo(..., 0, None, None, slo_ttft_s=1.0, engine_rps=1.0,
                                           max_num_seqs=4)


# --------------------------------------------------------------------------------------------
# How long a queue is worth having


def queue_numbers(name: str, slo_factor: float = 3.0) -> dict[str, float]:
    """max_wait_s and slot_every_s as the notebook computes them, from the replayed (d)."""
    mc = machine(name)
    bounded = admission_runs.profile_limits(mc.uncapped, "bounded", mc.backend)
    d = admission_runs.predict_gateway(mc.cost, bounded, mc.overload, PROMPT, OUTPUT,
                                       mc.gateway_n, 0).summary()
    slo_s = slo_factor * mc.baseline_ttft_s
    return {"max_wait_s": max(0.05, slo_s - 2 * mc.baseline_ttft_s),
            "slot_every_s": d["e2e_s_p50"] / mc.gateway_n, "max_in_flight": mc.gateway_n}


@pytest.mark.parametrize("name", MACHINES)
@pytest.mark.parametrize("slo_factor", [3.0, 30.0])  # the notebook's SLO, and a lax one
def test_the_useful_queue_solution_passes(name: str, slo_factor: float) -> None:
    kw = queue_numbers(name, slo_factor)
    answer = int(kw["max_wait_s"] // kw["slot_every_s"])  # the notebook's solution
    assert checks.admission.useful_queue(answer, **kw).ok is True


@pytest.mark.parametrize("name", MACHINES)
def test_one_waiter_more_than_fits_is_told_to_round_down(name: str) -> None:
    kw = queue_numbers(name)
    right = math.floor(kw["max_wait_s"] / kw["slot_every_s"])
    verdict = checks.admission.useful_queue(right + 1, **kw)
    assert verdict.ok is False and "round down" in verdict.message


@pytest.mark.parametrize("name", ["cpu", "rtx-4000-ada"])
def test_at_the_notebooks_slo_no_queue_is_worth_having_here(name: str) -> None:
    # answers of 32 tokens hold a slot far longer than 3x a lone TTFT leaves a waiter (on an
    # H200 a slot frees every ~20 ms, within the notebook's 50 ms floor on the wait: 2 fit)
    assert checks.admission.useful_queue(0, **queue_numbers(name)).ok is True


@pytest.mark.parametrize("name", MACHINES)
def test_named_wrong_queues_fail_with_their_reason(name: str) -> None:
    kw = queue_numbers(name, 30.0)
    right = math.floor(kw["max_wait_s"] / kw["slot_every_s"])
    n = kw["max_in_flight"]
    whole_answer = math.floor(kw["max_wait_s"] / (kw["slot_every_s"] * n))
    rounded_up = math.ceil(kw["max_wait_s"] / kw["slot_every_s"])
    assert right >= 2 and len({right, whole_answer, right * n, rounded_up}) == 4
    for wrong, why in ((whole_answer, "whole answer"), (right * n, "do not multiply"),
                       (rounded_up, "round down")):
        verdict = checks.admission.useful_queue(wrong, **kw)
        assert verdict.ok is False and why in verdict.message, (wrong, verdict.message)


def test_a_queue_of_the_old_cases() -> None:
    kw = {"max_wait_s": 1.0, "slot_every_s": 0.3, "max_in_flight": 3}
    assert checks.admission.useful_queue(3, **kw).ok is True
    assert checks.admission.useful_queue(1, **kw).ok is False  # max wait / e2e ignores the N slots
    assert checks.admission.useful_queue(4, **kw).ok is False  # rounded up: the last waits too long
    assert checks.admission.useful_queue(..., **kw).ok is None
