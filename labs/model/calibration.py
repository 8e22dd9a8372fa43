"""Measure the server in front of you, and fit the model every prediction in the course uses.

A calibration is a few dozen small runs against the live server (~15 s on a 2-core AVX-512
CPU, up to a minute on slower ones, seconds on a GPU):
- the time to first token of one request alone at a few prompt lengths: its slope is the
  prefill rate, its intercept the fixed cost of a request;
- bursts of B requests with short prompts at three or more batch sizes, and one burst with
  long prompts: the median gap between tokens is one engine step with B sequences decoding,
  at a known context;
- the KV pool and block size from `/metrics`, max_model_len from `/v1/models`, and
  max_num_seqs / max_num_batched_tokens from the flags the server was started with.
It fits `labs.model.steps.LinearSteps` by least squares and saves everything, with the
hardware, model and vLLM version it was measured on, to `<results>/calibration.json`.

`ensure(conn)` reuses a saved calibration made on the same hardware, model and vLLM version,
so notebooks 02-07 do not measure again what 01 measured. The record and its JSON
(`Calibration`, `load`, ...) live in `labs.model.calrecord`, re-exported here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..hardware import (
    cpu_signature,  # a calibration's key; importable from here as before
    describe_hardware,
)
from ..load.loadgen import run_sync
from ..observe.metrics import scrape
from ..serving.connect import Connection, connect
from ..serving.profiles import engine_flags
from ..serving.server import running_server
from ..settings import Settings, gpus
from ..workload import Burst, Closed, Workload
from .calrecord import SCHEMA_VERSION as SCHEMA_VERSION  # the record and its JSON, re-exported
from .calrecord import Calibration, StepPoint, TTFTPoint, default_path, load
from .steps import LinearSteps, ServerLimits, limits_from

SHORT_PROMPT_TOKENS = 32
DECODE_TOKENS = 32


# --------------------------------------------------------------------------------------------
# Reading the server's limits


def server_limits(conn: Connection) -> ServerLimits:
    """The live server's limits: pool from /metrics, max_model_len from /v1/models, the
    scheduler caps from the profile flags this course started it with (vLLM's defaults for
    a server started elsewhere, which `source` then says)."""
    settings = Settings.from_env()
    pool = scrape(conn.base_url).cache_config()
    if pool is None or pool.num_gpu_blocks is None or pool.block_size is None:
        raise ConfigError(f"{conn.base_url}/metrics has no vllm:cache_config_info; is it a "
                          "vLLM server (0.32 or newer)?")
    with conn.http(timeout=10) as http:
        models = http.get("/v1/models").json()["data"]
    max_len = next((m.get("max_model_len") for m in models if m["id"] == conn.model), None)
    if not max_len:
        raise ConfigError(f"{conn.base_url}/v1/models does not say max_model_len.")
    record = None if settings.base_url_override else running_server(settings)
    flags = (engine_flags(record.profile, record.extra_flags, settings.backend)
             if record else ())
    gpu_name, gpu_mib = (gpus() or (("", None),))[0]
    return limits_from(pool, int(max_len), flags, settings.backend,
                       gpu_mib / 1024 if gpu_mib else None, gpu_name)


# --------------------------------------------------------------------------------------------
# Measuring


def _mean_gap_s(run: Any, skip_first: int = 2) -> float:
    """The mean inter-token gap of a run, leaving out each request's first gaps (they can
    share a step with another request's prefill). The mean, not the median: throughput is
    tokens over the sum of the gaps."""
    gaps = [g for r in run.records if r.ok for g in r.itl_s[skip_first:]]
    if not gaps:
        errors = [r.error for r in run.records if r.error]
        raise ConfigError(f"calibration run {run.label!r} produced no token gaps"
                          + (f" (first error: {errors[0]})" if errors else ""))
    return float(np.mean(gaps))


def batch_sizes(limits: ServerLimits) -> list[int]:
    """1, 8, 32 and 64 sequences, never more than the engine runs at once (max_num_seqs, and
    what its KV pool holds of these short requests, chat template included)."""
    most = max(1, limits.fit_at_once(2 * SHORT_PROMPT_TOKENS + DECODE_TOKENS))
    sizes = sorted({min(b, most) for b in (1, 8, 32, 64)})
    if len(sizes) < 3:
        sizes = sorted({1, max(1, most // 2), most})
    return sizes


def long_context(limits: ServerLimits) -> tuple[int, int]:
    """(batch, prompt tokens) of the long-context burst: four sequences at up to 768 tokens,
    so its prefill stays a few seconds on 2 CPU cores and fits every profile's pool."""
    batch = min(4, limits.max_num_seqs)
    per_request = min(768, limits.max_model_len - DECODE_TOKENS - 8,
                      limits.pool_tokens // batch - DECODE_TOKENS - limits.block_size)
    return batch, max(SHORT_PROMPT_TOKENS * 4, per_request)


def prompt_lengths(limits: ServerLimits) -> list[int]:
    """Four lengths up to 1,024 tokens (one chunk each): enough to see attention's share."""
    top = min(1024, limits.max_num_batched_tokens, limits.max_model_len - 8)
    return sorted({64, max(65, top // 4), max(66, top // 2), top})


def measure(conn: Connection, *, progress: bool = True, log: Any = None,
            limits: ServerLimits | None = None) -> Calibration:
    """Run the calibration on the live server and fit the model (15-60 s on 2 CPU cores).
    Progress lines go to `log` (default stderr) when `progress`; `limits` are the server's
    when the caller has read them already."""
    say = (lambda text: print(text, file=log or sys.stderr, flush=True)) if progress \
        else (lambda text: None)
    started = time.perf_counter()
    limits = limits or server_limits(conn)
    meta: dict[str, Any] = {}

    say(f"calibrate: TTFT of one request alone at {prompt_lengths(limits)} prompt tokens")
    ttft_points = []
    for n in prompt_lengths(limits):
        # Warm-up first at every length: the first prompt of a new length can take twice as
        # long on a fresh CPU server (kernels set up for the new shape), once.
        run = run_sync(Closed(1, requests=3), Workload(prompt_tokens=n, max_tokens=1),
                       conn=conn, warmup=1, progress=False, label=f"calibrate ttft {n}")
        meta = meta or run.metadata
        s = run.summary()
        if not s["ok"]:
            raise ConfigError(f"calibration: every request failed ({run.records[0].error}).")
        ttft_points.append(TTFTPoint(float(s["prompt_tokens_mean"]), float(s["ttft_s_p50"])))

    step_points = []
    for b in batch_sizes(limits):
        say(f"calibrate: decode step with {b} sequence(s) at once")
        # One sequence alone is the noisiest point and the cheapest: three in a row.
        shape = Closed(1, requests=3) if b == 1 else Burst(b)
        run = run_sync(shape, Workload(prompt_tokens=SHORT_PROMPT_TOKENS,
                                       max_tokens=DECODE_TOKENS),
                       conn=conn, progress=False, label=f"calibrate decode {b}")
        prompt = run.summary()["prompt_tokens_mean"] or SHORT_PROMPT_TOKENS
        context = int(b * (prompt + DECODE_TOKENS / 2))
        step_points.append(StepPoint(b, context, _mean_gap_s(run), f"step, {b} decoding"))
    b, p = long_context(limits)
    say(f"calibrate: decode step with {b} sequences at {p} tokens of context")
    run = run_sync(Burst(b), Workload(prompt_tokens=p, max_tokens=DECODE_TOKENS),
                   conn=conn, progress=False, label=f"calibrate context {p}")
    prompt = run.summary()["prompt_tokens_mean"] or p
    step_points.append(StepPoint(b, int(b * (prompt + DECODE_TOKENS / 2)),
                                 _mean_gap_s(run),
                                 f"step, {b} decoding at {prompt:.0f} context"))

    steps = fit(step_points, ttft_points)
    return Calibration(
        steps=steps, limits=limits, model=str(meta.get("model") or conn.model),
        hardware=str(meta.get("hardware")), vllm_version=meta.get("vllm_version"),
        backend=Settings.from_env().backend, profile=conn.profile,
        cpu_signature=cpu_signature(),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        wall_s=time.perf_counter() - started,
        step_points=tuple(step_points), ttft_points=tuple(ttft_points))


def fit(step_points: Sequence[StepPoint], ttft_points: Sequence[TTFTPoint]) -> LinearSteps:
    """Least squares: step = fixed + per_seq x B + per_context_token x context; then
    TTFT alone = overhead + fixed + P / prefill rate + per_prefill_pair x P^2 / 2 (with 3 or
    more lengths; a straight line with 2). Relative errors are minimised (each point divided
    by its value), so a 40 ms step counts as much as a 400 ms one; a coefficient that comes
    out negative is held at 0 and the rest refitted."""
    if len(step_points) < 3 or len(ttft_points) < 2:
        raise ConfigError("a fit needs 3 or more step points and 2 or more TTFT points.")
    a = np.array([[1.0, p.batch, p.context_tokens] for p in step_points])
    y = np.array([p.step_s for p in step_points])
    coef = _nonnegative_lstsq(a / y[:, None], np.ones_like(y))
    fixed, per_seq, per_ctx = (float(c) for c in coef)

    # Prefill: TTFT alone = overhead + fixed + P / rate + pair x P^2 / 2 (one chunk each).
    p = np.array([t.prompt_tokens for t in ttft_points])
    t = np.array([t.ttft_s for t in ttft_points])
    if len(ttft_points) >= 3:
        design = np.column_stack([np.ones_like(p), p, p * p / 2])
        intercept, per_token, per_pair = _nonnegative_lstsq(design / t[:, None],
                                                            np.ones_like(t))
    else:
        per_token, intercept = np.polyfit(p, t, 1)
        per_pair = 0.0
    if per_token <= 0:
        raise ConfigError("TTFT did not grow with the prompt length; the calibration runs "
                          "were disturbed (another load on the server?). Run it again.")
    overhead = max(0.0, float(intercept) - fixed)
    return LinearSteps(fixed_s=fixed, per_seq_s=per_seq, per_context_token_s=per_ctx,
                       prefill_tok_s=float(1 / per_token), request_overhead_s=overhead,
                       per_prefill_pair_s=float(per_pair))


def _nonnegative_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    active = list(range(a.shape[1]))
    while True:
        coef = np.zeros(a.shape[1])
        sol, *_ = np.linalg.lstsq(a[:, active], y, rcond=None)
        coef[active] = sol
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            return coef
        active.remove(min(negative, key=lambda i: coef[i]))
        if not active:
            return coef


def ensure(conn: Connection, *, path: Path | None = None, progress: bool = True,
           max_age_s: float = 12 * 3600) -> Calibration:
    """The saved calibration when it was measured on this hardware, model and vLLM version
    in the last `max_age_s`; otherwise measure one now and save it. The limits returned are
    the live server's (they belong to the profile, not to the hardware)."""
    path = path or default_path()
    limits = server_limits(conn)
    try:
        saved = load(path)
    except ConfigError:
        saved = None
    if saved is not None and _matches(saved, conn) and _age_s(saved) < max_age_s:
        if progress:
            print(f"calibration: reusing {path} (measured {saved.measured_at})",
                  file=sys.stderr)
        return saved.with_limits(limits)
    fresh = measure(conn, progress=progress, limits=limits)
    fresh.save(path)
    return fresh


def _matches(saved: Calibration, conn: Connection) -> bool:
    version = None
    try:
        with conn.http(timeout=5) as http:
            version = http.get("/version").json().get("version")
    except Exception:  # noqa: BLE001 - an old server without /version: compare the rest
        pass
    return (saved.model == conn.model and saved.hardware == describe_hardware()
            and saved.cpu_signature == cpu_signature()
            and saved.backend == Settings.from_env().backend
            and (version is None or saved.vllm_version == version))


def _age_s(saved: Calibration) -> float:
    try:
        then = time.mktime(time.strptime(saved.measured_at[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return float("inf")
    return time.time() - then


# --------------------------------------------------------------------------------------------
# CLI: python -m labs calibrate


def _cmd_calibrate(args: argparse.Namespace) -> int:
    cal = measure(connect(), progress=not args.json)
    path = cal.save(args.out)
    if args.json:
        print(json.dumps({**cal.to_dict(), "saved_to": str(path)}))
    else:
        print(cal.describe())
        print(f"saved to {path}")
    return 0


def add_cli(verbs: Any) -> None:
    p = verbs.add_parser("calibrate", help="measure the live server and fit its step model",
                         description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, default=None,
                   help="where to save it (default <results>/calibration.json)")
    p.set_defaults(func=_cmd_calibrate)


__all__ = ["Calibration", "StepPoint", "TTFTPoint", "measure", "fit", "ensure", "load",
           "server_limits", "default_path", "batch_sizes", "long_context", "prompt_lengths",
           "add_cli"]
