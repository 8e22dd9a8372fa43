"""The Grafana dashboard of the course: what the notebooks measure, live, for one server or many.

Written as a short list of panels and turned into Grafana's JSON by `build()`, so the
dashboard stays readable and `python -m labs infra` can keep the committed JSON in step.
Only current vLLM metric names are used (`kv_cache_usage_perc`, `inter_token_latency_seconds`;
not the removed `gpu_cache_usage_perc` or `time_per_output_token_seconds`), with their wire
suffixes (`_total` for counters, `_bucket` for histograms); tests/test_infra.py checks every
name against the installed vLLM's metric definitions and the gateway's registry, the router's
(`llm_d_epp_*`) against llm-d-router's metric definitions and the GPU's (`DCGM_*`) against the
dcgm-exporter collectors the GPU Operator enables (both vendored in tests/fixtures).

Queries keep one line per scrape target (`instance`), so data-parallel replicas show side by
side; the datasource is a variable, so the same JSON loads in compose's Grafana and in
kube-prometheus-stack's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UID = "vllm-serving-labs"
RATE = "[1m]"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    description: str = ""


def _quantiles(metric: str, legend: str) -> tuple[tuple[str, str], ...]:
    """p50 and p95 of a histogram, pooled over every target."""
    return tuple(
        (f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{RATE})))", f"{legend} p{p}")
        for q, p in ((0.5, 50), (0.95, 95))
    )


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Engine (vLLM)", (
        Panel("KV cache usage", "percentunit",
              (("vllm:kv_cache_usage_perc", "{{instance}}"),),
              "Share of the KV pool in use (0-1). Near 1 with requests waiting: the pool, not "
              "compute, is the limit (notebook 04)."),
        Panel("Requests running and waiting", "short",
              (("vllm:num_requests_running", "running {{instance}}"),
               ("vllm:num_requests_waiting", "waiting {{instance}}")),
              "Waiting inside the engine is the queue nobody can see from outside: the gateway "
              "profile keeps it at 0."),
        Panel("Preemptions per second", "ops",
              ((f"rate(vllm:num_preemptions_total{RATE})", "{{instance}}"),),
              "Requests evicted from the KV pool and recomputed later."),
        Panel("Tokens per second", "short",
              ((f"sum(rate(vllm:generation_tokens_total{RATE}))", "generated"),
               (f"sum(rate(vllm:prompt_tokens_total{RATE}))", "prompt (prefill)"))),
        Panel("Requests finished and refused per second", "reqps",
              ((f"sum by (finished_reason) (rate(vllm:request_success_total{RATE}))",
                "{{finished_reason}}"),
               (f"sum by (reason) (rate(vllm:admission_rejections_total{RATE}))",
                "refused by vLLM: {{reason}}")),
              "vLLM refuses (503) only with --max-num-queued-reqs (profile engine-queue)."),
        # The two prefix-cache panels take their queries from vLLM's own KV-cache dashboard
        # (github.com/vllm-project/vllm, examples/observability/dashboards/grafana/
        # vllm_kv_cache.json: "Prefix cache hit rate", "Cached prompt tokens"), without its
        # template variables: the course's Prometheus scrapes one model.
        Panel("Prefix cache hit rate", "percentunit",
              ((f"sum(rate(vllm:prefix_cache_hits_total{RATE})) / "
                f"(sum(rate(vllm:prefix_cache_queries_total{RATE})) > 0)", "hit rate"),),
              "Share of looked-up prompt tokens found in the prefix cache (notebook 06): "
              "only full blocks of a shared prefix can hit."),
        Panel("Prompt tokens that skipped prefill", "percentunit",
              ((f"sum(rate(vllm:prompt_tokens_cached_total{RATE})) / "
                f"(sum(rate(vllm:prompt_tokens_total{RATE})) > 0)", "cached"),),
              "Prompt tokens whose KV was already cached, out of all prompt tokens."),
    )),
    ("Latency", (
        Panel("Time to first token", "s",
              _quantiles("vllm:time_to_first_token_seconds", "TTFT")),
        Panel("Inter-token latency", "s",
              _quantiles("vllm:inter_token_latency_seconds", "ITL")),
        Panel("End-to-end request latency", "s",
              _quantiles("vllm:e2e_request_latency_seconds", "e2e")),
        Panel("Time queued in the engine", "s",
              _quantiles("vllm:request_queue_time_seconds", "queued")),
    )),
    ("Gateway (profile gateway)", (
        Panel("Gateway: in flight and queued", "short",
              (("gateway_in_flight", "in flight {{instance}}"),
               ("gateway_max_in_flight", "cap {{instance}}"),
               ("gateway_queue_depth", "queued {{instance}}"),
               ("gateway_max_queue", "queue cap {{instance}}"))),
        Panel("Gateway: admitted and shed per second", "reqps",
              ((f"sum(rate(gateway_admitted_total{RATE}))", "admitted"),
               (f"sum by (reason) (rate(gateway_shed_total{RATE}))", "shed: {{reason}}"),
               (f"sum by (reason) (rate(gateway_rejected_total{RATE}))",
                "rejected: {{reason}}")),
              "Shed requests (load) got a 503 with Retry-After in microseconds, instead of a "
              "long wait in the engine; rejected ones (input: malformed, too large, no key) "
              "a 4xx that says what to fix."),
        Panel("Gateway: wait for an engine slot", "s",
              _quantiles("gateway_queue_wait_seconds", "wait")),
        Panel("Gateway: upstream errors and client disconnects per second", "ops",
              ((f"sum by (stage) (rate(gateway_upstream_errors_total{RATE}))",
                "upstream error: {{stage}}"),
               (f"sum by (stage) (rate(gateway_client_disconnects_total{RATE}))",
                "client left: {{stage}}"))),
    )),
    ("Router (profile data-parallel: endpoint picker with flow control)", (
        Panel("Router: queued, and engines' running requests", "short",
              (("sum(llm_d_epp_flow_control_queue_size)", "queued in the router"),
               ("sum(vllm:num_requests_running)", "running in the engines"),
               ("count(vllm:num_requests_running)", "engines")),
              "KEDA adds an engine when running + queued exceeds max-num-seqs per engine."),
        Panel("Router: outcomes per second", "reqps",
              ((f"sum by (outcome) (rate(llm_d_epp_flow_control_requests_total{RATE}))",
                "{{outcome}}"),),
              "Dispatched to an engine; RejectedCapacity (queue full) and EvictedTTL (waited "
              "longer than the TTL) reach the client as 429, without Retry-After."),
        Panel("Router: wait in the queue", "s",
              _quantiles("llm_d_epp_flow_control_request_queue_duration_seconds", "wait")),
        Panel("Router: pool saturation", "percentunit",
              (("max(llm_d_epp_flow_control_pool_saturation)", "in flight / (engines x cap)"),),
              "1.0: every engine runs max-num-seqs requests; new ones wait in the router."),
    )),
    ("GPU (DCGM, through the GPU Operator's dcgm-exporter)", (
        Panel("GPU utilization", "percent",
              (("DCGM_FI_DEV_GPU_UTIL", "{{Hostname}} gpu {{gpu}}"),),
              "Share of time a kernel ran. Near 100 % says busy, not efficient: compare with "
              "tokens per second above."),
        Panel("GPU memory used", "decmbytes",
              (("DCGM_FI_DEV_FB_USED", "used {{Hostname}} gpu {{gpu}}"),
               ("DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE", "total {{Hostname}} gpu {{gpu}}")),
              "vLLM takes --gpu-memory-utilization (0.92) of it at start for weights and the "
              "KV pool, so this stays flat under load; the KV panel shows the pool's use."),
        Panel("GPU power", "watt",
              (("DCGM_FI_DEV_POWER_USAGE", "{{Hostname}} gpu {{gpu}}"),)),
        Panel("GPU temperature and SM clock", "short",
              (("DCGM_FI_DEV_GPU_TEMP", "°C {{Hostname}} gpu {{gpu}}"),
               ("DCGM_FI_DEV_SM_CLOCK", "SM MHz {{Hostname}} gpu {{gpu}}"))),
    )),
)

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH, _HEIGHT = 12, 8  # two panels a row, on Grafana's 24-column grid


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"h": _HEIGHT, "w": _WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": _DATASOURCE, "expr": expr,
                     "legendFormat": legend} for i, (expr, legend) in enumerate(panel.targets)],
    }


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a dict ready for json.dumps)."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for i, panel in enumerate(row):
            panels.append(_panel(panel, len(panels) + 1, (i % 2) * _WIDTH, y + (i // 2) * _HEIGHT))
        y += (len(row) + 1) // 2 * _HEIGHT
    return {
        "uid": UID,
        "title": "vLLM serving labs",
        "description": "Engine, latency and gateway metrics of the vLLM serving workshop. "
                       "Generated by `python -m labs infra` from labs/deploy/grafana.py.",
        "tags": ["vllm", "workshop"],
        "timezone": "browser",
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "schemaVersion": 39,
        "editable": True,
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0,
        }]},
        "panels": panels,
    }

