"""Runs sized to a time budget: the largest candidate predicted to fit is chosen, the smallest
when none fits (and the plan says so); and the planned CI durations of 03 and 03b on this
course's CPUs, including one twice as slow as the slowest seen, stay within what `make test`
can afford."""

from __future__ import annotations

import pytest
from cpu_calibrations import AVX2, AVX512, NAIVE, TWICE_AVX2

from labs import Burst
from labs.course import experiments
from labs.errors import ConfigError
from labs.model import simulate, sizing, timebudget
from labs.model.calibration import Calibration
from labs.model.steps import LinearSteps
from labs.settings import Settings


def _cal(steps: LinearSteps) -> Calibration:
    return Calibration(steps=steps, limits=NAIVE, model="SmolLM2-135M-Instruct", hardware="cpu",
                       vllm_version="", backend="cpu", measured_at="", wall_s=0.0,
                       step_points=(), ttft_points=())


def test_the_largest_candidate_that_fits_is_chosen() -> None:
    plan = timebudget.largest_within("run", [1, 2, 4, 8], lambda n: 10.0 * n, budget_s=45)
    assert (plan.choice, plan.predicted_s, plan.fits) == (4, 40.0, True)


def test_when_nothing_fits_the_smallest_runs_and_says_over() -> None:
    plan = timebudget.largest_within("run", [1, 2], lambda n: 100.0 * n, budget_s=45)
    assert (plan.choice, plan.fits) == (1, False)
    assert "OVER" in plan.describe()


def test_bad_budgets_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        timebudget.largest_within("run", [], lambda n: 1.0, budget_s=10)
    with pytest.raises(ConfigError):
        timebudget.largest_within("run", [1], lambda n: 1.0, budget_s=0)
    with pytest.raises(ConfigError):
        timebudget.for_notebook("99_nothing")


def test_timed_records_predicted_and_actual(capsys: pytest.CaptureFixture[str]) -> None:
    nb = timebudget.NotebookBudget("x", 60)
    with nb.timed("run", predicted_s=1.0):
        pass
    record, = nb.to_records()
    assert record["predicted_s"] == 1.0 and record["actual_s"] is not None
    assert "predicted 1 s" in capsys.readouterr().out


def test_every_notebook_has_a_budget_and_full_is_larger() -> None:
    from pathlib import Path

    names = {p.stem for p in Path("solutions").glob("0*.ipynb")} - {"00_smoke"}
    assert names <= set(timebudget.BUDGETS), names - set(timebudget.BUDGETS)
    for budget in timebudget.BUDGETS.values():
        assert budget.full_s > budget.ci_s > 0
    ci = Settings.from_env(scale="ci")
    assert timebudget.BUDGETS["03_continuous_batching"].seconds(ci) == \
        timebudget.BUDGETS["03_continuous_batching"].ci_s


def _plan_03(cal: Calibration, total_s: float) -> dict[str, timebudget.Plan]:
    """03's and 03b's plans exactly as the notebooks make them (their shares)."""
    levels, knee = sizing.concurrency_levels(cal.steps, cal.limits, prompt_tokens=32, max_tokens=64)
    sweep = timebudget.largest_within(
        "sweep", experiments.sweep_candidates(levels, knee),
        lambda p: experiments.predicted_sweep_s(cal, *p, max_tokens=64, prompt_tokens=32),
        0.7 * total_s)
    schedulers = timebudget.largest_within(
        "schedulers", experiments.scheduler_candidates(cal.limits.max_num_seqs),
        lambda c: experiments.predicted_schedulers_s(
            cal, c[0], experiments.draw_lengths(c[1], requests=c[2] * c[0]), 64), 0.25 * total_s)
    # 03b's capacity is 03's best tok/s / 64; the replay's best closed-loop level stands in.
    best = max(r["agg_tok_s"] for r in simulate.predict_closed(
        cal.steps, cal.limits, sweep.choice[0], prompt_tokens=32, max_tokens=64))
    arrivals = timebudget.largest_within(
        "arrivals", experiments.arrival_candidates(best / 64, cal.limits.max_num_seqs),
        lambda c: experiments.predicted_rate_sweep_s(cal, *c, prompt_tokens=32, max_tokens=64),
        0.9 * timebudget.BUDGETS["03b_arrivals_and_goodput"].ci_s)
    return {"sweep": sweep, "schedulers": schedulers, "arrivals": arrivals}


@pytest.mark.parametrize("steps", [AVX512, AVX2], ids=["avx512", "avx2-epyc"])
def test_03_plans_stay_near_their_ci_budget_on_the_cpus_seen(steps: LinearSteps) -> None:
    """On the course's CPUs every run of 03 and 03b is planned within 1.3x of its share (the
    smallest meaningful sweep, which must reach twice max_num_seqs so the engine's cap makes
    a cliff certain, is what the slowest one pays for); on the AVX-512 one every plan fits."""
    plans = _plan_03(_cal(steps), timebudget.BUDGETS["03_continuous_batching"].ci_s)
    for plan in plans.values():
        print(plan.describe())
        assert plan.predicted_s <= 1.3 * plan.budget_s
    if steps is AVX512:
        assert all(plan.fits for plan in plans.values())


def test_a_cpu_twice_as_slow_runs_the_smallest_sizes_within_twice_the_budget() -> None:
    """Twice the slowest CPU's step costs: the plans fall to their smallest candidates, which
    still show each lesson, and cost at most about twice the budget (not 4x, as fixed sizes
    would: the old 03 planned 256 requests per rate whatever the machine)."""
    ci = timebudget.BUDGETS["03_continuous_batching"].ci_s + \
        timebudget.BUDGETS["03b_arrivals_and_goodput"].ci_s
    plans = _plan_03(_cal(TWICE_AVX2), timebudget.BUDGETS["03_continuous_batching"].ci_s)
    total = sum(p.predicted_s for p in plans.values())
    print({k: round(p.predicted_s) for k, p in plans.items()}, round(total), ci)
    assert total <= 2.2 * ci


def test_07_sweep_sizes_bracket_the_operating_point_and_grow() -> None:
    from labs.model import cost

    sizes = cost.sweep_sizes([1, 2, 4, 8, 16, 32, 64, 128], operating_point=16)
    narrowest = sizes[0]
    assert 1 in narrowest.levels and 8 in narrowest.levels and 32 in narrowest.levels
    assert 128 not in narrowest.levels
    assert any(s.levels == (1, 2, 4, 8, 16, 32, 64, 128) and s.rounds == 2 for s in sizes)
    cal = _cal(AVX2)
    seconds = [cost.sweep_seconds(cal.steps, cal.limits, s, prompt_tokens=32, output_tokens=64)
               for s in sizes]
    wider = [s for s in sizes
             if set(narrowest.levels) < set(s.levels) and s.rounds == narrowest.rounds]
    assert wider and all(cost.sweep_seconds(cal.steps, cal.limits, s, prompt_tokens=32,
                                            output_tokens=64) > seconds[0] for s in wider)


def test_06_a_cached_burst_is_predicted_shorter_than_the_uncached_one() -> None:
    from labs.model import prefixcache

    shared = prefixcache.SharedPrefix(prompt_tokens=1024, shared_tokens=896, block_size=128)
    cal = _cal(AVX2)
    off = prefixcache.predicted_run_s(cal.steps, cal.limits, shared, 8, 32, cached=False)
    on = prefixcache.predicted_run_s(cal.steps, cal.limits, shared, 8, 32, cached=True)
    assert 0 < on < off
    # twice the users: about twice the prefill to do with the cache off
    double = prefixcache.predicted_run_s(cal.steps, cal.limits, shared, 16, 32, cached=False)
    assert double > 1.5 * off


def _plan_05(steps: LinearSteps) -> float:
    """05's planned seconds exactly as the notebook plans them: the capacity run, the
    overload (every setup and the exercise), and the rest of its budget for the closing
    runs and the retries."""
    from cpu_calibrations import CPU_KV_PRESSURE

    from labs.course import admission_runs

    budget = timebudget.BUDGETS["05_bounded_admission"].ci_s
    slots = sizing.fit_at_once(CPU_KV_PRESSURE, 128, 32)
    capacity = simulate.capacity_rps(steps, CPU_KV_PRESSURE, 128, 32)
    nb = timebudget.NotebookBudget("05_bounded_admission", budget)
    overload = admission_runs.plan_overload(nb, steps, CPU_KV_PRESSURE, "cpu", capacity, slots)
    return (admission_runs.capacity_seconds(steps, CPU_KV_PRESSURE, slots, 128, 32)
            + overload.predicted_s + (1 - admission_runs.OVERLOAD_SHARE) * budget)


def _plan_04(steps: LinearSteps) -> float:
    """04's two timed runs as the notebook predicts them: the burst on the pool that holds
    it (control) and on the small pool, each with its one warm-up request alone."""
    from labs.model import kvwait

    burst = kvwait.plan(steps, NAIVE, "cpu", ci=True)
    assert burst.replays is not None  # a design keeps the replays it chose by
    on_small, on_large = burst.replays
    warm = simulate.replay(steps, NAIVE, Burst(1), burst.prompt_tokens, burst.output_tokens)
    return on_small.duration_s + on_large.duration_s + 2 * warm.duration_s


def _plan_07(steps: LinearSteps, cold_start_s: float) -> float:
    """07's runs as the notebook plans them: the cold start (fixed work, reserved from the
    budget), then the largest sweep that fits 80 % of what is left."""
    from labs.model import cost

    cal = _cal(steps)
    levels, _ = sizing.concurrency_levels(steps, NAIVE, prompt_tokens=32, max_tokens=64)
    table = experiments.predicted_sweep(cal, levels, max_tokens=64, prompt_tokens=32, rounds=2)
    alone_s = float(table.loc[table.concurrency == 1, "ttft_s_p50"].iloc[0])
    target = cost.Target.relative(alone_s, 10, cost.reading_speed_tok_s(5.0, 4 / 3))
    point = cost.operating_point(table, target)
    nb = timebudget.NotebookBudget("07", timebudget.BUDGETS["07_capacity_and_cost"].ci_s)
    nb.reserve("cold start", cold_start_s)

    def sweep_s(size: cost.SweepSize) -> float:
        return cost.sweep_seconds(steps, NAIVE, size, prompt_tokens=32, output_tokens=64)

    sizes = sorted(cost.sweep_sizes(levels, point["concurrency"]), key=sweep_s)
    return cold_start_s + nb.plan("the sweep", sizes, sweep_s, fraction=0.8).predicted_s


def _make_test(steps: LinearSteps, slowdown: float) -> timebudget.MakeTestPlan:
    """make test on a CPU with these step costs: 03, 03b, 04, 05 and 07 from their planners
    (which may go over on a slow CPU: their smallest runs still have to show the lesson), 01,
    02 and 06 at their CI budget (what their planners fit within). Start and rest: the largest
    of this course's three fresh-clone runs of 2026-12-02 on the 2-core Xeon (AMX): pytest
    1,185 s, of which the notebooks' timed runs 667 s and five untimed starts of ~31 s,
    leaving 363 s (the others: 1,059 - 584 - 155 = 320 s and 961 - 529 - 155 = 277 s); 07's
    cold start (22 s there, start to first token) is one start more, timed by 07."""
    runs = {name: budget.ci_s for name, budget in timebudget.BUDGETS.items()}
    plans = _plan_03(_cal(steps), timebudget.BUDGETS["03_continuous_batching"].ci_s)
    runs["03_continuous_batching"] = plans["sweep"].predicted_s + plans["schedulers"].predicted_s
    runs["03b_arrivals_and_goodput"] = plans["arrivals"].predicted_s
    runs["04_kv_cache_exhaustion"] = _plan_04(steps)
    runs["05_bounded_admission"] = _plan_05(steps)
    runs["07_capacity_and_cost"] = _plan_07(steps, cold_start_s=22 * slowdown)
    return timebudget.MakeTestPlan(runs, start_s=31, rest_s=MEASURED_REST_S, slowdown=slowdown)


MEASURED_REST_S = 363.0


def test_make_test_is_planned_within_its_goal_on_this_cpu() -> None:
    """This Xeon's step costs (the AVX-512 fit): the plan fits the goal. A notebook whose
    budget grows, or a seventh engine start, shows here before it shows in CI."""
    plan = _make_test(AVX512, slowdown=1.0)
    print(plan.describe())
    assert plan.total_s <= timebudget.MAKE_TEST_GOAL_S


def test_on_slower_cpus_make_test_grows_less_than_the_step_costs() -> None:
    """The AVX2 EPYC and twice its step costs: the notebooks' runs shrink to their smallest
    sizes, so the runs grow by less than the step costs do (fixed sizes grew 2x with them).
    The AVX2 plan is printed, not asserted within the goal: the closing note says by how
    much it is over and what would bring it under."""
    fast, slow, slower = (_make_test(s, d) for s, d in ((AVX512, 1.0), (AVX2, 1.2),
                                                          (TWICE_AVX2, 2.0)))
    for plan in (fast, slow, slower):
        print(plan.describe())
    runs = [sum(p.runs_s.values()) for p in (fast, slow, slower)]
    assert runs[0] < runs[1] < runs[2] < 2 * runs[1]  # the step costs: 2x
