"""One decode step, split into its causes: what a batch shares, and what grows with it.

A decode step at batch b (b sequences, each making one token) with a mean context of c tokens
per sequence is, in the course's two models of a step, the sum of:
- **weight read**: the bytes a step reads of the weights / the memory bandwidth. Paid once
  per step whatever b is: the batch shares it.
- **other fixed cost**: the rest of what a step costs whatever its batch (in vLLM: the Python
  scheduler, sampling, launching every layer's kernels). Also shared by the batch.
- **per-sequence cost**: b x what one more sequence adds to a step. Grows with b.
- **KV cache read**: attention reads b x c tokens of KV cache. Grows with b and with c.
- **compute beyond the read** (datasheet roofline only): when 2 x params FLOPs per token take
  longer than the bytes, the excess. Grows with b.

For this server the parts come from the calibration (`LinearSteps`: `fixed_s`, `per_seq_s`,
`per_context_token_s`, all measured), and the fixed part is split in two with the measured
bandwidth and the model's size: the weight read is `step_bytes / bandwidth`, the rest of the
fixed part is everything else a step pays. For a card known only from its datasheet
(`RooflineSteps`), every part is predicted. Either way the parts add up to the model's
`step_s(b, b x c, 0)`, so the split is exactly the step the course predicts with.

Batching divides the shared parts among the b sequences, so the shared share of a step at
batch 1 is what batching can win, and which shared part is larger says what it wins *from*:
on a CPU with a 135 M model mostly the fixed per-step cost, on a GPU with a 7 B model the
weight read. Pure arithmetic: nothing here talks to a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from ..errors import ConfigError

# (field, what a person reads, shared by the batch?) in the order the bars stack.
CAUSES: tuple[tuple[str, str, bool], ...] = (
    ("weight_read_s", "weight read", True),
    ("other_fixed_s", "other fixed per-step cost", True),
    ("per_seq_s", "per-sequence cost", False),
    ("kv_read_s", "KV cache read", False),
    ("compute_s", "compute beyond the read", False),
)
CAUSE_NAMES = {field: name for field, name, _ in CAUSES}


@dataclass(frozen=True)
class StepSplit:
    """One decode step at `batch` sequences and `context_tokens` of context each, in seconds
    per cause. `kind` is "measured" (from this server's calibration) or "predicted" (from a
    datasheet); `note` says where a part had to be clipped."""

    label: str
    batch: int
    context_tokens: float
    weight_read_s: float
    other_fixed_s: float
    per_seq_s: float
    kv_read_s: float
    compute_s: float = 0.0
    kind: str = "measured"
    note: str = ""

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"a decode step has at least one sequence, not {self.batch}.")
        for field, name, _ in CAUSES:
            if getattr(self, field) < 0:
                raise ConfigError(f"{self.label}: {name} is negative "
                                  f"({getattr(self, field) * 1e3:.3f} ms).")

    def parts(self) -> dict[str, float]:
        """{cause: seconds}, in the order of `CAUSES`."""
        return {name: getattr(self, field) for field, name, _ in CAUSES}

    @property
    def total_s(self) -> float:
        return sum(getattr(self, field) for field, _, _ in CAUSES)

    @property
    def shared_s(self) -> float:
        """The part of the step that does not grow with the batch: the batch shares it."""
        return sum(getattr(self, field) for field, _, shared in CAUSES if shared)

    @property
    def shared_fraction(self) -> float:
        return self.shared_s / self.total_s

    @property
    def per_token_s(self) -> float:
        return self.total_s / self.batch

    @property
    def tok_s(self) -> float:
        """Tokens per second of the whole batch at this step time."""
        return self.batch / self.total_s

    @property
    def shared_cause(self) -> str:
        """The larger of the two shared parts: what batching mostly shares here."""
        return (CAUSE_NAMES["weight_read_s"] if self.weight_read_s >= self.other_fixed_s
                else CAUSE_NAMES["other_fixed_s"])

    def table(self) -> pd.DataFrame:
        """One row per cause: milliseconds, share of the step, and whether the batch shares it."""
        rows = [{"cause": name, "ms": getattr(self, field) * 1e3,
                 "% of step": 100 * getattr(self, field) / self.total_s,
                 "shared by the batch": shared} for field, name, shared in CAUSES]
        rows.append({"cause": "step", "ms": self.total_s * 1e3, "% of step": 100.0,
                     "shared by the batch": None})
        return pd.DataFrame(rows).set_index("cause")

    def describe(self) -> str:
        """One line: the step, what the batch shares of it, and the cost per token."""
        return (f"{self.label}: a step of {self.total_s * 1e3:.1f} ms at batch {self.batch} "
                f"({_kind(self)}), {self.shared_s * 1e3:.1f} ms of it ({self.shared_fraction:.0%}) "
                f"shared by the batch; {self.per_token_s * 1e3:.2f} ms per token")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_s": self.total_s, "shared_s": self.shared_s,
                "shared_fraction": self.shared_fraction}


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, not {value!r}.")
    return float(value)


def from_calibration(steps: Any, *, step_bytes: float, bandwidth_gbs: float, batch: int,
                     context_tokens: float, label: str = "this server") -> StepSplit:
    """Split this server's calibrated step (a `LinearSteps`) at `batch` and `context_tokens`.

    The calibration measures the fixed part of a step as a whole; the weight read inside it
    is `step_bytes / bandwidth_gbs` (the bandwidth measured in notebook 02). Where that is
    more than the whole fixed part (a low bandwidth figure, or a fit whose fixed part came
    out small), the weight read is clipped to the fixed part and `note` says so."""
    _positive("step_bytes", step_bytes)
    _positive("bandwidth_gbs", bandwidth_gbs)
    read_s = step_bytes / (bandwidth_gbs * 1e9)
    fixed_s = max(0.0, float(steps.fixed_s))
    note = ""
    if read_s > fixed_s:
        note = (f"the weight read at {bandwidth_gbs:.1f} GB/s ({read_s * 1e3:.2f} ms) is more "
                f"than the fitted fixed part ({fixed_s * 1e3:.2f} ms); shown as the whole of it")
        read_s = fixed_s
    return StepSplit(
        label=label, batch=int(batch), context_tokens=float(context_tokens),
        weight_read_s=read_s, other_fixed_s=fixed_s - read_s,
        per_seq_s=max(0.0, float(steps.per_seq_s)) * batch,
        kv_read_s=max(0.0, float(steps.per_context_token_s)) * batch * context_tokens,
        kind="measured", note=note)


def from_roofline(steps: Any, *, batch: int, context_tokens: float,
                  label: str = "datasheet") -> StepSplit:
    """Split a datasheet step (a `RooflineSteps`): max(bytes / bandwidth, FLOPs / peak) +
    overhead. The weights and the KV cache are read at the datasheet bandwidth; when the
    FLOPs take longer than those bytes, the excess is "compute beyond the read" (it grows
    with the batch); the stated overhead is the other fixed cost. There is no per-sequence
    term in a roofline: a datasheet cannot know one."""
    bandwidth = _positive("bandwidth_gbs", steps.bandwidth_gbs) * 1e9
    read_s = steps.step_bytes / bandwidth
    kv_s = steps.kv_bytes_per_token * batch * context_tokens / bandwidth
    flops = (2 * steps.active_params * batch
             + getattr(steps, "attention_flops_per_pair", 0.0) * batch * context_tokens)
    flops_s = flops / (_positive("peak_tflops", steps.peak_tflops) * 1e12)
    return StepSplit(
        label=label, batch=int(batch), context_tokens=float(context_tokens),
        weight_read_s=read_s, other_fixed_s=float(steps.overhead_s), per_seq_s=0.0,
        kv_read_s=kv_s, compute_s=max(0.0, flops_s - read_s - kv_s), kind="predicted")


def split(steps: Any, *, batch: int, context_tokens: float, label: str,
          step_bytes: float | None = None, bandwidth_gbs: float | None = None) -> StepSplit:
    """`from_roofline` for a datasheet step, else `from_calibration` (which needs the model's
    `step_bytes` and the measured `bandwidth_gbs`)."""
    if getattr(steps, "kind", None) == "roofline":
        return from_roofline(steps, batch=batch, context_tokens=context_tokens, label=label)
    if step_bytes is None or bandwidth_gbs is None:
        raise ConfigError("a calibrated step needs step_bytes and the measured bandwidth_gbs "
                          "to tell the weight read from the rest of its fixed part.")
    return from_calibration(steps, step_bytes=step_bytes, bandwidth_gbs=bandwidth_gbs,
                            batch=batch, context_tokens=context_tokens, label=label)


def course_splits(steps: Any, *, step_bytes: float, bandwidth_gbs: float,
                  operating_batch: int | None, context_tokens: float, card_steps: Any,
                  card_context_tokens: float, card_name: str = "RTX 4000 Ada",
                  card_batches: Sequence[int] = (1, 32), operating_why: str = "predicted knee",
                  max_num_seqs: int | None = None) -> list[StepSplit]:
    """The four bars of notebooks 02 and 03: this server at batch 1 and at its operating
    point (`operating_batch` users, at most `max_num_seqs` of them in one step; `operating_why`
    says which point that is; None: `max_num_seqs`, where a batch stops growing), then the
    datasheet card at each of `card_batches`."""
    if operating_batch is None:
        if not max_num_seqs:
            raise ConfigError("no operating point: give operating_batch or max_num_seqs.")
        operating_batch, operating_why = max_num_seqs, "max_num_seqs: no knee predicted"
    batch = max(1, int(operating_batch))
    if max_num_seqs:
        batch = min(batch, int(max_num_seqs))
    here = [from_calibration(steps, step_bytes=step_bytes, bandwidth_gbs=bandwidth_gbs,
                             batch=b, context_tokens=context_tokens, label=text)
            for b, text in ((1, "here, batch 1"),
                            (batch, f"here, batch {batch} ({operating_why})"))]
    card = [from_roofline(card_steps, batch=b, context_tokens=card_context_tokens,
                          label=f"{card_name}, batch {b}") for b in card_batches]
    return here + card


def table(splits: Iterable[StepSplit]) -> pd.DataFrame:
    """One row per split: each cause in ms, the step, tokens/s, and the share the batch shares."""
    rows = []
    for s in splits:
        row: dict[str, Any] = {"step": s.label, "kind": s.kind, "batch": s.batch,
                               "context (tokens)": s.context_tokens}
        row.update({f"{name} (ms)": value * 1e3 for name, value in s.parts().items()})
        row.update({"step (ms)": s.total_s * 1e3, "per token (ms)": s.per_token_s * 1e3,
                    "tok/s": s.tok_s, "shared by the batch (%)": 100 * s.shared_fraction})
        rows.append(row)
    return pd.DataFrame(rows).set_index("step")


def shared_cause_sentence(here: StepSplit, card: StepSplit) -> str:
    """What batching shares here against what it shares on the card, in one sentence with
    both numbers (give both splits at batch 1: there the shared part is all of the step
    that batching can divide)."""
    opening = "Batching shares what a step costs whatever its batch: "
    notes = "".join(f" Note: {s.note}." for s in (here, card) if s.note)
    if here.shared_cause == card.shared_cause:
        return (f"{opening}here and on the {_card(card)} alike it is mostly the "
                f"{here.shared_cause} ({_numbers(here)}; {_numbers(card)}).{notes}")
    return (f"{opening}here it is mostly the {here.shared_cause} ({_numbers(here)}); "
            f"on the {_card(card)} it is the {card.shared_cause} ({_numbers(card)}).{notes}")


def _numbers(s: StepSplit) -> str:
    by_weights = s.shared_cause == CAUSE_NAMES["weight_read_s"]
    part, other = ((s.weight_read_s, s.other_fixed_s) if by_weights
                   else (s.other_fixed_s, s.weight_read_s))
    other_name = CAUSE_NAMES["other_fixed_s" if by_weights else "weight_read_s"]
    return (f"{part * 1e3:.1f} ms of a {s.total_s * 1e3:.1f} ms step at batch {s.batch}, "
            f"{_kind(s)}; the {other_name} is {other * 1e3:.1f} ms")


def _kind(s: StepSplit) -> str:
    return "calibrated" if s.kind == "measured" else "predicted from the datasheet"


def _card(s: StepSplit) -> str:
    return s.label.split(",")[0]


def kv_share(step_bytes: float, kv_bytes_per_token: float, context_tokens: float) -> float:
    """How much the KV cache of `context_tokens` adds to what a decode step reads, as a
    fraction of the weights it reads (0.34: a third more bytes per step)."""
    return kv_bytes_per_token * context_tokens / _positive("step_bytes", step_bytes)


def kv_growth_table(models: Mapping[str, Any], context_tokens: int) -> pd.DataFrame:
    """For each {label: ModelSize}: the weights a step reads, the KV cache at
    `context_tokens`, how much that adds to the read, and how far it lowers the bandwidth
    ceiling of one stream (1 - weights / (weights + KV))."""
    rows = []
    for label, size in models.items():
        if size.kv_bytes_per_token is None:
            raise ConfigError(f"{label}: no KV size (no config.json).")
        step = size.step_bytes or size.weight_bytes
        share = kv_share(step, size.kv_bytes_per_token, context_tokens)
        rows.append({"model": label, "dtype": size.dtype,
                     "weights read per step (GB)": step / 1e9,
                     "KV per token (kB)": size.kv_bytes_per_token / 1e3,
                     f"KV at {context_tokens:,} tokens (GB)":
                         size.kv_bytes_per_token * context_tokens / 1e9,
                     "KV adds to the read (%)": 100 * share,
                     "one-stream ceiling falls by (%)": 100 * share / (1 + share)})
    return pd.DataFrame(rows).set_index("model")
