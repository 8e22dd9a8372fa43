"""Checks for 02: the bytes a decode step reads, and the ceiling they set."""

from __future__ import annotations

from . import Verdict, close_to


def h100_ceiling(value: object) -> Verdict:
    """02: Qwen2.5-7B in bf16 on an H100 SXM, one stream: bandwidth / bytes read per step."""
    from ..article import MODEL
    from ..ceiling import decode_ceiling_tok_s, get_gpu, model_size

    size = model_size(MODEL, dtype="bfloat16")
    expected = decode_ceiling_tok_s(get_gpu("h100-sxm").bandwidth_gbs, size.step_bytes)
    return close_to("h100_qwen_ceiling_tok_s", value, expected, rel=0.03,
                    why="Divide the card's bandwidth (bytes/s) by the bytes a step reads "
                        "(`step_bytes`: the weights less the untied input embedding).")


def bytes_read_at_context(value: object, *, model_root: str, context_tokens: int) -> Verdict:
    """02: what one decode step of this server's model reads at `context_tokens` of context:
    the weights a step reads plus the KV cache of the whole context."""
    from ..ceiling import model_size

    size = model_size(model_root)
    expected = (size.step_bytes or size.weight_bytes) + context_tokens * (
        size.kv_bytes_per_token or 0)
    return close_to("step_bytes_at_context", value, expected, rel=0.01,
                    why="A step reads the weights once and every token of context's KV "
                        "(kv_bytes_per_token x context), all layers included.")

