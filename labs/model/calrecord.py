"""The calibration record: what `labs.model.calibration` measured and fitted on one server,
and its JSON at `<results>/calibration.json` (`Calibration`, its `StepPoint`s and `TTFTPoint`s,
`load`, `default_path`). `labs.model.calibration` re-exports every name here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import Settings
from .steps import LinearSteps, ServerLimits, steps_from_dict

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StepPoint:
    """One measured decode step: B sequences decoding, `context_tokens` KV tokens in all."""

    batch: int
    context_tokens: int
    step_s: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TTFTPoint:
    prompt_tokens: float
    ttft_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """The fitted model of one server, and the measurements it was fitted to."""

    steps: LinearSteps
    limits: ServerLimits
    model: str
    hardware: str
    vllm_version: str | None
    backend: str
    measured_at: str
    wall_s: float
    step_points: tuple[StepPoint, ...] = ()
    ttft_points: tuple[TTFTPoint, ...] = ()
    profile: str | None = None
    cpu_signature: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- what the fit says ----------------------------------------------------------------
    def fit_errors(self) -> list[dict[str, Any]]:
        """Each measured point beside the fit, with the error in %."""
        rows = []
        for p in self.step_points:
            fit = self.steps.step_s(p.batch, p.context_tokens, 0)
            rows.append({"measured": p.label, "value_s": p.step_s, "fit_s": fit,
                         "error_pct": 100 * (fit - p.step_s) / p.step_s})
        for t in self.ttft_points:
            fit = self.predict_ttft_alone_s(t.prompt_tokens)
            rows.append({"measured": f"TTFT alone, {t.prompt_tokens:.0f} prompt tokens",
                         "value_s": t.ttft_s, "fit_s": fit,
                         "error_pct": 100 * (fit - t.ttft_s) / t.ttft_s})
        return rows

    def predict_ttft_alone_s(self, prompt_tokens: float) -> float:
        """TTFT of one request on an idle server (chunks of max_num_batched_tokens)."""
        budget, done, total = self.limits.max_num_batched_tokens, 0.0, 0.0
        while done < prompt_tokens:
            n = min(budget, prompt_tokens - done)
            total += self.steps.step_s(0, 0, int(n), n * done + n * n / 2)
            done += n
        return self.steps.request_overhead_s + total

    def describe(self) -> str:
        lines = [f"calibration of {self.model} on {self.hardware}",
                 f"vLLM {self.vllm_version}, {self.backend}, measured {self.measured_at} "
                 f"in {self.wall_s:.0f} s"]
        lines += [f"  {name:<22}{value:>16}   {note}"
                  for name, value, note in self.steps.describe()]
        lim = self.limits
        lines.append(f"  limits: KV pool {lim.num_blocks} x {lim.block_size} = "
                     f"{lim.pool_tokens:,} tokens, max_num_seqs {lim.max_num_seqs}, "
                     f"max_num_batched_tokens {lim.max_num_batched_tokens}, "
                     f"max_model_len {lim.max_model_len}")
        worst = max((abs(r["error_pct"]) for r in self.fit_errors()), default=0.0)
        lines.append(f"  the fit is within {worst:.0f} % of every point it was fitted to")
        return "\n".join(lines)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "model": self.model,
            "hardware": self.hardware, "vllm_version": self.vllm_version,
            "backend": self.backend, "profile": self.profile,
            "cpu_signature": self.cpu_signature,
            "measured_at": self.measured_at, "wall_s": self.wall_s,
            "steps": self.steps.to_dict(), "limits": self.limits.to_dict(),
            "step_points": [p.to_dict() for p in self.step_points],
            "ttft_points": [p.to_dict() for p in self.ttft_points],
            "fit_errors": self.fit_errors(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"calibration schema {data.get('schema_version')!r} is not "
                              f"{SCHEMA_VERSION}; run `python -m labs calibrate` again.")
        steps = steps_from_dict(data["steps"])
        if not isinstance(steps, LinearSteps):
            raise ConfigError("a saved calibration must hold measured (linear) steps.")
        return cls(
            steps=steps, limits=ServerLimits(**data["limits"]), model=data["model"],
            hardware=data["hardware"], vllm_version=data.get("vllm_version"),
            backend=data["backend"], measured_at=data["measured_at"], wall_s=data["wall_s"],
            step_points=tuple(StepPoint(**p) for p in data.get("step_points", ())),
            ttft_points=tuple(TTFTPoint(**p) for p in data.get("ttft_points", ())),
            profile=data.get("profile"), cpu_signature=data.get("cpu_signature", ""))

    def save(self, path: Path | None = None) -> Path:
        path = path or default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def with_limits(self, limits: ServerLimits) -> Calibration:
        """The same step costs under another profile's limits (the step costs are the
        hardware's and the model's; the limits are the profile's)."""
        return replace(self, limits=limits)


def default_path() -> Path:
    return Settings.from_env().results_dir / "calibration.json"


def load(path: Path | None = None) -> Calibration:
    path = path or default_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no calibration at {path}; measure one with "
                          "`python -m labs calibrate` (about a minute).") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err.msg}); run "
                          "`python -m labs calibrate` again.") from None
    return Calibration.from_dict(data)


__all__ = ["Calibration", "StepPoint", "TTFTPoint", "load", "default_path", "SCHEMA_VERSION"]
