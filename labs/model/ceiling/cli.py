"""`python -m labs ceiling`: the decode ceiling from a datasheet, a measured or a given
bandwidth and a model or a weight size, as a table or one JSON object."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from .anatomy import GB, KNOWN_MODELS, model_size
from .arithmetic import _positive, ceiling_report
from .bandwidth import measure_bandwidth
from .datasheets import GPUS, get_gpu


def _cmd_ceiling(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {}
    if args.bandwidth_gbs is not None:
        bandwidth = args.bandwidth_gbs
        report["bandwidth_source"] = "given"
    elif args.gpu is not None:
        gpu = get_gpu(args.gpu)
        bandwidth = gpu.bandwidth_gbs
        report.update(gpu=gpu.name, gpu_memory_gb=gpu.memory_gb, bandwidth_source=gpu.source)
    else:
        m = measure_bandwidth()
        bandwidth = m.read_gbs
        report.update(bandwidth_source=f"measured read on {m.device}: {m.method}",
                      measured=asdict(m))

    kv = args.kv_bytes_per_token
    step = None
    if args.weights_gb is not None:
        weight = int(_positive("--weights-gb", args.weights_gb) * GB)
    else:
        size = model_size(args.model, args.dtype, args.kv_dtype)
        weight, step = size.weight_bytes, size.step_bytes
        kv = kv if kv is not None else size.kv_bytes_per_token
        report.update(model=size.model, dtype=size.dtype, params=size.params,
                      weights_source=size.source)
    report.update(ceiling_report(bandwidth, weight, kv, args.context_tokens, step))
    if "gpu_memory_gb" in report:
        report["weights_fit"] = weight < report["gpu_memory_gb"] * GB

    if args.json:
        print(json.dumps(report))
        return 0
    rows = [("bandwidth", f"{bandwidth:,.1f} GB/s", report["bandwidth_source"])]
    if "model" in report:
        rows.append(("weights", f"{weight / GB:,.2f} GB",
                     f"{report['model']}, {report['dtype']}, {report['params'] / 1e9:.3f} B "
                     "params"))
    else:
        rows.append(("weights", f"{weight / GB:,.2f} GB", "given"))
    if kv is not None:
        context_gb = kv * args.context_tokens / GB
        rows.append(("KV per token", f"{kv:,} B",
                     f"{args.context_tokens:,} tokens of context = {context_gb:,.3f} GB"))
    if report["step_bytes"] != weight:
        rows.append(("weights read", f"{report['step_bytes'] / GB:,.2f} GB",
                     "per step: the input embedding is looked up, not read whole"))
    rows.append(("read per step", f"{report['bytes_per_step'] / GB:,.2f} GB",
                 "weights read + KV"))
    rows.append(("decode ceiling", f"{report['ceiling_tok_s']:,.1f} tok/s",
                 f"one stream; >= {report['min_step_ms']:,.1f} ms per token"))
    if report.get("weights_fit") is False:
        rows.append(("WARNING", "does not fit", f"the weights alone exceed the "
                     f"{report['gpu_memory_gb']} GB of {report['gpu']}"))
    for label, value, note in rows:
        print(f"{label:<15} {value:>14}   {note}")
    return 0


def add_cli(verbs: Any) -> None:
    """Register `ceiling` on the argparse subparsers object `verbs` of `python -m labs`."""
    p = verbs.add_parser(
        "ceiling", help="decode ceiling: memory bandwidth / bytes read per step",
        description="One stream cannot decode faster than bandwidth / (weights + KV) bytes.")
    bw = p.add_mutually_exclusive_group(required=True)
    bw.add_argument("--bandwidth-gbs", type=float, metavar="X", help="memory bandwidth, GB/s")
    bw.add_argument("--gpu", metavar="NAME", help=f"datasheet bandwidth of: {', '.join(GPUS)}")
    bw.add_argument("--measure", action="store_true", help="measure this machine's bandwidth")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights-gb", type=float, metavar="X", help="weight bytes, decimal GB")
    w.add_argument("--model", metavar="PATH_OR_ID",
                   help=f"model folder, course model name, or one of: {', '.join(KNOWN_MODELS)}")
    p.add_argument("--dtype", default=None, help="weight dtype (default: as stored/configured)")
    p.add_argument("--kv-dtype", default=None, help="KV cache dtype (default: --dtype)")
    p.add_argument("--kv-bytes-per-token", type=int, default=None, metavar="N",
                   help="override the KV bytes per token (needed with --weights-gb)")
    p.add_argument("--context-tokens", type=int, default=0, metavar="N",
                   help="tokens already in the sequence (their KV is read every step)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_ceiling)
